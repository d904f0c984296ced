//! Issue 13: the control plane at scale, without a thousand machines.
//!
//! - `simulated_hosts_reach_a_real_daemon`: `vxtap sim` writes 20 simulated hosts × 10
//!   endpoints into a real etcd (each host with its own lease); one real daemon with a
//!   local endpoint programs all 200 remote entries, a new simulated endpoint, and drops a
//!   killed host's entries once its lease expires.
//! - `a_new_endpoint_reaches_every_daemon`: `VXTAP_SCALE_DAEMONS` real daemons (default 50),
//!   one per host namespace with `--threads 1`, each with one local endpoint on one network;
//!   one more endpoint is connected and every other daemon must program it, then drop it
//!   after a disconnect. How long that took (p50/p99 across daemons) is printed, not asserted.
//!
//! - `parallel_connects_claim_distinct_addresses`: 4 real daemons on etcd connect 6
//!   containers each, all at once, to one network: 24 distinct addresses, programmed
//!   everywhere, carrying traffic; two hosts asking for one name (or one IP) at the same
//!   moment: exactly one wins, the other is told why, and leaves nothing in the store.
//!
//! Each test builds its own namespaces with a unique prefix and removes them on drop.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vxtap::api::{Reply, Request};
use vxtap::sim::SimProcess;
use vxtap_suite::harness::cluster::{Cluster, StoreKind};
use vxtap_suite::harness::daemon::binary;
use vxtap_suite::harness::{self, traffic};

/// Generous bound for anything the control plane propagates, even with 50 daemons on two
/// vCPUs.
const PROPAGATION: Duration = Duration::from_secs(60);

/// Daemons of the multi-daemon test.
fn daemon_count() -> usize {
    std::env::var("VXTAP_SCALE_DAEMONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50)
}

/// The MACs in the fdb of the daemon whose run directory is `run_dir`, asked in-process.
fn fdb_macs(run_dir: &Path) -> HashSet<String> {
    match vxtap::client::call(run_dir, &Request::FdbShow { dev: None }) {
        Ok(Reply::Fdb(rows)) => rows.into_iter().map(|r| r.mac).collect(),
        Ok(other) => panic!("fdb show answered {other:?}"),
        Err(e) => panic!("fdb show at {}: {e}", run_dir.display()),
    }
}

/// The daemons' run directories.
fn run_dirs(cluster: &Cluster) -> Vec<PathBuf> {
    cluster
        .hosts
        .iter()
        .map(|h| h.daemon().run_dir().to_owned())
        .collect()
}

/// `vxtap sim ARGS...` inside etcd's namespace.
fn start_sim(cluster: &Cluster, args: &[&str]) -> SimProcess {
    let etcd = cluster.etcd.as_ref().expect("an etcd cluster");
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", etcd.netns_path().display()))
        .arg(binary())
        .args(["sim", "--store", cluster.store_url()])
        .args(args);
    SimProcess::spawn(command).unwrap_or_else(|e| panic!("vxtap sim: {e}"))
}

/// The `p`-th percentile (0-100) of `samples`, sorted in place.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    let rank = (samples.len() * p).div_ceil(100).max(1) - 1;
    samples[rank.min(samples.len() - 1)]
}

#[test]
fn simulated_hosts_reach_a_real_daemon() {
    let mut cluster = Cluster::new_with(1, StoreKind::Etcd, |_, _| {
        vec!["--threads".to_owned(), "1".to_owned()]
    });
    cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.61.0.0/16", "simnet"]);
    let c = cluster.container("local");
    cluster.connect(0, "simnet", c, "local");
    let run_dir = cluster.hosts[0].daemon().run_dir().to_owned();

    let mut sim = start_sim(
        &cluster,
        &[
            "--network",
            "simnet",
            "--hosts",
            "20",
            "--endpoints",
            "10",
            "--ttl",
            "3",
        ],
    );
    assert_eq!((sim.hosts, sim.endpoints), (20, 200));
    // The simulated MACs are 02:42 + the IP; they come from the top of 10.61.0.0/16.
    let simulated = |macs: &HashSet<String>| {
        macs.iter()
            .filter(|m| m.starts_with("02:42:0a:3d:ff:") || m.starts_with("02:42:0a:3d:fe:"))
            .count()
    };
    let start = Instant::now();
    assert!(
        harness::wait_until(PROPAGATION, || simulated(&fdb_macs(&run_dir)) == 200),
        "the daemon programmed {} of the 200 simulated endpoints",
        simulated(&fdb_macs(&run_dir))
    );
    println!(
        "200 simulated endpoints programmed after {:?}",
        start.elapsed()
    );
    // Past a few lease periods: the keeper keeps every lease alive.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(simulated(&fdb_macs(&run_dir)), 200, "a live lease expired");

    let added = sim.add(3).expect("add");
    assert!(
        harness::wait_until(PROPAGATION, || fdb_macs(&run_dir).contains(&added.mac)),
        "the added endpoint {} never reached the fdb",
        added.mac
    );
    sim.del(&added.key).expect("del");
    assert!(
        harness::wait_until(PROPAGATION, || !fdb_macs(&run_dir).contains(&added.mac)),
        "the deleted endpoint {} stayed in the fdb",
        added.mac
    );

    // Host 1's endpoints are the 10 addresses below host 0's: 10.61.255.244 down to .235.
    let victims: Vec<String> = (235..=244u8)
        .map(|last| format!("02:42:0a:3d:ff:{last:02x}"))
        .collect();
    assert!(victims.iter().all(|m| fdb_macs(&run_dir).contains(m)));
    let killed = sim.kill(1).expect("kill");
    assert!(
        harness::wait_until(killed.ttl + PROPAGATION, || {
            let macs = fdb_macs(&run_dir);
            victims.iter().all(|m| !macs.contains(m))
        }),
        "the killed host's endpoints stayed in the fdb"
    );
    let purged = killed.last_refresh.elapsed().unwrap_or_default();
    println!(
        "killed host purged {purged:?} after its last refresh (TTL {:?})",
        killed.ttl
    );
    assert_eq!(
        simulated(&fdb_macs(&run_dir)),
        190,
        "only the killed host's endpoints went"
    );
    sim.quit().expect("quit");
    assert!(
        harness::wait_until(PROPAGATION, || simulated(&fdb_macs(&run_dir)) == 0),
        "quit left simulated endpoints behind"
    );
}

#[test]
fn a_new_endpoint_reaches_every_daemon() {
    let count = daemon_count();
    assert!(count >= 3, "VXTAP_SCALE_DAEMONS must be at least 3");
    let began = Instant::now();
    let mut cluster = Cluster::new_with(count, StoreKind::Etcd, |_, _| {
        vec!["--threads".to_owned(), "1".to_owned()]
    });
    cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.62.0.0/16", "wide"]);
    let mut macs = Vec::new();
    for h in 0..count {
        let c = cluster.container(&format!("c{h}"));
        let name = format!("c{h}");
        cluster.connect(h, "wide", c, &name);
        macs.push(cluster.endpoint_mac("wide", &name));
    }
    let dirs = run_dirs(&cluster);
    // Every daemon has every other daemon's endpoint before the measured change.
    for (h, dir) in dirs.iter().enumerate() {
        assert!(
            harness::wait_until(PROPAGATION, || {
                let have = fdb_macs(dir);
                macs.iter()
                    .enumerate()
                    .all(|(o, m)| o == h || have.contains(m))
            }),
            "host {h} never programmed every other host's endpoint"
        );
    }
    println!("{count} daemons up and converged in {:?}", began.elapsed());

    // Sanity: the overlay carries traffic between two of them.
    let ip1 = cluster.endpoint_ip("wide", "c1");
    traffic::assert_ping(&cluster.containers[2], ip1, 2, None);

    // The measured change: one more endpoint on host 0.
    let extra = cluster.container("extra");
    let started = Instant::now();
    cluster.connect(0, "wide", extra, "extra");
    let connected = started.elapsed();
    let mac = cluster.endpoint_mac("wide", "extra");
    let others: Vec<&PathBuf> = dirs.iter().skip(1).collect();
    let arrivals = wait_everywhere(&others, started, |macs| macs.contains(&mac));
    let mut arrivals: Vec<Duration> = arrivals
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.unwrap_or_else(|| panic!("host {} never programmed {mac}", i + 1)))
        .collect();
    println!(
        "new endpoint at all {} other daemons: p50 {:?}, p99 {:?}, last {:?} (connect took {connected:?})",
        arrivals.len(),
        percentile(&mut arrivals, 50),
        percentile(&mut arrivals, 99),
        percentile(&mut arrivals, 100)
    );

    let started = Instant::now();
    cluster.hosts[0].cli_ok(&["disconnect", "wide", cluster.containers[extra].name()]);
    let departures = wait_everywhere(&others, started, |macs| !macs.contains(&mac));
    let mut departures: Vec<Duration> = departures
        .into_iter()
        .enumerate()
        .map(|(i, a)| a.unwrap_or_else(|| panic!("host {} kept {mac} after disconnect", i + 1)))
        .collect();
    println!(
        "disconnect at all {} other daemons: p50 {:?}, p99 {:?}, last {:?}",
        departures.len(),
        percentile(&mut departures, 50),
        percentile(&mut departures, 99),
        percentile(&mut departures, 100)
    );
    println!("whole test: {:?}", began.elapsed());
}

#[test]
fn parallel_connects_claim_distinct_addresses() {
    const HOSTS: usize = 4;
    const EACH: usize = 6;
    let mut cluster = Cluster::new(HOSTS, StoreKind::Etcd);
    cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.63.0.0/24", "par"]);
    let containers: Vec<Vec<(usize, String)>> = (0..HOSTS)
        .map(|h| {
            (0..EACH)
                .map(|i| {
                    let name = format!("p{h}-{i}");
                    (cluster.container(&name), name)
                })
                .collect()
        })
        .collect();
    let cluster = cluster;
    // Every host connects its containers one after the other, all hosts at once: each
    // host's first connect plans the same lowest free address.
    std::thread::scope(|scope| {
        for (h, mine) in containers.iter().enumerate() {
            let cluster = &cluster;
            scope.spawn(move || {
                for (c, name) in mine {
                    cluster.connect(h, "par", *c, name);
                }
            });
        }
    });
    let view = cluster.hosts[0].inspect("par");
    let endpoints = view["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), HOSTS * EACH, "{view:#}");
    let ips: HashSet<&str> = endpoints.iter().filter_map(|e| e["ip"].as_str()).collect();
    assert_eq!(
        ips.len(),
        HOSTS * EACH,
        "addresses are not distinct: {view:#}"
    );
    let macs: HashSet<&str> = endpoints.iter().filter_map(|e| e["mac"].as_str()).collect();
    let dirs = run_dirs(&cluster);
    for (h, dir) in dirs.iter().enumerate() {
        assert!(
            harness::wait_until(PROPAGATION, || fdb_macs(dir).len() == (HOSTS - 1) * EACH),
            "host {h} did not program exactly the other hosts' endpoints: {:?} of {macs:?}",
            fdb_macs(dir)
        );
        assert!(fdb_macs(dir).iter().all(|m| macs.contains(m.as_str())));
    }
    // Addresses handed out at the same moment on different hosts carry traffic.
    let far = cluster.endpoint_ip("par", "p3-5");
    traffic::assert_ping(&cluster.containers[containers[0][0].0], far, 2, None);

    // One name (then one address) asked for by two hosts at the same moment.
    let mut cluster = cluster;
    let racers: Vec<usize> = (0..2)
        .map(|h| cluster.container(&format!("r{h}")))
        .collect();
    // An address none of the 24 holds (after a lost race they were taken at random).
    let used: HashSet<String> = cluster.hosts[0].inspect("par")["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["ip"].as_str().map(str::to_owned))
        .collect();
    let free_ip = (2..=254)
        .rev()
        .map(|d| format!("10.63.0.{d}"))
        .find(|ip| !used.contains(ip))
        .expect("a free address");
    let free_ip = free_ip.as_str();
    for (what, extra) in [("name", vec![]), ("ip", vec!["--ip", free_ip])] {
        let outputs: Vec<std::process::Output> = std::thread::scope(|scope| {
            let handles: Vec<_> = racers
                .iter()
                .enumerate()
                .map(|(h, &c)| {
                    let cluster = &cluster;
                    let extra = extra.clone();
                    scope.spawn(move || {
                        let ns = cluster.containers[c].name();
                        // The IP race uses distinct names; the name race one name.
                        let name = if what == "name" {
                            "same".to_owned()
                        } else {
                            format!("ip{h}")
                        };
                        let mut args = vec!["connect", "par", ns, "--name", &name];
                        args.extend(extra.iter().copied());
                        cluster.hosts[h].cli(&args)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a racer"))
                .collect()
        });
        let won: Vec<&std::process::Output> =
            outputs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(
            won.len(),
            1,
            "{what} race: exactly one connect wins: {outputs:?}"
        );
        let lost = outputs
            .iter()
            .find(|o| !o.status.success())
            .expect("a loser");
        let message = String::from_utf8_lossy(&lost.stderr);
        let expected = if what == "name" {
            "endpoint name \"same\" is already used".to_owned()
        } else {
            format!("IP {free_ip} is already used")
        };
        assert!(
            message.contains(&expected),
            "{what} race: the loser says {message:?}"
        );
        // The loser left nothing: the winner's is the only endpoint of that name or address.
        let view = cluster.hosts[0].inspect("par");
        let holders = view["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter(|e| {
                if what == "name" {
                    e["name"] == "same"
                } else {
                    e["ip"] == free_ip
                }
            })
            .count();
        assert_eq!(holders, 1, "{what} race: {view:#}");
        // The winner disconnects: the name or address is free again for the loser's host.
        let winner = outputs
            .iter()
            .position(|o| o.status.success())
            .expect("a winner");
        cluster.hosts[winner].cli_ok(&[
            "disconnect",
            "par",
            cluster.containers[racers[winner]].name(),
        ]);
    }
    let loser_retry = cluster.containers[racers[1]].name().to_owned();
    cluster.hosts[1].cli_ok(&[
        "connect",
        "par",
        &loser_retry,
        "--name",
        "same",
        "--ip",
        free_ip,
    ]);
    assert_eq!(cluster.endpoint_ip("par", "same").to_string(), free_ip);
}

/// Polls every daemon of `dirs` (one thread each, every 2 ms) until its fdb satisfies
/// `done` or [`PROPAGATION`] passes; when each got there, measured from `since`.
fn wait_everywhere(
    dirs: &[&PathBuf],
    since: Instant,
    done: impl Fn(&HashSet<String>) -> bool + Sync,
) -> Vec<Option<Duration>> {
    std::thread::scope(|scope| {
        let done = &done;
        let polls: Vec<_> = dirs
            .iter()
            .map(|dir| {
                scope.spawn(move || loop {
                    if done(&fdb_macs(dir)) {
                        return Some(since.elapsed());
                    }
                    if since.elapsed() > PROPAGATION {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                })
            })
            .collect();
        polls
            .into_iter()
            .map(|p| p.join().expect("a polling thread"))
            .collect()
    })
}

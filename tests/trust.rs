//! Issue 10, items 1 and 2: records in the store are untrusted. Two hosts with control-plane
//! daemons on a real store (a directory, and etcd on the underlay); the test writes hostile
//! records straight into the store, as anyone who reaches an etcd without auth can, and checks
//! what every host programs.
//!
//! Needs root, `/dev/net/tun`, iproute2 and (for the etcd case) Debian's `etcd`.

use std::net::Ipv4Addr;
use std::time::Duration;
use vxtap::cluster::{Endpoint, Host};
use vxtap::store::{self, Lifetime};
use vxtap_suite::harness::cluster::{Cluster, StoreKind};
use vxtap_suite::harness::NetnsExt;
use vxtap_suite::harness::{self, cmd};

/// How long a change may take to reach every host.
const PROPAGATION: Duration = Duration::from_secs(15);
/// The intruder's VTEP: an address no host has.
const EVIL_VTEP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);

/// Writes `records` into the cluster's store under its lock, from the first host's
/// namespace (where etcd is reachable), as a writer without credentials would.
fn write_records(cluster: &Cluster, records: &[(String, Vec<u8>)]) {
    let url = cluster.store_url().to_owned();
    cluster.topology.hosts[0].ns.run_in(|| {
        let store = store::open(&url).unwrap_or_else(|e| panic!("opening {url}: {e}"));
        let mut locked = store.lock(Duration::from_secs(10)).expect("store lock");
        for (key, value) in records {
            locked
                .put(key, value, Lifetime::Permanent)
                .unwrap_or_else(|e| panic!("writing {key}: {e}"));
        }
    });
}

/// The value of `key` in the cluster's store, read from the first host's namespace.
fn read_record(cluster: &Cluster, key: &str) -> Option<Vec<u8>> {
    let url = cluster.store_url().to_owned();
    cluster.topology.hosts[0].ns.run_in(|| {
        let store = store::open(&url).unwrap_or_else(|e| panic!("opening {url}: {e}"));
        let listing = store.list("").expect("store listing");
        listing
            .entries
            .into_iter()
            .find(|e| e.key == key)
            .map(|e| e.value)
    })
}

fn json(value: &impl Serializable) -> Vec<u8> {
    value.to_json()
}

/// The two record types this test writes (the root package does not depend on serde).
trait Serializable {
    fn to_json(&self) -> Vec<u8>;
}

impl Serializable for Endpoint {
    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialisable")
    }
}

impl Serializable for Host {
    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialisable")
    }
}

fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// An endpoint of the intruder host `evil` on `network`.
fn intruder(network: &str, id: char, name: &str, ip: Ipv4Addr, mac: &str) -> Endpoint {
    Endpoint {
        id: id.to_string().repeat(64),
        network: network.to_owned(),
        name: name.to_owned(),
        ip,
        mac: mac.to_owned(),
        host: "evil".to_owned(),
        vtep: EVIL_VTEP,
        netns: "x".to_owned(),
        ifname: "eth0".to_owned(),
        aliases: Vec::new(),
    }
}

/// The VTEP host `h`'s fdb sends `mac` to, if any.
fn fdb_dst(cluster: &Cluster, h: usize, mac: &str) -> Option<String> {
    cluster.hosts[h]
        .fdb_entries()
        .into_iter()
        .find(|(m, _)| m == mac)
        .map(|(_, dst)| dst)
}

/// A per-reason counter of `stats -j`'s store records: `section` is `refused` or `conflicts`.
fn record_count(cluster: &Cluster, h: usize, section: &str, reason: &str) -> u64 {
    let stats = cluster.hosts[h].daemon().stats();
    let rows = stats["store_records"][section]
        .as_array()
        .unwrap_or_else(|| panic!("stats -j has no store_records.{section}: {stats:#}"));
    rows.iter()
        .find(|r| r["reason"] == reason)
        .and_then(|r| r["count"].as_u64())
        .unwrap_or_else(|| panic!("no counter {section}.{reason}: {stats:#}"))
}

fn ping_ok(cluster: &Cluster, from: usize, target: &str) -> bool {
    let ns = cluster.containers[from].name().to_owned();
    harness::wait_until(PROPAGATION, || {
        cmd::try_run(
            "ip",
            &["netns", "exec", &ns, "ping", "-c", "1", "-W", "1", target],
        )
        .status
        .success()
    })
}

fn hostile_records(kind: StoreKind) {
    let mut cluster = Cluster::new(2, kind);
    let id = cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.61.0.0/24", "tn"]);
    let network = id.trim().to_owned();
    let c_victim = cluster.container("victim");
    let c_peer = cluster.container("peer");
    cluster.connect(0, "tn", c_victim, "victim");
    cluster.connect(1, "tn", c_peer, "peer");
    assert!(
        ping_ok(&cluster, c_peer, "victim"),
        "peer cannot reach victim"
    );
    let view = cluster.hosts[0].inspect("tn");
    let victim: Endpoint = view["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["name"] == "victim"))
        .map(|e| serde_json::from_value(e.clone()).expect("an endpoint"))
        .unwrap_or_else(|| panic!("no victim in {view:#}"));
    let h1_vtep = cluster.hosts[0].ip.to_string();
    assert_eq!(fdb_dst(&cluster, 1, &victim.mac), Some(h1_vtep.clone()));

    // An intruder joins as host `evil` and writes, all at once: a name that injects a hosts
    // line, an all-zeros MAC (which once became a flood-list entry), the victim's IP and MAC
    // with its own VTEP, and one well-formed endpoint of its own.
    let evil = Host {
        name: "evil".into(),
        vtep: EVIL_VTEP,
        pid: 1,
        started: 1,
    };
    let ip = |last| Ipv4Addr::new(10, 61, 0, last);
    let injection = intruder(
        &network,
        'a',
        "x\n10.79.0.66\tbank.example",
        ip(50),
        &mac_for(ip(50)),
    );
    let zero_mac = intruder(&network, 'b', "zeromac", ip(51), "00:00:00:00:00:00");
    let thief = intruder(&network, 'c', "thief", victim.ip, &victim.mac);
    let ghost = intruder(&network, 'd', "ghost", ip(52), &mac_for(ip(52)));
    write_records(
        &cluster,
        &[
            (evil.key(), json(&evil)),
            (injection.key(), json(&injection)),
            (zero_mac.key(), json(&zero_mac)),
            (thief.key(), json(&thief)),
            (ghost.key(), json(&ghost)),
        ],
    );
    // The well-formed record is programmed everywhere: the bad ones block nothing.
    for h in 0..2 {
        assert!(
            harness::wait_until(PROPAGATION, || fdb_dst(&cluster, h, &ghost.mac)
                == Some(EVIL_VTEP.to_string())),
            "host {h} never programmed the well-formed record:\n{}",
            cluster.hosts[h].daemon().log()
        );
    }
    for h in 0..2 {
        let fdb = cluster.hosts[h].fdb_entries();
        assert!(
            fdb.iter().all(|(mac, _)| mac != "00:00:00:00:00:00"),
            "host {h} has a flood-list entry: {fdb:?}"
        );
        assert!(
            fdb.iter()
                .all(|(mac, _)| *mac != mac_for(ip(50)) && *mac != mac_for(ip(51))),
            "host {h} programmed a refused record: {fdb:?}"
        );
        assert_eq!(
            fdb_dst(&cluster, h, &victim.mac),
            (h == 1).then(|| h1_vtep.clone()),
            "host {h}: the victim's MAC was taken over"
        );
        let neigh = cluster.hosts[h].daemon().neigh();
        let victim_ip = victim.ip.to_string();
        for row in neigh.as_array().expect("neigh show -j is a list") {
            if row["ip"] == victim_ip.as_str() {
                assert_eq!(row["lladdr"], victim.mac.as_str(), "host {h}: {neigh:#}");
            }
        }
        assert!(record_count(&cluster, h, "refused", "invalid_name") >= 1);
        assert!(record_count(&cluster, h, "refused", "invalid_mac") >= 1);
        assert!(record_count(&cluster, h, "conflicts", "ip_conflict") >= 1);
    }
    let hosts_file = format!("/etc/netns/{}/hosts", cluster.containers[c_peer].name());
    // Hosts files follow the records within a second or so (rewritten at most once a
    // second while changes stream in).
    harness::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&hosts_file).is_ok_and(|c| c.contains("\tghost\n"))
    });
    let content = std::fs::read_to_string(&hosts_file).expect("the peer's hosts file");
    assert!(!content.contains("bank.example"), "{content}");
    assert!(content.contains("\tghost\n"), "{content}");
    assert!(
        ping_ok(&cluster, c_peer, "victim"),
        "the victim is unreachable"
    );

    // Records overwritten in place keep their key's creation revision. The intruder's own
    // well-formed endpoint, moved to another address: every host keeps the one it accepted.
    // The victim's, given the intruder's VTEP: its owner writes it back (it publishes what
    // the store does not hold as written), and no host ever sends the victim's traffic away.
    let ghost_moved = Endpoint {
        ip: ip(60),
        mac: mac_for(ip(60)),
        ..ghost.clone()
    };
    let rebound = Endpoint {
        host: "evil".into(),
        vtep: EVIL_VTEP,
        ..victim.clone()
    };
    let marker = intruder(&network, 'e', "marker", ip(53), &mac_for(ip(53)));
    write_records(
        &cluster,
        &[
            (ghost_moved.key(), json(&ghost_moved)),
            (rebound.key(), json(&rebound)),
            (marker.key(), json(&marker)),
        ],
    );
    for h in 0..2 {
        assert!(
            harness::wait_until(PROPAGATION, || fdb_dst(&cluster, h, &marker.mac).is_some()),
            "host {h}: the marker never arrived"
        );
        assert_eq!(
            fdb_dst(&cluster, h, &ghost.mac),
            Some(EVIL_VTEP.to_string()),
            "host {h} dropped the accepted endpoint"
        );
        assert_eq!(fdb_dst(&cluster, h, &ghost_moved.mac), None, "host {h}");
        assert!(
            record_count(&cluster, h, "conflicts", "rebound") >= 1,
            "host {h}"
        );
    }
    assert_eq!(fdb_dst(&cluster, 1, &victim.mac), Some(h1_vtep.clone()));
    assert!(
        harness::wait_until(PROPAGATION, || read_record(&cluster, &victim.key())
            == Some(json(&victim))),
        "the victim's host never wrote its record back"
    );
    // A connect on that host programs from the same checked view, pins included.
    let c_late = cluster.container("late");
    cluster.connect(1, "tn", c_late, "late");
    assert_eq!(fdb_dst(&cluster, 1, &victim.mac), Some(h1_vtep.clone()));
    assert_eq!(fdb_dst(&cluster, 1, &ghost_moved.mac), None);
    assert!(
        ping_ok(&cluster, c_peer, "victim"),
        "the victim is unreachable"
    );

    // Each refused value is counted once, however often the store is listed since.
    let before = record_count(&cluster, 1, "refused", "invalid_name");
    let marker2 = intruder(&network, 'f', "marker2", ip(54), &mac_for(ip(54)));
    write_records(&cluster, &[(marker2.key(), json(&marker2))]);
    assert!(harness::wait_until(PROPAGATION, || fdb_dst(
        &cluster,
        1,
        &marker2.mac
    )
    .is_some()));
    assert_eq!(before, 1);
    assert_eq!(record_count(&cluster, 1, "refused", "invalid_name"), 1);
    let text = cluster.hosts[1].cli_ok(&["stats"]);
    assert!(text.contains("store records:"), "{text}");
    assert!(text.contains("ip_conflict 1"), "{text}");
}

#[test]
fn dir_store_hostile_records_are_not_programmed() {
    hostile_records(StoreKind::Dir);
}

#[test]
fn etcd_hostile_records_are_not_programmed() {
    hostile_records(StoreKind::Etcd);
}

/// Runs `vxtap ARGS...` against host `h` as a child, killed if it has not finished within
/// `limit`; returns (finished in time, success, stderr).
fn cli_within(cluster: &Cluster, h: usize, args: &[&str], limit: Duration) -> (bool, bool, String) {
    let mut child = cluster.hosts[h]
        .daemon()
        .command()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vxtap runs");
    let mut status = None;
    harness::wait_until(limit, || {
        status = child.try_wait().expect("waiting for vxtap");
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (
        status.is_some(),
        status.is_some_and(|s| s.success()),
        stderr.trim().to_owned(),
    )
}

/// Issue 10, items 3 and 5: `connect` to a path that is not a namespace is refused at once
/// (a FIFO once blocked it while it held the cluster lock, so every host's changes failed),
/// and one namespace named by two paths joins a network once.
#[test]
fn connect_checks_the_namespace_before_it_locks() {
    let mut cluster = Cluster::new(1, StoreKind::Dir);
    cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.62.0.0/24", "tn"]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fifo = dir.path().join("fifo");
    cmd::run("mkfifo", &[fifo.to_str().expect("utf-8 path")]);
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a namespace").expect("a regular file");
    for (i, path) in [&fifo, &file].into_iter().enumerate() {
        let path = path.to_str().expect("utf-8 path");
        let (finished, ok, stderr) = cli_within(
            &cluster,
            0,
            &["connect", "tn", path],
            Duration::from_secs(20),
        );
        assert!(finished, "connect {path} hangs");
        assert!(!ok, "connect {path} succeeded");
        assert!(stderr.contains("not found"), "{path}: {stderr}");
        // The cluster lock is free: changes go through.
        let (finished, ok, stderr) = cli_within(
            &cluster,
            0,
            &["network", "create", &format!("after{i}")],
            Duration::from_secs(20),
        );
        assert!(
            finished && ok,
            "network create after connect {path}: {stderr}"
        );
    }

    // One namespace, three names: the bind mount, the same through /run (where /var/run
    // points), and a symlink.
    let c = cluster.container("twice");
    let name = cluster.containers[c].name().to_owned();
    let symlink = dir.path().join("link");
    std::os::unix::fs::symlink(format!("/var/run/netns/{name}"), &symlink).expect("a symlink");
    cluster.hosts[0].cli_ok(&["connect", "tn", &name, "--name", "first"]);
    let run_path = format!("/run/netns/{name}");
    for other in [run_path.as_str(), symlink.to_str().expect("utf-8 path")] {
        let out = cluster.hosts[0].cli(&["connect", "tn", other, "--name", "second"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{other} joined a second time");
        assert!(stderr.contains("already connected"), "{other}: {stderr}");
    }
    assert_eq!(
        cluster.containers[c]
            .interfaces()
            .iter()
            .filter(|i| i.starts_with("eth"))
            .count(),
        1
    );
    // And it leaves by any of its names.
    cluster.hosts[0].cli_ok(&["disconnect", "tn", &run_path]);
    let view = cluster.hosts[0].inspect("tn");
    assert_eq!(
        view["endpoints"].as_array().map(Vec::len),
        Some(0),
        "{view:#}"
    );
}

/// A local endpoint the checks refuse is not published again and again: its key deleted and
/// its MAC claimed by another record, the host once republished it, saw it refused as the
/// younger claim, and republished it again, recursing until the daemon's stack overflowed.
#[test]
fn a_refused_local_endpoint_is_not_republished_for_ever() {
    let mut cluster = Cluster::new(1, StoreKind::Dir);
    let id = cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.63.0.0/24", "tn"]);
    let network = id.trim().to_owned();
    let c = cluster.container("victim");
    cluster.connect(0, "tn", c, "victim");
    let view = cluster.hosts[0].inspect("tn");
    let victim: Endpoint = view["endpoints"]
        .as_array()
        .and_then(|eps| eps.first())
        .map(|e| serde_json::from_value(e.clone()).expect("an endpoint"))
        .unwrap_or_else(|| panic!("no endpoint in {view:#}"));
    let evil = Host {
        name: "evil".into(),
        vtep: EVIL_VTEP,
        pid: 1,
        started: 1,
    };
    let thief = intruder(
        &network,
        'c',
        "thief",
        Ipv4Addr::new(10, 63, 0, 77),
        &victim.mac,
    );
    let url = cluster.store_url().to_owned();
    {
        let store = store::open(&url).expect("the dir store");
        let mut locked = store.lock(Duration::from_secs(10)).expect("store lock");
        assert!(locked.delete(&victim.key()).expect("delete"));
        locked
            .put(&evil.key(), &json(&evil), Lifetime::Permanent)
            .expect("put");
        locked
            .put(&thief.key(), &json(&thief), Lifetime::Permanent)
            .expect("put");
    }
    let daemon = cluster.hosts[0].daemon();
    assert!(
        harness::wait_until(PROPAGATION, || daemon
            .log()
            .contains("not republishing: its name, IP or MAC was taken")),
        "the host never saw its endpoint's MAC taken:\n{}",
        daemon.log()
    );
    // Quiet afterwards: alive, and it published the endpoint at most once more.
    std::thread::sleep(Duration::from_secs(2));
    let stats = daemon.stats();
    assert!(stats["store_records"].is_object(), "{stats:#}");
    let published = daemon.log().matches("endpoint published").count();
    assert!(
        published <= 2,
        "published {published} times:\n{}",
        daemon.log()
    );
}

/// Issue 10, item 7 and item 3: someone holding the cluster lock (on etcd without auth,
/// anyone) makes changes wait out their time-out and fail clearly, while reading requests and
/// `stats` keep answering: nothing waiting for the lock holds what they need.
#[test]
fn a_held_cluster_lock_stalls_changes_only() {
    let mut cluster = Cluster::new(1, StoreKind::Dir);
    cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.64.0.0/24", "tn"]);
    let c = cluster.container("waiting");
    let ns = cluster.containers[c].name().to_owned();
    let url = cluster.store_url().to_owned();
    let store = store::open(&url).expect("the dir store");
    let held = store.lock(Duration::from_secs(10)).expect("store lock");
    let cluster = &cluster;
    std::thread::scope(|scope| {
        let connect = scope
            .spawn(|| cli_within(cluster, 0, &["connect", "tn", &ns], Duration::from_secs(60)));
        // While the connect waits for the lock.
        std::thread::sleep(Duration::from_secs(2));
        for args in [&["stats"][..], &["network", "ls"], &["link", "show"]] {
            let (finished, ok, stderr) = cli_within(cluster, 0, args, Duration::from_secs(5));
            assert!(finished && ok, "{args:?} while the lock is held: {stderr}");
        }
        let (finished, ok, stderr) = connect.join().expect("the connect thread");
        assert!(finished, "connect never gave up on the lock");
        assert!(!ok, "connect succeeded while the lock was held");
        assert!(stderr.contains("waiting for the cluster lock"), "{stderr}");
    });
    drop(held);
    cluster.hosts[0].cli_ok(&["connect", "tn", &ns]);
}

//! Issue 4: overlay networks across hosts, like `docker network`, on a directory store and on
//! etcd. Three hosts (network namespaces on one underlay), a `vxtap daemon` with the control
//! plane on each, containers connected with `vxtap connect`.
//!
//! Every test builds its own namespaces with a unique prefix and tears them down on drop,
//! failures included. Times (propagation, recovery) are printed for the record, never
//! asserted: only bounded waits.

use std::process::Output;
use std::time::{Duration, Instant};
use vxtap_suite::harness::cluster::{Cluster, StoreKind};
use vxtap_suite::harness::NetnsExt;
use vxtap_suite::harness::{self, cmd};

/// Generous bound for anything the control plane propagates.
const PROPAGATION: Duration = Duration::from_secs(15);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// One ping from container `from` to `target` (an IP or a name), retried until it answers
/// or `limit` passes. Returns whether it answered.
fn ping_within(cluster: &Cluster, from: usize, target: &str, limit: Duration) -> bool {
    ping_every(cluster, from, target, "1", limit)
}

/// [`ping_within`] with each attempt waiting `wait` seconds (ping's `-W`) for its answer.
fn ping_every(cluster: &Cluster, from: usize, target: &str, wait: &str, limit: Duration) -> bool {
    let ns = cluster.containers[from].name().to_owned();
    harness::wait_until(limit, || {
        cmd::try_run(
            "ip",
            &["netns", "exec", &ns, "ping", "-c", "1", "-W", wait, target],
        )
        .status
        .success()
    })
}

fn assert_ping(cluster: &Cluster, from: usize, target: &str) {
    assert!(
        ping_within(cluster, from, target, PROPAGATION),
        "{} cannot ping {target}",
        cluster.containers[from].name()
    );
}

/// Whether host `h`'s fdb holds `mac`.
fn has_mac(cluster: &Cluster, h: usize, mac: &str) -> bool {
    cluster.hosts[h].fdb_entries().iter().any(|(m, _)| m == mac)
}

fn interfaces(cluster: &Cluster, container: usize) -> Vec<String> {
    let mut names = cluster.containers[container].interfaces();
    names.sort();
    names
}

/// Connects `container` on `host` and returns how long until every other host's fdb had
/// the new endpoint.
fn connect_and_time(
    cluster: &Cluster,
    host: usize,
    network: &str,
    container: usize,
    name: &str,
) -> Duration {
    cluster.connect(host, network, container, name);
    let start = Instant::now();
    let mac = cluster.endpoint_mac(network, name);
    for other in (0..cluster.hosts.len()).filter(|&h| h != host) {
        // Only hosts with a local endpoint on the network carry its overlay.
        let inspect = cluster.hosts[other].inspect(network);
        let local = inspect["endpoints"].as_array().is_some_and(|eps| {
            eps.iter()
                .any(|e| e["host"] == cluster.hosts[other].name.as_str())
        });
        if local {
            assert!(
                harness::wait_until(PROPAGATION, || has_mac(cluster, other, &mac)),
                "{name} ({mac}) never reached {}'s fdb: {:?}",
                cluster.hosts[other].name,
                cluster.hosts[other].fdb_entries()
            );
        }
    }
    start.elapsed()
}

/// The shared scenario: networks, containers, reachability by IP and name, isolation, a
/// container on two networks, bad input, disconnect.
fn three_hosts(kind: StoreKind) {
    let mut cluster = Cluster::new(3, kind);
    let label = format!("{kind:?}");

    // The same network, with the same id, from every host.
    let id = cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.41.0.0/24", "blue"]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "network create prints the id: {id:?}");
    cluster.hosts[1].cli_ok(&["network", "create", "--vni", "5000", "red"]);
    for h in &cluster.hosts {
        let view = h.inspect("blue");
        assert_eq!(view["id"], id.as_str());
        assert_eq!(view["subnet"], "10.41.0.0/24");
        assert_eq!(view["gateway"], "10.41.0.1");
        assert_eq!(view["mtu"], 1450);
        let ls = h.cli_ok(&["network", "ls"]);
        assert!(ls.contains("blue") && ls.contains("red"), "{ls}");
    }
    // Every daemon registered itself, with its VTEP.
    let hosts = cluster.hosts[1].cli_ok(&["host", "ls"]);
    for h in &cluster.hosts {
        let row = format!("{:<20}  {:<15}", h.name, h.ip.to_string());
        assert!(hosts.contains(&row), "{row:?} missing from:\n{hosts}");
    }
    let red = cluster.hosts[2].inspect("red");
    assert_eq!(red["vni"], 5000);
    assert_eq!(
        red["subnet"], "10.0.0.0/24",
        "the first free /24 of the default pool"
    );

    // Bad input: a clear error, and nothing changes.
    let before = cluster.hosts[0].cli_ok(&["network", "ls", "-j"]);
    let c_bad = cluster.container("bad");
    let bad_ns = cluster.containers[c_bad].name().to_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["network", "create", "--subnet", "10.41.0.128/25", "x1"],
            "overlaps network \"blue\"",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.22.1.0/24",
                "--gateway",
                "10.22.2.1",
                "x2",
            ],
            "gateway 10.22.2.1 is not a usable address of subnet 10.22.1.0/24",
        ),
        (
            vec!["network", "create", "--vni", "5000", "x3"],
            "VNI 5000 is already used by network \"red\"",
        ),
        (
            vec!["network", "create", "--vni", "16777216", "x4"],
            "out of range",
        ),
        (vec!["network", "create", "blue"], "already exists"),
        (
            vec!["network", "create", "--subnet", "10.50.0.7/24", "x5"],
            "not a network address",
        ),
        (
            vec!["network", "rm", "nosuch"],
            "network \"nosuch\" not found",
        ),
        (
            vec!["connect", "nosuch", &bad_ns],
            "network \"nosuch\" not found",
        ),
        (vec!["connect", "blue", "no-such-netns-here"], "not found"),
        (
            vec!["connect", "blue", &bad_ns, "--ip", "10.99.0.5"],
            "is not a free host address",
        ),
        (
            vec!["connect", "blue", &bad_ns, "--ip", "10.41.0.1"],
            "is not a free host address",
        ),
        (vec!["disconnect", "blue", &bad_ns], "is not connected"),
    ];
    for (args, expected) in &cases {
        let out = cluster.hosts[0].cli(args);
        assert!(!out.status.success(), "vxtap {} succeeded", args.join(" "));
        let err = stderr(&out);
        assert!(
            err.contains(expected),
            "vxtap {}: {err:?} lacks {expected:?}",
            args.join(" ")
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert_eq!(cluster.hosts[0].cli_ok(&["network", "ls", "-j"]), before);
    assert_eq!(
        interfaces(&cluster, c_bad),
        ["lo"],
        "a refused connect leaves nothing"
    );

    // Containers: c1 on h1, c2 on h2, c3 on h3 on blue; c1 also on red, r2 on red on h2.
    let c1 = cluster.container("c1");
    let c2 = cluster.container("c2");
    let c3 = cluster.container("c3");
    let r2 = cluster.container("r2");
    let propagation = [
        connect_and_time(&cluster, 0, "blue", c1, "c1"),
        connect_and_time(&cluster, 1, "blue", c2, "c2"),
        connect_and_time(&cluster, 2, "blue", c3, "c3"),
        connect_and_time(&cluster, 1, "red", r2, "r2"),
        connect_and_time(&cluster, 0, "red", c1, "c1red"),
    ];
    println!("[{label}] new endpoint in every host's fdb after: {propagation:?}");
    assert_eq!(interfaces(&cluster, c1), ["eth0", "eth1", "lo"]);

    // Duplicates are refused once taken.
    let c2_ip = cluster.endpoint_ip("blue", "c2").to_string();
    let dup_ip = cluster.hosts[2].cli(&["connect", "blue", &bad_ns, "--ip", &c2_ip]);
    assert!(
        stderr(&dup_ip).contains("is already used by endpoint \"c2\""),
        "{}",
        stderr(&dup_ip)
    );
    let dup_name = cluster.hosts[2].cli(&["connect", "blue", &bad_ns, "--name", "c3"]);
    assert!(
        stderr(&dup_name).contains("endpoint name \"c3\" is already used"),
        "{}",
        stderr(&dup_name)
    );
    let again = cluster.hosts[0].cli(&["connect", "blue", cluster.containers[c1].name()]);
    assert!(
        stderr(&again).contains("already connected"),
        "{}",
        stderr(&again)
    );
    let busy = cluster.hosts[0].cli(&["network", "rm", "blue"]);
    assert!(
        stderr(&busy).contains("disconnect them first"),
        "{}",
        stderr(&busy)
    );
    assert_eq!(interfaces(&cluster, c_bad), ["lo"]);

    // Every pair, by IP and by name.
    let blue = [(c1, "c1"), (c2, "c2"), (c3, "c3")];
    for &(from, _) in &blue {
        for &(_, to) in &blue {
            let ip = cluster.endpoint_ip("blue", to).to_string();
            assert_ping(&cluster, from, &ip);
            assert_ping(&cluster, from, to);
        }
    }
    // The container on two networks reaches both.
    assert_ping(&cluster, c1, "r2");
    assert_ping(&cluster, r2, "c1red");

    // Isolation: r2 (red only) sends for blue addresses out of its own overlay; nothing on
    // red answers for them, so the traffic never crosses into blue.
    let r2_ns = cluster.containers[r2].name().to_owned();
    cmd::run(
        "ip",
        &[
            "netns",
            "exec",
            &r2_ns,
            "ip",
            "route",
            "add",
            "10.41.0.0/24",
            "dev",
            "eth0",
        ],
    );
    let c3_ip = cluster.endpoint_ip("blue", "c3").to_string();
    assert!(
        !ping_within(&cluster, r2, &c3_ip, Duration::from_secs(3)),
        "red reached blue"
    );
    let hosts_r2 = std::fs::read_to_string(format!("/etc/netns/{r2_ns}/hosts")).unwrap();
    assert!(
        hosts_r2.contains("\tc1red\n") && !hosts_r2.contains("\tc3\n"),
        "{hosts_r2}"
    );

    // Disconnect removes the endpoint everywhere.
    let c2_mac = cluster.endpoint_mac("blue", "c2");
    let c2_ns = cluster.containers[c2].name().to_owned();
    cluster.hosts[1].cli_ok(&["disconnect", "blue", &c2_ns]);
    assert_eq!(interfaces(&cluster, c2), ["lo"]);
    for h in [0, 2] {
        assert!(
            harness::wait_until(PROPAGATION, || !has_mac(&cluster, h, &c2_mac)),
            "c2 still in {}'s fdb",
            cluster.hosts[h].name
        );
    }
    let c1_ns = cluster.containers[c1].name().to_owned();
    assert!(
        harness::wait_until(PROPAGATION, || {
            let hosts =
                std::fs::read_to_string(format!("/etc/netns/{c1_ns}/hosts")).unwrap_or_default();
            hosts.contains("\tc3\n") && !hosts.contains("\tc2\n")
        }),
        "c1's hosts file still lists c2"
    );
    assert!(!ping_within(&cluster, c1, &c2_ip, Duration::from_secs(2)));
    let inspect = cluster.hosts[2].inspect("blue");
    assert_eq!(
        inspect["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{inspect:#}"
    );
    // c2's host has no local endpoint on blue any more: its overlay namespace is gone.
    let h2_netns = cluster.hosts[1].run_dir().join("netns");
    let overlays: Vec<_> = std::fs::read_dir(&h2_netns)
        .map(|d| d.flatten().count())
        .into_iter()
        .collect();
    assert_eq!(overlays, [1], "h2 keeps only red's overlay namespace");

    // Tear down through the CLI: disconnect all, then rm works.
    cluster.hosts[0].cli_ok(&["disconnect", "blue", &c1_ns]);
    cluster.hosts[0].cli_ok(&["disconnect", "red", &c1_ns]);
    let c3_ns = cluster.containers[c3].name().to_owned();
    cluster.hosts[2].cli_ok(&["disconnect", "blue", &c3_ns]);
    cluster.hosts[1].cli_ok(&["disconnect", "red", &r2_ns]);
    cluster.hosts[2].cli_ok(&["network", "rm", "blue"]);
    cluster.hosts[0].cli_ok(&["network", "rm", "red"]);
    assert!(!cluster.hosts[1].cli_ok(&["network", "ls"]).contains("blue"));
    assert!(!std::path::Path::new(&format!("/etc/netns/{c1_ns}/hosts")).exists());
    for h in &cluster.hosts {
        let left = std::fs::read_dir(h.run_dir().join("netns"))
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{} still has overlay namespaces", h.name);
    }
}

/// SIGKILL a daemon, restart it: containers keep their interfaces and regain connectivity.
fn restart_after_sigkill(kind: StoreKind) {
    let mut cluster = Cluster::new(2, kind);
    cluster.hosts[0].cli_ok(&["network", "create", "blue"]);
    let c1 = cluster.container("c1");
    let c2 = cluster.container("c2");
    connect_and_time(&cluster, 0, "blue", c1, "c1");
    connect_and_time(&cluster, 1, "blue", c2, "c2");
    assert_ping(&cluster, c1, "c2");
    let eth0_before = cluster.containers[c2].ifindex("eth0");

    cluster.kill(1);
    // The TAP died with the process; the container's interface did not.
    assert_eq!(cluster.containers[c2].ifindex("eth0"), eth0_before);
    assert!(
        !ping_within(&cluster, c1, "c2", Duration::from_secs(2)),
        "no TAP, yet traffic passed"
    );

    let c1_mac = cluster.endpoint_mac("blue", "c1");
    let start = Instant::now();
    cluster.restart(1);
    let serving = start.elapsed();
    assert!(
        harness::wait_until(Duration::from_secs(30), || has_mac(&cluster, 1, &c1_mac)),
        "the restarted daemon never reprogrammed its tables:\n{}",
        cluster.hosts[1].daemon().log()
    );
    let programmed = start.elapsed();
    assert!(
        ping_every(&cluster, c1, "c2", "0.2", Duration::from_secs(30)),
        "no connectivity after restart:\n{}",
        cluster.hosts[1].daemon().log()
    );
    println!(
        "[{kind:?}] restart: admin socket up after {serving:?}, overlay and tables back after \
         {programmed:?}, ping answered after {:?}",
        start.elapsed()
    );
    assert_eq!(
        cluster.containers[c2].ifindex("eth0"),
        eth0_before,
        "the container kept its interface"
    );
    assert_ping(&cluster, c2, "c1");
    // The restarted daemon keeps serving changes.
    let c3 = cluster.container("c3");
    connect_and_time(&cluster, 1, "blue", c3, "c3");
    assert_ping(&cluster, c1, "c3");
}

#[test]
fn dir_store_three_hosts() {
    three_hosts(StoreKind::Dir);
}

#[test]
fn etcd_three_hosts() {
    three_hosts(StoreKind::Etcd);
}

#[test]
fn dir_store_restart_after_sigkill() {
    restart_after_sigkill(StoreKind::Dir);
}

#[test]
fn etcd_restart_after_sigkill() {
    restart_after_sigkill(StoreKind::Etcd);
}

/// A host killed for good: its endpoints expire with its lease and leave the other hosts.
#[test]
fn etcd_dead_host_expires() {
    let mut cluster = Cluster::new(3, StoreKind::Etcd);
    cluster.hosts[0].cli_ok(&["network", "create", "blue"]);
    let c1 = cluster.container("c1");
    let c2 = cluster.container("c2");
    let c3 = cluster.container("c3");
    connect_and_time(&cluster, 0, "blue", c1, "c1");
    connect_and_time(&cluster, 1, "blue", c2, "c2");
    connect_and_time(&cluster, 2, "blue", c3, "c3");
    let c3_mac = cluster.endpoint_mac("blue", "c3");
    cluster.kill(2);
    let start = Instant::now();
    for h in [0, 1] {
        assert!(
            harness::wait_until(Duration::from_secs(40), || !has_mac(&cluster, h, &c3_mac)),
            "h3's endpoint never left {}'s fdb",
            cluster.hosts[h].name
        );
    }
    println!(
        "dead host's endpoint gone from every fdb {:?} after SIGKILL",
        start.elapsed()
    );
    let hosts = cluster.hosts[0].cli_ok(&["host", "ls"]);
    assert!(
        hosts.contains("h1 ") && hosts.contains("h2 ") && !hosts.contains("h3 "),
        "{hosts}"
    );
    let view = cluster.hosts[0].inspect("blue");
    let names: Vec<&str> = view["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["c1", "c2"]);
    assert_ping(&cluster, c1, "c2");
}

/// etcd stopped for 30 s: forwarding keeps working on the last known state, changes are
/// refused clearly meanwhile, and afterwards every daemon resynchronises.
#[test]
fn etcd_outage() {
    let mut cluster = Cluster::new(3, StoreKind::Etcd);
    cluster.hosts[0].cli_ok(&["network", "create", "blue"]);
    let c1 = cluster.container("c1");
    let c2 = cluster.container("c2");
    let c3 = cluster.container("c3");
    connect_and_time(&cluster, 0, "blue", c1, "c1");
    connect_and_time(&cluster, 1, "blue", c2, "c2");
    assert_ping(&cluster, c1, "c2");
    let c2_ip = cluster.endpoint_ip("blue", "c2");

    cluster.etcd.as_mut().unwrap().stop();
    let outage = Instant::now();
    let c3_ns = cluster.containers[c3].name().to_owned();
    let refused = cluster.hosts[2].cli(&["connect", "blue", &c3_ns, "--name", "c3"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("unreachable"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        interfaces(&cluster, c3),
        ["lo"],
        "a refused connect leaves nothing"
    );
    let create = cluster.hosts[0].cli(&["network", "create", "green"]);
    assert!(
        stderr(&create).contains("unreachable"),
        "{}",
        stderr(&create)
    );
    let mut pings = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        assert!(
            ping_within(&cluster, c1, &c2_ip.to_string(), Duration::from_secs(3)),
            "forwarding stopped during the outage"
        );
        pings += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    println!("{pings} pings answered during the 30 s outage");

    cluster.etcd.as_mut().unwrap().start_again();
    let back = Instant::now();
    // Changes after the outage reach every host: a new endpoint on h3 and one on h2.
    connect_and_time(&cluster, 2, "blue", c3, "c3");
    println!(
        "first change after etcd came back propagated {:?} after restart",
        back.elapsed()
    );
    assert_ping(&cluster, c1, "c3");
    assert_ping(&cluster, c3, "c2");
    let view = cluster.hosts[1].inspect("blue");
    assert_eq!(
        view["endpoints"].as_array().map(Vec::len),
        Some(3),
        "{view:#}"
    );
}

/// The ids of every lease etcd holds.
fn lease_ids(etcd: &vxtap_suite::harness::etcd::Etcd) -> Vec<String> {
    let (status, leases) = etcd.post("/v3/lease/leases", &serde_json::json!({}));
    assert_eq!(status, 200, "{leases}");
    leases["leases"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|x| x["ID"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every lease revoked behind the daemons' backs (as if etcd had lost them): the endpoints
/// vanish from the store, each daemon notices, starts a new session and publishes its
/// endpoints again, and the tables come back.
#[test]
fn etcd_lost_leases_are_republished() {
    let mut cluster = Cluster::new(2, StoreKind::Etcd);
    cluster.hosts[0].cli_ok(&["network", "create", "blue"]);
    let c1 = cluster.container("c1");
    let c2 = cluster.container("c2");
    connect_and_time(&cluster, 0, "blue", c1, "c1");
    connect_and_time(&cluster, 1, "blue", c2, "c2");
    let etcd = cluster.etcd.as_ref().unwrap();
    let ids = lease_ids(etcd);
    assert!(!ids.is_empty(), "the daemons hold leases");
    let start = Instant::now();
    for id in &ids {
        let (status, body) = etcd.post("/v3/lease/revoke", &serde_json::json!({ "ID": id }));
        assert_eq!(status, 200, "{body}");
    }
    // Both endpoints come back in the store, and in each other's tables.
    assert!(
        harness::wait_until(PROPAGATION, || {
            cluster.hosts[0].inspect("blue")["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 2)
        }),
        "endpoints were not published again: {:#}",
        cluster.hosts[0].inspect("blue")
    );
    let c2_mac = cluster.endpoint_mac("blue", "c2");
    assert!(harness::wait_until(PROPAGATION, || has_mac(
        &cluster, 0, &c2_mac
    )));
    println!(
        "endpoints republished {:?} after their leases were revoked",
        start.elapsed()
    );
    // They live on new leases: the old ones are gone for good.
    let now = lease_ids(etcd);
    assert!(
        now.iter().all(|id| !ids.contains(id)) && !now.is_empty(),
        "before {ids:?}, after {now:?}"
    );
    assert_ping(&cluster, c1, "c2");
    assert_ping(&cluster, c2, "c1");
}

//! vxtap as a CNI plugin under a real runtime: Debian's podman 4.3 with its CNI backend, one
//! private engine per test host (src/harness/podman.rs), each beside its host's `vxtap
//! daemon` on a shared directory store, configured with the conflist `vxtap cni config`
//! prints for that daemon, as it prints it (version 1.0.0 by default, the highest podman
//! 4.3's libcni reads; see [`HIGHEST_CNI_VERSION`]).
//!
//! One test, in order: a busybox container on each host gets an address, MAC and `eth0` from
//! vxtap and an endpoint in the store; each host learns the other's (store and fdb); they
//! ping each other across hosts; `podman stop` releases the address everywhere and `podman
//! start` claims one again; `podman rm -f` of one removes its endpoint from the store and the
//! other host's fdb, and its host's overlay namespace; after the other, nothing is left
//! (endpoints, fdbs, overlay namespaces, the containers' namespaces, libcni's cache) and the
//! network can be removed.
//!
//! Needs root, Debian's podman and busybox-static (./test.sh installs them); fails loudly
//! without them. Every wait is bounded; no assertion depends on timing.

use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vxtap_suite::harness::cluster::{Cluster, StoreKind};
use vxtap_suite::harness::podman::{require_podman, Podman, HIGHEST_CNI_VERSION};
use vxtap_suite::harness::wait_for;

const WAIT: Duration = Duration::from_secs(30);
const NETWORK: &str = "cninet";

/// The endpoints of `network` in the store, as host `host`'s daemon sees them.
fn endpoints(cluster: &Cluster, host: usize) -> Vec<Value> {
    let view = cluster.hosts[host].inspect(NETWORK);
    view["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("network inspect {NETWORK} has no endpoint list: {view:#}"))
        .clone()
}

/// The endpoint with address `ip` in host `host`'s view of the store.
fn endpoint_with(cluster: &Cluster, host: usize, ip: Ipv4Addr) -> Option<Value> {
    endpoints(cluster, host)
        .into_iter()
        .find(|e| e["ip"].as_str() == Some(&ip.to_string()))
}

fn fdb_has(cluster: &Cluster, host: usize, mac: &str) -> bool {
    cluster.hosts[host]
        .fdb_entries()
        .iter()
        .any(|(m, _)| m.eq_ignore_ascii_case(mac))
}

/// The MAC vxtap derives from an IP: 02:42 and the address's four bytes.
fn derived_mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// `ping -c 1 -W 1 TARGET` in `container`, retried until it answers (bounded).
fn pings(engine: &Podman, container: &str, target: Ipv4Addr) -> bool {
    let target = target.to_string();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let out = engine.exec(container, &["ping", "-c", "1", "-W", "1", &target]);
        if out.status.success() {
            return true;
        }
    }
    false
}

/// Overlay namespaces host `host`'s daemon holds (`RUN_DIR/netns`).
fn overlay_namespaces(cluster: &Cluster, host: usize) -> Vec<PathBuf> {
    std::fs::read_dir(cluster.hosts[host].run_dir().join("netns"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `vxtap cni config`'s conflist, checked on the way: its shape, and a version podman 4.3
/// reads (the default one).
fn checked_conflist(conflist: &str) -> String {
    let parsed: Value = serde_json::from_str(conflist)
        .unwrap_or_else(|e| panic!("vxtap cni config printed no JSON ({e}): {conflist}"));
    let plugin = &parsed["plugins"][0];
    assert_eq!(plugin["type"], "vxtap", "{conflist}");
    assert_eq!(plugin["network"], NETWORK, "{conflist}");
    assert_eq!(parsed["name"], NETWORK, "{conflist}");
    assert_eq!(parsed["cniVersion"], HIGHEST_CNI_VERSION, "{conflist}");
    conflist.to_owned()
}

/// One container started by podman on a host, and what vxtap and podman say about it.
struct Attached {
    host: usize,
    name: &'static str,
    id: String,
    ip: Ipv4Addr,
    mac: String,
    netns: PathBuf,
}

fn start_container(
    engine: &Podman,
    cluster: &Cluster,
    host: usize,
    name: &'static str,
) -> Attached {
    let id = engine.run_ok(name, NETWORK, &[], &["sleep", "1000"]);
    let ip = engine
        .ip_of(name, NETWORK)
        .unwrap_or_else(|| panic!("podman has no address for {name} on {NETWORK}"));
    let mac = engine
        .mac_of(name, NETWORK)
        .unwrap_or_else(|| panic!("podman has no MAC for {name} on {NETWORK}"));
    let netns = engine
        .sandbox_key(name)
        .unwrap_or_else(|| panic!("podman has no network namespace for {name}"));
    eprintln!(
        "{name} on h{}: {id} {ip} {mac} {}",
        host + 1,
        netns.display()
    );
    // The container's own view: eth0 with the address and the MAC podman reported.
    let addr = engine.exec(name, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    let text = String::from_utf8_lossy(&addr.stdout);
    assert!(
        addr.status.success() && text.contains(&format!("inet {ip}/")),
        "{name}'s eth0 does not hold {ip}: {text}{}",
        String::from_utf8_lossy(&addr.stderr)
    );
    let link = engine.exec(name, &["cat", "/sys/class/net/eth0/address"]);
    assert_eq!(
        String::from_utf8_lossy(&link.stdout).trim(),
        mac.to_lowercase(),
        "{name}'s eth0 MAC is not the one the plugin reported"
    );
    assert_eq!(
        mac.to_lowercase(),
        derived_mac(ip),
        "{name}'s MAC is not derived from its IP"
    );
    // vxtap's store holds it, as this host's endpoint.
    let endpoint = endpoint_with(cluster, host, ip).unwrap_or_else(|| {
        panic!(
            "no endpoint with {ip} for {name} in the store: {:#}",
            cluster.hosts[host].inspect(NETWORK)
        )
    });
    eprintln!("{name}'s endpoint: {endpoint}");
    Attached {
        host,
        name,
        id,
        ip,
        mac,
        netns,
    }
}

#[test]
fn podman_containers_on_two_hosts_ping_across_and_leave_nothing() {
    require_podman();
    let cluster = Cluster::new(2, StoreKind::Dir);
    cluster.hosts[0].cli_ok(&["network", "create", NETWORK]);
    let engines: Vec<Podman> = (0..2)
        .map(|i| {
            let host = &cluster.hosts[i];
            let run_dir = host.run_dir().display().to_string();
            let conflist = host.cli_ok(&["cni", "config", NETWORK, "--run-dir", &run_dir]);
            Podman::start(&cluster.topology.hosts[i].ns, &checked_conflist(&conflist))
        })
        .collect();

    let c1 = start_container(&engines[0], &cluster, 0, "c1");
    let c2 = start_container(&engines[1], &cluster, 1, "c2");
    assert_ne!(c1.ip, c2.ip, "two containers got the same address");

    // Each host learns the other's endpoint: in its view of the store and in its fdb.
    for (me, other) in [(&c1, &c2), (&c2, &c1)] {
        wait_for(
            &format!("h{} to see {}'s endpoint", me.host + 1, other.name),
            WAIT,
            || endpoint_with(&cluster, me.host, other.ip).is_some(),
        );
        wait_for(
            &format!("{} ({}) in h{}'s fdb", other.name, other.mac, me.host + 1),
            WAIT,
            || fdb_has(&cluster, me.host, &other.mac),
        );
    }
    assert_eq!(
        endpoints(&cluster, 0).len(),
        2,
        "{:#}",
        cluster.hosts[0].inspect(NETWORK)
    );

    // Across hosts, by address, both ways.
    assert!(
        pings(&engines[0], c1.name, c2.ip),
        "c1 on h1 cannot ping c2 ({}) on h2",
        c2.ip
    );
    assert!(
        pings(&engines[1], c2.name, c1.ip),
        "c2 on h2 cannot ping c1 ({}) on h1",
        c1.ip
    );

    // `podman stop` releases the address (DEL) and `podman start` claims one again (ADD),
    // which the other host reaches.
    engines[1].podman_ok(&["stop", "-t", "0", c2.name]);
    for host in 0..2 {
        wait_for(
            &format!(
                "stopped c2's endpoint ({}) to leave h{}'s view",
                c2.ip,
                host + 1
            ),
            WAIT,
            || endpoint_with(&cluster, host, c2.ip).is_none(),
        );
    }
    assert!(
        !c2.netns.exists(),
        "stopped c2's network namespace {} is left",
        c2.netns.display()
    );
    engines[1].podman_ok(&["start", c2.name]);
    let c2 = Attached {
        ip: engines[1]
            .ip_of(c2.name, NETWORK)
            .unwrap_or_else(|| panic!("podman has no address for restarted c2")),
        mac: engines[1]
            .mac_of(c2.name, NETWORK)
            .unwrap_or_else(|| panic!("podman has no MAC for restarted c2")),
        netns: engines[1]
            .sandbox_key(c2.name)
            .unwrap_or_else(|| panic!("podman has no network namespace for restarted c2")),
        ..c2
    };
    assert_eq!(
        c2.mac.to_lowercase(),
        derived_mac(c2.ip),
        "restarted c2's MAC"
    );
    wait_for("h1 to see restarted c2's endpoint", WAIT, || {
        endpoint_with(&cluster, 0, c2.ip).is_some()
    });
    assert!(
        pings(&engines[0], c1.name, c2.ip),
        "c1 on h1 cannot ping restarted c2 ({}) on h2",
        c2.ip
    );

    // `podman rm -f` of one removes its endpoint everywhere.
    engines[1].podman_ok(&["rm", "-f", "-t", "0", c2.name]);
    for host in 0..2 {
        wait_for(
            &format!("c2's endpoint ({}) to leave h{}'s view", c2.ip, host + 1),
            WAIT,
            || endpoint_with(&cluster, host, c2.ip).is_none(),
        );
    }
    wait_for("c2's MAC to leave h1's fdb", WAIT, || {
        !fdb_has(&cluster, 0, &c2.mac)
    });
    // h2 had no other endpoint: its overlay namespace goes with the last one.
    wait_for("h2's overlay namespace to go", WAIT, || {
        overlay_namespaces(&cluster, 1).is_empty()
    });
    assert!(
        endpoint_with(&cluster, 0, c1.ip).is_some(),
        "c1's endpoint went with c2's"
    );

    // Then the other, and nothing is left: store, fdbs, overlay namespaces, the containers'
    // namespaces, libcni's cache, and the network can go.
    engines[0].podman_ok(&["rm", "-f", "-t", "0", c1.name]);
    for host in 0..2 {
        wait_for(
            &format!("the store to be empty in h{}'s view", host + 1),
            WAIT,
            || endpoints(&cluster, host).is_empty(),
        );
        wait_for(&format!("h{}'s fdb to be empty", host + 1), WAIT, || {
            cluster.hosts[host].fdb_entries().is_empty()
        });
        wait_for(
            &format!("h{}'s overlay namespaces to go", host + 1),
            WAIT,
            || overlay_namespaces(&cluster, host).is_empty(),
        );
    }
    for c in [&c1, &c2] {
        assert!(
            !c.netns.exists(),
            "{}'s network namespace {} is left",
            c.name,
            c.netns.display()
        );
        assert!(
            Podman::cni_cache_files(&c.id).is_empty(),
            "libcni's cache still holds {}: {:?}",
            c.name,
            Podman::cni_cache_files(&c.id)
        );
    }
    for engine in &engines {
        assert!(
            engine.container_ids().is_empty(),
            "podman in {} still has containers",
            engine.host()
        );
    }
    cluster.hosts[1].cli_ok(&["network", "rm", NETWORK]);
}

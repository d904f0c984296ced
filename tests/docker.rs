//! vxtap as Docker's network and IPAM driver (issue 11), with real engines: one dockerd per
//! test host, each beside its host's `vxtap daemon --docker`, on a directory store (two
//! hosts) and on etcd (three hosts).
//!
//! Needs root, Debian's docker.io and busybox-static (./test.sh installs them); fails
//! loudly without them. Every wait is bounded; no assertion depends on timing.

use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};
use vxtap::http::UnixClient;
use vxtap_suite::harness::cluster::StoreKind;
use vxtap_suite::harness::docker::busybox_image;
use vxtap_suite::harness::docker_cluster::DockerCluster;
use vxtap_suite::harness::upstream_dns::{UPSTREAM_ADDRESS, UPSTREAM_NAME};
use vxtap_suite::harness::wait_for;

const WAIT: Duration = Duration::from_secs(30);

fn network_names(dc: &DockerCluster, host: usize) -> Vec<String> {
    dc.docker_ok(host, &["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn has_network(dc: &DockerCluster, host: usize, name: &str) -> bool {
    network_names(dc, host).iter().any(|n| n == name)
}

/// The IP of `container` on `network` (docker inspect).
fn ip_of(dc: &DockerCluster, host: usize, container: &str, network: &str) -> String {
    let template = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    dc.docker_ok(host, &["inspect", "-f", &template, container])
        .trim()
        .to_owned()
}

/// `docker run -d --name NAME --network NETWORK EXTRA... busybox sleep 1000` on `host`.
fn run(dc: &DockerCluster, host: usize, name: &str, network: &str, extra: &[&str]) -> Output {
    let image = busybox_image(&dc.engines[host]);
    let mut args = vec![
        "run",
        "-d",
        "--stop-timeout",
        "1",
        "--name",
        name,
        "--network",
        network,
    ];
    args.extend(extra);
    args.extend([image, "sleep", "1000"]);
    dc.docker(host, &args)
}

fn run_ok(dc: &DockerCluster, host: usize, name: &str, network: &str, extra: &[&str]) {
    let out = run(dc, host, name, network, extra);
    assert!(
        out.status.success(),
        "docker run {name} on h{}: {}\n--- vxtap log ---\n{}",
        host + 1,
        String::from_utf8_lossy(&out.stderr),
        dc.cluster.hosts[host].daemon().log()
    );
}

/// `docker exec CONTAINER ping -c 1 -W 1 TARGET`, retried until it answers (bounded).
fn pings(dc: &DockerCluster, host: usize, container: &str, target: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if dc
            .docker(
                host,
                &["exec", container, "ping", "-c", "1", "-W", "1", target],
            )
            .status
            .success()
        {
            return true;
        }
    }
    false
}

/// Whether a single ping from `container` to `target` is answered.
fn ping_once(dc: &DockerCluster, host: usize, container: &str, target: &str) -> bool {
    dc.docker(
        host,
        &["exec", container, "ping", "-c", "2", "-W", "1", target],
    )
    .status
    .success()
}

/// The first address `nslookup NAME` gives in `container`, or `None` if it fails.
fn resolves(dc: &DockerCluster, host: usize, container: &str, name: &str) -> Option<String> {
    let out = dc.docker(host, &["exec", container, "nslookup", "-type=a", name]);
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // busybox prints the server first, then "Name: ..." and "Address: ..." lines.
    text.split("Name:")
        .nth(1)?
        .lines()
        .find_map(|l| l.trim().strip_prefix("Address:"))
        .map(|a| a.split_whitespace().next().unwrap_or_default().to_owned())
}

/// The NAME column of `vxtap network ls` (ids are hex and may spell a name).
fn vxtap_names(listed: &str) -> Vec<&str> {
    listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The endpoints of `network` in the store, as host `host`'s daemon sees them.
fn store_endpoints(dc: &DockerCluster, host: usize, network: &str) -> Vec<Value> {
    let view = dc.cluster.hosts[host].inspect(network);
    view["endpoints"].as_array().cloned().unwrap_or_default()
}

fn store_names(dc: &DockerCluster, host: usize, network: &str) -> Vec<String> {
    let mut names: Vec<String> = store_endpoints(dc, host, network)
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn fdb_has(dc: &DockerCluster, host: usize, mac: &str) -> bool {
    dc.cluster.hosts[host]
        .fdb_entries()
        .iter()
        .any(|(m, _)| m == mac)
}

fn in_container(dc: &DockerCluster, host: usize, container: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", container];
    args.extend(cmd);
    dc.docker_ok(host, &args).trim().to_owned()
}

/// Networks appear on every host; containers get vxtap addresses, derived MACs and MTU
/// 1450, reach each other across hosts, and every lifecycle step (stop, start, restart, rm,
/// connect, disconnect) updates every host's tables; networks stay isolated; `network rm`
/// is refused while another host has endpoints and then removes the network everywhere.
#[test]
fn user_view_on_a_dir_store() {
    user_view(&DockerCluster::new(2, StoreKind::Dir));
}

/// The same on etcd, with a third host that sees every network and resolves every name.
#[test]
fn user_view_on_etcd() {
    user_view(&DockerCluster::new(3, StoreKind::Etcd));
}

fn user_view(dc: &DockerCluster) {
    let hosts = dc.engines.len();
    let create = [
        "network",
        "create",
        "-d",
        "vxtap",
        "--ipam-driver",
        "vxtap",
        "ov_net1",
    ];
    dc.docker_ok(0, &create);
    for host in 1..hosts {
        wait_for("ov_net1 on every host", WAIT, || {
            has_network(dc, host, "ov_net1")
        });
    }
    let inspect: Value =
        serde_json::from_str(&dc.docker_ok(1, &["network", "inspect", "ov_net1"])).unwrap();
    assert_eq!(inspect[0]["Driver"], "vxtap");
    assert_eq!(inspect[0]["IPAM"]["Driver"], "vxtap");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");

    run_ok(dc, 0, "bbox1", "ov_net1", &[]);
    run_ok(dc, 1, "bbox2", "ov_net1", &[]);
    let ip1 = ip_of(dc, 0, "bbox1", "ov_net1");
    let ip2 = ip_of(dc, 1, "bbox2", "ov_net1");
    assert_eq!(
        (ip1.as_str(), ip2.as_str()),
        ("10.0.0.2", "10.0.0.3"),
        "addresses from vxtap's store, unique across hosts"
    );
    assert_eq!(
        in_container(dc, 0, "bbox1", &["cat", "/sys/class/net/eth0/address"]),
        "02:42:0a:00:00:02"
    );
    assert_eq!(
        in_container(dc, 1, "bbox2", &["cat", "/sys/class/net/eth0/mtu"]),
        "1450"
    );
    assert!(
        pings(dc, 0, "bbox1", &ip2),
        "bbox1 -> bbox2 by IP across hosts"
    );
    assert!(
        pings(dc, 1, "bbox2", &ip1),
        "bbox2 -> bbox1 by IP across hosts"
    );
    wait_for("the container names in the store", WAIT, || {
        store_names(dc, 0, "ov_net1") == ["bbox1", "bbox2"]
    });
    // By name across hosts, as the seeds do: Docker's embedded DNS forwards the names of
    // the other host's containers to vxtap's resolver.
    let by_name = dc.docker(0, &["exec", "bbox1", "ping", "-c", "2", "bbox2"]);
    assert!(
        by_name.status.success(),
        "ping bbox2 by name: {}",
        stderr(&by_name)
    );
    assert!(String::from_utf8_lossy(&by_name.stdout).contains(&format!("({ip2})")));
    assert!(pings(dc, 1, "bbox2", "bbox1"), "and back by name");
    if hosts > 2 {
        run_ok(dc, 2, "bbox8", "ov_net1", &[]);
        assert!(pings(dc, 2, "bbox8", "bbox1"), "h3 -> h1 by name");
        assert!(pings(dc, 0, "bbox1", "bbox8"), "h1 -> h3 by name");
        dc.docker_ok(2, &["rm", "-f", "bbox8"]);
    }
    // --network-alias names too, and NAME.NETWORK.
    run_ok(dc, 1, "bbox7", "ov_net1", &["--network-alias", "web"]);
    let ip7 = ip_of(dc, 1, "bbox7", "ov_net1");
    wait_for("web resolves from h1", WAIT, || {
        resolves(dc, 0, "bbox1", "web") == Some(ip7.clone())
    });
    assert_eq!(resolves(dc, 0, "bbox1", "bbox7.ov_net1"), Some(ip7.clone()));
    // Names vxtap does not own still resolve, through the host's resolvers.
    let upstream = &dc.upstreams[0];
    let before = upstream.queries();
    assert_eq!(
        resolves(dc, 0, "bbox1", UPSTREAM_NAME),
        Some(UPSTREAM_ADDRESS.to_string()),
        "a name vxtap does not own is forwarded"
    );
    assert!(
        upstream.queries() > before,
        "answered by the host's upstream"
    );
    assert_eq!(resolves(dc, 0, "bbox1", "nosuch.test"), None);
    // `vxtap stats` shows what the resolver did.
    let stats = dc.cluster.hosts[0].daemon().stats();
    let resolver = stats["resolvers"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["network"] == "ov_net1"))
        .unwrap_or_else(|| panic!("no resolver of ov_net1 in stats: {stats:#}"))
        .clone();
    for counter in ["queries", "answered", "forwarded"] {
        assert!(
            resolver[counter].as_u64() > Some(0),
            "{counter}: {resolver:#}"
        );
    }
    let text = dc.cluster.hosts[0].cli_ok(&["stats"]);
    assert!(text.contains("resolver ov_net1: "), "{text}");
    dc.docker_ok(1, &["rm", "-f", "bbox7"]);

    // Lifecycle: stop removes the endpoint everywhere, start brings it back.
    let mac2 = "02:42:0a:00:00:03";
    assert!(fdb_has(dc, 0, mac2));
    dc.docker_ok(1, &["stop", "bbox2"]);
    wait_for("bbox2's endpoint to leave h1's fdb", WAIT, || {
        !fdb_has(dc, 0, mac2)
    });
    assert_eq!(store_names(dc, 0, "ov_net1"), ["bbox1"]);
    dc.docker_ok(1, &["start", "bbox2"]);
    let ip2 = ip_of(dc, 1, "bbox2", "ov_net1");
    assert!(
        pings(dc, 0, "bbox1", &ip2),
        "bbox2 reachable again after start"
    );
    dc.docker_ok(1, &["restart", "-t", "1", "bbox2"]);
    let ip2 = ip_of(dc, 1, "bbox2", "ov_net1");
    assert!(
        pings(dc, 0, "bbox1", &ip2),
        "bbox2 reachable again after restart"
    );

    // --ip is honoured and checked; isolation between networks; connect and disconnect.
    dc.docker_ok(
        1,
        &[
            "network",
            "create",
            "-d",
            "vxtap",
            "--ipam-driver",
            "vxtap",
            "--subnet",
            "10.0.1.0/24",
            "ov_net2",
        ],
    );
    for host in (0..hosts).filter(|&h| h != 1) {
        wait_for("ov_net2 on every host", WAIT, || {
            has_network(dc, host, "ov_net2")
        });
    }
    run_ok(dc, 0, "bbox3", "ov_net2", &["--ip", "10.0.1.50"]);
    assert_eq!(ip_of(dc, 0, "bbox3", "ov_net2"), "10.0.1.50");
    let taken = run(dc, 1, "bbox4", "ov_net2", &["--ip", "10.0.1.50"]);
    assert!(!taken.status.success());
    assert!(
        stderr(&taken).contains("10.0.1.50 is already used"),
        "{}",
        stderr(&taken)
    );
    let outside = run(dc, 1, "bbox5", "ov_net2", &["--ip", "10.0.1.0"]);
    assert!(!outside.status.success());
    assert!(
        stderr(&outside).contains("not a usable address") || stderr(&outside).contains("10.0.1.0"),
        "{}",
        stderr(&outside)
    );
    for name in ["bbox4", "bbox5"] {
        let _ = dc.docker(1, &["rm", "-f", name]);
    }
    assert_eq!(
        store_names(dc, 0, "ov_net2").len(),
        1,
        "failed runs leave no claim: {:?}",
        store_names(dc, 0, "ov_net2")
    );
    run_ok(dc, 1, "bbox6", "ov_net2", &[]);
    let ip6 = ip_of(dc, 1, "bbox6", "ov_net2");
    assert!(pings(dc, 0, "bbox3", &ip6), "ov_net2 across hosts");
    assert!(
        !ping_once(dc, 0, "bbox1", &ip6),
        "ov_net1 cannot reach ov_net2"
    );
    assert!(
        !ping_once(dc, 1, "bbox6", &ip1),
        "ov_net2 cannot reach ov_net1"
    );
    dc.docker_ok(1, &["network", "connect", "ov_net1", "bbox6"]);
    assert!(in_container(dc, 1, "bbox6", &["ls", "/sys/class/net"]).contains("eth1"));
    assert!(
        pings(dc, 1, "bbox6", &ip1),
        "bbox6 reaches ov_net1 once connected"
    );
    dc.docker_ok(1, &["network", "disconnect", "ov_net1", "bbox6"]);
    assert!(!in_container(dc, 1, "bbox6", &["ls", "/sys/class/net"]).contains("eth1"));
    assert!(!ping_once(dc, 1, "bbox6", &ip1), "disconnected again");

    // network rm while containers are on the network: Docker refuses on a host that has
    // some; on a host that has none it removes the network from its own engine whatever a
    // driver answers, and vxtap, keeping it in the store, creates it there again.
    let refused = dc.docker(1, &["network", "rm", "ov_net1"]);
    assert!(!refused.status.success(), "bbox2 on h2 is on it");
    assert!(
        stderr(&refused).contains("active endpoints"),
        "{}",
        stderr(&refused)
    );
    dc.docker_ok(1, &["rm", "-f", "bbox2"]);
    let out = dc.docker(1, &["network", "rm", "ov_net1"]);
    eprintln!("network rm on h2 with bbox1 on h1: {}", stderr(&out));
    assert!(
        dc.cluster.hosts[1]
            .daemon()
            .log()
            .contains("has 1 endpoint(s) (bbox1); disconnect them first"),
        "vxtap logged why it keeps the network"
    );
    wait_for("ov_net1 back on h2", WAIT, || has_network(dc, 1, "ov_net1"));
    assert!(
        dc.cluster.hosts[0]
            .cli_ok(&["network", "ls"])
            .contains("ov_net1"),
        "still in the store"
    );
    run_ok(dc, 1, "bbox2", "ov_net1", &[]);
    assert!(pings(dc, 1, "bbox2", "bbox1"), "and usable on h2 again");
    // Once no host has endpoints, it goes everywhere.
    dc.docker_ok(0, &["rm", "-f", "bbox1"]);
    dc.docker_ok(1, &["rm", "-f", "bbox2"]);
    dc.docker_ok(1, &["network", "rm", "ov_net1"]);
    for host in 0..hosts {
        wait_for("ov_net1 to leave every host", WAIT, || {
            !has_network(dc, host, "ov_net1")
        });
    }
    let listed = dc.cluster.hosts[0].cli_ok(&["network", "ls"]);
    assert!(!listed.contains("ov_net1"), "{listed}");

    // A network made with vxtap's own CLI shows up in every engine, and goes with it.
    dc.cluster.hosts[0].cli_ok(&["network", "create", "plain"]);
    for host in 0..hosts {
        wait_for("plain in every engine", WAIT, || {
            has_network(dc, host, "plain")
        });
    }
    dc.cluster.hosts[0].cli_ok(&["network", "rm", "plain"]);
    for host in 0..hosts {
        wait_for("plain gone from every engine", WAIT, || {
            !has_network(dc, host, "plain")
        });
    }
}

/// `docker network create -d vxtap --ipam-driver vxtap ARGS... NAME` on `host`.
fn create(dc: &DockerCluster, host: usize, name: &str, args: &[&str]) -> Output {
    let mut all = vec!["network", "create", "-d", "vxtap", "--ipam-driver", "vxtap"];
    all.extend(args);
    all.push(name);
    dc.docker(host, &all)
}

/// Every bad request gets Docker's error path with vxtap's one-line reason, and leaves
/// nothing: no Docker network on any host, no store record, and the name and subnet stay
/// free for a correct request.
#[test]
fn bad_input_is_refused_with_a_reason_and_nothing_half_made() {
    let dc = DockerCluster::new(2, StoreKind::Dir);
    let ok = create(
        &dc,
        0,
        "base",
        &["--subnet", "10.30.0.0/16", "-o", "vxtap.vni=500"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    wait_for("base on h2", WAIT, || has_network(&dc, 1, "base"));
    // The user mistake from the seeds: Docker's CLI catches it before anything is sent...
    let mistake = create(
        &dc,
        1,
        "bad",
        &["--subnet", "10.22.1.0/24", "--gateway", "10.22.2.1"],
    );
    assert!(!mistake.status.success());
    assert!(
        stderr(&mistake).contains("10.22.2.1"),
        "{}",
        stderr(&mistake)
    );
    // ...and a client that sends it to the engine's API anyway gets vxtap's reason.
    let api = UnixClient::from_url(&dc.engines[1].docker_host(), Duration::from_secs(30)).unwrap();
    let body = serde_json::json!({
        "Name": "bad", "Driver": "vxtap",
        "IPAM": {"Driver": "vxtap", "Config": [{"Subnet": "10.22.1.0/24", "Gateway": "10.22.2.1"}]},
    });
    let reply = api
        .post_json("/networks/create", body.to_string().as_bytes())
        .unwrap();
    let message = String::from_utf8_lossy(&reply.body);
    assert!(reply.status >= 400, "{message}");
    assert!(
        message.contains("gateway 10.22.2.1 is not a usable address of subnet 10.22.1.0/24"),
        "{message}"
    );
    assert!(!has_network(&dc, 1, "bad"));
    let cases: [(&str, Vec<&str>, &str); 5] = [
        (
            "overlapping subnets",
            vec!["--subnet", "10.30.1.0/24"],
            "overlaps network \"base\"",
        ),
        (
            "a VNI in use",
            vec!["-o", "vxtap.vni=500"],
            "VNI 500 is already used by network \"base\"",
        ),
        (
            "an unknown option",
            vec!["-o", "color=red"],
            "vxtap has no option color",
        ),
        (
            "a VNI out of range",
            vec!["-o", "vxtap.vni=0"],
            "VNI 0 is out of range",
        ),
        (
            "IPv6",
            vec!["--ipv6", "--subnet", "fd00:1::/64"],
            "IPv4 only",
        ),
    ];
    for (what, args, reason) in &cases {
        let out = create(&dc, 1, "bad", args);
        assert!(
            !out.status.success(),
            "{what}: docker network create succeeded"
        );
        assert!(
            stderr(&out).contains(reason),
            "{what}: {:?} lacks {reason:?}",
            stderr(&out)
        );
        assert!(
            !has_network(&dc, 1, "bad"),
            "{what}: a Docker network was left"
        );
    }
    // Another IPAM driver cannot hand out vxtap addresses.
    let aux = create(
        &dc,
        1,
        "bad",
        &["--subnet", "10.23.0.0/24", "--aux-address", "a=10.23.0.9"],
    );
    assert!(!aux.status.success());
    assert!(
        stderr(&aux).contains("does not support --aux-address"),
        "{}",
        stderr(&aux)
    );
    assert!(!has_network(&dc, 1, "bad"));
    let default_ipam = dc.docker(1, &["network", "create", "-d", "vxtap", "bad"]);
    assert!(!default_ipam.status.success());
    assert!(
        stderr(&default_ipam).contains("--ipam-driver vxtap"),
        "{}",
        stderr(&default_ipam)
    );
    assert!(!has_network(&dc, 1, "bad"));
    // Nothing reached the store, and nothing spread to the other host.
    let listed = dc.cluster.hosts[0].cli_ok(&["network", "ls"]);
    assert!(!vxtap_names(&listed).contains(&"bad"), "{listed}");
    assert!(!has_network(&dc, 0, "bad"));
    // The refused settings are free for a correct request.
    let fixed = create(
        &dc,
        1,
        "bad",
        &[
            "--subnet",
            "10.22.1.0/24",
            "--gateway",
            "10.22.1.254",
            "-o",
            "vxtap.vni=501",
        ],
    );
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    wait_for("bad (fixed) on h1", WAIT, || has_network(&dc, 0, "bad"));
    let inspect = dc.cluster.hosts[0].inspect("bad");
    assert_eq!(inspect["gateway"], "10.22.1.254", "{inspect:#}");
    assert_eq!(inspect["vni"], 501);
}

/// The daemon killed (SIGKILL) under running containers: they keep their interfaces and
/// reach each other again once it is back, and Docker keeps working with the driver. Then
/// dockerd restarted with live-restore (containers keep running and connected) and without
/// (containers stop; `--restart always` ones come back connected); no endpoint leaks.
#[test]
fn restarts_of_vxtap_and_of_dockerd() {
    let mut dc = DockerCluster::with(
        2,
        StoreKind::Dir,
        &vxtap_suite::harness::docker_cluster::DockerOptions {
            live_restore: true,
            ..Default::default()
        },
    );
    assert!(create(&dc, 0, "net", &[]).status.success());
    wait_for("net on h2", WAIT, || has_network(&dc, 1, "net"));
    run_ok(&dc, 0, "ca", "net", &["--restart", "always"]);
    run_ok(&dc, 1, "cb", "net", &["--restart", "always"]);
    let (ipa, ipb) = (ip_of(&dc, 0, "ca", "net"), ip_of(&dc, 1, "cb", "net"));
    assert!(pings(&dc, 0, "ca", &ipb));

    dc.cluster.kill(0);
    dc.cluster.restart(0);
    assert!(
        pings(&dc, 0, "ca", &ipb),
        "a -> b after vxtap on h1 came back"
    );
    assert!(
        pings(&dc, 1, "cb", &ipa),
        "b -> a after vxtap on h1 came back"
    );
    run_ok(&dc, 0, "cc", "net", &[]);
    let ipc = ip_of(&dc, 0, "cc", "net");
    assert!(
        pings(&dc, 1, "cb", &ipc),
        "a container started after the restart"
    );
    dc.docker_ok(0, &["rm", "-f", "cc"]);
    wait_for("c's endpoint to leave the store", WAIT, || {
        !store_names(&dc, 1, "net").contains(&"cc".to_owned())
    });

    // The daemon's run directory emptied (a reboot does that to /run; Docker keeps its
    // networks): the Docker networks are mapped back from the engine and the store before
    // Docker's first call.
    dc.cluster.kill(0);
    std::fs::remove_file(dc.cluster.hosts[0].run_dir().join("docker.json")).unwrap();
    dc.cluster.restart(0);
    run_ok(&dc, 0, "ce", "net", &[]);
    assert!(
        pings(&dc, 1, "cb", &ip_of(&dc, 0, "ce", "net")),
        "a container after the state was lost"
    );
    dc.docker_ok(0, &["rm", "-f", "ce"]);

    // dockerd with live-restore: the containers never stop.
    dc.engines[1].restart(true);
    assert!(
        ping_once(&dc, 0, "ca", &ipb),
        "b kept running and connected"
    );
    run_ok(&dc, 1, "cd", "net", &[]);
    let ipd = ip_of(&dc, 1, "cd", "net");
    assert!(
        pings(&dc, 0, "ca", &ipd),
        "cd, started after the restart with the address cc had on h1, is reachable"
    );
    dc.docker_ok(1, &["rm", "-f", "cd"]);

    // Without live-restore: b stops with dockerd and comes back by its restart policy.
    dc.engines[1].restart(false);
    wait_for("b running again", WAIT, || {
        dc.docker_ok(1, &["inspect", "-f", "{{.State.Running}}", "cb"])
            .trim()
            == "true"
    });
    let ipb = ip_of(&dc, 1, "cb", "net");
    assert!(
        pings(&dc, 0, "ca", &ipb),
        "b reachable after dockerd came back"
    );
    wait_for("the store to hold exactly a and b", WAIT, || {
        store_names(&dc, 0, "net") == ["ca", "cb"]
    });
}

/// Moves `megabytes` of random bytes from `from` (on host `a`, at `ip`) to `to` (on host
/// `b`) over TCP: busybox's httpd serves the file, busybox's wget fetches it. Returns both
/// SHA-256 digests.
fn transfer(
    dc: &DockerCluster,
    (a, from): (usize, &str),
    (b, to): (usize, &str),
    ip: &str,
    megabytes: u32,
) -> (String, String) {
    let digest = |host: usize, container: &str, file: &str| {
        in_container(dc, host, container, &["sha256sum", file])
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    in_container(dc, a, from, &["mkdir", "-p", "/srv"]);
    in_container(
        dc,
        a,
        from,
        &[
            "dd",
            "if=/dev/urandom",
            "of=/srv/blob",
            "bs=1M",
            &format!("count={megabytes}"),
        ],
    );
    let sent = digest(a, from, "/srv/blob");
    dc.docker_ok(
        a,
        &[
            "exec", "-d", from, "httpd", "-f", "-p", "8080", "-h", "/srv",
        ],
    );
    let url = format!("http://{ip}:8080/blob");
    wait_for("the file fetched", WAIT, || {
        dc.docker(b, &["exec", to, "wget", "-q", "-O", "/tmp/got", &url])
            .status
            .success()
    });
    (sent, digest(b, to, "/tmp/got"))
}

/// Three hosts on etcd: a network created on one appears on the others with its VNI and
/// MTU; containers on all three reach each other by name; 200 MB cross intact; a host lost
/// for good takes its endpoints with its lease (and brings them back when it returns); an
/// unreachable store fails `docker network create` and `docker run` with vxtap's reason,
/// while what runs keeps working.
#[test]
fn three_hosts_on_etcd() {
    let mut dc = DockerCluster::new(3, StoreKind::Etcd);
    let args = [
        "--subnet",
        "10.40.0.0/24",
        "-o",
        "vxtap.vni=42",
        "-o",
        "com.docker.network.driver.mtu=1400",
    ];
    let out = create(&dc, 1, "ov_net1", &args);
    assert!(out.status.success(), "{}", stderr(&out));
    for host in [0, 2] {
        wait_for("ov_net1 everywhere", WAIT, || {
            has_network(&dc, host, "ov_net1")
        });
    }
    assert_eq!(dc.cluster.hosts[0].inspect("ov_net1")["vni"], 42);
    for (host, name) in [(0, "bbox1"), (1, "bbox2"), (2, "bbox3")] {
        run_ok(&dc, host, name, "ov_net1", &[]);
    }
    assert_eq!(
        in_container(&dc, 2, "bbox3", &["cat", "/sys/class/net/eth0/mtu"]),
        "1400"
    );
    let ips: Vec<String> = [(0, "bbox1"), (1, "bbox2"), (2, "bbox3")]
        .iter()
        .map(|(h, n)| ip_of(&dc, *h, n, "ov_net1"))
        .collect();
    assert_eq!(ips, ["10.40.0.2", "10.40.0.3", "10.40.0.4"]);
    assert!(pings(&dc, 0, "bbox1", "bbox3"), "h1 -> h3 by name");
    assert!(pings(&dc, 2, "bbox3", "bbox2"), "h3 -> h2 by name");
    assert!(pings(&dc, 1, "bbox2", "bbox1"), "h2 -> h1 by name");

    let (sent, got) = transfer(&dc, (0, "bbox1"), (1, "bbox2"), &ips[0], 200);
    assert_eq!(
        sent, got,
        "200 MB from bbox1 (h1) to bbox2 (h2), by SHA-256"
    );

    // h3's daemon lost for good: its lease expires and its endpoint leaves every table.
    let mac3 = "02:42:0a:28:00:04";
    assert!(fdb_has(&dc, 0, mac3));
    dc.cluster.kill(2);
    wait_for(
        "bbox3's endpoint to expire with h3's lease",
        Duration::from_secs(60),
        || !fdb_has(&dc, 0, mac3) && !store_names(&dc, 0, "ov_net1").contains(&"bbox3".to_owned()),
    );
    assert!(!ping_once(&dc, 0, "bbox1", &ips[2]));
    // ...and back when it returns: the endpoint is published again.
    dc.cluster.restart(2);
    wait_for("bbox3 back in h1's fdb", WAIT, || fdb_has(&dc, 0, mac3));
    assert!(
        pings(&dc, 0, "bbox1", &ips[2]),
        "bbox3 reachable after h3 returned"
    );

    // The store unreachable: changes fail with vxtap's reason; forwarding goes on.
    dc.cluster.etcd.as_mut().expect("etcd").stop();
    let out = create(&dc, 0, "ov_net9", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert!(!has_network(&dc, 0, "ov_net9"));
    let out = run(&dc, 0, "bbox9", "ov_net1", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert!(
        ping_once(&dc, 0, "bbox1", &ips[1]),
        "running containers keep talking"
    );
    dc.cluster.etcd.as_mut().expect("etcd").start_again();
    let _ = dc.docker(0, &["rm", "-f", "bbox9"]);
    let out = create(&dc, 0, "ov_net9", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("ov_net9 on h3", WAIT, || has_network(&dc, 2, "ov_net9"));

    // Everything removed: nothing left in the store.
    for (host, name) in [(0, "bbox1"), (1, "bbox2"), (2, "bbox3")] {
        dc.docker_ok(host, &["rm", "-f", name]);
    }
    wait_for("no endpoint left in the store", WAIT, || {
        store_names(&dc, 0, "ov_net1").is_empty()
    });
    dc.docker_ok(2, &["network", "rm", "ov_net1", "ov_net9"]);
    for host in [0, 1] {
        wait_for("the networks gone everywhere", WAIT, || {
            !has_network(&dc, host, "ov_net1") && !has_network(&dc, host, "ov_net9")
        });
    }
}

/// What reaches the plugin socket is untrusted: junk and ids that are not Docker's get a
/// one-line error in the form the protocol reads, and an address claimed through the IPAM
/// API that no endpoint ever uses (dockerd died in between) is released by the daemon after
/// a grace period, not held for ever.
#[test]
fn the_plugin_socket_refuses_junk_and_unused_claims_are_released() {
    let dc = DockerCluster::new(1, StoreKind::Dir);
    let out = create(&dc, 0, "net", &["--subnet", "10.50.0.0/24"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plugin = dc.plugin_socket(0);
    let call = |path: &str, body: &str| -> Value {
        let reply = UnixClient::from_url(plugin.to_str().unwrap(), Duration::from_secs(30))
            .unwrap()
            .post_json(path, body.as_bytes())
            .unwrap();
        assert_eq!(reply.status, 200, "{path}");
        serde_json::from_slice(&reply.body).unwrap()
    };
    let junk = call("/NetworkDriver.Join", "{\"NetworkID\": [1, 2");
    assert!(
        junk["Err"].as_str().unwrap().contains("malformed"),
        "{junk}"
    );
    let bad_id = call(
        "/NetworkDriver.Join",
        r#"{"NetworkID":"../../x","EndpointID":"y"}"#,
    );
    assert!(
        bad_id["Err"]
            .as_str()
            .unwrap()
            .contains("not 64 hex digits"),
        "{bad_id}"
    );
    let unknown = call("/NetworkDriver.Frobnicate", "{}");
    assert!(
        unknown["Err"]
            .as_str()
            .unwrap()
            .contains("does not implement"),
        "{unknown}"
    );
    let ipam = call(
        "/IpamDriver.RequestAddress",
        r#"{"PoolID":"10.99.0.0/24","Address":""}"#,
    );
    assert!(
        ipam["Error"].as_str().unwrap().contains("10.99.0.0/24"),
        "{ipam}"
    );

    // A claim Docker never follows with an endpoint.
    let claimed = call(
        "/IpamDriver.RequestAddress",
        r#"{"PoolID":"10.50.0.0/24","Address":""}"#,
    );
    assert_eq!(claimed["Address"], "10.50.0.2/24", "{claimed}");
    assert_eq!(store_names(&dc, 0, "net"), ["docker-10-50-0-2"]);
    wait_for(
        "the unused claim to be released",
        Duration::from_secs(120),
        || store_names(&dc, 0, "net").is_empty(),
    );
    // Logged just after the record goes.
    wait_for("the release logged", WAIT, || {
        dc.cluster.hosts[0]
            .daemon()
            .log()
            .contains("released an address no Docker endpoint used")
    });
    // The address is free again.
    run_ok(&dc, 0, "c1", "net", &[]);
    assert_eq!(ip_of(&dc, 0, "c1", "net"), "10.50.0.2");
}

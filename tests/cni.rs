//! The `vxtap` binary as a CNI plugin, driven by hand as the spec describes (CNI_* variables
//! and the netconf on stdin) against two hosts' daemons on a directory store and container
//! namespaces the test makes: every command, every error code, DEL idempotence, CHECK
//! catching a deleted address, GC removing a stale attachment, nothing left after a failed
//! ADD. Needs root (namespaces, the daemons); fails loudly without it.

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use vxtap_suite::harness::cluster::{Cluster, StoreKind};
use vxtap_suite::harness::daemon::binary;
use vxtap_suite::harness::wait_for;
use vxtap_suite::harness::NetnsExt;

/// Runs the plugin with `vars` (and nothing else of this process's environment but PATH)
/// and `conf` on stdin; its exit status and stdout parsed (Null when empty).
fn plugin(vars: &[(&str, &str)], conf: &str) -> (i32, Value) {
    let mut command = Command::new(binary());
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the vxtap binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.as_bytes())
        .expect("writing the netconf");
    let out = child.wait_with_output().expect("the plugin ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
    };
    (out.status.code().unwrap_or(-1), value)
}

/// The netconf of network `network` for the daemon in `run_dir`, as `vxtap cni config
/// --cni-version 1.1.0` prints it (its single plugin, with the conflist's version and name).
fn netconf(cluster: &Cluster, host: usize, network: &str) -> Value {
    let dir = cluster.hosts[host].run_dir().display().to_string();
    let list: Value = serde_json::from_str(&cluster.hosts[host].cli_ok(&[
        "cni",
        "config",
        network,
        "--run-dir",
        &dir,
        "--cni-version",
        "1.1.0",
    ]))
    .unwrap();
    let mut conf = list["plugins"][0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    conf
}

fn vars<'a>(
    command: &'a str,
    container: &'a str,
    netns: &'a Path,
    ifname: &'a str,
) -> Vec<(&'a str, String)> {
    vec![
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", container.to_owned()),
        ("CNI_NETNS", netns.display().to_string()),
        ("CNI_IFNAME", ifname.to_owned()),
        ("CNI_PATH", "/opt/cni/bin".to_owned()),
    ]
}

fn call(vars: &[(&str, String)], conf: &Value) -> (i32, Value) {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    plugin(&vars, &conf.to_string())
}

fn store_names(cluster: &Cluster, network: &str) -> Vec<String> {
    let view = cluster.hosts[0].inspect(network);
    let mut names: Vec<String> = view["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn every_cni_command_by_hand() {
    let mut cluster = Cluster::new_with(2, StoreKind::Dir, |topology, i| {
        // The resolver on (CNI results list it), forwarding inside the test's namespaces only.
        let upstream = format!("{}:5353", topology.hosts[i].underlay_ip);
        vec!["--dns".to_owned(), "--dns-upstream".to_owned(), upstream]
    });
    cluster.hosts[0].cli_ok(&["network", "create", "--subnet", "10.70.0.0/24", "cninet"]);
    let c1 = cluster.container("c1");
    let c2 = cluster.container("c2");
    let c3 = cluster.container("c3");
    let (p1, p2, p3) = (
        cluster.containers[c1].path().to_owned(),
        cluster.containers[c2].path().to_owned(),
        cluster.containers[c3].path().to_owned(),
    );
    let conf1 = netconf(&cluster, 0, "cninet");
    let conf2 = netconf(&cluster, 1, "cninet");

    // VERSION.
    let (status, version) = plugin(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(status, 0);
    assert!(version["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&Value::from("1.1.0")));

    // ADD on both hosts; c2 asks for its address through CNI_ARGS.
    let (status, r1) = call(&vars("ADD", "ctr1", &p1, "net1"), &conf1);
    assert_eq!(status, 0, "{r1}");
    assert_eq!(r1["cniVersion"], "1.1.0");
    assert_eq!(r1["ips"][0]["address"], "10.70.0.2/24");
    assert_eq!(r1["ips"][0]["gateway"], "10.70.0.1");
    assert_eq!(r1["interfaces"][1]["name"], "net1");
    assert!(r1["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .starts_with("ve"));
    assert_eq!(r1["interfaces"][1]["sandbox"], p1.display().to_string());
    assert_eq!(r1["interfaces"][1]["mac"], "02:42:0a:46:00:02");
    assert_eq!(r1["dns"]["nameservers"][0], "169.254.53.53");
    let mut add2 = vars("ADD", "ctr2", &p2, "eth0");
    add2.push((
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;IP=10.70.0.50".to_owned(),
    ));
    let (status, r2) = call(&add2, &conf2);
    assert_eq!(status, 0, "{r2}");
    assert_eq!(r2["ips"][0]["address"], "10.70.0.50/24");
    assert_eq!(store_names(&cluster, "cninet"), ["ctr1", "web.prod"]);
    let ping = |from: &vxtap_suite::harness::Netns, to: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                from.name(),
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                to,
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    wait_for("c1 -> c2 across hosts", Duration::from_secs(20), || {
        ping(&cluster.containers[c1], "10.70.0.50")
    });
    assert!(ping(&cluster.containers[c2], "10.70.0.2"), "c2 -> c1");
    // The MTU is the network's, the interface has the derived MAC.
    let link = cluster.containers[c2].ip(&["-j", "link", "show", "eth0"]);
    assert!(
        link.contains("\"mtu\":1450") && link.contains("02:42:0a:46:00:32"),
        "{link}"
    );

    // CHECK: as ADD made it; then not, once the address is gone.
    let mut check_conf = conf1.clone();
    check_conf["prevResult"] = r1.clone();
    let (status, out) = call(&vars("CHECK", "ctr1", &p1, "net1"), &check_conf);
    assert_eq!((status, &out), (0, &Value::Null));
    assert_eq!(r1["routes"][0]["dst"], "169.254.53.53/32", "{r1}");
    cluster.containers[c1].ip(&["route", "del", "169.254.53.53/32"]);
    let (status, out) = call(&vars("CHECK", "ctr1", &p1, "net1"), &check_conf);
    assert_eq!((status, out["code"].as_u64()), (1, Some(103)), "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("no route to 169.254.53.53/32"),
        "{out}"
    );
    cluster.containers[c1].ip(&[
        "route",
        "add",
        "169.254.53.53/32",
        "via",
        "10.70.0.1",
        "dev",
        "net1",
    ]);
    assert_eq!(call(&vars("CHECK", "ctr1", &p1, "net1"), &check_conf).0, 0);
    cluster.containers[c1].ip(&["addr", "flush", "dev", "net1"]);
    let (status, out) = call(&vars("CHECK", "ctr1", &p1, "net1"), &check_conf);
    assert_eq!(status, 1);
    assert_eq!(out["code"], 103, "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("does not hold 10.70.0.2/24"),
        "{out}"
    );

    // DEL twice, DEL of an unknown container, DEL after the namespace is gone.
    for _ in 0..2 {
        let (status, out) = call(&vars("DEL", "ctr1", &p1, "net1"), &conf1);
        assert_eq!((status, &out), (0, &Value::Null));
    }
    assert!(
        !cluster.containers[c1].ip(&["link"]).contains("net1"),
        "net1 removed"
    );
    let (status, _) = call(&vars("DEL", "nobody", &p1, "eth0"), &conf1);
    assert_eq!(status, 0);
    let gone = cluster.containers.remove(c2);
    drop(gone);
    let del2 = [
        ("CNI_COMMAND", "DEL".to_owned()),
        ("CNI_CONTAINERID", "ctr2".to_owned()),
        ("CNI_IFNAME", "eth0".to_owned()),
    ];
    let (status, _) = call(&del2, &conf2);
    assert_eq!(status, 0, "DEL with the namespace gone and no CNI_NETNS");
    assert!(store_names(&cluster, "cninet").is_empty());
    wait_for(
        "c2's entry gone from h1's fdb",
        Duration::from_secs(20),
        || {
            !cluster.hosts[0]
                .fdb_entries()
                .iter()
                .any(|(m, _)| m == "02:42:0a:46:00:32")
        },
    );

    // GC removes what the runtime no longer has.
    let p1 = cluster.containers[c1].path().to_owned();
    let c3 = c3 - 1;
    assert_eq!(cluster.containers[c3].path(), p3);
    assert_eq!(call(&vars("ADD", "keep", &p1, "net1"), &conf1).0, 0);
    assert_eq!(call(&vars("ADD", "stale", &p3, "net1"), &conf1).0, 0);
    let mut gc = conf1.clone();
    gc["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "keep", "ifname": "net1"}]);
    let (status, out) = call(&[("CNI_COMMAND", "GC".to_owned())], &gc);
    assert_eq!((status, &out), (0, &Value::Null));
    assert_eq!(store_names(&cluster, "cninet"), ["keep"]);
    assert!(
        !cluster.containers[c3].ip(&["link"]).contains("net1"),
        "stale's interface removed"
    );

    // A failed ADD leaves nothing: the address is taken.
    let mut taken = vars("ADD", "dup", &p3, "net1");
    taken.push(("CNI_ARGS", "IP=10.70.0.2".to_owned()));
    let (status, out) = call(&taken, &conf1);
    assert_eq!(status, 1);
    assert_eq!(out["code"], 101, "{out}");
    assert!(!cluster.containers[c3].ip(&["link"]).contains("net1"));
    assert_eq!(store_names(&cluster, "cninet"), ["keep"]);

    // Every other error code.
    let add3 = vars("ADD", "x", &p3, "net1");
    let mut unknown = conf1.clone();
    unknown["network"] = "nonet".into();
    assert_eq!(
        call(&add3, &unknown).1["code"],
        100,
        "a network the store lacks is not created"
    );
    let mut no_network = conf1.clone();
    no_network.as_object_mut().unwrap().remove("network");
    assert_eq!(call(&add3, &no_network).1["code"], 7);
    let mut old = conf1.clone();
    old["cniVersion"] = "0.1.0".into();
    assert_eq!(call(&add3, &old).1["code"], 1);
    let add3: Vec<(&str, &str)> = add3.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(plugin(&add3, "{oops").1["code"], 6);
    let no_ifname: Vec<(&str, &str)> = add3
        .iter()
        .filter(|(k, _)| *k != "CNI_IFNAME")
        .copied()
        .collect();
    assert_eq!(plugin(&no_ifname, &conf1.to_string()).1["code"], 4);

    // STATUS, and what a runtime sees without the daemon.
    assert_eq!(call(&[("CNI_COMMAND", "STATUS".to_owned())], &conf2).0, 0);
    cluster.kill(1);
    let (status, out) = call(&[("CNI_COMMAND", "STATUS".to_owned())], &conf2);
    assert_eq!((status, out["code"].as_u64()), (1, Some(50)), "{out}");
    let p3 = cluster.containers[c3].path().to_owned();
    let (status, out) = call(&vars("ADD", "later", &p3, "net1"), &conf2);
    assert_eq!((status, out["code"].as_u64()), (1, Some(11)), "{out}");
    cluster.restart(1);
    assert_eq!(call(&[("CNI_COMMAND", "STATUS".to_owned())], &conf2).0, 0);
}

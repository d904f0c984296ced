//! The plugin's side, without root: a fake daemon records requests and answers as told.

use super::*;
use crate::cluster::Endpoint;
use std::cell::RefCell;
use std::collections::HashMap;

type Answer = Box<dyn Fn(&Request) -> Result<Reply, ClientError>>;

struct Fake {
    answer: Answer,
    seen: RefCell<Vec<(PathBuf, Request)>>,
}

impl Daemon for Fake {
    fn call(&self, run_dir: &Path, request: &Request) -> Result<Reply, ClientError> {
        self.seen
            .borrow_mut()
            .push((run_dir.to_owned(), request.clone()));
        (self.answer)(request)
    }
}

fn fake(answer: impl Fn(&Request) -> Result<Reply, ClientError> + 'static) -> Fake {
    Fake {
        answer: Box::new(answer),
        seen: RefCell::new(Vec::new()),
    }
}

fn added(request: &Request) -> Result<Reply, ClientError> {
    let Request::CniAdd { ip, name, .. } = request else {
        return Ok(Reply::Done);
    };
    let ip = ip.unwrap_or(Ipv4Addr::new(10, 0, 0, 2));
    Ok(Reply::CniAdded(Box::new(CniAdded {
        endpoint: Endpoint {
            id: "1".repeat(64),
            network: "2".repeat(64),
            name: name.clone(),
            ip,
            mac: "02:42:0a:00:00:02".into(),
            host: "h1".into(),
            vtep: Ipv4Addr::new(198, 18, 0, 1),
            netns: "/run/netns/c1".into(),
            ifname: "net1".into(),
            aliases: Vec::new(),
        },
        prefix: 24,
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        host_ifname: "ve11111111".into(),
        host_netns: "/run/vxtap/netns/ov-222222222222".into(),
        resolver: Some(Ipv4Addr::new(169, 254, 53, 53)),
    })))
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

const CONF: &str = r#"{"cniVersion":"1.1.0","name":"cninet","type":"vxtap","network":"cninet","runDir":"/tmp/h1"}"#;

fn add_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut vars = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "0123456789abcdef0123"),
        ("CNI_NETNS", "/run/netns/c1"),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    vars.extend_from_slice(extra);
    vars
}

fn parse(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn add_returns_a_spec_result_and_asks_the_daemon_once() {
    let daemon = fake(added);
    let (out, status) = run(&env(&add_env(&[])), CONF.as_bytes(), &daemon);
    assert_eq!(status, 0, "{out}");
    let r = parse(&out);
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][1]["name"], "net1");
    assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/c1");
    assert_eq!(r["interfaces"][1]["mac"], "02:42:0a:00:00:02");
    assert_eq!(r["ips"][0]["address"], "10.0.0.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.0.0.1");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert!(
        r["ips"][0].get("version").is_none(),
        "no version field in 1.x"
    );
    assert_eq!(r["dns"]["nameservers"][0], "169.254.53.53");
    assert_eq!(r["routes"][0]["dst"], "169.254.53.53/32");
    let seen = daemon.seen.borrow();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, PathBuf::from("/tmp/h1"));
    let Request::CniAdd {
        name, ip, network, ..
    } = &seen[0].1
    else {
        panic!("{:?}", seen[0].1)
    };
    assert_eq!(network, "cninet");
    assert_eq!(
        name, "0123456789ab",
        "the container id's first 12 characters"
    );
    assert_eq!(*ip, None);
}

#[test]
fn names_and_addresses_come_from_cni_args_and_runtime_config() {
    let daemon = fake(added);
    let vars = add_env(&[(
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1;IP=10.0.0.9",
    )]);
    let (out, status) = run(&env(&vars), CONF.as_bytes(), &daemon);
    assert_eq!(status, 0, "{out}");
    assert_eq!(parse(&out)["ips"][0]["address"], "10.0.0.9/24");
    let conf = r#"{"cniVersion":"0.4.0","name":"cninet","type":"vxtap","network":"cninet","runtimeConfig":{"ips":["fd00::5/64","10.0.0.7/24"]}}"#;
    let (out, status) = run(&env(&add_env(&[])), conf.as_bytes(), &daemon);
    assert_eq!(status, 0, "{out}");
    let r = parse(&out);
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["address"], "10.0.0.7/24");
    assert_eq!(
        r["ips"][0]["version"], "4",
        "0.4.0 results carry the IP version"
    );
    let seen = daemon.seen.borrow();
    let names: Vec<&str> = seen
        .iter()
        .filter_map(|(_, r)| match r {
            Request::CniAdd { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["web-1.prod", "0123456789ab"]);
    assert_eq!(seen[1].0, PathBuf::from(DEFAULT_RUN_DIR));
}

#[test]
fn every_error_has_its_code() {
    let daemon = fake(added);
    let code_of = |vars: &[(&str, &str)], conf: &str| {
        let (out, status) = run(&env(vars), conf.as_bytes(), &daemon);
        assert_eq!(status, 1, "{out}");
        let r = parse(&out);
        assert!(r["msg"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
        r["code"].as_u64().unwrap()
    };
    let add = add_env(&[]);
    assert_eq!(code_of(&add, r#"{"cniVersion":"9.9.9","network":"x"}"#), 1);
    let no_netns: Vec<_> = add
        .iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .copied()
        .collect();
    assert_eq!(code_of(&no_netns, CONF), 4);
    assert_eq!(code_of(&[("CNI_COMMAND", "FROB")], CONF), 4);
    assert_eq!(code_of(&add_env(&[("CNI_ARGS", "IP=10.0.0")]), CONF), 4);
    assert_eq!(code_of(&add_env(&[("CNI_ARGS", "novalue")]), CONF), 4);
    assert_eq!(code_of(&add, "{not json"), 6);
    assert_eq!(
        code_of(&add, r#"{"cniVersion":"1.1.0","name":"x","type":"vxtap"}"#),
        7
    );
    let refusing =
        |message: &'static str| fake(move |_| Err(ClientError::Refused(message.to_owned())));
    for (daemon, want) in [
        (refusing("network \"nope\" not found"), 100),
        (
            refusing("IP 10.0.0.9 is already used by endpoint \"a\" on network \"n\""),
            101,
        ),
        (refusing("/run/netns/c1 already has an interface net1"), 102),
        (
            refusing("store etcd://x is unreachable (the daemon keeps retrying)"),
            11,
        ),
    ] {
        let (out, status) = run(&env(&add), CONF.as_bytes(), &daemon);
        assert_eq!(status, 1);
        assert_eq!(parse(&out)["code"], want, "{out}");
    }
    let gone = fake(|_| {
        Err(ClientError::NotRunning {
            path: "/tmp/h1/vxtap.sock".into(),
        })
    });
    let (out, _) = run(&env(&add), CONF.as_bytes(), &gone);
    assert_eq!(parse(&out)["code"], 11);
    let (out, _) = run(&env(&[("CNI_COMMAND", "STATUS")]), CONF.as_bytes(), &gone);
    assert_eq!(parse(&out)["code"], 50);
}

#[test]
fn del_check_gc_status_and_version() {
    let daemon = fake(added);
    let del = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "net1"),
    ];
    assert_eq!(
        run(&env(&del), CONF.as_bytes(), &daemon),
        (String::new(), 0),
        "no netns needed"
    );
    let check_conf = r#"{"cniVersion":"1.1.0","name":"cninet","type":"vxtap","network":"cninet",
        "prevResult":{"interfaces":[{"name":"ve1"},{"name":"net1","sandbox":"/run/netns/c1"}],
                      "ips":[{"address":"10.0.0.2/24","interface":1}]}}"#;
    let mut vars: Vec<(&str, &str)> = add_env(&[])
        .into_iter()
        .filter(|(k, _)| *k != "CNI_COMMAND")
        .collect();
    vars.push(("CNI_COMMAND", "CHECK"));
    assert_eq!(run(&env(&vars), check_conf.as_bytes(), &daemon).1, 0);
    let failing = fake(|_| {
        Err(ClientError::Refused(
            "net1 does not hold 10.0.0.2/24".into(),
        ))
    });
    let (out, status) = run(&env(&vars), check_conf.as_bytes(), &failing);
    assert_eq!((status, parse(&out)["code"].as_u64()), (1, Some(103)));
    let gc = r#"{"cniVersion":"1.1.0","name":"cninet","type":"vxtap","network":"cninet",
        "cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth0"}]}"#;
    assert_eq!(
        run(&env(&[("CNI_COMMAND", "GC")]), gc.as_bytes(), &daemon).1,
        0
    );
    assert_eq!(
        run(&env(&[("CNI_COMMAND", "STATUS")]), CONF.as_bytes(), &daemon).1,
        0
    );
    let (out, status) = run(
        &env(&[("CNI_COMMAND", "VERSION")]),
        b"{\"cniVersion\":\"1.1.0\"}",
        &daemon,
    );
    assert_eq!(status, 0);
    assert_eq!(parse(&out)["supportedVersions"][4], "1.1.0");
    let seen: Vec<&'static str> = daemon.seen.borrow().iter().map(|(_, r)| r.name()).collect();
    assert_eq!(seen, ["cni del", "cni check", "cni gc", "network ls"]);
    let Request::CniGc { valid } = &daemon.seen.borrow()[2].1 else {
        panic!()
    };
    assert_eq!(
        valid,
        &[CniAttachment {
            container: "c2".into(),
            ifname: "eth0".into()
        }]
    );
}

#[test]
fn conflists_name_the_network() {
    let c = conflist("cninet", Some(Path::new("/run/vxtap-h1")));
    assert_eq!(c["plugins"][0]["type"], "vxtap");
    assert_eq!(c["plugins"][0]["network"], "cninet");
    assert_eq!(c["plugins"][0]["runDir"], "/run/vxtap-h1");
    assert_eq!(c["cniVersion"], SPEC_VERSION);
}

//! Fuzz check for the CNI plugin's side (`vxtap::cni::run`): whatever a runtime (or anyone who
//! can run the plugin) puts in the environment and on stdin.
//!
//! Input: the environment, then the byte `0xff`, then stdin. The environment part is lines of
//! `KEY=VALUE`; its first byte picks `CNI_COMMAND` among the six commands and one unknown
//! (low three bits) and what the stand-in daemon answers (the next two bits: an ADD result
//! built from the request, a refusal, "not running", or done).
//!
//! Properties:
//! - nothing panics;
//! - the exit status is 0 or 1, and stdout is empty or one JSON object;
//! - a failure (1) prints the spec's error: a `code` (1, 4, 6, 7, 11, 50, or 100-103), a
//!   non-empty `msg`, and a `cniVersion` that is one of the supported versions;
//! - an ADD that succeeds prints a result whose container interface is `CNI_IFNAME` and whose
//!   address is the one the daemon gave, and asked the daemon exactly once.

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::path::Path;
use vxtap::api::{CniAdded, Reply, Request};
use vxtap::client::ClientError;
use vxtap::cluster::Endpoint;
use vxtap::cni::{self, Daemon, SUPPORTED_VERSIONS};

struct StandIn {
    mode: u8,
    calls: Cell<u32>,
}

impl Daemon for StandIn {
    fn call(&self, _: &Path, request: &Request) -> Result<Reply, ClientError> {
        self.calls.set(self.calls.get() + 1);
        match (self.mode, request) {
            (
                0,
                Request::CniAdd {
                    name,
                    ip,
                    attachment,
                    ..
                },
            ) => Ok(Reply::CniAdded(Box::new(CniAdded {
                endpoint: Endpoint {
                    id: "1".repeat(64),
                    network: "2".repeat(64),
                    name: name.clone(),
                    ip: ip.unwrap_or(Ipv4Addr::new(10, 0, 0, 2)),
                    mac: "02:42:0a:00:00:02".into(),
                    host: "h".into(),
                    vtep: Ipv4Addr::new(198, 18, 0, 1),
                    netns: "/run/netns/x".into(),
                    ifname: attachment.ifname.clone(),
                    aliases: Vec::new(),
                },
                prefix: 24,
                gateway: Ipv4Addr::new(10, 0, 0, 1),
                host_ifname: "ve11111111".into(),
                host_netns: "/run/vxtap/netns/ov-x".into(),
                resolver: None,
            }))),
            (1, _) => Err(ClientError::Refused("network \"x\" not found".into())),
            (2, _) => Err(ClientError::NotRunning {
                path: "/run/vxtap/vxtap.sock".into(),
            }),
            _ => Ok(Reply::Done),
        }
    }
}

const COMMANDS: [&str; 7] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION", "FROB"];

/// Checks one input; panics when a property breaks.
pub fn cni_call(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (env_part, stdin) = match rest.iter().position(|&b| b == 0xff) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let command = COMMANDS[usize::from(first & 7) % COMMANDS.len()];
    let mut vars: Vec<(String, String)> = String::from_utf8_lossy(env_part)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    vars.push(("CNI_COMMAND".to_owned(), command.to_owned()));
    let env = |key: &str| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let daemon = StandIn {
        mode: (first >> 3) & 3,
        calls: Cell::new(0),
    };
    let (out, status) = cni::run(&env, stdin, &daemon);
    assert!(status == 0 || status == 1, "exit status {status}");
    if out.is_empty() {
        assert_eq!(status, 0, "a failure prints its error");
        return;
    }
    let value: serde_json::Value = serde_json::from_str(&out).expect("stdout is JSON");
    assert!(value.is_object(), "{out}");
    let version = value["cniVersion"]
        .as_str()
        .expect("every answer has cniVersion");
    assert!(SUPPORTED_VERSIONS.contains(&version), "{version}");
    if status == 1 {
        let code = value["code"].as_u64().expect("an error has a code");
        assert!(
            [1, 4, 6, 7, 11, 50].contains(&code) || (100..=103).contains(&code),
            "code {code}"
        );
        assert!(
            value["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{out}"
        );
    } else if command == "ADD" {
        assert_eq!(daemon.calls.get(), 1, "ADD asks the daemon once");
        assert_eq!(
            value["interfaces"][1]["name"].as_str(),
            env("CNI_IFNAME").as_deref()
        );
        let address = value["ips"][0]["address"].as_str().expect("an address");
        assert!(address.ends_with("/24"), "{address}");
    }
}

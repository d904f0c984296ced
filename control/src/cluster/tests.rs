use super::*;
use crate::store::{Entry, Listing};
use std::collections::BTreeMap;

fn network(name: &str, id: &str, vni: u32, subnet: &str) -> Network {
    let subnet: Subnet = subnet.parse().unwrap();
    Network {
        id: id.to_owned(),
        name: name.to_owned(),
        vni,
        subnet,
        gateway: subnet.first_host(),
        mtu: DEFAULT_MTU,
        created: 1,
    }
}

fn snapshot_with(networks: &[Network], endpoints: &[Endpoint]) -> Snapshot {
    // Every endpoint's host has a record, as its daemon writes one.
    let hosts: BTreeMap<&str, Host> = endpoints
        .iter()
        .map(|e| {
            let host = Host {
                name: e.host.clone(),
                vtep: e.vtep,
                pid: 1,
                started: 1,
            };
            (e.host.as_str(), host)
        })
        .collect();
    let mut entries: Vec<Entry> = networks
        .iter()
        .map(|n| Entry {
            key: n.key(),
            value: serde_json::to_vec(n).unwrap(),
            created: 1,
        })
        .chain(endpoints.iter().map(|e| {
            // The daemon names the interface before it writes the record.
            let mut e = e.clone();
            if e.ifname.is_empty() {
                e.ifname = "eth0".into();
            }
            Entry {
                key: e.key(),
                value: serde_json::to_vec(&e).unwrap(),
                created: 2,
            }
        }))
        .chain(hosts.values().map(|h| Entry {
            key: h.key(),
            value: serde_json::to_vec(h).unwrap(),
            created: 1,
        }))
        .collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Snapshot::from_listing(&Listing {
        entries,
        revision: 1,
    })
}

fn request(name: &str) -> NetworkRequest {
    NetworkRequest {
        name: name.to_owned(),
        ..NetworkRequest::default()
    }
}

fn endpoint_request(name: &str, netns: &str, ip: Option<Ipv4Addr>) -> EndpointRequest {
    EndpointRequest {
        name: name.to_owned(),
        ip,
        netns: netns.to_owned(),
        host: "h1".to_owned(),
        vtep: Ipv4Addr::new(198, 18, 0, 1),
    }
}

#[test]
fn network_defaults_are_allocated() {
    let existing = network("a", &"a".repeat(64), 4096, "10.0.0.0/24");
    let snapshot = snapshot_with(&[existing], &[]);
    let n = plan_network(&snapshot, &request("b"), "b".repeat(64), 7).unwrap();
    assert_eq!(n.vni, 4097);
    assert_eq!(n.subnet.to_string(), "10.0.1.0/24");
    assert_eq!(n.gateway, Ipv4Addr::new(10, 0, 1, 1));
    assert_eq!(n.mtu, 1450);
    assert_eq!(n.created, 7);
}

#[test]
fn network_mistakes_are_refused() {
    let existing = network("a", &"a".repeat(64), 42, "10.22.0.0/16");
    let snapshot = snapshot_with(&[existing], &[]);
    let plan = |r: NetworkRequest| plan_network(&snapshot, &r, "b".repeat(64), 0);
    let with = |f: &dyn Fn(&mut NetworkRequest)| {
        let mut r = request("b");
        f(&mut r);
        plan(r)
    };
    assert_eq!(
        plan(request("a")),
        Err(ClusterError::NetworkExists("a".into()))
    );
    assert!(matches!(
        plan(request("-x")),
        Err(ClusterError::InvalidName { .. })
    ));
    assert!(matches!(
        plan(request("a/b")),
        Err(ClusterError::InvalidName { .. })
    ));
    assert!(matches!(
        with(&|r| r.subnet = Some("10.22.1.0/24".into())),
        Err(ClusterError::SubnetOverlap { .. })
    ));
    // The real user mistake from the issue: a gateway outside the subnet.
    let e = with(&|r| {
        r.subnet = Some("10.23.1.0/24".into());
        r.gateway = Some(Ipv4Addr::new(10, 23, 2, 1));
    })
    .unwrap_err();
    assert!(matches!(e, ClusterError::GatewayOutside { .. }));
    assert_eq!(
        e.to_string(),
        "gateway 10.23.2.1 is not a usable address of subnet 10.23.1.0/24"
    );
    assert!(matches!(
        with(&|r| {
            r.subnet = Some("10.23.1.0/24".into());
            r.gateway = Some(Ipv4Addr::new(10, 23, 1, 255));
        }),
        Err(ClusterError::GatewayOutside { .. })
    ));
    assert_eq!(
        with(&|r| r.gateway = Some(Ipv4Addr::new(10, 0, 0, 1))),
        Err(ClusterError::GatewayWithoutSubnet)
    );
    assert_eq!(
        with(&|r| r.vni = Some(42)),
        Err(ClusterError::VniInUse {
            vni: 42,
            other: "a".into()
        })
    );
    assert_eq!(with(&|r| r.vni = Some(0)), Err(ClusterError::VniRange(0)));
    assert_eq!(
        with(&|r| r.vni = Some(1 << 24)),
        Err(ClusterError::VniRange(1 << 24))
    );
    assert_eq!(with(&|r| r.mtu = Some(67)), Err(ClusterError::MtuRange(67)));
    assert!(matches!(
        with(&|r| r.subnet = Some("10.23.1.5/24".into())),
        Err(ClusterError::Subnet(_))
    ));
    let ok = with(&|r| {
        r.subnet = Some("10.23.1.0/24".into());
        r.gateway = Some(Ipv4Addr::new(10, 23, 1, 254));
        r.vni = Some(43);
        r.mtu = Some(9000);
    })
    .unwrap();
    assert_eq!(ok.gateway, Ipv4Addr::new(10, 23, 1, 254));
}

#[test]
fn endpoints_get_unique_names_and_addresses() {
    let net = network("a", &"a".repeat(64), 42, "10.0.0.0/29");
    let mut snapshot = snapshot_with(std::slice::from_ref(&net), &[]);
    let mut made = Vec::new();
    for i in 0..5 {
        let e = plan_endpoint(
            &snapshot,
            &net,
            &endpoint_request(&format!("c{i}"), &format!("ns{i}"), None),
            format!("{i:064}"),
        )
        .unwrap();
        made.push(e);
        snapshot = snapshot_with(std::slice::from_ref(&net), &made);
    }
    // .1 is the gateway; .2-.6 are the five endpoints; .7 is broadcast.
    let ips: Vec<String> = made.iter().map(|e| e.ip.to_string()).collect();
    assert_eq!(
        ips,
        ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    );
    assert_eq!(made[0].mac, "02:42:0a:00:00:02");
    let plan = |r: EndpointRequest| plan_endpoint(&snapshot, &net, &r, "f".repeat(64));
    assert_eq!(
        plan(endpoint_request("c9", "ns9", None)),
        Err(ClusterError::Exhausted("IP"))
    );
    assert!(matches!(
        plan(endpoint_request("c0", "ns9", None)),
        Err(ClusterError::DuplicateName { .. })
    ));
    assert!(matches!(
        plan(endpoint_request("c9", "ns0", None)),
        Err(ClusterError::AlreadyConnected { .. })
    ));
    assert!(matches!(
        plan(endpoint_request(
            "c9",
            "ns9",
            Some(Ipv4Addr::new(10, 0, 0, 3))
        )),
        Err(ClusterError::DuplicateIp { .. })
    ));
    for bad in [[10, 0, 0, 1], [10, 0, 0, 0], [10, 0, 0, 7], [10, 0, 1, 2]] {
        assert!(
            matches!(
                plan(endpoint_request("c9", "ns9", Some(Ipv4Addr::from(bad)))),
                Err(ClusterError::IpOutside { .. })
            ),
            "{bad:?}"
        );
    }
    // The same namespace on another host is a different container.
    let mut other_host = endpoint_request("c9", "ns0", None);
    other_host.host = "h2".into();
    assert!(matches!(
        plan(other_host),
        Err(ClusterError::Exhausted("IP"))
    ));
}

#[test]
fn removal_is_refused_while_endpoints_exist() {
    let net = network("a", &"a".repeat(64), 42, "10.0.0.0/24");
    let e = plan_endpoint(
        &snapshot_with(std::slice::from_ref(&net), &[]),
        &net,
        &endpoint_request("c0", "ns0", None),
        "e".repeat(64),
    )
    .unwrap();
    let busy = snapshot_with(std::slice::from_ref(&net), &[e]);
    let err = plan_network_removal(&busy, "a").unwrap_err();
    assert_eq!(
        err.to_string(),
        "network \"a\" has 1 endpoint(s) (c0); disconnect them first"
    );
    assert_eq!(
        plan_network_removal(&busy, "zz"),
        Err(ClusterError::UnknownNetwork("zz".into()))
    );
    let idle = snapshot_with(std::slice::from_ref(&net), &[]);
    assert_eq!(plan_network_removal(&idle, "a").unwrap().name, "a");
    // By id prefix too, but only 12 digits or more.
    assert!(idle.network(&"a".repeat(12)).is_some());
    assert!(idle.network(&"a".repeat(11)).is_none());
}

#[test]
fn ids_are_random_hex() {
    let a = new_id().unwrap();
    let b = new_id().unwrap();
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a, b);
}

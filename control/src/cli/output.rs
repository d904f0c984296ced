//! Prints replies the way iproute2 prints its objects, or as JSON with `-j`.

use crate::api::{
    DropCount, FdbRow, GlobalStats, LinkStats, LinkStatus, NeighRow, NetworkView, RecordStats,
    Reply, ResolverCounters,
};
use crate::cluster::{Endpoint, Host};
use std::fmt::Write;

/// Renders a reply as text (or pretty JSON when `json`). Empty for `Done`.
pub fn render(reply: &Reply, json: bool) -> String {
    if json {
        let value = match reply {
            Reply::Done => serde_json::json!({}),
            Reply::Links(links) => serde_json::json!(links),
            Reply::Fdb(rows) => serde_json::json!(rows),
            Reply::Neigh(rows) => serde_json::json!(rows),
            Reply::Stats {
                links,
                global,
                records,
                resolvers,
            } => {
                let mut value = serde_json::json!({ "links": links, "global": global });
                if let Some(records) = records {
                    value["store_records"] = serde_json::json!(records);
                }
                if !resolvers.is_empty() {
                    value["resolvers"] = serde_json::json!(resolvers);
                }
                value
            }
            Reply::Network(view) => serde_json::json!(view),
            Reply::Networks(views) => serde_json::json!(views),
            Reply::Endpoint(endpoint) => serde_json::json!(endpoint),
            Reply::CniAdded(added) => serde_json::json!(added),
            Reply::Hosts(hosts) => serde_json::json!(hosts),
        };
        return format!("{value:#}\n");
    }
    let mut out = String::new();
    match reply {
        Reply::Done => {}
        Reply::Links(links) => links.iter().for_each(|l| link(&mut out, l)),
        Reply::Fdb(rows) => rows.iter().for_each(|r| fdb(&mut out, r)),
        Reply::Neigh(rows) => rows.iter().for_each(|r| neigh(&mut out, r)),
        Reply::Stats {
            links,
            global: g,
            records,
            resolvers,
        } => {
            links.iter().for_each(|s| stats(&mut out, s));
            global(&mut out, g);
            if let Some(r) = records {
                store_records(&mut out, r);
            }
            resolvers.iter().for_each(|r| resolver(&mut out, r));
        }
        // `network create` prints the new id, as `docker network create` does.
        Reply::Network(view) => {
            let _ = writeln!(out, "{}", view.network.id);
        }
        Reply::Networks(views) => networks(&mut out, views),
        Reply::Endpoint(e) => endpoint(&mut out, e),
        Reply::CniAdded(added) => endpoint(&mut out, &added.endpoint),
        Reply::Hosts(list) => hosts(&mut out, list),
    }
    out
}

fn networks(out: &mut String, views: &[NetworkView]) {
    let _ = writeln!(
        out,
        "{:<12}  {:<20}  {:>8}  {:<18}  {:<15}  {:>5}  ENDPOINTS",
        "NETWORK ID", "NAME", "VNI", "SUBNET", "GATEWAY", "MTU"
    );
    for v in views {
        let n = &v.network;
        let _ = writeln!(
            out,
            "{:<12}  {:<20}  {:>8}  {:<18}  {:<15}  {:>5}  {}",
            n.short_id(),
            n.name,
            n.vni,
            n.subnet.to_string(),
            n.gateway.to_string(),
            n.mtu,
            v.endpoints.len()
        );
    }
}

fn hosts(out: &mut String, list: &[Host]) {
    let _ = writeln!(out, "{:<20}  {:<15}  {:>8}  STARTED", "HOST", "VTEP", "PID");
    for h in list {
        let _ = writeln!(
            out,
            "{:<20}  {:<15}  {:>8}  {}",
            h.name,
            h.vtep.to_string(),
            h.pid,
            h.started
        );
    }
}

fn endpoint(out: &mut String, e: &Endpoint) {
    let _ = writeln!(
        out,
        "{} {} {} {} netns {} host {}",
        e.name, e.ip, e.mac, e.ifname, e.netns, e.host
    );
}

fn link(out: &mut String, l: &LinkStatus) {
    let s = &l.spec;
    let _ = write!(out, "{}: vxlan id {} dstport {}", s.name, s.vni, s.dstport);
    if let Some(local) = s.local {
        let _ = write!(out, " local {local}");
    }
    let _ = writeln!(
        out,
        " netns {} mtu {} ifindex {} link/ether {}",
        s.netns.as_deref().unwrap_or("-"),
        s.mtu,
        l.ifindex,
        l.mac
    );
    let _ = writeln!(
        out,
        "    {}proxy {}learning ageing {} maxaddress {} admit {} offload {} steering {} \
         underlay udp_gso {} udp_gro {} filter {}",
        if s.proxy { "" } else { "no" },
        if s.learning { "" } else { "no" },
        s.ageing,
        s.maxaddress,
        if s.admit_any { "any" } else { "known" },
        if l.offloads.is_empty() {
            "off".to_owned()
        } else {
            l.offloads.join(",")
        },
        l.steering,
        if l.udp_gso { "on" } else { "off" },
        if l.udp_gro { "on" } else { "off" },
        if l.underlay_filter.is_empty() {
            "-"
        } else {
            &l.underlay_filter
        },
    );
    let t = &l.stats;
    let drops: u64 = t.drops.iter().map(|d| d.count).sum();
    let _ = writeln!(
        out,
        "    tap rx {} frames {} bytes, tx {} frames {} bytes; udp rx {} tx {} datagrams; drops {}",
        t.tap_rx_frames,
        t.tap_rx_bytes,
        t.tap_tx_frames,
        t.tap_tx_bytes,
        t.udp_rx_datagrams,
        t.udp_tx_datagrams,
        drops
    );
}

fn fdb(out: &mut String, r: &FdbRow) {
    let _ = write!(
        out,
        "{} dev {} dst {} vni {} port {} self {}",
        r.mac, r.dev, r.dst, r.vni, r.port, r.state
    );
    if let Some(age) = r.age {
        let _ = write!(out, " age {age}s");
    }
    out.push('\n');
}

fn neigh(out: &mut String, r: &NeighRow) {
    let _ = writeln!(out, "{} dev {} lladdr {} PERMANENT", r.ip, r.dev, r.lladdr);
}

fn nonzero_drops(out: &mut String, drops: &[DropCount]) {
    let listed: Vec<String> = drops
        .iter()
        .filter(|d| d.count > 0)
        .map(|d| format!("{} {}", d.reason, d.count))
        .collect();
    let _ = writeln!(
        out,
        "    drops: {}",
        if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(", ")
        }
    );
}

fn stats(out: &mut String, s: &LinkStats) {
    let _ = writeln!(out, "{} (vni {}):", s.name, s.vni);
    let _ = writeln!(
        out,
        "    tap   rx {} frames {} bytes   rx errors {}   rx queue full {}   tx {} frames {} bytes   tx errors {}   tx queue full {}",
        s.tap_rx_frames,
        s.tap_rx_bytes,
        s.tap_rx_errors,
        s.tap_rx_queue_full,
        s.tap_tx_frames,
        s.tap_tx_bytes,
        s.tap_tx_errors,
        s.tap_tx_queue_full
    );
    let _ = writeln!(
        out,
        "    udp   rx {} datagrams {} bytes   tx {} datagrams {} bytes   tx errors {}",
        s.udp_rx_datagrams, s.udp_rx_bytes, s.udp_tx_datagrams, s.udp_tx_bytes, s.udp_tx_errors
    );
    let _ = writeln!(
        out,
        "    switch forwarded {} flooded {} (copies {}) arp replies {} l2 misses {} l3 misses {}",
        s.forwarded, s.flooded, s.flood_copies, s.arp_replies, s.l2_misses, s.l3_misses
    );
    let _ = writeln!(
        out,
        "    learning entries {} learned {} moves {} refused {} aged out {}",
        s.learned_entries, s.learned, s.moves, s.learn_refused, s.aged_out
    );
    nonzero_drops(out, &s.drops);
}

fn resolver(out: &mut String, r: &ResolverCounters) {
    let s = &r.stats;
    let _ = writeln!(
        out,
        "resolver {}: {} queries, {} answered, {} forwarded, {} upstream failures, {} overloaded, {} errors, {} malformed, {} TCP refused, {} send failures",
        r.network,
        s.queries,
        s.answered,
        s.forwarded,
        s.upstream_failures,
        s.overloaded,
        s.errors,
        s.malformed,
        s.tcp_refused,
        s.send_failures
    );
}

fn store_records(out: &mut String, r: &RecordStats) {
    let sum = |counts: &[DropCount]| counts.iter().map(|d| d.count).sum::<u64>();
    let _ = writeln!(
        out,
        "store records: {} refused, {} conflicts (first claim wins), {} not programmed now",
        sum(&r.refused),
        sum(&r.conflicts),
        r.current.len()
    );
    let listed = |counts: &[DropCount]| -> String {
        let listed: Vec<String> = counts
            .iter()
            .filter(|d| d.count > 0)
            .map(|d| format!("{} {}", d.reason, d.count))
            .collect();
        if listed.is_empty() {
            "none".to_owned()
        } else {
            listed.join(", ")
        }
    };
    let _ = writeln!(out, "    refused: {}", listed(&r.refused));
    let _ = writeln!(out, "    conflicts: {}", listed(&r.conflicts));
    for c in &r.current {
        let _ = writeln!(out, "    {} {}: {}", c.key, c.reason, c.detail);
    }
}

fn global(out: &mut String, g: &GlobalStats) {
    let _ = writeln!(
        out,
        "underlay: rx {} datagrams, {} dropped by the filter in the kernel, {} oversize, {} receive errors, {} for a link coming or going, {} receive buffer overflows, {} events lost, {} GSO sends, {} refused",
        g.udp_rx_datagrams,
        g.udp_rx_filtered,
        g.udp_rx_oversize,
        g.udp_rx_errors,
        g.udp_rx_no_link,
        g.udp_rx_overflows,
        g.events_lost,
        g.udp_gso_sends,
        g.udp_gso_refused
    );
    nonzero_drops(out, &g.drops);
}

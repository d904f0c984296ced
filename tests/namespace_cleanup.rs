//! Namespaces left by a test process killed before its guards ran (SIGKILL, a time-out's
//! SIGTERM) are deleted by the next process that makes one: `Namespace::reap_orphans`,
//! driven by the owner records under `vxtap::topology::OWNERS_DIR`.

use std::path::Path;
use std::process::Command;
use vxtap::topology::{Namespace, OWNERS_DIR as OWNERS};
use vxtap_suite::harness::{netns::unique_prefix, require_root, Netns, NetnsExt};

const NETNS: &str = "/run/netns";

fn ip_netns_add(name: &str) {
    let status = Command::new("ip")
        .args(["netns", "add", name])
        .status()
        .expect("ip");
    assert!(status.success(), "ip netns add {name}");
}

#[test]
fn namespaces_of_a_dead_owner_are_reaped_and_a_live_owners_kept() {
    require_root();
    // A live owner: this process, through a guard.
    let live = Netns::unique("live");
    assert!(
        Path::new(OWNERS).join(live.name()).exists(),
        "no owner record"
    );

    // An orphan: made by a process that is gone (a pid that exited, any start time), with a
    // process still running inside, as a killed test leaves an etcd or a daemon.
    let orphan = format!("{}orphan", unique_prefix());
    ip_netns_add(&orphan);
    let mut sleeper = Command::new("ip")
        .args(["netns", "exec", &orphan, "sleep", "300"])
        .spawn()
        .expect("a process inside");
    let mut exited = Command::new("true").spawn().expect("true");
    let dead = exited.id();
    exited.wait().expect("wait");
    std::fs::write(Path::new(OWNERS).join(&orphan), format!("{dead} 1")).expect("record");

    Namespace::reap_orphans();
    assert!(
        !Path::new(NETNS).join(&orphan).exists(),
        "the orphan is still there"
    );
    assert!(
        !Path::new(OWNERS).join(&orphan).exists(),
        "its record is still there"
    );
    let status = sleeper.wait().expect("the process inside");
    assert!(
        !status.success(),
        "the process inside was not killed: {status:?}"
    );
    assert!(
        Path::new(NETNS).join(live.name()).exists(),
        "a live owner's namespace was reaped"
    );

    let name = live.name().to_owned();
    drop(live);
    assert!(
        !Path::new(OWNERS).join(&name).exists(),
        "a dropped guard left its record"
    );
}

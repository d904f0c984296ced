//! The `vxtap` binary answers `--version` and `--help`, and refuses what it does not know.

use std::process::Command;

fn vxtap(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vxtap"))
        .args(args)
        .output()
        .expect("vxtap runs")
}

#[test]
fn version_names_the_crate_version() {
    let out = vxtap(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("vxtap {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_describes_the_tool() {
    let out = vxtap(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("userspace VXLAN data plane"));
}

#[test]
fn unknown_arguments_fail_with_a_message() {
    let out = vxtap(&["frobnicate"]);
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());
}

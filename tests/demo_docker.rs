//! `vxtap demo docker`, run as a user would run it (the built binary, as root): it must go
//! through the Docker scenario (`docker network create -d vxtap` on one host, `docker network
//! ls` on the other, a busybox container on each, a ping by name across hosts), end with a
//! summary, and leave nothing behind: no namespace, process, mount, cgroup or temp dir of
//! its run. And without a static busybox it must stop before making anything, naming the
//! Debian package.
//!
//! Needs root, Debian's docker.io and busybox-static (./test.sh installs them); fails loudly
//! without them. The demo bounds its own waits; `timeout` bounds the whole run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vxtap_suite::harness::{cmd, daemon, docker};

/// `timeout` stops the demo with SIGTERM after this long (it then cleans up), SIGKILL 60 s
/// later.
const DEMO_SECONDS: &str = "600";

fn vxtap_demo_docker(wrapper: &[&str]) -> Output {
    let binary = daemon::binary();
    let mut command = Command::new("timeout");
    command
        .args(["--kill-after=60", DEMO_SECONDS])
        .args(wrapper)
        .arg(&binary)
        .args(["demo", "docker"])
        // Aimed at the machine's Docker, these would be ignored; make sure of it.
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("DOCKER_CONTEXT", "nonexistent");
    cmd::output(&mut command)
}

/// The run's prefix (`vxdemo<pid>`) and temp dir, from the first line of the output.
fn run_of(stdout: &str) -> (String, PathBuf) {
    let first = stdout.lines().next().unwrap_or_default();
    let after = first
        .split("(run ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `(run ...` in the first line: {first:?}"));
    let (prefix, rest) = after
        .split_once(", files in ")
        .expect("`, files in ` after the run");
    let dir = rest.trim_end_matches(')');
    (prefix.to_owned(), PathBuf::from(dir))
}

/// Everything of the run `prefix` (temp dir `dir`) that still exists.
fn leftovers(prefix: &str, dir: &Path) -> Vec<String> {
    let mine = format!("{prefix}-");
    let mut left = Vec::new();
    for parent in ["/run/netns", "/etc/netns"] {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&mine) {
                left.push(entry.path().display().to_string());
            }
        }
    }
    if dir.exists() {
        left.push(dir.display().to_string());
    }
    left.extend(
        docker::mounts_under(dir)
            .iter()
            .map(|m| format!("mount {}", m.display())),
    );
    left.extend(processes_naming(dir));
    for host in ["h1", "h2"] {
        left.extend(
            docker::cgroups_named(&format!("{prefix}-{host}-docker"))
                .iter()
                .map(|c| format!("cgroup {}", c.display())),
        );
    }
    left
}

/// Processes whose command line names something under `dir`: dockerd, containerd, shims,
/// the mount namespaces' holders and the vxtap daemons all do. (The harness's own search
/// leaves vxtap daemons out; here they count.)
fn processes_naming(dir: &Path) -> Vec<String> {
    let needle = format!("{}/", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(&needle) {
            found.push(format!("process {pid}: {}", line.trim()));
        }
    }
    found
}

#[test]
fn runs_the_docker_scenario_and_leaves_nothing() {
    docker::require_docker();
    let out = vxtap_demo_docker(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vxtap demo docker failed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    for line in [
        "h1$ docker network create -d vxtap --ipam-driver vxtap ov_net1",
        "h2$ docker network ls",
        "h1$ docker run -itd --name bbox1 --network ov_net1 busybox",
        "h2$ docker run -itd --name bbox2 --network ov_net1 busybox",
        "h1$ docker exec bbox1 ping -c 2 bbox2",
        "h1$ vxtap fdb show",
        "h2$ docker rm -f bbox2",
        "h1$ docker rm -f bbox1",
        "h1$ docker network rm ov_net1",
        "nothing left behind",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == line),
            "no line {line:?} in:\n{stdout}"
        );
    }
    // h2's engine lists the network h1's engine created, with vxtap as its driver.
    let listing = stdout
        .split("h2$ docker network ls")
        .nth(1)
        .expect("the listing");
    assert!(
        listing.lines().take(6).any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.get(1..3) == Some(&["ov_net1", "vxtap"][..])
        }),
        "ov_net1 (vxtap) not listed on h2:\n{listing}"
    );
    assert!(
        stdout.contains("2 packets transmitted, 2 packets received, 0% packet loss"),
        "no loss-free ping in:\n{stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("done: bbox1 on h1 pinged bbox2 on h2 by name")
            && last.contains("2/2 replies, rtt ")
            && last.ends_with(" ms avg"),
        "unexpected summary: {last:?}"
    );
    let (prefix, dir) = run_of(&stdout);
    assert!(prefix.starts_with("vxdemo"), "{prefix}");
    let left = leftovers(&prefix, &dir);
    assert!(left.is_empty(), "left behind by {prefix}: {left:#?}");
}

/// Every `busybox` the demo could find (it searches `PATH`, then the sbin and bin
/// directories), by its real path.
fn busybox_candidates() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
    let mut found: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::canonicalize(d.join("busybox")).ok())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Runs the demo in a mount namespace of its own where every busybox it could find is
/// replaced by `stand_in` (bind mounts, gone with the namespace).
fn demo_with_busybox_replaced(stand_in: &Path) -> Output {
    let targets = busybox_candidates();
    assert!(!targets.is_empty(), "no busybox to hide");
    let mut script = String::new();
    for target in &targets {
        script.push_str(&format!(
            "mount --bind {} {} || exit 99\n",
            stand_in.display(),
            target.display()
        ));
    }
    script.push_str("exec \"$@\"");
    vxtap_demo_docker(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
}

#[test]
fn without_a_static_busybox_it_names_the_package_and_makes_nothing() {
    docker::require_docker();
    // Not there at all (a character device is not a program).
    let missing = demo_with_busybox_replaced(Path::new("/dev/null"));
    // There, but dynamically linked like Debian's `busybox` package (sh is, on Debian).
    let sh = std::fs::canonicalize("/bin/sh").expect("/bin/sh");
    let dynamic = demo_with_busybox_replaced(&sh);
    for (case, out, says) in [
        (
            "missing",
            &missing,
            "the `busybox` command is not installed",
        ),
        ("dynamic", &dynamic, "is dynamically linked"),
    ] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{case}: {stdout}\n--- stderr ---\n{stderr}"
        );
        assert!(
            stderr.starts_with("vxtap demo docker: ")
                && stderr.contains(says)
                && stderr.contains("apt-get install busybox-static"),
            "{case}: unclear error: {stderr}"
        );
        assert!(
            stdout.is_empty(),
            "{case}: it started something before checking: {stdout}"
        );
    }
}

//! Issue 10: the admin socket is neither a denial of service nor an open door. The real
//! `vxtap` binary as a daemon in a namespace of its own, hostile clients against its socket.
//!
//! - out of file descriptors: no spinning, the condition logged once, service back after;
//! - slow clients: a bounded number of threads, each cut off by the request deadline;
//! - a namespace argument that is a FIFO, a file or another kind of namespace: refused at
//!   once, and `stats` answers meanwhile;
//! - a client that never reads its answers: SIGTERM still exits 0 promptly, TAPs removed,
//!   socket file gone;
//! - the socket's mode whatever the umask, and what `nobody` may do through it.
//!
//! Needs root and /dev/net/tun; every test fails loudly without them. Bounds on CPU time,
//! threads and log lines are resource bounds with wide margins, not timings; the only time
//! bounds are generous liveness bounds (does it answer or exit at all).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use vxtap_suite::harness::daemon::binary;
use vxtap_suite::harness::NetnsExt;
use vxtap_suite::harness::{netns::unique_prefix, wait_until, Daemon, Netns};

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) may hold spaces; the fields after it start past ')'.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// Clock ticks per second (`getconf CLK_TCK`).
fn ticks_per_second() -> u64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// Threads of `pid` (/proc/PID/status).
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}

/// The daemon's pid, checked to be the vxtap binary itself (wrappers must exec it).
fn daemon_pid(daemon: &Daemon) -> u32 {
    let pid = daemon.pid().expect("a running daemon");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("/proc/PID/comm");
    assert_eq!(comm.trim(), "vxtap", "pid {pid} is not the daemon itself");
    pid
}

/// Runs `command` with a liveness bound: its output, or `None` (after killing it) if it has
/// not finished within `limit`.
fn output_within(command: &mut Command, limit: Duration) -> Option<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning a vxtap command");
    if wait_until(limit, || matches!(child.try_wait(), Ok(Some(_)))) {
        return Some(child.wait_with_output().expect("its output"));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Kills a background command on drop (a test that fails midway leaves nothing behind).
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// Lines of the daemon's log about running out of file descriptors.
fn fd_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("Too many open files")
                || l.contains("EMFILE")
                || l.contains("file descriptors")
        })
        .count()
}

#[test]
fn out_of_file_descriptors_the_daemon_neither_spins_nor_floods_its_log() {
    let host = Netns::unique("h");
    let daemon = Daemon::start_via(&host, &["prlimit", "--nofile=64:64", "--"], &[]);
    let pid = daemon_pid(&daemon);
    let socket = daemon.socket();
    // Far more connections than the daemon has file descriptors, all held open.
    let clients: Vec<UnixStream> = (0..100)
        .map(|i| UnixStream::connect(&socket).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // Let the daemon reach the limit, then measure what staying there costs it.
    assert!(
        wait_until(Duration::from_secs(10), || fd_lines(&daemon.log()) > 0),
        "the daemon never ran out of file descriptors, so this test tests nothing:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let log_before = daemon.log().len();
    let cpu_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / ticks_per_second() as f64;
    let log = daemon.log();
    let grown = log.len() - log_before;
    let lines = fd_lines(&log);
    eprintln!(
        "at the fd limit for 2 s: {cpu:.2} s of CPU, log grew {grown} bytes, {lines} fd lines"
    );
    assert!(
        cpu < 0.3,
        "the daemon used {cpu:.2} s of CPU in 2 s at the fd limit"
    );
    assert!(
        grown < 16 * 1024,
        "the log grew {grown} bytes in 2 s at the fd limit"
    );
    assert!(
        lines <= 3,
        "{lines} log lines about file descriptors (want one when it starts, one when it clears)"
    );
    // Connections the daemon could not serve were told why, not left hanging.
    let told = clients
        .iter()
        .filter(|c| {
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 512];
            matches!((&**c).read(&mut buf), Ok(n) if n > 0
                && String::from_utf8_lossy(&buf[..n]).contains("out of file descriptors"))
        })
        .count();
    assert!(told > 0, "no refused connection got an answer");
    drop(clients);
    // Once the clients leave, the daemon serves again, and says so once.
    assert!(
        wait_until(Duration::from_secs(15), || daemon
            .cli(&["link", "show"])
            .status
            .success()),
        "`vxtap link show` kept failing after the clients left:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.contains("file descriptors available again"),
        "the end of the condition was not logged:\n{log}"
    );
    assert!(fd_lines(&log) <= 3, "{log}");
}

#[test]
fn slow_clients_get_bounded_threads_and_are_cut_off_by_the_deadline() {
    const SLOW: usize = 200;
    let host = Netns::unique("h");
    let daemon = Daemon::start(&host);
    let pid = daemon_pid(&daemon);
    let baseline = threads(pid);
    let mut clients: Vec<Option<UnixStream>> = (0..SLOW)
        .map(|i| {
            let c = UnixStream::connect(daemon.socket())
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            c.set_nonblocking(true).unwrap();
            Some(c)
        })
        .collect();
    let mut answers = vec![String::new(); SLOW];
    let mut most_threads = 0;
    // One byte per client every 100 ms, never a newline, until the daemon has closed them
    // all (the liveness bound is generous: the deadline is 5 s per request).
    let limit = Instant::now() + Duration::from_secs(30);
    while clients.iter().any(Option::is_some) && Instant::now() < limit {
        for (i, slot) in clients.iter_mut().enumerate() {
            let Some(client) = slot else { continue };
            let mut buf = [0u8; 1024];
            let closed = match (&*client).read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    answers[i].push_str(&String::from_utf8_lossy(&buf[..n]));
                    false
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            let closed = closed
                || match (&*client).write(b" ") {
                    Ok(_) => false,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                    Err(_) => true,
                };
            if closed {
                // Whatever was answered before the end.
                while let Ok(n) = (&*client).read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    answers[i].push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                *slot = None;
            }
        }
        most_threads = most_threads.max(threads(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let open = clients.iter().filter(|c| c.is_some()).count();
    let busy = answers.iter().filter(|a| a.contains("busy")).count();
    let late = answers
        .iter()
        .filter(|a| a.contains("not complete within"))
        .count();
    eprintln!(
        "{SLOW} slow clients: at most {most_threads} daemon threads (baseline {baseline}); \
         {busy} refused as busy, {late} cut off by the deadline, {open} still open"
    );
    assert_eq!(open, 0, "slow clients still connected after 30 s");
    assert!(
        most_threads <= baseline + 64 + 8,
        "{most_threads} daemon threads for {SLOW} slow clients (baseline {baseline})"
    );
    assert!(late > 0, "no slow client was told it missed the deadline");
    assert_eq!(
        busy + late,
        SLOW,
        "every slow client gets one answer saying why it was closed"
    );
    // And the daemon still serves.
    daemon.cli_ok(&["link", "show"]);
}

/// A FIFO in a temporary directory that is opened for writing on drop, so a daemon stuck
/// opening it for reading (as the old code was) gets unstuck and can be stopped.
struct Fifo {
    dir: tempfile::TempDir,
}

impl Fifo {
    fn new() -> Fifo {
        let dir = tempfile::tempdir_in("/tmp").expect("a temporary directory");
        let status = Command::new("mkfifo")
            .arg(dir.path().join("fifo"))
            .status()
            .expect("mkfifo");
        assert!(status.success(), "mkfifo failed");
        Fifo { dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("fifo")
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        // O_RDWR on a FIFO never blocks, and lets a blocked reader's open complete.
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path());
    }
}

#[test]
fn a_namespace_argument_that_is_no_network_namespace_is_refused_at_once() {
    let host = Netns::unique("h");
    let daemon = Daemon::start(&host);
    let fifo = Fifo::new();
    let fifo_path = fifo.path();
    let fifo_arg = fifo_path.to_string_lossy().into_owned();
    // The hostile request in the background, and `stats` right behind it.
    let mut add = daemon.command();
    add.args(["link", "add", "vxfifo", "id", "77", "netns", &fifo_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let hostile = Background(add.spawn().expect("vxtap link add"));
    let stats = output_within(daemon.command().arg("stats"), Duration::from_secs(10));
    let stats = stats.unwrap_or_else(|| {
        panic!(
            "`vxtap stats` did not answer within 10 s while `link add ... netns FIFO` was in \
             flight:\n{}",
            daemon.log()
        )
    });
    assert!(stats.status.success(), "vxtap stats: {}", stderr(&stats));
    let mut hostile = hostile;
    assert!(
        wait_until(Duration::from_secs(10), || matches!(
            hostile.0.try_wait(),
            Ok(Some(_))
        )),
        "`vxtap link add ... netns FIFO` did not return within 10 s:\n{}",
        daemon.log()
    );
    let mut err = String::new();
    hostile
        .0
        .stderr
        .take()
        .expect("its stderr")
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.trim()
            == format!("vxtap: {fifo_arg} is not a network namespace (not a namespace file)"),
        "link add with a FIFO: {err:?}"
    );

    // A regular file and a mount namespace are refused the same way, in one line.
    let file = fifo.dir.path().join("regular");
    std::fs::write(&file, b"").unwrap();
    let file_arg = file.to_string_lossy().into_owned();
    for (arg, what) in [
        (file_arg.as_str(), "not a namespace file"),
        ("/proc/self/ns/mnt", "a mount namespace"),
    ] {
        let out = daemon.cli(&["link", "add", "vxbad", "id", "78", "netns", arg]);
        assert!(!out.status.success(), "link add netns {arg} succeeded");
        assert_eq!(
            stderr(&out),
            format!("vxtap: {arg} is not a network namespace ({what})")
        );
    }
    let links = daemon.links();
    assert_eq!(
        links,
        serde_json::json!([]),
        "a refused link add left a link"
    );
}

#[test]
fn sigterm_is_not_held_up_by_a_client_that_never_reads() {
    let prefix = unique_prefix();
    let host = Netns::new(&prefix, "h");
    let overlay = Netns::new(&prefix, "ov");
    let mut daemon = Daemon::start(&host);
    let overlay_path = overlay.path().to_string_lossy().into_owned();
    daemon.cli_ok(&["link", "add", "vxt1", "id", "42", "netns", &overlay_path]);
    assert!(overlay.interfaces().contains(&"vxt1".to_owned()));
    let socket = daemon.socket();

    // Requests until the daemon no longer takes them: its answers fill our receive buffer
    // (we never read), it blocks writing, stops reading, and our send buffer fills.
    let client = UnixStream::connect(&socket).expect("connecting");
    client.set_nonblocking(true).unwrap();
    let request = b"{\"op\":\"stats\"}\n";
    let mut sent = 0usize;
    let mut stalled_since: Option<Instant> = None;
    let limit = Instant::now() + Duration::from_secs(20);
    while Instant::now() < limit {
        match (&client).write(request) {
            Ok(n) => {
                sent += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("the daemon closed the connection early ({e}); sent {sent} bytes"),
        }
    }
    assert!(
        stalled_since.is_some(),
        "the daemon kept reading requests for 20 s without ever blocking on its answers"
    );
    eprintln!("sent {sent} bytes of requests before the daemon stopped reading");

    let started = Instant::now();
    let status = daemon.terminate();
    let took = started.elapsed();
    let log = daemon.log();
    assert!(
        matches!(status, Some(s) if s.success()),
        "the daemon did not exit 0 after SIGTERM ({status:?}, {took:?}):\n{log}"
    );
    // No bound on `took`: the harness gives SIGTERM 10 s before it kills, and a killed
    // daemon has no exit status, which the assertion above refuses.
    assert!(
        !overlay.interfaces().contains(&"vxt1".to_owned()),
        "the TAP survived the daemon:\n{log}"
    );
    assert!(
        !socket.exists(),
        "the admin socket file was left behind:\n{log}"
    );
    drop(client);
}

/// `vxtap ARGS` as user `nobody` (uid 65534) with primary group `gid`, supplementary
/// `groups` (none if empty) and, with `dac_override`, the capability to connect to any
/// socket file whatever its mode (a peer the socket's mode does not keep out).
fn as_nobody(
    daemon: &Daemon,
    gid: u32,
    groups: &[u32],
    dac_override: bool,
    args: &[&str],
) -> Output {
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", &format!("--regid={gid}")]);
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        command.arg(format!("--groups={}", list.join(",")));
    }
    if dac_override {
        command.args(["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]);
    }
    command
        .arg(binary())
        .args(args)
        .env("VXTAP_RUN_DIR", daemon.run_dir());
    output_within(&mut command, Duration::from_secs(30)).expect("vxtap as nobody finished")
}

/// A daemon started under umask 000, with a run directory `nobody` may search, so only the
/// socket's own mode decides who connects.
fn daemon_under_umask_000(host: &Netns, extra: &[&str]) -> Daemon {
    let daemon = Daemon::start_via(host, &["sh", "-c", "umask 000; exec \"$@\"", "sh"], extra);
    std::fs::set_permissions(daemon.run_dir(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod of the run directory");
    daemon
}

fn socket_mode(daemon: &Daemon) -> (u32, u32, u32) {
    let meta = std::fs::metadata(daemon.socket()).expect("the socket file");
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

fn assert_refused_connection(out: &Output, who: &str) {
    assert!(!out.status.success(), "{who} got through");
    assert!(
        stderr(out).contains("permission denied connecting to"),
        "{who}: {}",
        stderr(out)
    );
}

fn assert_ok(out: &Output, who: &str) {
    assert!(out.status.success(), "{who}: {}", stderr(out));
}

#[test]
fn the_socket_is_for_root_and_its_group_and_others_may_only_read() {
    const GROUP: u32 = 4242; // no such group on the machine: nobody is not in it
    const NOBODY_GID: u32 = 65534;
    let prefix = unique_prefix();
    let host = Netns::new(&prefix, "h");
    let overlay = Netns::new(&prefix, "ov");
    let overlay_path = overlay.path().to_string_lossy().into_owned();
    let add = |name: &'static str, vni: &'static str| {
        vec![
            "link".to_owned(),
            "add".to_owned(),
            name.to_owned(),
            "id".to_owned(),
            vni.to_owned(),
            "netns".to_owned(),
            overlay_path.clone(),
        ]
    };
    let words = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");

    // No group: 0600 root, whatever the umask.
    {
        let daemon = daemon_under_umask_000(&host, &[]);
        assert_eq!(
            socket_mode(&daemon),
            (0o600, 0, 0),
            "socket mode, owner, group"
        );
        let out = as_nobody(&daemon, NOBODY_GID, &[], false, &["link", "show"]);
        assert_refused_connection(&out, "nobody");
        // Someone who gets through anyway (CAP_DAC_OVERRIDE) may read, not change.
        assert_ok(
            &as_nobody(&daemon, NOBODY_GID, &[], true, &["link", "show"]),
            "nobody with dac_override, link show",
        );
        assert_ok(
            &as_nobody(&daemon, NOBODY_GID, &[], true, &["stats"]),
            "nobody with dac_override, stats",
        );
        let adding = add("vxn1", "61");
        let args: Vec<&str> = adding.iter().map(String::as_str).collect();
        let out = as_nobody(&daemon, NOBODY_GID, &[], true, &args);
        assert!(!out.status.success(), "nobody ran `{}`", words(&adding));
        assert_eq!(
            stderr(&out),
            "vxtap: permission denied: `link add` needs root"
        );
        assert!(!overlay.interfaces().contains(&"vxn1".to_owned()));
    }

    // A group nobody is not in: 0660 with that group; nobody is kept out; a member gets in,
    // whether the group is its primary one or a supplementary one.
    {
        let group = GROUP.to_string();
        let daemon = daemon_under_umask_000(&host, &["--socket-group", &group]);
        assert_eq!(socket_mode(&daemon), (0o660, 0, GROUP));
        assert_refused_connection(
            &as_nobody(&daemon, NOBODY_GID, &[], false, &["link", "show"]),
            "nobody outside the group",
        );
        let adding = add("vxn2", "62");
        let args: Vec<&str> = adding.iter().map(String::as_str).collect();
        assert_ok(
            &as_nobody(&daemon, NOBODY_GID, &[GROUP], false, &args),
            "a supplementary member, link add",
        );
        assert!(overlay.interfaces().contains(&"vxn2".to_owned()));
        assert_ok(
            &as_nobody(&daemon, GROUP, &[], false, &["link", "del", "vxn2"]),
            "a primary member, link del",
        );
        // Outside the group but let in by a capability: reads only.
        assert_ok(
            &as_nobody(&daemon, NOBODY_GID, &[], true, &["link", "show"]),
            "a non-member with dac_override, link show",
        );
        let out = as_nobody(&daemon, NOBODY_GID, &[], true, &args);
        assert_eq!(
            stderr(&out),
            format!("vxtap: permission denied: `link add` needs root or group {GROUP}")
        );
    }

    // The group is nobody's own (by name): nobody may read and change.
    {
        let daemon = daemon_under_umask_000(&host, &["--socket-group", "nogroup"]);
        assert_eq!(socket_mode(&daemon), (0o660, 0, NOBODY_GID));
        assert_ok(
            &as_nobody(&daemon, NOBODY_GID, &[], false, &["link", "show"]),
            "nobody in nogroup, link show",
        );
        let adding = add("vxn3", "63");
        let args: Vec<&str> = adding.iter().map(String::as_str).collect();
        assert_ok(
            &as_nobody(&daemon, NOBODY_GID, &[], false, &args),
            "nobody in nogroup, link add",
        );
        assert!(overlay.interfaces().contains(&"vxn3".to_owned()));
        // Root always may.
        daemon.cli_ok(&["link", "del", "vxn3"]);
    }
}

#[test]
fn an_over_long_request_gets_an_answer_and_the_daemon_serves_on() {
    let host = Netns::unique("h");
    let daemon = Daemon::start(&host);
    let client = UnixStream::connect(daemon.socket()).expect("connecting");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // 70 KiB without a newline, written from another thread: the daemon may stop reading.
    let writer = {
        let client = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = (&client).write_all(&vec![b' '; 70 * 1024]);
        })
    };
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    while !answer.contains('\n') {
        match (&client).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => panic!("no answer to an over-long request: {e}\n{}", daemon.log()),
        }
    }
    writer.join().unwrap();
    let answer: serde_json::Value = serde_json::from_str(answer.trim())
        .unwrap_or_else(|e| panic!("not one JSON line ({e}): {answer:?}"));
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("request longer than 65536 bytes"),
        "answer: {answer}"
    );
    daemon.cli_ok(&["link", "show"]);
}

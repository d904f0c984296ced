//! The dir store backend: the shared conformance suite, then what only a directory has:
//! stray files in it, other processes holding its lock, and opening odd paths.
//!
//! The cross-process tests re-run this test binary as a child (`holder_process`, which does
//! nothing unless `VXTAP_TEST_LOCK_HOLDER` names a store), so the child uses `DirStore` itself.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vxtap::store::dir::DirStore;
use vxtap::store::{self, conformance, Lifetime, Store, StoreError, WatchEvent};

/// Tells the child which store to lock, and what to do.
const HOLDER_ENV: &str = "VXTAP_TEST_LOCK_HOLDER";
const MODE_ENV: &str = "VXTAP_TEST_LOCK_MODE";
/// Starts the child's answers, which may share a line with the test harness's output.
const MARK: &str = "vxtap-lock-holder: ";

fn open(path: &Path) -> Box<dyn Store> {
    Box::new(DirStore::open(path).expect("open the dir store"))
}

#[test]
fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(&|| open(dir.path()));
}

#[test]
fn store_url_opens_a_fresh_nested_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not/yet/there");
    let url = format!("dir:{}", path.display());
    let store = store::open(&url).unwrap();
    assert_eq!(store.url(), url);
    assert!(path.is_dir());
    {
        let mut locked = store.lock(Duration::from_secs(5)).unwrap();
        locked
            .put("networks/n1", b"{}", Lifetime::Permanent)
            .unwrap();
    }
    let again = store::open(&url).unwrap();
    let listing = again.list("networks/").unwrap();
    assert_eq!(listing.entries.len(), 1);
    assert_eq!(listing.entries[0].key, "networks/n1");
}

#[test]
fn opening_a_regular_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store");
    std::fs::write(&file, b"not a store").unwrap();
    match DirStore::open(&file) {
        Err(error @ StoreError::Io { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&file.display().to_string())
                    && message.contains("not a directory"),
                "{message}"
            );
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a regular file opened as a store"),
    }
    // Also below a regular file.
    assert!(DirStore::open(&file.join("sub")).is_err());
}

/// Root can write anywhere, so as root the store is opened from a thread that has given up
/// root for `nobody` (thread credentials, so the rest of the test process keeps root).
#[test]
fn opening_an_unwritable_directory_fails_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("ro");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o555)).unwrap();
    let message = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if rustix::process::geteuid().is_root() {
                    let nobody = rustix::process::Uid::from_raw(65534);
                    rustix::thread::set_thread_uid(nobody).expect("drop root in this thread");
                    assert!(!rustix::process::geteuid().is_root());
                }
                DirStore::open(&path).expect_err("opened").to_string()
            })
            .join()
            .unwrap()
    });
    assert!(message.contains("write access"), "{message}");
}

#[test]
fn stray_files_and_garbage_names_are_ignored() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut watch = store.watch("", store.list("").unwrap().revision).unwrap();
    {
        let mut locked = store.lock(Duration::from_secs(5)).unwrap();
        locked.put("net/a", b"real", Lifetime::Permanent).unwrap();
    }
    let net = dir.path().join("net");
    // A temporary file left by a crash, names no key can have, and things that are not files.
    std::fs::write(net.join("~tmp"), b"half a value").unwrap();
    std::fs::write(dir.path().join("~stray"), b"x").unwrap();
    std::fs::write(net.join("with space"), b"x").unwrap();
    std::fs::write(net.join(std::ffi::OsStr::from_bytes(b"bad\xffutf8")), b"x").unwrap();
    std::fs::create_dir_all(net.join("~dir")).unwrap();
    std::fs::write(net.join("~dir/inner"), b"x").unwrap();
    std::os::unix::fs::symlink("a", net.join("link")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(net.join("sock")).unwrap();
    {
        let mut locked = store.lock(Duration::from_secs(5)).unwrap();
        locked.put("net/marker", b"m", Lifetime::Permanent).unwrap();
    }

    let listing = store.list("").unwrap();
    let keys: Vec<&str> = listing.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["net/a", "net/marker"]);
    // The watch reported the two puts and none of the strays.
    for expected in ["net/a", "net/marker"] {
        match watch.next(conformance::EVENT_WAIT).unwrap() {
            Some(WatchEvent::Changed { key, .. }) if key == expected => {}
            other => panic!("expected {expected}, got {other:?}"),
        }
    }
}

#[test]
fn another_process_holding_the_lock_excludes_us_until_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut holder = KillOnDrop(spawn_holder(dir.path(), "hold"));
    wait_for_line(&mut holder.0, "locked");
    match store.lock(Duration::from_millis(100)) {
        Err(StoreError::LockTimeout { .. }) => {}
        Err(other) => panic!("expected LockTimeout, got {other}"),
        Ok(_) => panic!("got the lock while another process holds it"),
    }
    // SIGKILL: no destructor runs; the kernel drops the lock with the process.
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    let mut locked = store.lock(conformance::EVENT_WAIT).unwrap();
    locked
        .put("after/kill", b"ok", Lifetime::Permanent)
        .unwrap();
}

#[test]
fn we_holding_the_lock_exclude_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let held = store.lock(Duration::from_secs(5)).unwrap();
    assert_eq!(run_holder(dir.path(), "try"), "timeout");
    drop(held);
    assert_eq!(run_holder(dir.path(), "try"), "locked");
}

/// The child side of the cross-process tests: does nothing in a normal run.
#[test]
fn holder_process() {
    let Some(path) = std::env::var_os(HOLDER_ENV) else {
        return;
    };
    let store = DirStore::open(Path::new(&path)).unwrap();
    let mode = std::env::var(MODE_ENV).unwrap_or_default();
    if mode == "hold" {
        let _held = store.lock(Duration::from_secs(5)).unwrap();
        println!("{MARK}locked");
        // Until the parent kills us; a parent that died leaves us to time out.
        std::thread::sleep(Duration::from_secs(60));
    } else {
        match store.lock(Duration::from_millis(100)) {
            Ok(_) => println!("{MARK}locked"),
            Err(StoreError::LockTimeout { .. }) => println!("{MARK}timeout"),
            Err(other) => println!("{MARK}error: {other}"),
        }
    }
}

/// Re-runs this test binary as a child that only runs `holder_process`.
fn spawn_holder(store: &Path, mode: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "holder_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_ENV, store)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs a child to its end and returns what it said about the lock.
fn run_holder(store: &Path, mode: &str) -> String {
    let output = spawn_holder(store, mode).wait_with_output().unwrap();
    assert!(output.status.success(), "the child failed: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = stdout
        .lines()
        .find_map(|line| line.split_once(MARK).map(|(_, said)| said.trim()));
    said.unwrap_or_else(|| panic!("the child said nothing about the lock: {stdout}"))
        .to_owned()
}

/// Reads the child's output until `expected`; the child's exit ends the wait.
fn wait_for_line(child: &mut Child, expected: &str) {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line
            .split_once(MARK)
            .is_some_and(|(_, said)| said.trim() == expected)
        {
            return;
        }
        seen.push(line);
    }
    panic!("the child never printed {expected:?}; it printed {seen:?}");
}

/// A child that must not outlive a failed test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already dead after a passing test: nothing to report then.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Anyone who can write a record can steer traffic: the store is its owner's alone.
#[test]
fn the_store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("a").join("store");
    // Whatever the umask: set it wide for this process while opening.
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    let store = DirStore::open(&fresh);
    rustix::process::umask(old);
    let store = store.expect("open");
    assert_eq!(mode(&fresh), 0o700);
    {
        let mut locked = store.lock(Duration::from_secs(5)).unwrap();
        locked
            .put("endpoints/n/e", b"v", Lifetime::Permanent)
            .unwrap();
    }
    assert_eq!(mode(&fresh.join("endpoints")), 0o700);
    assert_eq!(mode(&fresh.join("endpoints/n")), 0o700);
    assert_eq!(mode(&fresh.join("endpoints/n/e")), 0o600);
    for name in ["~lock", "~rev"] {
        assert_eq!(mode(&fresh.join(name)), 0o600, "{name}");
    }
    // An existing store left open to others is restricted when opened.
    let wide = dir.path().join("wide");
    std::fs::create_dir(&wide).unwrap();
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o777)).unwrap();
    DirStore::open(&wide).expect("open");
    assert_eq!(mode(&wide), 0o700);
    // A store that belongs to someone else is refused: they could write records.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let nobody = rustix::process::Uid::from_raw(65534);
    rustix::fs::chown(&theirs, Some(nobody), None).unwrap();
    match DirStore::open(&theirs) {
        Err(e) => assert!(e.to_string().contains("belongs to uid 65534"), "{e}"),
        Ok(_) => panic!("a store owned by nobody opened"),
    }
}

/// Keys carry their creation order, and an overwrite keeps it: the first claim on an
/// address is decided by it.
#[test]
fn keys_keep_their_creation_stamp() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let created = |key: &str| {
        let listing = store.list("").unwrap();
        listing
            .entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.created)
            .expect("key listed")
    };
    let put = |key: &str, value: &[u8]| {
        let mut locked = store.lock(Duration::from_secs(5)).unwrap();
        locked.put(key, value, Lifetime::Permanent).unwrap();
    };
    put("k/old", b"1");
    // File times tick at the kernel's coarse clock: make sure the next key is later.
    std::thread::sleep(Duration::from_millis(20));
    put("k/new", b"1");
    let (old, new) = (created("k/old"), created("k/new"));
    assert!(old > 0 && old < new, "old {old}, new {new}");
    std::thread::sleep(Duration::from_millis(20));
    put("k/old", b"2");
    assert_eq!(
        created("k/old"),
        old,
        "an overwrite keeps the creation stamp"
    );
    let mut locked = store.lock(Duration::from_secs(5)).unwrap();
    locked.delete("k/old").unwrap();
    drop(locked);
    std::thread::sleep(Duration::from_millis(20));
    put("k/old", b"3");
    assert!(created("k/old") > new, "a key created anew is newer");
}

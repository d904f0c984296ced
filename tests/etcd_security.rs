//! The etcd store against a real etcd that is TLS-only with `--client-cert-auth` and has
//! authentication on: each test starts one in a network namespace of its own, with
//! certificates made at test time (`harness::etcd::Pki`), a root user only the harness
//! knows, a `vxtap` role with readwrite on the prefix `/vxtap/v1` (data and lock), and users
//! with less.
//!
//! etcd listens on 127.0.0.1 of the test's namespace and the test bodies run inside it, so
//! nothing touches the root namespace. These tests need root and `/usr/bin/etcd`: without
//! them they fail, they never pass silently. Waits are bounded; nothing asserts a duration.

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use vxtap::store::etcd::{EtcdOptions, EtcdStore};
use vxtap::store::{
    conformance, Lifetime, Password, Store, StoreError, StoreOptions, Watch, WatchEvent,
};
use vxtap_suite::harness::cluster::{Cluster, StoreKind};
use vxtap_suite::harness::etcd::{Etcd, EtcdConfig, Permission};
use vxtap_suite::harness::NetnsExt;
use vxtap_suite::harness::{require_root, wait_until, Netns};

const VXTAP_PASSWORD: &str = "vxtap-pw-1";
const READER_PASSWORD: &str = "reader-pw-1";
const NOBODY_PASSWORD: &str = "nobody-pw-1";
/// How long an expected change may take to show.
const WAIT: Duration = Duration::from_secs(20);

/// Which client certificate a test presents.
#[derive(Clone, Copy)]
enum ClientCert {
    /// One signed by etcd's CA.
    Ours,
    /// None.
    Without,
    /// One signed by another CA.
    Foreign,
}

/// A namespace with a TLS-only, auth-enabled etcd on its 127.0.0.1, and the users
/// `vxtap` (role `vxtap`: readwrite on /vxtap/v1), `reader` (read on /vxtap/v1) and
/// `nobody` (no role).
fn secure_etcd(auth_token_ttl: Option<u32>) -> (Netns, Etcd) {
    require_root();
    let ns = Netns::unique("etcds");
    let mut etcd = Etcd::start_with(
        &ns,
        Ipv4Addr::LOCALHOST,
        EtcdConfig {
            tls: true,
            auth_token_ttl,
        },
    );
    etcd.enable_auth();
    etcd.add_role("vxtap", Permission::ReadWrite, "/vxtap/v1");
    etcd.add_role("reader", Permission::Read, "/vxtap/v1");
    etcd.add_user("vxtap", VXTAP_PASSWORD, &["vxtap"]);
    etcd.add_user("reader", READER_PASSWORD, &["reader"]);
    etcd.add_user("nobody", NOBODY_PASSWORD, &[]);
    (ns, etcd)
}

/// Security options for `etcd` with `cert` and, if given, a user and password.
fn options(etcd: &Etcd, cert: ClientCert, user: Option<(&str, &str)>) -> StoreOptions {
    let pki = etcd.pki().expect("a TLS etcd");
    let (cert, key) = match cert {
        ClientCert::Ours => (
            Some(pki.path("client.pem")),
            Some(pki.path("client-key.pem")),
        ),
        ClientCert::Without => (None, None),
        ClientCert::Foreign => (
            Some(pki.path("foreign.pem")),
            Some(pki.path("foreign-key.pem")),
        ),
    };
    StoreOptions {
        ca: Some(pki.path("ca.pem")),
        cert,
        key,
        user: user.map(|(user, _)| user.to_owned()),
        password: user.map(|(_, password)| Password::new(password.to_owned())),
    }
}

/// The options vxtap is meant to run with.
fn vxtap_options(etcd: &Etcd) -> StoreOptions {
    options(etcd, ClientCert::Ours, Some(("vxtap", VXTAP_PASSWORD)))
}

/// Opens `etcd` with `security`, on another thread, failing the test if that takes longer
/// than [`WAIT`] (a refused connection must not hang).
fn open(
    etcd: &Etcd,
    options: EtcdOptions,
    security: &StoreOptions,
) -> Result<EtcdStore, StoreError> {
    let url = etcd.url();
    let security = security.clone();
    let ns = etcd_netns(etcd);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = vxtap_dataplane::io::netns::run_in(&ns, || {
            EtcdStore::open_secured(&url, options, &security)
        })
        .expect("entering the namespace");
        let _ = tx.send(result);
    });
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("opening {} did not return within {WAIT:?}", etcd.url()))
}

fn etcd_netns(etcd: &Etcd) -> std::path::PathBuf {
    etcd.netns_path().to_owned()
}

fn open_ok(etcd: &Etcd, security: &StoreOptions) -> EtcdStore {
    open(etcd, EtcdOptions::default(), security)
        .unwrap_or_else(|e| panic!("open {}: {e}\n{}", etcd.url(), etcd.log()))
}

fn open_err(etcd: &Etcd, security: &StoreOptions) -> StoreError {
    match open(etcd, EtcdOptions::default(), security) {
        Ok(_) => panic!("open {} succeeded with {security:?}", etcd.url()),
        Err(err) => err,
    }
}

/// The next watch event, waiting at most [`WAIT`].
fn next_event(watch: &mut dyn Watch) -> WatchEvent {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no watch event within {WAIT:?}");
        if let Some(event) = watch.next(left).expect("watch") {
            return event;
        }
    }
}

fn put(store: &dyn Store, key: &str, value: &[u8]) {
    let mut locked = store.lock(WAIT).expect("lock");
    locked.put(key, value, Lifetime::Permanent).expect("put");
}

/// Whether `key` exists, read as root.
fn exists(etcd: &Etcd, key: &str) -> bool {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let (status, answer) = etcd.post("/v3/kv/range", &json!({"key": key}));
    assert_eq!(status, 200, "{answer}");
    answer["kvs"].as_array().is_some_and(|kvs| !kvs.is_empty())
}

#[test]
fn conformance_over_tls_with_client_certificates_and_a_limited_role() {
    let (ns, etcd) = secure_etcd(None);
    let url = etcd.url();
    let security = vxtap_options(&etcd);
    ns.run_in(|| {
        conformance::run_all(&|| {
            Box::new(
                EtcdStore::open_secured(&url, EtcdOptions::default(), &security)
                    .unwrap_or_else(|e| panic!("open {url}: {e}")),
            ) as Box<dyn Store>
        });
    });
    // The suite wrote under /vxtap/v1/ and took the lock, with nothing but the vxtap role.
    assert!(etcd.revision() > 1);
}

/// etcd's alert arrives, or is lost with the reset that follows it (a race): either way a TLS
/// refusal that names the endpoint. Returns the message.
fn assert_tls_refusal(err: &StoreError) -> String {
    let message = err.to_string();
    println!("{message}");
    assert!(
        matches!(err, StoreError::Tls { .. } | StoreError::TlsClosed { .. }),
        "{err:?}"
    );
    assert!(
        message.contains("TLS handshake with 127.0.0.1:2379 failed"),
        "{message}"
    );
    message
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let (_ns, etcd) = secure_etcd(None);
    let err = open_err(
        &etcd,
        &options(&etcd, ClientCert::Without, Some(("vxtap", VXTAP_PASSWORD))),
    );
    let message = assert_tls_refusal(&err);
    assert!(message.contains("--store-cert"), "{message}");
    assert!(!message.contains(VXTAP_PASSWORD), "{message}");
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let (_ns, etcd) = secure_etcd(None);
    let err = open_err(
        &etcd,
        &options(&etcd, ClientCert::Foreign, Some(("vxtap", VXTAP_PASSWORD))),
    );
    let message = assert_tls_refusal(&err);
    assert!(message.contains("client certificate"), "{message}");
}

#[test]
fn a_client_certificate_with_a_common_name_is_refused_clearly() {
    let (_ns, etcd) = secure_etcd(None);
    let pki = etcd.pki().expect("pki");
    let mut security = vxtap_options(&etcd);
    security.cert = Some(pki.path("cn-client.pem"));
    security.key = Some(pki.path("cn-client-key.pem"));
    let err = open_err(&etcd, &security);
    let message = err.to_string();
    println!("{message}");
    assert!(
        matches!(err, StoreError::CommonNameRefused { .. }),
        "{err:?}"
    );
    assert!(message.contains("without a CN"), "{message}");
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let (_ns, etcd) = secure_etcd(None);
    let mut security = vxtap_options(&etcd);
    security.ca = Some(etcd.pki().expect("pki").path("other-ca.pem"));
    let err = open_err(&etcd, &security);
    let message = err.to_string();
    println!("{message}");
    assert!(matches!(err, StoreError::Tls { .. }), "{err:?}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("--store-ca"), "{message}");
}

#[test]
fn a_wrong_password_is_refused_at_open() {
    let (_ns, etcd) = secure_etcd(None);
    let err = open_err(
        &etcd,
        &options(&etcd, ClientCert::Ours, Some(("vxtap", "not-the-password"))),
    );
    let message = err.to_string();
    println!("{message}");
    assert!(matches!(err, StoreError::AuthFailed { .. }), "{err:?}");
    assert!(message.contains("authentication failed"), "{message}");
    assert!(message.contains("\"vxtap\""), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    assert!(!format!("{err:?}").contains("not-the-password"));
}

#[test]
fn only_the_vxtap_role_writes_data_or_takes_the_lock() {
    let (_ns, etcd) = secure_etcd(None);

    // No user at all (a valid client certificate only): refused at open.
    let err = open_err(&etcd, &options(&etcd, ClientCert::Ours, None));
    println!("{err}");
    assert!(matches!(err, StoreError::AuthRequired { .. }), "{err:?}");
    assert!(err.to_string().contains("--store-user"), "{err}");

    // A user without a role cannot even read the lock key: refused at open.
    let err = open_err(
        &etcd,
        &options(&etcd, ClientCert::Ours, Some(("nobody", NOBODY_PASSWORD))),
    );
    println!("{err}");
    assert!(
        matches!(err, StoreError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("/vxtap/v1"), "{err}");

    // A user that may only read: opens and lists, but cannot take the lock.
    let reader = open_ok(
        &etcd,
        &options(&etcd, ClientCert::Ours, Some(("reader", READER_PASSWORD))),
    );
    let ns = etcd_netns(&etcd);
    vxtap_dataplane::io::netns::run_in(&ns, || {
        reader.list("").expect("the reader lists");
        match reader.lock(WAIT) {
            Err(err @ StoreError::PermissionDenied { .. }) => {
                println!("{err}");
                assert!(err.to_string().contains("\"reader\""), "{err}");
            }
            Err(other) => panic!("reader taking the lock: unexpected error {other:?}"),
            Ok(_) => panic!("the reader took the lock"),
        }
    })
    .expect("entering the namespace");
    assert!(!exists(&etcd, "/vxtap/v1.lock"));

    // The raw gateway, as an intruder on the underlay with a valid certificate would use it.
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let endpoint_put = json!({"key": b64("/vxtap/v1/endpoints/n1/evil"), "value": b64("{}")});
    let lock_take = json!({
        "compare": [{"target": "CREATE", "result": "EQUAL",
                     "key": b64("/vxtap/v1.lock"), "create_revision": "0"}],
        "success": [{"request_put": {"key": b64("/vxtap/v1.lock"), "value": b64("evil")}}],
    });
    let nobody = etcd
        .authenticate("nobody", NOBODY_PASSWORD)
        .expect("nobody authenticates");
    let reader_token = etcd
        .authenticate("reader", READER_PASSWORD)
        .expect("reader authenticates");
    for (who, token) in [
        ("no token", None),
        ("nobody", Some(nobody.as_str())),
        ("reader", Some(reader_token.as_str())),
    ] {
        for (what, path, body) in [
            ("endpoint put", "/v3/kv/put", &endpoint_put),
            ("lock txn", "/v3/kv/txn", &lock_take),
        ] {
            let (status, answer) = etcd.post_as(path, body, token);
            println!("{who} {what}: {status} {answer}");
            assert_ne!(status, 200, "{who} {what} was accepted: {answer}");
            let message = answer["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("permission denied") || message.contains("user name is empty"),
                "{who} {what}: {answer}"
            );
        }
    }
    assert!(!exists(&etcd, "/vxtap/v1/endpoints/n1/evil"));
    assert!(!exists(&etcd, "/vxtap/v1.lock"));

    // The vxtap user does both.
    let store = open_ok(&etcd, &vxtap_options(&etcd));
    vxtap_dataplane::io::netns::run_in(&ns, || {
        let mut locked = store.lock(WAIT).expect("vxtap takes the lock");
        assert!(exists(&etcd, "/vxtap/v1.lock"));
        locked
            .put("endpoints/n1/good", b"{}", Lifetime::Session)
            .expect("vxtap writes an endpoint");
    })
    .expect("entering the namespace");
    assert!(exists(&etcd, "/vxtap/v1/endpoints/n1/good"));
}

#[test]
fn expired_and_stale_tokens_are_renewed_watch_included() {
    // Tokens expire 2 s after their last use.
    let (_ns, etcd) = secure_etcd(Some(2));
    // Long leases, so that the keeper (every TTL/3) does not use the token meanwhile.
    let quiet = EtcdOptions {
        session_ttl: Duration::from_secs(90),
        lock_ttl: Duration::from_secs(90),
        ..EtcdOptions::default()
    };
    let store = open(&etcd, quiet, &vxtap_options(&etcd))
        .unwrap_or_else(|e| panic!("open: {e}\n{}", etcd.log()));
    assert_eq!(store.authentications(), 1);
    let ns = etcd_netns(&etcd);
    vxtap_dataplane::io::netns::run_in(&ns, || {
        let listing = store.list("").expect("list");
        let mut watch = store.watch("", listing.revision).expect("watch");
        put(&store, "a", b"1");
        assert!(matches!(next_event(&mut *watch), WatchEvent::Changed { key, .. } if key == "a"));

        // Idle past the TTL (bounded): the next request finds its token expired, renews it
        // once, and succeeds.
        let before = store.authentications();
        let renewed = wait_until(WAIT, || {
            std::thread::sleep(Duration::from_secs(3));
            store.list("").expect("list after the token expired");
            store.authentications() > before
        });
        assert!(
            renewed,
            "the token never expired (or was never renewed)\n{}",
            etcd.log()
        );

        // Writes work, and the watch made with the old token still streams.
        put(&store, "b", b"2");
        assert!(matches!(next_event(&mut *watch), WatchEvent::Changed { key, .. } if key == "b"));

        // A watch created with an expired token: renewed too.
        let before = store.authentications();
        std::thread::sleep(Duration::from_secs(5));
        let listing = store.list("").expect("list");
        let mut second = store
            .watch("", listing.revision)
            .expect("watch after expiry");
        put(&store, "c", b"3");
        assert!(matches!(next_event(&mut *second), WatchEvent::Changed { key, .. } if key == "c"));
        assert!(store.authentications() > before);

        // The keeper's lease keep-alives (every 10/3 s, past the 2 s token TTL each time)
        // go on working: a session key outlives its 10 s lease 2.5 times over. (etcd 3.4
        // does not check the token of a keep-alive: this handle needed no second token.)
        let keeper = open_ok(&etcd, &vxtap_options(&etcd));
        let mut locked = keeper.lock(WAIT).expect("lock");
        locked
            .put("session/k", b"v", Lifetime::Session)
            .expect("session put");
        drop(locked);
        std::thread::sleep(Duration::from_secs(25));
        assert!(
            exists(&etcd, "/vxtap/v1/session/k"),
            "the session lease expired: its keep-alives failed\n{}",
            etcd.log()
        );
        // And the handle still writes after all that idling.
        put(&keeper, "session/after", b"v");
    })
    .expect("entering the namespace");
}

#[test]
fn plain_etcd_url_to_a_tls_etcd_fails_clearly() {
    let (_ns, etcd) = secure_etcd(None);
    let url = etcd.url().replace("etcds://", "etcd://");
    let ns = etcd_netns(&etcd);
    let (tx, rx) = mpsc::channel();
    let thread_url = url.clone();
    std::thread::spawn(move || {
        let result =
            vxtap_dataplane::io::netns::run_in(&ns, || EtcdStore::open(&thread_url).map(|_| ()))
                .expect("entering the namespace");
        let _ = tx.send(result);
    });
    let result = rx
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("opening {url} hung"));
    let err = result.expect_err("a plain connection to a TLS etcd opened");
    let message = err.to_string();
    println!("{message}");
    // etcd 3.4 closes a plain connection to its TLS port without answering: the error says
    // what to do, but stays a connection failure (an etcd shutting down does the same).
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    assert!(
        message.contains("if it serves TLS, use etcds://"),
        "{message}"
    );
}

#[test]
fn daemon_on_a_secured_etcd_creates_and_lists_networks() {
    let cluster = Cluster::new(1, StoreKind::EtcdSecure);
    assert!(cluster.store_url().starts_with("etcds://"));
    let host = &cluster.hosts[0];
    let id = host.cli_ok(&["network", "create", "--subnet", "10.77.0.0/24", "secnet"]);
    assert!(!id.trim().is_empty());
    let listing = host.cli_ok(&["network", "ls"]);
    assert!(listing.contains("secnet"), "{listing}");
    // It went through etcd, as the vxtap user.
    let etcd = cluster.etcd.as_ref().expect("etcd");
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let (status, answer) = etcd.post(
        "/v3/kv/range",
        &json!({"key": b64(b"/vxtap/v1/networks/"), "range_end": b64(b"/vxtap/v1/networks0")}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["kvs"].as_array().map(Vec::len), Some(1), "{answer}");
}

//! [`Etcd`]: a real single-member etcd (`/usr/bin/etcd`, Debian's `etcd-server`) running in a
//! test's network namespace, for the etcd store backend's integration tests.
//!
//! It listens on `IP:2379` (clients) and `IP:2380` (peers) inside the namespace, keeps its
//! data in a temporary directory that survives [`Etcd::stop`] / [`Etcd::start_again`] (so a
//! restart keeps keys and leases), and logs to `etcd.log` there, which a failing start
//! prints. [`Etcd::post`] talks to its JSON gateway from inside the namespace, for what the
//! store API does not offer (compaction, deleting the lock key behind a holder's back).
//! Dropping the guard kills etcd and removes the directory. Nothing here touches the root
//! namespace: every connection is made from a thread inside the test's namespace.
//!
//! [`Etcd::start_with`] with [`EtcdConfig::secure`] starts it TLS-only: `https://` client
//! URLs, `--client-cert-auth`, certificates from a [`Pki`] made at test time with rcgen (a
//! CA, a server certificate naming the IP, client certificates, and a second CA with a
//! client certificate of its own that etcd must refuse). [`Etcd::enable_auth`] turns on
//! etcd's authentication with a root user only the harness knows; [`Etcd::add_role`] and
//! [`Etcd::add_user`] build users and roles through the gateway. The harness's own requests
//! then use TLS with the client certificate and a root token.

use super::cmd;
use super::netns::Netns;
use super::sys;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The etcd binary the tests run.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";
/// Client and peer ports inside the namespace.
pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
/// How long etcd may take to answer after starting, or to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Certificates for a TLS etcd, written as PEM files into a temporary directory.
///
/// - `ca.pem`: the CA etcd trusts (`--trusted-ca-file`) and vxtap checks etcd against;
/// - `server.pem`/`server-key.pem`: etcd's certificate, IP SAN = the etcd address,
///   serverAuth + clientAuth (etcd's gateway dials etcd itself with it); its CN names no
///   etcd user;
/// - `client.pem`/`client-key.pem`: a client certificate from `ca.pem`, without a
///   CommonName: etcd 3.4.23's gateway refuses client certificates that have one once
///   authentication is on ("CommonName of client sending a request against gateway will be
///   ignored and not used as expected");
/// - `cn-client.pem`/`cn-client-key.pem`: the same with a CommonName, which it refuses;
/// - `other-ca.pem`, `foreign.pem`/`foreign-key.pem`: a second CA and a client certificate
///   it signed, which etcd must refuse.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// New certificates for an etcd at `server_ip`.
    ///
    /// # Panics
    ///
    /// If rcgen or the file system fails.
    pub fn new(server_ip: Ipv4Addr) -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("vxtap-pki-")
            .tempdir_in("/tmp")
            .expect("a directory for certificates");
        let pki = Pki { dir };
        let ca = pki.make_ca("ca", "vxtap-test-ca");
        let other = pki.make_ca("other-ca", "vxtap-test-other-ca");
        pki.issue(
            &ca,
            "server",
            Some("vxtap-test-etcd-server"),
            vec![server_ip.to_string()],
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        pki.issue(
            &ca,
            "client",
            None,
            Vec::new(),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        pki.issue(
            &ca,
            "cn-client",
            Some("vxtap"),
            Vec::new(),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        pki.issue(
            &other,
            "foreign",
            None,
            Vec::new(),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        pki
    }

    fn make_ca(&self, name: &str, common_name: &str) -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("a CA certificate");
        self.write(&format!("{name}.pem"), &cert.pem());
        Issuer::new(params, key)
    }

    fn issue(
        &self,
        issuer: &Issuer<'static, KeyPair>,
        name: &str,
        common_name: Option<&str>,
        names: Vec<String>,
        usages: &[ExtendedKeyUsagePurpose],
    ) {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "vxtap tests");
        if let Some(common_name) = common_name {
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
        }
        params.extended_key_usages = usages.to_vec();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, issuer).expect("a certificate");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}-key.pem"), &key.serialize_pem());
    }

    fn write(&self, name: &str, content: &str) {
        std::fs::write(self.path(name), content).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    }

    /// The file `name` in the directory (`ca.pem`, `client-key.pem`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `password` to a file (with a trailing newline, as `echo` does); its path.
    pub fn password_file(&self, name: &str, password: &str) -> PathBuf {
        self.write(name, &format!("{password}\n"));
        self.path(name)
    }

    /// A rustls client configuration trusting `ca.pem`, presenting `client.pem`.
    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("ca.pem") {
            roots
                .add(cert.expect("ca.pem"))
                .expect("a CA rustls accepts");
        }
        let chain = CertificateDer::pem_file_iter(self.path("client.pem"))
            .expect("client.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("client.pem");
        let key = PrivateKeyDer::from_pem_file(self.path("client-key.pem")).expect("client key");
        // ring, as vxtap uses it (deprecated in rustls 0.23.48 for lack of post-quantum
        // key exchange, which etcd 3.4 does not offer either).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("the client certificate");
        Arc::new(config)
    }
}

/// How [`Etcd::start_with`] runs etcd.
#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdConfig {
    /// TLS only (`https://` client URL, `--client-cert-auth`), with a [`Pki`].
    pub tls: bool,
    /// `--auth-token-ttl` in seconds (etcd's default is 300).
    pub auth_token_ttl: Option<u32>,
}

impl EtcdConfig {
    /// TLS with client certificates.
    pub fn secure() -> EtcdConfig {
        EtcdConfig {
            tls: true,
            auth_token_ttl: None,
        }
    }
}

/// A permission for [`Etcd::add_role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `read`.
    Read,
    /// `readwrite`.
    ReadWrite,
}

/// A single-member etcd in a network namespace.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    netns_name: String,
    netns_path: PathBuf,
    ip: Ipv4Addr,
    config: EtcdConfig,
    pki: Option<Pki>,
    /// The root user's password, once [`enable_auth`](Self::enable_auth) ran.
    root_password: Option<String>,
}

impl Etcd {
    /// Starts etcd in `ns`, listening on `ip` (an address of `ns`, e.g. 127.0.0.1 on its
    /// `lo`), and waits (bounded) until it serves requests.
    ///
    /// # Panics
    ///
    /// Without root, without `/usr/bin/etcd`, or if etcd exits or does not answer in time;
    /// the message holds its log.
    pub fn start(ns: &Netns, ip: Ipv4Addr) -> Etcd {
        Etcd::start_with(ns, ip, EtcdConfig::default())
    }

    /// [`start`](Self::start) as `config` says; with TLS, certificates are made first
    /// ([`pki`](Self::pki)).
    ///
    /// # Panics
    ///
    /// As for [`start`](Self::start).
    pub fn start_with(ns: &Netns, ip: Ipv4Addr, config: EtcdConfig) -> Etcd {
        super::require_root();
        assert!(
            Path::new(ETCD_BINARY).is_file(),
            "{ETCD_BINARY} is missing: install etcd-server (apt-get install etcd-server)"
        );
        let dir = tempfile::Builder::new()
            .prefix("vxtap-etcd-")
            .tempdir_in("/tmp")
            .expect("a directory for etcd under /tmp");
        let mut etcd = Etcd {
            child: None,
            dir,
            netns_name: ns.name().to_owned(),
            netns_path: ns.path().to_owned(),
            ip,
            config,
            pki: config.tls.then(|| Pki::new(ip)),
            root_password: None,
        };
        etcd.launch();
        etcd
    }

    /// Starts etcd again after [`stop`](Self::stop), with the same data and addresses.
    ///
    /// # Panics
    ///
    /// As for [`start`](Self::start), or if it is still running.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "etcd in {} is still running",
            self.netns_name
        );
        self.launch();
    }

    fn launch(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd.log");
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:{CLIENT_PORT}", self.ip);
        let peer = format!("http://{}:{PEER_PORT}", self.ip);
        // As `Netns::command`: `ip` execs etcd, so the child's pid is etcd's.
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.netns_name, ETCD_BINARY])
            .arg("--name=vxtap-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=vxtap-test={peer}"));
        if let Some(pki) = &self.pki {
            command
                .arg("--client-cert-auth")
                .arg(format!(
                    "--trusted-ca-file={}",
                    pki.path("ca.pem").display()
                ))
                .arg(format!("--cert-file={}", pki.path("server.pem").display()))
                .arg(format!(
                    "--key-file={}",
                    pki.path("server-key.pem").display()
                ));
        }
        if let Some(ttl) = self.config.auth_token_ttl {
            command.arg(format!("--auth-token-ttl={ttl}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd.log"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start `{}`: {err}", cmd::describe(&command)));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if matches!(
                self.try_post("/v3/kv/range", &json!({"key": "AA=="})),
                Ok((200, _))
            ) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "etcd in {} exited ({status}) before serving:\n{}",
                        self.netns_name,
                        self.log()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd in {} did not serve within {START_TIMEOUT:?}:\n{}",
                self.netns_name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The store URL: `etcd://IP:2379`, or `etcds://IP:2379` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.pki.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}:{CLIENT_PORT}", self.ip)
    }

    /// The namespace etcd runs in (its path).
    pub fn netns_path(&self) -> &Path {
        &self.netns_path
    }

    /// The certificates, with TLS.
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// Turns etcd's authentication on: a root user (with a password only the harness
    /// knows) in the root role, then `auth enable`. Later harness requests authenticate
    /// as root.
    ///
    /// # Panics
    ///
    /// If etcd refuses a step.
    pub fn enable_auth(&mut self) {
        let password = format!("root-{}-{}", std::process::id(), self.netns_name);
        self.ok(
            "/v3/auth/user/add",
            &json!({"name": "root", "password": password}),
        );
        self.ok("/v3/auth/role/add", &json!({"name": "root"}));
        self.ok(
            "/v3/auth/user/grant",
            &json!({"user": "root", "role": "root"}),
        );
        self.ok("/v3/auth/enable", &json!({}));
        self.root_password = Some(password);
    }

    /// A role with `permission` on every key starting with `prefix`.
    ///
    /// # Panics
    ///
    /// If etcd refuses.
    pub fn add_role(&self, role: &str, permission: Permission, prefix: &str) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        let last = end.pop().expect("a non-empty prefix");
        end.push(last + 1);
        let kind = match permission {
            Permission::Read => "READ",
            Permission::ReadWrite => "READWRITE",
        };
        self.ok("/v3/auth/role/add", &json!({"name": role}));
        self.ok(
            "/v3/auth/role/grant",
            &json!({"name": role, "perm": {
                "permType": kind,
                "key": b64.encode(prefix),
                "range_end": b64.encode(end),
            }}),
        );
    }

    /// A user with `password` and `roles`.
    ///
    /// # Panics
    ///
    /// If etcd refuses.
    pub fn add_user(&self, user: &str, password: &str, roles: &[&str]) {
        self.ok(
            "/v3/auth/user/add",
            &json!({"name": user, "password": password}),
        );
        for role in roles {
            self.ok("/v3/auth/user/grant", &json!({"user": user, "role": role}));
        }
    }

    /// `POST path` that must answer 200.
    fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.post(path, body);
        assert_eq!(status, 200, "POST {path}: {answer}");
        answer
    }

    /// `POST path` with `body` and, if given, `Authorization: token`, without the root
    /// token the harness would add: to see what etcd does for a client that is not root.
    /// Over TLS with the client certificate when etcd has TLS.
    ///
    /// # Panics
    ///
    /// If etcd cannot be reached or answers something that is not JSON.
    pub fn post_as(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        self.exchange(path, body, token)
            .unwrap_or_else(|err| panic!("POST {path} to etcd in {}: {err}", self.netns_name))
    }

    /// The token etcd gives `user` for `password`, or its refusal as `(status, answer)`.
    ///
    /// # Panics
    ///
    /// If etcd cannot be reached.
    pub fn authenticate(&self, user: &str, password: &str) -> Result<String, (u16, Value)> {
        let (status, answer) = self.post_as(
            "/v3/auth/authenticate",
            &json!({"name": user, "password": password}),
            None,
        );
        match answer["token"].as_str() {
            Some(token) if status == 200 => Ok(token.to_owned()),
            _ => Err((status, answer)),
        }
    }

    /// Whether it runs (between `start` and `stop`).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops etcd with SIGTERM (SIGKILL if it does not exit in time) and waits for it. Its
    /// data stays for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = sys::signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Compacts the history up to the current revision (physically, so watches from older
    /// revisions are cancelled at once); returns that revision.
    ///
    /// # Panics
    ///
    /// If etcd refuses.
    pub fn compact(&self) -> i64 {
        let revision = self.revision();
        let (status, body) = self.post(
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string(), "physical": true}),
        );
        assert_eq!(status, 200, "compacting to {revision}: {body}");
        revision
    }

    /// The current store revision.
    ///
    /// # Panics
    ///
    /// If etcd does not answer.
    pub fn revision(&self) -> i64 {
        let (status, body) = self.post("/v3/kv/range", &json!({"key": "AA=="}));
        assert_eq!(status, 200, "reading the revision: {body}");
        body["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {body}"))
    }

    /// `POST path` with `body` to the gateway, from inside the namespace: the status and the
    /// decoded answer.
    ///
    /// # Panics
    ///
    /// If etcd cannot be reached or answers something that is not JSON.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.try_post(path, body)
            .unwrap_or_else(|err| panic!("POST {path} to etcd in {}: {err}", self.netns_name))
    }

    /// A POST as root once auth is on (authenticating first), else without a token.
    fn try_post(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let token = match &self.root_password {
            None => None,
            Some(password) => {
                let (status, answer) = self.exchange(
                    "/v3/auth/authenticate",
                    &json!({"name": "root", "password": password}),
                    None,
                )?;
                match answer["token"].as_str() {
                    Some(token) if status == 200 => Some(token.to_owned()),
                    _ => return Err(format!("authenticating as root: {status} {answer}")),
                }
            }
        };
        self.exchange(path, body, token.as_deref())
    }

    /// One request and its answer, from inside the namespace, over TLS with the client
    /// certificate when etcd has TLS.
    fn exchange(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let address = SocketAddr::from((self.ip, CLIENT_PORT));
        let request = body.to_string();
        let authorization = token
            .map(|token| format!("Authorization: {token}\r\n"))
            .unwrap_or_default();
        let message = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\n{authorization}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{request}",
            request.len()
        );
        let tls = self.pki.as_ref().map(Pki::client_config);
        let answer = vxtap_dataplane::io::netns::run_in(&self.netns_path, || {
            let socket = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
            socket.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut answer = Vec::new();
            match tls {
                None => {
                    let mut socket = socket;
                    socket.write_all(message.as_bytes())?;
                    socket.read_to_end(&mut answer)?;
                }
                Some(config) => {
                    let name = rustls::pki_types::ServerName::from(std::net::IpAddr::V4(self.ip));
                    let connection = rustls::ClientConnection::new(config, name)
                        .map_err(std::io::Error::other)?;
                    let mut stream = rustls::StreamOwned::new(connection, socket);
                    stream.write_all(message.as_bytes())?;
                    stream.flush()?;
                    match stream.read_to_end(&mut answer) {
                        Ok(_) => {}
                        // A peer that closed without close_notify, after answering.
                        Err(e)
                            if e.kind() == std::io::ErrorKind::UnexpectedEof
                                && !answer.is_empty() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok::<_, std::io::Error>(answer)
        })
        .map_err(|err| err.to_string())?
        .map_err(|err| err.to_string())?;
        parse_answer(&answer)
    }

    /// What it has logged so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Splits a complete HTTP/1.1 answer (read until the peer closed) into its status and its
/// JSON body, de-chunking it if need be.
fn parse_answer(answer: &[u8]) -> Result<(u16, Value), String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut decoded = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest
                .split_once("\r\n")
                .ok_or_else(|| format!("bad chunking in {body:?}"))?;
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| format!("bad chunk size in {body:?}"))?;
            if size == 0 {
                break;
            }
            let chunk = after
                .get(..size)
                .ok_or_else(|| format!("short chunk in {body:?}"))?;
            decoded.push_str(chunk);
            rest = after.get(size + 2..).unwrap_or_default();
        }
        decoded
    } else {
        body.to_owned()
    };
    let value = serde_json::from_str(&body).map_err(|err| format!("{err} in {body:?}"))?;
    Ok((status, value))
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The TempDir removes the data and the log.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(plain).unwrap(), (200, json!({})));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
            8\r\n{\"code\":\r\n2\r\n5}\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n";
        assert_eq!(parse_answer(chunked).unwrap(), (404, json!({"code": 5})));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}

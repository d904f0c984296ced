//! `vxtap` as a CNI plugin (spec 1.1.0; results also in the 0.3.x, 0.4.0 and 1.0.0 forms),
//! for containerd, CRI-O, Kubernetes and podman's CNI backend. Installed as
//! `/opt/cni/bin/vxtap`: the `vxtap` binary runs as the plugin when the runtime calls it, with
//! `CNI_COMMAND` set and no arguments. It asks the host's running `vxtap daemon` (its admin
//! socket in the netconf's `runDir`, default `/run/vxtap`) to do the work, so the store, the
//! links and the plumbing stay in the daemon as for `vxtap connect` and Docker.
//!
//! The netconf names a vxtap network (`"network"`), made beforehand with `vxtap network
//! create` or by Docker; a missing one is an error, never created implicitly. `vxtap cni
//! config` writes version 1.0.0 conflists by default ([`CONFLIST_VERSION`]). Optional:
//! `"mtu"` (at most the network's), `"runDir"`, `"args": {"name": ...}` for the endpoint's
//! name. An address can be asked for with `CNI_ARGS` `IP=` or runtimeConfig `ips` (the `ips`
//! capability). Endpoint names come from `K8S_POD_NAME`/`K8S_POD_NAMESPACE` when present, else
//! from the container id, so they resolve across hosts.
//!
//! Parsing the environment and stdin, building results and mapping failures to the spec's
//! error codes is pure ([`run`] takes the environment, stdin and a [`Daemon`]), and tested
//! here without root; the root tests drive the real binary.

use crate::api::{CniAdded, CniAttachment, Reply, Request};
use crate::client::ClientError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The spec version this plugin implements.
pub const SPEC_VERSION: &str = "1.1.0";
/// The versions whose results it can write.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Where the daemon's admin socket is, unless the netconf says otherwise.
pub const DEFAULT_RUN_DIR: &str = "/run/vxtap";

/// The spec's error codes, and vxtap's own (100 and up).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Invalid necessary environment variables.
    pub const BAD_ENVIRONMENT: u32 = 4;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (the daemon is not running, the store not reachable).
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The netconf names a network the store does not have.
    pub const UNKNOWN_NETWORK: u32 = 100;
    /// The address asked for cannot be had (in use, outside the subnet, none left).
    pub const ADDRESS: u32 = 101;
    /// The daemon refused for another reason (details say which).
    pub const REFUSED: u32 = 102;
    /// CHECK found the attachment otherwise than ADD made it.
    pub const CHECK_FAILED: u32 = 103;
}

/// A failure, as the spec's error result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The code.
    pub code: u32,
    /// One line.
    pub msg: String,
    /// More, if any.
    pub details: String,
}

fn error(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError {
        code,
        msg: msg.into(),
        details: details.into(),
    }
}

/// What the plugin needs from the daemon: one request, its reply.
pub trait Daemon {
    /// Sends `request` to the daemon whose run directory is `run_dir`.
    ///
    /// # Errors
    ///
    /// As [`crate::client::call`].
    fn call(&self, run_dir: &Path, request: &Request) -> Result<Reply, ClientError>;
}

/// The daemon's admin socket.
pub struct Socket;

impl Daemon for Socket {
    fn call(&self, run_dir: &Path, request: &Request) -> Result<Reply, ClientError> {
        crate::client::call(run_dir, request)
    }
}

/// The netconf on stdin (the fields vxtap reads).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    run_dir: Option<PathBuf>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    runtime_config: Option<RuntimeConfig>,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValidAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// Runs one plugin call: `env` reads the environment, `stdin` is the netconf. Returns what to
/// print on stdout and the exit status.
pub fn run(
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    daemon: &dyn Daemon,
) -> (String, i32) {
    // The version to answer in: the netconf's, if it can be read.
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| SPEC_VERSION.to_owned());
    match call(env, stdin, daemon) {
        Ok(Some(result)) => (format!("{result}\n"), 0),
        Ok(None) => (String::new(), 0),
        Err(e) => {
            let result = json!({
                "cniVersion": version,
                "code": e.code,
                "msg": e.msg,
                "details": e.details,
            });
            (format!("{result}\n"), 1)
        }
    }
}

fn call(
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    daemon: &dyn Daemon,
) -> Result<Option<Value>, CniError> {
    let command = env("CNI_COMMAND").unwrap_or_default();
    if command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": SPEC_VERSION,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        error(
            code::DECODE,
            "the network configuration is not valid JSON",
            e.to_string(),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(error(
            code::INCOMPATIBLE_VERSION,
            format!("vxtap does not support CNI version {:?}", conf.cni_version),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let run_dir = conf
        .run_dir
        .clone()
        .or_else(|| env("VXTAP_RUN_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR));
    let required = |name: &str| {
        env(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| error(code::BAD_ENVIRONMENT, format!("{name} is not set"), ""))
    };
    let attachment = || -> Result<CniAttachment, CniError> {
        Ok(CniAttachment {
            container: required("CNI_CONTAINERID")?,
            ifname: required("CNI_IFNAME")?,
        })
    };
    let ask = |request: Request| {
        daemon
            .call(&run_dir, &request)
            .map_err(|e| refusal(&e, request.name()))
    };
    match command.as_str() {
        "ADD" => {
            let attachment = attachment()?;
            let netns = required("CNI_NETNS")?;
            let network = network_of(&conf)?;
            let args = parse_args(&env("CNI_ARGS").unwrap_or_default())?;
            let ip = requested_ip(&args, &conf)?;
            let name = endpoint_name(&args, &conf, &attachment.container)?;
            let reply = ask(Request::CniAdd {
                attachment: attachment.clone(),
                network,
                netns: netns.clone(),
                ip,
                name,
                mtu: conf.mtu,
            })?;
            let Reply::CniAdded(added) = reply else {
                return Err(error(
                    code::REFUSED,
                    "unexpected answer from the daemon",
                    format!("{reply:?}"),
                ));
            };
            Ok(Some(result(&conf.cni_version, &added, &attachment, &netns)))
        }
        "DEL" => {
            // An attachment the daemon does not have (a second DEL, an unknown container, a
            // namespace gone) is no error there; without a daemon, the runtime tries again.
            ask(Request::CniDel {
                attachment: attachment()?,
            })?;
            Ok(None)
        }
        "CHECK" => {
            let attachment = attachment()?;
            let netns = required("CNI_NETNS")?;
            network_of(&conf)?;
            let address = prev_address(&conf, &attachment.ifname)?;
            let routes = prev_routes(&conf)?;
            ask(Request::CniCheck {
                attachment,
                netns,
                address,
                routes,
            })
            .map_err(|e| CniError {
                code: if e.code == code::REFUSED {
                    code::CHECK_FAILED
                } else {
                    e.code
                },
                ..e
            })?;
            Ok(None)
        }
        "STATUS" => {
            network_of(&conf)?;
            match ask(Request::NetworkList) {
                Ok(_) => Ok(None),
                Err(e) => Err(CniError {
                    code: code::NOT_AVAILABLE,
                    ..e
                }),
            }
        }
        "GC" => {
            let valid = conf
                .valid_attachments
                .unwrap_or_default()
                .into_iter()
                .map(|a| CniAttachment {
                    container: a.container_id,
                    ifname: a.ifname,
                })
                .collect();
            ask(Request::CniGc { valid })?;
            Ok(None)
        }
        "" => Err(error(code::BAD_ENVIRONMENT, "CNI_COMMAND is not set", "")),
        other => Err(error(
            code::BAD_ENVIRONMENT,
            format!(
                "unknown CNI_COMMAND {:?}",
                crate::cluster::validate::escape(other)
            ),
            "vxtap knows ADD, DEL, CHECK, STATUS, GC and VERSION",
        )),
    }
}

/// The vxtap network the netconf names.
fn network_of(conf: &NetConf) -> Result<String, CniError> {
    match conf.network.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err(error(
            code::INVALID_CONFIG,
            format!(
                "network configuration {:?} names no vxtap network (\"network\": NAME)",
                conf.name
            ),
            "make one with `vxtap network create NAME` and name it in the configuration",
        )),
    }
}

/// A failed request to the daemon, as a CNI error.
fn refusal(e: &ClientError, request: &str) -> CniError {
    match e {
        ClientError::NotRunning { .. } => error(
            code::TRY_AGAIN,
            "the vxtap daemon is not running",
            e.to_string(),
        ),
        ClientError::Refused(message) => {
            let code = if message.contains("is unreachable") {
                code::TRY_AGAIN
            } else if message.starts_with("network ") && message.ends_with(" not found") {
                code::UNKNOWN_NETWORK
            } else if message.starts_with("IP ") || message.starts_with("no free IP") {
                code::ADDRESS
            } else {
                code::REFUSED
            };
            error(code, format!("vxtap {request}: {message}"), message.clone())
        }
        other => error(
            code::TRY_AGAIN,
            format!("vxtap {request}: cannot talk to the daemon"),
            other.to_string(),
        ),
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
fn parse_args(text: &str) -> Result<Vec<(String, String)>, CniError> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    error(
                        code::BAD_ENVIRONMENT,
                        format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                        "",
                    )
                })
        })
        .collect()
}

fn arg<'a>(args: &'a [(String, String)], key: &str) -> Option<&'a str> {
    args.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The address asked for: `CNI_ARGS` `IP=`, else runtimeConfig `ips` (the first IPv4 one).
fn requested_ip(args: &[(String, String)], conf: &NetConf) -> Result<Option<Ipv4Addr>, CniError> {
    if let Some(ip) = arg(args, "IP") {
        return ip.parse().map(Some).map_err(|_| {
            error(
                code::BAD_ENVIRONMENT,
                format!("CNI_ARGS IP={ip:?} is not an IPv4 address"),
                "",
            )
        });
    }
    let Some(runtime) = &conf.runtime_config else {
        return Ok(None);
    };
    for text in &runtime.ips {
        let ip = text.split('/').next().unwrap_or_default();
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => return Ok(Some(ip)),
            Ok(std::net::IpAddr::V6(_)) => continue,
            Err(_) => {
                return Err(error(
                    code::INVALID_CONFIG,
                    format!("runtimeConfig ips: {text:?} is not an address"),
                    "",
                ))
            }
        }
    }
    Ok(None)
}

/// The endpoint's name: the netconf's `args.name`, else the Kubernetes pod (`POD.NAMESPACE`),
/// else the container id's first 12 characters, kept to vxtap's naming rules.
fn endpoint_name(
    args: &[(String, String)],
    conf: &NetConf,
    container: &str,
) -> Result<String, CniError> {
    if let Some(name) = conf.args.as_ref().and_then(|a| a["name"].as_str()) {
        return crate::cluster::check_name("endpoint", name)
            .map(|()| name.to_owned())
            .map_err(|e| error(code::INVALID_CONFIG, e.to_string(), ""));
    }
    let pod = match (arg(args, "K8S_POD_NAME"), arg(args, "K8S_POD_NAMESPACE")) {
        (Some(pod), Some(namespace)) => Some(format!("{pod}.{namespace}")),
        (Some(pod), None) => Some(pod.to_owned()),
        _ => None,
    };
    let candidates = pod.into_iter().chain(std::iter::once(
        container.chars().take(12).collect::<String>(),
    ));
    for name in candidates {
        if crate::cluster::check_name("endpoint", &name).is_ok() {
            return Ok(name);
        }
    }
    Err(error(
        code::BAD_ENVIRONMENT,
        format!(
            "no endpoint name can be made from CNI_CONTAINERID {:?}",
            crate::cluster::validate::escape(container)
        ),
        "set args.name in the configuration, or K8S_POD_NAME in CNI_ARGS",
    ))
}

/// The address of `ifname` in prevResult (CHECK).
fn prev_address(conf: &NetConf, ifname: &str) -> Result<String, CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        error(
            code::INVALID_CONFIG,
            "CHECK needs prevResult in the configuration",
            "",
        )
    })?;
    let interfaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let index = interfaces.iter().position(|i| i["name"] == ifname);
    prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|ip| {
            index.is_none_or(|index| ip["interface"].as_u64() == Some(index as u64))
                && ip["address"].as_str().is_some_and(|a| !a.contains(':'))
        })
        .and_then(|ip| ip["address"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            error(
                code::INVALID_CONFIG,
                format!("prevResult has no IPv4 address for {ifname}"),
                "",
            )
        })
}

/// The IPv4 routes of prevResult (CHECK): destination and gateway.
fn prev_routes(conf: &NetConf) -> Result<Vec<(String, Option<Ipv4Addr>)>, CniError> {
    let routes = conf
        .prev_result
        .as_ref()
        .and_then(|p| p["routes"].as_array().cloned())
        .unwrap_or_default();
    routes
        .iter()
        .filter(|r| r["dst"].as_str().is_some_and(|d| !d.contains(':')))
        .map(|r| {
            let dst = r["dst"].as_str().unwrap_or_default().to_owned();
            let gateway = match r["gw"].as_str() {
                Some(g) => Some(g.parse().map_err(|_| {
                    error(
                        code::INVALID_CONFIG,
                        format!("prevResult route gateway {g:?}"),
                        "",
                    )
                })?),
                None => None,
            };
            Ok((dst, gateway))
        })
        .collect()
}

/// ADD's result in the form of `version`.
fn result(version: &str, added: &CniAdded, attachment: &CniAttachment, netns: &str) -> Value {
    let e = &added.endpoint;
    let old = matches!(version, "0.3.0" | "0.3.1" | "0.4.0");
    let mut ip = json!({
        "address": format!("{}/{}", e.ip, added.prefix),
        "gateway": added.gateway.to_string(),
        "interface": 1,
    });
    if old {
        ip["version"] = json!("4");
    }
    let mut result = json!({
        "cniVersion": version,
        "interfaces": [
            // No `sandbox`: runtimes (podman 4) take every interface with one for a
            // container's and want its MAC. This end lives in the overlay namespace.
            { "name": added.host_ifname },
            { "name": attachment.ifname, "mac": e.mac, "sandbox": netns },
        ],
        "ips": [ip],
        "routes": [],
    });
    if let Some(resolver) = added.resolver {
        result["routes"] =
            json!([{ "dst": format!("{resolver}/32"), "gw": added.gateway.to_string() }]);
        result["dns"] = json!({ "nameservers": [resolver.to_string()] });
    }
    result
}

/// The conflist version `vxtap cni config` writes unless told otherwise: the newest that the
/// runtimes in use read (podman 4's and containerd 1.6's libcni refuse 1.1.0 results; they
/// never send STATUS or GC, which only 1.1.0 has).
pub const CONFLIST_VERSION: &str = "1.0.0";

/// `vxtap cni config NETWORK`: a conflist for `/etc/cni/net.d/` in CNI version `version`.
///
/// # Errors
///
/// A version the plugin does not write results in.
pub fn conflist(network: &str, run_dir: Option<&Path>, version: &str) -> Result<Value, String> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(format!(
            "vxtap writes CNI {} results, not {version:?}",
            SUPPORTED_VERSIONS.join(", ")
        ));
    }
    let mut plugin =
        json!({ "type": "vxtap", "network": network, "capabilities": { "ips": true } });
    if let Some(dir) = run_dir {
        plugin["runDir"] = json!(dir.display().to_string());
    }
    Ok(json!({
        "cniVersion": version,
        "name": network,
        "plugins": [plugin],
    }))
}

#[cfg(test)]
mod tests;

//! The messages of Docker's libnetwork plugin protocols, as dockerd 20.10 sends them
//! (captured) and moby's API types through 28 describe them: the remote network driver (`NetworkDriver.*`) and the remote IPAM driver
//! (`IpamDriver.*`). Pure: decoding, the checks of what a request may ask, and the answers.
//!
//! Docker sends JSON with Go's field names and no `Content-Type`. Errors travel in the
//! answer's body with status 200: `{"Err": ...}` for the network driver, `{"Error": ...}` for
//! IPAM (Docker reads only that key there), and Docker shows them as `remote: MESSAGE`.

use crate::cluster::ipam::Subnet;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The driver's name: `docker network create -d vxtap --ipam-driver vxtap`.
pub const DRIVER: &str = "vxtap";
/// The address space vxtap's IPAM reports as both its local and global default.
pub const ADDRESS_SPACE: &str = "vxtap";
/// Driver option: the VNI of a new network.
pub const OPT_VNI: &str = "vxtap.vni";
/// Driver and IPAM option: attach this engine to the existing vxtap network with this id
/// (what vxtap itself passes when it creates a network in the other hosts' engines).
pub const OPT_NETWORK: &str = "vxtap.network";
/// Docker's generic MTU option.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// Where Docker puts `-o` options in `CreateNetwork`.
const GENERIC: &str = "com.docker.network.generic";
/// What `RequestAddress` carries in its options when it asks for the gateway.
const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

/// A request Docker sent, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `Plugin.Activate`.
    Activate,
    /// `NetworkDriver.GetCapabilities`.
    NetworkCapabilities,
    /// `NetworkDriver.CreateNetwork`.
    CreateNetwork(CreateNetwork),
    /// `NetworkDriver.DeleteNetwork`.
    DeleteNetwork {
        /// Docker's id of the network on this engine.
        network: String,
    },
    /// `NetworkDriver.CreateEndpoint`.
    CreateEndpoint {
        /// Docker's network id.
        network: String,
        /// Docker's endpoint id.
        endpoint: String,
        /// The address IPAM gave, `a.b.c.d/len`.
        address: Option<String>,
        /// A MAC the user asked for (`--mac-address`).
        mac: Option<String>,
    },
    /// `NetworkDriver.DeleteEndpoint`.
    DeleteEndpoint {
        /// Docker's network id.
        network: String,
        /// Docker's endpoint id.
        endpoint: String,
    },
    /// `NetworkDriver.Join`.
    Join {
        /// Docker's network id.
        network: String,
        /// Docker's endpoint id.
        endpoint: String,
    },
    /// `NetworkDriver.Leave`, `EndpointOperInfo`, `ProgramExternalConnectivity`,
    /// `RevokeExternalConnectivity`, `DiscoverNew`, `DiscoverDelete`: nothing for vxtap to do.
    NetworkNothing(&'static str),
    /// `IpamDriver.GetCapabilities`.
    IpamCapabilities,
    /// `IpamDriver.GetDefaultAddressSpaces`.
    AddressSpaces,
    /// `IpamDriver.RequestPool`.
    RequestPool(RequestPool),
    /// `IpamDriver.ReleasePool`.
    ReleasePool {
        /// The pool id vxtap gave.
        pool: String,
    },
    /// `IpamDriver.RequestAddress`.
    RequestAddress {
        /// The pool id vxtap gave.
        pool: String,
        /// The address asked for (`--ip`, `--gateway`), if any.
        address: Option<Ipv4Addr>,
        /// Whether this is the network's gateway.
        gateway: bool,
    },
    /// `IpamDriver.ReleaseAddress`.
    ReleaseAddress {
        /// The pool id vxtap gave.
        pool: String,
        /// The address.
        address: Ipv4Addr,
    },
}

/// Which protocol a call belongs to: it decides how errors are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `Plugin.*` and `NetworkDriver.*`.
    Network,
    /// `IpamDriver.*`.
    Ipam,
}

/// `NetworkDriver.CreateNetwork`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateNetwork {
    /// Docker's id of the network on this engine.
    pub network: String,
    /// The pool IPAM gave (its subnet).
    pub subnet: Subnet,
    /// The gateway IPAM gave.
    pub gateway: Option<Ipv4Addr>,
    /// `-o vxtap.vni=N`.
    pub vni: Option<u32>,
    /// `-o com.docker.network.driver.mtu=N`.
    pub mtu: Option<u32>,
    /// `-o vxtap.network=ID`: attach to this existing vxtap network.
    pub attach: Option<String>,
}

/// `IpamDriver.RequestPool`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPool {
    /// `--subnet`, if given.
    pub subnet: Option<Subnet>,
    /// `--ipam-opt vxtap.network=ID`: the pool of this existing vxtap network.
    pub attach: Option<String>,
}

/// Why a request cannot be served: the one line Docker shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refused(message: impl Into<String>) -> Refused {
    Refused(message.into())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Options")]
    options: Option<Map<String, Value>>,
    #[serde(rename = "Interface")]
    interface: Option<RawInterface>,
    #[serde(rename = "IPv4Data")]
    ipv4_data: Option<Vec<RawIpamData>>,
    #[serde(rename = "IPv6Data")]
    ipv6_data: Option<Vec<RawIpamData>>,
    #[serde(rename = "AddressSpace")]
    address_space: String,
    #[serde(rename = "Pool")]
    pool: String,
    #[serde(rename = "SubPool")]
    sub_pool: String,
    #[serde(rename = "V6")]
    v6: bool,
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(rename = "Address")]
    address: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawInterface {
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "AddressIPv6")]
    address_ipv6: String,
    #[serde(rename = "MacAddress")]
    mac_address: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawIpamData {
    #[serde(rename = "AddressSpace")]
    address_space: String,
    #[serde(rename = "Pool")]
    pool: String,
    #[serde(rename = "Gateway")]
    gateway: String,
    #[serde(rename = "AuxAddresses")]
    aux_addresses: Option<Map<String, Value>>,
}

/// Which protocol the path `path` belongs to, if it is one of ours.
pub fn api_of(path: &str) -> Option<Api> {
    let method = path.strip_prefix('/')?;
    if method.starts_with("IpamDriver.") {
        Some(Api::Ipam)
    } else if method.starts_with("NetworkDriver.") || method == "Plugin.Activate" {
        Some(Api::Network)
    } else {
        None
    }
}

/// Decodes the call at `path` with JSON `body` (an empty body is an empty object).
///
/// # Errors
///
/// An unknown method, a body that is not the JSON the method takes, or a request vxtap
/// refuses on its face (IPv6, `--ip-range`, `--aux-address`, unknown `-o` options, another
/// IPAM driver's addresses).
pub fn decode(path: &str, body: &[u8]) -> Result<Call, Refused> {
    let method = path.strip_prefix('/').unwrap_or(path);
    let raw: Raw = if body.iter().all(u8::is_ascii_whitespace) {
        Raw::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| refused(format!("vxtap: malformed {method} request: {e}")))?
    };
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let network = || docker_id("network", &raw.network_id);
    let endpoint = || docker_id("endpoint", &raw.endpoint_id);
    Ok(match method {
        "Plugin.Activate" => Call::Activate,
        "NetworkDriver.GetCapabilities" => Call::NetworkCapabilities,
        "NetworkDriver.CreateNetwork" => Call::CreateNetwork(create_network(raw)?),
        "NetworkDriver.DeleteNetwork" => Call::DeleteNetwork {
            network: network()?,
        },
        "NetworkDriver.CreateEndpoint" => {
            let interface = raw.interface.unwrap_or_default();
            if !interface.address_ipv6.is_empty() {
                return Err(refused("vxtap networks are IPv4 only"));
            }
            Call::CreateEndpoint {
                network: network()?,
                endpoint: endpoint()?,
                address: text(&interface.address),
                mac: text(&interface.mac_address),
            }
        }
        "NetworkDriver.DeleteEndpoint" => Call::DeleteEndpoint {
            network: network()?,
            endpoint: endpoint()?,
        },
        "NetworkDriver.Join" => Call::Join {
            network: network()?,
            endpoint: endpoint()?,
        },
        "NetworkDriver.Leave" => Call::NetworkNothing("Leave"),
        "NetworkDriver.EndpointOperInfo" => Call::NetworkNothing("EndpointOperInfo"),
        "NetworkDriver.ProgramExternalConnectivity" => {
            Call::NetworkNothing("ProgramExternalConnectivity")
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            Call::NetworkNothing("RevokeExternalConnectivity")
        }
        "NetworkDriver.DiscoverNew" => Call::NetworkNothing("DiscoverNew"),
        "NetworkDriver.DiscoverDelete" => Call::NetworkNothing("DiscoverDelete"),
        "IpamDriver.GetCapabilities" => Call::IpamCapabilities,
        "IpamDriver.GetDefaultAddressSpaces" => Call::AddressSpaces,
        "IpamDriver.RequestPool" => Call::RequestPool(request_pool(raw)?),
        "IpamDriver.ReleasePool" => Call::ReleasePool { pool: raw.pool_id },
        "IpamDriver.RequestAddress" => {
            let options = string_options(raw.options.as_ref());
            let gateway =
                options.get("RequestAddressType").map(String::as_str) == Some(GATEWAY_REQUEST);
            let address = match raw.address.as_str() {
                "" => None,
                a => Some(
                    a.parse::<Ipv4Addr>()
                        .map_err(|_| refused(format!("vxtap: {a:?} is not an IPv4 address")))?,
                ),
            };
            Call::RequestAddress {
                pool: raw.pool_id,
                address,
                gateway,
            }
        }
        "IpamDriver.ReleaseAddress" => Call::ReleaseAddress {
            pool: raw.pool_id,
            address: raw
                .address
                .parse()
                .map_err(|_| refused(format!("vxtap: {:?} is not an IPv4 address", raw.address)))?,
        },
        other => {
            return Err(refused(format!(
                "vxtap does not implement {}",
                crate::cluster::validate::escape(other)
            )))
        }
    })
}

/// The string values of an options map (Docker sends strings; anything else is skipped).
fn string_options(options: Option<&Map<String, Value>>) -> BTreeMap<String, String> {
    options
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
        .collect()
}

fn request_pool(raw: Raw) -> Result<RequestPool, Refused> {
    if raw.v6 {
        return Err(refused(
            "vxtap networks are IPv4 only: leave out --ipv6 and IPv6 subnets",
        ));
    }
    if !raw.sub_pool.is_empty() {
        return Err(refused(
            "vxtap allocates from the whole subnet: --ip-range is not supported",
        ));
    }
    let mut options = string_options(raw.options.as_ref());
    let attach = options.remove(OPT_NETWORK);
    if let Some(unknown) = options.keys().next() {
        return Err(refused(format!(
            "vxtap IPAM has no option {}",
            crate::cluster::validate::escape(unknown)
        )));
    }
    let subnet = match raw.pool.as_str() {
        "" => None,
        pool => Some(
            pool.parse::<Subnet>()
                .map_err(|e| refused(format!("vxtap: subnet {pool}: {e}")))?,
        ),
    };
    Ok(RequestPool { subnet, attach })
}

/// A Docker network or endpoint id: 64 lowercase hex digits, as Docker makes them.
fn docker_id(what: &str, id: &str) -> Result<String, Refused> {
    if crate::cluster::validate::is_id(id) {
        Ok(id.to_owned())
    } else {
        Err(refused(format!(
            "vxtap: Docker {what} id {} is not 64 hex digits",
            crate::cluster::validate::escape(id)
        )))
    }
}

fn create_network(raw: Raw) -> Result<CreateNetwork, Refused> {
    let network = docker_id("network", &raw.network_id)?;
    if raw.ipv6_data.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(refused(
            "vxtap networks are IPv4 only: leave out --ipv6 and IPv6 subnets",
        ));
    }
    let data = raw.ipv4_data.unwrap_or_default();
    let [data] = data.as_slice() else {
        return Err(refused(format!(
            "vxtap networks have exactly one IPv4 subnet, not {}",
            data.len()
        )));
    };
    if data.address_space != ADDRESS_SPACE {
        return Err(refused(
            "vxtap networks need vxtap's IPAM, which keeps addresses unique across hosts: add --ipam-driver vxtap",
        ));
    }
    if data.aux_addresses.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(refused("vxtap does not support --aux-address"));
    }
    let subnet: Subnet = data
        .pool
        .parse()
        .map_err(|e| refused(format!("vxtap: pool {}: {e}", data.pool)))?;
    let gateway = match data.gateway.as_str() {
        "" => None,
        g => Some(cidr_address(g)?.0),
    };
    let generic = raw
        .options
        .as_ref()
        .and_then(|o| o.get(GENERIC))
        .and_then(Value::as_object);
    let mut options = string_options(generic);
    let number = |options: &mut BTreeMap<String, String>, key: &str| {
        options
            .remove(key)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| refused(format!("vxtap: option {key}={v:?} is not a number")))
            })
            .transpose()
    };
    let vni = number(&mut options, OPT_VNI)?;
    let mtu = number(&mut options, OPT_MTU)?;
    let attach = options.remove(OPT_NETWORK);
    if let Some(unknown) = options.keys().next() {
        return Err(refused(format!(
            "vxtap has no option {} (it takes {OPT_VNI}, {OPT_MTU})",
            crate::cluster::validate::escape(unknown)
        )));
    }
    Ok(CreateNetwork {
        network,
        subnet,
        gateway,
        vni,
        mtu,
        attach,
    })
}

/// `a.b.c.d/len` (or a bare address) as Docker writes addresses.
///
/// # Errors
///
/// Anything else.
pub fn cidr_address(text: &str) -> Result<(Ipv4Addr, Option<u8>), Refused> {
    let bad = || refused(format!("vxtap: {text:?} is not an IPv4 address"));
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    Ok((ip.parse().map_err(|_| bad())?, len))
}

/// The answer to a call that succeeded with nothing to say.
pub fn empty() -> Value {
    json!({})
}

/// `Plugin.Activate`: both drivers.
pub fn activated() -> Value {
    json!({ "Implements": ["NetworkDriver", "IpamDriver"] })
}

/// `NetworkDriver.GetCapabilities`: networks are local to each engine as far as Docker
/// knows (a "global" scope needs swarm); vxtap itself creates them in every engine.
pub fn network_capabilities() -> Value {
    json!({ "Scope": "local", "ConnectivityScope": "local" })
}

/// `IpamDriver.GetCapabilities`.
pub fn ipam_capabilities() -> Value {
    json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false })
}

/// `IpamDriver.GetDefaultAddressSpaces`.
pub fn address_spaces() -> Value {
    json!({
        "LocalDefaultAddressSpace": ADDRESS_SPACE,
        "GlobalDefaultAddressSpace": ADDRESS_SPACE,
    })
}

/// `IpamDriver.RequestPool`: the pool id is the subnet itself (subnets never overlap).
pub fn pool(subnet: &Subnet) -> Value {
    json!({ "PoolID": subnet.to_string(), "Pool": subnet.to_string(), "Data": {} })
}

/// `IpamDriver.RequestAddress`.
pub fn address(ip: Ipv4Addr, prefix: u8) -> Value {
    json!({ "Address": format!("{ip}/{prefix}"), "Data": {} })
}

/// `NetworkDriver.CreateEndpoint`: the MAC vxtap derived (Docker applies it).
pub fn endpoint(mac: &str) -> Value {
    json!({ "Interface": { "MacAddress": mac } })
}

/// `NetworkDriver.Join`: the veth end Docker moves into the container as `ethN`, and the
/// gateway, so Docker adds no gateway bridge of its own and the container's default route
/// goes through the overlay, where vxtap's resolver answers. (No static route to the
/// resolver: Docker fails the second network's Join of a container with "file exists".)
pub fn joined(source: &str, gateway: Ipv4Addr) -> Value {
    json!({
        "InterfaceName": { "SrcName": source, "DstPrefix": "eth" },
        "Gateway": gateway.to_string(),
    })
}

/// `NetworkDriver.EndpointOperInfo`.
pub fn oper_info() -> Value {
    json!({ "Value": {} })
}

/// An error answer in the form `api` reads.
pub fn error(api: Api, message: &str) -> Value {
    match api {
        Api::Network => json!({ "Err": message }),
        Api::Ipam => json!({ "Error": message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What dockerd 20.10 sent for `docker network create -d vxtap --ipam-driver vxtap
    /// --subnet 10.22.0.0/24 -o vxtap.vni=77 -o com.docker.network.driver.mtu=1400 n`
    /// (captured; the ids shortened).
    const CREATE: &str = r#"{"NetworkID":"4a3b000000000000000000000000000000000000000000000000000000000000","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"com.docker.network.driver.mtu":"1400","vxtap.vni":"77"}},"IPv4Data":[{"AddressSpace":"vxtap","Gateway":"10.22.0.1/24","Pool":"10.22.0.0/24"}],"IPv6Data":[]}"#;

    #[test]
    fn decodes_create_network_with_its_options() {
        let call = decode("/NetworkDriver.CreateNetwork", CREATE.as_bytes()).unwrap();
        assert_eq!(
            call,
            Call::CreateNetwork(CreateNetwork {
                network: format!("4a3b{}", "0".repeat(60)),
                subnet: "10.22.0.0/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(10, 22, 0, 1)),
                vni: Some(77),
                mtu: Some(1400),
                attach: None,
            })
        );
    }

    #[test]
    fn refuses_what_vxtap_cannot_do() {
        let cases = [
            (
                CREATE.replace(r#""vxtap.vni":"77""#, r#""vxtap.vni":"77","color":"red""#),
                "no option color",
            ),
            (
                CREATE.replace(r#""vxtap.vni":"77""#, r#""vxtap.vni":"seven""#),
                "not a number",
            ),
            (
                CREATE.replace(
                    r#""AddressSpace":"vxtap""#,
                    r#""AddressSpace":"LocalDefault""#,
                ),
                "--ipam-driver vxtap",
            ),
            (
                CREATE.replace(r#""IPv6Data":[]"#, r#""IPv6Data":[{"Pool":"fd00::/64"}]"#),
                "IPv4 only",
            ),
            (
                CREATE.replace(
                    r#""Pool":"10.22.0.0/24"}"#,
                    r#""Pool":"10.22.0.0/24","AuxAddresses":{"a":"10.22.0.9/24"}}"#,
                ),
                "--aux-address",
            ),
            (
                CREATE.replace(r#""IPv4Data":["#, r#""IPv4Data":[{},"#),
                "exactly one",
            ),
        ];
        for (body, reason) in cases {
            let err = decode("/NetworkDriver.CreateNetwork", body.as_bytes()).unwrap_err();
            assert!(err.0.contains(reason), "{body}: {err} lacks {reason:?}");
        }
        for (body, reason) in [
            (r#"{"V6":true}"#, "IPv4 only"),
            (
                r#"{"Pool":"10.0.0.0/16","SubPool":"10.0.1.0/24"}"#,
                "--ip-range",
            ),
            (r#"{"Pool":"10.0.0.0/33"}"#, "subnet 10.0.0.0/33"),
            (r#"{"Options":{"x":"y"}}"#, "no option x"),
        ] {
            let err = decode("/IpamDriver.RequestPool", body.as_bytes()).unwrap_err();
            assert!(err.0.contains(reason), "{body}: {err} lacks {reason:?}");
        }
        let err = decode("/NetworkDriver.Frobnicate", b"{}").unwrap_err();
        assert!(err.0.contains("does not implement"), "{err}");
        let err = decode("/NetworkDriver.Join", b"{\"NetworkID\":").unwrap_err();
        assert!(err.0.contains("malformed"), "{err}");
        let err = decode(
            "/NetworkDriver.Join",
            br#"{"NetworkID":"../x","EndpointID":"e"}"#,
        )
        .unwrap_err();
        assert!(err.0.contains("is not 64 hex digits"), "{err}");
    }

    #[test]
    fn decodes_ipam_calls_as_docker_sends_them() {
        let gw = decode(
            "/IpamDriver.RequestAddress",
            br#"{"PoolID":"10.22.0.0/24","Address":"10.22.0.1","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        )
        .unwrap();
        assert_eq!(
            gw,
            Call::RequestAddress {
                pool: "10.22.0.0/24".into(),
                address: Some(Ipv4Addr::new(10, 22, 0, 1)),
                gateway: true
            }
        );
        let any = decode(
            "/IpamDriver.RequestAddress",
            br#"{"PoolID":"10.22.0.0/24","Address":"","Options":null}"#,
        )
        .unwrap();
        assert_eq!(
            any,
            Call::RequestAddress {
                pool: "10.22.0.0/24".into(),
                address: None,
                gateway: false
            }
        );
        let pool = decode(
            "/IpamDriver.RequestPool",
            br#"{"AddressSpace":"vxtap","Pool":"","SubPool":"","Options":{"vxtap.network":"ab"},"V6":false}"#,
        )
        .unwrap();
        assert_eq!(
            pool,
            Call::RequestPool(RequestPool {
                subnet: None,
                attach: Some("ab".into())
            })
        );
        assert_eq!(decode("/Plugin.Activate", b"").unwrap(), Call::Activate);
        assert!(decode(
            "/IpamDriver.ReleaseAddress",
            br#"{"PoolID":"p","Address":"x"}"#
        )
        .is_err());
    }

    #[test]
    fn answers_in_the_form_each_api_reads() {
        assert_eq!(error(Api::Ipam, "no").to_string(), r#"{"Error":"no"}"#);
        assert_eq!(error(Api::Network, "no").to_string(), r#"{"Err":"no"}"#);
        assert_eq!(api_of("/IpamDriver.RequestPool"), Some(Api::Ipam));
        assert_eq!(api_of("/Plugin.Activate"), Some(Api::Network));
        assert_eq!(api_of("/VolumeDriver.Mount"), None);
        let j = joined("vd01234567", Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(j["InterfaceName"]["SrcName"], "vd01234567");
        assert_eq!(j["Gateway"], "10.0.0.1");
        assert_eq!(
            cidr_address("10.0.0.2/24").unwrap(),
            (Ipv4Addr::new(10, 0, 0, 2), Some(24))
        );
        assert!(cidr_address("10.0.0.2/x").is_err());
    }
}

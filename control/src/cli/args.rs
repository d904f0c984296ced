//! Parses the iproute2-shaped argument lists of `vxtap link`, `vxtap fdb` and `vxtap neigh`
//! into requests. Pure: no I/O. Everything a user can get wrong here gets a one-line error
//! naming the word at fault, before the daemon is asked anything.

use crate::api::{FdbMode, FdbSpec, LinkSpec, Request};
use std::net::Ipv4Addr;
use std::str::FromStr;
use vxtap_dataplane::wire::{MacAddr, Vni};

/// A command line that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// No subcommand, or one we do not know.
    #[error("expected one of: {expected} (got {got:?})")]
    Command {
        /// What would have been valid.
        expected: &'static str,
        /// What was given.
        got: Option<String>,
    },
    /// A keyword without its value.
    #[error("{0:?} needs a value")]
    MissingValue(String),
    /// A word that is not a keyword here.
    #[error("unknown argument {0:?}")]
    Unknown(String),
    /// A keyword given twice.
    #[error("{0:?} given twice")]
    Repeated(String),
    /// A required part is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A value of the wrong shape.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// As given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
}

fn invalid(what: &'static str, value: &str, why: impl ToString) -> ArgError {
    ArgError::Invalid {
        what,
        value: value.to_owned(),
        why: why.to_string(),
    }
}

/// A parsed command: the request, and whether to print JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// What to ask the daemon.
    pub request: Request,
    /// `-j` / `--json` was given.
    pub json: bool,
}

/// Walks keyword/value pairs, remembering which keywords were seen.
struct Words<'a> {
    words: std::slice::Iter<'a, String>,
    seen: Vec<&'a str>,
}

impl<'a> Words<'a> {
    fn new(words: &'a [String]) -> Self {
        Words {
            words: words.iter(),
            seen: Vec::new(),
        }
    }

    fn next(&mut self) -> Option<&'a str> {
        self.words.next().map(String::as_str)
    }

    /// The value after `keyword`, refusing repeats.
    fn value(&mut self, keyword: &'a str) -> Result<&'a str, ArgError> {
        if self.seen.contains(&keyword) {
            return Err(ArgError::Repeated(keyword.to_owned()));
        }
        self.seen.push(keyword);
        self.next()
            .ok_or_else(|| ArgError::MissingValue(keyword.to_owned()))
    }
}

fn is_json(word: &str) -> bool {
    matches!(word, "-j" | "-json" | "--json")
}

fn number<T: FromStr>(what: &'static str, value: &str) -> Result<T, ArgError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| invalid(what, value, e))
}

fn vni(value: &str) -> Result<u32, ArgError> {
    value
        .parse::<Vni>()
        .map(Vni::get)
        .map_err(|e| invalid("VNI", value, e))
}

fn ip(what: &'static str, value: &str) -> Result<Ipv4Addr, ArgError> {
    value
        .parse()
        .map_err(|_| invalid(what, value, "not an IPv4 address"))
}

fn mac(value: &str) -> Result<MacAddr, ArgError> {
    value.parse().map_err(|_| {
        invalid(
            "MAC",
            value,
            "expected six hex bytes like 02:42:0a:00:00:02",
        )
    })
}

fn port(value: &str) -> Result<u16, ArgError> {
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid("port", value, "expected 1-65535")),
        Ok(p) => Ok(p),
    }
}

fn name(value: &str) -> Result<String, ArgError> {
    let ok = !value.is_empty()
        && value.len() <= 15
        && value != "."
        && value != ".."
        && !value.contains(['/', ':'])
        && !value.chars().any(char::is_whitespace);
    if ok {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            "device name",
            value,
            "need 1-15 characters, no '/', ':' or spaces",
        ))
    }
}

/// The words after `fdb show` or `neigh show`: `[dev NAME] [-j]` (`br` is `bridge fdb`'s
/// alias for `dev`).
fn show_args(w: &mut Words<'_>) -> Result<(Option<String>, bool), ArgError> {
    let (mut dev, mut json) = (None, false);
    while let Some(word) = w.next() {
        match word {
            "dev" | "br" => dev = Some(name(w.value(word)?)?),
            w if is_json(w) => json = true,
            other => return Err(ArgError::Unknown(other.to_owned())),
        }
    }
    Ok((dev, json))
}

/// Defaults of `link add`: those of `ip link add ... type vxlan`, except where vxtap's
/// switch needs a bound (`maxaddress`) or Docker's overlay sets a value (`mtu 1450`).
pub const DEFAULT_AGEING: u64 = 300;
/// Default cap on learned entries per link.
pub const DEFAULT_MAXADDRESS: usize = 4096;
/// Default TAP MTU: 1500 minus the 50 bytes of VXLAN over IPv4 (the overlay networks' too).
pub use crate::cluster::DEFAULT_MTU;

/// `vxtap link add|del|show ...`
pub fn link(args: &[String]) -> Result<Command, ArgError> {
    let mut w = Words::new(args);
    let mut json = false;
    match w.next() {
        Some("add") => {
            let mut spec = LinkSpec {
                name: String::new(),
                vni: u32::MAX,
                local: None,
                dstport: vxtap_dataplane::wire::vxlan::DEFAULT_PORT,
                netns: None,
                proxy: false,
                learning: true,
                ageing: DEFAULT_AGEING,
                maxaddress: DEFAULT_MAXADDRESS,
                mtu: DEFAULT_MTU,
                admit_any: false,
                offload: true,
            };
            let mut named = false;
            while let Some(word) = w.next() {
                match word {
                    "id" | "vni" => spec.vni = vni(w.value("id")?)?,
                    "local" => spec.local = Some(ip("local address", w.value(word)?)?),
                    "dstport" => spec.dstport = port(w.value(word)?)?,
                    "netns" => spec.netns = Some(w.value(word)?.to_owned()),
                    "proxy" => spec.proxy = true,
                    "noproxy" => spec.proxy = false,
                    "learning" => spec.learning = true,
                    "nolearning" => spec.learning = false,
                    "ageing" => spec.ageing = number("ageing", w.value(word)?)?,
                    "maxaddress" => spec.maxaddress = number("maxaddress", w.value(word)?)?,
                    "mtu" => spec.mtu = number("mtu", w.value(word)?)?,
                    "admit" => match w.value(word)? {
                        "any" => spec.admit_any = true,
                        "known" => spec.admit_any = false,
                        other => return Err(invalid("admit", other, "expected any or known")),
                    },
                    "offload" => match w.value(word)? {
                        "on" => spec.offload = true,
                        "off" => spec.offload = false,
                        other => return Err(invalid("offload", other, "expected on or off")),
                    },
                    "type" => match w.value(word)? {
                        "vxlan" => {}
                        other => return Err(invalid("type", other, "vxtap links are vxlan")),
                    },
                    "name" | "dev" if !named => {
                        spec.name = name(w.value(word)?)?;
                        named = true;
                    }
                    w if is_json(w) => json = true,
                    other if !named && !other.starts_with('-') => {
                        spec.name = name(other)?;
                        named = true;
                    }
                    other => return Err(ArgError::Unknown(other.to_owned())),
                }
            }
            if !named {
                return Err(ArgError::Missing("link name"));
            }
            if spec.vni == u32::MAX {
                return Err(ArgError::Missing("VNI (id N)"));
            }
            Ok(Command {
                request: Request::LinkAdd { spec },
                json,
            })
        }
        Some(op @ ("del" | "delete" | "show" | "list" | "ls")) => {
            let mut target = None;
            while let Some(word) = w.next() {
                match word {
                    w if is_json(w) => json = true,
                    "dev" | "name" if target.is_none() => target = Some(name(w.value(word)?)?),
                    other if target.is_none() && !other.starts_with('-') => {
                        target = Some(name(other)?)
                    }
                    other => return Err(ArgError::Unknown(other.to_owned())),
                }
            }
            let request = if op.starts_with("del") {
                Request::LinkDel {
                    name: target.ok_or(ArgError::Missing("link name"))?,
                }
            } else {
                Request::LinkShow { name: target }
            };
            Ok(Command { request, json })
        }
        other => Err(ArgError::Command {
            expected: "add, del, show",
            got: other.map(str::to_owned),
        }),
    }
}

/// `vxtap fdb add|append|replace|del|show ...`, as `bridge fdb ... self` means them.
pub fn fdb(args: &[String]) -> Result<Command, ArgError> {
    let mut w = Words::new(args);
    let mut json = false;
    let op = w.next();
    if matches!(op, Some("show" | "list" | "ls")) {
        let (dev, json) = show_args(&mut w)?;
        return Ok(Command {
            request: Request::FdbShow { dev },
            json,
        });
    }
    let mode = match op {
        Some("add") => Some(FdbMode::Add),
        Some("append") => Some(FdbMode::Append),
        Some("replace") => Some(FdbMode::Replace),
        Some("del" | "delete") => None,
        other => {
            return Err(ArgError::Command {
                expected: "add, append, replace, del, show",
                got: other.map(str::to_owned),
            })
        }
    };
    let address = mac(w.next().ok_or(ArgError::Missing("MAC address"))?)?;
    if address.is_multicast() {
        return Err(invalid(
            "MAC",
            &address.to_string(),
            "multicast and broadcast MACs cannot be fdb entries",
        ));
    }
    let mut entry = FdbSpec {
        mac: address.to_string(),
        dev: String::new(),
        dst: None,
        vni: None,
        port: None,
    };
    while let Some(word) = w.next() {
        match word {
            "dev" => entry.dev = name(w.value(word)?)?,
            "dst" => entry.dst = Some(ip("dst address", w.value(word)?)?),
            "vni" => entry.vni = Some(vni(w.value(word)?)?),
            "port" | "dstport" => entry.port = Some(port(w.value("port")?)?),
            // `bridge fdb` words that mean nothing else for a vxlan device.
            "self" | "permanent" | "static" => {}
            w if is_json(w) => json = true,
            other => return Err(ArgError::Unknown(other.to_owned())),
        }
    }
    if entry.dev.is_empty() {
        return Err(ArgError::Missing("dev NAME"));
    }
    let flood = address.is_zero();
    let request = match mode {
        Some(mode) => {
            if entry.dst.is_none() {
                return Err(ArgError::Missing("dst IP"));
            }
            if mode == FdbMode::Append && !flood {
                return Err(invalid(
                    "MAC",
                    &entry.mac,
                    "append builds the flood list and takes 00:00:00:00:00:00; use add or replace",
                ));
            }
            Request::FdbAdd { entry, mode }
        }
        // Without dst, the all-zeros MAC deletes the whole flood list, as the kernel's does.
        None => Request::FdbDel { entry },
    };
    Ok(Command { request, json })
}

/// `vxtap neigh add|replace|del|show ...`, as `ip neigh ... nud permanent` means them.
pub fn neigh(args: &[String]) -> Result<Command, ArgError> {
    let mut w = Words::new(args);
    let mut json = false;
    let op = w.next();
    if matches!(op, Some("show" | "list" | "ls")) {
        let (dev, json) = show_args(&mut w)?;
        return Ok(Command {
            request: Request::NeighShow { dev },
            json,
        });
    }
    let add = match op {
        Some("add" | "replace") => true,
        Some("del" | "delete") => false,
        other => {
            return Err(ArgError::Command {
                expected: "add, replace, del, show",
                got: other.map(str::to_owned),
            })
        }
    };
    let address = ip(
        "IP address",
        w.next().ok_or(ArgError::Missing("IP address"))?,
    )?;
    let mut lladdr = None;
    let mut dev = None;
    while let Some(word) = w.next() {
        match word {
            "lladdr" => lladdr = Some(mac(w.value(word)?)?),
            "dev" => dev = Some(name(w.value(word)?)?),
            "nud" => match w.value(word)? {
                "permanent" | "noarp" => {}
                other => return Err(invalid("nud", other, "vxtap proxy entries are permanent")),
            },
            w if is_json(w) => json = true,
            other => return Err(ArgError::Unknown(other.to_owned())),
        }
    }
    let dev = dev.ok_or(ArgError::Missing("dev NAME"))?;
    let request = if add {
        let lladdr = lladdr.ok_or(ArgError::Missing("lladdr MAC"))?;
        if !lladdr.is_unicast() {
            return Err(invalid(
                "lladdr",
                &lladdr.to_string(),
                "must be a unicast MAC",
            ));
        }
        Request::NeighAdd {
            ip: address,
            mac: lladdr.to_string(),
            dev,
        }
    } else {
        Request::NeighDel { ip: address, dev }
    };
    Ok(Command { request, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn link_add_takes_the_kernel_recipe() {
        let c = link(&words(
            "add vxlan1 id 42 proxy learning dstport 4789 netns ov1",
        ))
        .unwrap();
        let Request::LinkAdd { spec } = c.request else {
            panic!("{c:?}")
        };
        assert_eq!(
            (spec.name.as_str(), spec.vni, spec.dstport),
            ("vxlan1", 42, 4789)
        );
        assert_eq!(spec.netns.as_deref(), Some("ov1"));
        assert!(spec.proxy && spec.learning && !spec.admit_any && spec.offload);
        assert_eq!((spec.mtu, spec.ageing, spec.maxaddress), (1450, 300, 4096));
        let c = link(&words("add name vx2 type vxlan id 7 local 198.18.0.1 nolearning ageing 10 maxaddress 5 mtu 1400 admit any offload off -j")).unwrap();
        let Request::LinkAdd { spec } = c.request else {
            panic!()
        };
        assert_eq!(spec.local, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert!(!spec.learning && spec.admit_any && !spec.offload && c.json);
        assert_eq!((spec.ageing, spec.maxaddress, spec.mtu), (10, 5, 1400));
    }

    #[test]
    fn link_errors_name_the_problem() {
        let cases = [
            ("add vxlan1", "missing VNI (id N)"),
            ("add id 42", "missing link name"),
            ("add vxlan1 id 16777216", "invalid VNI \"16777216\""),
            ("add vxlan1 id 42 local 1.2.3", "invalid local address"),
            ("add vxlan1 id 42 dstport 0", "invalid port"),
            ("add vxlan1 id 42 id 43", "\"id\" given twice"),
            ("add vxlan1 id", "\"id\" needs a value"),
            ("add vxlan1 id 42 bogus", "unknown argument \"bogus\""),
            ("add this-name-is-too-long id 42", "invalid device name"),
            ("frob", "expected one of: add, del, show"),
            ("del", "missing link name"),
        ];
        for (args, expected) in cases {
            let err = link(&words(args)).unwrap_err().to_string();
            assert!(err.contains(expected), "{args}: {err}");
        }
    }

    #[test]
    fn link_show_and_del() {
        assert_eq!(
            link(&words("show")).unwrap().request,
            Request::LinkShow { name: None }
        );
        let c = link(&words("show vxlan1 -j")).unwrap();
        assert_eq!(
            (c.request, c.json),
            (
                Request::LinkShow {
                    name: Some("vxlan1".into())
                },
                true
            )
        );
        assert_eq!(
            link(&words("del vxlan1")).unwrap().request,
            Request::LinkDel {
                name: "vxlan1".into()
            }
        );
    }

    #[test]
    fn fdb_follows_bridge_fdb() {
        let c = fdb(&words(
            "add 02:42:0a:00:00:03 dev vxlan1 self dst 198.18.0.2 vni 42 port 4789",
        ))
        .unwrap();
        let Request::FdbAdd { entry, mode } = c.request else {
            panic!()
        };
        assert_eq!(mode, FdbMode::Add);
        assert_eq!(
            (entry.dst, entry.vni, entry.port),
            (Some(Ipv4Addr::new(198, 18, 0, 2)), Some(42), Some(4789))
        );
        let c = fdb(&words("append 00:00:00:00:00:00 dev vxlan1 dst 198.18.0.3")).unwrap();
        assert!(matches!(
            c.request,
            Request::FdbAdd {
                mode: FdbMode::Append,
                ..
            }
        ));
        assert!(matches!(
            fdb(&words("del 02:42:0a:00:00:03 dev vxlan1"))
                .unwrap()
                .request,
            Request::FdbDel { .. }
        ));
        assert_eq!(
            fdb(&words("show dev vxlan1 -j")).unwrap().request,
            Request::FdbShow {
                dev: Some("vxlan1".into())
            }
        );
    }

    #[test]
    fn fdb_errors_name_the_problem() {
        let cases = [
            (
                "add 01:00:5e:00:00:01 dev vxlan1 dst 198.18.0.2",
                "multicast",
            ),
            (
                "add ff:ff:ff:ff:ff:ff dev vxlan1 dst 198.18.0.2",
                "multicast",
            ),
            (
                "add 02:42:0a:00:00 dev vxlan1 dst 198.18.0.2",
                "invalid MAC",
            ),
            ("add 02:42:0a:00:00:03 dst 198.18.0.2", "missing dev NAME"),
            ("add 02:42:0a:00:00:03 dev vxlan1", "missing dst IP"),
            (
                "add 02:42:0a:00:00:03 dev vxlan1 dst 198.18.0.300",
                "invalid dst address",
            ),
            (
                "add 02:42:0a:00:00:03 dev vxlan1 dst 198.18.0.2 vni 16777216",
                "invalid VNI",
            ),
            (
                "append 02:42:0a:00:00:03 dev vxlan1 dst 198.18.0.2",
                "append builds the flood list",
            ),
        ];
        for (args, expected) in cases {
            let err = fdb(&words(args)).unwrap_err().to_string();
            assert!(err.contains(expected), "{args}: {err}");
        }
        // Without dst, the whole flood list.
        assert!(matches!(
            fdb(&words("del 00:00:00:00:00:00 dev vxlan1"))
                .unwrap()
                .request,
            Request::FdbDel {
                entry: FdbSpec { dst: None, .. }
            }
        ));
    }

    #[test]
    fn neigh_follows_ip_neigh() {
        let c = neigh(&words(
            "add 10.0.0.3 lladdr 02:42:0a:00:00:03 dev vxlan1 nud permanent",
        ))
        .unwrap();
        assert_eq!(
            c.request,
            Request::NeighAdd {
                ip: Ipv4Addr::new(10, 0, 0, 3),
                mac: "02:42:0a:00:00:03".into(),
                dev: "vxlan1".into()
            }
        );
        assert!(matches!(
            neigh(&words("del 10.0.0.3 dev vxlan1")).unwrap().request,
            Request::NeighDel { .. }
        ));
        for (args, expected) in [
            ("add 10.0.0.3 dev vxlan1", "missing lladdr"),
            (
                "add 10.0.0 lladdr 02:42:0a:00:00:03 dev vxlan1",
                "invalid IP address",
            ),
            (
                "add 10.0.0.3 lladdr ff:ff:ff:ff:ff:ff dev vxlan1",
                "unicast",
            ),
            ("add 10.0.0.3 lladdr 02:42:0a:00:00:03", "missing dev NAME"),
            (
                "add 10.0.0.3 lladdr 02:42:0a:00:00:03 dev vxlan1 nud reachable",
                "permanent",
            ),
        ] {
            let err = neigh(&words(args)).unwrap_err().to_string();
            assert!(err.contains(expected), "{args}: {err}");
        }
    }
}

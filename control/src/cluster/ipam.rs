//! IPv4 subnets and address management: parsing `10.0.0.0/24`, overlap, and the next free
//! subnet, address and VNI. Pure functions over what the store already holds.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: a base address with no host bits set, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    base: Ipv4Addr,
    len: u8,
}

/// Why a subnet string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// Not `A.B.C.D/LEN`.
    #[error("{0:?} is not a subnet (expected A.B.C.D/LEN, e.g. 10.0.1.0/24)")]
    Syntax(String),
    /// A prefix length outside 8..=30: too big to be an overlay, or too small for a gateway
    /// and endpoints.
    #[error("subnet {0}: the prefix length must be between 8 and 30")]
    Length(String),
    /// Host bits are set.
    #[error("{given} is not a network address (did you mean {suggested}?)")]
    HostBits {
        /// What the user typed.
        given: String,
        /// The network it lies in.
        suggested: Subnet,
    },
}

impl Subnet {
    /// Longest prefix allowed: a /30 still holds a gateway and one endpoint.
    pub const MAX_LEN: u8 = 30;
    /// Shortest prefix allowed.
    pub const MIN_LEN: u8 = 8;

    /// The subnet `base/len`.
    ///
    /// # Errors
    ///
    /// `Length` or `HostBits`.
    pub fn new(base: Ipv4Addr, len: u8) -> Result<Subnet, SubnetError> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(SubnetError::Length(format!("{base}/{len}")));
        }
        let subnet = Subnet {
            base: Ipv4Addr::from(u32::from(base) & mask(len)),
            len,
        };
        if subnet.base != base {
            return Err(SubnetError::HostBits {
                given: format!("{base}/{len}"),
                suggested: subnet,
            });
        }
        Ok(subnet)
    }

    /// Its network address.
    pub fn base(&self) -> Ipv4Addr {
        self.base
    }

    /// Its prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Its broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) | !mask(self.len))
    }

    /// The first usable address (the default gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// Whether `ip` lies in the subnet (network and broadcast addresses included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.base)
    }

    /// Whether `ip` is in the subnet and is neither its network nor broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.base && ip != self.broadcast()
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let len = self.len.min(other.len);
        u32::from(self.base) & mask(len) == u32::from(other.base) & mask(len)
    }

    /// Host addresses in order, first to last.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.base) + 1;
        let last = u32::from(self.broadcast()) - 1;
        (first..=last).map(Ipv4Addr::from)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(s: &str) -> Result<Subnet, SubnetError> {
        let syntax = || SubnetError::Syntax(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let base: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let len: u8 = len.parse().map_err(|_| syntax())?;
        Subnet::new(base, len)
    }
}

impl serde::Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Subnet, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where subnets come from when `network create` is not given one: /24s out of 10.0.0.0/8,
/// as Docker's default overlay pool.
pub const DEFAULT_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 0, 0), 8);
/// Size of an allocated subnet.
pub const DEFAULT_SUBNET_LEN: u8 = 24;

/// The first /24 of the default pool that overlaps none of `taken`.
pub fn next_subnet<'a>(taken: impl Iterator<Item = &'a Subnet> + Clone) -> Option<Subnet> {
    let (pool, pool_len) = DEFAULT_POOL;
    let count = 1u32 << (DEFAULT_SUBNET_LEN - pool_len);
    (0..count)
        .map(|i| {
            let base = u32::from(pool) + (i << (32 - u32::from(DEFAULT_SUBNET_LEN)));
            Subnet {
                base: Ipv4Addr::from(base),
                len: DEFAULT_SUBNET_LEN,
            }
        })
        .find(|candidate| !taken.clone().any(|t| t.overlaps(candidate)))
}

/// The lowest host address of `subnet` that is not in `taken`.
pub fn next_address(subnet: &Subnet, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    let taken: std::collections::HashSet<Ipv4Addr> = taken.iter().copied().collect();
    free_address(subnet, &taken, 0)
}

/// The first host address of `subnet` not in `taken`, searching from the `start`th host
/// address (modulo their number) upwards and wrapping around: `start` 0 is the lowest free
/// address; a random `start` spreads hosts that allocate at the same moment over the subnet,
/// so they do not all claim the same address. One pass over the subnet at most.
pub fn free_address(
    subnet: &Subnet,
    taken: &std::collections::HashSet<Ipv4Addr>,
    start: u32,
) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.base) + 1;
    let count = u32::from(subnet.broadcast()) - first;
    if count == 0 {
        return None;
    }
    let start = start % count;
    (start..count)
        .chain(0..start)
        .map(|offset| Ipv4Addr::from(first + offset))
        .find(|ip| !taken.contains(ip))
}

/// First VNI handed out automatically (Docker's overlay driver starts at 4096 too, leaving
/// the low range for hand-made networks).
pub const FIRST_AUTO_VNI: u32 = 4096;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = vxtap_dataplane::wire::Vni::MAX.get();

/// The lowest VNI from [`FIRST_AUTO_VNI`] up that is not in `taken`.
pub fn next_vni(taken: &[u32]) -> Option<u32> {
    (FIRST_AUTO_VNI..=MAX_VNI).find(|v| !taken.contains(v))
}

/// The MAC Docker derives from an IPv4 address: 02:42 followed by the address.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_refuses() {
        let s = subnet("10.22.1.0/24");
        assert_eq!(s.base(), Ipv4Addr::new(10, 22, 1, 0));
        assert_eq!(s.prefix_len(), 24);
        assert_eq!(s.to_string(), "10.22.1.0/24");
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 22, 1, 255));
        assert_eq!(s.first_host(), Ipv4Addr::new(10, 22, 1, 1));
        for bad in [
            "10.22.1.0",
            "10.22.1.0/",
            "10.22.1/24",
            "x/24",
            "10.0.0.0/+8",
            "10.0.0.0/024",
        ] {
            assert!(
                matches!(bad.parse::<Subnet>(), Err(SubnetError::Syntax(_))),
                "{bad}"
            );
        }
        for bad in ["10.0.0.0/7", "10.0.0.0/31", "10.0.0.0/32"] {
            assert!(
                matches!(bad.parse::<Subnet>(), Err(SubnetError::Length(_))),
                "{bad}"
            );
        }
        match "10.22.1.5/24".parse::<Subnet>() {
            Err(e @ SubnetError::HostBits { .. }) => {
                assert!(e.to_string().contains("did you mean 10.22.1.0/24"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn membership_and_overlap() {
        let s = subnet("10.22.1.0/24");
        assert!(s.contains(Ipv4Addr::new(10, 22, 1, 0)));
        assert!(!s.is_host(Ipv4Addr::new(10, 22, 1, 0)));
        assert!(!s.is_host(Ipv4Addr::new(10, 22, 1, 255)));
        assert!(s.is_host(Ipv4Addr::new(10, 22, 1, 7)));
        assert!(!s.contains(Ipv4Addr::new(10, 22, 2, 1)));
        assert!(s.overlaps(&subnet("10.22.0.0/16")));
        assert!(subnet("10.22.0.0/16").overlaps(&s));
        assert!(s.overlaps(&subnet("10.22.1.128/25")));
        assert!(!s.overlaps(&subnet("10.22.2.0/24")));
        assert_eq!(subnet("10.0.0.0/30").hosts().count(), 2);
    }

    #[test]
    fn a_free_address_is_searched_from_the_start_and_wraps() {
        let s = subnet("10.0.0.0/29"); // hosts .1 to .6
        let taken: std::collections::HashSet<Ipv4Addr> =
            [1, 5, 6].map(|d| Ipv4Addr::new(10, 0, 0, d)).into();
        let at = |start| free_address(&s, &taken, start);
        assert_eq!(at(0), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(at(2), Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(
            at(4),
            Some(Ipv4Addr::new(10, 0, 0, 2)),
            "wrapped past .5 and .6"
        );
        assert_eq!(
            at(6 + 3),
            Some(Ipv4Addr::new(10, 0, 0, 4)),
            "start modulo 6"
        );
        assert_eq!(at(u32::MAX), at(u32::MAX % 6));
        let full: std::collections::HashSet<Ipv4Addr> = s.hosts().collect();
        assert_eq!(free_address(&s, &full, 3), None);
    }

    #[test]
    fn allocation_skips_what_is_taken() {
        let taken = [subnet("10.0.0.0/24"), subnet("10.0.1.0/25")];
        assert_eq!(next_subnet(taken.iter()), Some(subnet("10.0.2.0/24")));
        assert_eq!(next_subnet([subnet("10.0.0.0/8")].iter()), None);
        let s = subnet("10.0.0.0/30");
        assert_eq!(next_address(&s, &[]), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            next_address(&s, &[Ipv4Addr::new(10, 0, 0, 1)]),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(
            next_address(
                &s,
                &[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
            ),
            None
        );
        assert_eq!(next_vni(&[]), Some(4096));
        assert_eq!(next_vni(&[4096, 4097]), Some(4098));
        assert_eq!(mac_for(Ipv4Addr::new(10, 0, 0, 3)), [2, 0x42, 10, 0, 0, 3]);
    }
}

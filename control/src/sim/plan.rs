//! The simulator's pure part: the records of simulated hosts and their endpoints, the
//! addresses they take, and the commands read from stdin. No I/O and no clock: times and
//! ids come in as arguments.

use crate::cluster::{ipam, Endpoint, Host, Network};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// A simulated host: its record and the lease that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimHost {
    /// Its record (`hosts/NAME`).
    pub record: Host,
    /// The lease its host record and endpoints are bound to.
    pub lease: i64,
    /// Endpoints written for it so far (for the names of the next ones).
    pub endpoints: usize,
}

/// The name of simulated host `index` (from 0): `PREFIX-00001`, ...
pub fn host_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-{:05}", index + 1)
}

/// The VTEP of simulated host `index`: `base` + index + 1, or `None` past the address space.
pub fn host_vtep(base: Ipv4Addr, index: usize) -> Option<Ipv4Addr> {
    let offset = u32::try_from(index).ok()?.checked_add(1)?;
    u32::from(base).checked_add(offset).map(Ipv4Addr::from)
}

/// The record of a simulated host.
pub fn host_record(name: String, vtep: Ipv4Addr, pid: u32, started: u64) -> Host {
    Host {
        name,
        vtep,
        pid,
        started,
    }
}

/// Hands out addresses of a network from the top of its subnet downwards, skipping the
/// gateway and every address already taken: real daemons allocate from the bottom
/// (`ipam::next_address`), so the two meet only when the subnet is full.
#[derive(Debug, Clone)]
pub struct TopDown {
    /// The next candidate, as a number; below `first` when exhausted.
    next: u32,
    first: u32,
    taken: HashSet<Ipv4Addr>,
}

impl TopDown {
    /// An allocator over `network`'s subnet with `taken` in use.
    pub fn new(network: &Network, taken: impl IntoIterator<Item = Ipv4Addr>) -> TopDown {
        let mut taken: HashSet<Ipv4Addr> = taken.into_iter().collect();
        taken.insert(network.gateway);
        TopDown {
            next: u32::from(network.subnet.broadcast()).saturating_sub(1),
            first: u32::from(network.subnet.first_host()),
            taken,
        }
    }

    /// The highest free address, now taken; `None` when the subnet is full.
    pub fn take(&mut self) -> Option<Ipv4Addr> {
        while self.next >= self.first {
            let ip = Ipv4Addr::from(self.next);
            self.next -= 1;
            if self.taken.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    /// Marks `ip` free again (an endpoint was deleted). It is handed out again only if it
    /// is above the current position.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.taken.remove(&ip);
        if u32::from(ip) > self.next {
            self.next = u32::from(ip);
        }
    }
}

/// The MAC vxtap gives `ip`, written as vxtap writes it.
pub fn mac_text(ip: Ipv4Addr) -> String {
    ipam::mac_for(ip)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The record of endpoint `number` (from 0) of `host` on `network`.
pub fn endpoint_record(
    network: &Network,
    host: &Host,
    number: usize,
    ip: Ipv4Addr,
    id: String,
) -> Endpoint {
    Endpoint {
        id,
        network: network.id.clone(),
        name: format!("{}-e{number}", host.name),
        ip,
        mac: mac_text(ip),
        host: host.name.clone(),
        vtep: host.vtep,
        netns: format!("/sim/{}/{number}", host.name),
        ifname: "eth0".to_owned(),
        aliases: Vec::new(),
    }
}

/// A command read from stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimCommand {
    /// `add HOST`: a new endpoint on simulated host HOST (an index from 0).
    Add(usize),
    /// `del KEY`: delete an endpoint (or any key the simulator wrote).
    Del(String),
    /// `kill HOST`: stop refreshing HOST's lease.
    Kill(usize),
    /// `ping`: answers `ok`.
    Ping,
    /// `quit`: revoke every lease and exit.
    Quit,
}

/// Parses one line of stdin.
///
/// # Errors
///
/// What is wrong with it, for the `err` answer.
pub fn parse_command(line: &str) -> Result<SimCommand, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let index = |word: &str| {
        word.parse::<usize>()
            .map_err(|_| format!("{word:?} is not a host index"))
    };
    match words.as_slice() {
        ["add", host] => Ok(SimCommand::Add(index(host)?)),
        ["del", key] => Ok(SimCommand::Del((*key).to_owned())),
        ["kill", host] => Ok(SimCommand::Kill(index(host)?)),
        ["ping"] => Ok(SimCommand::Ping),
        ["quit"] => Ok(SimCommand::Quit),
        _ => Err(format!(
            "unknown command {line:?} (add HOST, del KEY, kill HOST, ping, quit)"
        )),
    }
}

/// Seconds since the Unix epoch with microseconds, as the answers print times.
pub fn seconds_text(micros: u128) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::validate;
    use crate::store::{Entry, Listing};

    fn network() -> Network {
        Network {
            id: "a".repeat(64),
            name: "sim".to_owned(),
            vni: 4200,
            subnet: "10.40.0.0/29".parse().unwrap(),
            gateway: "10.40.0.1".parse().unwrap(),
            mtu: 1450,
            created: 1,
        }
    }

    #[test]
    fn addresses_come_from_the_top_and_skip_taken_ones() {
        let net = network();
        let mut ips = TopDown::new(&net, ["10.40.0.5".parse().unwrap()]);
        let got: Vec<_> = std::iter::from_fn(|| ips.take()).collect();
        let want: Vec<Ipv4Addr> = ["10.40.0.6", "10.40.0.4", "10.40.0.3", "10.40.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want, "the gateway .1 and the taken .5 are skipped");
        ips.release("10.40.0.3".parse().unwrap());
        assert_eq!(ips.take(), Some("10.40.0.3".parse().unwrap()));
        assert_eq!(ips.take(), None);
    }

    #[test]
    fn vteps_and_names_follow_the_index() {
        let base = "100.64.0.0".parse().unwrap();
        assert_eq!(host_vtep(base, 0), Some("100.64.0.1".parse().unwrap()));
        assert_eq!(host_vtep(base, 999), Some("100.64.3.232".parse().unwrap()));
        assert_eq!(host_vtep("255.255.255.255".parse().unwrap(), 0), None);
        assert_eq!(host_name("sim", 0), "sim-00001");
    }

    #[test]
    fn simulated_records_pass_validation() {
        let net = network();
        let host = host_record(host_name("sim", 0), "100.64.0.1".parse().unwrap(), 7, 1);
        let mut ips = TopDown::new(&net, []);
        let endpoints: Vec<Endpoint> = (0..3)
            .map(|n| endpoint_record(&net, &host, n, ips.take().unwrap(), format!("{n:064x}")))
            .collect();
        let mut entries = vec![
            Entry {
                key: net.key(),
                value: serde_json::to_vec(&net).unwrap(),
                created: 1,
            },
            Entry {
                key: host.key(),
                value: serde_json::to_vec(&host).unwrap(),
                created: 2,
            },
        ];
        for (i, e) in endpoints.iter().enumerate() {
            entries.push(Entry {
                key: e.key(),
                value: serde_json::to_vec(e).unwrap(),
                created: 3 + i as i64,
            });
        }
        let checked = validate::check(
            &Listing {
                entries,
                revision: 9,
            },
            &validate::Pins::default(),
        );
        assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
        assert_eq!(checked.snapshot.endpoints.len(), 3);
        assert_eq!(endpoints[0].mac, "02:42:0a:28:00:06");
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse_command("add 3"), Ok(SimCommand::Add(3)));
        assert_eq!(
            parse_command(" del endpoints/x/y "),
            Ok(SimCommand::Del("endpoints/x/y".to_owned()))
        );
        assert_eq!(parse_command("kill 0"), Ok(SimCommand::Kill(0)));
        assert_eq!(parse_command("quit"), Ok(SimCommand::Quit));
        assert_eq!(parse_command("ping"), Ok(SimCommand::Ping));
        for bad in ["", "add", "add -1", "add x", "kill 1 2", "frob"] {
            assert!(parse_command(bad).is_err(), "{bad:?}");
        }
        assert_eq!(seconds_text(1_700_000_000_000_123), "1700000000.000123");
    }
}

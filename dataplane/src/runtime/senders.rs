//! The sockets encapsulated traffic leaves from. RFC 7348 asks for an outer UDP source port
//! derived from the inner flow, so that underlay ECMP and the receiver's RSS spread flows.
//! A UDP socket sends from the one port it is bound to, so the runtime binds a pool of
//! sockets to ports spread evenly over the source range, and sends each datagram through the
//! socket whose port is the nearest at or below the flow's hashed port: one flow, one port
//! (and one socket, so its order holds), and flows spread over the whole pool. Which socket
//! a flow takes is the pipeline's decision (`crate::pipeline::socket_for`).

use super::RuntimeError;
use crate::io::{UdpOffloads, UdpSocket};
use crate::tunnel::PortRange;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Sockets bound to ports spread over a source range, in increasing port order.
pub(crate) struct SourcePool {
    ports: Vec<u16>,
    sockets: Vec<UdpSocket>,
}

impl SourcePool {
    /// Binds up to `count` sockets on `0.0.0.0`, one per slice of `range`; a port already
    /// taken is skipped for the next free one in its slice. Fails only if none can be bound.
    pub(crate) fn bind(range: PortRange, count: usize) -> Result<SourcePool, RuntimeError> {
        let count = count.clamp(1, usize::from(range.max() - range.min()) + 1);
        let mut pool = SourcePool {
            ports: Vec::with_capacity(count),
            sockets: Vec::with_capacity(count),
        };
        let mut last_error = None;
        for i in 0..count {
            let start = slice_start(range, i, count);
            let end = if i + 1 == count {
                range.max()
            } else {
                slice_start(range, i + 1, count) - 1
            };
            for port in start..=end {
                match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), false) {
                    Ok(socket) => {
                        pool.ports.push(port);
                        pool.sockets.push(socket);
                        break;
                    }
                    Err(e) => last_error = Some(e),
                }
            }
        }
        match (pool.sockets.is_empty(), last_error) {
            (true, Some(e)) => Err(e.into()),
            (true, None) => Err(RuntimeError::Config("empty source port range")),
            _ => Ok(pool),
        }
    }

    /// The bound ports, in increasing order.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The socket at `index`.
    pub(crate) fn socket(&self, index: usize) -> &UdpSocket {
        &self.sockets[index]
    }

    /// The UDP offloads every socket of the pool has (GSO is what matters: they only send).
    pub(crate) fn offloads(&self) -> UdpOffloads {
        self.sockets
            .iter()
            .fold(UdpOffloads::ALL, |all, s| all.and(s.offloads()))
    }
}

/// The first port of slice `i` of `count` equal slices of `range`.
fn slice_start(range: PortRange, i: usize, count: usize) -> u16 {
    let span = u64::from(range.max() - range.min()) + 1;
    range.min() + (span * i as u64 / count as u64) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_range() {
        let range = PortRange::default();
        let starts: Vec<u16> = (0..16).map(|i| slice_start(range, i, 16)).collect();
        assert_eq!(starts[0], 49152);
        assert_eq!(starts[1], 49152 + 1024);
        assert_eq!(starts[15], 49152 + 15 * 1024);
        let odd = PortRange::new(1000, 1002).unwrap();
        assert_eq!(
            (0..3).map(|i| slice_start(odd, i, 3)).collect::<Vec<_>>(),
            [1000, 1001, 1002]
        );
    }
}

//! Coalescing TCP segments from the underlay back into superframes for the TAP (the receive
//! half of GRO, done in userspace).
//!
//! With UDP GRO a worker receives a train of same-size VXLAN datagrams at once; written to the
//! TAP one by one, each costs a syscall and a trip through the kernel's stack. Consecutive,
//! in-order segments of one TCP flow instead go to the TAP as one frame with a TCP GSO
//! virtio-net header: the first segment's headers, then every segment's payload (zero-copy,
//! one `writev`), and the kernel treats it as the superframe it was on the sending host.
//!
//! A segment joins the run of the one before it only if nothing about the flow changes:
//! TCP over IPv4 (not fragmented) or IPv6 (no extension headers), same MACs and VLAN tags,
//! same addresses, ports, ACK number, window, TCP options, TOS/traffic class, TTL/hop limit,
//! DF or flow label; its sequence number continues the run; the run's segments have one size
//! and only the last may be shorter; flags are ACK (PSH allowed, and ending the run). Every
//! segment's TCP checksum must be correct or pending (the sender left it to offload): a
//! corrupt segment is never hidden inside a superframe whose checksum the kernel trusts.
//! Everything else goes to the TAP as it came.
//!
//! Pure: no I/O, no allocation.

use crate::dissect::Layout;
use crate::offload::pending_checksum;
use crate::wire::{
    checksum, GsoType, IpProtocol, Ipv4Packet, Ipv6Packet, TcpFlags, TcpPacket, VirtioNetRepr,
};

/// Longest IPv4 packet a superframe may become.
const MAX_IP_LEN: usize = u16::MAX as usize;

/// What coalescing needs to know of one TCP segment over IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Over IPv6 (else IPv4).
    ipv6: bool,
    /// Offset of the IP header (after any VLAN tags).
    l3: usize,
    /// IP header length.
    ip_header_len: usize,
    /// TCP header length.
    tcp_header_len: usize,
    /// TCP payload bytes.
    payload_len: usize,
    /// Sequence number.
    seq: u32,
    /// PSH is set: the run ends with this segment.
    psh: bool,
}

impl Segment {
    /// Where the payload starts in the frame.
    pub fn payload_offset(&self) -> usize {
        self.l3 + self.ip_header_len + self.tcp_header_len
    }

    /// Bytes of payload.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// Whether PSH is set (the run ends here).
    pub fn psh(&self) -> bool {
        self.psh
    }
}

/// The segment `frame` (dissected as `layout`) is, if it may take part in coalescing.
pub fn inspect(frame: &[u8], layout: &Layout) -> Option<Segment> {
    let ip = layout.ip().filter(|ip| ip.has_transport())?;
    if ip.protocol != IpProtocol::TCP {
        return None;
    }
    // The frame must end where the packet ends (no Ethernet padding to carry along).
    if frame.len() != ip.end {
        return None;
    }
    if !ip.ipv6 && !Ipv4Packet::new_unchecked(&frame[ip.l3..ip.l4]).verify_checksum() {
        return None;
    }
    let segment = &frame[ip.l4..ip.end];
    let tcp = TcpPacket::new_checked(segment).ok()?;
    let flags = tcp.flags();
    if flags & !(TcpFlags::ACK | TcpFlags::PSH) != TcpFlags(0) || !flags.contains(TcpFlags::ACK) {
        return None;
    }
    let payload_len = tcp.payload().len();
    if payload_len == 0 {
        return None;
    }
    // Correct (the sum over pseudo-header and segment is all ones) or pending.
    let pseudo = ip.pseudo_header(frame, IpProtocol::TCP, segment.len());
    let correct = checksum::combine(&[pseudo, checksum::data(segment)]) == 0xffff;
    if !correct && pending_checksum(frame, layout).is_none() {
        return None;
    }
    Some(Segment {
        ipv6: ip.ipv6,
        l3: ip.l3,
        ip_header_len: ip.header_len(),
        tcp_header_len: tcp.header_len(),
        payload_len,
        seq: tcp.seq_number(),
        psh: flags.contains(TcpFlags::PSH),
    })
}

/// Whether segment `next` (frame `next_frame`) continues the run that starts with `first`
/// (frame `first_frame`), whose last segment is `last` and whose payload so far is
/// `run_payload` bytes.
pub fn continues(
    first_frame: &[u8],
    first: &Segment,
    last: &Segment,
    run_payload: usize,
    next_frame: &[u8],
    next: &Segment,
) -> bool {
    let ip = first.l3;
    // The run ends at PSH, and only its last segment may be short.
    if last.psh || last.payload_len != first.payload_len || next.payload_len > first.payload_len {
        return false;
    }
    if next.ipv6 != first.ipv6
        || next.l3 != first.l3
        || next.ip_header_len != first.ip_header_len
        || next.tcp_header_len != first.tcp_header_len
    {
        return false;
    }
    if next.seq != last.seq.wrapping_add(last.payload_len as u32) {
        return false;
    }
    let total = first.ip_header_len + first.tcp_header_len + run_payload + next.payload_len;
    if total > MAX_IP_LEN {
        return false;
    }
    let (a, b) = (&first_frame[ip..], &next_frame[ip..]);
    let tcp = first.ip_header_len;
    let ip_same = if first.ipv6 {
        // Version, traffic class and flow label; next header and hop limit; addresses.
        a[..4] == b[..4] && a[6..8] == b[6..8] && a[8..40] == b[8..40]
    } else {
        // Version/IHL and TOS; DF; TTL and protocol; addresses (and any options).
        a[..2] == b[..2]
            && a[6] & 0x40 == b[6] & 0x40
            && a[8..10] == b[8..10]
            && a[12..tcp] == b[12..tcp]
    };
    // Ethernet addresses and VLAN tags; the IP fields above; TCP ports; ACK number; window
    // and urgent pointer (flags aside); options.
    first_frame[..ip] == next_frame[..ip]
        && ip_same
        && a[tcp..tcp + 4] == b[tcp..tcp + 4]
        && a[tcp + 8..tcp + 12] == b[tcp + 8..tcp + 12]
        && a[tcp + 14..tcp + 16] == b[tcp + 14..tcp + 16]
        && a[tcp + 18..tcp + first.tcp_header_len] == b[tcp + 18..tcp + first.tcp_header_len]
}

/// Turns `first_frame` into the head of a superframe whose TCP payload is `total_payload`
/// bytes (its own plus the following segments'), PSH set if `psh`; returns the virtio-net
/// header to write it with. The TCP checksum becomes pending (pseudo-header sum over the whole
/// superframe) for the kernel to finish or trust, as it would for its own superframes.
///
/// # Panics
///
/// If `first_frame` is not the frame `first` was inspected from, or `total_payload` would
/// make the packet longer than 65535 bytes (`continues` never builds such a run).
pub fn finish(
    first_frame: &mut [u8],
    first: &Segment,
    total_payload: usize,
    psh: bool,
) -> [u8; 12] {
    let ip_start = first.l3;
    let tcp_len = first.tcp_header_len + total_payload;
    let ip_len = first.ip_header_len + tcp_len;
    assert!(ip_len <= MAX_IP_LEN, "runs stay within an IP packet");
    let pseudo = if first.ipv6 {
        let mut ip = Ipv6Packet::new_unchecked(&mut first_frame[ip_start..]);
        ip.set_payload_len(tcp_len as u16);
        ip.pseudo_header(IpProtocol::TCP, tcp_len as u32)
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut first_frame[ip_start..]);
        ip.set_total_len(ip_len as u16);
        ip.fill_checksum();
        checksum::pseudo_header_v4(
            ip.src_addr(),
            ip.dst_addr(),
            IpProtocol::TCP.0,
            tcp_len as u16,
        )
    };
    let tcp_start = ip_start + first.ip_header_len;
    let mut tcp = TcpPacket::new_unchecked(&mut first_frame[tcp_start..]);
    if psh {
        let flags = tcp.flags();
        tcp.set_flags(flags | TcpFlags::PSH);
    }
    tcp.set_checksum(pseudo);
    VirtioNetRepr {
        needs_csum: true,
        csum_start: tcp_start as u16,
        csum_offset: 16,
        gso_type: if first.ipv6 {
            GsoType::TcpV6
        } else {
            GsoType::TcpV4
        },
        gso_size: first.payload_len as u16,
        hdr_len: (tcp_start + first.tcp_header_len) as u16,
        ..VirtioNetRepr::NONE
    }
    .to_bytes()
}

#[cfg(test)]
mod tests;

//! The internet checksum, RFC 1071, shared by IPv4, UDP and TCP.
//!
//! The checksum is the ones-complement of the ones-complement sum of the data taken as
//! big-endian 16-bit words (an odd trailing byte is padded with a zero byte).
//!
//! Convention used by every function here: they return the *folded sum*, never its
//! complement. Partial sums (a pseudo-header, a header, a payload in another buffer) are
//! added with [`combine`], and only the final sum is inverted:
//!
//! ```text
//! field = !combine(&[pseudo_header_v4(..), data(segment_with_checksum_field_zeroed)])
//! ```
//!
//! A received packet is correct when the sum over everything, checksum field included,
//! is `0xffff`:
//!
//! ```text
//! combine(&[pseudo_header_v4(..), data(segment)]) == 0xffff
//! ```
//!
//! Sums over byte ranges that start at an even offset can be combined; a range that starts
//! at an odd offset would need its sum byte-swapped first, which no caller here needs.
//!
//! This module never allocates, performs I/O or panics.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Bytes summed into one `u64` before it is folded. Each 4-byte word adds less than 2^32,
/// so 2^28 words (1 GiB) stay far below 2^64 and the inner loop needs no carry handling.
const BLOCK_LEN: usize = 1 << 30;

/// The folded ones-complement sum of `bytes` as big-endian 16-bit words, not inverted.
///
/// Speed matters here: TCP segments of 64 KiB are checksummed at line rate. The inner loop
/// adds 32-bit words into a 64-bit accumulator, which needs no carry propagation and which
/// the compiler vectorizes. Words are read in native byte order: RFC 1071 section 2(B)
/// shows that the sum of byte-swapped words is the byte-swapped sum, so one swap at the end
/// replaces one per word.
pub fn data(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for block in bytes.chunks(BLOCK_LEN) {
        sum = add_folded(sum, sum_native_words(block));
    }
    // `fold` produced a sum of native-order words; turn it into the big-endian one.
    u16::from_be(fold(sum))
}

/// The ones-complement sum of partial sums (each from [`data`], a pseudo-header function or a
/// previous `combine`), not inverted.
pub fn combine(sums: &[u16]) -> u16 {
    sums.iter().fold(0, |acc, &sum| add16(acc, sum))
}

/// The folded sum of the IPv4 pseudo-header that UDP and TCP include in their checksums
/// (RFC 768, RFC 9293 section 3.1), not inverted. `length` is the UDP or TCP length: header
/// plus payload.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let src = u32::from(src);
    let dst = u32::from(dst);
    let sum = u64::from(src >> 16)
        + u64::from(src & 0xffff)
        + u64::from(dst >> 16)
        + u64::from(dst & 0xffff)
        + u64::from(protocol)
        + u64::from(length);
    fold(sum)
}

/// The folded sum of the IPv6 pseudo-header that UDP and TCP include in their checksums
/// (RFC 8200 section 8.1), not inverted. `length` is the upper-layer length: header plus
/// payload (32 bits, for jumbograms), `next_header` the upper-layer protocol, not an
/// extension header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let words = |addr: Ipv6Addr| addr.segments().iter().map(|&w| u64::from(w)).sum::<u64>();
    let sum = words(src)
        + words(dst)
        + u64::from(length >> 16)
        + u64::from(length & 0xffff)
        + u64::from(next_header);
    fold(sum)
}

/// Sums `block` as native-order 32-bit words, the last one padded with zero bytes.
/// The caller keeps blocks to at most `BLOCK_LEN` bytes so the sum cannot overflow.
fn sum_native_words(block: &[u8]) -> u64 {
    let mut sum: u64 = 0;
    let mut words = block.chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        // Zero padding keeps every byte at the same position within its 16-bit word,
        // because the remainder starts at a multiple of 4.
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        sum += u64::from(u32::from_ne_bytes(last));
    }
    sum
}

/// Ones-complement addition of two 64-bit partial sums.
const fn add_folded(a: u64, b: u64) -> u64 {
    let (sum, carry) = a.overflowing_add(b);
    // `sum` is at most 2^64 - 2 when `carry` is set, so adding it back cannot overflow.
    sum + carry as u64
}

/// Ones-complement addition of two 16-bit partial sums.
const fn add16(a: u16, b: u16) -> u16 {
    let (sum, carry) = a.overflowing_add(b);
    sum + carry as u16
}

/// Folds a 64-bit ones-complement sum to 16 bits with end-around carries.
const fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 written as plainly as possible, to check the fast version against.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < bytes.len() {
            let hi = u32::from(bytes[i]) << 8;
            let lo = bytes.get(i + 1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
            i += 2;
        }
        sum as u16
    }

    use crate::test_prng::Prng;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(reference(&bytes), 0xddf2);
    }

    #[test]
    fn small_inputs() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0xab, 0xcd]), 0xabcd);
        assert_eq!(data(&[0xab, 0xcd, 0x12]), 0xbdcd);
        assert_eq!(data(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(data(&[0xff; 7]), 0xff00);
        assert_eq!(data(&[0xff; 8]), 0xffff);
    }

    #[test]
    fn fast_matches_reference_on_random_inputs() {
        let mut prng = Prng(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; 70_000];
        for len in (0..300).chain([1499, 1500, 1501, 9000, 65_535, 65_536, 70_000]) {
            prng.fill(&mut buf[..len]);
            assert_eq!(data(&buf[..len]), reference(&buf[..len]), "len {len}");
            // Start at odd and even offsets to exercise unaligned loads.
            for start in 1..4.min(len) {
                let slice = &buf[start..len];
                assert_eq!(data(slice), reference(slice), "len {len} start {start}");
            }
        }
    }

    #[test]
    fn all_ones_inputs_do_not_overflow() {
        let buf = vec![0xffu8; 1 << 20];
        assert_eq!(data(&buf), reference(&buf));
        assert_eq!(data(&buf), 0xffff);
    }

    #[test]
    fn sums_of_even_split_parts_combine() {
        let mut prng = Prng(42);
        let mut buf = [0u8; 1001];
        prng.fill(&mut buf);
        for split in (0..buf.len()).step_by(2) {
            let (a, b) = buf.split_at(split);
            assert_eq!(combine(&[data(a), data(b)]), data(&buf), "split {split}");
        }
    }

    #[test]
    fn combine_is_ones_complement_addition() {
        assert_eq!(combine(&[]), 0);
        assert_eq!(combine(&[0x1234]), 0x1234);
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000]), 0x0001);
        assert_eq!(combine(&[0xfffe, 0x0001]), 0xffff);
        assert_eq!(combine(&[0xffff; 1000]), 0xffff);
    }

    #[test]
    fn pseudo_header_matches_its_bytes() {
        let src = Ipv4Addr::new(192, 168, 1, 1);
        let dst = Ipv4Addr::new(10, 255, 0, 254);
        let mut bytes = [0u8; 12];
        bytes[0..4].copy_from_slice(&src.octets());
        bytes[4..8].copy_from_slice(&dst.octets());
        bytes[9] = 17;
        bytes[10..12].copy_from_slice(&0xfff0u16.to_be_bytes());
        assert_eq!(pseudo_header_v4(src, dst, 17, 0xfff0), reference(&bytes));
        let all_ones = Ipv4Addr::new(255, 255, 255, 255);
        let mut bytes = [0xffu8; 12];
        bytes[8] = 0;
        assert_eq!(
            pseudo_header_v4(all_ones, all_ones, 0xff, 0xffff),
            reference(&bytes)
        );
    }

    #[test]
    fn pseudo_header_v6_matches_its_bytes() {
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: Ipv6Addr = "fe80::ffff:ffff:ffff:ffff".parse().unwrap();
        for (next_header, length) in [
            (6u8, 20u32),
            (17, 0xffff),
            (6, 0x0001_0000),
            (0xff, u32::MAX),
        ] {
            let mut bytes = [0u8; 40];
            bytes[..16].copy_from_slice(&src.octets());
            bytes[16..32].copy_from_slice(&dst.octets());
            bytes[32..36].copy_from_slice(&length.to_be_bytes());
            bytes[39] = next_header;
            assert_eq!(
                pseudo_header_v6(src, dst, next_header, length),
                reference(&bytes),
                "{next_header} {length}"
            );
        }
        let all_ones = Ipv6Addr::from([0xff; 16]);
        let mut bytes = [0xffu8; 40];
        bytes[36..39].fill(0);
        assert_eq!(
            pseudo_header_v6(all_ones, all_ones, 0xff, u32::MAX),
            reference(&bytes)
        );
    }

    #[test]
    fn inverted_sum_makes_the_packet_sum_to_all_ones() {
        let mut prng = Prng(7);
        for len in [2usize, 20, 21, 100, 1001] {
            let mut buf = vec![0u8; len + 2];
            prng.fill(&mut buf[2..]);
            let field = !data(&buf);
            buf[..2].copy_from_slice(&field.to_be_bytes());
            assert_eq!(data(&buf), 0xffff, "len {len}");
        }
    }
}

#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/seeds/ from the kernel captures in
dataplane/testdata/kernel/ plus hand-made edge cases. Deterministic; rerun after the captures
change, then commit fuzz/seeds/."""
import pathlib

root = pathlib.Path(__file__).resolve().parent
captures = sorted((root.parent / "dataplane/testdata/kernel").glob("*.bin"))
seeds = root / "seeds"

def write(target, name, data):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(bytes(data))

# Start afresh, but keep the regression inputs fuzzing found (seeds/*/regress_*).
TARGETS = ("decap", "tap_frame", "switch_ops", "segment", "dns_query", "pipeline")
for t in TARGETS:
    for f in (seeds / t).glob("*"):
        if not f.name.startswith("regress_"):
            f.unlink()

OUTER = 14 + 20 + 8  # outer Ethernet + IPv4 (no options) + UDP
for path in captures:
    frame = path.read_bytes()
    payload = frame[OUTER:]
    write("decap", path.stem, payload)
    write("tap_frame", path.stem, payload[8:])
    # Truncations at the interesting boundaries.
    for cut in (7, 8, 21, 22):
        write("decap", f"{path.stem}_cut{cut}", payload[:cut])

sample = (root.parent / "dataplane/testdata/kernel/icmp_echo_request.bin").read_bytes()[OUTER:]
# Each reserved bit of the VXLAN header set alone, and the I flag cleared.
for byte in (0, 1, 2, 3, 7):
    for bit in range(8):
        if byte == 0 and bit == 3:
            continue
        d = bytearray(sample)
        d[byte] |= 0x80 >> bit
        write("decap", f"reserved_b{byte}_{bit}", d)
d = bytearray(sample); d[0] = 0
write("decap", "i_flag_clear", d)
# Inner VLAN tags, multicast and zero source MACs, unknown VNI.
for name, edit in [
    ("inner_dot1q", lambda d: d.__setitem__(slice(20, 22), b"\x81\x00")),
    ("inner_qinq", lambda d: d.__setitem__(slice(20, 22), b"\x88\xa8")),
    ("inner_multicast_src", lambda d: d.__setitem__(slice(14, 20), b"\x01\x00\x5e\x00\x00\x01")),
    ("inner_zero_src", lambda d: d.__setitem__(slice(14, 20), b"\x00" * 6)),
    ("unknown_vni", lambda d: d.__setitem__(slice(4, 7), b"\x00\x01\x00")),
    ("vni43", lambda d: d.__setitem__(slice(4, 7), b"\x00\x00\x2b")),
]:
    d = bytearray(sample)
    edit(d)
    write("decap", name, d)

# ARP requests from the TAP side: answered, gateway, probe, gratuitous, unicast, miss.
def arp(dst, op, sha, spa, tpa):
    eth = bytes(dst) + bytes(sha) + b"\x08\x06"
    return eth + b"\x00\x01\x08\x00\x06\x04" + op.to_bytes(2, "big") + bytes(sha) + bytes(spa) + b"\x00" * 6 + bytes(tpa)

bcast = [0xff] * 6
me = [2, 0x42, 10, 0, 0, 2]
for name, frame in [
    ("arp_known", arp(bcast, 1, me, [10, 0, 0, 2], [10, 0, 0, 3])),
    ("arp_gateway", arp(bcast, 1, me, [10, 0, 0, 2], [10, 0, 0, 1])),
    ("arp_probe", arp(bcast, 1, me, [0, 0, 0, 0], [10, 0, 0, 3])),
    ("arp_gratuitous", arp(bcast, 1, me, [10, 0, 0, 3], [10, 0, 0, 3])),
    ("arp_unicast", arp([2, 0x42, 10, 0, 0, 3], 1, me, [10, 0, 0, 2], [10, 0, 0, 3])),
    ("arp_miss", arp(bcast, 1, me, [10, 0, 0, 2], [10, 0, 0, 99])),
    ("arp_reply_broadcast", arp(bcast, 2, me, [10, 0, 0, 2], [10, 0, 0, 3])),
]:
    write("tap_frame", name, frame)
    write("tap_frame", name + "_cut", frame[:30])

# switch_ops reads structured operations from any bytes; give it a few varied starts.
for i, data in enumerate([bytes(range(256)), bytes(range(255, -1, -1)), bytes([i * 7 % 256 for i in range(512)]),
                          sample, bytes([0, 3, 1, 4, 0, 3, 1, 5, 2, 3] * 20)]):
    write("switch_ops", f"seed{i}", data)
# segment: a 12-byte virtio-net header (little-endian fields), then a frame as a TAP with
# TUNSETOFFLOAD CSUM|TSO4|TSO6|USO4|USO6 hands it over: TCP and UDP superframes whose checksum
# field holds the pseudo-header sum, and plain frames with a checksum to finish.
def csum(data):
    data = bytes(data) + b"\x00" * (len(data) % 2)
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return s

def vnet(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset):
    return (bytes([flags, gso_type]) + b"".join(v.to_bytes(2, "little")
            for v in (hdr_len, gso_size, csum_start, csum_offset, 0)))

tcp_data = (root.parent / "dataplane/testdata/kernel/tcp_data.bin").read_bytes()[OUTER + 8:]
SRC6 = bytes([0xfd] + [0] * 14 + [1])
DST6 = bytes([0xfd] + [0] * 14 + [2])

def superframe(payload, ipv6=False, timestamps=True, vlan_tags=0, ip_options=0, flags=0x18):
    f = bytearray(tcp_data[:12])
    for tag in range(vlan_tags):
        f += (b"\x88\xa8" if tag + 1 < vlan_tags else b"\x81\x00") + (100 + tag).to_bytes(2, "big")
    tcp = bytearray(tcp_data[34:66] if timestamps else tcp_data[34:54])
    tcp[12] = (len(tcp) // 4) << 4
    tcp[13] = flags
    tcp_len = len(tcp) + len(payload)
    if ipv6:
        f += b"\x86\xdd\x60\x00\x00\x00" + tcp_len.to_bytes(2, "big") + b"\x06\x40" + SRC6 + DST6
        pseudo = csum(SRC6 + DST6 + tcp_len.to_bytes(4, "big") + b"\x00\x00\x00\x06")
    else:
        ip = bytearray(tcp_data[14:34]) + b"\x01" * ip_options
        ip[0] = 0x40 | (len(ip) // 4)
        ip[2:4] = (len(ip) + tcp_len).to_bytes(2, "big")
        ip[10:12] = b"\x00\x00"
        ip[10:12] = (~csum(ip) & 0xffff).to_bytes(2, "big")
        f += b"\x08\x00" + ip
        pseudo = csum(ip[12:20] + b"\x00\x06" + tcp_len.to_bytes(2, "big"))
    tcp[16:18] = pseudo.to_bytes(2, "big")
    l4 = len(f)
    return bytes(f + tcp + bytes(payload)), l4, len(tcp)

def gso_seed(name, payload, mss, **shape):
    frame, l4, tcp_len = superframe(payload, **shape)
    gso_type = (4 if shape.get("ipv6") else 1) | (0x80 if shape.get("flags", 0) & 0x80 else 0)
    write("segment", name, vnet(1, gso_type, l4 + tcp_len, mss, l4, 16) + frame)
    return frame, l4

pattern = bytes(i * 7 % 251 for i in range(65_535))
gso_seed("v4_ts_3000_mss1448", pattern[:3000], 1448)
gso_seed("v4_no_ts_4001_mss1460", pattern[:4001], 1460, timestamps=False)
gso_seed("v4_full_64k_mss1448", pattern[:65_535 - 20 - 32], 1448)
gso_seed("v6_ts_5000_mss1428", pattern[:5000], 1428, ipv6=True)
gso_seed("v6_no_ts_2857_mss1000", pattern[:2857], 1000, ipv6=True, timestamps=False)
gso_seed("v4_qinq_ip_options", pattern[:3000], 999, vlan_tags=2, ip_options=40)
gso_seed("v6_dot1q", pattern[:3000], 1000, ipv6=True, vlan_tags=1)
gso_seed("v4_fin_psh_cwr_ece", pattern[:2500], 1000, flags=0xd9)
gso_seed("v6_fin_psh_cwr", pattern[:2500], 1000, ipv6=True, flags=0x99)
gso_seed("v4_mss1", pattern[:7], 1)
gso_seed("v4_mss7_odd_last", pattern[:100], 7)
gso_seed("v4_no_payload", b"", 1448, flags=0x11)
gso_seed("v4_payload_below_mss", pattern[:100], 1448)
frame, l4 = gso_seed("v4_mss0", pattern[:3000], 0)
write("segment", "v4_as_tcpv6", vnet(1, 4, 0, 1448, l4, 16) + frame)
write("segment", "v4_gso_udp_l4", vnet(1, 5, 0, 1448, l4, 16) + frame)
write("segment", "v4_truncated", vnet(1, 1, 0, 1448, l4, 16) + frame[:1000])
frame, l4 = superframe(pattern[:5000])[:2]
write("segment", "v4_too_many_segments", vnet(1, 1, 0, 1, l4, 16) + frame)
# USO superframes (TUNSETOFFLOAD USO4|USO6, VIRTIO_NET_HDR_GSO_UDP_L4 = 5) as a UDP_SEGMENT
# send leaves the kernel: one UDP header whose length covers the whole payload and whose
# checksum field holds the pseudo-header sum.
udp_datagram = (root.parent / "dataplane/testdata/kernel/udp_datagram.bin").read_bytes()[OUTER + 8:]

def udp_superframe(payload, ipv6=False, vlan_tags=0, ip_options=0):
    f = bytearray(udp_datagram[:12])
    for tag in range(vlan_tags):
        f += (b"\x88\xa8" if tag + 1 < vlan_tags else b"\x81\x00") + (100 + tag).to_bytes(2, "big")
    udp_len = 8 + len(payload)
    if ipv6:
        f += b"\x86\xdd\x60\x00\x00\x00" + udp_len.to_bytes(2, "big") + b"\x11\x40" + SRC6 + DST6
        pseudo = csum(SRC6 + DST6 + udp_len.to_bytes(4, "big") + b"\x00\x00\x00\x11")
    else:
        ip = bytearray(udp_datagram[14:34]) + b"\x01" * ip_options
        ip[0] = 0x40 | (len(ip) // 4)
        ip[2:4] = (len(ip) + udp_len).to_bytes(2, "big")
        ip[10:12] = b"\x00\x00"
        ip[10:12] = (~csum(ip) & 0xffff).to_bytes(2, "big")
        f += b"\x08\x00" + ip
        pseudo = csum(ip[12:20] + b"\x00\x11" + udp_len.to_bytes(2, "big"))
    l4 = len(f)
    f += udp_datagram[34:38] + udp_len.to_bytes(2, "big") + pseudo.to_bytes(2, "big")
    return bytes(f + bytes(payload)), l4

def uso_seed(name, payload, gso_size, gso_type=5, **shape):
    frame, l4 = udp_superframe(payload, **shape)
    write("segment", name, vnet(1, gso_type, l4 + 8, gso_size, l4, 6) + frame)
    return frame, l4

uso_seed("uso_v4_64000_gso1400", pattern[:64_000], 1400)
uso_seed("uso_v4_3001_gso1000_short_last", pattern[:3001], 1000)
uso_seed("uso_v6_5000_gso1400", pattern[:5000], 1400, ipv6=True)
uso_seed("uso_v4_qinq_ip_options", pattern[:3000], 999, vlan_tags=2, ip_options=40)
uso_seed("uso_v6_dot1q", pattern[:3000], 1000, ipv6=True, vlan_tags=1)
uso_seed("uso_v4_gso1", pattern[:7], 1)
uso_seed("uso_v4_gso7_odd_last", pattern[:100], 7)
uso_seed("uso_v4_no_payload", b"", 1400)
uso_seed("uso_v4_payload_below_gso", pattern[:100], 1400)
uso_seed("uso_v4_full_64k", pattern[:65_535 - 28], 1422)
frame, l4 = uso_seed("uso_v4_gso0", pattern[:3000], 0)
write("segment", "uso_v4_as_tcpv4", vnet(1, 1, 0, 1000, l4, 6) + frame)
write("segment", "uso_v4_as_ufo", vnet(1, 3, 0, 1000, l4, 6) + frame)
write("segment", "uso_v4_truncated", vnet(1, 5, 0, 1000, l4, 6) + frame[:1000])
frame, l4 = udp_superframe(pattern[:10_000])
write("segment", "uso_v4_too_many_segments", vnet(1, 5, 0, 1, l4, 6) + frame)
# Plain frames whose checksum the kernel left for us: TCP and UDP over IPv4, TCP over IPv6.
for name, offset in (("tcp_data", 16), ("udp_datagram", 6), ("tcp_synack", 16)):
    f = bytearray((root.parent / f"dataplane/testdata/kernel/{name}.bin").read_bytes()[OUTER + 8:])
    l4_len = len(f) - 34
    pseudo = csum(f[26:34] + bytes([0, f[23]]) + l4_len.to_bytes(2, "big"))
    f[34 + offset:36 + offset] = pseudo.to_bytes(2, "big")
    write("segment", f"csum_{name}", vnet(1, 0, 0, 0, 34, offset) + f)
frame, l4 = superframe(b"hello, world", ipv6=True)[:2]
write("segment", "csum_v6_tcp", vnet(1, 0, 0, 0, l4, 16) + frame)
write("segment", "csum_offset_outside", vnet(1, 0, 0, 0, 60, 16) + frame[:70])

# dns_query: queries to the overlay resolver as glibc (RD, no EDNS) and dig (RD and AD, an
# EDNS OPT record with a 1232-byte payload size and a client cookie) send them, for the names
# the check owns (web, many, reverse 10.0.0.2 and 10.0.0.3), for a name it does not, and the
# hostile shapes it must refuse or drop.
def dns_name(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".") if l) + b"\x00"

def dns_query(qid, name, qtype, edns=False, flags=0x0100, qdcount=1, raw_name=None):
    q = qid.to_bytes(2, "big") + flags.to_bytes(2, "big") + qdcount.to_bytes(2, "big")
    q += b"\x00\x00\x00\x00" + (b"\x00\x01" if edns else b"\x00\x00")
    q += (raw_name if raw_name is not None else dns_name(name)) + qtype.to_bytes(2, "big") + b"\x00\x01"
    if edns:
        cookie = bytes(range(1, 9))
        q += b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + (4 + len(cookie)).to_bytes(2, "big")
        q += b"\x00\x0a" + len(cookie).to_bytes(2, "big") + cookie
    return q

A, PTR, AAAA, ANY = 1, 12, 28, 255
DIG = 0x0120
for name, data in [
    ("glibc_a_web", dns_query(0x1a2b, "web", A)),
    ("glibc_aaaa_web", dns_query(0x1a2c, "web", AAAA)),
    ("dig_a_web_edns", dns_query(0x4f1b, "WeB", A, edns=True, flags=DIG)),
    ("dig_any_many_edns", dns_query(0x4f1c, "many", ANY, edns=True, flags=DIG)),
    ("dig_a_noaddr", dns_query(0x4f1d, "noaddr", A, flags=DIG)),
    ("dig_ptr_web_edns", dns_query(0x4f1e, "2.0.0.10.in-addr.arpa", PTR, edns=True, flags=DIG)),
    ("dig_ptr_long_name", dns_query(0x4f1f, "3.0.0.10.in-addr.arpa", PTR, edns=True, flags=DIG)),
    ("dig_ptr_bad_name", dns_query(0x4f20, "9.0.0.10.in-addr.arpa", PTR, flags=DIG)),
    ("dig_a_forward_edns", dns_query(0x4f21, "example.com", A, edns=True, flags=DIG)),
    ("dig_ptr_forward", dns_query(0x4f22, "1.2.0.192.in-addr.arpa", PTR, flags=DIG)),
    ("two_questions", dns_query(7, "web", A, qdcount=2)),
    ("no_question", dns_query(7, "web", A, qdcount=0)),
    ("notify_opcode", dns_query(7, "web", A, flags=4 << 11)),
    ("response_as_query", dns_query(7, "web", A, flags=0x8180)),
    ("pointer_to_itself", dns_query(7, "", A, raw_name=b"\xc0\x0c")),
    ("label_past_end", dns_query(7, "", A, raw_name=b"\x3fabc")[:17]),
    ("short_header", dns_query(7, "web", A)[:11]),
]:
    write("dns_query", name, data)

# pipeline: a GRO flag byte, then records [kind][u16 length][bytes] (see
# src/fuzz_checks/pipeline.rs): TAP reads (kind 0) and datagrams (kind 1; +2 unknown VTEP,
# +4 truncated, +8 a GRO train whose segment size leads, +16 VNI 43, which has no TAP).
def record(kind, data):
    return bytes([kind]) + len(data).to_bytes(2, "big") + bytes(data)

plain = vnet(0, 0, 0, 0, 0, 0)
payloads = [path.read_bytes()[OUTER:] for path in captures]
mixed = bytes([1])
for p in payloads:
    mixed += record(0, plain + p[8:])
tso_frame, tso_l4 = gso_seed("_unused", pattern[:6000], 1448)
(seeds / "segment" / "_unused").unlink()
mixed += record(0, vnet(1, 1, tso_l4 + 32, 1448, tso_l4, 16) + tso_frame)
for i, p in enumerate(payloads):
    mixed += record(1 | (2 if i == 1 else 0) | (4 if i == 2 else 0) | (16 if i == 3 else 0), p)
write("pipeline", "mixed", mixed)
tcp_payload = (root.parent / "dataplane/testdata/kernel/tcp_data.bin").read_bytes()[OUTER:]
train = len(tcp_payload).to_bytes(2, "big") + tcp_payload * 4
write("pipeline", "gro_train", bytes([1]) + record(1 | 8, train))
write("pipeline", "train_without_gro", bytes([0]) + record(1 | 8, train))
write("pipeline", "tap_only", bytes([0]) + b"".join(record(0, plain + p[8:]) for p in payloads))
write("pipeline", "empty", b"")

print("seeds:", {t: len(list((seeds / t).iterdir())) for t in TARGETS})

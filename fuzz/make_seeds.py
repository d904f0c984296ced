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
for t in ("decap", "tap_frame", "switch_ops"):
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
print("seeds:", {t: len(list((seeds / t).iterdir())) for t in ("decap", "tap_frame", "switch_ops")})

#!/usr/bin/env bash
# capture-kernel.sh - capture reference VXLAN frames from the Linux kernel's own vxlan driver.
#
# What it builds (everything inside two network namespaces created and deleted by this script;
# nothing is added to the root namespace and nothing is sent outside the two namespaces):
#
#   ns ${P}hA ("host A")                              ns ${P}hB ("host B")
#     ${P}uA 198.18.0.1/24  <======= veth =======>      ${P}uB 198.18.0.2/24   <- capture point
#            02:00:c6:12:00:01                                 02:00:c6:12:00:02
#     ${P}vA vxlan id 42 dstport 4789                   ${P}vB vxlan id 42 dstport 4789
#            local 198.18.0.1, mtu 1450                        local 198.18.0.2, mtu 1450
#            02:42:0a:00:00:01 10.0.0.1/24                     02:42:0a:00:00:02 10.0.0.2/24
#            fd00::1/64 (nodad, no link-local)                 fd00::2/64 (nodad, no link-local)
#            fdb 00:00:00:00:00:00 dst 198.18.0.2              fdb 00:00:00:00:00:00 dst 198.18.0.1
#     ${P}wA vxlan id 43 (same, 10.0.1.1/24,            ${P}wB vxlan id 43 (10.0.1.2/24,
#            02:42:0a:00:01:01, IPv6 off)                      02:42:0a:00:01:02, IPv6 off)
#
# Everything else in the namespaces has IPv6 disabled so no stray ND/MLD/RS traffic appears, and
# transmit checksum offload is switched off on both veths (SIOCETHTOOL ETHTOOL_STXCSUM, no ethtool
# binary needed) so the captured bytes carry the final inner checksums a real NIC would put on the
# wire rather than CHECKSUM_PARTIAL placeholders.
#
# A python3 AF_PACKET/SOCK_RAW/ETH_P_ALL socket bound to ${P}uB (inside host B) records every frame
# in both directions (PACKET_HOST = A->B, PACKET_OUTGOING = B->A) before any traffic starts. Traffic
# is then generated from host A with python3 (deterministic payloads, no ping binary needed):
#   ICMP echo 56 B (first one triggers ARP), ICMP echo 3000 B (inner IPv4 fragmentation), UDP
#   datagram to 10.0.0.2:9999 (nobody listens -> ICMP port unreachable), TCP SYN to :80 (-> RST),
#   a short TCP session to a python server in B on :8080 that receives "hello", ICMP echo on VNI 43,
#   ICMPv6 echo to fd00::2 (-> neighbour solicitation to ff02::1:ff00:2 / 33:33:ff:00:00:02).
# Only outer IPv4/UDP dport-or-sport 4789 frames are kept. Each interesting frame (first match per
# name) is written as a full Ethernet frame (outer Eth + IPv4 + UDP + VXLAN + inner Ethernet) to
# kernel/<name>.bin, and kernel/README.md gets a table decoded from the bytes.
#
# Every saved frame is checked: VXLAN flags 0x08, reserved bytes zero, VNI 42/43, outer IPv4 header
# checksum, UDP length, no trailing padding, inner IPv4/ICMP/UDP/TCP/ICMPv6 checksums valid.
# The script fails (and writes nothing) if any check fails or an expected frame is missing.
#
# Usage (as root, Linux with the vxlan module, iproute2 and python3):
#   ./capture-kernel.sh            # writes ./kernel/*.bin and ./kernel/README.md next to this script
#   OUT=/some/dir ./capture-kernel.sh
# Bytes that differ between runs: outer UDP source port (flow hash with a per-boot random seed),
# outer/inner IPv4 ident, TCP ports/sequence numbers/timestamps, and the outer IP checksums.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-$HERE/kernel}
P="vxcap$$-"                          # unique prefix; longest name ${P}uA is <= 15 chars
[ ${#P} -le 13 ] || { echo "prefix $P too long" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
for t in ip bridge python3; do command -v $t >/dev/null || { echo "missing $t" >&2; exit 1; }; done

HA=${P}hA HB=${P}hB
TMP=$(mktemp -d "$HERE/.capture-tmp.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$HA" 2>/dev/null || true
  ip netns del "$HB" 2>/dev/null || true
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------------
# embedded python helpers
# ---------------------------------------------------------------------------------------------------
read -r -d '' PY_TXCSUM_OFF <<'EOF' || true
import array, fcntl, socket, struct, sys
SIOCETHTOOL, ETHTOOL_GTXCSUM, ETHTOOL_STXCSUM = 0x8946, 0x16, 0x17
def ethtool(ifname, cmd, data):
    buf = array.array('B', struct.pack('II', cmd, data))
    ifr = struct.pack('16sP', ifname.encode(), buf.buffer_info()[0]).ljust(40, b'\0')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCETHTOOL, ifr)
    return struct.unpack('II', buf.tobytes())[1]
ethtool(sys.argv[1], ETHTOOL_STXCSUM, 0)
assert ethtool(sys.argv[1], ETHTOOL_GTXCSUM, 0) == 0, "tx checksum offload still on"
EOF

read -r -d '' PY_CAPTURE <<'EOF' || true
# argv: ifname outfile readyfile. Record: pkttype u8, tp_status u32, len u32, frame bytes.
import signal, socket, struct, sys
ifname, out, ready = sys.argv[1:4]
ETH_P_ALL, SOL_PACKET, PACKET_AUXDATA = 3, 263, 8
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
s.bind((ifname, ETH_P_ALL))
with open(out, 'wb') as f:
    open(ready, 'w').close()
    while True:
        data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(20))
        if addr[0] != ifname:            # frames queued before bind() from other interfaces
            continue
        status = 0
        for lvl, typ, val in anc:
            if lvl == SOL_PACKET and typ == PACKET_AUXDATA:
                status = struct.unpack_from('I', val)[0]
        f.write(struct.pack('!BII', addr[2], status, len(data)) + data)
        f.flush()
EOF

read -r -d '' PY_SERVER <<'EOF' || true
# TCP server in host B: accept one connection on 10.0.0.2:8080, read to EOF, close.
import socket, sys
ready, got = sys.argv[1:3]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('10.0.0.2', 8080)); s.listen(1); s.settimeout(20)
open(ready, 'w').close()
c, _ = s.accept(); c.settimeout(10)
data = b''
while True:
    b = c.recv(4096)
    if not b: break
    data += b
c.close(); s.close()
open(got, 'wb').write(data)
EOF

read -r -d '' PY_TRAFFIC <<'EOF' || true
# Traffic from host A. Deterministic payloads: byte i of an echo payload is i & 0xff (like ping,
# minus ping's timestamp). argv[1] selects the step.
import socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def echo4(dst, ident, seq, size):
    payload = bytes(i & 0xff for i in range(size))
    hdr = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
    pkt = struct.pack('!BBHHH', 8, 0, csum(hdr + payload), ident, seq) + payload
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(3); s.sendto(pkt, (dst, 0))
    while True:
        d = s.recv(65536); ihl = (d[0] & 15) * 4
        if d[ihl] == 0 and struct.unpack_from('!HH', d, ihl + 4) == (ident, seq): return
def echo6(dst, ident, seq, size):
    payload = bytes(i & 0xff for i in range(size))
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)  # kernel fills csum
    s.settimeout(3); s.sendto(struct.pack('!BBHHH', 128, 0, 0, ident, seq) + payload, (dst, 0))
    while True:
        d = s.recv(65536)
        if d[0] == 129 and struct.unpack_from('!HH', d, 4) == (ident, seq): return
step = sys.argv[1]
if step == 'ping':      echo4('10.0.0.2', 0x7678, 1, 56)
elif step == 'bigping': echo4('10.0.0.2', 0x7678, 2, 3000)
elif step == 'udp':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('10.0.0.1', 40999))
    s.sendto(b'vxtap udp datagram\n', ('10.0.0.2', 9999))
elif step == 'tcp80':
    s = socket.socket(); s.settimeout(3); s.bind(('10.0.0.1', 40080))
    try: s.connect(('10.0.0.2', 80)); sys.exit('port 80 unexpectedly open')
    except ConnectionRefusedError: pass
elif step == 'tcp8080':
    s = socket.socket(); s.settimeout(5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.0.0.1', 48080))
    s.connect(('10.0.0.2', 8080)); s.sendall(b'hello'); s.shutdown(socket.SHUT_WR)
    while s.recv(4096): pass
    s.close()
elif step == 'ping43':  echo4('10.0.1.2', 0x7679, 1, 56)
elif step == 'ping6':   echo6('fd00::2', 0x767a, 1, 56)
else: sys.exit('unknown step ' + step)
EOF

read -r -d '' PY_DECODE <<'EOF' || true
# argv: capture-file outdir kernel-release command-line 'ip -d link show' of host A's vxlan devices
import os, struct, sys
cap, outdir, krel, cmdline, linkinfo = sys.argv[1:6]
PKTTYPE = {0: 'PACKET_HOST', 1: 'PACKET_BROADCAST', 2: 'PACKET_MULTICAST', 3: 'PACKET_OTHERHOST', 4: 'PACKET_OUTGOING'}
TP_STATUS_CSUMNOTREADY = 1 << 3
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def mac(b): return ':'.join('%02x' % x for x in b)
def ip4(b): return '.'.join(str(x) for x in b)
def ip6(b):
    import ipaddress; return str(ipaddress.IPv6Address(bytes(b)))

records = []
raw = open(cap, 'rb').read(); off = 0
while off < len(raw):
    pt, st, ln = struct.unpack_from('!BII', raw, off); off += 9
    records.append((pt, st, raw[off:off + ln])); off += ln

class Bad(Exception): pass
def check(cond, what):
    if not cond: raise Bad(what)

def decode(pt, st, f):
    """Return a dict describing a VXLAN frame, None for non-UDP-4789 frames; raise Bad on errors."""
    if len(f) < 14 + 20 + 8 + 8 or f[12:14] != b'\x08\x00': return None
    ihl = (f[14] & 15) * 4
    if f[14] >> 4 != 4 or f[14 + 9] != 17: return None
    u = 14 + ihl
    sport, dport, ulen, ucs = struct.unpack_from('!HHHH', f, u)
    if dport != 4789: return None
    d = {}
    d['dir'] = {0: 'A->B', 4: 'B->A'}.get(pt, '?') + ' (' + PKTTYPE.get(pt, str(pt)) + ')'
    check(pt in (0, 4), 'unexpected pkttype %d' % pt)
    check(not st & TP_STATUS_CSUMNOTREADY, 'TP_STATUS_CSUMNOTREADY set (checksum offload still on)')
    ip = f[14:14 + ihl]
    tot, ident, frag, ttl = struct.unpack_from('!HHHB', ip, 2)
    check(csum(ip) == 0, 'outer IPv4 header checksum')
    d['pad'] = len(f) - 14 - tot
    check(d['pad'] == 0, 'trailing padding after outer IPv4 packet')
    check(ulen == tot - ihl, 'UDP length')
    d.update(osrc=ip4(ip[12:16]), odst=ip4(ip[16:20]), ident=ident, df=bool(frag & 0x4000),
             ofrag=frag & 0x3fff, ttl=ttl, tos=ip[1], sport=sport, ucs=ucs, omacs=mac(f[6:12]), omacd=mac(f[0:6]),
             ihl=ihl, len=len(f))
    if ucs:
        ph = ip[12:20] + struct.pack('!BBH', 0, 17, ulen)
        check(csum(ph + f[u:u + ulen]) == 0, 'outer UDP checksum')
    v = f[u + 8:u + 16]
    check(v[0] == 0x08, 'VXLAN flags %#x' % v[0])
    check(v[1:4] == b'\0\0\0' and v[7] == 0, 'VXLAN reserved bytes')
    d['vni'] = int.from_bytes(v[4:7], 'big')
    check(d['vni'] in (42, 43), 'VNI %d' % d['vni'])
    e = f[u + 16:]
    d['inner_len'] = len(e)
    d['imacd'], d['imacs'], d['etype'] = mac(e[0:6]), mac(e[6:12]), struct.unpack_from('!H', e, 12)[0]
    p = e[14:]
    d['key'] = None
    if d['etype'] == 0x0806:
        op = struct.unpack_from('!H', p, 6)[0]
        if op == 1: d['summary'] = 'ARP request who-has %s tell %s' % (ip4(p[24:28]), ip4(p[14:18]))
        elif op == 2: d['summary'] = 'ARP reply %s is-at %s' % (ip4(p[14:18]), mac(p[8:14]))
        else: d['summary'] = 'ARP op %d' % op
        d['key'] = ('arp', op)
    elif d['etype'] == 0x0800:
        iihl = (p[0] & 15) * 4
        check(csum(p[:iihl]) == 0, 'inner IPv4 header checksum')
        itot, iid, ifrag, ittl, proto = struct.unpack_from('!HHHBB', p, 2)
        check(itot == len(p), 'inner IPv4 total length %d vs %d' % (itot, len(p)))
        src, dst = ip4(p[12:16]), ip4(p[16:20])
        mf, foff = bool(ifrag & 0x2000), (ifrag & 0x1fff) * 8
        l4 = p[iihl:]
        fr = ''
        if mf or foff:
            fr = ' frag off=%d len=%d%s' % (foff, len(l4), ' MF' if mf else '')
            d['key'] = ('frag', 'first' if foff == 0 else ('middle' if mf else 'last'))
        if proto == 1:
            if not (mf or foff):
                check(csum(l4) == 0, 'inner ICMP checksum')
            if foff == 0:
                t, c = l4[0], l4[1]
                name = {0: 'echo-reply', 8: 'echo-request', 3: 'dest-unreach'}.get(t, 'type %d' % t)
                if t == 3: name += ' code %d' % c
                if t in (0, 8): name += ' id=%#x seq=%d' % struct.unpack_from('!HH', l4, 4)
                d['summary'] = 'IPv4 %s > %s ICMP %s%s' % (src, dst, name, fr)
                if not fr: d['key'] = ('icmp', t)
            else:
                d['summary'] = 'IPv4 %s > %s ICMP (fragment)%s' % (src, dst, fr)
        elif proto in (6, 17):
            ph = p[12:20] + struct.pack('!BBH', 0, proto, len(l4))
            check(csum(ph + l4) == 0, 'inner TCP/UDP checksum')
            sp, dp = struct.unpack_from('!HH', l4, 0)
            if proto == 17:
                d['summary'] = 'IPv4 %s:%d > %s:%d UDP len=%d' % (src, sp, dst, dp, len(l4) - 8)
                d['key'] = ('udp', dp)
            else:
                fl = l4[13]; hl = (l4[12] >> 4) * 4; data = l4[hl:]
                names = ''.join(n for b, n in ((1, 'F'), (2, 'S'), (4, 'R'), (8, 'P'), (16, '.')) if fl & b)
                d['summary'] = 'IPv4 %s:%d > %s:%d TCP [%s] len=%d' % (src, sp, dst, dp, names, len(data))
                if data: d['summary'] += ' %r' % bytes(data)
                d['key'] = ('tcp', sp, dp, fl, bool(data))
        else:
            d['summary'] = 'IPv4 %s > %s proto %d%s' % (src, dst, proto, fr)
        d['summary'] += ' (ttl %d, id %#06x%s)' % (ittl, iid, ', DF' if ifrag & 0x4000 else '')
    elif d['etype'] == 0x86dd:
        plen, nh, hlim = struct.unpack_from('!HBB', p, 4)
        src, dst = ip6(p[8:24]), ip6(p[24:40])
        l4 = p[40:40 + plen]
        check(40 + plen == len(p), 'inner IPv6 payload length')
        if nh == 58:
            ph = p[8:40] + struct.pack('!I3xB', len(l4), 58)
            check(csum(ph + l4) == 0, 'inner ICMPv6 checksum')
            t = l4[0]
            name = {128: 'echo-request', 129: 'echo-reply', 135: 'neighbor-solicitation', 136: 'neighbor-advertisement',
                    143: 'MLDv2 report'}.get(t, 'type %d' % t)
            if t in (135, 136): name += ' tgt ' + ip6(l4[8:24])
            d['summary'] = 'IPv6 %s > %s ICMPv6 %s (hlim %d)' % (src, dst, name, hlim)
            d['key'] = ('icmp6', t)
        else:
            d['summary'] = 'IPv6 %s > %s nh %d' % (src, dst, nh)
    else:
        d['summary'] = 'ethertype %#06x' % d['etype']
    return d

# name -> predicate over (direction pkttype, vni, key); first match wins.
WANT = [
    ('arp_request_a_to_b',         0, 42, ('arp', 1)),
    ('arp_reply_b_to_a',           4, 42, ('arp', 2)),
    ('icmp_echo_request',          0, 42, ('icmp', 8)),
    ('icmp_echo_reply',            4, 42, ('icmp', 0)),
    ('icmp_frag_first',            0, 42, ('frag', 'first')),
    ('icmp_frag_middle',           0, 42, ('frag', 'middle')),
    ('icmp_frag_last',             0, 42, ('frag', 'last')),
    ('udp_datagram',               0, 42, ('udp', 9999)),
    ('icmp_port_unreachable',      4, 42, ('icmp', 3)),
    ('tcp_syn',                    0, 42, ('tcp', 40080, 80, 0x02, False)),
    ('tcp_rst',                    4, 42, ('tcp', 80, 40080, 0x14, False)),
    ('tcp_synack',                 4, 42, ('tcp', 8080, 48080, 0x12, False)),
    ('tcp_data',                   0, 42, ('tcp', 48080, 8080, 0x18, True)),
    ('tcp_fin',                    0, 42, ('tcp', 48080, 8080, 0x11, False)),
    ('vni43_arp_request_a_to_b',   0, 43, ('arp', 1)),
    ('vni43_icmp_echo_request',    0, 43, ('icmp', 8)),
    ('ipv6_neighbor_solicitation', 0, 42, ('icmp6', 135)),
    ('ipv6_neighbor_advertisement',4, 42, ('icmp6', 136)),
    ('icmpv6_echo_request',        0, 42, ('icmp6', 128)),
]
chosen = {}; rows_all = []; skipped_non_vxlan = 0; errors = []
for i, (pt, st, f) in enumerate(records):
    try:
        d = decode(pt, st, f)
    except Bad as ex:
        errors.append('frame %d: %s' % (i, ex)); continue
    if d is None:
        skipped_non_vxlan += 1; continue
    d['idx'] = i; d['frame'] = f; rows_all.append(d)
    for name, wpt, wvni, key in WANT:
        if name not in chosen and pt == wpt and d['vni'] == wvni and d['key'] == key:
            chosen[name] = d; d['name'] = name; break
missing = [n for n, *_ in WANT if n not in chosen]
if errors or missing:
    for e in errors: print('ERROR', e, file=sys.stderr)
    if missing: print('ERROR missing frames:', ', '.join(missing), file=sys.stderr)
    for d in rows_all: print('  seen', d['dir'], d['vni'], d['summary'], file=sys.stderr)
    sys.exit(1)

os.makedirs(outdir, exist_ok=True)
for fn in os.listdir(outdir):
    if fn.endswith('.bin'): os.unlink(os.path.join(outdir, fn))
for name, *_ in WANT:
    open(os.path.join(outdir, name + '.bin'), 'wb').write(chosen[name]['frame'])

sports = sorted(d['sport'] for d in rows_all)
def yn(b): return 'yes' if b else 'no'
L = []
L.append('# Kernel VXLAN reference frames')
L.append('')
L.append('Captured from the Linux kernel vxlan driver by `../capture-kernel.sh` (read its header for the exact')
L.append('topology). Each `.bin` is one complete Ethernet frame as seen on host B\'s underlay veth: outer')
L.append('Ethernet + outer IPv4 + UDP + 8-byte VXLAN header + inner Ethernet frame (no FCS).')
L.append('')
L.append('- command: `%s`' % cmdline)
L.append('- kernel: `%s` (`uname -r`)' % krel)
L.append('- host A: underlay 198.18.0.1, vxlan VNI 42 `02:42:0a:00:00:01` 10.0.0.1/24 fd00::1/64, VNI 43 `02:42:0a:00:01:01` 10.0.1.1/24')
L.append('- host B: underlay 198.18.0.2, vxlan VNI 42 `02:42:0a:00:00:02` 10.0.0.2/24 fd00::2/64, VNI 43 `02:42:0a:00:01:02` 10.0.1.2/24')
L.append('- underlay veth MACs fixed: host A `02:00:c6:12:00:01`, host B `02:00:c6:12:00:02`; tx checksum offload off.')
L.append('- kernel vxlan devices: `ip link add vxN type vxlan id 42|43 dstport 4789 local <underlay ip>`, everything else')
L.append('  left at the kernel default (iproute2 sends no IFLA_VXLAN_UDP_CSUM/TTL/DF attribute), then MTU 1450 and')
L.append('  `bridge fdb append 00:00:00:00:00:00 dev vxN dst <peer>`. `ip -d link show` of host A\'s devices at capture time:')
L.append('')
L.append('```')
L.extend(l.strip() for l in linkinfo.strip().splitlines() if l.strip())
L.append('```')
L.append('')
L.append('- capture: python3 `AF_PACKET`/`SOCK_RAW`/`ETH_P_ALL` socket bound to host B\'s veth, started before the traffic.')
L.append('  Direction: `PACKET_HOST` = received by B = sent by A (A->B); `PACKET_OUTGOING` = sent by B (B->A).')
L.append('- tx checksum offload was disabled on both veths so inner L4 checksums are final; every saved frame')
L.append('  was verified: VXLAN flags 0x08, reserved bytes 0, outer IPv4 header checksum, UDP length and (when')
L.append('  non-zero) outer UDP checksum, no padding, inner')
L.append('  IPv4/ICMP/UDP/TCP/ICMPv6 checksums (inner ICMP checksum of fragments not checked: it spans fragments).')
L.append('- traffic from A: ICMP echo 56 B payload (first one triggers ARP), ICMP echo 3000 B payload (inner')
L.append('  fragmentation at MTU 1450), UDP 10.0.0.1:40999 -> 10.0.0.2:9999 (closed -> ICMP port unreachable),')
L.append('  TCP 10.0.0.1:40080 -> :80 (closed -> RST), TCP 10.0.0.1:48080 -> :8080 sending "hello" then FIN,')
L.append('  ICMP echo on VNI 43, ICMPv6 echo to fd00::2 (-> NS to solicited-node multicast). Echo payload byte i = i & 0xff.')
L.append('- not stable across runs: outer UDP source port (hash: per-boot random seed, and for TCP/UDP socket traffic')
L.append('  a per-socket random txhash) and with it the outer UDP checksum, outer/inner IPv4 ident and the IPv4')
L.append('  header checksums, TCP sequence numbers and timestamps. The sequence of captured frames is stable.')
L.append('')
L.append('## Files')
L.append('')
L.append('| file | direction | outer src -> dst IP | outer UDP sport | UDP csum zero | VNI | inner src MAC -> dst MAC | inner ethertype | inner summary | total len |')
L.append('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
for name, *_ in WANT:
    d = chosen[name]
    L.append('| `%s.bin` | %s | %s -> %s | %d | %s | %d | %s -> %s | %#06x | %s | %d |' % (
        name, d['dir'], d['osrc'], d['odst'], d['sport'], yn(d['ucs'] == 0), d['vni'], d['imacs'], d['imacd'],
        d['etype'], d['summary'].replace('|', '\\|'), d['len']))
L.append('')
L.append('## Outer headers')
L.append('')
L.append('| file | outer src MAC -> dst MAC | IPv4 ident | DF | TTL | TOS | UDP csum | inner frame len | padding |')
L.append('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
for name, *_ in WANT:
    d = chosen[name]
    L.append('| `%s.bin` | %s -> %s | %#06x | %s | %d | %#04x | %#06x | %d | %d |' % (
        name, d['omacs'], d['omacd'], d['ident'], yn(d['df']), d['ttl'], d['tos'], d['ucs'], d['inner_len'], d['pad']))
L.append('')
L.append('## Kernel behaviour observed over all %d VXLAN frames of the capture' % len(rows_all))
L.append('')
L.append('- outer UDP source ports: min %d, max %d, %d distinct (dst port always 4789)' % (sports[0], sports[-1], len(set(sports))))
L.append('- outer UDP checksum zero in %d/%d frames' % (sum(d['ucs'] == 0 for d in rows_all), len(rows_all)))
L.append('- outer DF set in %d/%d frames; outer TTL values %s; outer TOS values %s; outer IPv4 fragments: %d' % (
    sum(d['df'] for d in rows_all), len(rows_all), sorted({d['ttl'] for d in rows_all}),
    sorted({d['tos'] for d in rows_all}), sum(d['ofrag'] != 0 for d in rows_all)))
for dirn in ('A->B', 'B->A'):
    ids = [d['ident'] for d in rows_all if d['dir'].startswith(dirn)]
    L.append('- outer IPv4 ident, %s in capture order: %s' % (dirn, ' '.join('%#06x' % x for x in ids)))
L.append('- padding after the outer IPv4 packet: %s; smallest frame %d bytes (inner %d bytes, unpadded)' % (
    'none' if all(d['pad'] == 0 for d in rows_all) else 'present', min(d['len'] for d in rows_all),
    min(d['inner_len'] for d in rows_all)))
L.append('- non-VXLAN frames on the underlay (e.g. underlay ARP), not saved: %d' % skipped_non_vxlan)
L.append('')
L.append('## All VXLAN frames captured (saved ones named)')
L.append('')
L.append('| # | saved as | direction | VNI | sport | ident | len | inner |')
L.append('| --- | --- | --- | --- | --- | --- | --- | --- |')
for d in rows_all:
    L.append('| %d | %s | %s | %d | %d | %#06x | %d | %s |' % (d['idx'], d.get('name', ''), d['dir'], d['vni'], d['sport'],
             d['ident'], d['len'], d['summary'].replace('|', '\\|')))
open(os.path.join(outdir, 'README.md'), 'w').write('\n'.join(L) + '\n')
print('\n'.join(L))
EOF

# ---------------------------------------------------------------------------------------------------
# topology
# ---------------------------------------------------------------------------------------------------
ip netns add "$HA"
ip netns add "$HB"
for ns in "$HA" "$HB"; do
  # IPv6 off by default in these namespaces (no link-local, RS, DAD or MLD noise)
  ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'
  ip -n "$ns" link set lo up
done
ip link add ${P}uA netns "$HA" type veth peer name ${P}uB netns "$HB"
ip -n "$HA" addr add 198.18.0.1/24 dev ${P}uA
ip -n "$HB" addr add 198.18.0.2/24 dev ${P}uB
ip netns exec "$HA" python3 -c "$PY_TXCSUM_OFF" ${P}uA
ip netns exec "$HB" python3 -c "$PY_TXCSUM_OFF" ${P}uB
ip -n "$HA" link set ${P}uA address 02:00:c6:12:00:01
ip -n "$HB" link set ${P}uB address 02:00:c6:12:00:02
ip -n "$HA" link set ${P}uA up
ip -n "$HB" link set ${P}uB up

vx() { # ns dev vni local remote mac addr
  local ns=$1 dev=$2 vni=$3 loc=$4 rem=$5 mac=$6 addr=$7
  ip -n "$ns" link add "$dev" type vxlan id "$vni" dstport 4789 local "$loc"
  ip -n "$ns" link set "$dev" address "$mac" mtu 1450
  ip -n "$ns" addr add "$addr" dev "$dev"
  bridge -n "$ns" fdb append 00:00:00:00:00:00 dev "$dev" dst "$rem"
}
vx "$HA" ${P}vA 42 198.18.0.1 198.18.0.2 02:42:0a:00:00:01 10.0.0.1/24
vx "$HB" ${P}vB 42 198.18.0.2 198.18.0.1 02:42:0a:00:00:02 10.0.0.2/24
vx "$HA" ${P}wA 43 198.18.0.1 198.18.0.2 02:42:0a:00:01:01 10.0.1.1/24
vx "$HB" ${P}wB 43 198.18.0.2 198.18.0.1 02:42:0a:00:01:02 10.0.1.2/24
# IPv6 only on the VNI 42 devices: static address, no DAD, no link-local
for s in A B; do
  ns=${P}h$s dev=${P}v$s
  ip -n "$ns" link set "$dev" addrgenmode none
  ip netns exec "$ns" sh -c "echo 0 > /proc/sys/net/ipv6/conf/$dev/accept_dad; echo 0 > /proc/sys/net/ipv6/conf/$dev/disable_ipv6"
done
ip -n "$HA" -6 addr add fd00::1/64 dev ${P}vA nodad
ip -n "$HB" -6 addr add fd00::2/64 dev ${P}vB nodad
for s in A B; do
  ip -n ${P}h$s link set ${P}v$s up
  ip -n ${P}h$s link set ${P}w$s up
done

# TCP server in B
ip netns exec "$HB" python3 -c "$PY_SERVER" "$TMP/server.ready" "$TMP/server.got" &
PIDS+=($!)
# let the MLD reports triggered by joining ff02::1:ffxx:x (sent within ~1 s, repeated once) pass
# before the capture starts, so the capture is reproducible
sleep 3

# ---------------------------------------------------------------------------------------------------
# capture + traffic
# ---------------------------------------------------------------------------------------------------
ip netns exec "$HB" python3 -c "$PY_CAPTURE" ${P}uB "$TMP/capture.raw" "$TMP/capture.ready" &
CAP_PID=$!
PIDS+=($CAP_PID)
for _ in $(seq 100); do [ -e "$TMP/capture.ready" ] && [ -e "$TMP/server.ready" ] && break; sleep 0.05; done
[ -e "$TMP/capture.ready" ] || { echo "capture did not start" >&2; exit 1; }
[ -e "$TMP/server.ready" ] || { echo "server did not start" >&2; exit 1; }

for step in ping bigping udp tcp80 tcp8080 ping43 ping6; do
  ip netns exec "$HA" python3 -c "$PY_TRAFFIC" "$step"
  sleep 0.3
done
[ "$(cat "$TMP/server.got")" = hello ] || { echo "server did not receive hello" >&2; exit 1; }
sleep 0.5
kill "$CAP_PID"; wait "$CAP_PID" || true

LINKINFO=$(ip -n "$HA" -d link show ${P}vA; ip -n "$HA" -d link show ${P}wA)
LINKINFO=${LINKINFO//$P/}   # drop the per-run prefix from interface names
python3 -c "$PY_DECODE" "$TMP/capture.raw" "$OUT" "$(uname -r)" "sudo ./capture-kernel.sh  (run from dataplane/testdata/)" "$LINKINFO"
echo "wrote $(ls "$OUT"/*.bin | wc -l) frames + README.md to $OUT"

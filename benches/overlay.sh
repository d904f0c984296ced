#!/usr/bin/env bash
# End-to-end overlay throughput, Docker topology, in one run: two "hosts" (namespaces joined by
# a veth underlay, 198.18.0.1 <-> 198.18.0.2), each with an overlay namespace holding br0 and a
# VXLAN port (VNI 42, UDP 4789, static fdb + neigh entries), and a container on br0 (MTU 1450).
# The VXLAN port is the kernel vxlan device or a vxtap TAP, per side:
#   kernel<->kernel   the reference (same as ../shared/kernel-overlay.sh)
#   vxtap<->vxtap     both hosts run vxtap
#   vxtap<->kernel    host A runs vxtap, host B the kernel device (wire interop)
# Prints iperf3 TCP throughput (container A -> container B) for each, plus vxtap/kernel ratios.
# Usage: sudo benches/overlay.sh [SECONDS]     (builds vxtap in release mode first)
set -euo pipefail
DUR=${1:-5}
cd "$(dirname "$0")/.."
for t in iperf3 ping; do command -v $t >/dev/null || { apt-get update -qq; apt-get install -y -qq iperf3 iputils-ping >/dev/null; }; done
cargo build --release -q -p vxtap
V=$PWD/target/release/vxtap
P=ovb$$
RUN=$(mktemp -d /tmp/vxtap-bench.XXXXXX)
NS="hA hB oA oB cA cB"

teardown() {
  for pid in $(cat "$RUN"/*.pid 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  for pid in $(cat "$RUN"/*.pid 2>/dev/null); do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done
  rm -f "$RUN"/*.pid
  for n in $NS; do ip netns del ${P}$n 2>/dev/null || true; done
}
trap 'teardown; rm -rf "$RUN"' EXIT

# side kind(kernel|vxtap) local-ip container-ip container-mac
side() {
  local s=$1 kind=$2 loc=$3 cip=$4 cmac=$5
  ip -n ${P}o$s link add br0 type bridge; ip -n ${P}o$s addr add 10.0.0.1/24 dev br0
  if [ "$kind" = kernel ]; then
    ip -n ${P}h$s link add vxlan1 type vxlan id 42 dstport 4789 local $loc proxy learning
    ip -n ${P}h$s link set vxlan1 netns ${P}o$s
  else
    mkdir -p "$RUN/$s"
    ip netns exec ${P}h$s env VXTAP_RUN_DIR="$RUN/$s" "$V" daemon 2>"$RUN/$s.log" & echo $! > "$RUN/$s.pid"
    for _ in $(seq 50); do [ -S "$RUN/$s/vxtap.sock" ] && break; sleep 0.1; done
    VXTAP_RUN_DIR="$RUN/$s" "$V" link add vxlan1 id 42 proxy learning dstport 4789 netns ${P}o$s
  fi
  ip -n ${P}o$s link set vxlan1 master br0
  ip -n ${P}o$s link add veth$s mtu 1450 type veth peer name eth0 netns ${P}c$s mtu 1450
  ip -n ${P}o$s link set veth$s master br0
  for l in br0 vxlan1 veth$s lo; do ip -n ${P}o$s link set $l up; done
  ip -n ${P}c$s link set eth0 address $cmac; ip -n ${P}c$s addr add $cip/24 dev eth0
  ip -n ${P}c$s link set eth0 up; ip -n ${P}c$s link set lo up
}

# peer side kind remote-container-ip remote-mac remote-host-ip
peer() {
  local s=$1 kind=$2 ip=$3 mac=$4 dst=$5
  if [ "$kind" = kernel ]; then
    ip -n ${P}o$s neigh add $ip lladdr $mac dev vxlan1 nud permanent
    bridge -n ${P}o$s fdb add $mac dev vxlan1 self dst $dst vni 42 port 4789
  else
    VXTAP_RUN_DIR="$RUN/$s" "$V" neigh add $ip lladdr $mac dev vxlan1
    VXTAP_RUN_DIR="$RUN/$s" "$V" fdb add $mac dev vxlan1 self dst $dst vni 42 port 4789
  fi
}

# measure kind-A kind-B: prints Gbit/s of TCP from container A to container B
measure() {
  local ka=$1 kb=$2
  for n in $NS; do ip netns add ${P}$n; ip netns exec ${P}$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
  ip link add ${P}uA netns ${P}hA type veth peer name ${P}uB netns ${P}hB
  ip -n ${P}hA addr add 198.18.0.1/24 dev ${P}uA; ip -n ${P}hA link set ${P}uA up; ip -n ${P}hA link set lo up
  ip -n ${P}hB addr add 198.18.0.2/24 dev ${P}uB; ip -n ${P}hB link set ${P}uB up; ip -n ${P}hB link set lo up
  side A $ka 198.18.0.1 10.0.0.2 02:42:0a:00:00:02
  side B $kb 198.18.0.2 10.0.0.3 02:42:0a:00:00:03
  peer A $ka 10.0.0.3 02:42:0a:00:00:03 198.18.0.2
  peer B $kb 10.0.0.2 02:42:0a:00:00:02 198.18.0.1
  ip netns exec ${P}cA ping -c 2 -W 1 10.0.0.3 >/dev/null || { echo "overlay $ka<->$kb: no ping" >&2; teardown; echo 0; return; }
  ip netns exec ${P}cB iperf3 -s -1 -D -p 5201; sleep 0.5
  ip netns exec ${P}cA iperf3 -c 10.0.0.3 -p 5201 -t "$DUR" -J |
    python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; print("%.2f" % (e["sum_received"]["bits_per_second"]/1e9))'
  teardown
}

printf '%-16s %s\n' "overlay" "TCP Gbit/s (${DUR}s, 1 stream)"
declare -A r
for pair in kernel:kernel vxtap:vxtap vxtap:kernel; do
  r[$pair]=$(measure ${pair%:*} ${pair#*:})
  printf '%-16s %s\n' "${pair%:*}<->${pair#*:}" "${r[$pair]}"
done
python3 - "${r[kernel:kernel]}" "${r[vxtap:vxtap]}" "${r[vxtap:kernel]}" <<'PY'
import sys
k, vv, vk = map(float, sys.argv[1:])
print(f"vxtap<->vxtap / kernel: {vv / k:.2f}   vxtap<->kernel / kernel: {vk / k:.2f}" if k else "kernel baseline failed")
PY

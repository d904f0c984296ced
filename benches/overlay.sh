#!/usr/bin/env bash
# End-to-end overlay benchmark (issue 5): vxtap next to the kernel vxlan device, in one run.
#
# Topology, built the way Docker builds it (same as ../shared/kernel-overlay.sh): two "hosts"
# (namespaces hA, hB) joined by a veth underlay 198.18.0.1 <-> 198.18.0.2; in each host an overlay
# namespace (oA, oB) holding br0 and a VXLAN port (VNI 42, UDP 4789, static fdb + neigh entries),
# and a "container" namespace (cA, cB) on br0 with MTU 1450. The VXLAN port is, per configuration:
#   kernel        kernel vxlan device on both hosts (the reference)
#   vxtap         vxtap on both hosts, offloads on (the default)
#   vxtap-off     vxtap on both hosts, `offload off` (shows what the offloads buy)
#   vxtap-kernel  host A vxtap (offloads on), host B kernel device (wire interop)
#   vxtap-nofilter  vxtap on both hosts, `--underlay-filter off` (every datagram to userspace)
#
# Metrics, container A -> container B, per configuration and run:
#   TCP 1 stream and 4 streams (iperf3, receiver Gbit/s)
#   UDP 1400-byte datagrams: highest rate with < 1% loss (bounded bisection over short probes).
#     iperf3 gets UDP_BUF socket buffers (-w) so that loss measures the data plane rather than the
#     receiving iperf3 being descheduled on a busy 2-core machine (the 208 KB default holds ~2 ms)
#   ping RTT p50 / p99 (PINGS pings at 10 ms intervals)
#   TCP 1 stream under a flood (issue 12), with FLOOD=on (default) or only: a third namespace hX,
#     an "unknown host" on its own veth to host B (198.19.0.9 -> 198.19.0.2), runs udp-flood
#     (src/bin/udp-flood.rs) at FLOOD_RATE datagrams/s at host B's port 4789, half garbage and
#     half well-formed VXLAN for VNI 42 from that unknown VTEP, during a second 1-stream TCP test;
#     reported as the rate reached and the throughput kept, % of the flood-free 1-stream figure.
#     FLOOD=only measures just the two TCP tests.
#   CPU s/GB during the 1-stream TCP test:
#     - vxtap daemons: utime+stime of every daemon thread (/proc/PID/stat), both hosts
#     - machine: system+irq+softirq of all cores (/proc/stat), for every column, a different
#       and noisier measure (includes the TCP stacks, veth, bridge, and anything else running)
# Each configuration is rebuilt from scratch for each run; RUNS runs (default 3) in rotating
# order (run 1: kernel vxtap vxtap-off ...; run 2: the last one first; ...). The table shows
# medians. Progress goes to stderr, the report to stdout.
#
# Usage: sudo benches/overlay.sh [TCP-SECONDS]
# Env:   DUR=5 (TCP seconds)  UDP_DUR=2 (seconds per UDP probe)  UDP_PROBES=4  UDP_BUF=4M
#        PINGS=200  RUNS=3
#        CONFIGS="kernel vxtap vxtap-off vxtap-kernel"  VXTAP=path/to/vxtap (skips the build)
#        THREADS=N (vxtap daemon worker threads; default: the daemon's own, one per core)
#        FLOOD=on|off|only  FLOOD_RATE=150000 (datagrams/s)  FLOOD_BIN=path/to/udp-flood
set -euo pipefail

DUR=${DUR:-${1:-5}}                    # (a first argument also sets it, as the README shows)
UDP_DUR=${UDP_DUR:-2}
UDP_PROBES=${UDP_PROBES:-4}
UDP_BUF=${UDP_BUF:-4M}
PINGS=${PINGS:-200}
RUNS=${RUNS:-3}
CONFIGS=${CONFIGS:-kernel vxtap vxtap-off vxtap-kernel}
THREADS=${THREADS:-}
FLOOD=${FLOOD:-on}
FLOOD_RATE=${FLOOD_RATE:-150000}
CMDLINE="$0${*:+ $*}"
case $FLOOD in on|off|only) ;; *) echo "overlay.sh: FLOOD must be on, off or only (got '$FLOOD')" >&2; exit 2 ;; esac
for v in DUR UDP_DUR UDP_PROBES PINGS RUNS THREADS FLOOD_RATE; do
  case ${!v} in *[!0-9]*) echo "overlay.sh: $v must be a whole number (got '${!v}')" >&2; exit 2 ;; esac
done

cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "overlay.sh: needs root (namespaces)" >&2; exit 1; }
for t in iperf3 ping bridge; do
  command -v $t >/dev/null || { apt-get update -qq; apt-get install -y -qq iperf3 iputils-ping iproute2 >/dev/null; }
done

P=ovb$$                                # namespace / interface prefix, unique to this run
RUN=$(mktemp -d /tmp/vxtap-bench.XXXXXX)
RESULTS=$RUN/results.tsv               # run  config  metric  value
NS="hA hB oA oB cA cB hX"
HZ=$(getconf CLK_TCK)
START=$(date +%s)

log() { printf '[%3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# --- cleanup ------------------------------------------------------------------------------------

# Stop the vxtap daemons (SIGTERM, then SIGKILL), then every process left in our namespaces
# (iperf3 servers), then delete the namespaces. Idempotent; safe from traps.
teardown() {
  local pid n i
  for pid in $(cat "$RUN"/*.pid 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  for pid in $(cat "$RUN"/*.pid 2>/dev/null); do
    for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$RUN"/*.pid "$RUN/A" "$RUN/B"   # stale admin sockets would fool the next start
  for n in $NS; do
    [ -e "/run/netns/${P}$n" ] || continue
    for pid in $(ip netns pids "${P}$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "${P}$n" 2>/dev/null || true
  done
}
# kill_tree PID: PID and all its descendants (children first found, then killed top-down)
kill_tree() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
  kill "$1" 2>/dev/null || true
}
on_exit() {
  local rc=$?
  set +e
  [ -n "${MEASURING:-}" ] && kill_tree "$MEASURING"
  teardown
  rm -rf "$RUN"
  if ip netns list | grep -q "^${P}"; then
    echo "overlay.sh: namespaces left behind: $(ip netns list | grep "^${P}" | tr '\n' ' ')" >&2
  fi
  exit $rc
}
# Each measurement runs in the background while this shell waits: `wait` returns at once on a
# trapped signal, whereas a foreground ping/iperf3 would swallow Ctrl-C (they catch SIGINT and
# exit normally, and bash then ignores the interrupt).
MEASURING=
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# --- build --------------------------------------------------------------------------------------

if [ -n "${VXTAP:-}" ]; then
  V=$VXTAP
else
  log "building vxtap (cargo build --release -p vxtap)"
  cargo build --release -q -p vxtap
  V=$PWD/target/release/vxtap
fi
[ -x "$V" ] || die "no vxtap binary at $V"
if [ "$FLOOD" != off ]; then
  if [ -n "${FLOOD_BIN:-}" ]; then
    F=$FLOOD_BIN
  else
    log "building the flood sender (cargo build --release -p vxtap-suite --bin udp-flood)"
    cargo build --release -q -p vxtap-suite --bin udp-flood
    F=$PWD/target/release/udp-flood
  fi
  [ -x "$F" ] || die "no udp-flood binary at $F"
fi

# --- topology -----------------------------------------------------------------------------------

vx() { local s=$1; shift; VXTAP_RUN_DIR="$RUN/$s" "$V" "$@"; }

# side A|B kind(kernel|vxtap) offload(on|off) filter(on|off) local-underlay-ip container-ip container-mac
side() {
  local s=$1 kind=$2 off=$3 filter=$4 loc=$5 cip=$6 cmac=$7 i
  ip -n ${P}o$s link add br0 type bridge
  ip -n ${P}o$s addr add 10.0.0.1/24 dev br0
  if [ "$kind" = kernel ]; then
    ip -n ${P}h$s link add vxlan1 type vxlan id 42 dstport 4789 local $loc proxy l2miss l3miss learning
    ip -n ${P}h$s link set vxlan1 netns ${P}o$s
  else
    mkdir -p "$RUN/$s"
    # ip netns exec and env both exec, so $! is the daemon's own pid
    ip netns exec ${P}h$s env VXTAP_RUN_DIR="$RUN/$s" "$V" daemon ${THREADS:+--threads $THREADS} --underlay-filter $filter \
      >"$RUN/$s.log" 2>&1 &
    echo $! >"$RUN/$s.pid"
    for i in $(seq 50); do [ -S "$RUN/$s/vxtap.sock" ] && break; sleep 0.1; done
    [ -S "$RUN/$s/vxtap.sock" ] || { cat "$RUN/$s.log" >&2; die "vxtap daemon on host $s did not start"; }
    local extra=()
    [ "$off" = off ] && extra=(offload off)
    vx $s link add vxlan1 id 42 proxy learning dstport 4789 netns ${P}o$s "${extra[@]}" >/dev/null
  fi
  ip -n ${P}o$s link set vxlan1 master br0
  ip -n ${P}o$s link add veth$s mtu 1450 type veth peer name eth0 netns ${P}c$s mtu 1450
  ip -n ${P}o$s link set veth$s master br0
  for l in br0 vxlan1 veth$s lo; do ip -n ${P}o$s link set $l up; done
  ip -n ${P}c$s link set eth0 address $cmac
  ip -n ${P}c$s addr add $cip/24 dev eth0
  ip -n ${P}c$s link set eth0 up
  ip -n ${P}c$s link set lo up
}

# peer side kind remote-container-ip remote-container-mac remote-underlay-ip
peer() {
  local s=$1 kind=$2 ip=$3 mac=$4 dst=$5
  if [ "$kind" = kernel ]; then
    ip -n ${P}o$s neigh add $ip lladdr $mac dev vxlan1 nud permanent
    bridge -n ${P}o$s fdb add $mac dev vxlan1 self dst $dst vni 42 port 4789
  else
    vx $s neigh add $ip lladdr $mac dev vxlan1 >/dev/null
    vx $s fdb add $mac dev vxlan1 self dst $dst vni 42 port 4789 >/dev/null
  fi
}

# kinds CONFIG -> "kindA kindB offload filter"
kinds() {
  case $1 in
    kernel) echo "kernel kernel on on" ;;
    vxtap) echo "vxtap vxtap on on" ;;
    vxtap-off) echo "vxtap vxtap off on" ;;
    vxtap-kernel) echo "vxtap kernel on on" ;;
    vxtap-nofilter) echo "vxtap vxtap on off" ;;
    *) die "unknown configuration '$1' (kernel vxtap vxtap-off vxtap-kernel vxtap-nofilter)" ;;
  esac
}

# build CONFIG: the whole two-host topology, fresh; fails loudly if the containers cannot ping
build() {
  local ka kb off filter n i
  read -r ka kb off filter <<<"$(kinds "$1")"
  for n in $NS; do
    ip netns add ${P}$n
    ip netns exec ${P}$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip link add ${P}uA netns ${P}hA type veth peer name ${P}uB netns ${P}hB
  ip -n ${P}hA addr add 198.18.0.1/24 dev ${P}uA
  ip -n ${P}hB addr add 198.18.0.2/24 dev ${P}uB
  for s in A B; do ip -n ${P}h$s link set ${P}u$s up; ip -n ${P}h$s link set lo up; done
  # the unknown host of the flood test, on a link of its own to host B
  ip link add ${P}uX netns ${P}hX type veth peer name ${P}uY netns ${P}hB
  ip -n ${P}hX addr add 198.19.0.9/24 dev ${P}uX
  ip -n ${P}hB addr add 198.19.0.2/24 dev ${P}uY
  ip -n ${P}hX link set ${P}uX up; ip -n ${P}hX link set lo up; ip -n ${P}hB link set ${P}uY up
  side A $ka $off $filter 198.18.0.1 10.0.0.2 02:42:0a:00:00:02
  side B $kb $off $filter 198.18.0.2 10.0.0.3 02:42:0a:00:00:03
  peer A $ka 10.0.0.3 02:42:0a:00:00:03 198.18.0.2
  peer B $kb 10.0.0.2 02:42:0a:00:00:02 198.18.0.1
  for i in $(seq 10); do
    ip netns exec ${P}cA ping -c 1 -W 1 10.0.0.3 >/dev/null 2>&1 && break
    [ $i = 10 ] && { cat "$RUN"/*.log 2>/dev/null >&2; die "$1: container A cannot ping container B over the overlay"; }
  done
  # one iperf3 server per topology (teardown kills it with everything else in the namespace)
  ip netns exec ${P}cB iperf3 -s -D -p 5201
  for i in $(seq 30); do
    ip netns exec ${P}cB ss -Hltn 'sport = :5201' | grep -q . && return
    sleep 0.1
  done
  die "$1: iperf3 server in container B is not listening"
}

# --- measurements -------------------------------------------------------------------------------

# CPU ticks (utime+stime) of the running vxtap daemons, all threads, live and exited
daemon_ticks() {
  local t=0 pid f
  for pid in $(cat "$RUN"/*.pid 2>/dev/null); do
    f=$(sed 's/.*) //' "/proc/$pid/stat")   # fields after "(comm) ": state is field 3
    set -- $f
    t=$((t + ${12} + ${13}))                # utime, stime: fields 14, 15
  done
  echo $t
}
# machine-wide system + irq + softirq ticks, all cores
machine_ticks() { awk '/^cpu /{print $4 + $7 + $8}' /proc/stat; }

# iperf3 client in container A; extra args follow; prints its JSON. One retry, in case the
# server is still finishing the previous test ("the server is busy").
client() {
  local secs=$1 out try; shift
  for try in 1 2; do
    # (stderr: drop iperf3's warning that 1400-byte UDP blocks exceed the control connection's
    # MSS; 1400 + 28 fits the 1450 MTU, so nothing fragments)
    if out=$(timeout --foreground $((secs + 30)) ip netns exec ${P}cA \
      iperf3 -c 10.0.0.3 -p 5201 -t "$secs" -J "$@" 2> >(grep -v 'exceeds TCP MSS' >&2)) &&
      python3 -c 'import json,sys; e=json.loads(sys.argv[1]); sys.exit("error" in e or "sum_received" not in e["end"])' "$out"
    then
      echo "$out"; return
    fi
    [ $try = 1 ] && { log "iperf3 $* failed, retrying once"; sleep 1; }
  done
  echo "$out" | grep '"error"' >&2 || echo "$out" | tail -c 2000 >&2
  die "iperf3 $* failed twice"
}

# tcp STREAMS -> "Gbit/s bytes" (receiver side)
tcp() {
  client "$DUR" -P "$1" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read() or exit(1))["end"]["sum_received"]
print("%.3f %d" % (s["bits_per_second"] / 1e9, s["bytes"]))'
}

# udp_probe RATE_BPS (0 = unlimited) -> "received_Gbit/s lost_percent sent_bps"
udp_probe() {
  client "$UDP_DUR" -u -l 1400 -w "$UDP_BUF" -b "$1" | python3 -c '
import json, sys
e = json.loads(sys.stdin.read() or exit(1))["end"]
r, s = e["sum_received"], e["sum_sent"]
print("%.3f %.3f %d" % (r["bits_per_second"] / 1e9, r["lost_percent"], s["bits_per_second"]))'
}

gbps() { if [ "$1" = 0 ]; then echo unlimited; else python3 -c "print('%.2f Gbit/s' % ($1 / 1e9))"; fi; }

# udp_max LABEL: highest rate with < 1% loss, in at most UDP_PROBES probes. First probe unlimited:
# if that loses < 1%, the sender is the limit and its received rate is the answer. Otherwise it
# received R: bisect between the best passing rate (0 at first) and a ceiling of
# min(offered, 1.25 R), starting at 0.9 R. Prints the best received Gbit/s under 1% loss (so a
# conservative figure: never more than what a probe actually carried).
udp_max() {
  local label=$1 lo=0 hi=0 best=0 rate=0 n out got loss sent pass
  for n in $(seq "$UDP_PROBES"); do
    out=$(udp_probe "$rate")
    read -r got loss sent <<<"$out"
    pass=$(python3 -c "print(int($loss < 1.0))")
    log "$label UDP probe $n/$UDP_PROBES: offered $(gbps "$rate"), received $got Gbit/s, loss $loss%"
    if [ "$pass" = 1 ]; then
      best=$(python3 -c "print(max($best, $got))")
      [ "$rate" = 0 ] && break          # unlimited and lossless: the sender is the limit
      lo=$rate
    elif [ "$rate" = 0 ]; then
      hi=$(python3 -c "print(min($sent, int($got * 1e9 * 1.25)))")
    else
      hi=$rate
    fi
    if [ "$n" = 1 ]; then
      rate=$(python3 -c "print(max(int($got * 1e9 * 0.9), 1000000))")
    else
      rate=$(python3 -c "print(int(($lo + $hi) / 2))")
    fi
  done
  [ "$best" != 0 ] || log "$label WARNING: no UDP probe stayed under 1% loss; recording 0"
  echo "$best"
}

# ping_rtt -> "p50_ms p99_ms lost"
ping_rtt() {
  { ip netns exec ${P}cA ping -n -c "$PINGS" -i 0.01 -W 1 10.0.0.3 2>&1 || true; } | python3 -c '
import math, re, sys
t = sorted(float(m.group(1)) for m in re.finditer(r"time=([0-9.]+) ms", sys.stdin.read()))
n = int(sys.argv[1])
if not t:
    print("nan nan %d" % n); sys.exit()
q = lambda p: t[max(0, math.ceil(p / 100 * len(t)) - 1)]   # nearest rank
print("%.3f %.3f %d" % (q(50), q(99), n - len(t)))' "$PINGS"
}

# flood RUN CONFIG FLOOD_FREE_GBPS: the 1-stream TCP test again while hX floods host B's port 4789
flood() {
  local run=$1 cfg=$2 free=$3 tag="run $1/$RUNS $2:" fpid out g bytes sent
  log "$tag TCP 1 stream under a flood of $FLOOD_RATE datagrams/s, ${DUR}s"
  ip netns exec ${P}hX "$F" 198.19.0.2:4789 "$FLOOD_RATE" $((DUR + 2)) >"$RUN/flood.out" &
  fpid=$!
  sleep 1
  out=$(tcp 1)
  read -r g bytes <<<"$out"
  wait "$fpid" || die "$tag udp-flood failed"
  sent=$(sed -n 's/.*: \([0-9]*\)\/s$/\1/p' "$RUN/flood.out")
  record "$run" "$cfg" tcp1_flood "$g"
  record "$run" "$cfg" flood_pps "$sent"
  record "$run" "$cfg" kept "$(python3 -c "print('%.1f' % (100 * $g / $free))")"
  log "$tag TCP 1 stream under flood = $g Gbit/s ($(python3 -c "print('%.0f' % (100 * $g / $free))")% of $free; $(cat "$RUN/flood.out"))"
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# measure RUN CONFIG: one configuration, all metrics, on a fresh topology
measure() {
  local run=$1 cfg=$2 tag="run $1/$RUNS $2:" d0 d1 m0 m1 out g bytes p50 p99 lost
  log "$tag building topology"
  build "$cfg"

  if [ "$FLOOD" = only ]; then
    log "$tag TCP 1 stream, ${DUR}s"
    out=$(tcp 1)
    read -r g bytes <<<"$out"
    record "$run" "$cfg" tcp1 "$g"
    log "$tag TCP 1 stream = $g Gbit/s"
    flood "$run" "$cfg" "$g"
    teardown
    return
  fi

  # ping first, on the idle overlay
  log "$tag ping RTT, $PINGS pings"
  out=$(ping_rtt)
  read -r p50 p99 lost <<<"$out"
  [ "$lost" = 0 ] || log "$tag WARNING: $lost of $PINGS pings lost"
  record "$run" "$cfg" p50 "$p50"
  record "$run" "$cfg" p99 "$p99"
  log "$tag ping p50 $p50 ms, p99 $p99 ms"

  log "$tag TCP 1 stream, ${DUR}s"
  d0=$(daemon_ticks); m0=$(machine_ticks)
  out=$(tcp 1)
  read -r g bytes <<<"$out"
  d1=$(daemon_ticks); m1=$(machine_ticks)
  record "$run" "$cfg" tcp1 "$g"
  record "$run" "$cfg" cpu_machine "$(python3 -c "print('%.3f' % (($m1 - $m0) / $HZ / ($bytes / 1e9)))")"
  if [ "$cfg" != kernel ]; then
    record "$run" "$cfg" cpu_daemon "$(python3 -c "print('%.3f' % (($d1 - $d0) / $HZ / ($bytes / 1e9)))")"
  fi
  log "$tag TCP 1 stream = $g Gbit/s ($((bytes / 1000000)) MB; CPU: daemons $(((d1 - d0) * 1000 / HZ)) ms, machine sys+irq+softirq $(((m1 - m0) * 1000 / HZ)) ms)"

  [ "$FLOOD" = on ] && flood "$run" "$cfg" "$g"

  log "$tag TCP 4 streams, ${DUR}s"
  out=$(tcp 4)
  read -r g bytes <<<"$out"
  record "$run" "$cfg" tcp4 "$g"
  log "$tag TCP 4 streams = $g Gbit/s"

  log "$tag UDP 1400 B max rate < 1% loss (up to $UDP_PROBES x ${UDP_DUR}s)"
  g=$(udp_max "$tag")
  record "$run" "$cfg" udp "$g"
  log "$tag UDP = $g Gbit/s"

  teardown
}

# --- main ---------------------------------------------------------------------------------------

read -r -a CFG <<<"$CONFIGS"
for c in "${CFG[@]}"; do kinds "$c" >/dev/null; done
: >"$RESULTS"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq "$RUNS"); do
  # rotate: run 1 in the given order, each later run starts with the previous run's last config
  k=$(((run - 1) % ${#CFG[@]}))
  order=("${CFG[@]:${#CFG[@]}-k}" "${CFG[@]:0:${#CFG[@]}-k}")
  log "run $run/$RUNS, order: ${order[*]}"
  for c in "${order[@]}"; do
    measure "$run" "$c" &
    MEASURING=$!
    wait "$MEASURING"
    MEASURING=
  done
done
ELAPSED=$(($(date +%s) - START))
log "done in ${ELAPSED}s"

# --- report -------------------------------------------------------------------------------------

echo "# vxtap overlay benchmark"
echo
echo "- command: \`$CMDLINE\` (DUR=$DUR UDP_DUR=$UDP_DUR UDP_PROBES=$UDP_PROBES UDP_BUF=$UDP_BUF PINGS=$PINGS RUNS=$RUNS FLOOD=$FLOOD FLOOD_RATE=$FLOOD_RATE${THREADS:+ THREADS=$THREADS})"
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); kernel: $(uname -r); $(nproc) cores; load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- vxtap: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes'); run time ${ELAPSED}s"
echo
python3 - "$RESULTS" "$RUNS" "${CFG[@]}" <<'PY'
import statistics, sys
from collections import defaultdict

path, runs, cfgs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
vals = defaultdict(list)                     # (cfg, metric) -> values in run order
for line in open(path):
    run, cfg, metric, v = line.split("\t")
    vals[cfg, metric].append(float(v))

rows = [  # metric, label, format
    ("tcp1", "TCP 1 stream, Gbit/s", "%.2f"),
    ("tcp4", "TCP 4 streams, Gbit/s", "%.2f"),
    ("udp", "UDP 1400 B, max rate < 1% loss, Gbit/s", "%.2f"),
    ("p50", "ping RTT p50, ms", "%.3f"),
    ("p99", "ping RTT p99, ms", "%.3f"),
    ("tcp1_flood", "TCP 1 stream under a flood, Gbit/s", "%.2f"),
    ("flood_pps", "flood reached, datagrams/s", "%.0f"),
    ("kept", "throughput kept under the flood, % of flood-free", "%.1f"),
    ("cpu_daemon", "CPU s/GB, vxtap daemons (utime+stime, all threads)¹", "%.2f"),
    ("cpu_machine", "CPU s/GB, whole machine system+irq+softirq²", "%.2f"),
]
names = {"kernel": "kernel", "vxtap": "vxtap", "vxtap-off": "vxtap offload off",
         "vxtap-kernel": "vxtap<->kernel", "vxtap-nofilter": "vxtap filter off"}

def med(cfg, metric):
    v = vals.get((cfg, metric))
    return statistics.median(v) if v else None

ratio = "kernel" in cfgs and "vxtap" in cfgs
head = ["metric (median of %d)" % runs] + [names[c] for c in cfgs] + (["vxtap/kernel"] if ratio else [])
print("| " + " | ".join(head) + " |")
print("|---|" + "---:|" * (len(head) - 1))
rows = [r for r in rows if any((c, r[0]) in vals for c in cfgs)]
for metric, label, fmt in rows:
    cells = [label]
    for c in cfgs:
        m = med(c, metric)
        cells.append(fmt % m if m is not None else "n/a")
    if ratio:
        k, v = med("kernel", metric), med("vxtap", metric)
        cells.append("%.2f" % (v / k) if k and v is not None else "n/a")
    print("| " + " | ".join(cells) + " |")
print()
print("¹ CPU of the vxtap daemon processes on both hosts (host A only for vxtap<->kernel) over the")
print("  1-stream TCP test, per GB received. The kernel has no daemon: its vxlan work runs in softirq,")
print("  mixed with the TCP stacks, so there is no honest per-device figure (n/a).")
print("² /proc/stat system+irq+softirq of all cores over the same test, per GB: a different, coarser")
print("  measure that includes both TCP stacks, veth and bridge, and any other load on the machine;")
print("  it excludes vxtap's user time.")
print()
print("Per-run values, in run order (spread check):")
print()
print("| metric | " + " | ".join(names[c] for c in cfgs) + " |")
print("|---|" + "---|" * len(cfgs))
for metric, label, fmt in rows:
    cells = [metric]
    for c in cfgs:
        v = vals.get((c, metric))
        cells.append(" / ".join(fmt % x for x in v) if v else "n/a")
    print("| " + " | ".join(cells) + " |")
PY

#!/usr/bin/env bash
# Control-plane benchmark (issue 13): a thin wrapper over `vxtap bench-control`, which starts
# etcd-server in a namespace of its own, `vxtap sim` with N simulated hosts (real leases, the
# real schema) and real daemons in host namespaces, and prints one markdown table: new
# endpoint p50/p99 at a real daemon, store bytes read and etcd CPU per change, connect
# latency and connects/s with parallel clients, time to purge a dead host.
#
# Usage: sudo benches/control.sh [HOSTS]        e.g. sudo benches/control.sh 100,300
# Env (each maps onto a flag of `vxtap bench-control`):
#   HOSTS=100,300,1000 (--hosts; a first argument also sets it)  ENDPOINTS=10 (--endpoints)
#   ADDS=100 (--adds)  ADD_INTERVAL_MS=50 (--add-interval-ms)  TTL=10 (--ttl)
#   CLIENTS=10 (--clients)  CONNECT_SECONDS=5 (--connect-seconds)  CONNECT_POOL=25
#   SERIAL_CONNECTS=20 (--serial-connects)
#   BEFORE=path/to/old/vxtap: adds a "before" column per host count (--daemon-binary
#     before=PATH) beside this build's "after" column; build one with
#       git worktree add /tmp/before dabc0c7 && (cd /tmp/before &&
#       CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p vxtap)
#   VXTAP=path/to/vxtap (skips the build)
set -euo pipefail

cd "$(dirname "$0")/.."
if [ -n "${VXTAP:-}" ]; then
  V=$VXTAP
else
  echo "building vxtap (cargo build --release -p vxtap)" >&2
  cargo build --release -q -p vxtap
  V=${CARGO_TARGET_DIR:-$PWD/target}/release/vxtap
fi
[ -x "$V" ] || { echo "control.sh: no vxtap binary at $V" >&2; exit 1; }

args=(bench-control --hosts "${HOSTS:-${1:-100,300,1000}}")
[ -n "${ENDPOINTS:-}" ] && args+=(--endpoints "$ENDPOINTS")
[ -n "${ADDS:-}" ] && args+=(--adds "$ADDS")
[ -n "${ADD_INTERVAL_MS:-}" ] && args+=(--add-interval-ms "$ADD_INTERVAL_MS")
[ -n "${TTL:-}" ] && args+=(--ttl "$TTL")
[ -n "${CLIENTS:-}" ] && args+=(--clients "$CLIENTS")
[ -n "${CONNECT_SECONDS:-}" ] && args+=(--connect-seconds "$CONNECT_SECONDS")
[ -n "${CONNECT_POOL:-}" ] && args+=(--connect-pool "$CONNECT_POOL")
[ -n "${SERIAL_CONNECTS:-}" ] && args+=(--serial-connects "$SERIAL_CONNECTS")
if [ -n "${BEFORE:-}" ]; then
  args+=(--daemon-binary "before=$BEFORE" --daemon-binary "after=$V")
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
exec env VXTAP_COMMIT="$commit" "$V" "${args[@]}"

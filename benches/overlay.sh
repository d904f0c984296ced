#!/usr/bin/env bash
# End-to-end overlay benchmark (issues 5 and 12): a thin wrapper over `vxtap bench`, which
# builds the topology (two hosts as namespaces on a veth underlay, an overlay namespace with
# br0 and the VXLAN port per host, a container on each), measures every configuration and
# prints the table. See `vxtap bench --help`.
#
# Usage: sudo benches/overlay.sh [TCP-SECONDS]
# Env (each maps onto a flag of `vxtap bench`):
#   DUR=5 (--duration; a first argument also sets it)  RUNS=3 (--runs)
#   CONFIGS="kernel vxtap vxtap-off vxtap-kernel" (--configs, spaces or commas)
#   THREADS=N (--threads)  FLOOD=on|off|only (--flood)  FLOOD_RATE=150000 (--flood-rate)
#   UDP_DUR=2 (--udp-duration)  UDP_PROBES=4 (--udp-probes)  UDP_BUF=4M (--udp-buffer)
#   PINGS=200 (--pings)  JSON=1 (--json)  SVG=FILE (--svg)
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
[ -x "$V" ] || { echo "overlay.sh: no vxtap binary at $V" >&2; exit 1; }

args=(bench --duration "${DUR:-${1:-5}}")
[ -n "${RUNS:-}" ] && args+=(--runs "$RUNS")
[ -n "${CONFIGS:-}" ] && args+=(--configs "$(echo "$CONFIGS" | tr -s ' ' ',' | sed 's/^,//; s/,$//')")
[ -n "${THREADS:-}" ] && args+=(--threads "$THREADS")
[ -n "${FLOOD:-}" ] && args+=(--flood "$FLOOD")
[ -n "${FLOOD_RATE:-}" ] && args+=(--flood-rate "$FLOOD_RATE")
[ -n "${UDP_DUR:-}" ] && args+=(--udp-duration "$UDP_DUR")
[ -n "${UDP_PROBES:-}" ] && args+=(--udp-probes "$UDP_PROBES")
[ -n "${UDP_BUF:-}" ] && args+=(--udp-buffer "$UDP_BUF")
[ -n "${PINGS:-}" ] && args+=(--pings "$PINGS")
[ -n "${JSON:-}" ] && args+=(--json)
[ -n "${SVG:-}" ] && args+=(--svg "$SVG")

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
exec env VXTAP_COMMIT="$commit" "$V" "${args[@]}"

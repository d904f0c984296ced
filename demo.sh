#!/usr/bin/env bash
# The README's first command: installs what `vxtap demo` needs (Debian packages; apt needs
# root), builds vxtap in release mode and runs the demo: two hosts as network namespaces,
# an overlay network on a directory store, a container on each, a ping across, 5 s of TCP
# throughput, the tables, and a full cleanup (also on Ctrl-C).
# Usage: sudo ./demo.sh [--duration SECS] [--keep]
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v nsenter >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p vxtap
exec target/release/vxtap demo "$@"

#!/usr/bin/env bash
# The README's first command: installs what `vxtap demo` needs (Debian packages; apt needs
# root), builds vxtap in release mode and runs the demo: two hosts as network namespaces,
# an overlay network on a directory store, a container on each, a ping across, 5 s of TCP
# throughput, the tables, and a full cleanup (also on Ctrl-C).
# `./demo.sh docker` runs `vxtap demo docker` instead: the same hosts with a private Docker
# engine each (docker.io and busybox-static are installed too), `docker network create -d
# vxtap`, a busybox container on each host and a ping by name across them.
# Usage: sudo ./demo.sh [--duration SECS] [--keep]
#        sudo ./demo.sh docker [--keep]
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v nsenter >/dev/null || missing+=(util-linux)
if [ "${1:-}" = docker ]; then
  # dockerd 20.10 with its containerd and runc; the demo starts its own, one per host.
  command -v dockerd >/dev/null || missing+=(docker.io)
  # (busybox-static, not busybox: the image holds no libc, so the binary must be static)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  # Keep apt from starting services (a system dockerd above all) while it installs, as
  # test.sh does; the policy is removed again if this script made it.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$made_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi
cargo build --release -q -p vxtap
exec "${CARGO_TARGET_DIR:-target}/release/vxtap" demo "$@"

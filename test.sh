#!/usr/bin/env bash
# Runs every vxtap check, in the order CI runs them (.ci/run calls this script):
#   1. install what is missing (Debian packages, cargo-fuzz; apt needs root)
#   2. cargo fmt --check   3. clippy -D warnings   4. cargo test --workspace
#   5. build the fuzz targets and run each for FUZZ_SECONDS (default 30; 0 skips)
# Usage: ./test.sh            FUZZ_SECONDS=600 ./test.sh
set -euo pipefail
cd "$(dirname "$0")"
fuzz_seconds=${FUZZ_SECONDS:-30}
step() { printf '\n==> %s\n' "$*"; }

step "1/5 install what is missing"
missing=()
command -v c++ >/dev/null || missing+=(g++)
command -v python3 >/dev/null || missing+=(python3)
command -v ip >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v nsenter >/dev/null || missing+=(util-linux)
# The etcd store's tests run a real etcd (Debian's etcd-server; etcdctl is not needed: the
# TLS tests make certificates with rcgen and users and roles through etcd's JSON gateway).
command -v etcd >/dev/null || missing+=(etcd-server)
# The Docker tests start their own dockerd per test host (docker.io brings dockerd 20.10,
# containerd and runc) and build their image from busybox-static's /bin/busybox.
command -v dockerd >/dev/null || missing+=(docker.io)
# The CNI tests run a private podman per test host with its CNI backend (Debian's podman 4.3
# brings conmon and takes runc, which docker.io brings too); vxtap is the only CNI plugin
# they use (podman brings lo up itself), so containernetworking-plugins is not needed.
command -v podman >/dev/null || missing+=(podman)
# (busybox-static, not busybox: the image holds no libc, so the binary must be static)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  # Keep apt from starting services (a system dockerd above all): the tests run their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
  fi
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
if [ "$fuzz_seconds" != 0 ]; then
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
fi
echo "ok: $(cargo --version); nightly: $(cargo +nightly --version 2>/dev/null || echo none)"

step "2/5 cargo fmt --check"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

step "3/5 cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "4/5 cargo test --workspace"
cargo test --workspace

if [ "$fuzz_seconds" != 0 ]; then
  step "5/5 fuzz every target for ${fuzz_seconds}s"
  fuzz/run.sh "$fuzz_seconds"
else
  step "5/5 fuzzing skipped (FUZZ_SECONDS=0)"
fi
step "all checks passed"

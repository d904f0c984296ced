#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), one after another, starting from the
# checked-in seeds (fuzz/seeds/TARGET) with the dictionary. New inputs go to fuzz/corpus/TARGET
# (not checked in); a crash stops the run with its log, the input lands in fuzz/artifacts/TARGET.
# Usage: fuzz/run.sh [SECONDS]    Needs: cargo-fuzz and a nightly toolchain. A fuzz/Cargo.lock
# that building would change is an error (checked with cargo metadata --locked).
set -euo pipefail
seconds=${1:-30}
cd "$(dirname "$0")"
targets=$(cargo +nightly fuzz list)
# cargo-fuzz has no --locked, so the lock file is checked first with a resolution that has
# one: a fuzz/Cargo.lock that building would change fails here, before anything is built.
if ! cargo +nightly metadata --locked --format-version 1 >/dev/null; then
  echo "fuzz: fuzz/Cargo.lock is not current; run cargo +nightly fuzz build and commit it" >&2
  exit 1
fi
cargo +nightly fuzz build
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $targets; do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  status=0
  cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -dict=vxlan.dict -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target FAILED (exit $status), see fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: all targets ran ${seconds}s without a crash"

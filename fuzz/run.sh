#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30), one after another, starting from the
# checked-in seeds (fuzz/seeds/TARGET) with the dictionary. New inputs go to fuzz/corpus/TARGET
# (not checked in); a crash stops the run with its log, the input lands in fuzz/artifacts/TARGET.
# Usage: fuzz/run.sh [SECONDS]    Needs: cargo-fuzz and a nightly toolchain. With CI=true, a
# fuzz/Cargo.lock that building would change is an error.
set -euo pipefail
seconds=${1:-30}
cd "$(dirname "$0")"
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build
# cargo-fuzz has no --locked: in CI, a build that had to change the lock file fails, so the
# checked-in fuzz/Cargo.lock is always the one the targets build with.
if [ "${CI:-}" = true ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1 \
  && ! git diff --quiet -- Cargo.lock; then
  git diff --stat -- Cargo.lock >&2
  echo "fuzz: building the targets changed fuzz/Cargo.lock; commit the current one" >&2
  exit 1
fi
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

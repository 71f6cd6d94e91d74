#!/usr/bin/env bash
# Memory over one million leases (the test plan's M4): a release build of
# tests/plan.rs::memory_rss_is_flat_over_one_million_leases, which warms a
# SQLite pool of 16 with 100 000 leases, reads VmRSS, takes 1 000 000 more
# leases from 16 tasks and reads VmRSS again; it fails when RSS moved by
# more than 1 MiB and prints the figures (recorded in BENCHMARKS.md).
#
#   scripts/bench-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
if cargo test --release --features postgres,sqlite --test plan \
  memory_rss_is_flat_over_one_million_leases -- --ignored --nocapture >"$LOG" 2>&1; then
  grep -E "rss over|test result" "$LOG"
else
  cat "$LOG" >&2
  exit 1
fi

#!/usr/bin/env bash
# Line coverage of the whole suite on the real servers (the test plan asks
# for more than 80 %, issue 17 for 85 %): cargo-tarpaulin, installed from
# crates.io when absent (it needs no rustup component: its LLVM engine reads
# the profiles itself; ENGINE=ptrace is the fallback). Prints the total and
# the figure per module; writes the per-file report to target/coverage/
# (tarpaulin-report.html, tarpaulin-report.json).
#
#   scripts/coverage.sh            # about 12 min cold, 4-5 min warm, on 2 cores
#
# Not part of .ci/run: it would take CI past its 25 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh

TARPAULIN_VERSION=${TARPAULIN_VERSION:-0.37.5}
if ! cargo tarpaulin --version >/dev/null 2>&1; then
  cargo install --locked cargo-tarpaulin --version "$TARPAULIN_VERSION"
fi

# Tests that run an example's binary look for it next to their own
# directory: build the examples (as CI does) and put them where tarpaulin's
# test binaries look (the examples run uninstrumented, in their own process).
cargo build --quiet --all-features --examples
mkdir -p target/tarpaulin/debug/examples
find target/debug/examples -maxdepth 1 -type f -executable ! -name '*-*' \
  -exec cp -f {} target/tarpaulin/debug/examples/ \;

OUT=target/coverage
mkdir -p "$OUT"
# No figure from an earlier run may pass for this one's.
rm -f "$OUT/tarpaulin-report.json" "$OUT/tarpaulin-report.html"
set +e
cargo tarpaulin \
  --engine "${ENGINE:-llvm}" \
  --all-features \
  --lib --tests \
  --skip-clean \
  --target-dir target/tarpaulin \
  --exclude-files 'examples/*' 'tests/*' 'benches/*' 'target/*' \
  --out Html --out Json --output-dir "$OUT" \
  --timeout 600 \
  --no-fail-fast \
  >"$OUT/tarpaulin.log" 2>&1
status=$?
set -e
grep -E "coverage, |test result|panicked|FAILED|^error" "$OUT/tarpaulin.log" || true
[ -f "$OUT/tarpaulin-report.json" ] || { echo "coverage: tarpaulin wrote no report (exit $status); see $OUT/tarpaulin.log" >&2; exit 1; }

python3 - "$OUT/tarpaulin-report.json" "$(pwd)" <<'PY'
import json, sys, collections
files = json.load(open(sys.argv[1]))["files"]
src = sys.argv[2].rstrip("/") + "/src/"
by = collections.defaultdict(lambda: [0, 0])
total = [0, 0]
for f in files:
    path = "/".join(f["path"]).replace("//", "/")
    if not path.startswith(src):
        continue
    rel = path[len(src):]
    parts = rel.split("/")
    # A backend's folder is a module of its own (backend/diesel, ...).
    module = "/".join(parts[:2]) if parts[0] == "backend" and len(parts) > 2 else parts[0]
    by[module][0] += f["covered"]
    by[module][1] += f["coverable"]
    total[0] += f["covered"]
    total[1] += f["coverable"]
print(f"{'module':<24} {'lines':>7} {'covered':>8} {'%':>7}")
for module, (c, n) in sorted(by.items()):
    if n == 0:
        continue
    print(f"{module:<24} {n:>7} {c:>8} {100 * c / max(n, 1):>6.1f}%")
print(f"{'total':<24} {total[1]:>7} {total[0]:>8} {100 * total[0] / max(total[1], 1):>6.1f}%")
PY
# A failing test (tarpaulin's exit status) fails the script, after the figures.
exit "$status"

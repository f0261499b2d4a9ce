#!/usr/bin/env bash
# Byzantine detection rates on real processes (docs/benchmark.md, "Byzantine detection rates on
# real processes"): repeats spec appendix B scenario 2 (4 nodes, node 3 Byzantine) R times per
# mode and prints, per mode: runs, runs where all 3 honest nodes detected and excluded the
# Byzantine node, the rate, runs where every honest payload finalized (decided, for equivocate),
# the median over runs of the finality p95 measured after exclusion, and runs where all 3 honest
# nodes disconnected (banned) it.
#
# Usage (from anywhere):  bash tests/ops/byzantine-rates.sh [R] [mode,mode,...]
#   R defaults to 10; modes default to all six (flip-votes, equivocate, invalid-signatures,
#   malformed, withhold, flood); add `none` (all four honest) for the latency baseline. Each run
#   takes ~10-40 s. Uses ports 41000-47499.
#   CARGO_TARGET_DIR is honoured. TEST_BIN=path runs an already built test binary
#   (target/debug/deps/byzantine-*) without invoking cargo. The full log is kept in
#   $OUT (default /tmp/pqdag-byzantine-rates.log); the BYZRUN/BYZRATE lines are printed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-10}
modes=${2:-flip-votes,equivocate,invalid-signatures,malformed,withhold,flood}
out=${OUT:-/tmp/pqdag-byzantine-rates.log}
export PQDAG_BYZ_RUNS=$runs PQDAG_BYZ_MODES=$modes
echo "# $(date -u +%FT%TZ) R=$runs modes=$modes commit $(git -C "$repo" rev-parse --short HEAD)" | tee "$out"
if [ -n "${TEST_BIN:-}" ]; then
  (cd "$repo/engine/node" && "$TEST_BIN" --ignored --exact detection_rates --nocapture) >>"$out" 2>&1 || true
else
  (cd "$repo" && cargo test -p pqdag-node --test byzantine -- --ignored --exact detection_rates --nocapture) >>"$out" 2>&1 || true
fi
grep -E '^(BYZRUN|BYZRATE)' "$out" | sed 's/^BYZRATE //'

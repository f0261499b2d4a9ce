#!/usr/bin/env bash
# Prints the simulator's trace_hash for a fixed list of runs (plain, conflicts, crash, partition,
# Byzantine, loss). A refactor that claims "behaviour unchanged" must print the same lines before
# and after: `tools/trace-hashes.sh > before.txt`, change, `tools/trace-hashes.sh | diff before.txt -`.
set -euo pipefail
SIM="${SIM:-${CARGO_TARGET_DIR:-target}/release/sim}"
runs=(
  "--nodes 7 --seed 1 --duration 3 --rate 100"
  "--nodes 7 --seed 2 --duration 3 --rate 100"
  "--nodes 10 --seed 3 --duration 3 --rate 200 --shards 2"
  "--nodes 7 --seed 4 --duration 3 --rate 100 --conflict-ratio 0.3"
  "--nodes 10 --seed 5 --duration 3 --rate 200 --conflict-ratio 0.2 --loss 0.01"
  "--nodes 10 --seed 6 --duration 6 --rate 200 --crash 3@2-4"
  "--nodes 10 --seed 7 --duration 6 --rate 100 --crash 2@1-3 --conflict-ratio 0.2"
  "--nodes 6 --seed 8 --duration 6 --rate 100 --partition 0-2|3-5@1-3"
  "--nodes 7 --seed 9 --duration 3 --rate 100 --byzantine 0.28 --strategy flip-votes"
  "--nodes 7 --seed 10 --duration 3 --rate 100 --byzantine 0.28 --strategy equivocate"
  "--nodes 7 --seed 11 --duration 3 --rate 100 --byzantine 0.28 --strategy withhold"
  "--nodes 7 --seed 12 --duration 3 --rate 100 --byzantine 0.28 --strategy invalid-signatures"
  "--nodes 7 --seed 13 --duration 3 --rate 100 --byzantine 0.28 --strategy malformed --duplicate 0.05"
)
for r in "${runs[@]}"; do
  # shellcheck disable=SC2086
  h=$("$SIM" $r --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["trace_hash"], d.get("safety_violations", d.get("violations","?")))')
  echo "$r => $h"
done

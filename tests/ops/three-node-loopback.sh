#!/usr/bin/env bash
# Runs the walkthrough of docs/operations.md ("Walkthrough: three nodes on one machine") verbatim:
# the ```bash blocks and the hidden <!-- walkthrough:check ... --> blocks between
# <!-- walkthrough:start --> and <!-- walkthrough:end -->, in order, in one bash shell, with
# `set -euo pipefail`. A 3-node cluster on 127.0.0.2-4 built with `engine cluster-config`: checks,
# start, /health, loadgen, /metrics, finalized_set_digest agreement, adding a 4th node with a
# rolling restart, offline backup, lost disk and restore, SIGTERM with exit status 0, export.
#
# Usage (from anywhere):  cargo build --release -p pqdag-node -p pqdag-tools
#                         bash tests/ops/three-node-loopback.sh
# KEEP=1 keeps the work folder (always kept on failure).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
doc="$repo/docs/operations.md"
for b in engine loadgen; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b: cargo build --release -p pqdag-node -p pqdag-tools" >&2; exit 2; }
done
for t in curl jq timeout; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install curl jq coreutils)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/pqdag-ops.XXXXXX)
mkdir "$work/pqdag-walkthrough"
script="$work/walkthrough.sh"

# Extract the walkthrough: fenced bash blocks and hidden check comments, in document order.
awk '
  /^<!-- walkthrough:start -->/ { on = 1; next }
  /^<!-- walkthrough:end -->/   { on = 0; next }
  !on { next }
  /^```bash$/                  { inblock = 1; n++; print "echo; echo \"### walkthrough step " n "\""; next }
  /^<!-- walkthrough:check$/   { incheck = 1; n++; print "echo; echo \"### walkthrough check " n "\""; next }
  inblock && /^```$/           { inblock = 0; next }
  incheck && /^-->$/           { incheck = 0; next }
  inblock || incheck           { print }
' "$doc" > "$script"
steps=$(grep -c '^echo; echo "### walkthrough' "$script" || true)
[ "$steps" -ge 5 ] || { echo "found only $steps walkthrough blocks in $doc" >&2; exit 2; }

cleanup() {
  rc=$?
  # Stop any node (or Prometheus) the walkthrough left running: only our own processes, by pid.
  for f in "$work"/pqdag-walkthrough/node-*.pid "$work"/pqdag-walkthrough/prom.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -Eq "engine run|prometheus"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  if [ "$rc" -ne 0 ]; then
    echo
    echo "FAILED (status $rc). Work folder kept: $work"
    for l in "$work"/pqdag-walkthrough/node-*.log; do
      [ -e "$l" ] || continue
      echo "--- last lines of $l"
      tail -n 15 "$l" | sed 's/\x1b\[[0-9;]*m//g'
    done
  elif [ "${KEEP:-0}" = 1 ]; then
    echo "work folder kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT

echo "running $steps blocks of the walkthrough in $doc (work folder $work)"
start=$(date +%s)
(
  cd "$work/pqdag-walkthrough"
  export PATH="$bin:$PATH" OPS_REPO="$repo"
  bash -euo pipefail "$script"
)
echo
echo "three-node-loopback: PASS ($steps blocks, $(( $(date +%s) - start )) s)"

#!/usr/bin/env bash
# Counts cycles, instructions, cache misses, context switches... of a running pqdag node.
#
#   perf/perf-stat.sh PID [SECONDS]          # any process
#   perf/perf-stat.sh --node N [SECONDS]     # the running `engine run` of node-N (e.g. under bench)
#
# SECONDS defaults to 10. Prints `perf stat` output and writes it to $OUT (default
# perf-out/stat-<node|pid>-<UTC time>.txt).
#
# In a VM without a virtual PMU (this one: Firecracker; also many cloud instances without
# "vPMU"), the hardware events cycles, instructions, cache-*, branch-* show "<not supported>":
# the script then says so and you only get the software events (task-clock = CPU time,
# context-switches, cpu-migrations, page-faults), which still answer "how many cores did the
# node use" and "does it thrash the scheduler". IPC needs bare metal or a vPMU-enabled instance.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
case "$1" in
  -h|--help) usage ;;
  --node)
    [[ $# -ge 2 ]] || usage
    n="$2"; shift 2
    pid="$(pgrep -n -f "engine run --config .*node-${n}/config\.toml" || true)"
    [[ -n "$pid" ]] || { echo "perf-stat.sh: no running 'engine run --config .../node-${n}/config.toml'" >&2; exit 1; }
    label="node${n}"
    ;;
  *)
    [[ "$1" =~ ^[0-9]+$ ]] || usage
    pid="$1"; shift
    label="pid${pid}"
    ;;
esac
secs="${1:-10}"
[[ -d "/proc/$pid" ]] || { echo "perf-stat.sh: no process $pid" >&2; exit 1; }
if ! command -v perf >/dev/null 2>&1; then
  echo "perf-stat.sh: perf missing: apt-get install linux-perf (Debian) or linux-tools-\$(uname -r) (Ubuntu)" >&2
  exit 1
fi
mkdir -p perf-out
out="${OUT:-perf-out/stat-${label}-$(date -u +%Y%m%d-%H%M%S).txt}"
events="task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions,branches,branch-misses,cache-references,cache-misses"
perf stat -e "$events" -p "$pid" -- sleep "$secs" 2>&1 | tee "$out"
if grep -q "<not supported>" "$out"; then
  echo "perf-stat.sh: hardware counters are <not supported> on this machine (VM without a virtual PMU)." >&2
  echo "  Only the software events are real: task-clock (CPU ms; 'CPUs utilized' = cores busy)," >&2
  echo "  context-switches, cpu-migrations, page-faults. Run on bare metal for cycles/IPC." >&2
else
  awk '/ cycles/ {c=$1} / instructions/ {i=$1} END {gsub(",", "", c); gsub(",", "", i); if (c > 0) printf "IPC %.2f\n", i/c}' "$out" >&2
fi
echo "perf-stat.sh: wrote $out" >&2

#!/usr/bin/env bash
# Records a running pqdag node with `perf record` and renders a flamegraph SVG with inferno.
#
#   perf/flamegraph.sh PID [SECONDS]          # any process
#   perf/flamegraph.sh --node N [SECONDS]     # the running `engine run` of node-N (e.g. under bench)
#
# SECONDS defaults to 30. Output: $OUT (default perf-out/flame-<node|pid>-<UTC time>/) with
# perf.data, collapsed.txt and flamegraph.svg. Environment:
#   FREQ=499           sampling frequency (Hz per CPU; odd, so it does not beat with 100 Hz timers)
#   CALLGRAPH=dwarf    dwarf (default: works without frame pointers, bigger perf.data) | fp (-g, frame
#                      pointers only: Rust release code has none unless built with
#                      RUSTFLAGS="-C force-frame-pointers=yes") | lbr
#   OUT=DIR            output folder
# Needs: perf (Debian: apt-get install linux-perf; Ubuntu: linux-tools-$(uname -r)), inferno
# (cargo install inferno). Both are installed on first use when missing (apt-get needs root).
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

[[ $# -ge 1 ]] || usage
label=""
case "$1" in
  -h|--help) usage ;;
  --node)
    [[ $# -ge 2 ]] || usage
    n="$2"; shift 2
    # The newest `engine run` whose config is node-N's (several clusters: the newest wins).
    pid="$(pgrep -n -f "engine run --config .*node-${n}/config\.toml" || true)"
    [[ -n "$pid" ]] || { echo "flamegraph.sh: no running 'engine run --config .../node-${n}/config.toml' (start bench or the node first)" >&2; exit 1; }
    count="$(pgrep -f "engine run --config .*node-${n}/config\.toml" | wc -l)"
    [[ "$count" -le 1 ]] || echo "flamegraph.sh: $count node-${n} processes running; recording the newest, pid $pid" >&2
    label="node${n}"
    ;;
  *)
    [[ "$1" =~ ^[0-9]+$ ]] || usage
    pid="$1"; shift
    label="pid${pid}"
    ;;
esac
secs="${1:-30}"
freq="${FREQ:-499}"
callgraph="${CALLGRAPH:-dwarf}"
[[ -d "/proc/$pid" ]] || { echo "flamegraph.sh: no process $pid" >&2; exit 1; }

sudo_if_needed() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if ! command -v perf >/dev/null 2>&1; then
  echo "flamegraph.sh: installing perf (Debian package linux-perf)" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed apt-get install -y -qq linux-perf || sudo_if_needed apt-get install -y -qq "linux-tools-$(uname -r)" linux-tools-common
fi
if ! command -v inferno-flamegraph >/dev/null 2>&1 || ! command -v inferno-collapse-perf >/dev/null 2>&1; then
  echo "flamegraph.sh: installing inferno (cargo install inferno, ~2-3 min on 2 cores)" >&2
  cargo install --locked inferno
  export PATH="$HOME/.cargo/bin:$PATH"
fi

paranoid="$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo '?')"
if [[ $(id -u) -ne 0 && "$paranoid" != "?" && "$paranoid" -gt 1 ]]; then
  echo "flamegraph.sh: kernel.perf_event_paranoid=$paranoid: as non-root only user-space samples are taken;" >&2
  echo "  for kernel frames (UDP, io_uring, fsync) run as root or: sudo sysctl kernel.perf_event_paranoid=1" >&2
fi

case "$callgraph" in
  dwarf) cg=(--call-graph dwarf,16384) ;;
  fp) cg=(-g) ;;
  lbr) cg=(--call-graph lbr) ;;
  *) echo "flamegraph.sh: CALLGRAPH must be dwarf, fp or lbr" >&2; exit 2 ;;
esac

# Hardware cycles are often missing in VMs: perf then falls back to the cpu-clock timer by
# itself; say so instead of leaving the user to wonder.
event=()
if perf stat -e cycles -- true 2>&1 | grep -q "not supported"; then
  echo "flamegraph.sh: no hardware cycle counter here (VM?): sampling the cpu-clock software timer" >&2
  event=(-e cpu-clock)
fi

out="${OUT:-perf-out/flame-${label}-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
cmdline="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)"
echo "flamegraph.sh: recording pid $pid ($cmdline) for ${secs}s at ${freq} Hz, call graph ${callgraph} -> $out/" >&2
perf record "${event[@]}" -F "$freq" "${cg[@]}" -p "$pid" -o "$out/perf.data" -- sleep "$secs" 2> "$out/perf-record.log" || {
  cat "$out/perf-record.log" >&2
  exit 1
}
tail -n 2 "$out/perf-record.log" >&2 || true

# perf script resolves symbols (Rust names demangled by inferno); --no-inline keeps it fast.
perf script --no-inline -i "$out/perf.data" 2> "$out/perf-script.log" | inferno-collapse-perf > "$out/collapsed.txt"
inferno-flamegraph --title "pqdag ${label} (${secs}s, ${freq} Hz, ${callgraph})" --countname samples < "$out/collapsed.txt" > "$out/flamegraph.svg"

# A short text summary: the heaviest leaf functions.
echo "flamegraph.sh: top self time (leaf frames):" >&2
awk '{n=$NF; $NF=""; k=split($0, f, ";"); leaf=f[k]; gsub(/ +$/, "", leaf); s[leaf]+=n; t+=n} END {for (l in s) printf "%6.2f%%  %s\n", 100*s[l]/t, l}' "$out/collapsed.txt" | sort -rn | head -15 >&2
echo "$out/flamegraph.svg"

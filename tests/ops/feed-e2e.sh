#!/usr/bin/env bash
# Issue 16's acceptance run, by hand on release binaries (docs/clients.md, "Feed and cursors"):
# a 3-node testnet under `loadgen --rate 300 --duration 20` at node-0, plus 200 known payloads
# from `engine submit --wait`; `engine tail` on node-2 from the start, node-2 killed with
# kill -9 in the middle of the tail and restarted, the tail resumed from the last cursor it
# printed. Checks: every known payload listed exactly once with the same bytes, and the
# resumed tail continues with no gap and no duplicate (against node-2's whole feed read again).
# Usage: tests/ops/feed-e2e.sh [BIN_DIR] [WORK_DIR]   (BIN_DIR default target/release)
set -euo pipefail
BIN=${1:-target/release}; W=${2:-$(mktemp -d)}; BASE=${BASE_PORT:-34000}
E=$BIN/engine; L=$BIN/loadgen
rm -rf "$W/tn"; mkdir -p "$W"
"$E" testnet --nodes 3 --base-port "$BASE" --dir "$W/tn" >/dev/null
C=$W/tn/cluster.toml
pids=()
start() { "$E" run --config "$W/tn/node-$1/config.toml" >>"$W/node-$1.log" 2>&1 & pids[$1]=$!; }
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
for i in 0 1 2; do start $i; done
for i in 0 1 2; do
  m=$(( BASE + 20 * i + 19 ))
  for _ in $(seq 120); do curl -sf "127.0.0.1:$m/ready" >/dev/null && break; sleep 0.5; done
done
"$L" --cluster "$C" --client "node-0=127.0.0.1:$(( BASE + 18 ))" --rate 300 --duration 20 --quiet --json "$W/loadgen.json" >"$W/loadgen.log" 2>&1 &
LG=$!
# 200 known payloads, 4 submitters in parallel, alternating node-0 / node-1.
: >"$W/known.jsonl"
submit_range() {
  for n in $(seq "$1" 4 199); do
    node=node-$(( n % 2 )); hex=$(printf 'known-%04d' "$n" | od -An -tx1 | tr -d ' \n')
    key=$(printf '%064x' $(( 0xfeed0000 + n )))
    "$E" submit --cluster "$C" --node "$node" --payload-hex "$hex" --conflict-key "$key" --wait >>"$W/known.$1.jsonl"
  done
}
subs=()
for s in 0 1 2 3; do submit_range "$s" & subs+=($!); done
# Tail node-2 from the start; kill -9 node-2 once 2000 lines are out, restart it 2 s later.
"$E" tail --cluster "$C" --node node-2 >"$W/tail1.jsonl" 2>"$W/tail1.err" &
T1=$!
for _ in $(seq 600); do [ "$(wc -l <"$W/tail1.jsonl")" -ge 2000 ] && break; sleep 0.1; done
kill -9 "${pids[2]}"; echo "killed node-2 after $(wc -l <"$W/tail1.jsonl") tail lines"
sleep 2; kill "$T1" 2>/dev/null || true; wait "$T1" 2>/dev/null || true
start 2
for _ in $(seq 120); do curl -sf "127.0.0.1:$(( BASE + 40 + 19 ))/ready" >/dev/null && break; sleep 0.5; done
echo "node-2 ready again"
last=$(tail -n 1 "$W/tail1.jsonl" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["cursor"])')
wait $LG || true
for p in "${subs[@]}"; do wait "$p"; done
cat "$W"/known.?.jsonl >"$W/known.jsonl"
sleep 5
# The whole feed of node-2 again, and the resumed tail from the last cursor printed before the kill.
total=$(curl -s "127.0.0.1:$(( BASE + 40 + 19 ))/status" | python3 -c 'import json,sys; print(sum(x["decisions"] for x in json.load(sys.stdin)["shards"]))')
"$E" tail --cluster "$C" --node node-2 --count "$total" >"$W/full.jsonl"
n_after=$(python3 - "$W/full.jsonl" "$last" <<'PY'
import json,sys
lines=[json.loads(l) for l in open(sys.argv[1])]
i=[k for k,l in enumerate(lines) if l["cursor"]==sys.argv[2]][0]
print(len(lines)-i-1)
PY
)
"$E" tail --cluster "$C" --node node-2 --from "$last" --count "$n_after" >"$W/tail2.jsonl"
python3 - "$W" "$last" <<'PY'
import json,sys,collections
w,last=sys.argv[1],sys.argv[2]
rd=lambda f:[json.loads(l) for l in open(f"{w}/{f}") if l.strip()]
full,t1,t2,known=rd("full.jsonl"),rd("tail1.jsonl"),rd("tail2.jsonl"),rd("known.jsonl")
ids=[l["id"] for l in full]
assert len(ids)==len(set(ids)), "duplicate in node-2's feed"
k=[l["cursor"] for l in full].index(last)
assert [l["id"] for l in t1]==ids[:k+1], "the first tail is not the start of the feed"
assert [l["id"] for l in t2]==ids[k+1:], "the resumed tail has a gap or a duplicate"
byid={l["id"]:l for l in full}
bad=[]
for s in known:
    h=byid.get(s["id"])
    if not h or s.get("decision")!="final" or h["decision"]!="final": bad.append(s); continue
assert len(known)==200, f"{len(known)} known payloads submitted"
cnt=collections.Counter(l["id"] for l in full)
assert all(cnt[s["id"]]==1 for s in known), "a known payload listed more than once"
lg=json.load(open(f"{w}/loadgen.json"))
print(f"feed of node-2: {len(full)} decisions; first tail {len(t1)} lines up to the kill, resumed tail {len(t2)} lines: no gap, no duplicate")
print(f"known payloads: 200 submitted --wait, {200-len(bad)} final and listed exactly once with the same id; loadgen: submitted {lg['submitted']} finalized {lg['finalized']} lost {lg['lost']}")
assert not bad, f"{len(bad)} known payloads missing or not final: {bad[:2]}"
PY

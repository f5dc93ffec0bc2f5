#!/usr/bin/env bash
# A flood through the bridge: N one-output go-e `rbt` messages as fast as `mosquitto_pub -l` sends
# them (state JSON off), or the same through the broker alone (MODE=raw). Prints the throughput and
# the CPU per message of the broker and of the bridge: what read holding (src/mqtt/coalesce.rs)
# changes, and what the broker's own cost per routed message bounds (README, Performance).
#
#   scripts/flood.sh [BENCH_BINARY]
#     BENCH_BINARY: an `hlbridge-bench` (default target/release/hlbridge-bench); N (default 100000),
#     MODE=bridge|raw (default bridge). Needs mosquitto and mosquitto-clients, python3.
set -euo pipefail
BENCH=${1:-target/release/hlbridge-bench}
N=${N:-100000}
MODE=${MODE:-bridge}
source "$(dirname "$0")/lib/nrg-bench.sh"
require_tools mosquitto mosquitto_pub mosquitto_sub python3
require_bench "$BENCH"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cpu_ns() { awk '{s += $1} END {print s}' /proc/"$1"/task/*/schedstat; }

start_broker; pids+=("$broker_pid")
if [ "$MODE" = bridge ]; then
  bridge_config bench | sed 's/^output:/output:\n  state_json: false/' > "$work/config.yaml"
  "$BENCH" --bridge-child "$work/config.yaml" &
  bridge=$!; pids+=("$bridge")
  mosquitto_sub -p "$port" -t bench/bridge/status -C 1 -W 30 >/dev/null
  input=go-eCharger/000000/rbt; output=bench/ev0/uptime
else
  bridge=$broker_pid; input=benchraw/seq; output=benchraw/seq
fi
seq 1 "$N" | sed 's/$/000/' > "$work/feed"
mosquitto_sub -p "$port" -t "$output" -C "$N" -W 120 > "$work/out" &
sub=$!; pids+=("$sub")
sleep 0.5
b0=$(cpu_ns "$bridge"); m0=$(cpu_ns "$broker_pid"); t0=$(date +%s.%N)
mosquitto_pub -p "$port" -t "$input" -l < "$work/feed"
wait "$sub" || true
t1=$(date +%s.%N); b1=$(cpu_ns "$bridge"); m1=$(cpu_ns "$broker_pid")
got=$(wc -l < "$work/out")
python3 - "$MODE" "$got" "$N" "$t0" "$t1" "$m0" "$m1" "$b0" "$b1" <<'PY'
import sys
mode, got, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0, t1, m0, m1, b0, b1 = map(float, sys.argv[4:])
wall = t1 - t0
line = f"{mode}: {got} of {n} in {wall:.2f} s = {got / wall:.0f}/s; broker {(m1 - m0) / 1e3 / max(got, 1):.2f} µs per message (busy {(m1 - m0) / 1e9 / wall:.2f})"
if mode == "bridge":
    line += f"; bridge {(b1 - b0) / 1e3 / max(got, 1):.2f} µs per message"
print(line)
PY

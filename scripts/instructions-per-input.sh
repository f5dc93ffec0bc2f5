#!/usr/bin/env bash
# User-space instructions the whole bridge process spends per go-e `nrg` input (runtime, MQTT
# client, adapter, router, formatting), counted by valgrind's callgrind: repeatable to a fraction
# of a per cent whatever else the machine does, where CPU time on a shared VM drifts by tens of per
# cent. Kernel work (the socket calls) is not counted: `hlbridge-bench` measures that.
#
# Two runs of the same wall-clock length (so timers cost the same in both) feed N1 and N2 inputs;
# the difference of their totals divided by N2 - N1 is the cost of one input.
#
#   scripts/instructions-per-input.sh [BENCH_BINARY]
#     BENCH_BINARY: an `hlbridge-bench` (default target/profiling/hlbridge-bench; build it with
#     `cargo build --profile profiling --bin hlbridge-bench`). Needs valgrind, mosquitto and
#     mosquitto-clients (apt-get install valgrind mosquitto mosquitto-clients). KEEP=1 keeps the
#     callgrind files (cg.N in the printed directory) for callgrind_annotate.
set -euo pipefail
BENCH=${1:-target/profiling/hlbridge-bench}
# 1 800 inputs between the two runs: with 400 (the earlier default) periodic work (the discovery
# pass, timers) falling into one run and not the other moved the result by ±3 000 instructions.
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
N1=${N1:-200}
N2=${N2:-2000}
source "$(dirname "$0")/lib/nrg-bench.sh"
require_tools valgrind mosquitto mosquitto_pub mosquitto_sub python3
require_bench "$BENCH"

work=$(mktemp -d)
broker_pid=""
cleanup() { [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null; if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT
start_broker
bridge_config bench > "$work/config.yaml"

run() {
  local n=$1 out="$work/cg.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BENCH" --bridge-child "$work/config.yaml" 2>"$work/vg.$n.log" &
  local pid=$!
  mosquitto_sub -p "$port" -t bench/bridge/status -C 1 -W 60 >/dev/null
  # The last input's state JSON says the bridge took them all.
  mosquitto_sub -p "$port" -t bench/ev0/power -W 120 > "$work/power.$n" &
  local sub=$!
  feed_nrg "$n" "$SECONDS_PER_RUN" | mosquitto_pub -p "$port" -t go-eCharger/000000/nrg -l
  for _ in $(seq 600); do grep -qx "$((n - 1))" "$work/power.$n" 2>/dev/null && break; sleep 0.1; done
  kill "$sub" 2>/dev/null || true
  grep -qx "$((n - 1))" "$work/power.$n" || { echo "the bridge did not take all $n inputs" >&2; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  grep -o 'summary: [0-9]*' "$out" | awk '{print $2}'
}

i1=$(run "$N1")
i2=$(run "$N2")
echo "instructions: $N1 inputs $i1, $N2 inputs $i2"
echo "user-space instructions per nrg input, whole bridge process: $(( (i2 - i1) / (N2 - N1) ))"

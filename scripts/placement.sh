#!/usr/bin/env bash
# CPU per go-e `nrg` input of one bridge build under three placements of the bridge and Mosquitto
# on the CPUs: as the scheduler likes (no pinning), both on CPU 0, and the bridge on CPU 1 with the
# broker (and the feed) on CPU 0. The same code, the same input: what moves is only whether a
# message crosses CPUs, i.e. whether each input wakes an idle CPU. On a 2-core KVM guest that
# wake-up, not our code, is most of the bridge's CPU time (README, Performance).
#
#   scripts/placement.sh [BENCH_BINARY] [RUNS]
#     BENCH_BINARY: an `hlbridge-bench` (default target/release/hlbridge-bench); RUNS per placement
#     (default 2). FLOOR=1 runs the bench's floor relay (`--floor-child`: the same socket work,
#     no mapping, no MQTT library) in the bridge's place, to show the placement cost is not our
#     code's. Needs taskset (util-linux), mosquitto and mosquitto-clients, python3, and at
#     least 2 CPUs. Prints one line per run: placement, bridge and broker CPU µs per input.
set -euo pipefail
BENCH=${1:-target/release/hlbridge-bench}
RUNS=${2:-2}
N=${N:-10000}
SECS=${SECS:-5}
source "$(dirname "$0")/lib/nrg-bench.sh"
require_tools taskset mosquitto mosquitto_pub mosquitto_sub python3
require_bench "$BENCH"
[ "$(nproc)" -ge 2 ] || { echo "needs at least 2 CPUs" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# CPU time of every thread of process $1, in nanoseconds.
cpu_ns() { awk '{s += $1} END {print s}' /proc/"$1"/task/*/schedstat; }

# One run: $1 = name, $2 = the bridge's CPUs, $3 = the broker's and the feed's CPUs ("" = any).
run() {
  local name=$1 bridge_cpus=$2 broker_cpus=$3 pin_bridge=() pin_broker=()
  [ -n "$bridge_cpus" ] && pin_bridge=(taskset -c "$bridge_cpus")
  [ -n "$broker_cpus" ] && pin_broker=(taskset -c "$broker_cpus")
  start_broker "${pin_broker[@]}"
  local broker=$broker_pid; pids+=("$broker")
  local output=bench/ev0/power
  if [ -n "${FLOOR:-}" ]; then
    output=floor/ev0/power
    "${pin_bridge[@]}" "$BENCH" --floor-child "$port" > "$work/floor.out" &
  else
    bridge_config bench > "$work/config.yaml"
    "${pin_bridge[@]}" "$BENCH" --bridge-child "$work/config.yaml" &
  fi
  local bridge=$!; pids+=("$bridge")
  if [ -n "${FLOOR:-}" ]; then
    for _ in $(seq 100); do grep -q ready "$work/floor.out" 2>/dev/null && break; sleep 0.05; done
  else
    mosquitto_sub -p "$port" -t bench/bridge/status -C 1 -W 30 >/dev/null
  fi
  mosquitto_sub -p "$port" -t "$output" -W 120 > "$work/power" &
  local sub=$!; pids+=("$sub")
  sleep 0.5
  local b0 m0 b1 m1
  b0=$(cpu_ns "$bridge"); m0=$(cpu_ns "$broker")
  feed_nrg "$N" "$SECS" | "${pin_broker[@]}" mosquitto_pub -p "$port" -t go-eCharger/000000/nrg -l
  for _ in $(seq 300); do grep -qx "$((N - 1))" "$work/power" 2>/dev/null && break; sleep 0.02; done
  grep -qx "$((N - 1))" "$work/power" || { echo "$name: the bridge did not take all $N inputs" >&2; exit 1; }
  b1=$(cpu_ns "$bridge"); m1=$(cpu_ns "$broker")
  kill "$sub" "$bridge" "$broker" 2>/dev/null || true
  wait "$sub" "$bridge" "$broker" 2>/dev/null || true
  local who=bridge
  [ -n "${FLOOR:-}" ] && who=floor
  awk -v n="$name" -v who="$who" -v b=$((b1 - b0)) -v m=$((m1 - m0)) -v c="$N" \
    'BEGIN {printf "%-34s %s %6.1f µs/input   broker %6.1f µs/input\n", n, who, b / 1000 / c, m / 1000 / c}'
}

echo "$N go-e nrg inputs over ${SECS}s per run ($((N / SECS))/s), $RUNS run(s) per placement${FLOOR:+, the floor relay instead of the bridge}"
for _ in $(seq "$RUNS"); do
  run "unpinned (the scheduler decides)" "" ""
  run "same CPU (bridge, broker: CPU 0)" 0 0
  run "apart (bridge CPU 1, broker CPU 0)" 1 0
done

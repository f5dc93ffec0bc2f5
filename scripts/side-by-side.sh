#!/usr/bin/env bash
# CPU per go-e `nrg` input of two bridge builds, measured at the same time on the same input: both
# subscribe to one charger on one Mosquitto, so whatever the (shared, drifting) machine does, it does
# to both. For before/after comparisons of a change where single runs a minute apart differ by more
# than the change (see README, Performance).
#
#   scripts/side-by-side.sh BENCH_A BENCH_B [RATE] [SECONDS]
#     BENCH_A, BENCH_B: two `hlbridge-bench` binaries (each runs its bridge with `--bridge-child`).
#     Needs mosquitto and mosquitto-clients. Prints CPU µs per input for A and B, and B / A.
set -euo pipefail
A=${1:?bench binary A}
B=${2:?bench binary B}
RATE=${3:-2000}
SECS=${4:-10}
source "$(dirname "$0")/lib/nrg-bench.sh"
require_tools mosquitto mosquitto_pub mosquitto_sub python3

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
start_broker
pids+=("$broker_pid")
bridge_config a > "$work/a.yaml"
bridge_config b > "$work/b.yaml"
"$A" --bridge-child "$work/a.yaml" & pa=$!; pids+=("$pa")
"$B" --bridge-child "$work/b.yaml" & pb=$!; pids+=("$pb")
mosquitto_sub -p "$port" -t a/bridge/status -C 1 -W 30 >/dev/null
mosquitto_sub -p "$port" -t b/bridge/status -C 1 -W 30 >/dev/null
mosquitto_sub -p "$port" -t a/ev0/power -t b/ev0/power -v > "$work/power" &
pids+=($!)

cpu() { awk '{s += $1} END {print s}' /proc/"$1"/task/*/schedstat; }
n=$((RATE * SECS))
a0=$(cpu "$pa"); b0=$(cpu "$pb")
feed_nrg "$n" "$SECS" | mosquitto_pub -p "$port" -t go-eCharger/000000/nrg -l
for _ in $(seq 300); do
  grep -qx "a/ev0/power $((n - 1))" "$work/power" && grep -qx "b/ev0/power $((n - 1))" "$work/power" && break
  sleep 0.1
done
a1=$(cpu "$pa"); b1=$(cpu "$pb")
got_a=$(grep -c '^a/ev0/power ' "$work/power" || true)
got_b=$(grep -c '^b/ev0/power ' "$work/power" || true)
python3 - "$n" "$a0" "$a1" "$b0" "$b1" "$got_a" "$got_b" <<'EOF'
import sys
n, a0, a1, b0, b1, ga, gb = map(int, sys.argv[1:])
a, b = (a1 - a0) / 1000 / n, (b1 - b0) / 1000 / n
print(f"inputs {n}; power outputs seen: A {ga}, B {gb}")
print(f"CPU per nrg input: A {a:.1f} us, B {b:.1f} us, B/A {b / a:.2f}")
EOF

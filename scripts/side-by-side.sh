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
for tool in mosquitto mosquitto_pub mosquitto_sub python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do mosquitto_pub -p "$port" -t probe -m x 2>/dev/null && break; sleep 0.05; done

config() {
  cat <<EOF
mqtt:
  url: mqtt://127.0.0.1:$port
  client_id: hlbridge-$1
  queue_capacity: 200000
output:
  prefix: $1
http:
  listen: null
log:
  level: warn
devices:
  ev0:
    adapter: goe
    serial: "000000"
    commands: false
EOF
}
config a > "$work/a.yaml"
config b > "$work/b.yaml"
"$A" --bridge-child "$work/a.yaml" & pa=$!; pids+=("$pa")
"$B" --bridge-child "$work/b.yaml" & pb=$!; pids+=("$pb")
mosquitto_sub -p "$port" -t a/bridge/status -C 1 -W 30 >/dev/null
mosquitto_sub -p "$port" -t b/bridge/status -C 1 -W 30 >/dev/null
mosquitto_sub -p "$port" -t a/ev0/power -t b/ev0/power -v > "$work/power" &
pids+=($!)

cpu() { awk '{s += $1} END {print s}' /proc/"$1"/task/*/schedstat; }
n=$((RATE * SECS))
a0=$(cpu "$pa"); b0=$(cpu "$pb")
python3 - "$n" "$SECS" <<'EOF' | mosquitto_pub -p "$port" -t go-eCharger/000000/nrg -l
import sys, time
n, secs = int(sys.argv[1]), float(sys.argv[2])
start = time.monotonic()
for s in range(n):
    k = s % 1000
    f = [220 + k * .01, 221 + k * .01, 222 + k * .01, 1 + k * .01, 10 + k * .001, 11 + k * .001, 12 + k * .001,
         2000 + k * .1, 2100 + k * .1, 2200 + k * .1, k * .1, s, 80 + k * .01, 81 + k * .01, 82 + k * .01, 83 + k * .01]
    print("[" + ",".join(f"{v:.3f}" if i != 11 else str(v) for i, v in enumerate(f)) + "]", flush=True)
    delay = start + (s + 1) * secs / n - time.monotonic()
    if delay > 0:
        time.sleep(delay)
EOF
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

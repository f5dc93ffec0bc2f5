# Shared by scripts/instructions-per-input.sh, scripts/side-by-side.sh and scripts/placement.sh
# a throw-away Mosquitto, a one-charger bridge config, and a paced go-e `nrg` feed.

# Exits with 2 unless every named command is installed.
require_tools() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
  done
}

# Exits with 2 unless $1 is an executable `hlbridge-bench`.
require_bench() {
  [ -x "$1" ] || { echo "no bench binary at $1" >&2; exit 2; }
}

# Starts Mosquitto on a free loopback port in "$work"; sets `port` and `broker_pid`. Arguments, if
# any, are a command that runs it (`taskset -c 0`).
start_broker() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/mosquitto.conf"
  "$@" mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  broker_pid=$!
  for _ in $(seq 100); do mosquitto_pub -p "$port" -t probe -m x 2>/dev/null && break; sleep 0.05; done
}

# Prints a bridge config with one go-e charger (serial 000000) publishing under PREFIX.
bridge_config() {
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

# Prints N nrg payloads (every field changing; field 11, power, is the sequence number) spread
# evenly over SECS seconds, one per line, for `mosquitto_pub -l`.
feed_nrg() {
  python3 - "$1" "$2" <<'EOF'
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
}

#!/usr/bin/env bash
# hlbridge against a real OctoPrint 1.11.8 + OctoPrint-MQTT 0.8.16 (virtual printer), in one command.
# Not part of `cargo test` or CI: it installs OctoPrint from PyPI (network) and takes about 5 minutes.
#
#   scripts/real-octoprint.sh [OUT_DIR]
#
# Environment:
#   OCTOPRINT_MQTT_SRC  where the plugin comes from (it is not on PyPI):
#                       - a bare git repository (HEAD is exported), e.g. on the dev machine
#                         /work/.mirror/OctoPrint+OctoPrint-MQTT/repo
#                       - a source directory
#                       - anything pip installs, e.g.
#                         https://github.com/OctoPrint/OctoPrint-MQTT/archive/refs/tags/0.8.16.zip
#                       default: that GitHub archive
#   OCTOPRINT_VERSION   default 1.11.8
#   OCTOPRINT_VENV      the venv to use or create (default: $OUT_DIR/venv); reused when OctoPrint and
#                       the plugin are already installed in it
#   PYTHON              the interpreter for the venv (default python3; OctoPrint 1.11 needs 3.7-3.13)
#   HLBRIDGE_FIXTURE    also copy the capture there (e.g. adapters/octoprint/fixtures/real_...tsv)
#   IDLE_SECS, PRINT_SECS  the steady idle minute (default 75 s) and the test print (default 60 s)
#
# Needs mosquitto on PATH (never uses port 1883: every port is a free loopback one) and cargo.
# Exits non-zero with the failed expectations listed; prints a summary (messages per topic,
# command latencies) either way. The capture is OUT_DIR/capture.tsv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
out="${1:-$(mktemp -d -t hlbridge-real-octoprint-XXXXXX)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
version="${OCTOPRINT_VERSION:-1.11.8}"
plugin_src="${OCTOPRINT_MQTT_SRC:-https://github.com/OctoPrint/OctoPrint-MQTT/archive/refs/tags/0.8.16.zip}"
venv="${OCTOPRINT_VENV:-$out/venv}"
python="${PYTHON:-python3}"

command -v mosquitto >/dev/null || { echo "mosquitto is not installed (apt-get install mosquitto)" >&2; exit 2; }

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating the venv $venv"
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/pip" --disable-pip-version-check -q)
if ! "$venv/bin/python" -c "import octoprint, sys; sys.exit(octoprint.__version__ != '$version')" 2>/dev/null; then
    echo "== installing OctoPrint $version"
    "${pip[@]}" install "OctoPrint==$version"
fi
if ! "$venv/bin/python" -c "import octoprint_mqtt" 2>/dev/null; then
    echo "== installing OctoPrint-MQTT from $plugin_src"
    # The plugin's setup.py imports OctoPrint's setuptools helpers: no build isolation.
    "${pip[@]}" install "paho-mqtt<2" six setuptools wheel
    if git --git-dir="$plugin_src" rev-parse --verify -q HEAD >/dev/null 2>&1; then
        src="$out/octoprint-mqtt-src"
        rm -rf "$src" && mkdir -p "$src"
        git --git-dir="$plugin_src" archive HEAD | tar -x -C "$src"
        "${pip[@]}" install --no-build-isolation "$src"
    else
        "${pip[@]}" install --no-build-isolation "$plugin_src"
    fi
fi
"$venv/bin/pip" list 2>/dev/null | grep -i -E '^(octoprint|octoprint-mqtt|paho-mqtt) ' || true

echo "== building hlbridge"
(cd "$repo" && cargo build --quiet --bin hlbridge)

exec "$venv/bin/python" "$here/real_octoprint.py" \
    --hlbridge "$repo/target/debug/hlbridge" \
    --octoprint "$venv/bin/octoprint" \
    --out "$out" \
    --idle "${IDLE_SECS:-75}" \
    --print-secs "${PRINT_SECS:-60}" \
    ${HLBRIDGE_FIXTURE:+--fixture "$HLBRIDGE_FIXTURE"}

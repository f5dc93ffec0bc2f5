#!/usr/bin/env python3
"""The real-OctoPrint run of hlbridge (driven by scripts/real-octoprint.sh, which prepares the venv).

Starts a Mosquitto on a free loopback port, a capture client subscribed to `#`, hlbridge with an
`octoprint` device (REST commands on) plus a second device holding a wrong API key, and a fresh
OctoPrint 1.11.x with OctoPrint-MQTT and the bundled virtual printer. Then it plays the scenario:
start-up, refusals while the printer is off, connect (through hlbridge), wrong key, the printer
profile, set points, a steady idle minute, an uploaded print with pause/resume/cancel, disconnect
and connect, and OctoPrint's shutdown. Every expectation that fails is listed and the exit status
is 1; the summary gives message counts per topic and the command latencies.

The capture (`capture.tsv`: seconds since the capture started, retain flag, topic, payload; every
topic on the broker) is written to the output directory; it holds no secret (the API keys travel
only in HTTP headers). `--fixture FILE` also writes it where the golden replay test reads it.

Needs: paho-mqtt < 2, requests and PyYAML (all in OctoPrint's venv), `mosquitto` on PATH.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import paho.mqtt.client as mqtt
import requests
import yaml

KEY = "real-run-" + os.urandom(12).hex()
BAD_KEY = "wrong-" + os.urandom(12).hex()
PREFIX = "home"
DEV = "printer"
BAD = "printer_badkey"


class Failure(Exception):
    """A wait that ran out: the scenario cannot go on."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Msg:
    __slots__ = ("seq", "t", "retain", "topic", "payload")

    def __init__(self, seq, t, retain, topic, payload):
        self.seq, self.t, self.retain, self.topic, self.payload = seq, t, retain, topic, payload

    def json(self):
        try:
            return json.loads(self.payload)
        except ValueError:
            return None


class Capture:
    """Everything on the broker, in arrival order, with the retain flag as delivered."""

    def __init__(self, port):
        self.t0 = time.monotonic()
        self.msgs = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(client_id=f"capture-{os.getpid()}", protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe("#", qos=1)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise Failure("the capture client could not subscribe to the broker")

    def _on_message(self, _c, _u, m):
        with self.cond:
            payload = m.payload.decode("utf-8", "replace")
            self.msgs.append(Msg(len(self.msgs), time.monotonic() - self.t0, bool(m.retain), m.topic, payload))
            self.cond.notify_all()

    def mark(self):
        with self.cond:
            return len(self.msgs)

    def now(self):
        return time.monotonic() - self.t0

    def wait(self, what, pred, since=0, timeout=30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.msgs):
                    if pred(self.msgs[i]):
                        return self.msgs[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"timed out after {timeout:.0f} s waiting for {what}")
                self.cond.wait(left)

    def wait_value(self, topic, value, since=0, timeout=30.0):
        return self.wait(f"{topic} = {value!r}", lambda m: m.topic == topic and m.payload == value, since, timeout)

    def quiet(self, seconds, timeout=60.0):
        """Waits until nothing arrived for `seconds` (the bridge has handled what came before)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.cond:
                last = self.msgs[-1].t if self.msgs else 0.0
                gap = self.now() - last
                if gap >= seconds:
                    return
                self.cond.wait(seconds - gap)
        raise Failure(f"the broker never went quiet for {seconds} s")

    def all(self, topic, since=0, until=None):
        with self.cond:
            return [m for m in self.msgs[since:until] if m.topic == topic]

    def latest(self, topic):
        got = self.all(topic)
        return got[-1].payload if got else None

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


class Run:
    def __init__(self, args):
        self.args = args
        self.checks = []  # (ok, name, detail)
        self.figures = []  # (name, value)
        self.procs = {}
        self.cmd_n = 0
        self.latencies = []

    # -- bookkeeping ------------------------------------------------------------------------

    def check(self, ok, name, detail=""):
        self.checks.append((bool(ok), name, detail))
        print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def figure(self, name, value):
        self.figures.append((name, value))
        print(f"  (figure) {name}: {value}", flush=True)

    def stage(self, name):
        print(f"\n== {name} (t={self.cap.now():.1f} s)", flush=True)

    def t(self, quantity):
        return f"{PREFIX}/{DEV}/{quantity}"

    # -- processes --------------------------------------------------------------------------

    def spawn(self, name, argv, **kw):
        log = open(os.path.join(self.out, f"{name}.log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw)
        self.procs[name] = p
        return p

    def stop(self, name, sig=signal.SIGTERM, timeout=30):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(5)

    # -- REST -------------------------------------------------------------------------------

    def rest(self, method, path, key=KEY, **kw):
        return requests.request(method, f"{self.octo_url}{path}", headers={"X-Api-Key": key}, timeout=10, **kw)

    # -- hlbridge commands ------------------------------------------------------------------

    def command(self, name, value, ok, expect=None, device=DEV, timeout=40.0):
        """Publishes `<prefix>/<device>/<name>/set` and checks its `/result`: `ok`, and `expect`
        (a substring of the value or error)."""
        self.cmd_n += 1
        cid = f"real-{self.cmd_n}"
        topic = f"{PREFIX}/{device}/{name}"
        mark = self.cap.mark()
        t0 = time.monotonic()
        self.cap.publish(f"{topic}/set", json.dumps({"value": value, "id": cid}))
        res = self.cap.wait(
            f"the result of {name}={value}",
            lambda m: m.topic == f"{topic}/result" and (m.json() or {}).get("id") == cid,
            mark,
            timeout,
        )
        ms = (time.monotonic() - t0) * 1000
        body = res.json()
        shown = body.get("value") if body.get("ok") else body.get("error")
        good = body.get("ok") == ok and (expect is None or expect in str(shown))
        self.check(good, f"{device} {name}={value} → ok={ok}" + (f" ({expect})" if expect else ""), f"{shown!r}, {ms:.0f} ms")
        self.latencies.append((f"{device} {name}={value}", body.get("ok"), ms))
        return body, mark

    # -- set-up -----------------------------------------------------------------------------

    def setup(self):
        a = self.args
        self.out = os.path.abspath(a.out)
        os.makedirs(self.out, exist_ok=True)
        self.broker_port, self.octo_port, self.http_port = free_port(), free_port(), free_port()
        for p in (self.broker_port, self.octo_port, self.http_port):
            assert p != 1883
        with open(os.path.join(self.out, "mosquitto.conf"), "w") as f:
            f.write(f"listener {self.broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.spawn("mosquitto", [a.mosquitto, "-c", os.path.join(self.out, "mosquitto.conf")])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.broker_port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise Failure("mosquitto did not start (see mosquitto.log)")
                time.sleep(0.1)
        self.cap = Capture(self.broker_port)

        # OctoPrint: a fresh basedir, no first-run wizard, an admin whose API key the bridge uses.
        self.base = os.path.join(self.out, "octoprint-basedir")
        shutil.rmtree(self.base, ignore_errors=True)
        os.makedirs(self.base)
        config = {
            "accessControl": {"enabled": True},
            "server": {
                "firstRun": False,
                "onlineCheck": {"enabled": False},
                "pluginBlacklist": {"enabled": False},
            },
            "plugins": {
                "_disabled": ["softwareupdate", "tracking", "announcements"],
                "virtual_printer": {"enabled": True},
                "mqtt": {
                    "broker": {"url": "127.0.0.1", "port": self.broker_port},
                    "publish": {"printerData": True},
                },
            },
            "serial": {"autoconnect": False, "port": "VIRTUAL", "baudrate": 0},
        }
        with open(os.path.join(self.base, "config.yaml"), "w") as f:
            yaml.safe_dump(config, f)
        octoprint = [a.octoprint, "--basedir", self.base]
        subprocess.run(
            octoprint + ["user", "add", "admin", "--password", os.urandom(9).hex(), "--admin"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        users_file = os.path.join(self.base, "users.yaml")
        with open(users_file) as f:
            users = yaml.safe_load(f)
        users["admin"]["apikey"] = KEY  # a user API key: the global `api.key` is deprecated (gone in 1.13)
        with open(users_file, "w") as f:
            yaml.safe_dump(users, f)
        self.octoprint_argv = octoprint + [
            "serve", "--host", "127.0.0.1", "--port", str(self.octo_port), "--iknowwhatimdoing",
        ]
        self.octo_url = f"http://127.0.0.1:{self.octo_port}"

        # hlbridge: the printer with the right key, and one with a wrong key (same topics).
        cfgdir = os.path.join(self.out, "hlbridge")
        os.makedirs(cfgdir, exist_ok=True)
        for name, key in (("printer.key", KEY), ("bad.key", BAD_KEY)):
            with open(os.path.join(cfgdir, name), "w") as f:
                f.write(key + "\n")
            os.chmod(os.path.join(cfgdir, name), 0o600)
        dev = (
            "    adapter: octoprint\n    url: {url}\n    api_key_file: {key}\n    commands: true\n"
            "    command_rate_limit: 0s\n    command_timeout: 20s\n"
        )
        with open(os.path.join(cfgdir, "config.yaml"), "w") as f:
            f.write(
                f"mqtt:\n  url: mqtt://127.0.0.1:{self.broker_port}\n  client_id: hlbridge-real-octoprint\n"
                f"output:\n  prefix: {PREFIX}\nhttp:\n  listen: 127.0.0.1:{self.http_port}\n"
                "homeassistant:\n  enabled: false\nlog:\n  level: info\ndevices:\n"
                f"  {DEV}:\n" + dev.format(url=self.octo_url, key="printer.key")
                + f"  {BAD}:\n" + dev.format(url=self.octo_url, key="bad.key")
            )
        self.hlbridge_config = os.path.join(cfgdir, "config.yaml")

    def readyz(self):
        r = requests.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=5)
        return r.json()

    # -- the scenario -----------------------------------------------------------------------

    def scenario(self):
        cap = self.cap
        self.stage("hlbridge starts")
        self.spawn("hlbridge", [self.args.hlbridge, "--config", self.hlbridge_config])
        cap.wait_value(f"{PREFIX}/bridge/status", "online", timeout=60)
        # Its subscriptions follow the status; a printer is far slower to start than that.

        self.stage("OctoPrint starts (printer not connected)")
        start = cap.mark()
        t_start = time.monotonic()
        self.spawn("octoprint", self.octoprint_argv)
        cap.wait_value("octoPrint/mqtt", "connected", start, timeout=180)
        self.figure("OctoPrint start to the plugin's `connected`", f"{time.monotonic() - t_start:.1f} s")
        cap.wait("the start-up progress reset", lambda m: m.topic == "octoPrint/progress/printing", start)
        st = cap.wait(f"{self.t('printer_state')}", lambda m: m.topic == self.t("printer_state"), start)
        cap.wait_value(self.t("printer_state"), "offline", start)
        # The bridge said `offline` when it started (before this stage); nothing live changes that.
        av = [m.payload for m in cap.all(self.t("availability"))]
        self.check(
            av and set(av) == {"offline"},
            "printer not connected: printer_state offline, availability offline",
            f"first state {st.payload}, availability {av}",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # OctoPrint's REST needs a moment after the plugin connects
            try:
                if self.rest("GET", "/api/version").ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        ver = self.rest("GET", "/api/version").json()
        self.figure("OctoPrint version (REST)", ver.get("server"))
        self.check(ver.get("server", "").startswith("1.11"), "OctoPrint 1.11.x", ver.get("server"))

        self.stage("refusals while the printer is off")
        self.command("print_control", "pause", False, "the printer is offline")
        self.command("temperature_bed_target", 50, False, "409")

        self.stage("wrong API key")
        self.command("printer_connection", "connect", False, "API key", device=BAD)
        self.command("temperature_bed_target", 40, False, "API key", device=BAD)

        self.stage("connect through hlbridge")
        body, mark = self.command("printer_connection", "connect", True)
        cap.wait_value(self.t("printer_state"), "operational", mark)
        cap.wait_value(self.t("availability"), "online", mark)
        conn = self.rest("GET", "/api/connection").json()["current"]
        self.check(conn["state"] == "Operational", "OctoPrint says Operational", conn["state"])
        info = cap.wait(f"{PREFIX}/{DEV}/info with the firmware", lambda m: m.topic == f"{PREFIX}/{DEV}/info" and "firmware" in m.payload, mark)
        self.figure("identity", info.payload)

        self.stage("printer profile (GET /api/printerprofiles)")
        self.command("temperature_tool1_target", 200, False, "profile `Default` has 1 extruder(s)")
        self.command("temperature_chamber_target", 40, False, "no heated chamber")
        self.command("print_control", "cancel", False, "the printer is operational")
        self.command("print_control", "resume", False, "the printer is operational")

        self.stage("set points")
        _, m1 = self.command("temperature_tool0_target", 200, True)
        _, m2 = self.command("temperature_bed_target", 60, True)
        cap.wait_value(self.t("temperature_tool0_target"), "200", m1)
        cap.wait_value(self.t("temperature_bed_target"), "60", m2)
        cap.wait("tool0 at 200 °C", lambda m: m.topic == self.t("temperature_tool0") and abs(float(m.payload or 0) - 200) < 1, m1, 120)
        cap.wait("bed at 60 °C", lambda m: m.topic == self.t("temperature_bed") and abs(float(m.payload or 0) - 60) < 1, m2, 120)

        self.stage(f"idle at a steady temperature for {self.args.idle} s")
        idle_from = cap.mark()
        t_idle = cap.now()
        time.sleep(self.args.idle)  # the point of this stage: time passes with the printer idle
        plugin = [m for m in cap.msgs[idle_from:] if m.topic.startswith("octoPrint/")]
        times = [t_idle] + [m.t for m in plugin] + [cap.now()]
        silence = max(b - a for a, b in zip(times, times[1:]))
        self.figure("plugin messages while idle", f"{len(plugin)} in {cap.now() - t_idle:.0f} s ({Counter(m.topic for m in plugin)})")
        self.figure("longest plugin silence while idle", f"{silence:.1f} s")
        ready = self.readyz()["devices"][DEV]
        flips = [m.payload for m in cap.all(self.t("availability"), idle_from)]
        self.check(silence > 60, "(b) the plugin was silent for more than 60 s", f"{silence:.1f} s")
        self.check(
            ready.get("availability") == "online" and not flips,
            "(b) the silent idle printer stays online",
            f"readyz {ready.get('availability')} age {ready.get('age_seconds')} s, availability messages {flips}",
        )

        self.stage("upload and print")
        gcode = self.gcode()
        mark = cap.mark()
        t0 = time.monotonic()
        r = self.rest(
            "POST", "/api/files/local",
            files={"file": ("hlbridge-real.gcode", gcode, "application/octet-stream")},
            data={"select": "true", "print": "true"},
        )
        self.check(r.status_code == 201, "upload with print=true", f"HTTP {r.status_code}")
        cap.wait_value(self.t("printer_state"), "printing", mark)
        self.figure("upload to printer_state printing", f"{(time.monotonic() - t0) * 1000:.0f} ms")
        cap.wait_value(self.t("print_file"), "hlbridge-real.gcode", mark)
        cap.wait("print_progress above 0", lambda m: m.topic == self.t("print_progress") and m.payload not in ("", "0"), mark, 60)
        cap.wait("print_time_left", lambda m: m.topic == self.t("print_time_left") and m.payload != "", mark, 60)
        cap.wait("print_time_elapsed", lambda m: m.topic == self.t("print_time_elapsed") and m.payload != "", mark, 60)
        self.command("print_control", "resume", False, "the printer is printing")

        self.stage("pause / resume")
        body, m = self.command("print_control", "pause", True)
        self.check(cap.latest(self.t("printer_state")) == "paused", "printer_state paused at the pause's result", cap.latest(self.t("printer_state")))
        self.command("print_control", "pause", False, "the printer is paused")
        body, m = self.command("print_control", "resume", True)
        self.check(cap.latest(self.t("printer_state")) == "printing", "printer_state printing at the resume's result", cap.latest(self.t("printer_state")))
        cap.wait("progress moving again after the resume", lambda x: x.topic == self.t("print_progress"), m, 60)

        self.stage("cancel")
        body, m = self.command("print_control", "cancel", True)
        cap.wait_value(self.t("printer_state"), "operational", m, 60)
        left = cap.wait("(a) print_time_left deleted", lambda x: x.topic == self.t("print_time_left") and x.payload == "", m, 60)
        cap.wait("(a) print_time_elapsed deleted", lambda x: x.topic == self.t("print_time_elapsed") and x.payload == "", m, 60)
        state = cap.wait("the state JSON after the deletion", lambda x: x.topic == self.t("state"), left.seq).json()
        vals = state["values"]
        self.check(
            "print_time_left" not in vals and "print_time_elapsed" not in vals,
            "(a) after the cancel the times leave the state JSON",
            f"print_progress {vals.get('print_progress')}, printer_state {vals.get('printer_state')}",
        )
        events = [x.json()["event"] for x in cap.all(f"{PREFIX}/{DEV}/event", m)]
        self.check("print_cancelled" in events and "print_failed" in events, "print_cancelled and print_failed events", str(events))
        self.command("print_control", "cancel", False, "the printer is operational")

        self.stage("disconnect / connect through hlbridge")
        body, m = self.command("printer_connection", "disconnect", True)
        cap.wait_value(self.t("availability"), "offline", m)
        ready = self.readyz()["devices"][DEV]
        self.check("not connected" in (ready.get("reason") or ""), "offline with the reason", ready.get("reason"))
        body, m = self.command("printer_connection", "connect", True)
        cap.wait_value(self.t("availability"), "online", m)

        self.stage("a short print to the end")
        mark = cap.mark()
        r = self.rest(
            "POST", "/api/files/local",
            files={"file": ("hlbridge-real-done.gcode", self.gcode(steps=8), "application/octet-stream")},
            data={"select": "true", "print": "true"},
        )
        self.check(r.status_code == 201, "upload with print=true", f"HTTP {r.status_code}")
        cap.wait_value(self.t("printer_state"), "printing", mark)
        done = cap.wait(
            "the print_done event",
            lambda x: x.topic == f"{PREFIX}/{DEV}/event" and (x.json() or {}).get("event") == "print_done",
            mark,
            120,
        )
        self.figure("print_done data", json.dumps(done.json()["data"]))
        cap.wait_value(self.t("print_progress"), "100", mark)
        # The bridge publishes the state before the event of the same message.
        cap.wait_value(self.t("printer_state"), "operational", mark)
        cap.wait("the plugin's progress tick after the print", lambda x: x.topic == "octoPrint/progress/printing", done.seq, 30)
        cap.quiet(2)
        self.check(cap.latest(self.t("printer_state")) == "operational", "operational after print_done", cap.latest(self.t("printer_state")))
        vals = {q: cap.latest(self.t(q)) for q in ("print_progress", "print_time_left", "print_time_elapsed", "print_file")}
        self.figure("print quantities after print_done", vals)
        self.check(
            vals["print_progress"] == "100" and vals["print_file"] == "hlbridge-real-done.gcode",
            "after the print: progress 100 and the file stays",
            str(vals),
        )
        states = [x.payload for x in cap.all(self.t("printer_state"), mark)]
        self.figure("printer_state during the short print", states)

        self.stage("OctoPrint shuts down (SIGTERM), printer connected")
        cap.quiet(3)
        mark = cap.mark()
        self.procs["octoprint"].send_signal(signal.SIGTERM)
        cap.wait("the plugin's `disconnected`", lambda x: x.topic == "octoPrint/mqtt" and x.payload == "disconnected", mark, 60)
        rc = self.procs["octoprint"].wait(90)
        self.figure("OctoPrint exit status", rc)
        cap.quiet(5)
        plugin = [f"{x.topic} {x.payload[:40]}" for x in cap.msgs[mark:] if x.topic.startswith("octoPrint/")]
        self.figure("plugin messages at shutdown", plugin)
        flips = [x.payload for x in cap.all(self.t("availability"), mark)]
        self.check(flips == ["offline"], "(c) shutdown: offline once, no online flap", str(flips))
        ready = self.readyz()["devices"][DEV]
        self.check(
            ready.get("availability") == "offline" and "disconnected" in (ready.get("reason") or ""),
            "(c) offline because OctoPrint-MQTT reports disconnected",
            ready.get("reason"),
        )

    def gcode(self, steps=None):
        """A small print: homing, then moves with dwells so it lasts about `print_secs` (or `steps`
        seconds)."""
        lines = ["; hlbridge real-run test print", "G28", "G90", "M83"]
        steps = steps or max(10, int(self.args.print_secs))
        for i in range(steps):
            lines.append(f"G1 X{10 + i % 50} Y{10 + (i * 7) % 50} Z{0.2 + i * 0.02:.2f} E0.5 F1800")
            lines.append("G4 P1000")
        lines.append("M400")
        return ("\n".join(lines) + "\n").encode()

    # -- report -----------------------------------------------------------------------------

    def write_capture(self):
        path = os.path.join(self.out, "capture.tsv")
        with open(path, "w") as f:
            f.write(
                "# hlbridge real-OctoPrint run: seconds since the capture started, retain flag as delivered, topic, payload\n"
            )
            for m in self.cap.msgs:
                payload = m.payload.replace("\t", "\\t").replace("\n", "\\n")
                f.write(f"{m.t:.3f}\t{int(m.retain)}\t{m.topic}\t{payload}\n")
        text = open(path).read()
        for secret in (KEY, BAD_KEY):
            if secret in text:
                raise Failure("an API key reached MQTT")
        if self.args.fixture:
            shutil.copyfile(path, self.args.fixture)
        return path

    def summary(self):
        print("\n== summary")
        counts = Counter(m.topic for m in self.cap.msgs)
        print("messages per topic:")
        for topic, n in sorted(counts.items()):
            print(f"  {n:6d}  {topic}")
        print("commands (result latency):")
        for name, ok, ms in self.latencies:
            print(f"  {ms:8.0f} ms  ok={ok}  {name}")
        for name, value in self.figures:
            print(f"{name}: {value}")
        failed = [c for c in self.checks if not c[0]]
        print(f"\n{len(self.checks) - len(failed)} of {len(self.checks)} checks passed")
        for _, name, detail in failed:
            print(f"FAILED: {name}: {detail}")
        return not failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hlbridge", required=True, help="the hlbridge binary")
    ap.add_argument("--octoprint", required=True, help="the octoprint executable of the venv")
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "mosquitto")
    ap.add_argument("--out", default=tempfile.mkdtemp(prefix="hlbridge-real-octoprint-"))
    ap.add_argument("--fixture", help="also copy the capture here")
    ap.add_argument("--idle", type=float, default=75.0, help="seconds of steady idling (check b needs > 60)")
    ap.add_argument("--print-secs", type=float, default=60.0, help="about how long the test print runs")
    args = ap.parse_args()
    run = Run(args)
    ok = False
    try:
        run.setup()
        print(f"output directory: {run.out}")
        try:
            run.scenario()
        except Failure as e:
            run.check(False, "scenario", str(e))
        except Exception as e:  # noqa: BLE001 - any crash is a failed run, reported like one
            run.check(False, "scenario crashed", repr(e))
        run.stop("octoprint")
        run.stop("hlbridge")
        time.sleep(0.5)
        path = run.write_capture()
        print(f"capture: {path}")
        ok = run.summary()
    except Failure as e:
        print(f"FAILED: {e}")
    finally:
        if hasattr(run, "cap"):
            run.cap.stop()
        for name in list(run.procs):
            run.stop(name)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

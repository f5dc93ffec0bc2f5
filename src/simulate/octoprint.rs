//! OctoPrint simulator: a printer behind OctoPrint 1.11 (or 2.0) with the OctoPrint-MQTT plugin
//! 0.8.16, publishing exactly the plugin's topics, retain flags, QoS and payloads
//! (`shared/protocols/octoprint-mqtt.md`): the `mqtt` status and last will, `event/<Event>` with
//! `_event`/`_timestamp`, the retained `progress/printing` of the plugin's progress timer (with
//! `printer_data` as an option), the start-up resets, retained `temperature/<key>` samples above the
//! 0.1 °C threshold, queued while the broker is away and flushed on reconnect.
//!
//! Observed on a real OctoPrint 1.11.8 + plugin 0.8.16 and reproduced here: temperatures are
//! change-driven only (a heater at a steady temperature publishes nothing, an idle printer is
//! silent); after a cancel `progress/printing` carries `printTime`/`printTimeLeft` null; shutdown
//! is `disconnected`, then the live `Shutdown` event, then the broker's last will.
//!
//! It plays an endless cycle: printer off → connect → idle → print started and heat-up → printing
//! with progress → pause and resume → done or cancelled → cool-down → disconnect.
//!
//! Split like the go-e simulator: [`PrinterSim`] is the pure device (given the time, it says what
//! the plugin would publish) and [`run`] wires it to a broker. [`run_with_rest`] also serves the
//! REST endpoints the bridge's commands use (`POST /api/job`, `/api/printer/tool|bed|chamber`,
//! `/api/connection`), checking `X-Api-Key` and answering 409 where OctoPrint does (a job command
//! while neither printing nor paused, a heater command while the printer is not operational, a
//! chamber the printer profile lacks).

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Dur};
use crate::mqtt::{MqttHandle, MqttSettings, QoS};

/// Room temperature the heaters settle at.
const AMBIENT: f64 = 22.0;
/// Nozzle and bed set points of the simulated job (PLA).
const TOOL_TARGET: f64 = 215.0;
const BED_TARGET: f64 = 60.0;
/// The plugin's `temperatureThreshold`.
const THRESHOLD: f64 = 0.1;
/// Thermistor noise on each reading (±). Below half the threshold, so a heater holding its
/// temperature publishes nothing, like a real idle printer (silent for minutes).
const READING_NOISE: f64 = 0.04;
/// The simulated job file.
const FILE_NAME: &str = "benchy.gcode";
const FILE_PATH: &str = "folder/benchy.gcode";
const FILE_SIZE: i64 = 1_234_567;

/// How prints end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimOutcome {
    /// Every print finishes (`PrintDone`).
    Done,
    /// Every print is cancelled at 70 % (`PrintCancelled` + `PrintFailed` reason `cancelled`).
    Cancelled,
    /// Done, then cancelled, then done...
    #[default]
    Alternate,
}

/// How many ticks each phase of the cycle lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTicks {
    /// Printer switched off (not connected to OctoPrint; nothing but the status is published).
    pub off: u32,
    /// Connected and idle, before the print starts.
    pub idle: u32,
    /// Print started, heaters warming up, progress 0.
    pub heat: u32,
    /// Printing from 0 to 100 % (pause excluded).
    pub print: u32,
    /// Paused (at 40 %).
    pub paused: u32,
    /// Print over, heaters off, before the printer is disconnected.
    pub cool: u32,
}

impl Default for PhaseTicks {
    fn default() -> Self {
        // With 1 s ticks a whole cycle takes about a minute: enough to watch in the demo.
        PhaseTicks { off: 3, idle: 5, heat: 8, print: 40, paused: 4, cool: 6 }
    }
}

impl PhaseTicks {
    /// Ticks of one full cycle.
    #[cfg(test)]
    pub(crate) fn cycle(&self) -> u32 {
        self.off + self.idle + self.heat + self.print + self.paused + self.cool
    }
}

/// Everything [`run`] needs; built by the CLI (`hlbridge simulate octoprint`) and `simulators:`.
#[derive(Debug, Clone)]
pub struct OctoprintSimOptions {
    /// Broker to publish to (the last will and `connected` status are set from `base_topic`).
    pub broker: MqttSettings,
    /// The plugin's `baseTopic`, glued to the sub-topics as is (so normally ending in `/`).
    pub base_topic: String,
    /// One simulated temperature poll / progress-timer step (real: 2–5 s).
    pub tick: Duration,
    /// Publish `printer_data` on `progress/printing` (plugin setting, off by default).
    pub printer_data: bool,
    /// How prints end.
    pub outcome: SimOutcome,
    /// OctoPrint 2.0: `connector` in events, `CLOSED` instead of `OFFLINE`, 2.0 `printer_data`.
    pub octoprint2: bool,
    /// Plugin ≤ 0.8.13: every event retained.
    pub legacy_retained_events: bool,
    /// Phase lengths.
    pub phases: PhaseTicks,
    /// RNG seed for temperature noise.
    pub seed: u64,
}

impl OctoprintSimOptions {
    /// Options with the plugin's defaults for `broker`.
    pub fn new(broker: MqttSettings) -> OctoprintSimOptions {
        OctoprintSimOptions {
            broker,
            base_topic: "octoPrint/".into(),
            tick: Duration::from_secs(1),
            printer_data: false,
            outcome: SimOutcome::Alternate,
            octoprint2: false,
            legacy_retained_events: false,
            phases: PhaseTicks::default(),
            seed: 1,
        }
    }
}

/// One MQTT publish of the simulated plugin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SimPublish {
    /// Full topic.
    pub topic: String,
    /// Payload exactly as the plugin writes it (Python `json.dumps` style).
    pub payload: String,
    /// Retain flag.
    pub retain: bool,
    /// QoS 1 (status) or 0 (everything else).
    pub qos1: bool,
}

/// A JSON value written like Python's `json.dumps` (`", "` and `": "` separators, key order kept,
/// floats with a `.0`), so payloads look byte-for-byte like the plugin's.
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Obj(Vec<(&'static str, J)>),
}

impl J {
    fn s(s: &str) -> J {
        J::Str(s.to_owned())
    }

    fn opt_f(v: Option<f64>) -> J {
        v.map(J::Float).unwrap_or(J::Null)
    }

    fn write(&self, out: &mut String) {
        use std::fmt::Write as _;
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => {
                let _ = write!(out, "{i}");
            }
            J::Float(f) if f.is_finite() => {
                let _ = write!(out, "{f:?}");
            }
            J::Float(_) => out.push_str("NaN"),
            J::Str(s) => out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())),
            J::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push('"');
                    out.push_str(k);
                    out.push_str("\": ");
                    v.write(out);
                }
                out.push('}');
            }
        }
    }

    fn dump(&self) -> String {
        let mut s = String::with_capacity(128);
        self.write(&mut s);
        s
    }
}

/// Where the cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Printer not connected to OctoPrint.
    Off,
    /// Connected, no job.
    Idle,
    /// Job started, heating up.
    Heating,
    /// Printing.
    Printing,
    /// Paused.
    Paused,
    /// Job over, cooling down.
    Cooling,
}

#[derive(Debug, Clone, Copy)]
struct Heater {
    key: &'static str,
    /// The heater's true temperature (smooth; readings add [`READING_NOISE`]).
    actual: f64,
    target: f64,
    /// What was last published (actual, target), for the threshold.
    last: Option<(f64, f64)>,
}

#[derive(Debug, Clone)]
struct Job {
    /// OctoPrint's completion (0..100), `None` after a cancel.
    completion: Option<f64>,
    /// Seconds printed.
    print_secs: f64,
}

/// The simulated OctoPrint + plugin (see module docs). Pure: feed it the time, get publishes.
pub(crate) struct PrinterSim {
    base: String,
    printer_data: bool,
    octoprint2: bool,
    legacy: bool,
    outcome: SimOutcome,
    phases: PhaseTicks,
    tick_secs: f64,
    rng: StdRng,
    phase: Phase,
    in_phase: u32,
    cycle: u32,
    state_id: &'static str,
    state_text: &'static str,
    heaters: [Heater; 2],
    job: Option<Job>,
    /// The plugin's 5 s progress timer.
    timer: bool,
    last_progress: Option<(i64, String)>,
    paused_this_cycle: bool,
    z: f64,
    /// Temperatures queued while the broker is away (the plugin's unbounded deque).
    queue: Vec<SimPublish>,
    connected: bool,
    connected_once: bool,
    /// Set by the first REST command that acts: from then on the printer only does what it is
    /// told (a real printer does not run the demo cycle), so tests and users see their effect.
    manual: bool,
}

impl PrinterSim {
    /// A printer that is switched off, its plugin not yet connected.
    pub(crate) fn new(opts: &OctoprintSimOptions) -> PrinterSim {
        let heater = |key| Heater { key, actual: AMBIENT, target: 0.0, last: None };
        PrinterSim {
            base: opts.base_topic.clone(),
            printer_data: opts.printer_data,
            octoprint2: opts.octoprint2,
            legacy: opts.legacy_retained_events,
            outcome: opts.outcome,
            phases: opts.phases,
            tick_secs: opts.tick.as_secs_f64(),
            rng: StdRng::seed_from_u64(opts.seed),
            phase: Phase::Off,
            in_phase: 0,
            cycle: 0,
            state_id: if opts.octoprint2 { "CLOSED" } else { "OFFLINE" },
            state_text: "Offline",
            heaters: [heater("tool0"), heater("bed")],
            job: None,
            timer: false,
            last_progress: None,
            paused_this_cycle: false,
            z: 0.0,
            queue: Vec::new(),
            connected: false,
            connected_once: false,
            manual: false,
        }
    }

    /// The current phase.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The plugin's broker connection came up (after its `connected` status): flush the queued
    /// temperatures, and at the first connection publish the progress and slicing resets.
    pub(crate) fn on_connect(&mut self, now: i64) -> Vec<SimPublish> {
        self.connected = true;
        let mut out: Vec<SimPublish> = self
            .queue
            .drain(..)
            .map(|mut m| {
                // Flushed with `broker.retain`, whatever each message asked for.
                m.retain = true;
                m
            })
            .collect();
        if !self.connected_once {
            self.connected_once = true;
            let (location, path, progress) = match &self.job {
                Some(j) => ("local", FILE_PATH, j.completion.map(|c| c.round() as i64).unwrap_or(0)),
                None => ("", "", 0),
            };
            let fields = vec![
                ("location", J::s(location)),
                ("path", J::s(path)),
                ("progress", J::Int(progress)),
                ("_timestamp", J::Int(now)),
            ];
            out.push(self.msg("progress/printing", J::Obj(fields), true));
            let slicing = vec![
                ("slicer", J::s("")),
                ("source_location", J::s("")),
                ("source_path", J::s("")),
                ("destination_location", J::s("")),
                ("destination_path", J::s("")),
                ("progress", J::Int(0)),
                ("_timestamp", J::Int(now)),
            ];
            out.push(self.msg("progress/slicing", J::Obj(slicing), true));
        }
        out
    }

    /// The broker connection was lost: events and progress are dropped, temperatures queued.
    pub(crate) fn on_disconnect(&mut self) {
        self.connected = false;
    }

    /// OctoPrint shuts down, in the order a real OctoPrint 1.11.8 + plugin 0.8.16 does it: the
    /// plugin's own `disconnected`, then OctoPrint's live `Shutdown` event, then (the socket closes
    /// without a DISCONNECT) the broker's last will, `disconnected` again. [`run`] ends with a clean
    /// DISCONNECT, which suppresses the real will, so the will's message is the last publish here:
    /// subscribers see the same topic, payload and order.
    pub(crate) fn shutdown(&mut self, now: i64) -> Vec<SimPublish> {
        let mut out = Vec::new();
        if !self.connected {
            return out;
        }
        let status = SimPublish {
            topic: format!("{}mqtt", self.base),
            payload: "disconnected".into(),
            retain: true,
            qos1: true,
        };
        out.push(status.clone());
        self.event(&mut out, now, "Shutdown", Vec::new());
        out.push(status);
        self.connected = false;
        out
    }

    /// Advances one tick at unix time `now` and returns what the plugin publishes.
    pub(crate) fn step(&mut self, now: i64) -> Vec<SimPublish> {
        let mut out = Vec::new();
        self.in_phase += 1;
        let p = self.phases;
        match self.phase {
            Phase::Printing if self.manual => self.advance_job(0.0),
            _ if self.manual => {}
            Phase::Off if self.in_phase >= p.off.max(1) => self.connect(&mut out, now),
            Phase::Idle if self.in_phase >= p.idle.max(1) => self.start_job(&mut out, now),
            Phase::Heating => {
                self.advance_job(0.0);
                if self.in_phase >= p.heat.max(1) {
                    self.enter(Phase::Printing);
                }
            }
            Phase::Printing => self.print_tick(&mut out, now),
            Phase::Paused if self.in_phase >= p.paused.max(1) => self.resume(&mut out, now),
            Phase::Cooling if self.in_phase >= p.cool.max(1) => self.disconnect(&mut out, now),
            _ => {}
        }
        if self.phase != Phase::Off {
            self.temperatures(&mut out, now);
        }
        self.progress_timer(&mut out, now);
        out
    }

    /// `POST /api/job` like OctoPrint's `api/job.py`: `pause` (action `pause`, `resume`, `toggle`)
    /// and `cancel` need a job printing or paused (409 otherwise); a pause of a paused job or a
    /// resume of a printing one changes nothing.
    pub(crate) fn rest_job(&mut self, json: &serde_json::Value, now: i64) -> Result<Vec<SimPublish>, RestAnswer> {
        use axum::http::StatusCode;
        let command = json.get("command").and_then(|c| c.as_str()).unwrap_or_default();
        let active = matches!(self.phase, Phase::Heating | Phase::Printing | Phase::Paused);
        let mut out = Vec::new();
        match command {
            "pause" | "cancel" if !active => {
                return Err((
                    StatusCode::CONFLICT,
                    format!("Printer is neither printing nor paused, '{command}' command cannot be performed"),
                ));
            }
            "pause" => {
                let action = json.get("action").and_then(|a| a.as_str()).unwrap_or("toggle");
                let paused = self.phase == Phase::Paused;
                match action {
                    "pause" | "toggle" if !paused => self.pause(&mut out, now),
                    "resume" | "toggle" if paused => self.resume(&mut out, now),
                    "pause" | "resume" | "toggle" => {}
                    _ => return Err((StatusCode::BAD_REQUEST, format!("Unknown action: {action}"))),
                }
            }
            "cancel" => self.cancel(&mut out, now),
            _ => return Err((StatusCode::BAD_REQUEST, "Unknown command".into())),
        }
        Ok(out)
    }

    /// `POST /api/printer/tool|bed|chamber` with `command: target`: 409 while the printer is not
    /// operational or for a chamber the profile lacks. The new target is published with the next
    /// temperature sample, as the plugin does.
    pub(crate) fn rest_heater(&mut self, which: &str, json: &serde_json::Value) -> Result<Vec<SimPublish>, RestAnswer> {
        use axum::http::StatusCode;
        if self.phase == Phase::Off {
            return Err((StatusCode::CONFLICT, "Printer is not operational".into()));
        }
        if which == "chamber" {
            return Err((StatusCode::CONFLICT, "Printer does not have a heated chamber".into()));
        }
        if json.get("command").and_then(|c| c.as_str()) != Some("target") {
            return Err((StatusCode::BAD_REQUEST, "Unknown command".into()));
        }
        let targets: Vec<(String, f64)> = if which == "bed" {
            let t = json.get("target").and_then(serde_json::Value::as_f64);
            vec![("bed".into(), t.ok_or((StatusCode::BAD_REQUEST, "Not a number".to_owned()))?)]
        } else {
            let Some(map) = json.get("targets").and_then(|t| t.as_object()) else {
                return Err((StatusCode::BAD_REQUEST, "Invalid targets".into()));
            };
            let mut v = Vec::new();
            for (k, t) in map {
                let t = t.as_f64().ok_or((StatusCode::BAD_REQUEST, format!("Not a number for {k}")))?;
                v.push((k.clone(), t));
            }
            v
        };
        for (key, t) in targets {
            let Some(h) = self.heaters.iter_mut().find(|h| h.key == key) else {
                return Err((StatusCode::BAD_REQUEST, format!("Invalid target for setting temperature: {key}")));
            };
            h.target = t;
        }
        Ok(Vec::new())
    }

    /// `POST /api/connection`: `connect` (re-connects a connected printer) and `disconnect`.
    pub(crate) fn rest_connection(
        &mut self,
        json: &serde_json::Value,
        now: i64,
    ) -> Result<Vec<SimPublish>, RestAnswer> {
        let mut out = Vec::new();
        match json.get("command").and_then(|c| c.as_str()) {
            Some("connect") => {
                if self.phase == Phase::Off {
                    self.connect(&mut out, now);
                }
            }
            Some("disconnect") => {
                if self.phase != Phase::Off {
                    self.disconnect(&mut out, now);
                }
            }
            _ => return Err((axum::http::StatusCode::BAD_REQUEST, "Unknown command".into())),
        }
        Ok(out)
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.in_phase = 0;
    }

    fn msg(&self, sub: &str, payload: J, retain: bool) -> SimPublish {
        SimPublish { topic: format!("{}{sub}", self.base), payload: payload.dump(), retain, qos1: false }
    }

    /// Publishes an event if connected (the plugin drops events while the broker is away).
    fn event(&mut self, out: &mut Vec<SimPublish>, now: i64, name: &str, mut fields: Vec<(&'static str, J)>) {
        if !self.connected {
            return;
        }
        fields.push(("_event", J::s(name)));
        fields.push(("_timestamp", J::Int(now)));
        // ≥ 0.8.14 retains only these two (with broker.retain); ≤ 0.8.13 retained every event.
        let retain = self.legacy || matches!(name, "ZChange" | "FirmwareData");
        out.push(self.msg(&format!("event/{name}"), J::Obj(fields), retain));
    }

    /// `connector` (2.0) for comm and print events.
    fn connector(&self, fields: &mut Vec<(&'static str, J)>) {
        if self.octoprint2 {
            fields.push(("connector", J::s("serial")));
        }
    }

    fn set_state(&mut self, out: &mut Vec<SimPublish>, now: i64, id: &'static str, text: &'static str) {
        self.state_id = id;
        self.state_text = text;
        let mut f = vec![("state_id", J::s(id)), ("state_string", J::s(text))];
        self.connector(&mut f);
        self.event(out, now, "PrinterStateChanged", f);
    }

    fn job_fields(&self, user: bool) -> Vec<(&'static str, J)> {
        let mut f = vec![
            ("name", J::s(FILE_NAME)),
            ("path", J::s(FILE_PATH)),
            ("origin", J::s("local")),
            ("size", J::Int(FILE_SIZE)),
            ("owner", J::s("admin")),
        ];
        if user {
            f.push(("user", J::s("admin")));
        }
        f
    }

    fn position(&self) -> J {
        J::Obj(vec![
            ("x", J::Float(100.0)),
            ("y", J::Float(80.0)),
            ("z", J::Float((self.z * 100.0).round() / 100.0)),
            ("e", J::Float(812.3)),
            ("t", J::Int(0)),
            ("f", J::Int(1800)),
        ])
    }

    fn progress_int(&self) -> i64 {
        self.job.as_ref().and_then(|j| j.completion).map(|c| c.round() as i64).unwrap_or(0)
    }

    fn fileposition(&self) -> i64 {
        let c = self.job.as_ref().and_then(|j| j.completion).unwrap_or(0.0);
        (FILE_SIZE as f64 * c / 100.0) as i64
    }

    fn print_secs(&self) -> f64 {
        self.job.as_ref().map(|j| j.print_secs).unwrap_or(0.0)
    }

    fn connect(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        let mut f = Vec::new();
        self.connector(&mut f);
        self.event(out, now, "Connecting", f);
        if !self.octoprint2 {
            self.set_state(out, now, "OPEN_SERIAL", "Opening serial connection");
        }
        self.set_state(out, now, "CONNECTING", "Connecting");
        self.set_state(out, now, "OPERATIONAL", "Operational");
        let mut f = vec![("port", J::s("/dev/ttyACM0")), ("baudrate", J::Int(115_200))];
        self.connector(&mut f);
        self.event(out, now, "Connected", f);
        let data = J::Obj(vec![
            ("FIRMWARE_NAME", J::s("Marlin 2.1.2.4 (Jun 30 2024 12:00:00)")),
            ("SOURCE_CODE_URL", J::s("github.com/MarlinFirmware/Marlin")),
            ("PROTOCOL_VERSION", J::s("1.0")),
            ("MACHINE_TYPE", J::s("hlbridge simulated printer")),
            ("EXTRUDER_COUNT", J::s("1")),
            ("UUID", J::s("cede2a2f-41a2-4748-9b12-c55c62f367ff")),
        ]);
        self.event(
            out,
            now,
            "FirmwareData",
            vec![("name", J::s("Marlin 2.1.2.4 (Jun 30 2024 12:00:00)")), ("data", data)],
        );
        self.enter(Phase::Idle);
    }

    fn start_job(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        self.job = Some(Job { completion: Some(0.0), print_secs: 0.0 });
        self.paused_this_cycle = false;
        self.z = 0.0;
        let mut f = self.job_fields(true);
        self.connector(&mut f);
        self.event(out, now, "FileSelected", f);
        self.timer = true;
        self.set_state(out, now, "STARTING", "Starting");
        let mut f = self.job_fields(true);
        self.connector(&mut f);
        self.event(out, now, "PrintStarted", f);
        self.set_state(out, now, "PRINTING", "Printing");
        self.heaters[0].target = TOOL_TARGET;
        self.heaters[1].target = BED_TARGET;
        self.enter(Phase::Heating);
    }

    fn advance_job(&mut self, by: f64) {
        let tick = self.tick_secs;
        if let Some(j) = &mut self.job {
            j.print_secs += tick;
            if let Some(c) = &mut j.completion {
                *c = (*c + by).min(100.0);
            }
        }
    }

    fn cancels_this_cycle(&self) -> bool {
        match self.outcome {
            SimOutcome::Done => false,
            SimOutcome::Cancelled => true,
            SimOutcome::Alternate => self.cycle % 2 == 1,
        }
    }

    fn print_tick(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        self.advance_job(100.0 / f64::from(self.phases.print.max(1)));
        if self.in_phase.is_multiple_of(3) {
            let old = (self.z * 100.0).round() / 100.0;
            self.z += 0.2;
            let new = (self.z * 100.0).round() / 100.0;
            self.event(out, now, "ZChange", vec![("new", J::Float(new)), ("old", J::Float(old))]);
        }
        let c = self.job.as_ref().and_then(|j| j.completion).unwrap_or(0.0);
        if !self.paused_this_cycle && c >= 40.0 {
            self.pause(out, now);
        } else if self.cancels_this_cycle() && c >= 70.0 {
            self.cancel(out, now);
        } else if c >= 100.0 {
            self.finish(out, now);
        }
    }

    fn pause(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        self.paused_this_cycle = true;
        self.set_state(out, now, "PAUSING", "Pausing");
        // Key order of the plugin's PrintPaused payload (shared/samples/octoprint, synthesized).
        let mut f = self.job_fields(false);
        f.truncate(4);
        f.push(("position", self.position()));
        f.push(("fileposition", J::Int(self.fileposition())));
        f.push(("progress", J::Int(self.progress_int())));
        f.push(("owner", J::s("admin")));
        f.push(("user", J::s("admin")));
        self.connector(&mut f);
        self.event(out, now, "PrintPaused", f);
        self.set_state(out, now, "PAUSED", "Paused");
        self.enter(Phase::Paused);
    }

    fn resume(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        self.set_state(out, now, "RESUMING", "Resuming");
        self.set_state(out, now, "PRINTING", "Printing");
        let mut f = self.job_fields(true);
        self.connector(&mut f);
        self.event(out, now, "PrintResumed", f);
        self.enter(Phase::Printing);
    }

    fn cancel(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        self.set_state(out, now, "CANCELLING", "Cancelling");
        let mut f = self.job_fields(true);
        self.connector(&mut f);
        self.event(out, now, "PrintCancelling", f);
        let time = J::Float((self.print_secs() * 1000.0).round() / 1000.0);
        let mut cancelled = self.job_fields(false);
        cancelled.push(("time", time.clone()));
        cancelled.push(("user", J::s("admin")));
        cancelled.push(("position", self.position()));
        cancelled.push(("fileposition", J::Int(self.fileposition())));
        cancelled.push(("progress", J::Int(self.progress_int())));
        self.connector(&mut cancelled);
        self.event(out, now, "PrintCancelled", cancelled.clone());
        // OctoPrint follows every cancel with PrintFailed reason=cancelled, a copy of the payload.
        let mut failed = cancelled;
        failed.insert(6, ("reason", J::s("cancelled")));
        self.event(out, now, "PrintFailed", failed);
        self.set_state(out, now, "OPERATIONAL", "Operational");
        if let Some(j) = &mut self.job {
            j.completion = None;
        }
        self.cool_down();
    }

    fn finish(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        self.set_state(out, now, "FINISHING", "Finishing");
        let mut f = self.job_fields(false);
        f.push(("time", J::Float((self.print_secs() * 1000.0).round() / 1000.0)));
        self.connector(&mut f);
        self.event(out, now, "PrintDone", f);
        self.set_state(out, now, "OPERATIONAL", "Operational");
        self.cool_down();
    }

    fn cool_down(&mut self) {
        for h in &mut self.heaters {
            h.target = 0.0;
        }
        self.cycle += 1;
        self.enter(Phase::Cooling);
    }

    fn disconnect(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        // FileDeselected comes first in OctoPrint, but plugin ≥ 0.8.14 crashes on it while its
        // progress timer is idle (issues #147, #150), so it never reaches the broker.
        let mut f = Vec::new();
        self.connector(&mut f);
        self.event(out, now, "Disconnecting", f.clone());
        self.event(out, now, "Disconnected", f);
        if self.octoprint2 {
            self.set_state(out, now, "CLOSED", "Offline");
        } else {
            self.set_state(out, now, "OFFLINE", "Offline");
        }
        self.job = None;
        self.timer = false;
        for h in &mut self.heaters {
            h.last = None;
            h.actual = AMBIENT;
        }
        self.enter(Phase::Off);
    }

    /// One temperature sample per heater, published like `on_printer_add_temperature`.
    fn temperatures(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        let p = self.phases;
        for i in 0..self.heaters.len() {
            let noise = self.rng.random_range(-READING_NOISE..READING_NOISE);
            let h = &mut self.heaters[i];
            let (goal, ticks, left) = if h.target > 0.0 { (h.target, p.heat, 0.02) } else { (AMBIENT, p.cool, 0.2) };
            // Reach `left` of the gap after `ticks` ticks; once there, only the noise moves.
            let k = 1.0 - f64::powf(left, 1.0 / f64::from(ticks.max(1)));
            h.actual += (goal - h.actual) * k;
            let (actual, target) = (((h.actual + noise) * 100.0).round() / 100.0, h.target);
            let publish = match h.last {
                None => true,
                Some((la, lt)) => (actual - la).abs() >= THRESHOLD || (target - lt).abs() >= THRESHOLD || la == 0.0,
            };
            if !publish || (actual == 0.0 && target == 0.0) {
                continue;
            }
            h.last = Some((actual, target));
            let key = h.key;
            let fields = vec![("actual", J::Float(actual)), ("target", J::Float(target)), ("_timestamp", J::Int(now))];
            let m = self.msg(&format!("temperature/{key}"), J::Obj(fields), true);
            if self.connected {
                out.push(m);
            } else {
                self.queue.push(m);
            }
        }
    }

    /// The plugin's progress timer: publishes when the integer progress or the path changes and
    /// stops at 100 % or when OctoPrint has no completion any more (after a cancel).
    fn progress_timer(&mut self, out: &mut Vec<SimPublish>, now: i64) {
        if !self.timer {
            return;
        }
        let Some(job) = &self.job else {
            self.timer = false;
            return;
        };
        let completion = job.completion;
        let progress = completion.map(|c| c.round() as i64).unwrap_or(0);
        if completion.is_none_or(|c| c >= 100.0) {
            self.timer = false;
        }
        let key = (progress, FILE_PATH.to_owned());
        if self.last_progress.as_ref() == Some(&key) || !self.connected {
            return;
        }
        self.last_progress = Some(key);
        let mut fields = vec![("location", J::s("local")), ("path", J::s(FILE_PATH)), ("progress", J::Int(progress))];
        if self.printer_data {
            fields.push(("printer_data", self.printer_data_json(completion)));
        }
        fields.push(("_timestamp", J::Int(now)));
        out.push(self.msg("progress/printing", J::Obj(fields), true));
    }

    /// OctoPrint's `get_current_data()` (1.x shape, or 2.0 with `health` and `currentTool`).
    fn printer_data_json(&self, completion: Option<f64>) -> J {
        let id = self.state_id;
        let printing = matches!(id, "STARTING" | "PRINTING" | "PAUSING" | "RESUMING" | "CANCELLING" | "FINISHING");
        let offline = matches!(id, "OFFLINE" | "CLOSED" | "CONNECTING" | "OPEN_SERIAL");
        let paused = id == "PAUSED";
        let flags = J::Obj(vec![
            ("operational", J::Bool(!offline)),
            ("printing", J::Bool(printing)),
            ("cancelling", J::Bool(id == "CANCELLING")),
            ("pausing", J::Bool(id == "PAUSING")),
            ("resuming", J::Bool(id == "RESUMING")),
            ("finishing", J::Bool(id == "FINISHING")),
            ("closedOrError", J::Bool(offline)),
            ("error", J::Bool(false)),
            ("paused", J::Bool(paused)),
            ("ready", J::Bool(!offline && !printing && !paused)),
            ("sdReady", J::Bool(false)),
        ]);
        let state = J::Obj(vec![("text", J::s(self.state_text)), ("flags", flags), ("error", J::s(""))]);
        let total = f64::from(self.phases.heat + self.phases.print) * self.tick_secs;
        let secs = self.print_secs();
        let running = completion.is_some();
        let file = J::Obj(vec![
            ("name", J::s(FILE_NAME)),
            ("path", J::s(FILE_PATH)),
            ("display", J::s(FILE_NAME)),
            ("origin", J::s("local")),
            ("size", J::Int(FILE_SIZE)),
            ("date", J::Int(1_700_000_000)),
        ]);
        let mut job = vec![("file", file), ("estimatedPrintTime", J::Float(total))];
        if !self.octoprint2 {
            job.push(("averagePrintTime", J::Null));
            job.push(("lastPrintTime", J::Null));
        }
        job.push((
            "filament",
            J::Obj(vec![("tool0", J::Obj(vec![("length", J::Float(1630.3)), ("volume", J::Float(3.92))]))]),
        ));
        job.push(("user", J::s("admin")));
        let progress = J::Obj(vec![
            ("completion", J::opt_f(completion)),
            ("filepos", if running { J::Int(self.fileposition()) } else { J::Null }),
            ("printTime", if running { J::Int(secs as i64) } else { J::Null }),
            ("printTimeLeft", if running { J::Int((total - secs).max(0.0) as i64) } else { J::Null }),
            ("printTimeLeftOrigin", if running { J::s("estimate") } else { J::Null }),
        ]);
        let z = if self.z > 0.0 { J::Float((self.z * 100.0).round() / 100.0) } else { J::Null };
        let mut data = vec![("state", state), ("job", J::Obj(job))];
        if self.octoprint2 {
            data.push(("progress", progress));
            data.push(("offsets", J::Obj(Vec::new())));
            data.push(("health", J::Obj(Vec::new())));
            data.push(("currentZ", z));
            data.push(("currentTool", J::Int(0)));
        } else {
            data.push(("currentZ", z));
            data.push(("progress", progress));
            data.push(("offsets", J::Obj(Vec::new())));
            data.push((
                "resends",
                J::Obj(vec![
                    ("count", J::Int(0)),
                    ("transmitted", J::Int(self.fileposition() / 30)),
                    ("ratio", J::Int(0)),
                ]),
            ));
        }
        J::Obj(data)
    }
}

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn send(mqtt: &MqttHandle, msgs: Vec<SimPublish>) {
    for m in msgs {
        let qos = if m.qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
        mqtt.publish(m.topic, m.payload, qos, m.retain);
    }
}

/// The REST side of the simulated OctoPrint (see [`run_with_rest`]).
pub struct RestSim {
    /// Where the REST API listens (bound by the caller, so tests own their port).
    pub listener: tokio::net::TcpListener,
    /// The API key OctoPrint expects in `X-Api-Key`; anything else gets 403.
    pub api_key: String,
    /// Accept commands (204) but never act on them: a printer that stays silent, for timeouts.
    pub silent: bool,
}

/// Runs the simulated OctoPrint until `cancel` fires, then shuts it down like OctoPrint does.
pub async fn run(opts: OctoprintSimOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    run_with_rest(opts, None, cancel).await
}

/// Shared between the tick loop and the REST handlers.
#[derive(Clone)]
struct RestCtx {
    /// The printer both sides act on.
    sim: Arc<Mutex<PrinterSim>>,
    /// Where the effects of a command are published.
    mqtt: MqttHandle,
    /// The expected `X-Api-Key`.
    api_key: Arc<str>,
    /// See [`RestSim::silent`].
    silent: bool,
}

fn lock_sim(sim: &Mutex<PrinterSim>) -> std::sync::MutexGuard<'_, PrinterSim> {
    sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type RestAnswer = (axum::http::StatusCode, String);

/// Parses a REST body and checks the key like OctoPrint: 403 for a wrong key, 400 for bad JSON.
fn rest_prelude(ctx: &RestCtx, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<serde_json::Value, RestAnswer> {
    use axum::http::StatusCode;
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key != &*ctx.api_key {
        return Err((StatusCode::FORBIDDEN, "You don't have the permission to access the requested resource.".into()));
    }
    serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, "Malformed JSON body in request".into()))
}

/// Applies one REST command to the printer and publishes its effects.
fn rest_apply(
    ctx: &RestCtx,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    act: impl FnOnce(&mut PrinterSim, &serde_json::Value, i64) -> Result<Vec<SimPublish>, RestAnswer>,
) -> RestAnswer {
    let json = match rest_prelude(ctx, headers, body) {
        Ok(j) => j,
        Err(e) => return e,
    };
    let mut sim = lock_sim(&ctx.sim);
    if ctx.silent {
        return (axum::http::StatusCode::NO_CONTENT, String::new());
    }
    match act(&mut sim, &json, unix_now()) {
        Ok(out) => {
            sim.manual = true;
            send(&ctx.mqtt, out);
            (axum::http::StatusCode::NO_CONTENT, String::new())
        }
        Err(e) => e,
    }
}

fn rest_router(ctx: RestCtx) -> axum::Router {
    use axum::extract::State;
    use axum::routing::post;
    let route = |f: fn(&mut PrinterSim, &serde_json::Value, i64) -> Result<Vec<SimPublish>, RestAnswer>| {
        post(move |State(ctx): State<RestCtx>, headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
            rest_apply(&ctx, &headers, &body, f)
        })
    };
    axum::Router::new()
        .route("/api/job", route(PrinterSim::rest_job))
        .route("/api/printer/tool", route(|s, j, _| s.rest_heater("tool", j)))
        .route("/api/printer/bed", route(|s, j, _| s.rest_heater("bed", j)))
        .route("/api/printer/chamber", route(|s, j, _| s.rest_heater("chamber", j)))
        .route("/api/connection", route(PrinterSim::rest_connection))
        .with_state(ctx)
}

/// Like [`run`], also serving the REST API on `rest` when given.
pub async fn run_with_rest(
    opts: OctoprintSimOptions,
    rest: Option<RestSim>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut settings = opts.broker.clone();
    let status = format!("{}mqtt", opts.base_topic);
    // The plugin's status topic: `connected` (QoS 1, retained) after every connect, and
    // `disconnected` as its last will.
    settings.last_will = Some((status.clone(), "disconnected".into()));
    settings.birth = Some((status, "connected".into()));
    settings.keep_alive = Duration::from_secs(60);
    let tracker = TaskTracker::new();
    // The MQTT tasks get their own token: they must outlive `cancel` long enough to flush.
    let mqtt_cancel = CancellationToken::new();
    let mqtt = crate::mqtt::spawn(&settings, crate::metrics::Metrics::detached(), &tracker, mqtt_cancel.clone())?;
    let mut watch = mqtt.watch();
    let sim = Arc::new(Mutex::new(PrinterSim::new(&opts)));
    if let Some(rest) = rest {
        let ctx = RestCtx { sim: sim.clone(), mqtt: mqtt.clone(), api_key: rest.api_key.into(), silent: rest.silent };
        let shutdown = cancel.clone().cancelled_owned();
        tracker.spawn(async move {
            if let Err(e) = axum::serve(rest.listener, rest_router(ctx)).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "simulated OctoPrint REST server failed");
            }
        });
    }
    let mut interval = tokio::time::interval(opts.tick.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut generation = 0;
    tracing::info!(base_topic = %opts.base_topic, printer_data = opts.printer_data, "simulated OctoPrint started");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => send(&mqtt, lock_sim(&sim).step(unix_now())),
            changed = watch.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = *watch.borrow_and_update();
                if s.connected && s.generation != generation {
                    generation = s.generation;
                    send(&mqtt, lock_sim(&sim).on_connect(unix_now()));
                } else if !s.connected {
                    lock_sim(&sim).on_disconnect();
                }
            }
        }
    }
    let last = lock_sim(&sim).shutdown(unix_now());
    send(&mqtt, last);
    mqtt.flush_and_disconnect(Duration::from_secs(1)).await;
    mqtt_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("simulated OctoPrint tasks did not stop within 5 s");
    }
    tracing::info!(base_topic = %opts.base_topic, "simulated OctoPrint stopped");
    Ok(())
}

/// `type: octoprint` simulator keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OctoprintSimConfig {
    /// Broker the simulated OctoPrint publishes to; the bridge's own broker when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The plugin's base topic (`publish.baseTopic`), glued to `event/...` as is.
    #[serde(default = "default_base_topic")]
    pub base_topic: String,
    /// One simulated temperature poll / progress-timer step (a real plugin: 2–5 s).
    #[serde(default = "one_second")]
    pub tick: Dur,
    /// Publish `printer_data` on `progress/printing` (the plugin's `printerData`, off by default):
    /// gives print times and the printer state during a print.
    #[serde(default)]
    pub printer_data: bool,
    /// How prints end: `done`, `cancelled` or `alternate`.
    #[serde(default)]
    pub outcome: SimOutcome,
    /// Speak OctoPrint 2.0 (`connector` in events, `CLOSED` when off, 2.0 `printer_data`).
    #[serde(default)]
    pub octoprint2: bool,
    /// Behave like plugin ≤ 0.8.13, which retained every event.
    #[serde(default)]
    pub legacy_retained_events: bool,
}

fn default_base_topic() -> String {
    "octoPrint/".into()
}

fn one_second() -> Dur {
    Dur::secs(1)
}

/// Command-line arguments of `hlbridge simulate octoprint`.
#[derive(clap::Args, Debug)]
pub struct CliArgs {
    /// Broker to publish to.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// The plugin's base topic (`octoPrint/` since plugin 0.8.4, `octoprint/` before).
    #[arg(long, default_value = "octoPrint/")]
    pub base_topic: String,
    /// Tick length: one temperature poll / progress step.
    #[arg(long, default_value = "1s", value_parser = parse_dur)]
    pub tick: Duration,
    /// Publish `printer_data` on `progress/printing`.
    #[arg(long)]
    pub printer_data: bool,
    /// How prints end.
    #[arg(long, value_enum, default_value_t = SimOutcome::Alternate)]
    pub outcome: SimOutcome,
    /// Speak OctoPrint 2.0.
    #[arg(long)]
    pub octoprint2: bool,
    /// Retain every event, like plugin <= 0.8.13.
    #[arg(long)]
    pub legacy_retained_events: bool,
    /// Also serve OctoPrint's REST API for commands here (e.g. 127.0.0.1:5000).
    #[arg(long)]
    pub rest_listen: Option<std::net::SocketAddr>,
    /// The API key the REST API expects in `X-Api-Key`.
    #[arg(long, default_value = "simulated-octoprint-key")]
    pub api_key: String,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::config::types::parse_duration(s)
}

/// Checks the simulator's keys (`path` = `simulators.<name>`).
pub(crate) fn validate(cfg: &OctoprintSimConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if cfg.base_topic.contains(['+', '#']) {
        errs.push((format!("{path}.base_topic"), "must not contain MQTT wildcards".into()));
    }
    if let Some(b) = &cfg.broker
        && let Err(e) = MqttSettings::from_url(b, "sim")
    {
        errs.push((format!("{path}.broker"), e.to_string()));
    }
    if cfg.tick.0 < Duration::from_millis(1) {
        errs.push((format!("{path}.tick"), "must be at least 1ms".into()));
    }
    errs
}

/// Starts the simulator inside the bridge process.
pub(crate) async fn start(
    name: &str,
    cfg: &OctoprintSimConfig,
    config: &Config,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let broker = super::broker_settings(cfg.broker.as_deref(), config, &format!("octoprint-sim-{name}"))?;
    let opts = OctoprintSimOptions {
        base_topic: cfg.base_topic.clone(),
        tick: cfg.tick.0,
        printer_data: cfg.printer_data,
        outcome: cfg.outcome,
        octoprint2: cfg.octoprint2,
        legacy_retained_events: cfg.legacy_retained_events,
        ..OctoprintSimOptions::new(broker)
    };
    super::spawn_named(tracker, name, run(opts, cancel));
    Ok(())
}

/// Runs the simulator from the command line until Ctrl-C.
pub async fn run_cli(args: CliArgs) -> ExitCode {
    let broker = match MqttSettings::from_url(&args.broker, &format!("octoprint-sim-{}", std::process::id()))
        .context("--broker")
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let opts = OctoprintSimOptions {
        base_topic: args.base_topic,
        tick: args.tick,
        printer_data: args.printer_data,
        outcome: args.outcome,
        octoprint2: args.octoprint2,
        legacy_retained_events: args.legacy_retained_events,
        ..OctoprintSimOptions::new(broker)
    };
    let rest = match args.rest_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(RestSim { listener, api_key: args.api_key, silent: false }),
            Err(e) => {
                eprintln!("--rest-listen {addr}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    super::run_until_signal(|cancel| run_with_rest(opts, rest, cancel)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::octoprint::mapping::{Mapper, Topic, classify};

    const T0: i64 = 1_700_000_000;

    fn opts() -> OctoprintSimOptions {
        let broker = MqttSettings::from_url("mqtt://127.0.0.1:1", "t").unwrap();
        OctoprintSimOptions {
            phases: PhaseTicks { off: 2, idle: 2, heat: 3, print: 10, paused: 2, cool: 2 },
            ..OctoprintSimOptions::new(broker)
        }
    }

    /// Connects the plugin and runs `ticks` ticks, one second apart.
    fn run_ticks(sim: &mut PrinterSim, ticks: u32) -> Vec<SimPublish> {
        let mut out = sim.on_connect(T0);
        for i in 0..ticks {
            out.extend(sim.step(T0 + 1 + i64::from(i)));
        }
        out
    }

    fn events(msgs: &[SimPublish]) -> Vec<&str> {
        msgs.iter().filter_map(|m| m.topic.strip_prefix("octoPrint/event/")).collect()
    }

    fn state_ids(msgs: &[SimPublish]) -> Vec<String> {
        msgs.iter()
            .filter(|m| m.topic.ends_with("/PrinterStateChanged"))
            .map(|m| {
                serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["state_id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    fn position(list: &[&str], name: &str) -> usize {
        list.iter().position(|e| *e == name).unwrap_or_else(|| panic!("{name} missing from {list:?}"))
    }

    #[test]
    fn a_cycle_connects_heats_prints_pauses_resumes_finishes_and_disconnects() {
        let o = opts();
        let mut sim = PrinterSim::new(&o);
        let msgs = run_ticks(&mut sim, o.phases.cycle());
        let ev = events(&msgs);
        let order = [
            "Connecting",
            "Connected",
            "FirmwareData",
            "FileSelected",
            "PrintStarted",
            "PrintPaused",
            "PrintResumed",
            "PrintDone",
            "Disconnecting",
            "Disconnected",
        ];
        for pair in order.windows(2) {
            assert!(position(&ev, pair[0]) < position(&ev, pair[1]), "{} before {}: {ev:?}", pair[0], pair[1]);
        }
        assert!(ev.contains(&"ZChange"));
        let ids = state_ids(&msgs);
        assert_eq!(ids.first().map(String::as_str), Some("OPEN_SERIAL"));
        assert_eq!(ids.last().map(String::as_str), Some("OFFLINE"));
        for id in ["OPERATIONAL", "STARTING", "PRINTING", "PAUSING", "PAUSED", "RESUMING", "FINISHING"] {
            assert!(ids.iter().any(|i| i == id), "{id} missing: {ids:?}");
        }
        let temps: Vec<_> = msgs.iter().filter(|m| m.topic == "octoPrint/temperature/tool0").collect();
        let peak = temps
            .iter()
            .map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["actual"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(peak > 205.0, "the nozzle heats to about 215 °C, got {peak}");
        let progress: Vec<i64> = msgs
            .iter()
            .filter(|m| m.topic == "octoPrint/progress/printing")
            .map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["progress"].as_i64().unwrap())
            .collect();
        assert_eq!(progress.last(), Some(&100));
        assert!(progress.windows(2).all(|w| w[0] <= w[1] || w[1] == 0), "progress only rises: {progress:?}");
    }

    #[test]
    fn alternate_outcome_cancels_the_second_print() {
        let o = opts();
        let mut sim = PrinterSim::new(&o);
        let msgs = run_ticks(&mut sim, o.phases.cycle() * 2 + 4);
        let ev = events(&msgs);
        let cancelled = position(&ev, "PrintCancelled");
        assert_eq!(ev[cancelled - 1], "PrintCancelling");
        assert_eq!(ev[cancelled + 1], "PrintFailed");
        let failed = msgs.iter().find(|m| m.topic.ends_with("/PrintFailed")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&failed.payload).unwrap();
        assert_eq!(v["reason"], "cancelled");
        assert!(v["progress"].as_i64().unwrap() >= 70);
        // After a cancel OctoPrint's completion is None: the timer publishes 0 for the same path.
        let after: Vec<_> = msgs
            .iter()
            .skip_while(|m| !m.topic.ends_with("/PrintCancelled"))
            .filter(|m| m.topic.ends_with("progress/printing"))
            .collect();
        assert!(
            after[0].payload.contains("\"path\": \"folder/benchy.gcode\", \"progress\": 0"),
            "{}",
            after[0].payload
        );
    }

    #[test]
    fn payloads_are_written_like_python_json_dumps() {
        let o = opts();
        let mut sim = PrinterSim::new(&o);
        let msgs = run_ticks(&mut sim, o.phases.off + 1);
        let t = msgs.iter().find(|m| m.topic == "octoPrint/temperature/bed").unwrap();
        assert!(t.payload.starts_with("{\"actual\": "), "{}", t.payload);
        assert!(t.payload.contains(", \"target\": 0.0, \"_timestamp\": 17"), "{}", t.payload);
        let c = msgs.iter().find(|m| m.topic == "octoPrint/event/Connected").unwrap();
        assert!(c.payload.starts_with(
            "{\"port\": \"/dev/ttyACM0\", \"baudrate\": 115200, \"_event\": \"Connected\", \"_timestamp\": 17"
        ));
    }

    #[test]
    fn retain_flags_and_qos_follow_the_plugin() {
        let o = opts();
        let mut sim = PrinterSim::new(&o);
        let msgs = run_ticks(&mut sim, o.phases.cycle());
        for m in &msgs {
            let want = m.topic.contains("/progress/")
                || m.topic.contains("/temperature/")
                || m.topic.ends_with("/ZChange")
                || m.topic.ends_with("/FirmwareData");
            assert_eq!(m.retain, want, "{}", m.topic);
            assert!(!m.qos1, "{} is QoS 0", m.topic);
        }
        let mut legacy = PrinterSim::new(&OctoprintSimOptions { legacy_retained_events: true, ..opts() });
        let msgs = run_ticks(&mut legacy, 5);
        assert!(msgs.iter().filter(|m| m.topic.contains("/event/")).all(|m| m.retain));
    }

    #[test]
    fn the_first_connect_publishes_resets_and_a_reconnect_flushes_queued_temperatures() {
        let o = opts();
        let mut sim = PrinterSim::new(&o);
        let first = sim.on_connect(T0);
        assert_eq!(
            first[0].payload,
            "{\"location\": \"\", \"path\": \"\", \"progress\": 0, \"_timestamp\": 1700000000}"
        );
        assert!(first[1].topic.ends_with("progress/slicing") && first[1].retain);
        // Into the print, so that the heaters move and temperatures are published.
        let mut i = 0;
        while sim.phase() != Phase::Heating {
            sim.step(T0 + i);
            i += 1;
        }
        sim.on_disconnect();
        let mut dropped = Vec::new();
        for i in i..i + 4 {
            dropped.extend(sim.step(T0 + i));
        }
        assert!(dropped.is_empty(), "nothing is published while the broker is away: {dropped:?}");
        let flushed = sim.on_connect(T0 + 9);
        assert!(!flushed.is_empty());
        assert!(flushed.iter().all(|m| m.topic.contains("/temperature/") && m.retain));
        assert!(flushed.iter().all(|m| m.payload.contains("\"_timestamp\": 170000000")), "original sample times kept");
    }

    #[test]
    fn an_idle_printer_at_a_steady_temperature_publishes_nothing() {
        let o = OctoprintSimOptions { phases: PhaseTicks { idle: 10_000, ..opts().phases }, ..opts() };
        let mut sim = PrinterSim::new(&o);
        let mut msgs = run_ticks(&mut sim, 50);
        assert_eq!(sim.phase(), Phase::Idle);
        let temps = msgs.iter().filter(|m| m.topic.contains("/temperature/")).count();
        assert_eq!(temps, 2, "one sample per heater when the printer connects, then silence: {msgs:?}");
        msgs.clear();
        for i in 0..1000 {
            msgs.extend(sim.step(T0 + 100 + i));
        }
        assert!(msgs.is_empty(), "{msgs:?}");
    }

    #[test]
    fn a_heating_printer_publishes_only_moves_of_at_least_the_threshold() {
        let o = opts();
        let mut sim = PrinterSim::new(&o);
        let msgs = run_ticks(&mut sim, o.phases.cycle());
        let tool0: Vec<f64> = msgs
            .iter()
            .filter(|m| m.topic == "octoPrint/temperature/tool0")
            .map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["actual"].as_f64().unwrap())
            .collect();
        assert!(tool0.len() > 3, "{tool0:?}");
        // Consecutive samples with the same target differ by the threshold (0.1 °C, to rounding).
        assert!(tool0.windows(2).all(|w| (w[1] - w[0]).abs() >= THRESHOLD - 1e-9), "{tool0:?}");
    }

    #[test]
    fn a_cancel_is_followed_by_progress_with_null_times() {
        let o = OctoprintSimOptions { printer_data: true, outcome: SimOutcome::Cancelled, ..opts() };
        let mut sim = PrinterSim::new(&o);
        let msgs = run_ticks(&mut sim, o.phases.cycle());
        let after = msgs
            .iter()
            .skip_while(|m| !m.topic.ends_with("/PrintCancelled"))
            .find(|m| m.topic.ends_with("progress/printing"))
            .expect("progress after the cancel");
        let v: serde_json::Value = serde_json::from_str(&after.payload).unwrap();
        let p = &v["printer_data"]["progress"];
        assert_eq!(v["progress"], 0);
        assert!(p["printTime"].is_null() && p["printTimeLeft"].is_null() && p["completion"].is_null(), "{p}");
    }

    #[test]
    fn shutdown_says_disconnected_then_shutdown_then_the_last_will() {
        let o = opts();
        let mut sim = PrinterSim::new(&o);
        run_ticks(&mut sim, 10);
        let out = sim.shutdown(T0 + 20);
        let seq: Vec<(&str, &str)> = out.iter().map(|m| (m.topic.as_str(), m.payload.as_str())).collect();
        assert_eq!(seq[0], ("octoPrint/mqtt", "disconnected"));
        assert_eq!(seq[1].0, "octoPrint/event/Shutdown");
        assert_eq!(seq[2], ("octoPrint/mqtt", "disconnected"));
        assert_eq!(seq.len(), 3);
        assert!(out[0].qos1 && out[0].retain && out[2].qos1 && out[2].retain && !out[1].retain);
        assert!(sim.shutdown(T0 + 21).is_empty(), "nothing more once disconnected");
    }

    #[test]
    fn octoprint_2_adds_the_connector_and_says_closed_when_off() {
        let o = OctoprintSimOptions { octoprint2: true, printer_data: true, ..opts() };
        let mut sim = PrinterSim::new(&o);
        let msgs = run_ticks(&mut sim, o.phases.cycle());
        let ids = state_ids(&msgs);
        assert!(!ids.iter().any(|i| i == "OPEN_SERIAL" || i == "OFFLINE"));
        assert_eq!(ids.last().map(String::as_str), Some("CLOSED"));
        let started = msgs.iter().find(|m| m.topic.ends_with("/PrintStarted")).unwrap();
        assert!(started.payload.contains("\"connector\": \"serial\""));
        let p =
            msgs.iter().find(|m| m.topic.ends_with("progress/printing") && m.payload.contains("printer_data")).unwrap();
        assert!(p.payload.contains("\"currentTool\": 0") && !p.payload.contains("resends"));
    }

    #[test]
    fn the_adapter_mapping_follows_a_simulated_cycle() {
        let o = OctoprintSimOptions { printer_data: true, ..opts() };
        let mut sim = PrinterSim::new(&o);
        let msgs = run_ticks(&mut sim, o.phases.cycle() * 2 + 4);
        let mut m = Mapper::default();
        let mut states = Vec::new();
        let mut names = Vec::new();
        for msg in &msgs {
            let topic = classify("octoPrint/", &msg.topic).expect("every simulated topic is the plugin's");
            assert!(!matches!(topic, Topic::Metadata(_)));
            let out = m.handle(topic, msg.payload.as_bytes(), false);
            assert!(out.problems.is_empty(), "{}: {:?}", msg.topic, out.problems);
            for (q, v) in &out.update.readings {
                if q.name() == "printer_state" {
                    let mut s = String::new();
                    v.write_plain(0, &mut s);
                    if states.last() != Some(&s) {
                        states.push(s);
                    }
                }
            }
            names.extend(out.update.events.iter().map(|e| e.name.to_string()));
        }
        let want = [
            "offline",
            "operational",
            "printing",
            "pausing",
            "paused",
            "printing",
            "finishing",
            "operational",
            "offline",
        ];
        assert!(states.windows(want.len()).any(|w| w == want), "{states:?}");
        assert!(states.contains(&"cancelling".to_owned()));
        for n in ["print_started", "print_paused", "print_resumed", "print_done", "print_cancelled", "print_failed"] {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
    }
}

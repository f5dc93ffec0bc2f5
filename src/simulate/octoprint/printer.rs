//! The simulated OctoPrint + plugin as a pure device: given the time, [`PrinterSim`] says what the
//! plugin would publish (the cycle's event plan, temperatures, the progress timer, the start-up
//! resets and the shutdown order), and applies the REST commands [`super::rest`] hands it. No IO.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{OctoprintSimOptions, PhaseTicks, SimOutcome};
use super::rest::RestAnswer;

/// Room temperature the heaters settle at.
const AMBIENT: f64 = 22.0;
/// Nozzle and bed set points of the simulated job (PLA).
const TOOL_TARGET: f64 = 215.0;
const BED_TARGET: f64 = 60.0;
/// The plugin's `temperatureThreshold`.
pub(super) const THRESHOLD: f64 = 0.1;
/// Thermistor noise on each reading (±). Below half the threshold, so a heater holding its
/// temperature publishes nothing, like a real idle printer (silent for minutes).
const READING_NOISE: f64 = 0.04;
/// The simulated job file.
const FILE_NAME: &str = "benchy.gcode";
const FILE_PATH: &str = "folder/benchy.gcode";
const FILE_SIZE: i64 = 1_234_567;
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
    pub(super) manual: bool,
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

    /// OctoPrint shuts down in one of the two orders a real OctoPrint 1.11.8 + plugin 0.8.16 shows:
    /// the plugin's own `disconnected`, then OctoPrint's live `Shutdown` event, then (the socket
    /// closes without a DISCONNECT) the broker's last will, `disconnected` again. OctoPrint fires
    /// `Shutdown` on its event thread while it calls the plugins' `on_shutdown` (the plugin's
    /// `disconnected`), so the event may also come first (the recorded real run,
    /// `adapters/octoprint/fixtures/real_octoprint_1.11.8_mqtt_0.8.16.tsv`); this order is the
    /// harder one for the bridge (live data after `disconnected`). [`run`](super::run) ends with a clean
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
    /// What its OctoPrint profile says: extruders, heated bed, heated chamber.
    pub(crate) fn heater_layout(&self) -> (usize, bool, bool) {
        let tools = self.heaters.iter().filter(|h| h.key.starts_with("tool")).count();
        let bed = self.heaters.iter().any(|h| h.key == "bed");
        (tools, bed, self.heaters.iter().any(|h| h.key == "chamber"))
    }

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
        // OctoPrint 1.11.8 fires PrintCancelling before the state changes to CANCELLING.
        let mut f = self.job_fields(true);
        self.connector(&mut f);
        self.event(out, now, "PrintCancelling", f);
        self.set_state(out, now, "CANCELLING", "Cancelling");
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

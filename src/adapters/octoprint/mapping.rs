//! Pure OctoPrint-MQTT mapping: one plugin message (sub-topic, payload, retained or live) → unified
//! quantities, events, identity and what it says about the printer's link. No IO; the MQTT
//! transport in the parent module and the golden replays feed it the same way.
//!
//! The vendor knowledge lives as data in `adapters/octoprint/` (events.tsv: event → snake_case
//! name, printer_state effect and data rules; states.tsv: state ids, state strings and flags →
//! printer_state), embedded at build time. Protocol facts: `shared/protocols/octoprint-mqtt.md`.
//!
//! Time: every JSON payload carries the plugin's `_timestamp` (integer seconds of the OctoPrint
//! host). It, not the arrival time, orders the data: temperatures queued during a broker outage
//! arrive late and must not overwrite newer values; retained events left by plugins ≤ 0.8.13 are
//! history, never new events.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value as Json};
use time::OffsetDateTime;

use crate::model::{Event, Identity, Quantity, Update, Value};

const EVENTS_TSV: &str = include_str!("../../../adapters/octoprint/events.tsv");
const STATES_TSV: &str = include_str!("../../../adapters/octoprint/states.tsv");

/// Most distinct temperature keys (and so quantities) one printer may create; bounds memory when a
/// plugin invents keys.
const MAX_SENSORS: usize = 64;
/// `PausedForUser` repeats at the firmware's keep-alive interval; one event per this many seconds.
const REPEAT_EVENT_SECS: i64 = 60;
/// Unix seconds beyond which a `_timestamp` is not believed (year 3000).
const MAX_UNIX: i64 = 32_503_680_000;
/// How far ahead of our clock an OctoPrint host's clock may be before its times are not used.
const MAX_AHEAD_SECS: i64 = 86_400;
/// After `disconnected`, how long (on the plugin's `_timestamp` clock) live plugin data must keep
/// coming before it proves a new connection whose `connected` was overtaken by the old session's
/// late last will. A shutdown publishes at most its `Shutdown` event (same second) after
/// `disconnected`, then the last will; it never spans this long.
const RECOVER_AFTER_SECS: i64 = 30;

/// What an event or state says about whether the printer is connected to OctoPrint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkEffect {
    /// Connected (temperatures flow).
    Up,
    /// Not connected: availability goes offline with a reason.
    Down,
    /// Says nothing.
    Keep,
}

/// What a live event does to `printer_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateEffect {
    /// Nothing.
    None,
    /// Sets this word (with its link effect).
    Set(&'static str, LinkEffect),
    /// The job ended: `operational`, but only while a job was running.
    End,
    /// `PrinterStateChanged`: the word comes from the payload's `state_id`.
    FromStateId,
}

/// The data rules of an event row (see the header of events.tsv).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DataRules {
    /// name/path/origin payload: `file`, normalised origin.
    pub job: bool,
    /// `time` → `duration`.
    pub duration: bool,
    /// PrintFailed: progress fraction → percent when reason is `error`.
    pub failure: bool,
    /// The file becomes `print_file`.
    pub selects: bool,
    /// A new job: `print_progress` 0.
    pub starts: bool,
    /// A finished job: progress 100, time left 0, elapsed = duration.
    pub done: bool,
    /// M115 data → identity.
    pub firmware: bool,
    /// Retained by the plugin by design.
    pub retained: bool,
    /// Repeated by the firmware; rate-limited.
    pub repeats: bool,
}

/// One row of events.tsv.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRow {
    /// The unified name, or `None` to derive it with [`snake_case`].
    pub name: Option<&'static str>,
    /// The printer_state effect.
    pub state: StateEffect,
    /// The data rules.
    pub data: DataRules,
}

/// The parsed data tables.
pub(crate) struct Tables {
    events: HashMap<&'static str, EventRow>,
    /// `(prefix, suffix, row)` for wildcard rows such as `GcodeScript*Running`.
    patterns: Vec<(&'static str, &'static str, EventRow)>,
    state_ids: HashMap<&'static str, (&'static str, LinkEffect)>,
    prefixes: Vec<(&'static str, &'static str, LinkEffect)>,
    flags: Vec<(&'static str, &'static str, LinkEffect)>,
}

fn data_lines(s: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    s.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(|l| l.split('\t').map(str::trim).collect())
}

fn word(w: &'static str, table: &str) -> &'static str {
    assert!(crate::model::PRINTER_STATES.contains(&w), "{table}: `{w}` is not a printer_state word of the contract");
    w
}

fn link_effect(s: &str) -> LinkEffect {
    match s {
        "up" => LinkEffect::Up,
        "down" => LinkEffect::Down,
        "-" => LinkEffect::Keep,
        other => panic!("states.tsv: unknown link effect `{other}`"),
    }
}

/// The tables, parsed once. A malformed table is a build defect caught by the unit tests.
pub(crate) fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut events = HashMap::new();
        let mut patterns = Vec::new();
        for cols in data_lines(EVENTS_TSV) {
            let [event, name, state, data] = cols[..] else { panic!("events.tsv: bad row {cols:?}") };
            let state = match state {
                "-" => StateEffect::None,
                "end" => StateEffect::End,
                "state_id" => StateEffect::FromStateId,
                "offline" => StateEffect::Set(word(state, "events.tsv"), LinkEffect::Down),
                w => StateEffect::Set(word(w, "events.tsv"), LinkEffect::Up),
            };
            let mut rules = DataRules::default();
            for flag in data.split(',').map(str::trim).filter(|f| *f != "-") {
                let slot = match flag {
                    "job" => &mut rules.job,
                    "duration" => &mut rules.duration,
                    "failure" => &mut rules.failure,
                    "selects" => &mut rules.selects,
                    "starts" => &mut rules.starts,
                    "done" => &mut rules.done,
                    "firmware" => &mut rules.firmware,
                    "retained" => &mut rules.retained,
                    "repeats" => &mut rules.repeats,
                    other => panic!("events.tsv: unknown data rule `{other}`"),
                };
                *slot = true;
            }
            let row = EventRow { name: (name != "*").then_some(name), state, data: rules };
            match event.split_once('*') {
                Some((prefix, suffix)) => patterns.push((prefix, suffix, row)),
                None => {
                    events.insert(event, row);
                }
            }
        }
        let mut state_ids = HashMap::new();
        let mut prefixes = Vec::new();
        let mut flags = Vec::new();
        for cols in data_lines(STATES_TSV) {
            let [kind, key, w, link] = cols[..] else { panic!("states.tsv: bad row {cols:?}") };
            let entry = (word(w, "states.tsv"), link_effect(link));
            match kind {
                "id" => {
                    state_ids.insert(key, entry);
                }
                "prefix" => prefixes.push((key, entry.0, entry.1)),
                "flag" => flags.push((key, entry.0, entry.1)),
                other => panic!("states.tsv: unknown kind `{other}`"),
            }
        }
        Tables { events, patterns, state_ids, prefixes, flags }
    })
}

impl Tables {
    /// The row of event `name` (exact, then wildcard rows), or `None` for an undocumented event.
    pub(crate) fn event(&self, name: &str) -> Option<&EventRow> {
        self.events.get(name).or_else(|| {
            self.patterns
                .iter()
                .find(|(p, s, _)| name.len() > p.len() + s.len() && name.starts_with(p) && name.ends_with(s))
                .map(|(_, _, row)| row)
        })
    }

    /// `state_id` (and `state_string` for ids not listed) → printer_state word and link effect.
    pub(crate) fn state(&self, state_id: Option<&str>, state_string: Option<&str>) -> (&'static str, LinkEffect) {
        if let Some(found) = state_id.and_then(|id| self.state_ids.get(id)) {
            return *found;
        }
        self.state_from_text(state_string)
    }

    /// Prefix match on a human state text (`Offline after error`, `Printing from SD`).
    pub(crate) fn state_from_text(&self, text: Option<&str>) -> (&'static str, LinkEffect) {
        let Some(text) = text else { return ("unknown", LinkEffect::Keep) };
        self.prefixes
            .iter()
            .find(|(p, _, _)| text.starts_with(p))
            .map(|(_, w, l)| (*w, *l))
            .unwrap_or(("unknown", LinkEffect::Keep))
    }

    /// `printer_data.state` (`{text, flags{…}}`) → word and link effect.
    pub(crate) fn state_from_printer_data(&self, state: &Map<String, Json>) -> (&'static str, LinkEffect) {
        if let Some(flags) = state.get("flags").and_then(Json::as_object) {
            for (flag, w, l) in &self.flags {
                if flags.get(*flag).and_then(Json::as_bool) == Some(true) {
                    return (w, *l);
                }
            }
        }
        self.state_from_text(state.get("text").and_then(Json::as_str))
    }
}

/// The printer quantities, resolved once (the hot path does not go through the intern table).
struct Qs {
    printer_state: Quantity,
    print_file: Quantity,
    print_progress: Quantity,
    print_time_elapsed: Quantity,
    print_time_left: Quantity,
    slicing_progress: Quantity,
}

fn qs() -> &'static Qs {
    static Q: OnceLock<Qs> = OnceLock::new();
    Q.get_or_init(|| Qs {
        printer_state: Quantity::known("printer_state"),
        print_file: Quantity::known("print_file"),
        print_progress: Quantity::known("print_progress"),
        print_time_elapsed: Quantity::known("print_time_elapsed"),
        print_time_left: Quantity::known("print_time_left"),
        slicing_progress: Quantity::known("slicing_progress"),
    })
}

/// OctoPrint's CamelCase names (events, payload keys) in snake_case: `PrintStarted` →
/// `print_started`, `EStop` → `e_stop`, `remoteAddress` → `remote_address`. Anything outside
/// `[a-z0-9_]` becomes `_`; the result is at most 64 characters.
pub(crate) fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let bytes = name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| bytes[j]);
            let next = bytes.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.push(b.to_ascii_lowercase() as char);
        } else if b.is_ascii_lowercase() || b.is_ascii_digit() {
            out.push(b as char);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
        if out.len() >= 64 {
            break;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("unnamed");
    }
    out
}

/// A plugin topic below the configured base topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic<'a> {
    /// `event/<Event>`.
    Event(&'a str),
    /// `progress/<kind>` (`printing`, `slicing`).
    Progress(&'a str),
    /// `temperature/<key>`.
    Temperature(&'a str),
    /// `mqtt`: the plugin's `connected` / `disconnected` (its last will).
    Lwt,
    /// `metadata/<key>` (plugin ≥ 0.8.16).
    Metadata(&'a str),
}

/// Splits `topic` below `base` (glued without a slash, like the plugin does); `None` for topics
/// that are not the plugin's.
pub(crate) fn classify<'a>(base: &str, topic: &'a str) -> Option<Topic<'a>> {
    let rest = topic.strip_prefix(base)?;
    if rest == "mqtt" {
        return Some(Topic::Lwt);
    }
    let (kind, name) = rest.split_once('/')?;
    if name.is_empty() {
        return None;
    }
    let single = !name.contains('/');
    match kind {
        "event" if single => Some(Topic::Event(name)),
        "progress" if single => Some(Topic::Progress(name)),
        "temperature" if single => Some(Topic::Temperature(name)),
        "metadata" => Some(Topic::Metadata(name)),
        _ => None,
    }
}

/// How a problem is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// `hlbridge_parse_errors_total{reason}`.
    ParseError(&'static str),
    /// `hlbridge_readings_rejected_total{reason}`: understood, but deliberately not used.
    Rejected(&'static str),
    /// `hlbridge_unknown_keys_total`: a name no table knows (a newer OctoPrint or a plugin).
    Unknown,
}

/// Something about a message worth counting and logging once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// How it is counted.
    pub counted: Counted,
    /// What it was about (sub-topic or key), for the one log line.
    pub what: String,
}

/// Everything one message produced.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// What goes to the router.
    pub update: Update,
    /// Problems to count and log (empty on the happy path, so no allocation).
    pub problems: Vec<Problem>,
}

impl Outcome {
    fn problem(&mut self, counted: Counted, what: &str) {
        self.problems.push(Problem { counted, what: what.to_owned() });
    }
}

/// What the adapter should report as the device's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkWish {
    /// The plugin is publishing and the printer is (as far as known) connected.
    Up,
    /// The plugin said `disconnected` (or the broker did, as its last will).
    HostDown,
    /// OctoPrint runs but the printer is not connected to it.
    PrinterDown,
}

impl LinkWish {
    /// The reason shown in `/readyz` for the down cases.
    pub(crate) fn reason(self) -> Option<&'static str> {
        match self {
            LinkWish::Up => None,
            LinkWish::HostDown => {
                Some("OctoPrint-MQTT reports `disconnected` (OctoPrint stopped or lost the broker: its last will)")
            }
            LinkWish::PrinterDown => Some("the printer is not connected to OctoPrint (printer_state offline)"),
        }
    }
}

/// Where a printer_state candidate comes from; decides who wins within one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An event: authoritative, wins ties.
    Event,
    /// `printer_data.state` on `progress/printing`: read a moment before it is published, so it
    /// only beats an event from a later second.
    PrinterData,
    /// Inferred from live progress while the state is unknown.
    Weak,
    /// The plugin's own availability (`mqtt`).
    Lwt,
}

fn number(v: Option<&Json>) -> Option<f64> {
    v.and_then(Json::as_f64).filter(|f| f.is_finite())
}

fn job_running(state: Option<&str>) -> bool {
    matches!(state, Some("printing" | "pausing" | "paused" | "cancelling" | "finishing"))
}

/// The router's "absent" value: the quantity's retained topic is deleted and it leaves the state
/// JSON and `/metrics` (an empty text, whatever the quantity's type).
fn absent() -> Value {
    Value::Text(Cow::Borrowed(""))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Per-printer mapping state: the last `_timestamp` per retained sub-topic, the printer state and
/// where it came from, and the link facts.
#[derive(Debug)]
pub(crate) struct Mapper {
    /// The plugin's `timestamp_fieldname` (default `_timestamp`).
    ts_field: String,
    /// Current printer_state word (`None` before the first message).
    state: Option<&'static str>,
    /// `_timestamp` of the message that set it.
    state_ts: Option<i64>,
    /// Whether an event set it (events beat printer_data within the same second).
    state_from_event: bool,
    /// The plugin said `disconnected`.
    host_down: bool,
    /// While `host_down`: the `_timestamp` of the first live plugin message since, from which
    /// [`RECOVER_AFTER_SECS`] of further live data count as a new connection.
    live_since_down: Option<i64>,
    /// The printer is not connected to OctoPrint.
    printer_down: bool,
    /// A live (non-retained) message arrived since start-up or since `disconnected`.
    live_seen: bool,
    /// Last accepted `_timestamp` per temperature key.
    temp_ts: HashMap<String, i64>,
    /// Resolved `(actual, target)` quantities per temperature key.
    temp_q: HashMap<String, (Quantity, Quantity)>,
    /// Last accepted `_timestamp` of `progress/printing` and `progress/slicing`.
    progress_ts: Option<i64>,
    slicing_ts: Option<i64>,
    /// Whether printer_data ever gave times (only then do end events set them).
    have_elapsed: bool,
    have_time_left: bool,
    /// When a repeating event was last published, per event name.
    repeated: HashMap<String, i64>,
}

impl Default for Mapper {
    fn default() -> Self {
        Mapper::new("_timestamp")
    }
}

impl Mapper {
    /// A fresh mapper; `ts_field` is the plugin's timestamp field name.
    pub(crate) fn new(ts_field: &str) -> Mapper {
        Mapper {
            ts_field: ts_field.to_owned(),
            state: None,
            state_ts: None,
            state_from_event: false,
            host_down: false,
            live_since_down: None,
            printer_down: false,
            live_seen: false,
            temp_ts: HashMap::new(),
            temp_q: HashMap::new(),
            progress_ts: None,
            slicing_ts: None,
            have_elapsed: false,
            have_time_left: false,
            repeated: HashMap::new(),
        }
    }

    /// The current printer_state word, if any message set one.
    #[cfg(test)]
    pub(crate) fn state(&self) -> Option<&'static str> {
        self.state
    }

    /// The link the device should report, or `None` while nothing live was seen.
    pub(crate) fn link(&self) -> Option<LinkWish> {
        if self.host_down {
            Some(LinkWish::HostDown)
        } else if self.printer_down {
            Some(LinkWish::PrinterDown)
        } else if self.live_seen {
            Some(LinkWish::Up)
        } else {
            None
        }
    }

    /// Maps one message. `retained` is the broker's retain flag on delivery: a replay from its
    /// store, not something that just happened.
    pub(crate) fn handle(&mut self, topic: Topic<'_>, payload: &[u8], retained: bool) -> Outcome {
        let mut out = Outcome { update: Update { fresh: !retained, ..Default::default() }, problems: Vec::new() };
        let live = !retained;
        match topic {
            Topic::Lwt => self.lwt(payload, live, &mut out),
            Topic::Metadata(key) => self.metadata(key, payload, live, &mut out),
            Topic::Event(name) => {
                if let Some(obj) = self.json_object(payload, name, &mut out) {
                    self.event(name, &obj, live, &mut out);
                }
            }
            Topic::Progress(kind) => {
                if let Some(obj) = self.json_object(payload, kind, &mut out) {
                    match kind {
                        "printing" => self.progress_printing(&obj, live, &mut out),
                        "slicing" => self.progress_slicing(&obj, &mut out),
                        other => out.problem(Counted::Unknown, &format!("progress/{other}")),
                    }
                }
            }
            Topic::Temperature(key) => {
                if let Some(obj) = self.json_object(payload, key, &mut out) {
                    self.temperature(key, &obj, live, &mut out);
                }
            }
        }
        if live && topic != Topic::Lwt && self.host_down {
            self.recover_host(out.update.ts.map(OffsetDateTime::unix_timestamp));
        }
        if live {
            self.live_seen = true;
        }
        if self.state.is_none() {
            // Nothing said what the printer does: say so rather than guess (brief §3).
            self.state = Some("unknown");
            out.update.push(qs().printer_state, Value::Text(Cow::Borrowed("unknown")));
        }
        out
    }

    /// Live plugin data while the plugin is known to be disconnected. It does not prove a new
    /// connection by itself: at shutdown the plugin says `disconnected`, then OctoPrint's live
    /// `Shutdown` event still goes out, then the broker sends the last will (a real OctoPrint
    /// 1.11.8 + plugin 0.8.16 run). Only the plugin's `connected` does, with one exception: when
    /// a restarted OctoPrint (a new random client id) said `connected` before the broker gave up on
    /// the old session, the old session's last will arrives late and no `connected` follows. Live
    /// data spanning [`RECOVER_AFTER_SECS`] of the plugin's clock is then the proof.
    fn recover_host(&mut self, ts: Option<i64>) {
        let Some(t) = ts else { return };
        match self.live_since_down {
            None => self.live_since_down = Some(t),
            Some(first) if t - first >= RECOVER_AFTER_SECS => {
                self.host_down = false;
                self.live_since_down = None;
            }
            Some(_) => {}
        }
    }

    /// Parses a JSON object payload; an empty payload (a cleared retained topic) yields `None`
    /// silently, anything else that is not an object is counted.
    fn json_object(&self, payload: &[u8], what: &str, out: &mut Outcome) -> Option<Map<String, Json>> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        match serde_json::from_slice::<Json>(payload) {
            Ok(Json::Object(m)) => Some(m),
            Ok(_) => {
                out.problem(Counted::ParseError("bad_type"), what);
                None
            }
            Err(_) => {
                out.problem(Counted::ParseError("invalid_json"), what);
                None
            }
        }
    }

    /// The plugin's timestamp of a payload; payloads before plugin 0.6 have none.
    fn ts(&self, obj: &Map<String, Json>, out: &mut Outcome) -> Option<i64> {
        let v = obj.get(self.ts_field.as_str())?;
        let t = v.as_i64().or_else(|| number(Some(v)).map(|f| f.floor() as i64));
        match t {
            // A host clock far ahead would otherwise block every later sample as "older".
            Some(t) if t > OffsetDateTime::now_utc().unix_timestamp() + MAX_AHEAD_SECS => {
                out.problem(Counted::ParseError("future_timestamp"), &self.ts_field);
                None
            }
            Some(t) if t > 0 && t < MAX_UNIX => Some(t),
            _ => {
                out.problem(Counted::ParseError("bad_timestamp"), &self.ts_field);
                None
            }
        }
    }

    fn set_ts(out: &mut Outcome, ts: Option<i64>) {
        if let Some(t) = ts {
            out.update.ts = OffsetDateTime::from_unix_timestamp(t).ok();
        }
    }

    /// Applies a printer_state candidate unless something newer already decided the state.
    fn set_state(
        &mut self,
        word: &'static str,
        link: LinkEffect,
        ts: Option<i64>,
        src: Source,
        live: bool,
        out: &mut Outcome,
    ) {
        // While OctoPrint is known to be gone, a replayed state from its retained topics is old news.
        if self.host_down && !live && src != Source::Lwt {
            return;
        }
        if src == Source::Weak && self.state.is_some_and(|s| s != "unknown") {
            return;
        }
        if let (Some(t), Some(prev)) = (ts, self.state_ts) {
            let older = match src {
                Source::PrinterData if self.state_from_event => t <= prev,
                _ => t < prev,
            };
            if older {
                return;
            }
        }
        self.state = Some(word);
        if ts.is_some() {
            self.state_ts = ts;
        }
        self.state_from_event = src == Source::Event;
        match link {
            LinkEffect::Up => self.printer_down = false,
            LinkEffect::Down => self.printer_down = true,
            LinkEffect::Keep => {}
        }
        out.update.push(qs().printer_state, Value::Text(Cow::Borrowed(word)));
    }

    fn lwt(&mut self, payload: &[u8], live: bool, out: &mut Outcome) {
        // The LWT is status, not a reading: it never makes the device fresh on its own.
        out.update.fresh = false;
        match std::str::from_utf8(payload).map(str::trim) {
            Ok("connected") => {
                if self.host_down {
                    self.host_down = false;
                    self.live_since_down = None;
                    if live {
                        // Events are dropped while the plugin is offline: what the printer did
                        // meanwhile is not known.
                        self.printer_down = false;
                        self.set_state("unknown", LinkEffect::Keep, None, Source::Lwt, live, out);
                    }
                }
                if live {
                    self.live_seen = true;
                }
            }
            Ok("disconnected") => {
                self.host_down = true;
                self.live_since_down = None;
                self.live_seen = false;
                self.set_state("unknown", LinkEffect::Keep, None, Source::Lwt, live, out);
            }
            Ok("") => {} // the retained status was cleared
            _ => out.problem(Counted::ParseError("bad_status"), "mqtt"),
        }
    }

    fn metadata(&mut self, key: &str, payload: &[u8], live: bool, out: &mut Outcome) {
        // Retained metadata belongs to a print that started before we did; an empty payload is
        // the plugin clearing it at the end of a print.
        if !live || payload.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(payload);
        let value = serde_json::from_str::<Json>(&text).unwrap_or_else(|_| Json::String(text.into_owned()));
        out.update.events.push(Event::new("print_metadata").with("key", key).with("value", value));
    }

    fn temperature(&mut self, key: &str, obj: &Map<String, Json>, live: bool, out: &mut Outcome) {
        // Before plugin 0.6 the sample time was `time`; since then it is `_timestamp`.
        let ts = self.ts(obj, out).or_else(|| number(obj.get("time")).map(|t| t as i64).filter(|t| *t > 0));
        if let Some(t) = ts {
            let room = self.temp_ts.len() < MAX_SENSORS;
            match self.temp_ts.get_mut(key) {
                Some(prev) if t < *prev => {
                    out.problem(Counted::Rejected("out_of_order"), &format!("temperature/{key}"));
                    return;
                }
                Some(prev) => *prev = t,
                None if room => {
                    self.temp_ts.insert(key.to_owned(), t);
                }
                None => {}
            }
        }
        let Some((qa, qt)) = self.temp_quantities(key, out) else { return };
        // `actual`/`target` (plugin), `temperature` (OctoPrint-HomeAssistant's `soc`).
        let actual = obj.get("actual").or_else(|| obj.get("temperature"));
        let target = obj.get("target");
        for (q, v) in [(qa, actual), (qt, target)] {
            match v {
                None | Some(Json::Null) => {}
                Some(v) => match number(Some(v)) {
                    Some(n) => out.update.push(q, Value::Number(n)),
                    None => out.problem(Counted::ParseError("bad_type"), &format!("temperature/{key}")),
                },
            }
        }
        Self::set_ts(out, ts);
        // Temperatures flow only while the printer is connected: a live one newer than the
        // offline state means the printer came back (its Connected event may have been dropped
        // during a broker outage).
        if live && self.printer_down && !out.update.readings.is_empty() {
            let newer = match (ts, self.state_ts) {
                (Some(t), Some(s)) => t > s,
                _ => true,
            };
            if newer {
                self.printer_down = false;
                if self.state == Some("offline") {
                    // Connected, but in which state is not known until the next event.
                    self.state = Some("unknown");
                    self.state_from_event = false;
                    if ts.is_some() {
                        self.state_ts = ts;
                    }
                    out.update.push(qs().printer_state, Value::Text(Cow::Borrowed("unknown")));
                }
            }
        }
    }

    fn temp_quantities(&mut self, key: &str, out: &mut Outcome) -> Option<(Quantity, Quantity)> {
        if let Some(q) = self.temp_q.get(key) {
            return Some(*q);
        }
        if self.temp_q.len() >= MAX_SENSORS {
            out.problem(Counted::Rejected("too_many_sensors"), key);
            return None;
        }
        let mut name: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(32)
            .collect();
        if name.is_empty() {
            name.push('_');
        }
        let actual = Quantity::named(&format!("temperature_{name}"));
        let target = Quantity::named(&format!("temperature_{name}_target"));
        match (actual, target) {
            (Some(a), Some(t)) => {
                self.temp_q.insert(key.to_owned(), (a, t));
                Some((a, t))
            }
            _ => {
                out.problem(Counted::ParseError("bad_sensor_name"), key);
                None
            }
        }
    }

    fn progress_printing(&mut self, obj: &Map<String, Json>, live: bool, out: &mut Outcome) {
        let ts = self.ts(obj, out);
        if let (Some(t), Some(prev)) = (ts, self.progress_ts)
            && t < prev
        {
            out.problem(Counted::Rejected("out_of_order"), "progress/printing");
            return;
        }
        if ts.is_some() {
            self.progress_ts = ts;
        }
        Self::set_ts(out, ts);
        let path = obj.get("path").and_then(Json::as_str);
        if let Some(p) = path {
            out.update.push(qs().print_file, Value::Text(Cow::Owned(p.to_owned())));
        }
        let data = obj.get("printer_data").and_then(Json::as_object);
        let pd_progress = data.and_then(|d| d.get("progress")).and_then(Json::as_object);
        // With Print Time Genius the plugin computes `progress` from times; `completion` is the
        // file position then and disagrees (plugin PR #134).
        let genius = pd_progress.and_then(|p| p.get("printTimeLeftOrigin")).and_then(Json::as_str) == Some("genius");
        let completion = if genius { None } else { number(pd_progress.and_then(|p| p.get("completion"))) };
        let progress = completion.or_else(|| number(obj.get("progress")));
        match progress {
            Some(p) => out.update.push(qs().print_progress, Value::Number(p.clamp(0.0, 100.0))),
            None if obj.contains_key("progress") && !obj["progress"].is_null() => {
                out.problem(Counted::ParseError("bad_type"), "progress/printing")
            }
            None => {}
        }
        if let Some(p) = pd_progress {
            // A null time is OctoPrint saying "no job" (after a cancel: completion, printTime and
            // printTimeLeft all null): the value is absent, not frozen at its last reading.
            for (key, q, seen) in [
                ("printTime", qs().print_time_elapsed, &mut self.have_elapsed),
                ("printTimeLeft", qs().print_time_left, &mut self.have_time_left),
            ] {
                match p.get(key) {
                    Some(Json::Null) => out.update.push(q, absent()),
                    v => {
                        if let Some(t) = number(v).filter(|t| *t >= 0.0) {
                            *seen = true;
                            out.update.push(q, Value::Number(t));
                        }
                    }
                }
            }
        }
        if let Some(state) = data.and_then(|d| d.get("state")).and_then(Json::as_object) {
            let (w, l) = tables().state_from_printer_data(state);
            if w != "unknown" {
                self.set_state(w, l, ts, Source::PrinterData, live, out);
            }
        } else if live && path.is_some_and(|p| !p.is_empty()) && progress.is_some_and(|p| p > 0.0 && p < 100.0) {
            // The plugin's timer publishes only when the integer progress moves, which only happens
            // while a job runs.
            self.set_state("printing", LinkEffect::Up, ts, Source::Weak, live, out);
        }
    }

    fn progress_slicing(&mut self, obj: &Map<String, Json>, out: &mut Outcome) {
        let ts = self.ts(obj, out);
        // The plugin publishes an all-empty reset at its first connect (issue #128): not a slice.
        let slicer = obj.get("slicer").and_then(Json::as_str).unwrap_or_default();
        let source = obj.get("source_path").and_then(Json::as_str).unwrap_or_default();
        if slicer.is_empty() && source.is_empty() {
            return;
        }
        if let (Some(t), Some(prev)) = (ts, self.slicing_ts)
            && t < prev
        {
            out.problem(Counted::Rejected("out_of_order"), "progress/slicing");
            return;
        }
        if ts.is_some() {
            self.slicing_ts = ts;
        }
        Self::set_ts(out, ts);
        match number(obj.get("progress")) {
            Some(p) => out.update.push(qs().slicing_progress, Value::Number(p.clamp(0.0, 100.0))),
            None => out.problem(Counted::ParseError("bad_type"), "progress/slicing"),
        }
    }

    fn event(&mut self, name: &str, obj: &Map<String, Json>, live: bool, out: &mut Outcome) {
        let t = tables();
        let row = t.event(name).copied();
        let ts = self.ts(obj, out);
        Self::set_ts(out, ts);
        let rules = row.map(|r| r.data).unwrap_or_default();
        if rules.firmware {
            // A fact about the printer, retained by design: good at start-up too.
            out.update.identity = firmware_identity(obj);
        }
        if !live {
            // A replay from the broker's store: plugins ≤ 0.8.13 retained every event, so this may
            // be months old. History, never a new event or a state change.
            if !rules.retained {
                out.problem(Counted::Rejected("retained_event"), name);
            }
            return;
        }
        let unified: Cow<'static, str> = match row.and_then(|r| r.name) {
            Some(n) => Cow::Borrowed(n),
            None => {
                if row.is_none() {
                    out.problem(Counted::Unknown, &format!("event/{name}"));
                }
                Cow::Owned(snake_case(name))
            }
        };
        if rules.repeats {
            let now = ts.unwrap_or_else(|| OffsetDateTime::now_utc().unix_timestamp());
            match self.repeated.get_mut(name) {
                Some(last) if now - *last < REPEAT_EVENT_SECS && now >= *last => return,
                Some(last) => *last = now,
                None => {
                    self.repeated.insert(name.to_owned(), now);
                }
            }
        }
        let mut data = normalise_data(obj, &self.ts_field, rules);
        match row.map(|r| r.state).unwrap_or(StateEffect::None) {
            StateEffect::None => {}
            StateEffect::Set(w, l) => self.set_state(w, l, ts, Source::Event, live, out),
            StateEffect::End => {
                if job_running(self.state) {
                    self.set_state("operational", LinkEffect::Up, ts, Source::Event, live, out);
                }
            }
            StateEffect::FromStateId => {
                let id = obj.get("state_id").and_then(Json::as_str);
                let text = obj.get("state_string").and_then(Json::as_str);
                let (w, l) = t.state(id, text);
                data.insert("state".into(), w.into());
                if id.is_some() || text.is_some() {
                    if w == "unknown" && id != Some("UNKNOWN") {
                        out.problem(Counted::Unknown, &format!("state_id {}", id.unwrap_or("-")));
                    }
                    self.set_state(w, l, ts, Source::Event, live, out);
                }
            }
        }
        let file = data.get("file").and_then(Json::as_str);
        if rules.selects
            && let Some(f) = file
        {
            out.update.push(qs().print_file, Value::Text(Cow::Owned(f.to_owned())));
        }
        if rules.starts {
            out.update.push(qs().print_progress, Value::Number(0.0));
            if self.have_elapsed {
                out.update.push(qs().print_time_elapsed, Value::Number(0.0));
            }
        }
        if rules.done {
            out.update.push(qs().print_progress, Value::Number(100.0));
            if self.have_time_left {
                out.update.push(qs().print_time_left, Value::Number(0.0));
            }
            if self.have_elapsed
                && let Some(d) = number(data.get("duration"))
            {
                out.update.push(qs().print_time_elapsed, Value::Number(d));
            }
        }
        out.update.events.push(Event { name: unified, data });
    }
}

/// `FirmwareData` `{name, data{FIRMWARE_NAME, MACHINE_TYPE, …}}` → identity.
fn firmware_identity(obj: &Map<String, Json>) -> Option<Identity> {
    let data = obj.get("data").and_then(Json::as_object);
    let text = |v: Option<&Json>| v.and_then(Json::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let firmware = text(data.and_then(|d| d.get("FIRMWARE_NAME"))).or_else(|| text(obj.get("name")));
    let model = text(data.and_then(|d| d.get("MACHINE_TYPE")));
    (firmware.is_some() || model.is_some()).then(|| Identity { firmware, model, ..Default::default() })
}

/// `sdcard` (1.x) and `printer` (2.0) name the same storage; the bridge says `printer`.
fn normalise_origin(v: Json) -> Json {
    match v.as_str() {
        Some("sdcard") => Json::String("printer".into()),
        _ => v,
    }
}

/// The event payload without the envelope, keys in snake_case, with the rules of its row applied.
pub(crate) fn normalise_data(obj: &Map<String, Json>, ts_field: &str, rules: DataRules) -> Map<String, Json> {
    let mut m = Map::new();
    for (k, v) in obj {
        if k == "_event" || k == ts_field {
            continue;
        }
        m.insert(snake_case(k), v.clone());
    }
    for key in ["origin", "storage", "target"] {
        if let Some(v) = m.remove(key) {
            m.insert(key.into(), normalise_origin(v));
        }
    }
    if rules.job {
        // 1.4+ `path` is relative to the storage; pre-1.4 `file` was an absolute host path and
        // `filename` the base name, which is what the progress topic calls the path.
        let path = m.remove("path").filter(Json::is_string);
        let filename = m.remove("filename").filter(Json::is_string);
        let legacy = m.remove("file");
        if let Some(f) = path.or(filename).or(legacy) {
            m.insert("file".into(), f);
        }
    }
    if rules.duration
        && let Some(t) = number(m.get("time"))
    {
        m.remove("time");
        m.insert("duration".into(), Json::from(round2(t)));
    }
    if rules.failure
        && m.get("reason").and_then(Json::as_str) == Some("error")
        && let Some(p) = number(m.get("progress")).filter(|p| *p <= 1.0)
    {
        m.insert("progress".into(), Json::from(round2(p * 100.0)));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Quantity {
        Quantity::known(name)
    }

    fn value(out: &Outcome, name: &str) -> Option<Value> {
        out.update.readings.iter().rev().find(|(k, _)| *k == q(name)).map(|(_, v)| v.clone())
    }

    fn text(out: &Outcome, name: &str) -> Option<String> {
        match value(out, name) {
            Some(Value::Text(t)) => Some(t.into_owned()),
            _ => None,
        }
    }

    fn num(out: &Outcome, name: &str) -> Option<f64> {
        value(out, name).and_then(|v| v.as_f64())
    }

    fn live(m: &mut Mapper, topic: Topic<'_>, payload: &str) -> Outcome {
        m.handle(topic, payload.as_bytes(), false)
    }

    fn retained(m: &mut Mapper, topic: Topic<'_>, payload: &str) -> Outcome {
        m.handle(topic, payload.as_bytes(), true)
    }

    #[test]
    fn the_tables_parse_and_every_word_is_a_contract_printer_state() {
        let t = tables();
        assert!(t.events.len() > 75);
        assert_eq!(t.state(Some("PRINTING"), None), ("printing", LinkEffect::Up));
    }

    #[test]
    fn every_event_of_the_protocol_table_has_a_row() {
        let shared = include_str!("../../../adapters/octoprint/fixtures/events.tsv");
        let t = tables();
        for line in shared.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let event = line.split('\t').next().unwrap();
            let probe = event.replace("${ScriptName}", "BeforePrintStarted").replace("<identifier>_<name>", "psu_on");
            assert!(t.event(&probe).is_some(), "{event} has no row in adapters/octoprint/events.tsv");
        }
    }

    #[test]
    fn table_names_are_the_snake_case_of_the_event() {
        for (event, row) in &tables().events {
            if let Some(n) = row.name {
                assert_eq!(n, snake_case(event), "events.tsv row {event}");
            }
        }
    }

    #[test]
    fn snake_case_splits_words_and_acronyms() {
        assert_eq!(snake_case("PrintStarted"), "print_started");
        assert_eq!(snake_case("EStop"), "e_stop");
        assert_eq!(snake_case("ZChange"), "z_change");
        assert_eq!(snake_case("remoteAddress"), "remote_address");
        assert_eq!(snake_case("state_id"), "state_id");
        assert_eq!(snake_case("plugin_psucontrol_psu_state_changed"), "plugin_psucontrol_psu_state_changed");
        assert_eq!(snake_case("GcodeScriptAfterPrintDoneRunning"), "gcode_script_after_print_done_running");
        assert_eq!(snake_case("Weird Name!"), "weird_name");
        assert_eq!(snake_case("💥"), "unnamed");
        assert!(snake_case(&"A".repeat(500)).len() <= 64);
    }

    #[test]
    fn topics_are_split_below_a_base_glued_without_a_slash() {
        assert_eq!(classify("octoPrint/", "octoPrint/event/PrintDone"), Some(Topic::Event("PrintDone")));
        assert_eq!(classify("octoPrint/", "octoPrint/mqtt"), Some(Topic::Lwt));
        assert_eq!(classify("octoPrint/", "octoPrint/temperature/tool0"), Some(Topic::Temperature("tool0")));
        assert_eq!(classify("octoPrint/", "octoPrint/metadata/a.b"), Some(Topic::Metadata("a.b")));
        assert_eq!(classify("octoPrint/", "octoprint/event/PrintDone"), None, "base topics are case-sensitive");
        assert_eq!(classify("octoPrint/", "octoPrint/hassControl/cancel"), None);
        assert_eq!(classify("octoPrint/", "octoPrint/event/"), None);
        assert_eq!(classify("op", "opevent/X"), Some(Topic::Event("X")));
    }

    #[test]
    fn state_ids_of_octoprint_1_and_2_map_to_contract_words() {
        let t = tables();
        assert_eq!(t.state(Some("OFFLINE"), Some("Offline")), ("offline", LinkEffect::Down));
        assert_eq!(t.state(Some("CLOSED"), Some("Offline")), ("offline", LinkEffect::Down));
        assert_eq!(t.state(Some("OPERATIONAL"), None), ("operational", LinkEffect::Up));
        assert_eq!(t.state(Some("TRANSFERING_FILE"), None).0, "operational");
        assert_eq!(t.state(Some("TRANSFERRING_FILE"), None).0, "operational");
        assert_eq!(t.state(Some("DETECTING"), None).0, "offline");
        assert_eq!(t.state(Some("CLOSED_WITH_ERROR"), None), ("error", LinkEffect::Down));
        assert_eq!(t.state(Some("RESUMING"), None).0, "printing");
        assert_eq!(t.state(Some("FINISHING"), None).0, "finishing");
    }

    #[test]
    fn unknown_state_ids_fall_back_to_the_state_string_then_unknown() {
        let t = tables();
        assert_eq!(t.state(Some("NEW_STATE"), Some("Printing from SD")).0, "printing");
        assert_eq!(t.state(Some("NEW_STATE"), Some("Offline after error")).0, "error");
        assert_eq!(t.state(Some("NEW_STATE"), Some("Something else")).0, "unknown");
        assert_eq!(t.state(None, None).0, "unknown");
    }

    #[test]
    fn printer_state_changed_sets_the_state_and_publishes_a_normalised_event() {
        let mut m = Mapper::default();
        let out = live(
            &mut m,
            Topic::Event("PrinterStateChanged"),
            r#"{"state_id": "PAUSED", "state_string": "Paused", "connector": "serial", "_event": "PrinterStateChanged", "_timestamp": 1700000000}"#,
        );
        assert_eq!(text(&out, "printer_state").as_deref(), Some("paused"));
        let e = &out.update.events[0];
        assert_eq!(e.name, "printer_state_changed");
        assert_eq!(e.data["state"], "paused");
        assert_eq!(e.data["state_id"], "PAUSED");
        assert_eq!(e.data["connector"], "serial");
        assert!(!e.data.contains_key("_event") && !e.data.contains_key("_timestamp"));
        assert_eq!(out.update.ts, OffsetDateTime::from_unix_timestamp(1_700_000_000).ok());
        assert!(out.update.fresh);
    }

    #[test]
    fn print_events_carry_file_origin_and_duration() {
        let mut m = Mapper::default();
        let out = live(
            &mut m,
            Topic::Event("PrintDone"),
            r#"{"name": "benchy.gcode", "path": "folder/benchy.gcode", "origin": "sdcard", "size": 1234567, "owner": "admin", "time": 3605.1234, "_event": "PrintDone", "_timestamp": 1700000000}"#,
        );
        let e = &out.update.events[0];
        assert_eq!(e.name, "print_done");
        assert_eq!(e.data["file"], "folder/benchy.gcode");
        assert_eq!(e.data["origin"], "printer");
        assert_eq!(e.data["duration"], 3605.12);
        assert!(!e.data.contains_key("time") && !e.data.contains_key("path"));
        assert_eq!(num(&out, "print_progress"), Some(100.0));
    }

    #[test]
    fn pre_1_4_print_started_payloads_give_the_file_name() {
        let mut m = Mapper::default();
        let out = live(
            &mut m,
            Topic::Event("PrintStarted"),
            r#"{"origin": "local", "_event": "PrintStarted", "file":"/home/pi/.octoprint/uploads/case.gco", "filename": "case.gco"}"#,
        );
        assert_eq!(out.update.events[0].data["file"], "case.gco");
        assert_eq!(text(&out, "print_file").as_deref(), Some("case.gco"));
        assert_eq!(text(&out, "printer_state").as_deref(), Some("printing"));
        assert_eq!(out.update.ts, None, "no _timestamp before plugin 0.6: the router uses arrival time");
    }

    #[test]
    fn print_failed_with_an_error_reports_progress_as_a_percent() {
        let mut m = Mapper::default();
        live(&mut m, Topic::Event("PrintStarted"), r#"{"path": "a.gcode", "_timestamp": 10}"#);
        let out = live(
            &mut m,
            Topic::Event("PrintFailed"),
            r#"{"path": "a.gcode", "origin": "local", "time": 812.5, "reason": "error", "error": "Printer halted. kill() called!", "progress": 0.4231, "_timestamp": 20}"#,
        );
        let e = &out.update.events[0];
        assert_eq!(e.data["progress"], 42.31);
        assert_eq!(e.data["reason"], "error");
        assert_eq!(e.data["duration"], 812.5);
        assert_eq!(text(&out, "printer_state").as_deref(), Some("operational"));
    }

    #[test]
    fn a_job_end_after_the_printer_went_offline_does_not_claim_operational() {
        let mut m = Mapper::default();
        live(&mut m, Topic::Event("PrintStarted"), r#"{"path": "a.gcode", "_timestamp": 10}"#);
        live(&mut m, Topic::Event("Disconnected"), r#"{"_timestamp": 20}"#);
        let out = live(&mut m, Topic::Event("PrintFailed"), r#"{"reason": "error", "_timestamp": 20}"#);
        assert_eq!(text(&out, "printer_state"), None);
        assert_eq!(m.state(), Some("offline"));
        assert_eq!(m.link(), Some(LinkWish::PrinterDown));
    }

    #[test]
    fn cancel_sequence_ends_operational_with_both_events() {
        let mut m = Mapper::default();
        live(&mut m, Topic::Event("PrintStarted"), r#"{"path": "a.gcode", "_timestamp": 10}"#);
        let c = live(&mut m, Topic::Event("PrintCancelling"), r#"{"path": "a.gcode", "_timestamp": 11}"#);
        assert_eq!(text(&c, "printer_state").as_deref(), Some("cancelling"));
        let c =
            live(&mut m, Topic::Event("PrintCancelled"), r#"{"path": "a.gcode", "progress": 37, "_timestamp": 12}"#);
        assert_eq!(c.update.events[0].data["progress"], 37);
        assert_eq!(text(&c, "printer_state").as_deref(), Some("operational"));
        let f =
            live(&mut m, Topic::Event("PrintFailed"), r#"{"reason": "cancelled", "progress": 37, "_timestamp": 12}"#);
        assert_eq!(f.update.events[0].name, "print_failed");
        assert_eq!(f.update.events[0].data["reason"], "cancelled");
        assert_eq!(f.update.events[0].data["progress"], 37, "cancelled copies keep the int percent");
    }

    #[test]
    fn unknown_events_pass_through_with_their_name_and_are_counted() {
        let mut m = Mapper::default();
        let out = live(&mut m, Topic::Event("BrandNewThing"), r#"{"someKey": 1, "_timestamp": 5}"#);
        assert_eq!(out.update.events[0].name, "brand_new_thing");
        assert_eq!(out.update.events[0].data["some_key"], 1);
        assert_eq!(out.problems[0].counted, Counted::Unknown);
        let plugin = live(&mut m, Topic::Event("plugin_psucontrol_psu_state_changed"), r#"{"isPSUOn": true}"#);
        assert_eq!(plugin.update.events[0].name, "plugin_psucontrol_psu_state_changed");
        assert!(plugin.problems.is_empty(), "documented plugin events are not unknown");
    }

    #[test]
    fn retained_events_are_history_not_new_events() {
        let mut m = Mapper::default();
        let out = retained(&mut m, Topic::Event("PrintStarted"), r#"{"path": "old.gcode", "_timestamp": 1500000000}"#);
        assert!(out.update.events.is_empty());
        assert!(!out.update.fresh);
        assert_eq!(text(&out, "printer_state").as_deref(), Some("unknown"));
        assert_eq!(out.problems[0].counted, Counted::Rejected("retained_event"));
        // Retained by design (≥ 0.8.14): no event either, but not counted as stale.
        let z = retained(&mut m, Topic::Event("ZChange"), r#"{"new": 4.4, "old": 4.2, "_timestamp": 1700000000}"#);
        assert!(z.update.events.is_empty() && z.problems.is_empty());
    }

    #[test]
    fn retained_firmware_data_still_gives_the_identity() {
        let mut m = Mapper::default();
        let out = retained(
            &mut m,
            Topic::Event("FirmwareData"),
            r#"{"name": "Marlin", "data": {"FIRMWARE_NAME": "Marlin 2.1.2", "MACHINE_TYPE": "Ender-3"}, "_event": "FirmwareData", "_timestamp": 1}"#,
        );
        let id = out.update.identity.unwrap();
        assert_eq!(id.firmware.as_deref(), Some("Marlin 2.1.2"));
        assert_eq!(id.model.as_deref(), Some("Ender-3"));
        assert!(out.update.events.is_empty());
    }

    #[test]
    fn temperatures_are_null_safe_and_custom_keys_become_sensors() {
        let mut m = Mapper::default();
        let out = live(&mut m, Topic::Temperature("chamber"), r#"{"actual": 31.2, "target": null, "_timestamp": 1}"#);
        assert_eq!(num(&out, "temperature_chamber"), Some(31.2));
        assert_eq!(num(&out, "temperature_chamber_target"), None);
        let p = live(&mut m, Topic::Temperature("P"), r#"{"actual": 35.2, "target": null, "_timestamp": 1}"#);
        assert_eq!(num(&p, "temperature_p"), Some(35.2));
        let soc = live(&mut m, Topic::Temperature("soc"), r#"{"temperature": 48.3, "_timestamp": 1}"#);
        assert_eq!(num(&soc, "temperature_soc"), Some(48.3));
        let off = live(&mut m, Topic::Temperature("tool0"), r#"{"actual": 25.0, "target": 0.0, "_timestamp": 1}"#);
        assert_eq!(num(&off, "temperature_tool0_target"), Some(0.0), "a target of 0 means heater off, a real value");
        let bad = live(&mut m, Topic::Temperature("bed"), r#"{"actual": "hot", "_timestamp": 1}"#);
        assert_eq!(bad.problems[0].counted, Counted::ParseError("bad_type"));
    }

    #[test]
    fn an_older_temperature_never_overwrites_a_newer_one() {
        let mut m = Mapper::default();
        let new = live(&mut m, Topic::Temperature("tool0"), r#"{"actual": 210.0, "target": 215.0, "_timestamp": 200}"#);
        assert_eq!(num(&new, "temperature_tool0"), Some(210.0));
        let old = live(&mut m, Topic::Temperature("tool0"), r#"{"actual": 100.0, "target": 215.0, "_timestamp": 150}"#);
        assert!(old.update.readings.is_empty());
        assert_eq!(old.problems[0].counted, Counted::Rejected("out_of_order"));
        // Another sensor has its own clock; the same second is accepted.
        let bed = live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.0, "_timestamp": 150}"#);
        assert_eq!(num(&bed, "temperature_bed"), Some(50.0));
        let same = live(&mut m, Topic::Temperature("tool0"), r#"{"actual": 211.0, "_timestamp": 200}"#);
        assert_eq!(num(&same, "temperature_tool0"), Some(211.0));
        assert_eq!(same.update.ts, OffsetDateTime::from_unix_timestamp(200).ok());
    }

    #[test]
    fn a_timestamp_a_day_ahead_is_not_used_to_order_samples() {
        let mut m = Mapper::default();
        let future = OffsetDateTime::now_utc().unix_timestamp() + 3 * 86_400;
        let out = live(&mut m, Topic::Temperature("bed"), &format!(r#"{{"actual": 60.0, "_timestamp": {future}}}"#));
        assert_eq!(out.problems[0].counted, Counted::ParseError("future_timestamp"));
        assert_eq!(num(&out, "temperature_bed"), Some(60.0), "the value is still used");
        let next = live(&mut m, Topic::Temperature("bed"), r#"{"actual": 61.0, "_timestamp": 1700000000}"#);
        assert_eq!(num(&next, "temperature_bed"), Some(61.0));
    }

    #[test]
    fn pre_0_6_temperatures_use_their_time_field() {
        let mut m = Mapper::default();
        live(&mut m, Topic::Temperature("bed"), r#"{"actual": 60.0, "target": 60.0, "time": 1500000100}"#);
        let old = live(&mut m, Topic::Temperature("bed"), r#"{"actual": 20.0, "target": 60.0, "time": 1500000000}"#);
        assert!(old.update.readings.is_empty());
    }

    #[test]
    fn progress_without_printer_data_gives_progress_and_file_but_no_guessed_state() {
        let mut m = Mapper::default();
        let out = retained(
            &mut m,
            Topic::Progress("printing"),
            r#"{"location": "local", "path": "folder/benchy.gcode", "progress": 42, "_timestamp": 1700000000}"#,
        );
        assert_eq!(num(&out, "print_progress"), Some(42.0));
        assert_eq!(text(&out, "print_file").as_deref(), Some("folder/benchy.gcode"));
        assert_eq!(text(&out, "printer_state").as_deref(), Some("unknown"));
        assert!(!out.update.fresh);
        assert_eq!(m.link(), None, "a retained replay says nothing about the link");
    }

    #[test]
    fn live_progress_of_a_running_job_resolves_an_unknown_state_to_printing() {
        let mut m = Mapper::default();
        retained(&mut m, Topic::Progress("printing"), r#"{"path": "a.gcode", "progress": 42, "_timestamp": 100}"#);
        let out =
            live(&mut m, Topic::Progress("printing"), r#"{"path": "a.gcode", "progress": 43, "_timestamp": 105}"#);
        assert_eq!(text(&out, "printer_state").as_deref(), Some("printing"));
        // ...but never overrides a known state.
        live(&mut m, Topic::Event("PrintPaused"), r#"{"path": "a.gcode", "_timestamp": 110}"#);
        let again =
            live(&mut m, Topic::Progress("printing"), r#"{"path": "a.gcode", "progress": 44, "_timestamp": 115}"#);
        assert_eq!(text(&again, "printer_state"), None);
        assert_eq!(m.state(), Some("paused"));
    }

    #[test]
    fn printer_data_gives_times_state_and_precise_progress() {
        let mut m = Mapper::default();
        let out = retained(
            &mut m,
            Topic::Progress("printing"),
            r#"{"progress": 0, "_timestamp": 1525654824, "location": "local", "path": "Stringing_Test.gco", "printer_data": {"progress": {"completion": 0.008520926537352922, "printTimeLeftOrigin": "average", "printTime": 0, "printTimeLeft": 273, "filepos": 139}, "state": {"text": "Printing", "flags": {"cancelling": false, "paused": false, "operational": true, "pausing": false, "printing": true, "sdReady": true, "error": false, "ready": false, "closedOrError": false}}, "currentZ": null}}"#,
        );
        assert!((num(&out, "print_progress").unwrap() - 0.0085).abs() < 1e-3);
        assert_eq!(num(&out, "print_time_elapsed"), Some(0.0));
        assert_eq!(num(&out, "print_time_left"), Some(273.0));
        assert_eq!(text(&out, "printer_state").as_deref(), Some("printing"));
    }

    #[test]
    fn print_time_genius_progress_is_taken_from_the_plugin() {
        let mut m = Mapper::default();
        let out = live(
            &mut m,
            Topic::Progress("printing"),
            r#"{"path": "a.gcode", "progress": 61, "printer_data": {"progress": {"completion": 48.2, "printTimeLeftOrigin": "genius", "printTime": 610, "printTimeLeft": 390}}, "_timestamp": 5}"#,
        );
        assert_eq!(num(&out, "print_progress"), Some(61.0));
    }

    #[test]
    fn printer_data_does_not_undo_an_event_of_the_same_second() {
        let mut m = Mapper::default();
        live(&mut m, Topic::Event("PrintPaused"), r#"{"path": "a.gcode", "_timestamp": 100}"#);
        let pd = r#"{"path": "a.gcode", "progress": 40, "printer_data": {"state": {"text": "Printing", "flags": {"printing": true, "operational": true}}}, "_timestamp": 100}"#;
        let out = live(&mut m, Topic::Progress("printing"), pd);
        assert_eq!(text(&out, "printer_state"), None);
        let later = pd.replace("\"_timestamp\": 100", "\"_timestamp\": 101");
        let out = live(&mut m, Topic::Progress("printing"), &later);
        assert_eq!(text(&out, "printer_state").as_deref(), Some("printing"));
    }

    #[test]
    fn disconnected_status_takes_the_host_down_and_the_state_to_unknown() {
        let mut m = Mapper::default();
        live(&mut m, Topic::Event("PrinterStateChanged"), r#"{"state_id": "OPERATIONAL", "_timestamp": 1}"#);
        assert_eq!(m.link(), Some(LinkWish::Up));
        let out = live(&mut m, Topic::Lwt, "disconnected");
        assert_eq!(m.link(), Some(LinkWish::HostDown));
        assert_eq!(text(&out, "printer_state").as_deref(), Some("unknown"));
        assert!(!out.update.fresh, "a status message is not a reading");
        // A retained state replay while OctoPrint is gone is not believed.
        let stale = retained(
            &mut m,
            Topic::Progress("printing"),
            r#"{"path": "a", "progress": 5, "printer_data": {"state": {"flags": {"printing": true}}}, "_timestamp": 9}"#,
        );
        assert_eq!(text(&stale, "printer_state"), None);
        live(&mut m, Topic::Lwt, "connected");
        assert_eq!(m.link(), Some(LinkWish::Up));
        let garbage = live(&mut m, Topic::Lwt, "maybe");
        assert_eq!(garbage.problems[0].counted, Counted::ParseError("bad_status"));
    }

    #[test]
    fn half_a_minute_of_live_plugin_traffic_after_a_late_last_will_brings_the_host_back() {
        let mut m = Mapper::default();
        live(&mut m, Topic::Lwt, "connected");
        live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.0, "_timestamp": 100}"#);
        live(&mut m, Topic::Lwt, "disconnected");
        assert_eq!(m.link(), Some(LinkWish::HostDown));
        retained(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.2, "_timestamp": 101}"#);
        assert_eq!(m.link(), Some(LinkWish::HostDown), "a retained replay proves nothing");
        live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.4, "_timestamp": 102}"#);
        assert_eq!(m.link(), Some(LinkWish::HostDown), "one live message could be a shutdown's last gasp");
        live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.6, "_timestamp": 131}"#);
        assert_eq!(m.link(), Some(LinkWish::HostDown));
        live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.8, "_timestamp": 132}"#);
        assert_eq!(m.link(), Some(LinkWish::Up), "the plugin kept publishing for 30 s: a new connection");
        assert_eq!(m.state(), Some("unknown"));
    }

    #[test]
    fn a_shutdown_event_between_disconnected_and_the_last_will_keeps_the_host_down() {
        // The order a real OctoPrint 1.11.8 + plugin 0.8.16 shutdown produces.
        let mut m = Mapper::default();
        live(&mut m, Topic::Lwt, "connected");
        live(&mut m, Topic::Event("PrinterStateChanged"), r#"{"state_id": "OPERATIONAL", "_timestamp": 100}"#);
        assert_eq!(m.link(), Some(LinkWish::Up));
        let mut links = Vec::new();
        live(&mut m, Topic::Lwt, "disconnected");
        links.push(m.link());
        let shutdown = live(&mut m, Topic::Event("Shutdown"), r#"{"_event": "Shutdown", "_timestamp": 101}"#);
        assert_eq!(shutdown.update.events[0].name, "shutdown", "the event itself is still published");
        links.push(m.link());
        live(&mut m, Topic::Lwt, "disconnected");
        links.push(m.link());
        assert_eq!(links, [Some(LinkWish::HostDown); 3]);
        // Only the plugin's own `connected` proves the next connection.
        live(&mut m, Topic::Lwt, "connected");
        assert_eq!(m.link(), Some(LinkWish::Up));
    }

    #[test]
    fn null_print_times_after_a_cancel_make_the_times_absent() {
        let mut m = Mapper::default();
        let running = live(
            &mut m,
            Topic::Progress("printing"),
            r#"{"path": "a.gcode", "progress": 70, "printer_data": {"progress": {"completion": 70.2, "printTime": 4, "printTimeLeft": 34}}, "_timestamp": 100}"#,
        );
        assert_eq!(num(&running, "print_time_left"), Some(34.0));
        let cancelled = live(
            &mut m,
            Topic::Progress("printing"),
            r#"{"path": "a.gcode", "progress": 0, "printer_data": {"progress": {"completion": null, "filepos": null, "printTime": null, "printTimeLeft": null, "printTimeLeftOrigin": null}}, "_timestamp": 101}"#,
        );
        assert_eq!(value(&cancelled, "print_time_left"), Some(absent()));
        assert_eq!(value(&cancelled, "print_time_elapsed"), Some(absent()));
        assert_eq!(num(&cancelled, "print_progress"), Some(0.0), "the plugin's own progress 0 is a value");
        assert!(cancelled.problems.is_empty(), "{:?}", cancelled.problems);
        // Without printer_data (or without the keys) the times are left alone.
        let plain =
            live(&mut m, Topic::Progress("printing"), r#"{"path": "a.gcode", "progress": 0, "_timestamp": 102}"#);
        assert_eq!(value(&plain, "print_time_left"), None);
    }

    #[test]
    fn a_retained_disconnected_at_start_up_is_host_down() {
        let mut m = Mapper::default();
        retained(&mut m, Topic::Lwt, "disconnected");
        assert_eq!(m.link(), Some(LinkWish::HostDown));
        assert_eq!(m.state(), Some("unknown"));
    }

    #[test]
    fn printer_offline_then_live_temperatures_bring_it_back_as_unknown() {
        let mut m = Mapper::default();
        live(&mut m, Topic::Event("PrinterStateChanged"), r#"{"state_id": "OFFLINE", "_timestamp": 100}"#);
        assert_eq!(m.link(), Some(LinkWish::PrinterDown));
        // Same second: could be the last sample before the disconnect.
        live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.0, "_timestamp": 100}"#);
        assert_eq!(m.link(), Some(LinkWish::PrinterDown));
        let out = live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.5, "_timestamp": 130}"#);
        assert_eq!(m.link(), Some(LinkWish::Up));
        assert_eq!(text(&out, "printer_state").as_deref(), Some("unknown"));
    }

    #[test]
    fn slicing_progress_ignores_the_start_up_reset() {
        let mut m = Mapper::default();
        let reset = live(
            &mut m,
            Topic::Progress("slicing"),
            r#"{"slicer": "", "source_location": "", "source_path": "", "destination_location": "", "destination_path": "", "progress": 0, "_timestamp": 1}"#,
        );
        assert_eq!(num(&reset, "slicing_progress"), None);
        let real = live(
            &mut m,
            Topic::Progress("slicing"),
            r#"{"progress": 42, "source_location": "local", "source_path": "test.stl", "destination_location": "local", "destination_path": "test.gcode", "slicer": "cura"}"#,
        );
        assert_eq!(num(&real, "slicing_progress"), Some(42.0));
    }

    #[test]
    fn live_metadata_becomes_an_event_and_clearing_it_does_nothing() {
        let mut m = Mapper::default();
        let out = live(&mut m, Topic::Metadata("slicer_settings.material_type"), "PLA");
        let e = &out.update.events[0];
        assert_eq!(e.name, "print_metadata");
        assert_eq!(e.data["key"], "slicer_settings.material_type");
        assert_eq!(e.data["value"], "PLA");
        let num_meta = live(&mut m, Topic::Metadata("layer_height"), "0.2");
        assert_eq!(num_meta.update.events[0].data["value"], 0.2);
        assert!(live(&mut m, Topic::Metadata("layer_height"), "").update.events.is_empty());
        assert!(retained(&mut m, Topic::Metadata("layer_height"), "0.2").update.events.is_empty());
    }

    #[test]
    fn paused_for_user_is_published_once_a_minute_while_it_repeats() {
        let mut m = Mapper::default();
        let first = live(&mut m, Topic::Event("PausedForUser"), r#"{"_event": "PausedForUser", "_timestamp": 1000}"#);
        assert_eq!(first.update.events.len(), 1);
        for t in [1002, 1004, 1059] {
            let again = live(&mut m, Topic::Event("PausedForUser"), &format!(r#"{{"_timestamp": {t}}}"#));
            assert!(again.update.events.is_empty(), "t={t}");
        }
        let later = live(&mut m, Topic::Event("PausedForUser"), r#"{"_timestamp": 1060}"#);
        assert_eq!(later.update.events.len(), 1);
    }

    #[test]
    fn garbage_payloads_are_counted_and_never_panic() {
        let mut m = Mapper::default();
        let topics = [
            Topic::Event("PrintDone"),
            Topic::Event("PrinterStateChanged"),
            Topic::Progress("printing"),
            Topic::Progress("slicing"),
            Topic::Temperature("tool0"),
            Topic::Lwt,
            Topic::Metadata("x"),
        ];
        let payloads = [
            "",
            "{",
            "[1,2]",
            "null",
            "\"x\"",
            "{\"_timestamp\": \"soon\"}",
            "{\"_timestamp\": -5}",
            "{\"progress\": \"half\"}",
            "{\"state_id\": 5}",
            "{\"printer_data\": 7}",
            "\u{0}",
            "💥",
            "{\"actual\": 1e999}",
            "{\"time\": \"x\", \"path\": 3}",
        ];
        for t in topics {
            for p in payloads {
                let _ = live(&mut m, t, p);
                let _ = retained(&mut m, t, p);
            }
        }
        let out = live(&mut m, Topic::Temperature("tool0"), "{");
        assert_eq!(out.problems[0].counted, Counted::ParseError("invalid_json"));
    }

    #[test]
    fn temperature_keys_are_bounded() {
        let mut m = Mapper::default();
        for i in 0..(MAX_SENSORS + 5) {
            let _ = live(&mut m, Topic::Temperature(&format!("s{i}")), r#"{"actual": 1.0}"#);
        }
        let out = live(&mut m, Topic::Temperature("one_more"), r#"{"actual": 1.0}"#);
        assert_eq!(out.problems[0].counted, Counted::Rejected("too_many_sensors"));
    }
}

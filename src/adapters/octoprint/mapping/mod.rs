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
//!
//! The room: this file holds the [`Mapper`] (per-printer state, the dispatch of one message, the
//! printer_state arbitration and the plugin's `mqtt` status), the topic split and the outcome
//! types; `tables` parses the embedded event and state tables; `events` maps `event/<Event>`
//! (and normalises event payloads); `progress` maps `progress/printing` and `progress/slicing`;
//! `temperatures` maps `temperature/<key>`; `tests` holds the unit tests.

mod events;
mod progress;
mod tables;
mod temperatures;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value as Json};
use time::OffsetDateTime;

use crate::model::{Event, Quantity, Update, Value};

use tables::LinkEffect;
pub(crate) use tables::try_tables;

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
    /// `Shutdown` event may still go out (OctoPrint fires it on its event thread while the plugin's
    /// `on_shutdown` runs, so it comes before or after), then the broker sends the last will (real
    /// OctoPrint 1.11.8 + plugin 0.8.16 runs). Only the plugin's `connected` does, with one exception: when
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
}

//! go-e Charger simulator: a stand-in for a HOME+ V3 charger on firmware 56.9 (with the 60.x
//! HTTP 400 quirk as an option) that speaks the local HTTP API v2 and the MQTT API exactly as
//! `shared/protocols/go-e.md` describes, so the go-e adapter can be tested without hardware and the
//! demo shows a plausible charging session.
//!
//! Split in the rumqtt style: [`ChargerState`] is the pure device (every API key, the session
//! lifecycle, the write rules) and knows nothing about sockets; [`run`] wires it to the broker (via
//! [`crate::mqtt`]) and to an axum HTTP server, and drives its once-per-tick logic.
//!
//! The initial key set is the real connect burst of `adapters/goe/fixtures/mqtt-traffic-056.9.log`,
//! and which keys are writable comes from the vendor key table `adapters/goe/fixtures/apikeys.tsv`,
//! so the simulator answers like the captures rather than like our guess of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, UtcOffset};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mqtt::{MqttHandle, QoS};

/// The 56.9 connect burst (plus ~3 s of updates, which are ignored: first occurrence wins).
const BURST_56_9: &str = include_str!("../../adapters/goe/fixtures/mqtt-traffic-056.9.log");
/// Vendor key table: key, description, type, R/W, category (tab-separated).
const API_KEYS_TSV: &str = include_str!("../../adapters/goe/fixtures/apikeys.tsv");

/// Keys a real charger serves over HTTP but never publishes on MQTT (go-e.md §1.4); `mcu` would
/// also leak the broker URL.
const HTTP_ONLY_KEYS: &[&str] = &["sse", "mce", "mcu"];

/// Keys the simulator computes itself; writes to them must fail like on the device even where the
/// vendor table is vague (`fsp` is R/W in the 60.4 export but answers "without setter").
const READ_ONLY_KEYS: &[&str] = &[
    "alw",
    "car",
    "nrg",
    "eto",
    "err",
    "modelStatus",
    "fsp",
    "acu",
    "rbt",
    "rbc",
    "tma",
    "wh",
    "sse",
    "typ",
    "fwv",
    "var",
    "oem",
    "pha",
    "pnp",
    "cus",
    "cbl",
    "cdi",
    "cll",
    "tpa",
    "fhz",
    "avgfhz",
    "rssi",
    "loc",
    "mcc",
    "mcs",
    "mcca",
    "mlr",
    "mlra",
    "lccfi",
    "lccfc",
    "lcctc",
    "lmsc",
    "pgrid",
    "ppv",
    "pakku",
    "tab",
    "amt",
    "adi",
];

/// How many ticks each phase of the endless demo session lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTicks {
    /// No car plugged in (`car=1`).
    pub idle: u32,
    /// Car plugged in, waiting before the charger starts (`car=3`).
    pub waiting: u32,
    /// Ticks of actual charging (paused ticks, e.g. `frc=1`, do not count).
    pub charging: u32,
    /// Car full but still plugged in (`car=4`) before it is unplugged.
    pub complete: u32,
}

impl Default for PhaseTicks {
    fn default() -> Self {
        // Short enough that the demo shows a whole session in under a minute.
        PhaseTicks { idle: 8, waiting: 3, charging: 30, complete: 5 }
    }
}

/// Everything [`run`] needs; built by the CLI (`hlbridge simulate goe`) and the demo.
#[derive(Debug)]
pub struct GoeSimOptions {
    /// Broker to publish to; None = no MQTT side (HTTP only).
    pub broker: Option<crate::mqtt::MqttSettings>,
    /// 6-digit serial, e.g. "012345"; appears in the default topic prefix and in `sse`.
    pub serial: String,
    /// Full topic prefix incl. trailing slash; None = `"go-eCharger/<serial>/"`. (The pre-054.6 form
    /// is `"/go-eCharger/<serial>/"`, custom `mtp` prefixes replace it entirely.)
    pub topic_prefix: Option<String>,
    /// `mcr`: MQTT read-only. When true the charger ignores `<key>/set` (no write, no /result).
    pub read_only: bool,
    /// Listener for the HTTP API v2 (`/api/status`, `/api/set`); None = no HTTP.
    pub http: Option<tokio::net::TcpListener>,
    /// Mimic 60.x CORE/PRO: `/api/status?filter=` naming a key the device lacks returns HTTP 400
    /// (with the JSON body of the keys it has).
    pub http_400_on_unknown_filter: bool,
    /// Simulated-time tick (real charger: 1 s). Tests use e.g. 50 ms. `rbt` and the energy
    /// counters advance by exactly this much per tick.
    pub tick: Duration,
    /// How many ticks each session phase lasts.
    pub phase_ticks: PhaseTicks,
    /// RNG seed for noise, so runs are reproducible.
    pub seed: u64,
}

impl Default for GoeSimOptions {
    fn default() -> Self {
        GoeSimOptions {
            broker: None,
            serial: "012345".to_owned(),
            topic_prefix: None,
            read_only: false,
            http: None,
            http_400_on_unknown_filter: false,
            tick: Duration::from_secs(1),
            phase_ticks: PhaseTicks::default(),
            seed: 1,
        }
    }
}

impl GoeSimOptions {
    /// The topic prefix in effect: the configured one, else the post-054.6 default.
    pub(crate) fn effective_prefix(&self) -> String {
        self.topic_prefix.clone().unwrap_or_else(|| format!("go-eCharger/{}/", self.serial))
    }
}

/// Where the simulated session currently is; `car` is derived from it and from the charge logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionPhase {
    /// Nothing plugged in.
    Idle,
    /// Car plugged in; charging has not started yet (waiting time, `frc=1`, or access control).
    Plugged,
    /// Charging run in progress (shows `car=3` while paused by `frc=1`).
    Charging,
    /// Car full, still plugged in.
    Complete,
}

/// Why a write was refused; rendered differently for MQTT `/result` and HTTP `/api/set`.
#[derive(Debug, Clone, PartialEq)]
enum WriteError {
    /// The device has no such key.
    UnknownKey,
    /// The key exists but is read-only (`alw`, `car`, …).
    NoSetter,
    /// ArduinoJson-style error name (`IncompleteInput`, `InvalidInput`, `EmptyInput`).
    InvalidJson(&'static str),
    /// Human type name, e.g. `string`, `integer or null`.
    WrongType(String),
    /// Valid type, value outside the documented range (inclusive bounds).
    OutOfRange(i64, i64),
}

impl WriteError {
    /// The text the charger publishes on `<key>/result` (go-e.md §1.6, vendor transcript).
    fn mqtt_text(&self, key: &str, payload: &str) -> String {
        match self {
            WriteError::InvalidJson(kind) => format!("invalid json {kind}: {payload}"),
            other => other.common_text(key, payload),
        }
    }

    /// The text in the `/api/set` response body; HTTP words invalid JSON differently (issue #192).
    fn http_text(&self, key: &str, payload: &str) -> String {
        match self {
            WriteError::InvalidJson(kind) => {
                format!("{key}: tried to set api key with invalid json {kind} ({payload})")
            }
            other => other.common_text(key, payload),
        }
    }

    fn common_text(&self, key: &str, payload: &str) -> String {
        match self {
            // No capture shows this case; the wording follows the "without setter" pattern.
            WriteError::UnknownKey => format!("{key}: unknown api key ({payload})"),
            WriteError::NoSetter => {
                format!("{key}: tried to set api key without setter ({payload})")
            }
            WriteError::InvalidJson(kind) => format!("invalid json {kind}: {payload}"),
            WriteError::WrongType(t) => format!("value must be {t} {payload}"),
            WriteError::OutOfRange(lo, hi) => {
                format!("value must be between {lo} and {hi} {payload}")
            }
        }
    }
}

/// JSON shape a writable key accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    Array,
    Object,
    Any,
}

/// Type and range rule for one writable key.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spec {
    /// JSON type the value must have.
    kind: Kind,
    /// Whether `null` is accepted (`trx`, `dwo`, `mtp` use null as "off/default").
    nullable: bool,
    /// Inclusive numeric bounds, where the docs give them.
    range: Option<(i64, i64)>,
}

impl Spec {
    const fn new(kind: Kind) -> Spec {
        Spec { kind, nullable: false, range: None }
    }
    const fn int(lo: i64, hi: i64) -> Spec {
        Spec { kind: Kind::Int, nullable: false, range: Some((lo, hi)) }
    }
    const fn nullable(self) -> Spec {
        Spec { nullable: true, ..self }
    }

    fn type_name(&self) -> String {
        let base = match self.kind {
            Kind::Bool => "bool",
            Kind::Int => "integer",
            Kind::Float => "number",
            Kind::Str => "string",
            Kind::Array => "array",
            Kind::Object => "object",
            Kind::Any => "any",
        };
        if self.nullable { format!("{base} or null") } else { base.to_owned() }
    }

    fn check(&self, v: &Value) -> Result<(), WriteError> {
        let wrong = || WriteError::WrongType(self.type_name());
        if v.is_null() {
            return if self.nullable || self.kind == Kind::Any { Ok(()) } else { Err(wrong()) };
        }
        let ok = match self.kind {
            Kind::Bool => v.is_boolean(),
            Kind::Int => v.is_i64() || v.is_u64(),
            Kind::Float => v.is_number(),
            Kind::Str => v.is_string(),
            Kind::Array => v.is_array(),
            Kind::Object => v.is_object(),
            Kind::Any => true,
        };
        if !ok {
            return Err(wrong());
        }
        if let Some((lo, hi)) = self.range {
            // u64 beyond i64 is certainly out of range; floats only reach here for Kind::Float.
            let inside = match v.as_i64() {
                Some(n) => (lo..=hi).contains(&n),
                None => v.as_f64().is_some_and(|f| f >= lo as f64 && f <= hi as f64),
            };
            if !inside {
                return Err(WriteError::OutOfRange(lo, hi));
            }
        }
        Ok(())
    }
}

/// Writable keys the simulator models itself, with the ranges the vendor docs give.
const WRITE_SPECS: &[(&str, Spec)] = &[
    ("amp", Spec::int(6, 32)),
    ("ama", Spec::int(6, 32)),
    ("mca", Spec::int(6, 32)),
    ("frc", Spec::int(0, 2)),
    ("psm", Spec::int(0, 2)),
    ("acs", Spec::int(0, 1)),
    ("lmo", Spec::int(3, 5)),
    ("ust", Spec::int(0, 2)),
    ("trx", Spec::int(0, 10).nullable()),
    ("tcl", Spec::int(6, 32).nullable()),
    ("dwo", Spec::new(Kind::Float).nullable()),
    ("fna", Spec::new(Kind::Str)),
    ("mcr", Spec::new(Kind::Bool)),
    ("mce", Spec::new(Kind::Bool)),
    ("mcu", Spec::new(Kind::Str)),
    ("mtp", Spec::new(Kind::Str).nullable()),
    ("hai", Spec::new(Kind::Bool)),
    ("tof", Spec::int(-720, 840)),
    ("tds", Spec::int(0, 2)),
    ("rst", Spec::new(Kind::Any)),
    ("ids", Spec::new(Kind::Object)),
];

/// `apikeys.tsv` as key → (type, rw), parsed once.
fn vendor_key_table() -> &'static HashMap<&'static str, (&'static str, &'static str)> {
    static TABLE: OnceLock<HashMap<&'static str, (&'static str, &'static str)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        API_KEYS_TSV
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let key = cols.next()?.trim();
                let _description = cols.next()?;
                let typ = cols.next()?.trim();
                let rw = cols.next()?.trim();
                (!key.is_empty()).then_some((key, (typ, rw)))
            })
            .collect()
    })
}

/// Spec for a vendor type string; `TYPE` (undocumented) falls back to the current value's shape.
fn spec_from_vendor_type(typ: &str, current: Option<&Value>) -> Spec {
    let t = typ.trim();
    let (nullable, inner) = if let Some(rest) = t.strip_prefix("optional<").and_then(|r| r.strip_suffix('>')) {
        (true, rest)
    } else if let Some(rest) = t.strip_prefix("null or ") {
        (true, rest)
    } else if let Some(rest) = t.strip_suffix(" or null") {
        (true, rest)
    } else {
        (false, t)
    };
    let kind = match inner {
        "bool" => Some(Kind::Bool),
        "float" | "double" => Some(Kind::Float),
        "string" => Some(Kind::Str),
        "array" => Some(Kind::Array),
        "object" => Some(Kind::Object),
        "milliseconds" | "seconds" | "minutes" => Some(Kind::Int),
        s if s.contains("int") => Some(Kind::Int),
        _ => None,
    };
    match kind {
        Some(kind) => Spec { kind, nullable, range: None },
        None => match current {
            Some(Value::Bool(_)) => Spec::new(Kind::Bool),
            // Numbers of undocumented type: the firmware's int/float split is unknown, accept both.
            Some(Value::Number(_)) => Spec::new(Kind::Float),
            Some(Value::String(_)) => Spec::new(Kind::Str),
            Some(Value::Array(_)) => Spec::new(Kind::Array),
            Some(Value::Object(_)) => Spec::new(Kind::Object),
            _ => Spec::new(Kind::Any),
        },
    }
}

/// Parses a write payload like the firmware's JSON parser, naming errors the ArduinoJson way.
fn parse_payload(payload: &str) -> Result<Value, WriteError> {
    match serde_json::from_str::<Value>(payload) {
        Ok(v) => Ok(v),
        Err(e) => {
            let t = payload.trim();
            let kind = if t.is_empty() {
                "EmptyInput"
            } else if t.chars().all(|c| c.is_ascii_alphanumeric() || "_-.+".contains(c)) || e.is_eof() {
                // A bare word is read to the end of the input still looking for its terminator
                // (`new_name` → IncompleteInput in the vendor transcript); `mqtt://…` stops at ':'.
                "IncompleteInput"
            } else {
                "InvalidInput"
            };
            Err(WriteError::InvalidJson(kind))
        }
    }
}

/// Parses `filter=` of `/api/status`: the comma list (fw ≥ 051.4) or the old JSON array form.
pub(crate) fn parse_filter(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    if raw.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(raw)
    {
        return list;
    }
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Insertion-ordered key store, so the MQTT burst keeps the device's order.
#[derive(Debug, Clone, Default)]
struct Store {
    /// Keys and values in first-insertion order.
    entries: Vec<(String, Value)>,
    /// Position of each key in `entries`.
    index: HashMap<String, usize>,
}

impl Store {
    fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Sets `key`; returns whether the value actually changed (new keys count as changed).
    fn insert(&mut self, key: &str, value: Value) -> bool {
        match self.index.get(key) {
            Some(&i) => {
                if self.entries[i].1 == value {
                    false
                } else {
                    self.entries[i].1 = value;
                    true
                }
            }
            None => {
                self.index.insert(key.to_owned(), self.entries.len());
                self.entries.push((key.to_owned(), value));
                true
            }
        }
    }
}

/// Rounds to `decimals` places.
fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// A JSON number printed like the firmware: integral values without a fraction (`232`, not `232.0`).
fn number(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// The value after a trip through float32 printed with `sig` significant digits (`49.95899963`).
fn f32_noise(x: f64, sig: i32) -> f64 {
    let y = f64::from(x as f32);
    if y == 0.0 || !y.is_finite() {
        return y;
    }
    let magnitude = y.abs().log10().floor() as i32 + 1;
    let decimals = (sig - magnitude).clamp(0, 12) as usize;
    format!("{y:.decimals$}").parse().unwrap_or(y)
}

/// Last Sunday of `month` at 01:00 UTC: the EU daylight-saving switch instants.
fn eu_switch(year: i32, month: Month) -> Option<OffsetDateTime> {
    let last = Date::from_calendar_date(year, month, month.length(year)).ok()?;
    let back = i64::from(last.weekday().number_days_from_sunday());
    let sunday = last.checked_sub(time::Duration::days(back))?;
    Some(sunday.with_hms(1, 0, 0).ok()?.assume_utc())
}

/// The device's local offset from `tof` (minutes) and `tds` (1 = European summer time).
fn local_offset(now: OffsetDateTime, tof_minutes: i64, tds: i64) -> UtcOffset {
    let mut minutes = tof_minutes;
    if tds == 1
        && let (Some(start), Some(end)) = (eu_switch(now.year(), Month::March), eu_switch(now.year(), Month::October))
        && now >= start
        && now < end
    {
        minutes += 60;
    }
    let secs = i32::try_from(minutes.clamp(-1080, 1080) * 60).unwrap_or(0);
    UtcOffset::from_whole_seconds(secs).unwrap_or(UtcOffset::UTC)
}

/// The whole simulated charger: every API key plus the hidden physics behind them. Pure: no IO,
/// no clock reads except in [`ChargerState::tick`] (use [`ChargerState::tick_at`] in tests).
#[derive(Debug, Clone)]
pub(crate) struct ChargerState {
    /// Every API key the device has, as the JSON value HTTP and MQTT serve.
    store: Store,
    /// Simulated time per tick: `rbt` and the energy integration step.
    tick: Duration,
    /// Length of each session phase.
    phase_ticks: PhaseTicks,
    /// Where the endless demo session is.
    phase: SessionPhase,
    /// Ticks spent in the current phase (idle, plugged, complete).
    phase_elapsed: u32,
    /// Ticks that delivered energy in the current session (drives `Charging` → `Complete`).
    charged_ticks: u32,
    /// Ticks since the current uninterrupted charging run began (drives the current ramp-up).
    run_ticks: u32,
    /// `rbt` when the current charging run began, for `cdi` type 0 (running).
    run_started_rbt: Option<u64>,
    /// Length of the last charging run, for `cdi` type 1 (last duration).
    last_run_ms: u64,
    /// Milliseconds since boot; the adapter's liveness signal.
    rbt: u64,
    /// Unrounded energy counters: `eto` is published as whole Wh and would never rise otherwise.
    eto_wh: f64,
    /// Unrounded session energy behind `wh`.
    wh: f64,
    /// Unloaded grid voltage per phase (random walk); the load sag is applied on top.
    grid_v: [f64; 3],
    /// Grid frequency behind `fhz`, kept unquantised so the walk stays smooth.
    fhz: f64,
    /// Running average behind `avgfhz`.
    avg_fhz: f64,
    /// Unquantised temperatures behind `tma` (the sensors publish 1/8 °C steps).
    tma: [f64; 2],
    /// 30 s average power behind `tpa`.
    tpa: f64,
    /// `rbt` of the last `ids` write; PV data goes stale 10 s later.
    ids_at: Option<u64>,
    /// `car` at the previous tick, to stamp `lccfi`/`lccfc`/`lcctc` on transitions.
    prev_car: i64,
    /// `modelStatus` at the previous tick, to stamp `lmsc` on changes.
    prev_model_status: i64,
    /// Set by an `rst` write until the IO side has re-sent the burst.
    rebooted: bool,
}

impl ChargerState {
    /// A charger with serial `serial` in the idle state, keys as in the 56.9 connect burst.
    pub(crate) fn new(serial: &str, tick: Duration, phase_ticks: PhaseTicks) -> ChargerState {
        let mut store = Store::default();
        for line in BURST_56_9.lines() {
            let Some((topic, json)) = line.split_once(' ') else {
                continue;
            };
            let Some(key) = topic.rsplit('/').next().filter(|k| !k.is_empty()) else {
                continue;
            };
            if store.get(key).is_some() {
                continue; // later lines are updates, not part of the burst
            }
            if let Ok(v) = serde_json::from_str::<Value>(json.trim()) {
                store.insert(key, v);
            }
        }
        let rbt = store.get("rbt").and_then(Value::as_u64).unwrap_or(812_334);
        let mut s = ChargerState {
            store,
            tick,
            phase_ticks,
            phase: SessionPhase::Idle,
            phase_elapsed: 0,
            charged_ticks: 0,
            run_ticks: 0,
            run_started_rbt: None,
            last_run_ms: 0,
            rbt,
            // A lifetime counter that looks used (the 56.9 unit reported 0; the 055.0 trace this).
            eto_wh: 527_952.0,
            wh: 0.0,
            grid_v: [232.0, 232.0, 231.0],
            fhz: 49.959,
            avg_fhz: 49.906,
            tma: [22.875, 27.625],
            tpa: 0.0,
            ids_at: None,
            prev_car: 1,
            prev_model_status: 15,
            rebooted: false,
        };
        let ins = |s: &mut ChargerState, k: &str, v: Value| {
            s.store.insert(k, v);
        };
        // Identity (HTTP-only `sse`, vendor-transcript style `fna`) and a 22 kW HOME+.
        ins(&mut s, "sse", Value::from(serial));
        ins(&mut s, "fna", Value::from(format!("go-echarger_{serial}")));
        ins(&mut s, "typ", Value::from("go-eCharger"));
        ins(&mut s, "fwv", Value::from("56.9"));
        ins(&mut s, "var", Value::from(22));
        ins(&mut s, "oem", Value::from("go-e"));
        // Default logic mode, no adapter, full current range: a plain session reports
        // modelStatus 15 and acu = amp instead of the capture's eco-mode 10 A.
        ins(&mut s, "lmo", Value::from(3));
        ins(&mut s, "amp", Value::from(16));
        ins(&mut s, "ama", Value::from(32));
        ins(&mut s, "adi", Value::Bool(false));
        ins(&mut s, "psm", Value::from(2));
        ins(&mut s, "frc", Value::from(0));
        ins(&mut s, "acs", Value::from(0));
        ins(&mut s, "car", Value::from(1));
        ins(&mut s, "alw", Value::Bool(true));
        ins(&mut s, "acu", Value::from(16));
        ins(&mut s, "modelStatus", Value::from(15));
        ins(&mut s, "err", Value::from(0));
        ins(&mut s, "eto", Value::from(527_952u64));
        ins(&mut s, "wh", Value::from(0));
        ins(&mut s, "pnp", Value::from(0));
        ins(&mut s, "tof", Value::from(60));
        ins(&mut s, "tds", Value::from(1));
        // MQTT configuration and health keys (go-e.md §1.1); run() fills in the real values.
        ins(&mut s, "mce", Value::Bool(true));
        ins(&mut s, "mcu", Value::from(""));
        ins(&mut s, "mcr", Value::Bool(false));
        ins(&mut s, "mtp", Value::Null);
        ins(&mut s, "mcs", Value::Bool(false));
        ins(&mut s, "mcc", Value::Bool(false));
        ins(&mut s, "mcca", Value::Null);
        ins(&mut s, "mlr", Value::Null);
        ins(&mut s, "mlra", Value::Null);
        s.store.insert(
            "cll",
            serde_json::json!({"adapterCurrentLimit":32,"awattar":32,"currentLimitMax":32,"loadLimit":32,
                "requestedCurrent":16,"temperatureCurrentLimit":32,"unsymetryCurrentLimit":32}),
        );
        // Keys that must exist even if a future fixture lacks them.
        for (k, v) in [
            ("rbc", Value::from(84)),
            ("rbt", Value::from(rbt)),
            ("rssi", Value::from(-65)),
            ("fhz", Value::from(49.95899963)),
            ("nrg", serde_json::json!([232, 232, 231, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            ("tma", serde_json::json!([22.875, 27.625])),
            ("utc", Value::from("")),
            ("loc", Value::from("")),
        ] {
            if s.store.get(k).is_none() {
                s.store.insert(k, v);
            }
        }
        let now = OffsetDateTime::now_utc();
        s.update_clock(now, 5, &mut Vec::new());
        let tab = now.unix_timestamp_nanos() / 1_000_000 - i128::from(s.rbt);
        s.store.insert("tab", Value::from(i64::try_from(tab).unwrap_or(0)));
        s
    }

    /// The state [`run`] starts from: serial, `mcr`, `mtp` and `mcu` taken from the options.
    pub(crate) fn from_options(opts: &GoeSimOptions) -> ChargerState {
        let mut s = ChargerState::new(&opts.serial, opts.tick, opts.phase_ticks);
        s.store.insert("mcr", Value::Bool(opts.read_only));
        s.store.insert("mtp", opts.topic_prefix.clone().map_or(Value::Null, Value::from));
        let mcu = opts.broker.as_ref().map(|b| format!("mqtt://{}:{}/", b.host, b.port)).unwrap_or_default();
        s.store.insert("mcu", Value::from(mcu));
        s.store.insert("mce", Value::Bool(opts.broker.is_some()));
        s
    }

    /// Current value of `key`, if the device has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.store.get(key)
    }

    /// Whether MQTT writes must be ignored (`mcr`, changeable at runtime over HTTP).
    pub(crate) fn mqtt_read_only(&self) -> bool {
        self.get_bool("mcr").unwrap_or(false)
    }

    /// Whether `key` is published on MQTT (some keys are HTTP-only on real firmware).
    pub(crate) fn is_mqtt_key(key: &str) -> bool {
        !HTTP_ONLY_KEYS.contains(&key)
    }

    /// Every MQTT-published key with its value, in burst order: what a (re)connect publishes.
    pub(crate) fn mqtt_snapshot(&self) -> Vec<(String, Value)> {
        self.store.entries.iter().filter(|(k, _)| Self::is_mqtt_key(k)).cloned().collect()
    }

    /// Records the MQTT connection state in `mcs`/`mcc`/`mcca` like the firmware does.
    pub(crate) fn set_mqtt_connected(&mut self, connected: bool) {
        self.store.insert("mcs", Value::Bool(true));
        if self.store.insert("mcc", Value::Bool(connected)) && connected {
            self.store.insert("mcca", Value::from(self.rbt));
        }
    }

    /// True once after a write to `rst` rebooted the charger (the IO side then re-sends the burst).
    pub(crate) fn take_rebooted(&mut self) -> bool {
        std::mem::take(&mut self.rebooted)
    }

    /// `/api/status`: the requested keys (all without a filter) and the requested keys the
    /// device does not have.
    pub(crate) fn status(&self, filter: Option<&[&str]>) -> (Map<String, Value>, Vec<String>) {
        let mut out = Map::new();
        let mut missing = Vec::new();
        match filter {
            None => {
                for (k, v) in &self.store.entries {
                    out.insert(k.clone(), v.clone());
                }
            }
            Some(keys) => {
                for &k in keys {
                    match self.store.get(k) {
                        Some(v) => {
                            out.insert(k.to_owned(), v.clone());
                        }
                        None => missing.push(k.to_owned()),
                    }
                }
            }
        }
        (out, missing)
    }

    /// An MQTT write (`<key>/set`): `Ok` or the exact `/result` error text. Effects on derived
    /// keys (`alw`, `acu`, `car`, …) show at the next tick, as on the device.
    pub(crate) fn set(&mut self, key: &str, payload: &str) -> Result<(), String> {
        self.write(key, payload).map_err(|e| e.mqtt_text(key, payload))
    }

    /// An HTTP write (`/api/set?key=payload`): same rules as [`ChargerState::set`], with the
    /// HTTP wording of the error text.
    pub(crate) fn set_http(&mut self, key: &str, payload: &str) -> Result<(), String> {
        self.write(key, payload).map_err(|e| e.http_text(key, payload))
    }

    fn write_spec(&self, key: &str) -> Result<Spec, WriteError> {
        if let Some((_, spec)) = WRITE_SPECS.iter().find(|(k, _)| *k == key) {
            return Ok(*spec);
        }
        let current = self.store.get(key);
        if READ_ONLY_KEYS.contains(&key) {
            return Err(WriteError::NoSetter);
        }
        let Some(current) = current else {
            return Err(WriteError::UnknownKey);
        };
        match vendor_key_table().get(key) {
            Some((typ, rw)) if rw.contains('W') => Ok(spec_from_vendor_type(typ, Some(current))),
            _ => Err(WriteError::NoSetter),
        }
    }

    fn write(&mut self, key: &str, payload: &str) -> Result<(), WriteError> {
        let spec = self.write_spec(key)?;
        let value = parse_payload(payload)?;
        spec.check(&value)?;
        match key {
            "rst" => self.reboot(),
            "ids" => {
                let pgrid = value.get("pGrid").filter(|v| v.is_number()).cloned();
                let Some(pgrid) = pgrid else {
                    return Err(WriteError::WrongType("object with pGrid".to_owned()));
                };
                self.store.insert("pgrid", pgrid);
                for (field, k) in [("pPv", "ppv"), ("pAkku", "pakku")] {
                    let v = value.get(field).filter(|v| v.is_number()).cloned().unwrap_or(Value::Null);
                    self.store.insert(k, v);
                }
                self.ids_at = Some(self.rbt);
            }
            _ => {
                self.store.insert(key, value);
            }
        }
        Ok(())
    }

    fn reboot(&mut self) {
        let rbc = self.get_i64("rbc").unwrap_or(0) + 1;
        self.store.insert("rbc", Value::from(rbc));
        let tab = self.get_i64("tab").unwrap_or(0) + i64::try_from(self.rbt).unwrap_or(0);
        self.rbt = 0;
        self.store.insert("rbt", Value::from(0));
        self.store.insert("tab", Value::from(tab));
        self.rebooted = true;
    }

    fn get_i64(&self, key: &str) -> Option<i64> {
        self.store.get(key).and_then(Value::as_i64)
    }

    fn get_bool(&self, key: &str) -> Option<bool> {
        self.store.get(key).and_then(Value::as_bool)
    }

    fn put(&mut self, key: &'static str, value: Value, changed: &mut Vec<&'static str>) {
        if self.store.insert(key, value) {
            changed.push(key);
        }
    }

    /// Whether the charge logic lets a car charge now (`frc`, then access control).
    fn allowed(&self) -> bool {
        match self.get_i64("frc").unwrap_or(0) {
            1 => false,
            2 => true,
            // Old firmware accepted 3..5 and treated them as neutral (go-e.md §3.3).
            _ => self.get_i64("acs").unwrap_or(0) == 0 || !self.store.get("trx").is_none_or(Value::is_null),
        }
    }

    fn model_status(&self) -> i64 {
        match self.get_i64("frc").unwrap_or(0) {
            2 => 3,
            1 => 4,
            _ if !self.allowed() => 2,
            _ => match self.get_i64("lmo").unwrap_or(3) {
                4 => 7,
                5 => 10,
                _ => 15,
            },
        }
    }

    /// One logic tick at the current wall-clock time.
    pub(crate) fn tick<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Vec<&'static str> {
        self.tick_at(rng, OffsetDateTime::now_utc())
    }

    /// One logic tick at `now`: advances `rbt`, the clock keys, the session and the measurements.
    /// Returns the keys whose value changed.
    pub(crate) fn tick_at<R: Rng + ?Sized>(&mut self, rng: &mut R, now: OffsetDateTime) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let tick_ms = u64::try_from(self.tick.as_millis()).unwrap_or(u64::MAX);
        self.rbt = self.rbt.saturating_add(tick_ms);
        self.put("rbt", Value::from(self.rbt), &mut changed);
        let loc_lag_ms = rng.random_range(3..9);
        self.update_clock(now, loc_lag_ms, &mut changed);
        self.advance_session(&mut changed);
        self.update_outputs(rng, &mut changed);
        changed
    }

    fn update_clock(&mut self, now: OffsetDateTime, loc_lag_ms: i64, changed: &mut Vec<&'static str>) {
        let utc_fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]");
        let loc_fmt = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3] [offset_hour sign:mandatory]:[offset_minute]"
        );
        let offset = local_offset(now, self.get_i64("tof").unwrap_or(60), self.get_i64("tds").unwrap_or(1));
        // The firmware formats `loc` a few ms after `utc`, as the 56.9 capture shows.
        let local = (now + time::Duration::milliseconds(loc_lag_ms)).to_offset(offset);
        let utc = now.format(&utc_fmt).unwrap_or_default();
        let loc = local.format(&loc_fmt).unwrap_or_default();
        self.put("utc", Value::from(utc), changed);
        self.put("loc", Value::from(loc), changed);
    }

    fn advance_session(&mut self, changed: &mut Vec<&'static str>) {
        let allowed = self.allowed();
        let frc = self.get_i64("frc").unwrap_or(0);
        match self.phase {
            SessionPhase::Idle => {
                if self.phase_elapsed >= self.phase_ticks.idle {
                    tracing::debug!("simulated car plugged in");
                    self.phase = SessionPhase::Plugged;
                    // This tick already shows the new phase, so it counts.
                    self.phase_elapsed = 1;
                    self.charged_ticks = 0;
                    // `wh` counts from plug-in.
                    self.wh = 0.0;
                } else {
                    self.phase_elapsed += 1;
                }
            }
            SessionPhase::Plugged => {
                // `frc=2` starts a plugged car at once; otherwise the car takes a moment.
                if allowed && (self.phase_elapsed >= self.phase_ticks.waiting || frc == 2) {
                    tracing::debug!("simulated charging starts");
                    self.phase = SessionPhase::Charging;
                    self.phase_elapsed = 0;
                } else {
                    self.phase_elapsed = self.phase_elapsed.saturating_add(1);
                }
            }
            SessionPhase::Charging => {
                if self.charged_ticks >= self.phase_ticks.charging {
                    tracing::debug!("simulated car full");
                    self.phase = SessionPhase::Complete;
                    self.phase_elapsed = 1;
                }
            }
            SessionPhase::Complete => {
                if self.phase_elapsed >= self.phase_ticks.complete {
                    tracing::debug!("simulated car unplugged");
                    self.phase = SessionPhase::Idle;
                    self.phase_elapsed = 1;
                    self.wh = 0.0;
                    // The firmware resets the force state and the transaction on unplug.
                    self.put("frc", Value::from(0), changed);
                    self.put("trx", Value::Null, changed);
                } else {
                    self.phase_elapsed += 1;
                }
            }
        }
    }

    fn update_outputs<R: Rng + ?Sized>(&mut self, rng: &mut R, changed: &mut Vec<&'static str>) {
        let dt = self.tick.as_secs_f64();
        let allowed = self.allowed();
        let plugged = self.phase != SessionPhase::Idle;
        let charging = self.phase == SessionPhase::Charging && allowed;
        let car: i64 = match self.phase {
            SessionPhase::Idle => 1,
            SessionPhase::Plugged => 3,
            SessionPhase::Charging if allowed => 2,
            SessionPhase::Charging => 3,
            SessionPhase::Complete => 4,
        };

        let amp = self.get_i64("amp").unwrap_or(16).clamp(6, 32);
        let ama = self.get_i64("ama").unwrap_or(32).clamp(6, 32);
        let amt = self.get_i64("amt").unwrap_or(32);
        let cbl: Option<i64> = plugged.then_some(32);
        let tcl = self.get_i64("tcl");
        let mut limit = amp.min(ama).min(amt).min(cbl.unwrap_or(32));
        if let Some(t) = tcl {
            limit = limit.min(t);
        }
        let acu = allowed.then_some(limit);
        let three_phase = self.get_i64("psm").unwrap_or(0) != 1;
        let phases: usize = if three_phase { 3 } else { 1 };

        // Charging run bookkeeping: ramp-up, cdi and the lcc* timestamps.
        if charging {
            if self.run_started_rbt.is_none() {
                self.run_started_rbt = Some(self.rbt);
                self.run_ticks = 0;
            }
            self.run_ticks = self.run_ticks.saturating_add(1);
            self.charged_ticks = self.charged_ticks.saturating_add(1);
        } else if let Some(start) = self.run_started_rbt.take() {
            self.last_run_ms = self.rbt.saturating_sub(start);
            self.run_ticks = 0;
        }
        // Cars ramp the current up over a few seconds after the contactor closes.
        let ramp = (f64::from(self.run_ticks) / 3.0).min(1.0);

        // Grid: a mean-reverting random walk around 231 V per phase.
        for v in &mut self.grid_v {
            *v += rng.random_range(-0.4..0.4) + (231.5 - *v) * 0.05;
            *v = v.clamp(222.0, 240.0);
        }
        let mut u = [0.0; 3];
        let mut i = [0.0; 3];
        let mut p = [0.0; 3];
        let mut pf = [0.0; 3];
        for ph in 0..3 {
            if charging && ph < phases {
                // Cars draw slightly below the allowed current (15.3 A at 16 A in the trace).
                i[ph] = (limit as f64 * rng.random_range(0.952..0.968) * ramp).max(0.0);
                pf[ph] = if rng.random_bool(0.3) { 100.0 } else { rng.random_range(98.8..100.0) };
            }
            // Line impedance: the voltage sags a little under load.
            u[ph] = self.grid_v[ph] - 0.28 * i[ph];
            p[ph] = u[ph] * i[ph] * pf[ph] / 100.0;
        }
        let total: f64 = p.iter().sum();
        let nrg = if charging {
            let pf_val = |x: f64| number(f32_noise(x, 7));
            serde_json::json!([
                number(round_to(u[0], 2)),
                number(round_to(u[1], 2)),
                number(round_to(u[2], 2)),
                number(round_to(rng.random_range(2.4..2.9), 2)),
                number(round_to(i[0], 3)),
                number(round_to(i[1], 3)),
                number(round_to(i[2], 3)),
                number(round_to(p[0], 3)),
                number(round_to(p[1], 3)),
                number(round_to(p[2], 3)),
                0,
                number(round_to(total, 2)),
                pf_val(pf[0]),
                pf_val(pf[1]),
                pf_val(pf[2]),
                100
            ])
        } else {
            // Idle chargers report whole volts and zeros (56.9 and 60.5 captures).
            serde_json::json!([
                number(u[0].round()),
                number(u[1].round()),
                number(u[2].round()),
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0
            ])
        };

        let energy = total * dt / 3600.0;
        self.wh += energy;
        self.eto_wh += energy;

        // Temperatures follow the load slowly; the sensors resolve 1/8 °C.
        let heat = total / 1000.0 * 0.9;
        let k = (dt / 120.0).min(1.0);
        let targets = [22.875 + heat, 27.625 + heat * 1.3];
        for (t, target) in self.tma.iter_mut().zip(targets) {
            *t += (target - *t) * k + rng.random_range(-0.06..0.06);
        }
        let tma: Vec<Value> = self.tma.iter().map(|t| number((t * 8.0).round() / 8.0)).collect();

        self.fhz = (self.fhz + rng.random_range(-0.06..0.06) + (50.0 - self.fhz) * 0.2).clamp(49.8, 50.2);
        self.avg_fhz += (self.fhz - self.avg_fhz) * 0.1;
        self.tpa += (total - self.tpa) * (dt / 30.0).min(1.0);
        let rssi = self.get_i64("rssi").unwrap_or(-65);
        let rssi = if rng.random_bool(0.3) { (rssi + rng.random_range(-1..=1)).clamp(-80, -50) } else { rssi };

        let model_status = self.model_status();
        let cdi = match self.run_started_rbt {
            Some(start) => serde_json::json!({"type": 0, "value": self.rbt.saturating_sub(start)}),
            None => serde_json::json!({"type": 1, "value": self.last_run_ms}),
        };
        let ust = self.get_i64("ust").unwrap_or(1);
        let cus = match self.phase {
            SessionPhase::Idle => 1,
            // AutoUnlock (ust=1) releases the cable once charging has finished.
            SessionPhase::Complete if ust == 1 => 1,
            _ => 3,
        };
        let mut pha = [false, false, false, true, true, true];
        for (ph, out) in pha.iter_mut().take(3).enumerate() {
            *out = charging && ph < phases;
        }

        if car != self.prev_car {
            match (self.prev_car, car) {
                (1, _) => self.put("lccfi", Value::from(self.rbt), changed),
                (2, _) => self.put("lccfc", Value::from(self.rbt), changed),
                _ => {}
            }
            if car == 2 {
                self.put("lcctc", Value::from(self.rbt), changed);
            }
            self.prev_car = car;
        }
        if model_status != self.prev_model_status {
            self.put("lmsc", Value::from(self.rbt), changed);
            self.prev_model_status = model_status;
        }
        if let Some(at) = self.ids_at
            && self.rbt.saturating_sub(at) > 10_000
        {
            // PV-surplus input goes stale when not refreshed (go-e.md §3.3).
            self.ids_at = None;
            for k in ["pgrid", "ppv", "pakku"] {
                self.put(k, Value::Null, changed);
            }
        }

        self.put("car", Value::from(car), changed);
        self.put("alw", Value::Bool(allowed), changed);
        self.put("acu", acu.map_or(Value::Null, Value::from), changed);
        self.put("modelStatus", Value::from(model_status), changed);
        self.put("nrg", nrg, changed);
        self.put("eto", Value::from(self.eto_wh.floor() as u64), changed);
        self.put("wh", number(round_to(self.wh, 2)), changed);
        self.put("tma", Value::Array(tma), changed);
        self.put("fhz", number(f32_noise(self.fhz, 10)), changed);
        self.put("avgfhz", number(f32_noise(self.avg_fhz, 10)), changed);
        self.put("tpa", number(f32_noise(round_to(self.tpa, 3), 7)), changed);
        self.put("rssi", Value::from(rssi), changed);
        self.put("cbl", cbl.map_or(Value::Null, Value::from), changed);
        self.put("cus", Value::from(cus), changed);
        self.put("pha", serde_json::json!(pha), changed);
        self.put("pnp", Value::from(if charging { phases } else { 0 }), changed);
        self.put("fsp", Value::Bool(!three_phase), changed);
        self.put("cdi", cdi, changed);
        let cll = serde_json::json!({
            "adapterCurrentLimit": if self.get_bool("adi").unwrap_or(false) { 16 } else { 32 },
            "awattar": 32,
            "currentLimitMax": ama,
            "loadLimit": 32,
            "requestedCurrent": amp,
            "temperatureCurrentLimit": amt,
            "unsymetryCurrentLimit": 32
        });
        self.put("cll", cll, changed);
    }
}

/// Runs the simulated charger until `cancel` fires: the logic tick, the MQTT side (when
/// `opts.broker` is set) and the HTTP API (when `opts.http` is set).
pub async fn run(opts: GoeSimOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let prefix = opts.effective_prefix();
    if !prefix.ends_with('/') {
        // Real chargers then subscribe to a malformed filter and get dropped (go-e.md §1.2).
        tracing::warn!(prefix, "go-e topic prefix should end with '/'");
    }
    let state = Arc::new(Mutex::new(ChargerState::from_options(&opts)));
    let tracker = TaskTracker::new();
    // The MQTT tasks get their own token: they must outlive `cancel` long enough to flush.
    let mqtt_cancel = CancellationToken::new();
    let mqtt = match &opts.broker {
        Some(settings) => {
            Some(crate::mqtt::spawn(settings, crate::metrics::Metrics::detached(), &tracker, mqtt_cancel.clone())?)
        }
        None => None,
    };
    if let Some(listener) = opts.http {
        let addr = listener.local_addr().ok();
        let app = http_router(HttpCtx { state: state.clone(), strict_filter: opts.http_400_on_unknown_filter });
        let shutdown = cancel.clone().cancelled_owned();
        tracing::info!(serial = %opts.serial, addr = %addr.map(|a| a.to_string()).unwrap_or_default(),
            "simulated go-e HTTP API v2 listening");
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "simulated go-e HTTP server failed");
            }
        });
    }
    tracing::info!(serial = %opts.serial, prefix = %prefix, mqtt = mqtt.is_some(), "simulated go-e charger started");

    let mut io = MqttSide::new(mqtt.clone(), prefix, state.clone());
    // Subscribed before the first ConnAck, so the client sends the filter with the connect.
    let (mut watch, mut writes) = match &mqtt {
        Some(m) => (Some(m.watch()), Some(m.subscribe(&format!("{}+/set", io.prefix), 256).await)),
        None => (None, None),
    };
    let mut interval = tokio::time::interval(opts.tick.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    if let Some(w) = &mut watch {
        io.on_connection_change(w);
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => {
                let rebooted = {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = s.tick(&mut rng);
                    if changed.contains(&"car") {
                        tracing::debug!(car = %s.get("car").map(|v| v.to_string()).unwrap_or_default(), "simulated car state changed");
                    }
                    s.take_rebooted()
                };
                if rebooted {
                    io.publish_burst();
                } else {
                    io.publish_changes();
                }
            }
            alive = connection_changed(&mut watch) => match (&mut watch, alive) {
                (Some(w), true) => io.on_connection_change(w),
                _ => watch = None,
            },
            msg = next_write(&mut writes) => match msg {
                Some(m) => io.handle_write(&m),
                None => writes = None,
            }
        }
    }

    if let Some(m) = &mqtt {
        m.flush_and_disconnect(Duration::from_secs(1)).await;
    }
    mqtt_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("simulated go-e tasks did not stop within 5 s");
    }
    tracing::info!(serial = %opts.serial, "simulated go-e charger stopped");
    Ok(())
}

/// Resolves with `true` on a connection change, `false` once the client is gone (never without MQTT).
async fn connection_changed(watch: &mut Option<tokio::sync::watch::Receiver<crate::mqtt::ConnectionState>>) -> bool {
    match watch {
        Some(w) => w.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The next `<prefix>+/set` message (never without MQTT).
async fn next_write(
    writes: &mut Option<tokio::sync::mpsc::Receiver<crate::mqtt::Message>>,
) -> Option<crate::mqtt::Message> {
    match writes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The MQTT half of the simulator: burst on every new connection, changes per tick, `/set`.
struct MqttSide {
    /// The broker connection; None runs the simulator HTTP-only.
    mqtt: Option<MqttHandle>,
    /// Full topic prefix incl. trailing slash.
    prefix: String,
    /// The device, shared with the HTTP handlers.
    state: Arc<Mutex<ChargerState>>,
    /// What the broker last got per key, so each tick publishes only what changed since.
    published: HashMap<String, Value>,
    /// Connection generation the last burst went to; a new one means a (re)connect.
    generation: u64,
    /// Whether publishing makes sense now (otherwise the next burst catches up).
    connected: bool,
}

impl MqttSide {
    fn new(mqtt: Option<MqttHandle>, prefix: String, state: Arc<Mutex<ChargerState>>) -> MqttSide {
        MqttSide { mqtt, prefix, state, published: HashMap::new(), generation: 0, connected: false }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChargerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_connection_change(&mut self, w: &mut tokio::sync::watch::Receiver<crate::mqtt::ConnectionState>) {
        let now = *w.borrow_and_update();
        self.connected = now.connected;
        self.lock().set_mqtt_connected(now.connected);
        if now.connected && now.generation != self.generation {
            self.generation = now.generation;
            tracing::debug!(generation = now.generation, "simulated go-e connected; publishing the full burst");
            self.publish_burst();
        }
    }

    fn publish_burst(&mut self) {
        let Some(m) = &self.mqtt else { return };
        if !self.connected {
            return;
        }
        let snapshot = self.lock().mqtt_snapshot();
        self.published.clear();
        for (key, value) in snapshot {
            publish_value(m, &self.prefix, &key, &value);
            self.published.insert(key, value);
        }
    }

    fn publish_changes(&mut self) {
        let Some(m) = &self.mqtt else { return };
        if !self.connected {
            return; // the burst after the next ConnAck brings the broker up to date
        }
        let snapshot = self.lock().mqtt_snapshot();
        for (key, value) in snapshot {
            if self.published.get(&key) != Some(&value) {
                publish_value(m, &self.prefix, &key, &value);
                self.published.insert(key, value);
            }
        }
    }

    fn handle_write(&mut self, msg: &crate::mqtt::Message) {
        let Some(m) = self.mqtt.clone() else { return };
        let Some(key) = msg.topic.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_suffix("/set")) else {
            return;
        };
        if key.is_empty() || key.contains('/') {
            return;
        }
        let payload = String::from_utf8_lossy(&msg.payload);
        let (result, value) = {
            let mut s = self.lock();
            if s.mqtt_read_only() {
                tracing::debug!(key, "simulated go-e is MQTT read-only (mcr); write ignored");
                return;
            }
            let result = s.set(key, &payload);
            (result, s.get(key).cloned())
        };
        let text = match &result {
            Ok(()) => "success".to_owned(),
            Err(e) => e.clone(),
        };
        tracing::debug!(key, payload = %payload, result = %text, "simulated go-e MQTT write");
        m.publish(format!("{}{key}/result", self.prefix), text.into_bytes(), QoS::AtMostOnce, false);
        if result.is_ok()
            && ChargerState::is_mqtt_key(key)
            && let Some(v) = value
        {
            publish_value(&m, &self.prefix, key, &v);
            self.published.insert(key.to_owned(), v);
        }
    }
}

fn publish_value(m: &MqttHandle, prefix: &str, key: &str, value: &Value) {
    let payload = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    m.publish(format!("{prefix}{key}"), payload, QoS::AtMostOnce, true);
}

/// What the HTTP handlers share.
#[derive(Clone)]
struct HttpCtx {
    /// The device, shared with the tick loop.
    state: Arc<Mutex<ChargerState>>,
    /// Answer 400 when a filter names a missing key (60.x CORE/PRO).
    strict_filter: bool,
}

fn http_router(ctx: HttpCtx) -> axum::Router {
    axum::Router::new()
        .route("/api/status", get(http_status))
        .route("/api/set", get(http_set))
        // The ESP-IDF web server's wording for unknown paths (go-e issue #287).
        .fallback(|| async { (StatusCode::NOT_FOUND, "Nothing matches the given URI") })
        .with_state(ctx)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json"), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], body.to_string())
        .into_response()
}

async fn http_status(State(ctx): State<HttpCtx>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let filter = query.iter().find(|(k, _)| k == "filter").map(|(_, v)| parse_filter(v));
    let refs: Option<Vec<&str>> = filter.as_ref().map(|f| f.iter().map(String::as_str).collect());
    let (body, missing) = ctx.state.lock().unwrap_or_else(|e| e.into_inner()).status(refs.as_deref());
    let status = if ctx.strict_filter && !missing.is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    json_response(status, Value::Object(body))
}

async fn http_set(State(ctx): State<HttpCtx>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let mut body = Map::new();
    let mut all_ok = true;
    {
        let mut s = ctx.state.lock().unwrap_or_else(|e| e.into_inner());
        for (key, payload) in &query {
            let entry = match s.set_http(key, payload) {
                Ok(()) => Value::Bool(true),
                Err(text) => {
                    all_ok = false;
                    Value::String(text)
                }
            };
            body.insert(key.clone(), entry);
        }
    }
    let status = if all_ok { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    json_response(status, Value::Object(body))
}

/// Normalised keys the bridge's adapter reads (go-e.md §3); the simulator must have every one.
#[cfg(test)]
const NORMALISED_KEYS: &[&str] = &[
    "car",
    "alw",
    "acu",
    "amp",
    "frc",
    "psm",
    "tma",
    "err",
    "modelStatus",
    "rbt",
    "rbc",
    "rssi",
    "nrg",
    "eto",
    "wh",
    "utc",
    "loc",
    "fhz",
    "sse",
    "fna",
    "typ",
    "fwv",
    "var",
    "oem",
    "mcr",
];

#[cfg(test)]
mod tests;

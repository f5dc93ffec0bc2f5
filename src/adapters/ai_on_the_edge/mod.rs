//! AI-on-the-edge-device adapter (camera meters): reads what the camera publishes below its
//! MainTopic in either MQTT dialect — the upstream flat layout (jomjol firmware v8–v16) or the
//! topic clusters of the Slider0007 fork — plus its retained Home Assistant discovery config, and
//! turns each number sequence's round into `volume` / `energy_import`, `flow_rate` / `power`,
//! `reading_raw` and `reading_error`, with `reading_rejected` events for failed readings.
//!
//! Rounds: the firmware publishes a sequence's single topics (`value`, `error`, `raw`, ...) and then
//! its `json`. A round is routed exactly once: when its `json` arrives (merged with the single topics
//! that came before; they fill in what a malformed `json` lost), or, for a device that sends no
//! `json`, when the round ends (the same field again, the next device-status topic, or two quiet
//! seconds). So the counter guard sees one reading per round, and an event is emitted once.
//!
//! Availability: `connection` (`connected` / `connection lost`, fork `online` / `offline`) sets the
//! link; a retained `connection lost` may be a stale last will (the firmware's `connected` is not
//! retained by default), so any live message from the camera brings the link back up. Freshness is
//! 3 × the round interval (config `interval`, else 5 min, stretched when the camera announces a
//! longer one).
//!
//! Commands (`<prefix>/<device>/<name>/set`, through the router's shared checks): `read_now` publishes
//! `ctrl/flow_start` (fork clusters: `process/ctrl/cycle_start`) and is answered when the camera's
//! next round arrives, with that round's reading; `previous_value` (a number in the canonical unit
//! of the device's total, m³ or kWh) publishes `ctrl/set_prevalue` `{"numbersname": <sequence>,
//! "value": <in the meter's unit>}` (clusters: `process/ctrl/set_fallbackvalue` `{"sequence": ...}`)
//! and is answered by the next round: refused when that round reads less than the value set (the
//! camera did not take it). The firmware never acknowledges either, so silence ends in a timeout
//! (`command_timeout`); while the camera is offline they are refused at once (it keeps nothing
//! for a client that is away). Never published retained: a retained `flow_start` would start a
//! round, and a retained `set_prevalue` reset the meter, at every reconnect of the camera.
//!
//! Several number sequences: `sequences:` maps each to a device id — this device's own, or a device
//! configured with `sequence_of: <this device>` (the router is built from the config, so every
//! device that gets values must be listed there). Without `sequences:` the first sequence seen
//! (normally `main`) belongs to this device and any other is counted and reported.

crate::adapters::adapter!(
    /// The AiOnTheEdge adapter in the registry ([`crate::adapters::Adapter`]).
    AiOnTheEdge,
    config = AiOnTheEdgeConfig,
    kind = AiOnTheEdge,
    quantities = &["flow_rate", "reading_error", "reading_raw", "rssi", "temperature", "uptime", "volume"],
    commands = COMMANDS,
);

#[cfg(test)]
mod fuzz_tests;
pub(crate) mod mapping;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapters::log_once::LogOnce;
use crate::config::Dur;
use crate::model::{Event, Identity, Update, Value};
use crate::mqtt::{Message, QoS};
use crate::router::{Command, DeviceHandle, Link};
use crate::untrusted::clip;

pub(crate) use mapping::Dialect;
use mapping::{Classified, DeviceRole, FieldRole, Meter, Outcome, Record, Stamp};

/// The commands a camera takes on `<name>/set`.
pub(crate) const COMMANDS: &[&str] = &["read_now", "previous_value"];
/// How long `read_now` waits for the round it starts (a real round takes under a minute).
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The firmware's default round interval.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// A round of a device that sends no `json` ends after this much silence.
const ROUND_IDLE: Duration = Duration::from_secs(2);
/// Most number sequences one camera may have before further names are treated as garbage.
const MAX_SEQUENCES: usize = 16;
/// Manufacturer as the firmware's own discovery config names it.
const VENDOR: &str = "AI on the Edge Device";

/// What the camera reads (`meter:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MeterKind {
    /// Water meter → `volume` (m³), `flow_rate` (m³/h).
    Water,
    /// Gas meter → `volume` (m³), `flow_rate` (m³/h).
    Gas,
    /// Electricity meter → `energy_import` (kWh), `power` (W).
    Energy,
}

impl MeterKind {
    /// The meters.tsv spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MeterKind::Water => "water",
            MeterKind::Gas => "gas",
            MeterKind::Energy => "energy",
        }
    }
}

/// Where one number sequence goes (`sequences:` value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "a device id, or a mapping {device: <id>, meter: water|gas|energy, unit: ...}")]
pub(crate) enum SequenceTarget {
    /// Short form: the device id.
    Device(String),
    /// Long form, for a sequence that reads another kind of meter than the device's `meter:`.
    Detailed(SequenceTargetDetail),
}

/// Long form of a `sequences:` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SequenceTargetDetail {
    /// The device id that gets this sequence's values.
    pub device: String,
    /// What this sequence reads (default: the device's `meter:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter: Option<MeterKind>,
    /// The unit its digits count in (default: the meter's first unit, m3 or kwh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl SequenceTarget {
    /// The target device id.
    pub(crate) fn device(&self) -> &str {
        match self {
            SequenceTarget::Device(d) => d,
            SequenceTarget::Detailed(d) => &d.device,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_discovery_prefix() -> String {
    "homeassistant".into()
}
fn is_default_prefix(p: &str) -> bool {
    p == "homeassistant"
}
fn is_auto(d: &Dialect) -> bool {
    *d == Dialect::Auto
}
fn is_true(b: &bool) -> bool {
    *b
}

/// `adapter: ai_on_the_edge` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiOnTheEdgeConfig {
    /// The camera's MainTopic (`[MQTT] MainTopic`, e.g. `watermeter`; may contain `/`). Every
    /// device publishes below it. Required unless `sequence_of` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_topic: Option<String>,
    /// Instead of `main_topic`: this device takes one number sequence of the camera device named
    /// here, whose `sequences:` maps that sequence to this device's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_of: Option<String>,
    /// `auto` (default) detects the MQTT layout from the topics seen and shows it in `/readyz`;
    /// `upstream` = jomjol firmware v8–v16 (flat topics); `clusters` = the Slider0007 fork's topic
    /// clusters (`device/...`, `process/...`). Topics of the other layout are then counted as unknown.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub(crate) dialect: Dialect,
    /// What the camera reads: `water` or `gas` (→ `volume` in m³, `flow_rate` in m³/h) or `energy`
    /// (→ `energy_import` in kWh, `power` in W). Unset: from the camera's retained Home Assistant
    /// discovery config, else water (with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) meter: Option<MeterKind>,
    /// The unit the meter's digits count in (the firmware's MeterType): `m3` (default), `l`, `ft3`,
    /// `gal` for water; `m3`, `ft3` for gas; `kwh` (default), `wh`, `mwh`, `gj` for energy. Values
    /// are converted to the canonical unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The camera's round interval (`Interval` in its web UI, 5m by default). Freshness is 3 × this
    /// unless `freshness:` is set; when unset, a longer interval the camera announces stretches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    /// Number sequence → device id, e.g. `{main: water_main, garden: water_garden}` or the long
    /// form `{garden: {device: water_garden, meter: water, unit: l}}`. This device's own id maps
    /// the sequence to its own quantities; any other id must be a device with `adapter:
    /// ai_on_the_edge` and `sequence_of: <this device>`. Unset: the first sequence seen (normally
    /// `main`) is this device's, others are counted as unknown and reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) sequences: BTreeMap<String, SequenceTarget>,
    /// Read the camera's retained Home Assistant discovery config (meter type, unit, firmware).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub discovery: bool,
    /// The discovery prefix the camera publishes under (upstream firmware: always `homeassistant`).
    #[serde(default = "default_discovery_prefix", skip_serializing_if = "is_default_prefix")]
    pub discovery_prefix: String,
    /// How long `read_now` waits for the round it starts before answering with a timeout (default
    /// 2m); `previous_value` waits this plus `interval` (it is confirmed by the next regular round).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<Dur>,
}

/// Errors in the `ai_on_the_edge` keys of a device, each naming the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// Neither `main_topic` nor `sequence_of`.
    #[error(
        "{path}.main_topic: required: the camera's MainTopic (e.g. `watermeter`), or `sequence_of: <camera device>`"
    )]
    NoSource {
        /// `devices.<id>`.
        path: String,
    },
    /// A key that only the camera device may have.
    #[error(
        "{path}.{key}: set it on the camera device `{parent}` (its `sequences:` entry), not on a `sequence_of` device"
    )]
    NotOnSequenceDevice {
        /// `devices.<id>`.
        path: String,
        /// The key.
        key: &'static str,
        /// The camera device.
        parent: String,
    },
    /// A topic or prefix that cannot be subscribed.
    #[error("{path}: `{value}` {reason}")]
    BadTopic {
        /// Full key path.
        path: String,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A unit that does not fit the meter.
    #[error("{path}: `{unit}` is not a unit of a {meter} meter (one of {units})")]
    BadUnit {
        /// Full key path.
        path: String,
        /// The unit given.
        unit: String,
        /// The meter.
        meter: &'static str,
        /// Allowed units.
        units: String,
    },
    /// Anything else, with its key path.
    #[error("{path}: {message}")]
    Other {
        /// Full key path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn into_pair(self) -> (String, String) {
        let text = self.to_string();
        match text.split_once(": ") {
            Some((p, m)) => (p.to_owned(), m.to_owned()),
            None => (String::new(), text),
        }
    }
}

fn valid_device_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn topic_problem(t: &str) -> Option<&'static str> {
    if t.is_empty() {
        Some("must not be empty")
    } else if t.contains(['+', '#', '\0']) {
        Some("must not contain MQTT wildcards")
    } else if t.starts_with('/') || t.ends_with('/') || t.contains("//") {
        Some("must not start or end with `/` (or contain `//`)")
    } else {
        None
    }
}

fn check_unit(path: &str, meter: Option<MeterKind>, unit: Option<&str>, errs: &mut Vec<ConfigError>) {
    let Some(unit) = unit else { return };
    let Some(kind) = meter else {
        errs.push(ConfigError::Other {
            path: format!("{path}.unit"),
            message: "set `meter:` too (water, gas or energy)".into(),
        });
        return;
    };
    if mapping::meter(kind.as_str(), Some(unit)).is_none() {
        errs.push(ConfigError::BadUnit {
            path: format!("{path}.unit"),
            unit: unit.to_owned(),
            meter: kind.as_str(),
            units: mapping::units_of(kind.as_str()).join(", "),
        });
    }
}

/// Checks the `ai_on_the_edge` keys of device `path` (`devices.<id>`); returns (key path, message)
/// pairs.
pub(crate) fn validate(cfg: &AiOnTheEdgeConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    match (&cfg.main_topic, &cfg.sequence_of) {
        (None, None) => errs.push(ConfigError::NoSource { path: path.to_owned() }),
        (Some(_), Some(_)) => errs.push(ConfigError::Other {
            path: format!("{path}.sequence_of"),
            message: "set either `main_topic` (a camera) or `sequence_of` (one sequence of a camera device), not both"
                .into(),
        }),
        (Some(t), None) => {
            if let Some(reason) = topic_problem(t) {
                errs.push(ConfigError::BadTopic { path: format!("{path}.main_topic"), value: t.clone(), reason });
            }
        }
        (None, Some(parent)) => {
            if !valid_device_id(parent) {
                errs.push(ConfigError::Other {
                    path: format!("{path}.sequence_of"),
                    message: format!("`{parent}` is not a device id"),
                });
            }
            let camera_keys: [(&'static str, bool); 6] = [
                ("sequences", !cfg.sequences.is_empty()),
                ("meter", cfg.meter.is_some()),
                ("unit", cfg.unit.is_some()),
                ("dialect", cfg.dialect != Dialect::Auto),
                ("discovery", !cfg.discovery),
                ("discovery_prefix", !is_default_prefix(&cfg.discovery_prefix)),
            ];
            for (key, set) in camera_keys {
                if set {
                    errs.push(ConfigError::NotOnSequenceDevice { path: path.to_owned(), key, parent: parent.clone() });
                }
            }
        }
    }
    if cfg.sequence_of.is_none() {
        check_unit(path, cfg.meter, cfg.unit.as_deref(), &mut errs);
    }
    if let Some(i) = cfg.interval
        && (i.0 < Duration::from_millis(100) || i.0 > Duration::from_secs(86_400))
    {
        errs.push(ConfigError::Other {
            path: format!("{path}.interval"),
            message: "must be between 100ms and 24h (the camera's round interval, 5m by default)".into(),
        });
    }
    if let Some(t) = cfg.command_timeout
        && (t.0 < Duration::from_millis(100) || t.0 > Duration::from_secs(86_400))
    {
        errs.push(ConfigError::Other {
            path: format!("{path}.command_timeout"),
            message: "must be between 100ms and 24h (how long read_now waits for its round, 2m by default)".into(),
        });
    }
    if let Some(reason) = topic_problem(&cfg.discovery_prefix) {
        errs.push(ConfigError::BadTopic {
            path: format!("{path}.discovery_prefix"),
            value: cfg.discovery_prefix.clone(),
            reason,
        });
    }
    let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
    for (seq, target) in &cfg.sequences {
        let p = format!("{path}.sequences.{seq}");
        if seq.is_empty() || seq.contains(['/', '+', '#']) {
            errs.push(ConfigError::Other { path: p.clone(), message: "is not a number sequence name".into() });
        }
        let id = target.device();
        if !valid_device_id(id) {
            errs.push(ConfigError::Other {
                path: p.clone(),
                message: format!("`{id}` is not a device id (1-64 of a-z, 0-9, `_`, `-`)"),
            });
        }
        if let Some(other) = targets.insert(id, seq) {
            errs.push(ConfigError::Other {
                path: p.clone(),
                message: format!("sequences `{other}` and `{seq}` both go to device `{id}`; each device takes one"),
            });
        }
        if let SequenceTarget::Detailed(d) = target {
            check_unit(&p, d.meter.or(cfg.meter), d.unit.as_deref(), &mut errs);
        }
    }
    errs.into_iter().map(ConfigError::into_pair).collect()
}

/// Expected time between readings: the camera's round interval.
pub(crate) fn cadence(cfg: &AiOnTheEdgeConfig) -> Duration {
    cfg.interval.map(|d| d.0).unwrap_or(DEFAULT_INTERVAL)
}

/// A device that receives values: this device or a `sequence_of` device.
struct Target {
    handle: DeviceHandle,
    /// Long-form meter of its `sequences:` entry.
    meter: Option<&'static Meter>,
    /// The meter shown in its `/readyz` details, to update them only on change.
    meter_detail: String,
}

/// One number sequence and the round being assembled.
#[derive(Default)]
struct Sequence {
    /// Upstream sequence name or fork sequence id (the topic level).
    key: String,
    /// Name from the fork's json (`sequence_name`).
    name: Option<String>,
    /// A fork sequence (keyed by id; the name comes with its json).
    cluster: bool,
    /// Single topics of the current round.
    pending: Record,
    /// A round is being assembled.
    open: bool,
    /// It is made of retained messages.
    retained: bool,
    /// Its `json` was routed already (later single topics of the same round are absorbed).
    has_json: bool,
    /// Where it goes, once resolved: `Some(Some(i))` target i, `Some(None)` nowhere.
    target: Option<Option<usize>>,
}

/// Per-message handling, public so that recorded captures can be replayed through exactly the code
/// a live camera goes through (golden tests, benchmark).
pub struct Ingest {
    /// The camera's MainTopic, without a trailing `/`.
    main_topic: String,
    /// `<discovery_prefix>/` when discovery is read.
    discovery_prefix: Option<String>,
    /// The configured layout (`auto` accepts both).
    dialect: Dialect,
    /// `interval:` is set: the camera's own announcement does not change freshness.
    interval_configured: bool,
    /// The camera device (counters, details, connection state).
    device: DeviceHandle,
    /// Index 0 is this device.
    targets: Vec<Target>,
    /// Configured `sequences:` (name → target index, `None` when the target is not configured).
    configured: Vec<(String, Option<usize>)>,
    /// Without `sequences:`: the sequence this device took.
    claimed: Option<String>,
    /// Number sequences seen, with their rounds in progress.
    sequences: Vec<Sequence>,
    /// `meter:` + `unit:` of the config.
    meter_config: Option<&'static Meter>,
    /// The meter the camera's discovery config announces.
    meter_discovered: Option<&'static Meter>,
    /// Layouts seen, for the `dialect` detail in auto mode.
    seen_upstream: bool,
    /// See `seen_upstream`.
    seen_clusters: bool,
    /// The link is down because of a last will; a live message from the camera lifts it.
    will_down: bool,
    /// The `fwVersion` topic was seen: it beats the shorter `sw_version` of discovery.
    firmware_from_topic: bool,
    /// Problems already logged (each once).
    logged: LogOnce,
    /// Fixed wall clock for replays; `None` = real time.
    clock: Option<OffsetDateTime>,
    /// Commands waiting for the camera's next round (at most one per name and device).
    pending: Vec<PendingCommand>,
}

/// A command sent to the camera, waiting for the round that confirms it.
struct PendingCommand {
    /// The command (name, `id`) to answer.
    cmd: Command,
    /// The device (target index) it was sent for.
    target: usize,
    /// What confirms it.
    kind: PendingKind,
    /// When it is answered with a timeout.
    deadline: Instant,
}

/// What a pending command waits for.
#[derive(Debug, Clone, Copy)]
enum PendingKind {
    /// Any next round of the target's sequence.
    ReadNow,
    /// A next round that does not read less than this (canonical unit).
    PreviousValue(f64),
}

impl Ingest {
    /// A fresh ingest state for camera device `device` with config `cfg` (`main_topic` set).
    pub fn new(cfg: &AiOnTheEdgeConfig, device: DeviceHandle) -> Ingest {
        let main_topic = cfg.main_topic.clone().unwrap_or_default();
        let meter_config = cfg.meter.and_then(|m| mapping::meter(m.as_str(), cfg.unit.as_deref()));
        let mut ingest = Ingest {
            main_topic,
            discovery_prefix: cfg.discovery.then(|| format!("{}/", cfg.discovery_prefix)),
            dialect: cfg.dialect,
            interval_configured: cfg.interval.is_some(),
            targets: vec![Target { handle: device.clone(), meter: None, meter_detail: String::new() }],
            device,
            configured: Vec::new(),
            claimed: None,
            sequences: Vec::new(),
            meter_config,
            meter_discovered: None,
            seen_upstream: false,
            seen_clusters: false,
            will_down: false,
            firmware_from_topic: false,
            logged: LogOnce::default(),
            clock: None,
            pending: Vec::new(),
        };
        for (seq, target) in &cfg.sequences {
            let long_meter = match target {
                SequenceTarget::Detailed(d) => d
                    .meter
                    .or(cfg.meter)
                    .and_then(|m| mapping::meter(m.as_str(), d.unit.as_deref().or(cfg.unit.as_deref()))),
                SequenceTarget::Device(_) => None,
            };
            let idx = ingest.target_index(target.device(), seq, long_meter);
            ingest.configured.push((seq.clone(), idx));
        }
        ingest.device.set_detail("main_topic", ingest.main_topic.clone());
        ingest.device.set_detail(
            "dialect",
            match ingest.dialect {
                Dialect::Auto => "auto (nothing seen yet)".to_owned(),
                d => format!("{} (configured)", d.as_str()),
            },
        );
        if !ingest.configured.is_empty() {
            let list: Vec<String> = cfg.sequences.iter().map(|(s, t)| format!("{s} → {}", t.device())).collect();
            ingest.device.set_detail("sequences", list.join(", "));
        }
        let identity = Identity { vendor: Some(VENDOR.into()), ..Default::default() };
        for t in &ingest.targets {
            t.handle.apply(Update { identity: Some(identity.clone()), ..Default::default() });
        }
        ingest
    }

    fn target_index(&mut self, id: &str, seq: &str, meter: Option<&'static Meter>) -> Option<usize> {
        if id == self.device.id() {
            if meter.is_some() {
                self.targets[0].meter = meter;
            }
            return Some(0);
        }
        match self.device.sibling(id) {
            Some(handle) => {
                handle.set_detail("fed_by", format!("{} (number sequence `{seq}`)", self.device.id()));
                handle.apply(Update {
                    identity: Some(Identity { name: Some(seq.to_owned()), ..Default::default() }),
                    ..Default::default()
                });
                self.targets.push(Target { handle, meter, meter_detail: String::new() });
                Some(self.targets.len() - 1)
            }
            None => {
                let msg = format!(
                    "sequences.{seq}: device `{id}` is not configured; add `{id}: {{adapter: ai_on_the_edge, sequence_of: {}}}` under devices",
                    self.device.id()
                );
                tracing::error!(device = %self.device.id(), "{msg}");
                self.device.set_detail("config_error", msg);
                None
            }
        }
    }

    /// Uses `now` as the wall clock (replays; live use keeps the real clock).
    pub fn set_clock(&mut self, now: OffsetDateTime) {
        self.clock = Some(now);
    }

    fn now(&self) -> OffsetDateTime {
        self.clock.unwrap_or_else(OffsetDateTime::now_utc)
    }

    /// The subscriptions: the discovery configs first (so the meter type is known before the
    /// retained values arrive), then everything below the MainTopic.
    pub fn filters(&self) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(dp) = &self.discovery_prefix {
            let node = self.main_topic.rsplit('/').next().unwrap_or(&self.main_topic);
            f.push(format!("{dp}+/{node}/+/config"));
            if node != self.main_topic {
                // Before v16.0.0 the node id was the whole MainTopic.
                f.push(format!("{dp}+/{}/+/config", self.main_topic));
            }
        }
        f.push(format!("{}/#", self.main_topic));
        f
    }

    /// Handles one MQTT message from the camera (or its discovery config), as the live loop does.
    pub fn message(&mut self, msg: &Message) {
        self.device.counters().received.inc();
        let live = !msg.retain;
        if let Some(dp) = &self.discovery_prefix
            && msg.topic.starts_with(dp.as_str())
        {
            self.on_discovery(msg);
            return;
        }
        let Some(rest) = msg.topic.strip_prefix(self.main_topic.as_str()).and_then(|r| r.strip_prefix('/')) else {
            self.unknown(&msg.topic);
            return;
        };
        let Ok(text) = std::str::from_utf8(&msg.payload) else {
            self.device.counters().parse_error("not_utf8");
            if self.logged.first(&format!("utf8 {rest}")) {
                tracing::warn!(device = %self.device.id(), topic = %clip(&msg.topic), "camera payload is not UTF-8; skipped");
            }
            return;
        };
        match mapping::classify(rest) {
            Classified::Device(dialect, role) => {
                if !self.dialect_ok(dialect, &msg.topic) {
                    return;
                }
                if live {
                    // The next device-status topic ends the rounds of devices that send no json.
                    self.close_rounds();
                    if role != DeviceRole::Connection {
                        self.alive();
                    }
                }
                self.on_device(role, text, live);
            }
            Classified::Sequence { dialect, key, role } => {
                if !self.dialect_ok(dialect, &msg.topic) {
                    return;
                }
                if live {
                    self.alive();
                }
                self.on_field(dialect == Dialect::Clusters, key, role, text, live);
            }
            // Commands to the camera (ours, Home Assistant's) and GPIO are not readings.
            Classified::Control | Classified::Gpio => {}
            Classified::Unknown => self.unknown(&msg.topic),
        }
    }

    /// Ends every round still being assembled (end of a replay, or quiet after a round).
    pub(crate) fn close_rounds(&mut self) {
        for i in 0..self.sequences.len() {
            self.close_round(i);
        }
    }

    /// Whether a round without `json` waits to be routed.
    pub(crate) fn has_open_rounds(&self) -> bool {
        self.sequences.iter().any(|s| s.open && !s.has_json && !s.pending.is_empty())
    }

    /// Publishes the state JSON of every device this camera feeds.
    pub(crate) fn flush(&self) {
        for t in &self.targets {
            t.handle.flush();
        }
    }

    /// Ends the replay: routes open rounds, then flushes.
    pub fn finish(&mut self) {
        self.close_rounds();
        self.flush();
    }

    fn unknown(&mut self, topic: &str) {
        self.device.counters().unknown_keys.inc();
        if self.logged.first(&format!("unknown {topic}")) {
            tracing::info!(device = %self.device.id(), topic = %clip(topic), main_topic = %self.main_topic,
                "topic not known for AI-on-the-edge (newer firmware, or a wrong `main_topic`?); counted and ignored");
        }
    }

    fn dialect_ok(&mut self, dialect: Dialect, topic: &str) -> bool {
        if self.dialect != Dialect::Auto && dialect != self.dialect {
            self.device.counters().unknown_keys.inc();
            if self.logged.first(&format!("dialect {}", dialect.as_str())) {
                let msg = format!(
                    "`dialect: {}` is set but the camera publishes {} topics (e.g. {}); set `dialect: {}` or `auto`",
                    self.dialect.as_str(),
                    dialect.as_str(),
                    clip(topic),
                    dialect.as_str()
                );
                tracing::warn!(device = %self.device.id(), "{msg}");
                self.device.set_detail("dialect_mismatch", msg);
            }
            return false;
        }
        let (up, cl) = (self.seen_upstream, self.seen_clusters);
        match dialect {
            Dialect::Upstream => self.seen_upstream = true,
            Dialect::Clusters => self.seen_clusters = true,
            Dialect::Auto => {}
        }
        if self.dialect == Dialect::Auto && (up, cl) != (self.seen_upstream, self.seen_clusters) {
            let text = match (self.seen_upstream, self.seen_clusters) {
                (true, false) => "upstream (detected)",
                (false, true) => "clusters (detected)",
                _ => "upstream and clusters both seen (retained topics of an earlier firmware?)",
            };
            tracing::info!(device = %self.device.id(), dialect = %text, "AI-on-the-edge MQTT layout");
            self.device.set_detail("dialect", text);
        }
        true
    }

    /// A live message from the camera: a last will seen before was stale (or the camera is back).
    fn alive(&mut self) {
        if std::mem::take(&mut self.will_down) {
            tracing::info!(device = %self.device.id(), "the camera publishes again; its `connection lost` no longer holds");
            for t in &self.targets {
                t.handle.set_link(Link::Up);
            }
            self.device.set_detail("connection", "publishing (after a last will)");
        }
    }

    fn apply_all(&self, update: &Update) {
        for t in &self.targets {
            t.handle.apply(Update {
                identity: update.identity.clone(),
                fresh: update.fresh,
                ts: update.ts,
                ..Default::default()
            });
        }
    }

    fn on_device(&mut self, role: DeviceRole, text: &str, live: bool) {
        let text = text.trim();
        let mut update = Update { fresh: live, ts: live.then(|| self.now()), ..Default::default() };
        match role {
            DeviceRole::Connection => {
                self.on_connection(text, live);
                return;
            }
            DeviceRole::Uptime | DeviceRole::Rssi | DeviceRole::Temperature => {
                match mapping::device_number(role, text) {
                    Ok(Some((q, n))) => update.push(q, Value::Number(n)),
                    Ok(None) => {}
                    Err(reason) => {
                        self.device.counters().parse_error(reason);
                        if self.logged.first(&format!("{reason} {role:?}")) {
                            tracing::warn!(device = %self.device.id(), field = ?role, value = %clip(text), reason,
                                "camera value not plausible; skipped");
                        }
                    }
                }
            }
            DeviceRole::RoundStatus => {
                self.device.set_detail("round_status", text.chars().take(64).collect::<String>());
            }
            DeviceRole::Firmware => {
                self.firmware_from_topic = true;
                let id = Identity { firmware: Some(text.to_owned()), ..Default::default() };
                self.apply_all(&Update { identity: Some(id), fresh: live, ..Default::default() });
                return;
            }
            DeviceRole::Mac => {
                let id = Identity { serial: Some(text.to_owned()), ..Default::default() };
                self.apply_all(&Update { identity: Some(id), fresh: live, ..Default::default() });
                return;
            }
            DeviceRole::Hostname => {
                update.identity = Some(Identity { name: Some(text.to_owned()), ..Default::default() });
            }
            DeviceRole::Ip => self.device.set_detail("ip", text.to_owned()),
            DeviceRole::IntervalMin => self.on_interval(text),
            DeviceRole::HardwareJson | DeviceRole::NetworkJson => self.on_info_json(role, text, &mut update),
            DeviceRole::Ignore => {}
        }
        if live || !update.is_empty() {
            self.device.apply(update);
        }
    }

    fn on_connection(&mut self, text: &str, live: bool) {
        match mapping::connection_state(text) {
            Some(true) => {
                self.will_down = false;
                for t in &self.targets {
                    t.handle.set_link(Link::Up);
                }
                self.device.set_detail("connection", text.to_owned());
                if live {
                    self.device.apply(Update { fresh: true, ts: Some(self.now()), ..Default::default() });
                }
            }
            Some(false) => {
                self.will_down = true;
                let reason = if live {
                    format!("the camera's last will: `{text}` (it dropped off the broker)")
                } else {
                    format!(
                        "retained last will `{text}` on the broker (may be stale: waiting for the camera's next round)"
                    )
                };
                self.device.set_detail("connection", reason.clone());
                for t in &self.targets {
                    t.handle.set_link(Link::Down(reason.clone()));
                }
            }
            None => {
                self.device.counters().parse_error("unknown_connection_state");
                if self.logged.first(&format!("connection {text}")) {
                    tracing::warn!(device = %self.device.id(), payload = %clip(text), "unknown `connection` payload; ignored");
                }
            }
        }
    }

    fn on_interval(&mut self, text: &str) {
        let Some(minutes) = mapping::parse_decimal(text) else {
            self.device.counters().parse_error("bad_number");
            if self.logged.first("interval bad_number") {
                tracing::warn!(device = %self.device.id(), payload = %clip(text), "camera interval is not a number; skipped");
            }
            return;
        };
        // One decimal of minutes: intervals under 3 s print as `0.0`, which says nothing.
        if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
            return;
        }
        let interval = Duration::from_secs_f64(minutes * 60.0);
        self.device.set_detail("interval", format!("{minutes} min (announced by the camera)"));
        if !self.interval_configured && interval > DEFAULT_INTERVAL {
            if self.logged.first(&format!("interval {text}")) {
                tracing::info!(device = %self.device.id(), minutes,
                    "the camera rounds less often than the default 5 min; freshness follows (set `interval:` to fix it)");
            }
            for t in &self.targets {
                t.handle.extend_freshness(interval * 3);
            }
        }
    }

    fn on_info_json(&mut self, role: DeviceRole, text: &str, update: &mut Update) {
        let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(text) else {
            self.device.counters().parse_error("invalid_json");
            return;
        };
        let s = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        let mut id = Identity::default();
        if role == DeviceRole::HardwareJson {
            let board = m.get("board");
            id.model =
                s(board.and_then(|b| b.get("board_type"))).or_else(|| s(board.and_then(|b| b.get("chip_model"))));
        } else {
            id.name = s(m.get("hostname"));
            id.serial = s(m.get("mac_address"));
            if let Some(ip) = s(m.get("ipv4_address")) {
                self.device.set_detail("ip", ip);
            }
        }
        if id != Identity::default() {
            update.identity = Some(id);
        }
    }

    fn on_discovery(&mut self, msg: &Message) {
        let d = match mapping::parse_discovery(&msg.payload, &self.main_topic) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(reason) => {
                self.device.counters().parse_error(reason);
                if self.logged.first(&format!("discovery {}", msg.topic)) {
                    tracing::warn!(device = %self.device.id(), topic = %clip(&msg.topic), "discovery config is not JSON; skipped");
                }
                return;
            }
        };
        let id = Identity {
            vendor: d.manufacturer.clone(),
            model: d.model.clone(),
            firmware: d.firmware.clone().filter(|_| !self.firmware_from_topic),
            ..Default::default()
        };
        if id != Identity::default() {
            self.apply_all(&Update { identity: Some(id), ..Default::default() });
        }
        if d.value_of.is_none() {
            return;
        }
        match mapping::meter_from_discovery(d.device_class.as_deref(), d.unit.as_deref()) {
            Some(m) => {
                if self.meter_discovered != Some(m) {
                    self.meter_discovered = Some(m);
                    if self.meter_config.is_none()
                        && self.logged.seen("assumed meter")
                        && m.quantity.name() != "volume"
                        && self.logged.first("assumed meter was wrong")
                    {
                        tracing::warn!(device = %self.device.id(), meter = %m.describe(),
                            "the camera's discovery config came after readings that were published as `volume`; set `meter:` so this cannot happen");
                    }
                    if let Some(c) = self.meter_config
                        && c != m
                        && self.logged.first("discovery disagrees")
                    {
                        tracing::warn!(device = %self.device.id(), config = %c.describe(), discovery = %m.describe(),
                            "the camera's discovery config names another meter type than `meter:`/`unit:`; using the config");
                    }
                }
            }
            None => {
                if self.logged.first("discovery meter") {
                    tracing::info!(device = %self.device.id(), device_class = %clip(d.device_class.as_deref().unwrap_or("")), unit = %clip(d.unit.as_deref().unwrap_or("")),
                        "the camera's MeterType is not a water, gas or energy meter the bridge converts; set `meter:`");
                }
            }
        }
    }

    fn sequence_index(&mut self, key: &str, cluster: bool) -> Option<usize> {
        if let Some(i) = self.sequences.iter().position(|s| s.key == key) {
            return Some(i);
        }
        if self.sequences.len() >= MAX_SEQUENCES {
            self.device.counters().unknown_keys.inc();
            return None;
        }
        self.sequences.push(Sequence { key: key.to_owned(), cluster, ..Default::default() });
        Some(self.sequences.len() - 1)
    }

    fn on_field(&mut self, cluster: bool, key: &str, role: FieldRole, text: &str, live: bool) {
        let Some(i) = self.sequence_index(key, cluster) else { return };
        match role {
            FieldRole::Ignore => {}
            FieldRole::Name => self.sequences[i].name = Some(text.trim().to_owned()),
            FieldRole::Json => self.on_json(i, text, live),
            _ => {
                let s = &self.sequences[i];
                if s.open && (s.retained == live || s.pending.has(role)) {
                    self.close_round(i);
                }
                let s = &mut self.sequences[i];
                s.open = true;
                s.retained = !live;
                s.pending.set(role, text);
            }
        }
    }

    fn on_json(&mut self, i: usize, text: &str, live: bool) {
        if text.trim().is_empty() {
            // A cleared retained topic, not a round.
            return;
        }
        let s = &self.sequences[i];
        if s.open && (s.retained == live || s.has_json) {
            self.close_round(i);
        }
        let pending = std::mem::take(&mut self.sequences[i].pending);
        let key = self.sequences[i].key.as_str();
        let mut record = match mapping::parse_json(text) {
            Some(j) => {
                if !j.well_formed {
                    self.device.counters().parse_error("malformed_json");
                    if self.logged.first(&format!("malformed {key}")) {
                        tracing::warn!(device = %self.device.id(), sequence = %key,
                            body = %clip(text),
                            "malformed json from the camera (known in v8.0, v10.0.0-1, v13.0.5 firmware); using the recoverable fields and the single topics");
                    }
                }
                for k in &j.unknown_keys {
                    self.device.counters().unknown_keys.inc();
                    if self.logged.first(&format!("json key {k}")) {
                        tracing::info!(device = %self.device.id(), sequence = %clip(key), key = %clip(k),
                            "unknown key in the camera's json (newer firmware?); counted and ignored");
                    }
                }
                let mut rec = j.record;
                // Single topics are exact; they beat what a scan recovered from a malformed body.
                rec.fill_from(&pending, !j.well_formed);
                rec
            }
            None => {
                self.device.counters().parse_error("invalid_json");
                if self.logged.first(&format!("invalid {key}")) {
                    tracing::warn!(device = %self.device.id(), sequence = %key,
                        body = %clip(text),
                        "camera json not understood; using the single topics of the round");
                }
                pending.clone()
            }
        };
        if let Some(name) = record.name.take().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()) {
            self.sequences[i].name = Some(name);
        }
        let s = &mut self.sequences[i];
        s.open = true;
        s.retained = !live;
        s.has_json = true;
        s.pending = pending;
        if !record.is_empty() {
            self.emit(i, &record, live);
        }
    }

    /// The sequence's name for logs and events (the fork's id until its json names it).
    fn label(&self, i: usize) -> &str {
        let s = &self.sequences[i];
        s.name.as_deref().unwrap_or(&s.key)
    }

    fn close_round(&mut self, i: usize) {
        let s = &mut self.sequences[i];
        let (open, has_json, retained) = (s.open, s.has_json, s.retained);
        let pending = std::mem::take(&mut s.pending);
        s.open = false;
        s.has_json = false;
        if open && !has_json && !pending.is_empty() {
            self.emit(i, &pending, !retained);
        }
    }

    fn target_of(&mut self, i: usize) -> Option<usize> {
        if let Some(t) = self.sequences[i].target {
            return t;
        }
        let s = &self.sequences[i];
        let label = s.name.clone().unwrap_or_else(|| s.key.clone());
        let (target, settled) = if !self.configured.is_empty() {
            let names = [s.name.as_deref(), Some(s.key.as_str())];
            match names.into_iter().flatten().find_map(|n| self.configured.iter().find(|(c, _)| c == n)) {
                Some((_, t)) => (*t, true),
                // A fork sequence is known by its id until its json names it: try again then.
                None => (None, s.name.is_some() || !s.cluster),
            }
        } else {
            match &self.claimed {
                None => {
                    self.claimed = Some(s.key.clone());
                    tracing::info!(device = %self.device.id(), sequence = %clip(&label), "number sequence read into this device");
                    self.device.set_detail("sequences", format!("{label} → this device"));
                    (Some(0), true)
                }
                Some(c) => (if *c == s.key { Some(0) } else { None }, true),
            }
        };
        let mapped = self.configured.iter().any(|(c, _)| *c == label);
        if target.is_none() && settled && !mapped && self.logged.first(&format!("unmapped {label}")) {
            let taken =
                self.claimed.as_deref().map(|c| format!(" (this device takes `{}`)", clip(c))).unwrap_or_default();
            let shown = clip(&label);
            tracing::warn!(device = %self.device.id(), sequence = %shown,
                "the camera reads a number sequence that no device takes; map it with `sequences: {{{shown}: <device id>}}`{taken}; counted as unknown");
            self.device.set_detail("unmapped_sequence", label);
        }
        if settled {
            self.sequences[i].target = Some(target);
        }
        target
    }

    fn meter_for(&mut self, t: usize) -> &'static Meter {
        let (meter, source) = match (self.targets[t].meter, self.meter_config, self.meter_discovered) {
            (Some(m), _, _) => (m, "config, sequences entry"),
            (None, Some(m), _) => (m, "config"),
            (None, None, Some(m)) => (m, "the camera's discovery config"),
            (None, None, None) => {
                if self.logged.first("assumed meter") {
                    tracing::warn!(device = %self.device.id(),
                        "no `meter:` configured and no discovery config from the camera (yet): reading it as a water meter in m³ until one arrives; set `meter:` to be sure");
                }
                (mapping::meter("water", None).expect("meters.tsv has water"), "assumed: set `meter:`")
            }
        };
        let target = &mut self.targets[t];
        if !target.meter_detail.starts_with(&meter.describe()) || !target.meter_detail.contains(source) {
            target.meter_detail = format!("{} ({source})", meter.describe());
            target.handle.set_detail("meter", target.meter_detail.clone());
        }
        meter
    }

    fn emit(&mut self, i: usize, rec: &Record, live: bool) {
        let Some(t) = self.target_of(i) else {
            self.device.counters().unknown_keys.inc();
            return;
        };
        // Without a value the meter is not needed: do not warn about an assumed one.
        let meter = match rec.value {
            Some(_) => self.meter_for(t),
            None => mapping::meter("water", None).expect("meters.tsv has water"),
        };
        let now = self.now();
        let mut update = Update { fresh: live, ..Default::default() };
        let r = mapping::reading(rec, meter, &mut update);
        if let Some((reason, field)) = r.bad_field {
            self.device.counters().parse_error(reason);
            if self.logged.first(&format!("{reason} {field}")) {
                tracing::warn!(device = %self.device.id(), sequence = %self.label(i), field, record = %clip(&format!("{rec:?}")),
                    "camera field is not a number; skipped");
            }
        }
        update.ts = match (r.outcome, r.stamp) {
            (Outcome::Good, Stamp::At(ts)) => Some(ts),
            (Outcome::Good, stamp @ (Stamp::NoOffset | Stamp::Unsynced)) => {
                if self.logged.first(&format!("stamp {stamp:?}")) {
                    let why = if stamp == Stamp::NoOffset {
                        "carry no UTC offset (firmware before v13.0.2)"
                    } else {
                        "come from an unset clock (NTP not synced)"
                    };
                    tracing::info!(device = %self.device.id(), "the camera's timestamps {why}; using the time of receipt");
                    self.device.set_detail("timestamps", format!("{why}: the time of receipt is used"));
                }
                live.then_some(now)
            }
            _ => live.then_some(now),
        };
        let handle = self.targets[t].handle.clone();
        if let Outcome::Rejected(reason) = r.outcome
            && live
        {
            handle.counters().rejected(reason);
            let mut event = Event::new("reading_rejected").with("sequence", self.label(i)).with("reason", reason);
            if let Some(e) = &r.error_text {
                event = event.with("error", e.as_str());
            }
            if let Some(raw) = rec.raw.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
                event = event.with("raw", raw);
            }
            update.events.push(event);
        }
        if live {
            let reading = update.readings.iter().find(|(q, _)| *q == meter.quantity).map(|(_, v)| v.clone());
            self.confirm(t, reading);
        }
        handle.apply(update);
    }

    /// The camera device and the devices it feeds (target index → handle), to take their commands.
    pub(crate) fn command_targets(&self) -> Vec<(usize, DeviceHandle)> {
        self.targets.iter().enumerate().map(|(i, t)| (i, t.handle.clone())).collect()
    }

    /// Whether the camera publishes the fork's topic clusters (else the flat upstream layout).
    fn speaks_clusters(&self) -> bool {
        match self.dialect {
            Dialect::Clusters => true,
            Dialect::Upstream => false,
            Dialect::Auto => self.seen_clusters && !self.seen_upstream,
        }
    }

    /// The number sequence whose values go to target `t`, once known.
    fn sequence_of_target(&self, t: usize) -> Option<String> {
        if let Some((name, _)) = self.configured.iter().find(|(_, i)| *i == Some(t)) {
            return Some(name.clone());
        }
        if t != 0 {
            return None;
        }
        let claimed = self.claimed.as_deref()?;
        let s = self.sequences.iter().find(|s| s.key == claimed)?;
        // A fork sequence is addressed by name; its topic level is only an id.
        if s.cluster { s.name.clone() } else { Some(s.key.clone()) }
    }

    /// Takes command `cmd` for target `t`: publishes the camera's control topic and waits for the
    /// next round, or answers at once when it cannot be sent.
    pub(crate) fn command(&mut self, t: usize, cmd: Command, timeout: Duration, interval: Duration) {
        let Some(handle) = self.targets.get(t).map(|x| x.handle.clone()) else { return };
        if !self.device.is_online() {
            let why = if self.will_down { "its last will says `connection lost`" } else { "no fresh round" };
            return handle.command_result(
                &cmd,
                Err(format!(
                    "the camera is offline ({why}): it keeps no messages while away, so `{}` would be lost",
                    cmd.name
                )),
            );
        }
        if self.pending.iter().any(|p| p.target == t && p.cmd.name == cmd.name) {
            return handle.command_result(
                &cmd,
                Err(format!("busy: a `{}` already waits for the camera's next round", cmd.name)),
            );
        }
        let clusters = self.speaks_clusters();
        let now = Instant::now();
        let (topic, body, kind, deadline) = match cmd.name {
            "read_now" => {
                let topic = if clusters { "process/ctrl/cycle_start" } else { "ctrl/flow_start" };
                // The fork wants a payload of length > 0; upstream takes anything.
                (topic, "1".to_owned(), PendingKind::ReadNow, now + timeout)
            }
            "previous_value" => {
                let value = match cmd.value.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => v,
                    _ => {
                        return handle.command_result(
                            &cmd,
                            Err(format!(
                                "previous_value must be a number ≥ 0 (the meter reading in the unit of the device's total, m³ or kWh), got `{}`",
                                clip(&cmd.value)
                            )),
                        );
                    }
                };
                let Some(sequence) = self.sequence_of_target(t) else {
                    return handle.command_result(
                        &cmd,
                        Err("the camera's number sequence for this device is not known yet; wait for its first round"
                            .into()),
                    );
                };
                let meter = self.meter_for(t);
                let device_value = value / meter.factor;
                let (topic, key) = if clusters {
                    ("process/ctrl/set_fallbackvalue", "sequence")
                } else {
                    ("ctrl/set_prevalue", "numbersname")
                };
                let body = serde_json::json!({ key: sequence, "value": device_value }).to_string();
                (topic, body, PendingKind::PreviousValue(value), now + timeout + interval)
            }
            other => return handle.command_result(&cmd, Err(format!("`{other}` is not a camera command"))),
        };
        // Never retained: see the module docs.
        self.device.mqtt().publish(format!("{}/{topic}", self.main_topic), body, QoS::AtLeastOnce, false);
        self.pending.push(PendingCommand { cmd, target: t, kind, deadline });
    }

    /// Answers the commands of target `t` that a live round confirms (`reading`: its total, if any).
    fn confirm(&mut self, t: usize, reading: Option<Value>) {
        let Some(handle) = self.targets.get(t).map(|x| x.handle.clone()) else { return };
        let (done, rest): (Vec<PendingCommand>, Vec<PendingCommand>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.target == t);
        self.pending = rest;
        let number = |v: &Option<Value>| match v {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        };
        for p in done {
            let result = match p.kind {
                PendingKind::ReadNow => Ok(number(&reading).map_or(serde_json::Value::Null, serde_json::Value::from)),
                PendingKind::PreviousValue(set) => match number(&reading) {
                    // Float noise of the camera's 6-decimal round trip, relative to the value.
                    Some(read) if read < set - 1e-6 * set.abs().max(1.0) => Err(format!(
                        "the camera's next round read {read}, less than the previous value {set} that was set: it did not take it"
                    )),
                    _ => Ok(serde_json::Value::from(set)),
                },
            };
            handle.command_result(&p.cmd, result);
        }
    }

    /// When the first waiting command times out.
    pub(crate) fn next_command_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Answers every waiting command whose deadline passed with a timeout.
    pub(crate) fn expire_commands(&mut self, now: Instant) {
        let (expired, rest): (Vec<PendingCommand>, Vec<PendingCommand>) =
            std::mem::take(&mut self.pending).into_iter().partition(|p| p.deadline <= now);
        self.pending = rest;
        for p in expired {
            if let Some(t) = self.targets.get(p.target) {
                t.handle.command_result(
                    &p.cmd,
                    Err(format!(
                        "timeout: the camera published no round for this device in time after `{}` (it never acknowledges commands; is its automatic flow on?)",
                        p.cmd.name
                    )),
                );
            }
        }
    }
}

/// Runs the adapter until `cancel`.
pub(crate) async fn run(cfg: AiOnTheEdgeConfig, device: DeviceHandle, cancel: CancellationToken) {
    if let Some(parent) = &cfg.sequence_of {
        // Fed by the camera device's adapter; nothing to read here.
        if device.sibling(parent).is_none() {
            let msg = format!("sequence_of: `{parent}` is not an ai_on_the_edge device in this config");
            tracing::error!(device = %device.id(), "{msg}");
            device.set_detail("config_error", msg);
        }
        device.set_detail("transport", format!("mqtt, via device `{parent}`"));
        cancel.cancelled().await;
        return;
    }
    let mut ingest = Ingest::new(&cfg, device.clone());
    let filters = ingest.filters();
    device.set_detail("transport", "mqtt");
    device.set_detail("topics", filters.join(" "));
    let mut rx = super::ingest::subscribe(&device, &filters, 1024).await;
    let mut commands = take_commands(&ingest);
    let timeout = cfg.command_timeout.map(|d| d.0).unwrap_or(DEFAULT_COMMAND_TIMEOUT);
    let interval = cadence(&cfg);
    let mut idle: Option<Instant> = None;
    loop {
        let command_deadline = ingest.next_command_deadline();
        tokio::select! {
            _ = cancel.cancelled() => break,
            cmd = commands.recv(), if !commands.is_closed() => {
                match cmd {
                    Some((t, cmd)) => ingest.command(t, cmd, timeout, interval),
                    None => commands.close(),
                }
            }
            _ = crate::adapters::wait::sleep_until(command_deadline), if command_deadline.is_some() => {
                ingest.expire_commands(Instant::now());
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                ingest.message(&msg);
                if rx.is_empty() {
                    ingest.flush();
                }
                idle = ingest.has_open_rounds().then(|| Instant::now() + ROUND_IDLE);
            }
            _ = crate::adapters::wait::sleep_until(idle), if idle.is_some() => {
                idle = None;
                ingest.finish();
            }
        }
    }
}

/// One stream of the commands for the camera and every device it feeds, tagged with the target.
fn take_commands(ingest: &Ingest) -> tokio::sync::mpsc::Receiver<(usize, Command)> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for (t, handle) in ingest.command_targets() {
        let mut from = handle.commands();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(cmd) = from.recv().await {
                if tx.send((t, cmd)).await.is_err() {
                    break;
                }
            }
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> AiOnTheEdgeConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    fn errors(yaml: &str) -> Vec<(String, String)> {
        validate(&cfg(yaml), "devices.w")
    }

    #[test]
    fn a_minimal_camera_config_is_valid_with_defaults() {
        let c = cfg("main_topic: watermeter\n");
        assert!(validate(&c, "devices.w").is_empty());
        assert_eq!(c.dialect, Dialect::Auto);
        assert!(c.discovery);
        assert_eq!(cadence(&c), DEFAULT_INTERVAL);
        assert_eq!(cadence(&cfg("main_topic: w\ninterval: 1m\n")), Duration::from_secs(60));
    }

    #[test]
    fn main_topic_or_sequence_of_is_required() {
        let e = errors("meter: water\n");
        assert_eq!(e[0].0, "devices.w.main_topic");
        let e = errors("main_topic: w\nsequence_of: cam\n");
        assert_eq!(e[0].0, "devices.w.sequence_of");
    }

    #[test]
    fn bad_topics_units_and_intervals_name_their_key() {
        let e = errors("main_topic: water/#\nmeter: gas\nunit: l\ninterval: 10ms\n");
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["devices.w.main_topic", "devices.w.unit", "devices.w.interval"], "{e:?}");
        assert!(e[1].1.contains("m3, ft3"), "{e:?}");
        assert!(errors("main_topic: w\nunit: l\n")[0].1.contains("meter"));
    }

    #[test]
    fn sequences_take_short_and_long_forms_and_one_device_each() {
        let c = cfg("main_topic: w\nsequences:\n  main: w\n  garden: {device: garden, meter: water, unit: l}\n");
        assert!(validate(&c, "devices.w").is_empty());
        assert_eq!(c.sequences["garden"].device(), "garden");
        let e = errors("main_topic: w\nsequences:\n  a: x\n  b: x\n");
        assert_eq!(e[0].0, "devices.w.sequences.b");
        let e = errors("main_topic: w\nmeter: water\nsequences:\n  a: {device: x, unit: parsecs}\n");
        assert!(e.iter().any(|(k, m)| k == "devices.w.sequences.a.unit" && m.contains("not a unit")), "{e:?}");
    }

    #[test]
    fn a_sequence_device_may_not_carry_camera_keys() {
        let e = errors("sequence_of: cam\nmeter: gas\n");
        assert_eq!(
            e,
            [(
                "devices.w.meter".to_owned(),
                "set it on the camera device `cam` (its `sequences:` entry), not on a `sequence_of` device".to_owned()
            )]
        );
        assert!(errors("sequence_of: cam\ninterval: 1m\n").is_empty());
    }

    #[test]
    fn unknown_keys_and_dialects_are_refused_by_the_schema() {
        assert!(serde_norway::from_str::<AiOnTheEdgeConfig>("main_topic: w\nmaintopic: x\n").is_err());
        assert!(serde_norway::from_str::<AiOnTheEdgeConfig>("main_topic: w\ndialect: sl\n").is_err());
    }
}

#[cfg(test)]
mod ingest_tests;

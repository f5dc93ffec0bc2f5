//! Round assembly: [`Ingest`] takes each camera message (single topics, `json`, device status,
//! discovery config), assembles a number sequence's round, routes it once to the device it belongs
//! to (as readings, `reading_rejected` events and link changes) and keeps the camera's details.
//! `commands` (a child, so it shares the private state) sends commands and answers them.

mod commands;

use std::time::Duration;

use time::OffsetDateTime;

use super::config::{AiOnTheEdgeConfig, DEFAULT_INTERVAL, SequenceTarget};
use super::mapping::{self, Classified, DeviceRole, Dialect, FieldRole, Meter, Outcome, Record, Stamp};
use crate::adapters::log_once::LogOnce;
use crate::model::{Event, Identity, Update, Value};
use crate::mqtt::Message;
use crate::router::{DeviceHandle, Link};
use crate::untrusted::clip;
use commands::PendingCommand;

/// Most number sequences one camera may have before further names are treated as garbage.
const MAX_SEQUENCES: usize = 16;
/// Manufacturer as the firmware's own discovery config names it.
const VENDOR: &str = "AI on the Edge Device";
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
}

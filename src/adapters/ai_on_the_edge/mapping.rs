//! Pure AI-on-the-edge-device mapping: topic → role, the tolerant `json` parser (every historical
//! format, malformed ones included), numbers, timestamps, error texts, meter units, Home Assistant
//! discovery configs, and one number-sequence reading → canonical quantities. No IO and no state:
//! the [`super::Ingest`] assembles rounds and feeds them here. The vendor knowledge lives as data in
//! `adapters/ai_on_the_edge/` (topics.tsv, fields.tsv, errors.tsv, meters.tsv), embedded at build time.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::adapters::table::{self, TableError};
use crate::model::{Quantity, Update, Value};

const TOPICS_TSV: &str = include_str!("../../../adapters/ai_on_the_edge/topics.tsv");
const FIELDS_TSV: &str = include_str!("../../../adapters/ai_on_the_edge/fields.tsv");
const ERRORS_TSV: &str = include_str!("../../../adapters/ai_on_the_edge/errors.tsv");
const METERS_TSV: &str = include_str!("../../../adapters/ai_on_the_edge/meters.tsv");

/// Readings above this many seconds of uptime are the v10.2.0 bug (an epoch-like number, #583).
const MAX_UPTIME_S: f64 = 20.0 * 365.0 * 86_400.0;
/// The ESP32's internal sensor range; anything outside is garbage.
const CPU_TEMPERATURE_RANGE: std::ops::RangeInclusive<f64> = -40.0..=150.0;
/// `wifiRSSI` reports -127 when the firmware has no access-point info.
const RSSI_UNKNOWN: f64 = -127.0;

/// Which MQTT layout a device speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Dialect {
    /// Detect from the topics seen (and say which in `/readyz`).
    #[default]
    Auto,
    /// jomjol firmware v8–v16: flat topics (`MT/connection`, `MT/<seq>/value`, ...).
    Upstream,
    /// The Slider0007 fork's topic clusters (`MT/device/status/...`, `MT/process/data/...`).
    Clusters,
}

impl Dialect {
    /// The config spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dialect::Auto => "auto",
            Dialect::Upstream => "upstream",
            Dialect::Clusters => "clusters",
        }
    }
}

/// What a device-level topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceRole {
    /// Birth/last-will state (`connected` / `connection lost`, fork `online` / `offline`).
    Connection,
    /// Seconds since boot.
    Uptime,
    /// Wi-Fi signal in dBm.
    Rssi,
    /// ESP32 chip temperature in °C.
    Temperature,
    /// Flow step of the round (`Take Image`, ..., `Flow finished`).
    RoundStatus,
    /// Firmware version text.
    Firmware,
    /// MAC address.
    Mac,
    /// IPv4 address.
    Ip,
    /// Host name.
    Hostname,
    /// Round interval in minutes.
    IntervalMin,
    /// Fork: board/camera/SD JSON.
    HardwareJson,
    /// Fork: hostname/IP/MAC JSON.
    NetworkJson,
    /// Documented, deliberately not normalised.
    Ignore,
}

/// What a number-sequence field carries (a topic, or a key of the `json` body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldRole {
    /// Post-processed reading (decimal string; empty when the round was rejected).
    Value,
    /// Digits as read, may contain `N`.
    Raw,
    /// Error text / fork value status.
    Error,
    /// Change per minute in the meter's unit.
    RatePerMin,
    /// Time of the last valid reading.
    Timestamp,
    /// The whole record as JSON.
    Json,
    /// Sequence name (fork json).
    Name,
    /// Documented, derived or previous-value field.
    Ignore,
}

/// Where a topic below the MainTopic belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Classified<'a> {
    /// A device-level topic of `dialect`.
    Device(Dialect, DeviceRole),
    /// A field of a number sequence: `key` is the upstream sequence name or the fork's sequence id.
    Sequence {
        /// Layout of the topic.
        dialect: Dialect,
        /// Sequence name (upstream) or id (clusters).
        key: &'a str,
        /// The field.
        role: FieldRole,
    },
    /// Commands to the device (`ctrl/...`, `process/ctrl/...`): ours or another client's, not data.
    Control,
    /// GPIO state or commands (experimental in the firmware, not part of the model).
    Gpio,
    /// Nothing the notes know: firmware drift or a wrong `main_topic`.
    Unknown,
}

/// One row of meters.tsv: what a camera reads and how its numbers convert.
#[derive(Debug, PartialEq)]
pub(crate) struct Meter {
    /// `water`, `gas`, `energy`.
    pub kind: &'static str,
    /// Config spelling of the unit (`m3`, `l`, `kwh`, ...).
    pub unit: &'static str,
    /// The unit as Home Assistant discovery writes it (`m³`, `L`, `kWh`).
    pub discovery_unit: &'static str,
    /// The canonical total quantity (`volume`, `energy_import`).
    pub quantity: Quantity,
    /// Meter unit → canonical unit.
    pub factor: f64,
    /// The canonical rate quantity (`flow_rate`, `power`).
    pub rate_quantity: Quantity,
    /// Meter unit per minute → canonical rate unit.
    pub rate_factor: f64,
}

impl Meter {
    /// `water m3`, for logs and `/readyz`.
    pub(crate) fn describe(&self) -> String {
        format!("{} {}", self.kind, self.unit)
    }
}

/// The parsed data tables.
pub(crate) struct Tables {
    upstream: Vec<(&'static str, DeviceRole)>,
    clusters: Vec<(&'static str, DeviceRole)>,
    fields: Vec<(&'static str, FieldRole)>,
    errors: Vec<(&'static str, Option<&'static str>)>,
    meters: Vec<Meter>,
}

fn device_role(row: &table::Row, name: &str) -> Result<DeviceRole, TableError> {
    Ok(match name {
        "connection" => DeviceRole::Connection,
        "uptime" => DeviceRole::Uptime,
        "rssi" => DeviceRole::Rssi,
        "temperature" => DeviceRole::Temperature,
        "round_status" => DeviceRole::RoundStatus,
        "firmware" => DeviceRole::Firmware,
        "mac" => DeviceRole::Mac,
        "ip" => DeviceRole::Ip,
        "hostname" => DeviceRole::Hostname,
        "interval_min" => DeviceRole::IntervalMin,
        "hardware_json" => DeviceRole::HardwareJson,
        "network_json" => DeviceRole::NetworkJson,
        "ignore" => DeviceRole::Ignore,
        other => return Err(row.error(format!("unknown role `{other}`"))),
    })
}

fn field_role(row: &table::Row, name: &str) -> Result<FieldRole, TableError> {
    Ok(match name {
        "value" => FieldRole::Value,
        "raw" => FieldRole::Raw,
        "error" => FieldRole::Error,
        "rate_per_min" => FieldRole::RatePerMin,
        "timestamp" => FieldRole::Timestamp,
        "json" => FieldRole::Json,
        "name" => FieldRole::Name,
        "ignore" => FieldRole::Ignore,
        other => return Err(row.error(format!("unknown role `{other}`"))),
    })
}

table::parsed_once!(Tables, parse_tables);

fn parse_tables() -> Result<Tables, TableError> {
    let mut t = Tables {
        upstream: Vec::new(),
        clusters: Vec::new(),
        fields: Vec::new(),
        errors: Vec::new(),
        meters: Vec::new(),
    };
    for row in table::rows("adapters/ai_on_the_edge/topics.tsv", TOPICS_TSV) {
        let [dialect, topic, role] = row.cells()?;
        match dialect {
            "upstream" => t.upstream.push((topic, device_role(&row, role)?)),
            "clusters" => t.clusters.push((topic, device_role(&row, role)?)),
            other => return Err(row.error(format!("unknown dialect `{other}` (upstream or clusters)"))),
        }
    }
    for row in table::rows("adapters/ai_on_the_edge/fields.tsv", FIELDS_TSV) {
        let [field, role] = row.cells()?;
        t.fields.push((field, field_role(&row, role)?));
    }
    for row in table::rows("adapters/ai_on_the_edge/errors.tsv", ERRORS_TSV) {
        let [prefix, outcome, reason] = row.cells()?;
        let reason = match outcome {
            "ok" => None,
            "rejected" => Some(reason),
            other => return Err(row.error(format!("unknown outcome `{other}` (ok or rejected)"))),
        };
        t.errors.push((prefix, reason));
    }
    for row in table::rows("adapters/ai_on_the_edge/meters.tsv", METERS_TSV) {
        let [kind, unit, discovery_unit, q, factor, rq, rate_factor] = row.cells()?;
        let quantity = |name: &str| {
            Quantity::try_known(name).ok_or_else(|| row.error(format!("`{name}` is not a quantity of the contract")))
        };
        t.meters.push(Meter {
            kind,
            unit,
            discovery_unit,
            quantity: quantity(q)?,
            factor: row.parse("factor", factor)?,
            rate_quantity: quantity(rq)?,
            rate_factor: row.parse("rate_factor", rate_factor)?,
        });
    }
    Ok(t)
}

/// The field role of a sequence topic level or json key.
pub(crate) fn field(name: &str) -> Option<FieldRole> {
    tables().fields.iter().find(|(f, _)| *f == name).map(|(_, r)| *r)
}

/// Classifies a topic below the MainTopic (`rest` is the topic without `MT/`).
pub(crate) fn classify(rest: &str) -> Classified<'_> {
    let t = tables();
    if let Some((_, role)) = t.upstream.iter().find(|(n, _)| *n == rest) {
        return Classified::Device(Dialect::Upstream, *role);
    }
    if let Some((_, role)) = t.clusters.iter().find(|(n, _)| *n == rest) {
        return Classified::Device(Dialect::Clusters, *role);
    }
    let mut levels = rest.split('/');
    let (first, second, third) = (levels.next(), levels.next(), levels.next());
    let more = levels.next().is_some();
    match (first, second, third) {
        // The sequence `default` publishes directly under the MainTopic (MT/value, MT/json, ...).
        (Some(f), None, None) => match field(f) {
            Some(role) => Classified::Sequence { dialect: Dialect::Upstream, key: "default", role },
            None => Classified::Unknown,
        },
        (Some("ctrl"), Some(_), None) => Classified::Control,
        (Some("GPIO"), Some(_), None) => Classified::Gpio,
        (Some(seq), Some(f), None) => match field(f) {
            Some(role) => Classified::Sequence { dialect: Dialect::Upstream, key: seq, role },
            None => Classified::Unknown,
        },
        (Some("process" | "device"), Some("ctrl"), Some(_)) if !more => Classified::Control,
        (Some("device"), Some("gpio"), Some(_)) => Classified::Gpio,
        (Some("process"), Some("data"), Some(id)) => {
            let f = rest.splitn(4, '/').nth(3);
            match f.and_then(field) {
                Some(role) if !f.is_some_and(|f| f.contains('/')) => {
                    Classified::Sequence { dialect: Dialect::Clusters, key: id, role }
                }
                _ => Classified::Unknown,
            }
        }
        _ => Classified::Unknown,
    }
}

/// The fields of one number-sequence reading, as text the way the device sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// Post-processed value (`None`: not sent; `Some("")`: sent empty, i.e. rejected).
    pub value: Option<String>,
    /// Digits as read.
    pub raw: Option<String>,
    /// Error text or value status.
    pub error: Option<String>,
    /// Change per minute.
    pub rate: Option<String>,
    /// Time of the last valid reading.
    pub timestamp: Option<String>,
    /// Sequence name (fork json).
    pub name: Option<String>,
}

impl Record {
    fn slot(&mut self, role: FieldRole) -> Option<&mut Option<String>> {
        match role {
            FieldRole::Value => Some(&mut self.value),
            FieldRole::Raw => Some(&mut self.raw),
            FieldRole::Error => Some(&mut self.error),
            FieldRole::RatePerMin => Some(&mut self.rate),
            FieldRole::Timestamp => Some(&mut self.timestamp),
            FieldRole::Name => Some(&mut self.name),
            FieldRole::Json | FieldRole::Ignore => None,
        }
    }

    /// Whether `role` is set.
    pub(crate) fn has(&self, role: FieldRole) -> bool {
        match role {
            FieldRole::Value => self.value.is_some(),
            FieldRole::Raw => self.raw.is_some(),
            FieldRole::Error => self.error.is_some(),
            FieldRole::RatePerMin => self.rate.is_some(),
            FieldRole::Timestamp => self.timestamp.is_some(),
            FieldRole::Name => self.name.is_some(),
            FieldRole::Json | FieldRole::Ignore => false,
        }
    }

    /// Sets `role` to `text`; roles that are not fields are ignored.
    pub(crate) fn set(&mut self, role: FieldRole, text: &str) {
        if let Some(slot) = self.slot(role) {
            *slot = Some(text.to_owned());
        }
    }

    /// Whether nothing is set.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Record::default()
    }

    /// Takes every field of `other` that `self` lacks (`overwrite`: every field `other` has).
    pub(crate) fn fill_from(&mut self, other: &Record, overwrite: bool) {
        for (mine, theirs) in [
            (&mut self.value, &other.value),
            (&mut self.raw, &other.raw),
            (&mut self.error, &other.error),
            (&mut self.rate, &other.rate),
            (&mut self.timestamp, &other.timestamp),
            (&mut self.name, &other.name),
        ] {
            if theirs.is_some() && (overwrite || mine.is_none()) {
                mine.clone_from(theirs);
            }
        }
    }
}

/// A parsed `json` body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JsonRecord {
    /// The fields found.
    pub record: Record,
    /// False when the body was not valid JSON and the fields were recovered by scanning (v8.0.x,
    /// v10.0.0–v10.0.1, v13.0.5 firmware).
    pub well_formed: bool,
    /// Keys no table knows (firmware drift), for the unknown-key counter.
    pub unknown_keys: Vec<String>,
}

fn json_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        // v8.1–v13.0.4 wrote value and rate as bare numbers; keep the digits as sent.
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Null => None,
        _ => None,
    }
}

/// Parses a sequence's `json` body: strictly when it is JSON, else by scanning for the known keys
/// (the malformed bodies of some firmware). `None` when nothing usable is in it.
pub(crate) fn parse_json(body: &str) -> Option<JsonRecord> {
    if let Ok(Json::Object(map)) = serde_json::from_str::<Json>(body) {
        let mut out = JsonRecord { well_formed: true, ..Default::default() };
        for (k, v) in &map {
            match field(k) {
                Some(FieldRole::Ignore | FieldRole::Json) => {}
                Some(role) => {
                    if let Some(text) = json_text(v) {
                        out.record.set(role, &text);
                    }
                }
                None => out.unknown_keys.push(k.clone()),
            }
        }
        return Some(out);
    }
    let record = scan_json(body);
    (!record.is_empty()).then_some(JsonRecord { record, well_formed: false, unknown_keys: Vec::new() })
}

/// Recovers the known keys of a malformed body: each value runs from its key to the next known key
/// (or the closing brace); quotes and whitespace around it are dropped. Good enough for the missing
/// quote of v10.0.0 and v13.0.5 and for the error text inside v8.0.x's value.
fn scan_json(body: &str) -> Record {
    let mut hits: Vec<(usize, usize, FieldRole)> = Vec::new();
    for (name, role) in &tables().fields {
        let needle = format!("\"{name}\"");
        let mut from = 0;
        while let Some(pos) = body[from..].find(&needle) {
            let start = from + pos;
            let after = start + needle.len();
            from = after;
            let rest = body[after..].trim_start();
            if let Some(value_part) = rest.strip_prefix(':') {
                let value_start = body.len() - value_part.len();
                hits.push((start, value_start, *role));
            }
        }
    }
    hits.sort_by_key(|h| h.0);
    let end = body.rfind('}').unwrap_or(body.len());
    let mut rec = Record::default();
    for (i, &(_, value_start, role)) in hits.iter().enumerate() {
        let stop = hits.get(i + 1).map(|h| h.0).unwrap_or(end).max(value_start);
        let text = body[value_start..stop].trim().trim_end_matches(',').trim();
        let text = text.trim_start_matches('"').trim_end_matches('"').trim();
        if !rec.has(role) {
            rec.set(role, text);
        }
    }
    rec
}

/// Parses a decimal as the firmware prints it (`512.3025`, `-0.000000`, `1843`): `.` separator,
/// no thousands separator, finite.
pub(crate) fn parse_decimal(s: &str) -> Option<f64> {
    let s = s.trim();
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || digits.bytes().filter(|b| *b == b'.').count() > 1
        || !digits.bytes().any(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A device timestamp, as far as it can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stamp {
    /// Full timestamp with UTC offset (v13.0.2+, the fork).
    At(OffsetDateTime),
    /// Local time without offset (before v13.0.2): the offset is unknown.
    NoOffset,
    /// The device clock is not set (NTP not synced: 1970).
    Unsynced,
    /// Empty (after boot until the first good round) or unreadable.
    Missing,
}

/// Parses `2024-03-05T14:29:17+0100`, `...+01:00`, `...Z` and the offset-less older form.
pub(crate) fn parse_timestamp(s: &str) -> Stamp {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let s = s.trim();
    if s.is_empty() {
        return Stamp::Missing;
    }
    let with_offset = OffsetDateTime::parse(
        s,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory][offset_minute]"),
    )
    .or_else(|_| OffsetDateTime::parse(s, &Rfc3339));
    let stamp = match with_offset {
        Ok(t) => t,
        Err(_) => {
            return match PrimitiveDateTime::parse(
                s,
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            ) {
                Ok(p) if p.year() < 2020 => Stamp::Unsynced,
                Ok(_) => Stamp::NoOffset,
                Err(_) => Stamp::Missing,
            };
        }
    };
    if stamp.year() < 2020 { Stamp::Unsynced } else { Stamp::At(stamp) }
}

/// What an error text / value status says about the reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// No error text (not sent, or empty).
    None,
    /// `no error`, fork `000 Valid`.
    Ok,
    /// A rejection the device reported, with the metric reason.
    Rejected(&'static str),
    /// A text no table knows.
    Unknown,
}

/// Classifies an error text by prefix (the texts carry the readings, so never by equality).
pub(crate) fn classify_error(text: &str) -> ErrorClass {
    let text = text.trim();
    if text.is_empty() {
        return ErrorClass::None;
    }
    match tables().errors.iter().find(|(prefix, _)| text.starts_with(prefix)) {
        Some((_, None)) => ErrorClass::Ok,
        Some((_, Some(reason))) => ErrorClass::Rejected(reason),
        None => ErrorClass::Unknown,
    }
}

/// The meter for a config `meter:` + `unit:` pair (unit defaults to the first row of the meter).
pub(crate) fn meter(kind: &str, unit: Option<&str>) -> Option<&'static Meter> {
    tables().meters.iter().find(|m| m.kind == kind && unit.is_none_or(|u| u == m.unit))
}

/// Every config unit allowed for `kind`.
pub(crate) fn units_of(kind: &str) -> Vec<&'static str> {
    tables().meters.iter().filter(|m| m.kind == kind).map(|m| m.unit).collect()
}

/// The meter a Home Assistant discovery `device_class` and `unit_of_meas` describe (MeterType).
pub(crate) fn meter_from_discovery(device_class: Option<&str>, unit: Option<&str>) -> Option<&'static Meter> {
    let unit = unit?.trim();
    let kind = match device_class {
        Some("water") => "water",
        Some("gas") => "gas",
        Some("energy") => "energy",
        _ => return None,
    };
    tables().meters.iter().find(|m| m.kind == kind && m.discovery_unit.eq_ignore_ascii_case(unit))
}

/// What a retained Home Assistant discovery config tells about the device.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Discovery {
    /// For the `value` entity (upstream `~/<seq>/value`, fork `actual_value`): the sequence it reads.
    pub value_of: Option<String>,
    /// `device_class` of the entity.
    pub device_class: Option<String>,
    /// `unit_of_meas(urement)` of the entity.
    pub unit: Option<String>,
    /// `device.sw_version` / `dev.sw`.
    pub firmware: Option<String>,
    /// `device.model` / `dev.mdl`.
    pub model: Option<String>,
    /// `device.manufacturer` / `dev.mf`.
    pub manufacturer: Option<String>,
}

fn str_of<'a>(m: &'a serde_json::Map<String, Json>, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| m.get(*k).and_then(Json::as_str)).map(str::trim).filter(|s| !s.is_empty())
}

/// Parses a discovery config; `Ok(None)` when it belongs to another device (its `~` or state topic
/// is not below `main_topic`) or is a deletion (empty payload).
pub(crate) fn parse_discovery(payload: &[u8], main_topic: &str) -> Result<Option<Discovery>, &'static str> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Ok(Json::Object(m)) = serde_json::from_slice::<Json>(payload) else {
        return Err("invalid_discovery_json");
    };
    let base = str_of(&m, &["~"]);
    let state = str_of(&m, &["state_topic", "stat_t"]).map(|t| match (t.strip_prefix('~'), base) {
        (Some(rest), Some(b)) => format!("{b}{rest}"),
        _ => t.to_owned(),
    });
    let mine = match (base, &state) {
        (Some(b), _) => b.trim_end_matches('/') == main_topic,
        (None, Some(s)) => s.strip_prefix(main_topic).is_some_and(|r| r.starts_with('/')),
        (None, None) => false,
    };
    if !mine {
        return Ok(None);
    }
    let mut d = Discovery {
        device_class: str_of(&m, &["device_class", "dev_cla"]).map(str::to_owned),
        unit: str_of(&m, &["unit_of_measurement", "unit_of_meas"]).map(str::to_owned),
        ..Default::default()
    };
    if let Some(Json::Object(dev)) = m.get("device").or_else(|| m.get("dev")) {
        d.firmware = str_of(dev, &["sw_version", "sw"]).map(str::to_owned);
        d.model = str_of(dev, &["model", "mdl"]).map(str::to_owned);
        d.manufacturer = str_of(dev, &["manufacturer", "mf"]).map(str::to_owned);
    }
    if let Some(rest) = state.as_deref().and_then(|s| s.strip_prefix(main_topic)).and_then(|r| r.strip_prefix('/')) {
        let template = str_of(&m, &["value_template", "val_tpl"]).unwrap_or("");
        d.value_of = match rest.rsplit_once('/') {
            // Upstream: ~/<seq>/value, or ~/value for the sequence `default`.
            Some((seq, "value")) if !seq.contains('/') => Some(seq.to_owned()),
            None if rest == "value" => Some("default".to_owned()),
            // Fork: ~/process/data/<id>/json with a template picking `actual_value`.
            Some((path, "json")) if template.contains("actual_value") => {
                path.strip_prefix("process/data/").filter(|id| !id.contains('/')).map(str::to_owned)
            }
            _ => None,
        };
    }
    Ok(Some(d))
}

/// How a reading turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A valid reading: the total was published.
    Good,
    /// The device rejected (or could not make) the reading; the reason is a metric label.
    Rejected(&'static str),
    /// No judgement possible (partial round: only raw digits, only an error state).
    Partial,
}

/// What [`reading`] found besides the quantities.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReadingResult {
    /// Good, rejected or partial.
    pub outcome: Outcome,
    /// The device's timestamp of the reading.
    pub stamp: Stamp,
    /// The error text to publish as `reading_error` ("" = no error).
    pub error_text: Option<String>,
    /// A field that was not a number (parse-error reason, field name).
    pub bad_field: Option<(&'static str, &'static str)>,
}

/// Text for rejections that come without one (an `N` the firmware could not substitute).
pub(crate) const UNREADABLE_DIGITS: &str = "unreadable digits (N in raw) and no previous value to substitute";

/// Maps one sequence reading to canonical quantities in `update` (total, rate, raw digits, error).
pub(crate) fn reading(rec: &Record, meter: &Meter, update: &mut Update) -> ReadingResult {
    let raw = rec.raw.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if let Some(raw) = raw {
        update.push(Quantity::known("reading_raw"), Value::Text(Cow::Owned(raw.to_owned())));
    }
    // v8.0.x put the error text into `value`, after a TAB.
    let (value, tab_error) = match rec.value.as_deref().map(|v| v.split_once('\t').unwrap_or((v, ""))) {
        Some((_, e)) if !e.trim().is_empty() => (Some(""), Some(e.trim())),
        Some((v, _)) => (Some(v.trim()), None),
        None => (None, None),
    };
    let error = rec.error.as_deref().map(str::trim).filter(|e| !e.is_empty()).or(tab_error);
    let class = error.map(classify_error).unwrap_or(ErrorClass::None);
    let stamp = rec.timestamp.as_deref().map(parse_timestamp).unwrap_or(Stamp::Missing);
    let mut result = ReadingResult { outcome: Outcome::Partial, stamp, error_text: None, bad_field: None };
    let rejected = |reason| Outcome::Rejected(reason);
    result.outcome = match (class, value) {
        (ErrorClass::Rejected(reason), _) => rejected(reason),
        (_, Some("")) => rejected(match class {
            _ if raw.is_some_and(|r| r.contains('N')) => "device_unreadable_digits",
            ErrorClass::Unknown => "device_error",
            _ => "device_no_value",
        }),
        (_, Some(v)) => match parse_decimal(v) {
            Some(n) => {
                update.push(meter.quantity, Value::Number(n * meter.factor));
                if let Some(r) = rec.rate.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
                    match parse_decimal(r) {
                        Some(rate) => update.push(meter.rate_quantity, Value::Number(rate * meter.rate_factor)),
                        None => result.bad_field = Some(("bad_number", "rate")),
                    }
                }
                Outcome::Good
            }
            None => {
                result.bad_field = Some(("bad_number", "value"));
                Outcome::Partial
            }
        },
        (_, None) => Outcome::Partial,
    };
    result.error_text = match (result.outcome, class, error) {
        (Outcome::Rejected(_), _, Some(e)) => Some(e.to_owned()),
        (Outcome::Rejected("device_unreadable_digits"), _, None) => Some(UNREADABLE_DIGITS.to_owned()),
        (Outcome::Rejected(reason), _, None) => Some(reason.trim_start_matches("device_").replace('_', " ")),
        (_, ErrorClass::Unknown, Some(e)) => Some(e.to_owned()),
        (Outcome::Good, _, _) | (_, ErrorClass::Ok, _) => Some(String::new()),
        _ => None,
    };
    if let Some(text) = &result.error_text {
        update.push(Quantity::known("reading_error"), Value::Text(Cow::Owned(text.clone())));
    }
    result
}

/// A device-level number, checked against what the firmware can send.
pub(crate) fn device_number(role: DeviceRole, text: &str) -> Result<Option<(Quantity, f64)>, &'static str> {
    let n = parse_decimal(text).ok_or("bad_number")?;
    Ok(match role {
        DeviceRole::Uptime if !(0.0..=MAX_UPTIME_S).contains(&n) => return Err("implausible_uptime"),
        DeviceRole::Uptime => Some((Quantity::known("uptime"), n)),
        DeviceRole::Rssi if n == RSSI_UNKNOWN => None,
        DeviceRole::Rssi if !(-127.0..=0.0).contains(&n) => return Err("implausible_rssi"),
        DeviceRole::Rssi => Some((Quantity::known("rssi"), n)),
        DeviceRole::Temperature if !CPU_TEMPERATURE_RANGE.contains(&n) => return Err("implausible_temperature"),
        DeviceRole::Temperature => Some((Quantity::known("temperature"), n)),
        _ => None,
    })
}

/// The connection state a `connection` payload announces: `Some(true)` up, `Some(false)` down.
pub(crate) fn connection_state(text: &str) -> Option<bool> {
    match text.trim() {
        "connected" | "online" => Some(true),
        "connection lost" | "offline" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

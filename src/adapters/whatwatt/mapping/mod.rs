//! Pure whatwatt Go mapping: the three dialects the gateway speaks (the REST report, the SSE `live`
//! event and the user's MQTT template) are read into one [`Reading`] of vendor-neutral *signals*
//! in the gateway's units (kW, kvar, kVA, kWh, kvarh, V, A), and [`to_update`] turns a reading into
//! contract quantities exactly once: kW → W, kvar → var, kVA → VA, net power = import − export
//! (total and per phase), phases whose voltage is below `phase_min_voltage` dropped, the source
//! timestamp from `date_time_utc` / `${timestamp}` and never from the `Z`-suffixed local
//! `date_time` (protocol notes §8.1).
//!
//! No IO. The vendor knowledge is data in `adapters/whatwatt/` (report.tsv, sse.tsv, variables.tsv,
//! mqtt-fields.tsv), embedded at build time; a malformed table is a build defect caught by the unit
//! tests.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value as Json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::adapters::table::{self, TableError};
use crate::model::{Identity, Quantity, Update, Value};

const REPORT_TSV: &str = include_str!("../../../../adapters/whatwatt/report.tsv");
const SSE_TSV: &str = include_str!("../../../../adapters/whatwatt/sse.tsv");
const VARIABLES_TSV: &str = include_str!("../../../../adapters/whatwatt/variables.tsv");
const MQTT_FIELDS_TSV: &str = include_str!("../../../../adapters/whatwatt/mqtt-fields.tsv");
/// The template the bridge recommends configuring on the gateway (notes §10.3).
pub const BRIDGE_TEMPLATE: &str = include_str!("../../../../adapters/whatwatt/bridge-template.tmpl");

/// Numeric signals, in the gateway's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Sig {
    /// Active power import total (A+), kW.
    PIn,
    /// Active power export total (A−), kW.
    POut,
    /// Import L1, kW.
    PInL1,
    /// Import L2, kW.
    PInL2,
    /// Import L3, kW.
    PInL3,
    /// Export L1, kW.
    POutL1,
    /// Export L2, kW.
    POutL2,
    /// Export L3, kW.
    POutL3,
    /// Reactive power Q+ total, kvar.
    QIn,
    /// Reactive power Q− total, kvar.
    QOut,
    /// Apparent power, kVA.
    S,
    /// Power factor, 0..1.
    Pf,
    /// Grid frequency, Hz (not documented; mapped in case firmware adds it).
    Freq,
    /// Voltage L1, V.
    UL1,
    /// Voltage L2, V.
    UL2,
    /// Voltage L3, V.
    UL3,
    /// Current L1, A.
    IL1,
    /// Current L2, A.
    IL2,
    /// Current L3, A.
    IL3,
    /// Import register total, kWh.
    EIn,
    /// Import register T1, kWh.
    EInT1,
    /// Import register T2, kWh.
    EInT2,
    /// Export register total, kWh.
    EOut,
    /// Export register T1, kWh.
    EOutT1,
    /// Export register T2, kWh.
    EOutT2,
    /// Reactive register Q+, kvarh.
    EqIn,
    /// Reactive register Q−, kvarh.
    EqOut,
    /// Active tariff (0 = unknown).
    Tariff,
    /// Gateway uptime in hours (SSE).
    UptimeH,
    /// Gateway uptime in seconds (REST).
    UptimeS,
    /// Report time as UTC Unix seconds (`${timestamp}`).
    TsUnix,
    /// `report.id`: +1 per meter report, restarts at boot.
    ReportId,
}

impl Sig {
    /// Number of numeric signals.
    pub(crate) const COUNT: usize = Sig::ReportId as usize + 1;
}

/// Text signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Txt {
    /// ISO 8601 UTC (`…Z`) of the report: trusted.
    TsUtc,
    /// ISO 8601 with a real offset (`…+02:00`): trusted.
    TsOffset,
    /// `date_time`: local time wrongly suffixed `Z` (quirk 1): never used.
    TsLocalZ,
    /// Gateway id (12 hex).
    SysId,
    /// Meter id (often the serial; may be empty).
    MeterId,
    /// Meter logical name (`LGZ1030784855204`), `meter.type` in templates.
    MeterType,
    /// Meter vendor.
    MeterVendor,
    /// Meter model.
    MeterModel,
    /// `OK`, `NOT CONNECTED`, `NO DATA`, `RECOGNITION`, `ENCRYPTION KEY`, `KEY REQUIRED`, `NOT RECOGNIZED`.
    MeterStatus,
    /// `P1`, `MBUS`, `TTL`, `MEP`.
    MeterInterface,
    /// `DSMR`, `DLMS`, `KMP`, `MEP`, `MBUS`.
    MeterProtocol,
    /// Random per gateway boot; with `report.id` it tells a new reading from a repeat.
    BootId,
}

impl Txt {
    /// Number of text signals.
    pub(crate) const COUNT: usize = Txt::BootId as usize + 1;
}

/// What a vendor key feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A numeric signal.
    Num(Sig),
    /// A text signal.
    Text(Txt),
    /// A sub-meter reading chosen by the user's template (`${vol[n].cumulative}`).
    Volume,
    /// Documented but not normalised.
    Ignore,
}

const NAMES: &[(&str, Target)] = &[
    ("p_in", Target::Num(Sig::PIn)),
    ("p_out", Target::Num(Sig::POut)),
    ("p_in_l1", Target::Num(Sig::PInL1)),
    ("p_in_l2", Target::Num(Sig::PInL2)),
    ("p_in_l3", Target::Num(Sig::PInL3)),
    ("p_out_l1", Target::Num(Sig::POutL1)),
    ("p_out_l2", Target::Num(Sig::POutL2)),
    ("p_out_l3", Target::Num(Sig::POutL3)),
    ("q_in", Target::Num(Sig::QIn)),
    ("q_out", Target::Num(Sig::QOut)),
    ("s", Target::Num(Sig::S)),
    ("pf", Target::Num(Sig::Pf)),
    ("freq", Target::Num(Sig::Freq)),
    ("u_l1", Target::Num(Sig::UL1)),
    ("u_l2", Target::Num(Sig::UL2)),
    ("u_l3", Target::Num(Sig::UL3)),
    ("i_l1", Target::Num(Sig::IL1)),
    ("i_l2", Target::Num(Sig::IL2)),
    ("i_l3", Target::Num(Sig::IL3)),
    ("e_in", Target::Num(Sig::EIn)),
    ("e_in_t1", Target::Num(Sig::EInT1)),
    ("e_in_t2", Target::Num(Sig::EInT2)),
    ("e_out", Target::Num(Sig::EOut)),
    ("e_out_t1", Target::Num(Sig::EOutT1)),
    ("e_out_t2", Target::Num(Sig::EOutT2)),
    ("eq_in", Target::Num(Sig::EqIn)),
    ("eq_out", Target::Num(Sig::EqOut)),
    ("tariff", Target::Num(Sig::Tariff)),
    ("uptime_h", Target::Num(Sig::UptimeH)),
    ("uptime_s", Target::Num(Sig::UptimeS)),
    ("ts_unix", Target::Num(Sig::TsUnix)),
    ("report_id", Target::Num(Sig::ReportId)),
    ("ts_utc", Target::Text(Txt::TsUtc)),
    ("ts_offset", Target::Text(Txt::TsOffset)),
    ("ts_local_z", Target::Text(Txt::TsLocalZ)),
    ("sys_id", Target::Text(Txt::SysId)),
    ("meter_id", Target::Text(Txt::MeterId)),
    ("meter_type", Target::Text(Txt::MeterType)),
    ("meter_vendor", Target::Text(Txt::MeterVendor)),
    ("meter_model", Target::Text(Txt::MeterModel)),
    ("meter_status", Target::Text(Txt::MeterStatus)),
    ("meter_interface", Target::Text(Txt::MeterInterface)),
    ("meter_protocol", Target::Text(Txt::MeterProtocol)),
    ("boot_id", Target::Text(Txt::BootId)),
    ("volume", Target::Volume),
    ("-", Target::Ignore),
];

impl Target {
    /// The target called `name` in the tables.
    pub(crate) fn named(name: &str) -> Option<Target> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

/// The parsed data tables.
pub(crate) struct Tables {
    /// Report leaf path → target.
    pub report: HashMap<&'static str, Target>,
    /// SSE key → target.
    pub sse: HashMap<&'static str, Target>,
    /// Template variable → target.
    pub variables: HashMap<&'static str, Target>,
    /// Default MQTT payload path → template variable (all presets).
    pub mqtt_fields: Vec<(&'static str, &'static str, &'static str)>,
}

fn pairs(table: &'static str, text: &'static str) -> Result<HashMap<&'static str, Target>, TableError> {
    let mut map = HashMap::new();
    for row in table::rows(table, text) {
        let [key, target] = row.cells()?;
        let target = Target::named(target).ok_or_else(|| row.error(format!("unknown signal `{target}`")))?;
        map.insert(key, target);
    }
    Ok(map)
}

table::parsed_once!(Tables, parse_tables);

fn parse_tables() -> Result<Tables, TableError> {
    let variables = pairs("adapters/whatwatt/variables.tsv", VARIABLES_TSV)?;
    let mut mqtt_fields = Vec::new();
    for row in table::rows("adapters/whatwatt/mqtt-fields.tsv", MQTT_FIELDS_TSV) {
        let [preset, path, var] = row.cells()?;
        if !variables.contains_key(var) {
            return Err(row.error(format!("unknown variable `{var}` (see variables.tsv)")));
        }
        mqtt_fields.push((preset, path, var));
    }
    Ok(Tables {
        report: pairs("adapters/whatwatt/report.tsv", REPORT_TSV)?,
        sse: pairs("adapters/whatwatt/sse.tsv", SSE_TSV)?,
        variables,
        mqtt_fields,
    })
}

/// Something in a payload the mapping could not use; the adapter counts and logs it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Issue {
    /// A key in no table: firmware drift or a template field nobody mapped.
    Unknown(String),
    /// A known key whose value has the wrong type; `reason` is the metric label.
    Invalid {
        /// The key.
        key: String,
        /// Metric label (`bad_type`).
        reason: &'static str,
    },
}

/// One message read into signals. Borrowed from the parsed JSON: no copies on the hot path.
#[derive(Debug)]
pub(crate) struct Reading<'a> {
    num: [Option<f64>; Sig::COUNT],
    text: [Option<Cow<'a, str>>; Txt::COUNT],
    /// The chosen sub-meter reading (unit per meter; m³ for the usual gas and water meters).
    pub volume: Option<f64>,
}

impl Default for Reading<'_> {
    fn default() -> Self {
        Reading { num: [None; Sig::COUNT], text: [const { None }; Txt::COUNT], volume: None }
    }
}

impl<'a> Reading<'a> {
    /// A numeric signal.
    pub(crate) fn num(&self, s: Sig) -> Option<f64> {
        self.num[s as usize]
    }
    /// A text signal.
    pub(crate) fn text(&self, t: Txt) -> Option<&str> {
        self.text[t as usize].as_deref()
    }
    /// Sets a numeric signal (tests, the simulator's checks).
    #[cfg(test)]
    pub(crate) fn set_num(&mut self, s: Sig, v: f64) {
        self.num[s as usize] = Some(v);
    }
    /// Whether the message carried any measurement at all.
    pub(crate) fn has_measurements(&self) -> bool {
        self.num.iter().enumerate().any(|(i, v)| {
            v.is_some() && i != Sig::TsUnix as usize && i != Sig::ReportId as usize && i != Sig::Tariff as usize
        }) || self.volume.is_some()
    }

    fn put(&mut self, target: Target, key: &str, v: &'a Json, issues: &mut Vec<Issue>) {
        match target {
            Target::Ignore => {}
            Target::Num(s) => match number(v) {
                Ok(n) => {
                    if let Some(n) = n {
                        self.num[s as usize] = Some(n);
                    }
                }
                Err(reason) => {
                    // `${timestamp}` mapped into a field that holds an ISO string (the HA example).
                    if s == Sig::TsUnix
                        && let Json::String(t) = v
                        && parse_ts(t).is_some()
                    {
                        self.text[Txt::TsUtc as usize] = Some(Cow::Borrowed(t.as_str()));
                        return;
                    }
                    issues.push(Issue::Invalid { key: key.to_owned(), reason });
                }
            },
            Target::Text(t) => match v {
                Json::String(s) if !s.is_empty() && s != "null" => self.text[t as usize] = Some(Cow::Borrowed(s)),
                Json::String(_) | Json::Null => {}
                Json::Number(n) => self.text[t as usize] = Some(Cow::Owned(n.to_string())),
                _ => issues.push(Issue::Invalid { key: key.to_owned(), reason: "bad_type" }),
            },
            Target::Volume => match number(v) {
                Ok(n) => {
                    if n.is_some() {
                        self.volume = n;
                    }
                }
                Err(reason) => issues.push(Issue::Invalid { key: key.to_owned(), reason }),
            },
        }
    }
}

/// Reads a number the lenient way templates need: JSON numbers, quoted numbers (`"0.006"`);
/// `null`, `"null"` and `""` are "no value". Anything else is a type error.
pub(crate) fn number(v: &Json) -> Result<Option<f64>, &'static str> {
    match v {
        Json::Number(n) => n.as_f64().filter(|f| f.is_finite()).map(Some).ok_or("bad_number"),
        Json::Null => Ok(None),
        Json::String(s) => {
            let t = s.trim();
            if t.is_empty() || t == "null" {
                return Ok(None);
            }
            t.parse::<f64>().ok().filter(|f| f.is_finite()).map(Some).ok_or("bad_type")
        }
        _ => Err("bad_type"),
    }
}

/// Parses an ISO 8601 / RFC 3339 timestamp with `Z` or an offset; rejects clocks before 2000
/// (an unset meter clock).
pub(crate) fn parse_ts(s: &str) -> Option<OffsetDateTime> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    (t.year() >= 2000).then_some(t)
}

/// Reads a `GET /api/v1/report` body into `r`. Unknown leaves and bad values go to `issues`.
pub(crate) fn read_report<'a>(root: &'a Json, r: &mut Reading<'a>, issues: &mut Vec<Issue>) {
    let table = &tables().report;
    let mut path = String::with_capacity(96);
    // Sub-meter arrays are read by `read_volume`.
    walk(root, &mut path, Some("report.volume"), &mut |p, v| match table.get(p) {
        Some(t) => r.put(*t, p, v, issues),
        None => issues.push(Issue::Unknown(p.to_owned())),
    });
}

/// Visits every leaf (non-object value) with its dotted path; arrays are leaves too. The subtree at
/// `skip` (if any) is not visited.
fn walk<'a>(v: &'a Json, path: &mut String, skip: Option<&str>, f: &mut dyn FnMut(&str, &'a Json)) {
    match v {
        Json::Object(m) => {
            for (k, child) in m {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if skip != Some(path.as_str()) {
                    walk(child, path, skip, f);
                }
                path.truncate(len);
            }
        }
        leaf => f(path, leaf),
    }
}

/// Reads one SSE `live` event object into `r`.
pub(crate) fn read_sse<'a>(obj: &'a serde_json::Map<String, Json>, r: &mut Reading<'a>, issues: &mut Vec<Issue>) {
    let table = &tables().sse;
    for (k, v) in obj {
        if k == "Vol" {
            continue;
        }
        match table.get(k.as_str()) {
            Some(t) => r.put(*t, k, v, issues),
            None => issues.push(Issue::Unknown(k.clone())),
        }
    }
}

/// Which `volume[]` / `Vol[]` entry becomes the `volume` quantity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum VolumeFrom {
    /// The only entry with a reading; nothing when several have one.
    #[default]
    Auto,
    /// Never.
    Off,
    /// The entry on this M-Bus address.
    Bus(i64),
    /// The entry with this meter id.
    MeterId(String),
}

impl VolumeFrom {
    /// Parses the config value: `auto`, `off`, a bus number or a meter id.
    pub(crate) fn parse(s: &str) -> VolumeFrom {
        match s.trim() {
            "" | "auto" => VolumeFrom::Auto,
            "off" | "none" | "false" => VolumeFrom::Off,
            t => match t.parse::<i64>() {
                Ok(n) if t.len() <= 3 => VolumeFrom::Bus(n),
                _ => VolumeFrom::MeterId(t.to_owned()),
            },
        }
    }
}

/// What the sub-meter array held: entries with a reading, and whether the choice was ambiguous.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VolumeSeen {
    /// Entries in the array.
    pub entries: usize,
    /// Entries with a numeric reading.
    pub with_reading: usize,
}

/// Picks the sub-meter reading from a report `volume[]` (`bus`, `meter_id`, `cumulative`) or an
/// SSE `Vol[]` (`Bus`, `M_ID`, `Cum`) array.
pub(crate) fn read_volume(array: Option<&Json>, from: &VolumeFrom, r: &mut Reading<'_>) -> VolumeSeen {
    let Some(Json::Array(items)) = array else { return VolumeSeen::default() };
    let mut seen = VolumeSeen { entries: items.len(), with_reading: 0 };
    let mut only = None;
    for item in items {
        let field = |a: &str, b: &str| item.get(a).or_else(|| item.get(b));
        let cum = field("cumulative", "Cum").and_then(|v| number(v).ok().flatten());
        let Some(cum) = cum else { continue };
        seen.with_reading += 1;
        let bus = field("bus", "Bus").and_then(Json::as_i64);
        let id = field("meter_id", "M_ID").and_then(Json::as_str);
        match from {
            VolumeFrom::Off => {}
            VolumeFrom::Auto => only = Some(cum),
            VolumeFrom::Bus(b) if bus == Some(*b) => r.volume = Some(cum),
            VolumeFrom::MeterId(m) if id == Some(m.as_str()) => r.volume = Some(cum),
            _ => {}
        }
    }
    if *from == VolumeFrom::Auto && seen.with_reading == 1 {
        r.volume = only;
    }
    seen
}

/// MQTT payload path → template target.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldMap {
    map: HashMap<String, Target>,
}

impl FieldMap {
    /// Every built-in preset at once (bridge, vendor docs example, Home Assistant).
    pub(crate) fn presets() -> FieldMap {
        let t = tables();
        let map = t.mqtt_fields.iter().map(|(_, path, var)| ((*path).to_owned(), t.variables[var])).collect();
        FieldMap { map }
    }

    /// From explicit `path → variable` pairs; unknown variables are errors.
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<FieldMap, String> {
        let t = tables();
        let mut map = HashMap::new();
        for (path, var) in pairs {
            let target = if var == "-" {
                Target::Ignore
            } else {
                *t.variables.get(var.trim_start_matches("${").trim_end_matches('}')).ok_or_else(|| {
                    format!(
                        "`{var}` (for `{path}`) is not a whatwatt template variable (e.g. 1_7_0, timestamp, sys.id)"
                    )
                })?
            };
            map.insert(path.to_owned(), target);
        }
        Ok(FieldMap { map })
    }

    /// Adds (or replaces) entries from `other`.
    pub(crate) fn extend(&mut self, other: FieldMap) {
        self.map.extend(other.map);
    }

    /// The target of `path`.
    pub(crate) fn get(&self, path: &str) -> Option<Target> {
        self.map.get(path).copied()
    }
}

/// What a template says about its payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TemplateFields {
    /// `(payload path, variable)` for every leaf that is exactly one `${variable}`.
    pub fields: Vec<(String, String)>,
    /// Paths of leaves mixing text and variables (`"gw-${sys.id}"`): cannot be read back.
    pub mixed: Vec<String>,
}

/// Derives `path → variable` pairs from a gateway template (the text pasted from the Web UI). Each
/// JSON leaf that is exactly one `${variable}` (quoted or not) becomes a pair.
pub(crate) fn fields_from_template(template: &str) -> Result<TemplateFields, String> {
    const MARK: char = '\u{E000}';
    let mut json = String::with_capacity(template.len() + 64);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '$' && rest[1..].starts_with('{') {
            let Some(end) = rest.find('}') else { return Err("a `${` without a closing `}`".into()) };
            let name = &rest[2..end];
            if !in_string {
                json.push('"');
            }
            json.push(MARK);
            json.push_str(name);
            json.push(MARK);
            if !in_string {
                json.push('"');
            }
            rest = &rest[end + 1..];
            escaped = false;
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        json.push(c);
        rest = &rest[c.len_utf8()..];
    }
    let parsed: Json = serde_json::from_str(&json)
        .map_err(|e| format!("the template is not JSON once its variables are filled in: {e}"))?;
    if !parsed.is_object() {
        return Err("the template must render a JSON object".into());
    }
    let mut fields = Vec::new();
    let mut mixed = Vec::new();
    let mut path = String::new();
    collect_template(&parsed, &mut path, &mut fields, &mut mixed, MARK);
    Ok(TemplateFields { fields, mixed })
}

fn collect_template(
    v: &Json,
    path: &mut String,
    fields: &mut Vec<(String, String)>,
    mixed: &mut Vec<String>,
    mark: char,
) {
    match v {
        Json::Object(m) => {
            for (k, child) in m {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                collect_template(child, path, fields, mixed, mark);
                path.truncate(len);
            }
        }
        Json::String(s) if s.contains(mark) => {
            let inner = s.strip_prefix(mark).and_then(|x| x.strip_suffix(mark));
            match inner {
                Some(name) if !name.contains(mark) => fields.push((path.clone(), name.to_owned())),
                _ => mixed.push(path.clone()),
            }
        }
        _ => {}
    }
}

/// Reads one MQTT payload (already parsed) with `fields`.
pub(crate) fn read_payload<'a>(root: &'a Json, fields: &FieldMap, r: &mut Reading<'a>, issues: &mut Vec<Issue>) {
    let mut path = String::with_capacity(64);
    walk(root, &mut path, None, &mut |p, v| match fields.get(p) {
        Some(t) => r.put(t, p, v, issues),
        None => issues.push(Issue::Unknown(p.to_owned())),
    });
}

/// Normalisation options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// A phase whose voltage is below this is treated as absent (single-phase sites report 0 V or
    /// phantom voltages like 36 V on L2/L3); 0 turns the check off.
    pub phase_min_voltage: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { phase_min_voltage: 50.0 }
    }
}

fn q(name: &str) -> Quantity {
    Quantity::known(name)
}

/// Contract quantities, resolved once.
struct Q {
    power: Quantity,
    power_import: Quantity,
    power_export: Quantity,
    power_l: [Quantity; 3],
    voltage_l: [Quantity; 3],
    current_l: [Quantity; 3],
    power_factor: Quantity,
    frequency: Quantity,
    energy_import: Quantity,
    energy_import_t: [Quantity; 2],
    energy_export: Quantity,
    energy_export_t: [Quantity; 2],
    reactive_power_import: Quantity,
    reactive_power_export: Quantity,
    apparent_power: Quantity,
    reactive_energy_import: Quantity,
    reactive_energy_export: Quantity,
    tariff: Quantity,
    uptime: Quantity,
    volume: Quantity,
}

fn quantities() -> &'static Q {
    static Q_: OnceLock<Q> = OnceLock::new();
    Q_.get_or_init(|| Q {
        power: q("power"),
        power_import: q("power_import"),
        power_export: q("power_export"),
        power_l: [q("power_l1"), q("power_l2"), q("power_l3")],
        voltage_l: [q("voltage_l1"), q("voltage_l2"), q("voltage_l3")],
        current_l: [q("current_l1"), q("current_l2"), q("current_l3")],
        power_factor: q("power_factor"),
        frequency: q("frequency"),
        energy_import: q("energy_import"),
        energy_import_t: [q("energy_import_t1"), q("energy_import_t2")],
        energy_export: q("energy_export"),
        energy_export_t: [q("energy_export_t1"), q("energy_export_t2")],
        reactive_power_import: q("reactive_power_import"),
        reactive_power_export: q("reactive_power_export"),
        apparent_power: q("apparent_power"),
        reactive_energy_import: q("reactive_energy_import"),
        reactive_energy_export: q("reactive_energy_export"),
        tariff: q("tariff"),
        uptime: q("uptime"),
        volume: q("volume"),
    })
}

/// Whether a meter status means the values can be trusted (notes §8.5).
pub(crate) fn status_ok(status: &str) -> bool {
    status.trim().eq_ignore_ascii_case("OK")
}

/// The source timestamp of a reading: `${timestamp}`, then `date_time_utc`, then
/// `date_time_local` (a real offset); never `date_time`. `None` = stamp on receipt.
pub(crate) fn source_ts(r: &Reading<'_>) -> Option<OffsetDateTime> {
    if let Some(unix) = r.num(Sig::TsUnix)
        && unix.fract() == 0.0
        && let Ok(t) = OffsetDateTime::from_unix_timestamp(unix as i64)
        && t.year() >= 2000
    {
        return Some(t);
    }
    r.text(Txt::TsUtc).and_then(parse_ts).or_else(|| r.text(Txt::TsOffset).and_then(parse_ts))
}

/// Adds the contract quantities of `r` to `update` (see module docs). Does nothing with
/// measurements when the reading carries a meter status other than `OK`.
pub(crate) fn to_update(r: &Reading<'_>, opts: &Options, update: &mut Update) {
    if r.text(Txt::MeterStatus).is_some_and(|s| !status_ok(s)) {
        return;
    }
    let qs = quantities();
    let num = |s: Sig| r.num(s);
    // A huge kW reading times 1000 overflows to `inf`: no value rather than a non-number.
    let mut push = |q: Quantity, v: f64| {
        if v.is_finite() {
            update.push(q, Value::Number(v));
        }
    };
    let kilo = |v: f64| v * 1000.0;

    // Phases: absent when their voltage says nothing is connected there.
    let volts = [Sig::UL1, Sig::UL2, Sig::UL3];
    let phase_on = |i: usize| match num(volts[i]) {
        Some(u) => opts.phase_min_voltage <= 0.0 || u >= opts.phase_min_voltage,
        None => true,
    };
    let p_in = num(Sig::PIn);
    let p_out = num(Sig::POut);
    if let Some(v) = p_in {
        push(qs.power_import, kilo(v));
    }
    if let Some(v) = p_out {
        push(qs.power_export, kilo(v));
    }
    if let (Some(i), Some(o)) = (p_in, p_out) {
        push(qs.power, kilo(i - o));
    }
    let (ins, outs, amps) =
        ([Sig::PInL1, Sig::PInL2, Sig::PInL3], [Sig::POutL1, Sig::POutL2, Sig::POutL3], [Sig::IL1, Sig::IL2, Sig::IL3]);
    for ph in 0..3 {
        if !phase_on(ph) {
            continue;
        }
        if let (Some(i), Some(o)) = (num(ins[ph]), num(outs[ph])) {
            push(qs.power_l[ph], kilo(i - o));
        }
        if let Some(u) = num(volts[ph]) {
            push(qs.voltage_l[ph], u);
        }
        if let Some(a) = num(amps[ph]) {
            push(qs.current_l[ph], a);
        }
    }
    if let Some(v) = num(Sig::Pf) {
        push(qs.power_factor, v);
    }
    if let Some(v) = num(Sig::Freq) {
        push(qs.frequency, v);
    }
    for (s, quantity) in [
        (Sig::EIn, qs.energy_import),
        (Sig::EInT1, qs.energy_import_t[0]),
        (Sig::EInT2, qs.energy_import_t[1]),
        (Sig::EOut, qs.energy_export),
        (Sig::EOutT1, qs.energy_export_t[0]),
        (Sig::EOutT2, qs.energy_export_t[1]),
        (Sig::EqIn, qs.reactive_energy_import),
        (Sig::EqOut, qs.reactive_energy_export),
    ] {
        if let Some(v) = num(s) {
            push(quantity, v);
        }
    }
    for (s, quantity) in
        [(Sig::QIn, qs.reactive_power_import), (Sig::QOut, qs.reactive_power_export), (Sig::S, qs.apparent_power)]
    {
        if let Some(v) = num(s) {
            push(quantity, kilo(v));
        }
    }
    // 0 (or null) means "unknown" on the gateway: absent rather than a made-up tariff.
    if let Some(t) = num(Sig::Tariff).filter(|t| *t >= 1.0 && t.fract() == 0.0) {
        push(qs.tariff, t);
    }
    if let Some(s) = num(Sig::UptimeS).or_else(|| num(Sig::UptimeH).map(|h| (h * 3600.0).round())) {
        push(qs.uptime, s);
    }
    if let Some(v) = r.volume {
        push(qs.volume, v);
    }
    update.ts = source_ts(r);
}

/// What `GET /api/v1/system` says (notes §3.4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemInfo {
    /// vendor `whatwatt`, model (`WW_Go_1.2`), serial (the 12-hex id), firmware, name.
    pub identity: Identity,
    /// `FREE`, `PLUS`, `PRO`.
    pub licence: Option<String>,
    /// The meter status enum.
    pub meter_status: Option<String>,
    /// `Landis+Gyr LGZ1030784855204 (MBUS/DLMS)`, for `/readyz`.
    pub meter: Option<String>,
    /// The meter's report interval in seconds.
    pub report_interval: Option<f64>,
    /// The gateway's own MQTT client: (enabled, connected).
    pub mqtt_client: Option<(bool, bool)>,
    /// Wi-Fi signal, dBm.
    pub rssi: Option<f64>,
    /// Gateway uptime, s.
    pub uptime: Option<f64>,
}

impl SystemInfo {
    /// Whether the licence is known to be FREE (report, variables and the MQTT client are off).
    pub(crate) fn licence_free(&self) -> bool {
        self.licence.as_deref().is_some_and(|l| l.eq_ignore_ascii_case("FREE"))
    }
}

/// Reads a `GET /api/v1/system` body.
pub(crate) fn read_system(v: &Json) -> SystemInfo {
    let s = |p: &str| v.pointer(p).and_then(Json::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let n = |p: &str| v.pointer(p).and_then(|x| number(x).ok().flatten());
    let b = |p: &str| v.pointer(p).and_then(Json::as_bool);
    let meter = {
        let parts: Vec<String> = ["/meter/manufacturer", "/meter/model", "/meter/type", "/meter/id"]
            .iter()
            .filter_map(|p| s(p))
            .fold(Vec::new(), |mut acc, x| {
                if !acc.contains(&x) {
                    acc.push(x);
                }
                acc
            });
        let link = match (s("/meter/interface"), s("/meter/protocol")) {
            (Some(i), Some(p)) => format!(" ({i}/{p})"),
            (Some(i), None) => format!(" ({i})"),
            _ => String::new(),
        };
        (!parts.is_empty() || !link.is_empty()).then(|| format!("{}{link}", parts.join(" ")).trim().to_owned())
    };
    SystemInfo {
        identity: Identity {
            vendor: Some("whatwatt".into()),
            model: s("/device/model"),
            serial: s("/device/id"),
            firmware: s("/device/firmware"),
            name: s("/device/name"),
        },
        licence: s("/device/license/type"),
        meter_status: s("/meter/status"),
        meter,
        report_interval: n("/meter/report_interval"),
        mqtt_client: b("/clouds/mqtc/enabled").map(|e| (e, b("/clouds/mqtc/connected").unwrap_or(false))),
        rssi: n("/wifi/rssi"),
        uptime: n("/device/time_since_boot").or_else(|| n("/device/time_since_reboot")),
    }
}

#[cfg(test)]
mod tests;

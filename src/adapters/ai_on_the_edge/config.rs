//! The `ai_on_the_edge` keys of a device: what the camera reads (`meter:`, `unit:`), where its
//! number sequences go (`sequences:`, `sequence_of:`), discovery and command settings, the checks
//! that name the offending key, and the cadence (the camera's round interval).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mapping::{self, Dialect};
use crate::config::types::Dur;

/// The firmware's default round interval.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

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

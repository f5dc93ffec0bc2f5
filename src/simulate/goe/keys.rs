//! The charger's API keys as the simulator knows them: the captured 56.9 key set, which keys are
//! writable and with what type and range (the vendor key table plus our own rules), and how a
//! write payload or a `filter=` is parsed, like the firmware does.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

/// The 56.9 connect burst (plus ~3 s of updates, which are ignored: first occurrence wins).
pub(super) const BURST_56_9: &str = include_str!("../../../adapters/goe/fixtures/mqtt-traffic-056.9.log");
/// Vendor key table: key, description, type, R/W, category (tab-separated).
pub(super) const API_KEYS_TSV: &str = include_str!("../../../adapters/goe/fixtures/apikeys.tsv");

/// Keys a real charger serves over HTTP but never publishes on MQTT (go-e.md §1.4); `mcu` would
/// also leak the broker URL.
pub(super) const HTTP_ONLY_KEYS: &[&str] = &["sse", "mce", "mcu"];

/// Keys the simulator computes itself; writes to them must fail like on the device even where the
/// vendor table is vague (`fsp` is R/W in the 60.4 export but answers "without setter").
pub(super) const READ_ONLY_KEYS: &[&str] = &[
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

/// Why a write was refused; rendered differently for MQTT `/result` and HTTP `/api/set`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum WriteError {
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
    pub(super) fn mqtt_text(&self, key: &str, payload: &str) -> String {
        match self {
            WriteError::InvalidJson(kind) => format!("invalid json {kind}: {payload}"),
            other => other.common_text(key, payload),
        }
    }

    /// The text in the `/api/set` response body; HTTP words invalid JSON differently (issue #192).
    pub(super) fn http_text(&self, key: &str, payload: &str) -> String {
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
pub(super) enum Kind {
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
pub(super) struct Spec {
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

    pub(super) fn check(&self, v: &Value) -> Result<(), WriteError> {
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
pub(super) const WRITE_SPECS: &[(&str, Spec)] = &[
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
pub(super) fn vendor_key_table() -> &'static HashMap<&'static str, (&'static str, &'static str)> {
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
pub(super) fn spec_from_vendor_type(typ: &str, current: Option<&Value>) -> Spec {
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
pub(super) fn parse_payload(payload: &str) -> Result<Value, WriteError> {
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

//! The internal model every adapter normalises into: quantities (the one table of names, units, value
//! types, Home Assistant classes and Prometheus names), values, events and device updates.
//!
//! Adapters convert vendor units exactly once, into the canonical unit of the quantity they fill; the
//! router, the metrics collector and (later) discovery only ever read this table.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use time::OffsetDateTime;

/// How a quantity's value behaves; decides its Prometheus type, its Home Assistant state class and
/// which values the counter guard may check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A measurement that goes up and down (power, voltage).
    Gauge,
    /// A lifetime counter that only rises (energy registers, meter readings).
    TotalIncreasing,
    /// A total that resets, e.g. per charging session.
    Total,
    /// One of a fixed set of words (`charging`, `idle`).
    Enum,
    /// `true` / `false`.
    Bool,
    /// Free text (file names, raw digits, error texts).
    Text,
    /// A number the user can write back through `<quantity>/set`.
    Setting,
    /// A writable value that is one of a fixed set of words.
    EnumSetting,
    /// An integer state such as the active tariff.
    Integer,
}

impl ValueKind {
    /// Whether values of this kind are numbers (and so become Prometheus gauges).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ValueKind::Gauge | ValueKind::TotalIncreasing | ValueKind::Total | ValueKind::Setting | ValueKind::Integer
        )
    }

    /// Whether a user may write the quantity.
    pub(crate) fn is_writable(self) -> bool {
        matches!(self, ValueKind::Setting | ValueKind::EnumSetting)
    }
}

/// One row of the quantity table: a canonical quantity family such as `power` or `voltage`.
#[derive(Debug)]
pub struct QuantityFamily {
    /// Canonical base name (`power`, `voltage`, `energy_import`).
    pub name: &'static str,
    /// Canonical unit, printed in docs and Home Assistant discovery; empty for unit-less values.
    pub unit: &'static str,
    /// Value behaviour.
    pub kind: ValueKind,
    /// Home Assistant `device_class`, when one fits.
    pub ha_device_class: Option<&'static str>,
    /// Home Assistant `state_class` (`measurement`, `total`, `total_increasing`).
    pub ha_state_class: Option<&'static str>,
    /// Prometheus metric family name (full, with the unit suffix).
    pub prom_name: &'static str,
    /// Decimal places worth printing; vendors send float32 noise (`49.79999924`) that this removes.
    pub decimals: u8,
    /// Allowed words for enum quantities.
    pub words: &'static [&'static str],
}

macro_rules! family {
    ($name:literal, $unit:literal, $kind:ident, $dc:expr, $sc:expr, $prom:literal, $dec:literal) => {
        QuantityFamily {
            name: $name,
            unit: $unit,
            kind: ValueKind::$kind,
            ha_device_class: $dc,
            ha_state_class: $sc,
            prom_name: $prom,
            decimals: $dec,
            words: &[],
        }
    };
    ($name:literal, $kind:ident, $prom:literal, words = $words:expr) => {
        QuantityFamily {
            name: $name,
            unit: "",
            kind: ValueKind::$kind,
            ha_device_class: Some("enum"),
            ha_state_class: None,
            prom_name: $prom,
            decimals: 0,
            words: $words,
        }
    };
}

const M: Option<&str> = Some("measurement");
const TI: Option<&str> = Some("total_increasing");

/// Charger states (contract §2, go-e `car`).
pub const CHARGER_STATES: &[&str] = &["idle", "charging", "waiting_for_car", "complete", "error", "unknown"];
/// Printer states (contract §2).
pub(crate) const PRINTER_STATES: &[&str] =
    &["offline", "operational", "printing", "pausing", "paused", "cancelling", "finishing", "error", "unknown"];
/// OctoPrint job commands (`print_control/set`, sent over its REST API).
pub(crate) const PRINT_CONTROLS: &[&str] = &["pause", "resume", "cancel"];
/// OctoPrint printer connection commands (`printer_connection/set`).
pub(crate) const PRINTER_CONNECTIONS: &[&str] = &["connect", "disconnect"];
/// go-e `frc` words.
pub(crate) const FORCE_STATES: &[&str] = &["neutral", "off", "on"];
/// go-e `psm` words.
pub(crate) const PHASE_MODES: &[&str] = &["auto", "single", "three"];

/// The quantity table: every family the bridge publishes. Per-phase, per-tariff, per-sensor and
/// set-point variants (`power_l1`, `energy_import_t1`, `temperature_bed`, `temperature_tool0_target`)
/// are resolved onto these rows by [`Quantity::named`].
pub static FAMILIES: &[QuantityFamily] = &[
    family!("power", "W", Gauge, Some("power"), M, "hlbridge_power_watts", 1),
    family!("power_import", "W", Gauge, Some("power"), M, "hlbridge_power_import_watts", 1),
    family!("power_export", "W", Gauge, Some("power"), M, "hlbridge_power_export_watts", 1),
    family!("voltage", "V", Gauge, Some("voltage"), M, "hlbridge_voltage_volts", 2),
    family!("current", "A", Gauge, Some("current"), M, "hlbridge_current_amperes", 3),
    family!("power_factor", "", Gauge, Some("power_factor"), M, "hlbridge_power_factor_ratio", 4),
    family!("frequency", "Hz", Gauge, Some("frequency"), M, "hlbridge_frequency_hertz", 3),
    family!("energy_import", "kWh", TotalIncreasing, Some("energy"), TI, "hlbridge_energy_import_kilowatt_hours", 4),
    family!("energy_export", "kWh", TotalIncreasing, Some("energy"), TI, "hlbridge_energy_export_kilowatt_hours", 4),
    // Smart-meter extras (whatwatt): reactive and apparent power in var/VA like W, registers in kvarh like kWh.
    family!("reactive_power_import", "var", Gauge, Some("reactive_power"), M, "hlbridge_reactive_power_import_vars", 1),
    family!("reactive_power_export", "var", Gauge, Some("reactive_power"), M, "hlbridge_reactive_power_export_vars", 1),
    family!("apparent_power", "VA", Gauge, Some("apparent_power"), M, "hlbridge_apparent_power_volt_amperes", 1),
    family!(
        "reactive_energy_import",
        "kvarh",
        TotalIncreasing,
        // Home Assistant has no device class for kvarh in every version (2025.x refuses it).
        None,
        TI,
        "hlbridge_reactive_energy_import_kilovar_hours",
        4
    ),
    family!(
        "reactive_energy_export",
        "kvarh",
        TotalIncreasing,
        // Home Assistant has no device class for kvarh in every version (2025.x refuses it).
        None,
        TI,
        "hlbridge_reactive_energy_export_kilovar_hours",
        4
    ),
    family!("tariff", "", Integer, None, None, "hlbridge_tariff", 0),
    // total_increasing for Home Assistant: a drop to 0 at the next plug-in is a new session, not negative energy.
    family!("session_energy", "kWh", Total, Some("energy"), TI, "hlbridge_session_energy_kilowatt_hours", 4),
    family!("charger_state", Enum, "hlbridge_charger_state_info", words = CHARGER_STATES),
    family!("car_connected", "", Bool, None, None, "hlbridge_car_connected", 0),
    family!("charging_allowed", "", Bool, None, None, "hlbridge_charging_allowed", 0),
    family!("current_limit", "A", Setting, Some("current"), None, "hlbridge_current_limit_amperes", 0),
    family!("current_allowed", "A", Gauge, Some("current"), M, "hlbridge_current_allowed_amperes", 0),
    family!("force_state", EnumSetting, "hlbridge_force_state_info", words = FORCE_STATES),
    family!("phase_mode", EnumSetting, "hlbridge_phase_mode_info", words = PHASE_MODES),
    family!("charger_error", "", Text, None, None, "hlbridge_charger_error_info", 0),
    family!("charge_reason", "", Text, None, None, "hlbridge_charge_reason_info", 0),
    family!("temperature", "°C", Gauge, Some("temperature"), M, "hlbridge_temperature_celsius", 2),
    family!("volume", "m³", TotalIncreasing, Some("water"), TI, "hlbridge_volume_cubic_meters", 4),
    family!("flow_rate", "m³/h", Gauge, Some("volume_flow_rate"), M, "hlbridge_flow_rate_cubic_meters_per_hour", 4),
    family!("reading_raw", "", Text, None, None, "hlbridge_reading_raw_info", 0),
    family!("reading_error", "", Text, None, None, "hlbridge_reading_error_info", 0),
    family!("printer_state", Enum, "hlbridge_printer_state_info", words = PRINTER_STATES),
    family!("print_control", EnumSetting, "hlbridge_print_control_info", words = PRINT_CONTROLS),
    family!("printer_connection", EnumSetting, "hlbridge_printer_connection_info", words = PRINTER_CONNECTIONS),
    family!("print_progress", "%", Gauge, None, M, "hlbridge_print_progress_percent", 2),
    family!("print_time_elapsed", "s", Gauge, Some("duration"), M, "hlbridge_print_time_elapsed_seconds", 0),
    family!("print_time_left", "s", Gauge, Some("duration"), M, "hlbridge_print_time_left_seconds", 0),
    family!("print_file", "", Text, None, None, "hlbridge_print_file_info", 0),
    family!("slicing_progress", "%", Gauge, None, M, "hlbridge_slicing_progress_percent", 0),
    family!("rssi", "dBm", Gauge, Some("signal_strength"), M, "hlbridge_rssi_dbm", 0),
    family!("uptime", "s", Gauge, Some("duration"), M, "hlbridge_uptime_seconds", 0),
];

/// The plausible range of every numeric family, in its canonical unit: readings outside it are
/// rejected by the router (counted in `hlbridge_readings_rejected_total{reason="out_of_range"}`),
/// as are NaN and infinities. Generous on purpose: they exist to keep garbage (a register read as
/// −9.2e18, a ±1e9 °C sensor) out, not to judge a device; every value of every capture in
/// `shared/samples` lies well inside. Families missing here (enums, booleans, text) have no range.
pub(crate) static PLAUSIBLE_RANGES: &[(&str, f64, f64)] = &[
    // A home or a small business: 10 MW either way covers any connection a whatwatt Go reads.
    ("power", -1.0e7, 1.0e7),
    ("power_import", -1.0e7, 1.0e7),
    ("power_export", -1.0e7, 1.0e7),
    ("reactive_power_import", -1.0e7, 1.0e7),
    ("reactive_power_export", -1.0e7, 1.0e7),
    ("apparent_power", 0.0, 1.0e7),
    // RMS voltages of low-voltage grids (and the secondary side of instrument transformers).
    ("voltage", 0.0, 2000.0),
    // Some meters sign the current by direction.
    ("current", -1.0e5, 1.0e5),
    // A ratio; signed by a few meters for export, with room for rounding.
    ("power_factor", -1.1, 1.1),
    // 50 and 60 Hz grids, with a wide margin for islanded or generator supply.
    ("frequency", 40.0, 70.0),
    // Lifetime registers: a billion kWh is far beyond any meter a home lab reads; never negative.
    ("energy_import", 0.0, 1.0e9),
    ("energy_export", 0.0, 1.0e9),
    ("reactive_energy_import", 0.0, 1.0e9),
    ("reactive_energy_export", 0.0, 1.0e9),
    ("tariff", 0.0, 100.0),
    ("session_energy", 0.0, 1.0e6),
    // go-e sets 6..32 A; DC chargers go to a few hundred.
    ("current_limit", 0.0, 1000.0),
    ("current_allowed", 0.0, 1000.0),
    // Outdoor sensors to printer hotends and ovens.
    ("temperature", -100.0, 1000.0),
    ("volume", 0.0, 1.0e9),
    // Camera meters report a negative rate when they misread; the device itself flags those.
    ("flow_rate", -1.0e6, 1.0e6),
    ("print_progress", 0.0, 100.0),
    // About three years.
    ("print_time_elapsed", 0.0, 1.0e8),
    ("print_time_left", 0.0, 1.0e8),
    ("slicing_progress", 0.0, 100.0),
    // dBm; -127 is what AI-on-the-edge reports without access-point info.
    ("rssi", -150.0, 0.0),
    // About 300 years.
    ("uptime", 0.0, 1.0e10),
];

/// The plausible range of `family` (see [`PLAUSIBLE_RANGES`]).
pub(crate) fn plausible_range(family: &QuantityFamily) -> Option<(f64, f64)> {
    PLAUSIBLE_RANGES.iter().find(|(n, _, _)| *n == family.name).map(|(_, lo, hi)| (*lo, *hi))
}

/// Which label a variant of a family carries in Prometheus instead of a name suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VariantLabel {
    /// `phase="l1"` for `power_l1`, `voltage_n`.
    Phase,
    /// `tariff="1"` for `energy_import_t1`.
    Tariff,
    /// `sensor="bed"` for `temperature_bed`.
    Sensor,
}

impl VariantLabel {
    /// The Prometheus label name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            VariantLabel::Phase => "phase",
            VariantLabel::Tariff => "tariff",
            VariantLabel::Sensor => "sensor",
        }
    }
}

/// A resolved quantity: its full name plus the family row it belongs to.
#[derive(Debug)]
pub struct QuantityDef {
    /// Full canonical name, used in topics and the state JSON (`power_l1`).
    pub name: &'static str,
    /// The family row (unit, kind, classes, Prometheus name).
    pub family: &'static QuantityFamily,
    /// The variant label and its value (`phase`, `l1`), if this is a variant.
    pub(crate) variant: Option<(VariantLabel, &'static str)>,
    /// True for set points (`temperature_bed_target`): exported with `target="true"`.
    pub target: bool,
    /// The family's plausible range, resolved once here rather than per reading.
    pub range: Option<(f64, f64)>,
}

/// A cheap handle to a resolved quantity (a pointer into the interned table).
#[derive(Clone, Copy)]
pub struct Quantity(&'static QuantityDef);

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}
impl Eq for Quantity {}

impl std::hash::Hash for Quantity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.0 as *const QuantityDef).hash(state)
    }
}

impl std::fmt::Debug for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name)
    }
}

/// The most `temperature_<sensor>` names the process interns. Every other name the grammar accepts
/// comes from a finite set (families, phases, tariffs, `_target`), but sensor names are open-ended
/// and come from devices (OctoPrint tool names), so they alone are capped, and only adapters
/// ([`Quantity::named`]) add them: topics anyone can publish to (`/set`, `/reset`) only look up.
const MAX_SENSOR_NAMES: usize = 4096;

/// The interned quantities and how many of them are open-ended sensor names.
#[derive(Default)]
struct Interned {
    /// Full name → leaked definition (lives for the process, so handles are plain pointers).
    names: HashMap<&'static str, &'static QuantityDef>,
    /// How many of `names` are `temperature_<sensor>` variants, counted against [`MAX_SENSOR_NAMES`].
    sensors: usize,
}

fn interned() -> &'static Mutex<Interned> {
    static TABLE: OnceLock<Mutex<Interned>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(Interned::default()))
}

/// Who asks for a name decides what may be added to the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Intern {
    /// An adapter: sensor names are added up to [`MAX_SENSOR_NAMES`].
    Capped,
    /// Code that spells the name itself: a finite set, always added.
    Always,
    /// A topic anyone can publish to: sensor names are never added.
    NoSensors,
}

fn intern(name: &str, mode: Intern) -> Option<Quantity> {
    let mut table = interned().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(def) = table.names.get(name) {
        return Some(Quantity(def));
    }
    let (family, variant, target) = resolve(name)?;
    let sensor = matches!(variant, Some((VariantLabel::Sensor, _)));
    if sensor {
        match mode {
            Intern::NoSensors => return None,
            Intern::Capped if table.sensors >= MAX_SENSOR_NAMES => return None,
            _ => table.sensors += 1,
        }
    }
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let variant = variant.map(|(l, v)| (l, &*Box::leak(v.into_boxed_str())));
    let range = plausible_range(family);
    let def: &'static QuantityDef = Box::leak(Box::new(QuantityDef { name, family, variant, target, range }));
    table.names.insert(name, def);
    Some(Quantity(def))
}

fn family(name: &str) -> Option<&'static QuantityFamily> {
    FAMILIES.iter().find(|f| f.name == name)
}

fn is_sensor_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Splits a full name into family, variant and target flag, or `None` if it is not a quantity.
/// A family, its variant label and value, and whether it is a set point.
type Resolved = (&'static QuantityFamily, Option<(VariantLabel, String)>, bool);

fn resolve(name: &str) -> Option<Resolved> {
    if let Some(f) = family(name) {
        return Some((f, None, false));
    }
    let (base, target) = match name.strip_suffix("_target") {
        Some(b) => (b, true),
        None => (name, false),
    };
    if target && let Some(f) = family(base) {
        return Some((f, None, true));
    }
    for (suffix, fam) in [("_l1", "l1"), ("_l2", "l2"), ("_l3", "l3"), ("_n", "n")] {
        if let Some(stem) = base.strip_suffix(suffix)
            && let Some(f) = family(stem)
            && matches!(f.name, "power" | "voltage" | "current" | "power_factor")
        {
            return Some((f, Some((VariantLabel::Phase, fam.to_string())), target));
        }
    }
    for t in ["_t1", "_t2", "_t3", "_t4"] {
        if let Some(stem) = base.strip_suffix(t)
            && let Some(f) = family(stem)
            && matches!(f.name, "energy_import" | "energy_export")
        {
            return Some((f, Some((VariantLabel::Tariff, t[2..].to_string())), target));
        }
    }
    if let Some(sensor) = base.strip_suffix("").and_then(|b| b.strip_prefix("temperature_"))
        && is_sensor_name(sensor)
    {
        return Some((family("temperature")?, Some((VariantLabel::Sensor, sensor.to_string())), target));
    }
    None
}

impl Quantity {
    /// Resolves a canonical name (`power`, `power_l1`, `energy_import_t2`, `temperature_tool0_target`)
    /// to its quantity; `None` for names outside the contract, and for new sensor names once
    /// [`MAX_SENSOR_NAMES`] are interned. For names a device reports.
    pub fn named(name: &str) -> Option<Quantity> {
        intern(name, Intern::Capped)
    }

    /// Resolves a name that arrived from outside (a `<quantity>/set` or `/reset` topic, a config
    /// key): like [`Quantity::named`], but never adds a sensor name no device reported, so strangers
    /// publishing made-up names cannot fill the table.
    pub fn lookup(name: &str) -> Option<Quantity> {
        intern(name, Intern::NoSensors)
    }

    /// Like [`Quantity::named`] for names the code itself spells (a finite set, never capped);
    /// panics on a typo, which tests catch. Never call it with a name from input.
    pub(crate) fn known(name: &str) -> Quantity {
        Quantity::try_known(name).unwrap_or_else(|| panic!("`{name}` is not a quantity of the contract"))
    }

    /// Like [`Quantity::known`] without the panic: for the vendor tables, whose rows are checked at
    /// start-up with their file and line.
    pub(crate) fn try_known(name: &str) -> Option<Quantity> {
        intern(name, Intern::Always)
    }

    /// Whether `value` is a number this quantity can take: finite and inside the family's
    /// [`PLAUSIBLE_RANGES`] entry (families without one accept any finite number).
    pub fn plausible(self, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        match self.0.range {
            // A hair of slack for float noise at the edges (100.00000001 %).
            Some((lo, hi)) => {
                let slack = |b: f64| 1e-9 * b.abs().max(1.0);
                value >= lo - slack(lo) && value <= hi + slack(hi)
            }
            None => true,
        }
    }

    /// The full canonical name.
    pub(crate) fn name(self) -> &'static str {
        self.0.name
    }

    /// The resolved definition.
    pub fn def(self) -> &'static QuantityDef {
        self.0
    }

    /// The family row.
    pub fn family(self) -> &'static QuantityFamily {
        self.0.family
    }
}

/// A value in its canonical unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any number (f64 covers every vendor's range).
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A word or text; static words cost no allocation.
    Text(Cow<'static, str>),
}

impl Value {
    /// The number, if this is one.
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// Writes the value as plain text (the per-quantity topic payload), rounding numbers to the
    /// quantity's precision and printing no needless digits.
    pub(crate) fn write_plain(&self, decimals: u8, out: &mut String) {
        match self {
            Value::Number(n) => write_number(*n, decimals, out),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Text(t) => out.push_str(t),
        }
    }

    /// Writes the value as JSON.
    pub(crate) fn write_json(&self, decimals: u8, out: &mut String) {
        match self {
            Value::Number(n) if n.is_finite() => write_number(*n, decimals, out),
            Value::Number(_) => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Text(t) => write_json_string(t, out),
        }
    }

    /// Converts to a serde_json value (for event data and HTTP answers; not the hot path).
    pub(crate) fn to_json(&self, decimals: u8) -> serde_json::Value {
        match self {
            Value::Number(n) => {
                let r = round_to(*n, decimals);
                if r.fract() == 0.0 && r.abs() < 9.0e15 {
                    serde_json::Value::from(r as i64)
                } else {
                    serde_json::Number::from_f64(r).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
                }
            }
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Text(t) => serde_json::Value::String(t.to_string()),
        }
    }
}

/// Rounds to `decimals` places.
pub(crate) fn round_to(n: f64, decimals: u8) -> f64 {
    let p = pow10(decimals);
    if !(n * p).is_finite() {
        // Scaling a huge reading overflows to `inf`; a number that large has no decimals anyway.
        return n;
    }
    let r = round_half_away(n * p) / p;
    if r == 0.0 { 0.0 } else { r } // no "-0"
}

/// `x.round()` (half away from zero) without the library call it compiles to on baseline x86-64
/// (no SSE4.1 `roundsd`): the hot path rounds every value of every input twice. Exact: below 2^52
/// `x - trunc(x)` is representable, and from 2^52 up every double is already an integer. The sign
/// of a zero result may differ from `round` (`-0.3` gives `0`); callers print no `-0` anyway.
#[inline]
pub(crate) fn round_half_away(x: f64) -> f64 {
    const INTEGRAL_FROM: f64 = 4_503_599_627_370_496.0; // 2^52
    // NaN and the infinities come back as they are.
    if x.is_nan() || x.abs() >= INTEGRAL_FROM {
        return x;
    }
    let t = x as i64;
    let frac = x - t as f64;
    let r = if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    };
    r as f64
}

/// Prints a number rounded to `decimals` places with the shortest representation (`230.1`, `16`).
pub(crate) fn write_number(n: f64, decimals: u8, out: &mut String) {
    if !n.is_finite() {
        out.push_str("NaN");
        return;
    }
    if let Some(scaled) = scaled_integer(n, decimals) {
        write_scaled(scaled, decimals, out);
        return;
    }
    let r = round_to(n, decimals);
    if r.fract() == 0.0 && r.abs() < 9.0e15 {
        let _ = write!(out, "{}", r as i64);
    } else if r.abs() >= 9.0e15 {
        // `{r}` would print up to 309 digits, which JSON readers (serde_json too) reject as out of range.
        let _ = write!(out, "{r:e}");
    } else {
        let _ = write!(out, "{r}");
    }
}

/// 10^`decimals`, exact (every power up to 10^22 is a double), without a `powi` call per value.
pub(crate) fn pow10(decimals: u8) -> f64 {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
        1e20, 1e21, 1e22,
    ];
    POW10.get(usize::from(decimals)).copied().unwrap_or_else(|| 10f64.powi(i32::from(decimals)))
}

/// `n` rounded to `decimals` places as an integer count of 10^-decimals (`230.12`, 2 → 23012), when
/// that count has at most 15 digits. Every such decimal is the shortest text that reads back as the
/// double [`round_to`] gives (a double holds 15 significant digits exactly), so printing the count
/// with a decimal point is what `{}` prints for that double, at a fraction of the cost of the
/// float formatter (the hot path prints every value of every input).
fn scaled_integer(n: f64, decimals: u8) -> Option<i64> {
    if decimals > 15 {
        return None;
    }
    let scaled = round_half_away(n * pow10(decimals));
    // Also false for NaN and the infinities.
    (scaled.abs() < 1e15).then_some(scaled as i64)
}

/// Prints `scaled` × 10^-`decimals` without trailing zeros (`23010`, 2 → `230.1`; `0` → `0`).
fn write_scaled(scaled: i64, decimals: u8, out: &mut String) {
    if scaled == 0 {
        out.push('0'); // never `-0`
        return;
    }
    if scaled < 0 {
        out.push('-');
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(scaled.unsigned_abs());
    let d = usize::from(decimals);
    // Digits of the fraction that are not trailing zeros.
    let zeros = digits.bytes().rev().take(d).take_while(|&c| c == b'0').count();
    let frac_len = d - zeros;
    if digits.len() > d {
        let point = digits.len() - d;
        out.push_str(&digits[..point]);
        if frac_len > 0 {
            out.push('.');
            out.push_str(&digits[point..point + frac_len]);
        }
    } else {
        // |value| < 1: `0.` and the zeros the count has no digits for.
        out.push('0');
        if frac_len > 0 {
            out.push('.');
            let missing = d - digits.len();
            out.extend(std::iter::repeat_n('0', missing));
            out.push_str(&digits[..frac_len - missing]);
        }
    }
}

/// A finite number's printed text ([`write_number`]), kept beside the value it was printed from:
/// a router step prints each changed value twice (its own topic, then the state JSON), and printing
/// is most of what a value costs there. The text sits inline in a `CompactString` (up to 24 bytes:
/// every number the fast path prints; a longer one, from the `{:e}` fallback, goes to the heap), so
/// keeping it allocates nothing and giving it back checks no UTF-8 (a `String` grew the 1 000-device bench by ~0.9 MiB; inline bytes re-validated as UTF-8 on
/// every use gave back half of the gain).
#[derive(Clone, Default)]
pub(crate) struct NumberText {
    /// The bits of the double `text` was printed from: the text is only given back for exactly that
    /// double.
    bits: u64,
    /// The text; empty: nothing kept.
    text: compact_str::CompactString,
}

impl NumberText {
    /// Keeps `text`, printed from `n`; keeps nothing for a number that is not finite (its plain
    /// text and its JSON differ: `NaN` / `null`).
    pub(crate) fn keep(&mut self, n: f64, text: &str) {
        // A fresh inline string is cheaper than clearing and appending (~70 instructions).
        self.text = if n.is_finite() { compact_str::CompactString::new(text) } else { Default::default() };
        self.bits = n.to_bits();
    }

    /// The text, if it was printed from exactly `n`.
    pub(crate) fn text_for(&self, n: f64) -> Option<&str> {
        (n.to_bits() == self.bits && !self.text.is_empty()).then_some(self.text.as_str())
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An event a device reported or the adapter derived (`charging_started`, `print_done`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// snake_case event name.
    pub name: Cow<'static, str>,
    /// Normalised event data.
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event without data.
    pub(crate) fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Event { name: name.into(), data: serde_json::Map::new() }
    }

    /// Adds one data field.
    pub(crate) fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }
}

/// What a device says about itself.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Identity {
    /// Manufacturer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Model or device type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Firmware version as the device prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// The name the owner gave the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Identity {
    /// Takes every field `other` knows; returns whether anything changed.
    pub(crate) fn merge(&mut self, other: &Identity) -> bool {
        let mut changed = false;
        for (mine, theirs) in [
            (&mut self.vendor, &other.vendor),
            (&mut self.model, &other.model),
            (&mut self.serial, &other.serial),
            (&mut self.firmware, &other.firmware),
            (&mut self.name, &other.name),
        ] {
            if theirs.is_some() && mine != theirs {
                mine.clone_from(theirs);
                changed = true;
            }
        }
        changed
    }
}

/// Everything one device message produced, handed from an adapter to the router.
#[derive(Debug, Default)]
pub(crate) struct Update {
    /// Source timestamp of the reading; `None` means "now" (time of receipt).
    pub ts: Option<OffsetDateTime>,
    /// New values, in canonical units.
    pub readings: Vec<(Quantity, Value)>,
    /// Events derived from this message.
    pub events: Vec<Event>,
    /// Identity facts learned from this message.
    pub identity: Option<Identity>,
    /// Whether this message proves the device is alive now (false for retained replays).
    pub fresh: bool,
}

impl Update {
    /// An empty update that counts as a live sign of the device.
    pub(crate) fn fresh() -> Self {
        Update { fresh: true, ..Default::default() }
    }

    /// Adds a reading.
    pub(crate) fn push(&mut self, q: Quantity, v: Value) {
        self.readings.push((q, v));
    }

    /// True when there is nothing to route.
    pub(crate) fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.events.is_empty() && self.identity.is_none()
    }
}

/// The four device kinds (contract §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeviceKind {
    /// whatwatt Go.
    EnergyMeter,
    /// go-e Charger.
    EvCharger,
    /// AI-on-the-edge camera meters.
    UtilityMeter,
    /// OctoPrint.
    Printer,
}

impl DeviceKind {
    /// The snake_case name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeviceKind::EnergyMeter => "energy_meter",
            DeviceKind::EvCharger => "ev_charger",
            DeviceKind::UtilityMeter => "utility_meter",
            DeviceKind::Printer => "printer",
        }
    }
}

/// Formats a timestamp as RFC 3339 UTC with millisecond precision (`2026-11-22T03:04:05.123Z`).
pub(crate) fn format_ts(ts: OffsetDateTime, out: &mut String) {
    let ts = ts.to_offset(time::UtcOffset::UTC);
    let year = ts.year();
    if !(0..=9999).contains(&year) {
        // Outside RFC 3339's four-digit years: still readable, never on a real device's clock.
        let _ = write!(out, "{year:04}");
    } else {
        push_digits(out, year.unsigned_abs(), 4);
    }
    // Hand-written padding: the formatter's `{:02}` machinery cost more than the rest of a state JSON.
    for (sep, value, width) in [
        ('-', u32::from(u8::from(ts.month())), 2),
        ('-', u32::from(ts.day()), 2),
        ('T', u32::from(ts.hour()), 2),
        (':', u32::from(ts.minute()), 2),
        (':', u32::from(ts.second()), 2),
        ('.', u32::from(ts.millisecond()), 3),
    ] {
        out.push(sep);
        push_digits(out, value, width);
    }
    out.push('Z');
}

/// Appends `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// [`format_ts`] into a new string.
pub(crate) fn ts_string(ts: OffsetDateTime) -> String {
    let mut s = String::with_capacity(24);
    format_ts(ts, &mut s);
    s
}

#[cfg(test)]
mod tests;

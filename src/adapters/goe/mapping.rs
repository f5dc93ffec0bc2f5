//! Pure go-e key mapping: API-v2 key + JSON value → canonical quantities, identity and charger
//! events. No IO; the MQTT and HTTP transports both feed it. The vendor knowledge lives as data in
//! `adapters/goe/` (mapping.tsv, nrg.tsv, enums.tsv, known-keys.txt), embedded at build time.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::adapters::table::{self, TableError};

use serde_json::Value as Json;

use crate::model::{Event, Identity, Quantity, Update, Value};

const MAPPING_TSV: &str = include_str!("../../../adapters/goe/mapping.tsv");
const NRG_TSV: &str = include_str!("../../../adapters/goe/nrg.tsv");
/// Fields of an `nrg` array as API v2 chargers send it.
pub(crate) const NRG_FIELDS: usize = 16;
const ENUMS_TSV: &str = include_str!("../../../adapters/goe/enums.tsv");
const KNOWN_KEYS: &str = include_str!("../../../adapters/goe/known-keys.txt");

/// Lowest and highest plausible charger temperature; `tma` has carried garbage like `-16843.01`.
const TEMPERATURE_RANGE: std::ops::RangeInclusive<f64> = -60.0..=150.0;

#[derive(Debug, Clone, Copy)]
enum IdField {
    Vendor,
    Model,
    Serial,
    Firmware,
    Name,
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    Number(Quantity),
    WhToKwh(Quantity),
    MsToS(Quantity),
    Bool(Quantity),
    Enum(Quantity, &'static str),
    Identity(IdField),
    Nrg,
    Tma,
}

/// The contract name of each `nrg` field, in array order (`None` for an index the table skips).
pub fn nrg_names() -> [Option<&'static str>; NRG_FIELDS] {
    let mut names = [None; NRG_FIELDS];
    for &(i, q, _) in &tables().nrg {
        if let Some(slot) = names.get_mut(i) {
            *slot = Some(q.name());
        }
    }
    names
}

/// The parsed data tables.
pub(crate) struct Tables {
    rules: HashMap<&'static str, Rule>,
    nrg: Vec<(usize, Quantity, f64)>,
    enums: HashMap<(&'static str, i64), &'static str>,
    known: HashSet<&'static str>,
    /// `temperature`, `temperature_pcb`, then `temperature_sensor3`...
    tma: Vec<Quantity>,
}

table::parsed_once!(Tables, parse_tables);

fn parse_tables() -> Result<Tables, TableError> {
    const MAPPING: &str = "adapters/goe/mapping.tsv";
    let quantity = |row: &table::Row, name: &str| {
        Quantity::try_known(name).ok_or_else(|| row.error(format!("`{name}` is not a quantity of the contract")))
    };
    let mut rules = HashMap::new();
    for row in table::rows(MAPPING, MAPPING_TSV) {
        let [key, target, conv] = row.cells()?;
        let rule = match conv {
            "number" => Rule::Number(quantity(&row, target)?),
            "wh_to_kwh" => Rule::WhToKwh(quantity(&row, target)?),
            "ms_to_s" => Rule::MsToS(quantity(&row, target)?),
            "bool" => Rule::Bool(quantity(&row, target)?),
            "nrg" => Rule::Nrg,
            "tma" => Rule::Tma,
            "text" => Rule::Identity(match target {
                "identity:vendor" => IdField::Vendor,
                "identity:model" => IdField::Model,
                "identity:serial" => IdField::Serial,
                "identity:firmware" => IdField::Firmware,
                "identity:name" => IdField::Name,
                other => return Err(row.error(format!("unknown identity target `{other}`"))),
            }),
            c => match c.strip_prefix("enum:") {
                Some(table) => Rule::Enum(quantity(&row, target)?, table),
                None => return Err(row.error(format!("unknown conversion `{c}`"))),
            },
        };
        rules.insert(key, rule);
    }
    let mut nrg = Vec::new();
    for row in table::rows("adapters/goe/nrg.tsv", NRG_TSV) {
        let [index, name, scale] = row.cells()?;
        nrg.push((row.parse("index", index)?, quantity(&row, name)?, row.parse("scale", scale)?));
    }
    let mut enums = HashMap::new();
    for row in table::rows("adapters/goe/enums.tsv", ENUMS_TSV) {
        let [table, value, word] = row.cells()?;
        enums.insert((table, row.parse("value", value)?), word);
    }
    let known = KNOWN_KEYS.lines().filter(|l| !l.starts_with('#')).map(str::trim).collect();
    let mut tma = vec![Quantity::known("temperature"), Quantity::known("temperature_pcb")];
    for i in 3..=8 {
        tma.push(Quantity::known(&format!("temperature_sensor{i}")));
    }
    Ok(Tables { rules, nrg, enums, known, tma })
}

/// How one key was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyOutcome {
    /// Mapped into the update.
    Mapped,
    /// A documented key the bridge does not normalise.
    Ignored,
    /// A key in no vendor table: firmware drift.
    Unknown,
    /// The value had a type or range the key never has; the reason is a metric label.
    Invalid(&'static str),
}

/// Reads a JSON number, also from a quoted number (seen from some integrations and firmware).
fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Json::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Json::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn boolean(v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => n.as_i64().map(|i| i != 0),
        Json::String(s) => match s.as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Per-device mapping state: what is needed to derive events from transitions.
#[derive(Debug, Default)]
pub(crate) struct Mapper {
    /// Last `car` value seen (None before the first).
    last_car: Option<i64>,
    /// Last session energy (kWh) for event data.
    last_session_kwh: Option<f64>,
}

impl Mapper {
    /// Maps one key. `live` is false for retained replays: they set values but derive no events.
    pub(crate) fn map(&mut self, key: &str, value: &Json, live: bool, update: &mut Update) -> KeyOutcome {
        let t = tables();
        let Some(rule) = t.rules.get(key) else {
            return if t.known.contains(key) { KeyOutcome::Ignored } else { KeyOutcome::Unknown };
        };
        if value.is_null() {
            // `null` means "not available right now" (acu when not allowed, car without controller).
            if let Rule::Enum(q, "car") = rule {
                update.push(*q, Value::Text(Cow::Borrowed("unknown")));
                return KeyOutcome::Mapped;
            }
            return KeyOutcome::Mapped;
        }
        match *rule {
            Rule::Number(q) => match number(value) {
                Some(n) => update.push(q, Value::Number(n)),
                None => return KeyOutcome::Invalid("bad_type"),
            },
            Rule::WhToKwh(q) => match number(value) {
                Some(n) if n >= 0.0 => {
                    let kwh = n / 1000.0;
                    if key == "wh" {
                        self.last_session_kwh = Some(kwh);
                    }
                    update.push(q, Value::Number(kwh));
                }
                Some(_) => return KeyOutcome::Invalid("negative_energy"),
                None => return KeyOutcome::Invalid("bad_type"),
            },
            Rule::MsToS(q) => match number(value) {
                Some(n) => update.push(q, Value::Number((n / 1000.0).floor())),
                None => return KeyOutcome::Invalid("bad_type"),
            },
            Rule::Bool(q) => match boolean(value) {
                Some(b) => update.push(q, Value::Bool(b)),
                None => return KeyOutcome::Invalid("bad_type"),
            },
            Rule::Enum(q, table) => {
                let Some(n) = number(value).filter(|n| n.fract() == 0.0).map(|n| n as i64) else {
                    return KeyOutcome::Invalid("bad_type");
                };
                let word: Cow<'static, str> = match t.enums.get(&(table, n)) {
                    Some(w) => Cow::Borrowed(*w),
                    None if table == "car" => Cow::Borrowed("unknown"),
                    None => Cow::Owned(format!("code_{n}")),
                };
                update.push(q, Value::Text(word));
                if table == "car" {
                    self.car(n, live, update);
                }
            }
            Rule::Identity(field) => {
                let text = match value {
                    Json::String(s) => s.clone(),
                    Json::Number(n) => n.to_string(),
                    _ => return KeyOutcome::Invalid("bad_type"),
                };
                let id = update.identity.get_or_insert_with(Identity::default);
                let slot = match field {
                    IdField::Vendor => &mut id.vendor,
                    IdField::Model => &mut id.model,
                    IdField::Serial => &mut id.serial,
                    IdField::Firmware => &mut id.firmware,
                    IdField::Name => &mut id.name,
                };
                *slot = Some(text);
            }
            Rule::Nrg => return self.nrg(value, update),
            Rule::Tma => return tma(value, update),
        }
        KeyOutcome::Mapped
    }

    /// `nrg` when it is what chargers send: 16 numbers or nulls, already parsed (no JSON tree).
    /// Maps exactly as [`Mapper::map`] maps the same array.
    pub(crate) fn nrg_fields(&self, fields: &[Option<f64>; NRG_FIELDS], update: &mut Update) {
        for &(i, q, scale) in &tables().nrg {
            if let Some(Some(n)) = fields.get(i) {
                update.push(q, Value::Number(n * scale));
            }
        }
    }

    fn nrg(&self, value: &Json, update: &mut Update) -> KeyOutcome {
        let Json::Array(items) = value else {
            return KeyOutcome::Invalid("bad_type");
        };
        let mut bad = false;
        for &(i, q, scale) in &tables().nrg {
            match items.get(i) {
                None | Some(Json::Null) => {}
                Some(v) => match number(v) {
                    Some(n) => update.push(q, Value::Number(n * scale)),
                    None => bad = true,
                },
            }
        }
        if bad { KeyOutcome::Invalid("bad_array_element") } else { KeyOutcome::Mapped }
    }

    fn car(&mut self, car: i64, live: bool, update: &mut Update) {
        let plugged = |c: i64| matches!(c, 2..=4);
        if car == 1 || plugged(car) {
            update.push(Quantity::known("car_connected"), Value::Bool(plugged(car)));
        }
        let prev = self.last_car.replace(car);
        let Some(prev) = prev else { return };
        if !live || prev == car {
            return;
        }
        let event = |name: &'static str| {
            let mut e = Event::new(name).with("car", car).with("previous_car", prev);
            if let Some(kwh) = self.last_session_kwh {
                e = e.with("session_energy", crate::model::round_to(kwh, 4));
            }
            e
        };
        if prev == 2 && car != 2 {
            update.events.push(event("charging_stopped"));
        }
        if prev == 1 && plugged(car) {
            update.events.push(event("car_connected"));
        }
        if plugged(prev) && car == 1 {
            update.events.push(event("car_disconnected"));
        }
        if car == 2 && prev != 2 {
            update.events.push(event("charging_started"));
        }
    }
}

fn tma(value: &Json, update: &mut Update) -> KeyOutcome {
    let Json::Array(items) = value else {
        return KeyOutcome::Invalid("bad_type");
    };
    let mut bad = false;
    for (i, v) in items.iter().enumerate() {
        let Some(q) = tables().tma.get(i) else { break };
        match number(v) {
            Some(n) if TEMPERATURE_RANGE.contains(&n) => update.push(*q, Value::Number(n)),
            Some(_) => bad = true,
            None if v.is_null() => {}
            None => bad = true,
        }
    }
    if bad { KeyOutcome::Invalid("implausible_temperature") } else { KeyOutcome::Mapped }
}

/// The API-v2 key and JSON value for a write of a writable quantity, or an explanation.
pub(crate) fn command_to_key(quantity: &str, payload: &str) -> Result<(&'static str, Json, Value), String> {
    let p = payload.trim().trim_matches('"');
    match quantity {
        "current_limit" => {
            let n: f64 = p.parse().map_err(|_| format!("`{p}` is not a number of amperes"))?;
            if n.fract() != 0.0 || !(6.0..=32.0).contains(&n) {
                return Err(format!("current_limit must be a whole number from 6 to 32 A, got `{p}`"));
            }
            Ok(("amp", Json::from(n as i64), Value::Number(n)))
        }
        "force_state" => {
            let (n, w) = match p {
                "neutral" | "0" => (0, "neutral"),
                "off" | "1" => (1, "off"),
                "on" | "2" => (2, "on"),
                _ => return Err(format!("force_state must be neutral, off or on, got `{p}`")),
            };
            Ok(("frc", Json::from(n), Value::Text(Cow::Borrowed(w))))
        }
        "phase_mode" => {
            let (n, w) = match p {
                "auto" | "0" => (0, "auto"),
                "single" | "1" => (1, "single"),
                "three" | "2" => (2, "three"),
                _ => {
                    return Err(format!("phase_mode must be auto, single or three, got `{p}`"));
                }
            };
            Ok(("psm", Json::from(n), Value::Text(Cow::Borrowed(w))))
        }
        other => Err(format!("`{other}` cannot be written on a go-e charger")),
    }
}

/// `nrg` as chargers send it (`[230,231,229,0,16.1,...]`: 16 JSON numbers or `null`s, no nesting),
/// parsed without serde: a JSON array of numbers costs serde_json ~450 instructions per number
/// (sequence and option visitors, its own float assembly), which was a fifth of what the bridge
/// spends per `nrg` input. Here each element is checked against JSON's number grammar and turned
/// into a double by one exact division, or for long numbers by the standard library's parser (both
/// correctly rounded, so every shortest printing of a double reads back as that double). Anything else (a string, nesting, a wrong count, a number JSON does
/// not allow, one too large for a double) gives `None`, and the caller takes the general serde
/// path, which accepts or refuses it as before: this never accepts what serde_json refuses.
pub(crate) fn parse_nrg(payload: &[u8]) -> Option<[Option<f64>; NRG_FIELDS]> {
    // One pass over the bytes: `[`, then each element followed by `,` (the last by `]`), JSON's
    // whitespace allowed around every token, nothing after the array but whitespace.
    let mut i = skip_json_ws(payload, 0);
    if payload.get(i) != Some(&b'[') {
        return None;
    }
    let mut fields = [None; NRG_FIELDS];
    for (k, field) in fields.iter_mut().enumerate() {
        i = skip_json_ws(payload, i + 1);
        if payload[i..].starts_with(b"null") {
            i += 4;
        } else {
            *field = Some(json_number_at(payload, &mut i)?);
        }
        i = skip_json_ws(payload, i);
        let closing = if k + 1 == NRG_FIELDS { b']' } else { b',' };
        if payload.get(i) != Some(&closing) {
            return None;
        }
    }
    (skip_json_ws(payload, i + 1) == payload.len()).then_some(fields)
}

/// The first index from `i` on that is not JSON whitespace (space, tab, line feed, carriage
/// return); `b.len()` when there is none.
fn skip_json_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `b` as a finite double when it is exactly one JSON number (see [`json_number_at`]).
#[cfg(test)]
fn json_number(b: &[u8]) -> Option<f64> {
    let mut i = 0;
    json_number_at(b, &mut i).filter(|_| i == b.len())
}

/// The JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`) that starts at `*i`, as a
/// finite double; `*i` ends just after it. What a charger sends (up to 15 digits, no exponent) is
/// computed from the digits read for the grammar check: digits / 10^decimals with both exact in a
/// double is one correctly rounded division (Clinger's fast path, the one the standard library's
/// parser takes first). Longer numbers and exponents go to that parser.
fn json_number_at(b: &[u8], i_out: &mut usize) -> Option<f64> {
    /// More digits than this may not fit a double's 53-bit mantissa exactly.
    const EXACT_DIGITS: u32 = 15;
    /// The digits read so far: their count, and the first `EXACT_DIGITS` of them as an integer.
    #[derive(Default)]
    struct Digits {
        mantissa: u64,
        count: u32,
    }
    impl Digits {
        /// Reads the digits of `b` from `*i` on; how many there were.
        fn read(&mut self, b: &[u8], i: &mut usize) -> u32 {
            let start = self.count;
            while let Some(d) = b.get(*i).filter(|c| c.is_ascii_digit()) {
                if self.count < EXACT_DIGITS {
                    self.mantissa = self.mantissa * 10 + u64::from(d - b'0');
                }
                self.count += 1;
                *i += 1;
            }
            self.count - start
        }
    }
    let begin = *i_out;
    let negative = b.get(begin) == Some(&b'-');
    let mut i = begin + usize::from(negative);
    let mut digits = Digits::default();
    match b.get(i)? {
        b'0' => {
            i += 1;
            digits.count += 1;
        }
        b'1'..=b'9' => {
            digits.read(b, &mut i);
        }
        _ => return None,
    }
    let mut decimals = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        decimals = digits.read(b, &mut i);
        if decimals == 0 {
            return None;
        }
    }
    let mut exponent = false;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        exponent = true;
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    *i_out = i;
    if !exponent && digits.count <= EXACT_DIGITS {
        // `decimals` ≤ 15 here: every power up to 10^15 is exact.
        let n = digits.mantissa as f64 / crate::model::pow10(decimals as u8);
        return Some(if negative { -n } else { n });
    }
    let n: f64 = std::str::from_utf8(&b[begin..i]).ok()?.parse().ok()?;
    n.is_finite().then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_one(m: &mut Mapper, key: &str, json: &str) -> (KeyOutcome, Update) {
        let mut u = Update::fresh();
        let v: Json = serde_json::from_str(json).unwrap();
        (m.map(key, &v, true, &mut u), u)
    }

    proptest::proptest! {
        #[test]
        fn a_parsed_nrg_maps_exactly_as_its_json_array(
            fields in proptest::collection::vec(proptest::option::of(-1e7f64..1e7), NRG_FIELDS)
        ) {
            let json = serde_json::to_string(&fields).unwrap();
            let mut m = Mapper::default();
            let (outcome, via_json) = map_one(&mut m, "nrg", &json);
            proptest::prop_assert_eq!(outcome, KeyOutcome::Mapped);
            let parsed: [Option<f64>; NRG_FIELDS] = serde_json::from_str(&json).unwrap();
            let mut direct = Update::fresh();
            m.nrg_fields(&parsed, &mut direct);
            proptest::prop_assert_eq!(direct.readings, via_json.readings);
        }
    }

    /// nrg payloads as chargers and strangers may send them: numbers of every shape JSON allows,
    /// nulls, whitespace, and near misses (strings, nesting, numbers JSON forbids, wrong counts).
    fn nrg_like() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let number = prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| serde_json::to_string(&f).unwrap()),
            (-1e6f64..1e6).prop_map(|f| format!("{f:.3}")),
            any::<i64>().prop_map(|i| i.to_string()),
            "-?(0|[1-9][0-9]{0,20})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
            Just("null".to_owned()),
            "[ \t\r\n]{0,2}(null|[0-9.eE+-]{1,8})[ \t\r\n]{0,2}",
            prop_oneof![
                Just("\"1\""),
                Just("[1]"),
                Just("NaN"),
                Just("Infinity"),
                Just("01"),
                Just(".5"),
                Just("5."),
                Just("+1"),
                Just("1e999"),
                Just(""),
                Just("nul"),
                Just("0x10")
            ]
            .prop_map(str::to_owned),
        ];
        (proptest::collection::vec(number, 14..=18), "[ \n]{0,2}")
            .prop_map(|(items, ws)| format!("{ws}[{}]{ws}", items.join(",")))
    }

    proptest::proptest! {
        #[test]
        fn the_nrg_parser_accepts_only_what_serde_json_accepts_and_reads_each_number_correctly_rounded(payload in nrg_like()) {
            let fast = parse_nrg(payload.as_bytes());
            let serde = serde_json::from_str::<[Option<f64>; NRG_FIELDS]>(&payload);
            if let Some(fast) = fast {
                serde.expect("accepted here, so serde_json accepts it");
                // serde_json is the oracle for the grammar only: its float assembly is best-effort
                // without its `float_roundtrip` feature (2 units in the last place off for
                // -9.482436040550979e-150). Each number's value is checked against the standard
                // library's correctly rounded reading of its text.
                let inner = payload.trim_matches([' ', '\t', '\r', '\n']);
                let texts = inner[1..inner.len() - 1].split(',').map(|t| t.trim_matches([' ', '\t', '\r', '\n']));
                for (a, text) in fast.iter().zip(texts) {
                    match (a, text) {
                        (None, "null") => {}
                        (Some(a), text) => {
                            let exact: f64 = text.parse().expect("serde_json read it as a number");
                            proptest::prop_assert_eq!(a.to_bits(), exact.to_bits(), "{} read as {} in {}", text, a, payload);
                        }
                        _ => proptest::prop_assert!(false, "{text} read as null in {payload}"),
                    }
                }
            } else if let Ok(serde) = serde {
                // Only numbers serde_json reads and this parser leaves to it: none of those here.
                proptest::prop_assert!(false, "serde_json reads {payload} as {serde:?}, the fast parser refused it");
            }
        }

        #[test]
        fn numbers_read_from_their_digits_equal_the_standard_librarys_reading(
            text in "-?(0|[1-9][0-9]{0,16})(\\.[0-9]{1,17})?"
        ) {
            proptest::prop_assert_eq!(json_number(text.as_bytes()).map(f64::to_bits), Some(text.parse::<f64>().unwrap().to_bits()), "{}", text);
        }

        #[test]
        fn every_double_printed_shortest_reads_back_as_itself(
            fields in proptest::collection::vec(proptest::option::of(proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO), NRG_FIELDS)
        ) {
            let json = serde_json::to_string(&fields).unwrap();
            let parsed = parse_nrg(json.as_bytes()).expect("a printed array is read");
            for (got, want) in parsed.iter().zip(&fields) {
                proptest::prop_assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{}", json);
            }
        }
    }

    #[test]
    fn captured_nrg_payloads_parse_without_serde_and_odd_ones_are_left_to_it() {
        let captured = "[233,232,233,0,15.8,15.7,15.9,3.7,3688,3642,3699,0,99,98,99,100]";
        let fields = parse_nrg(captured.as_bytes()).expect("the common shape");
        assert_eq!(fields[0], Some(233.0));
        assert_eq!(fields[4], Some(15.8));
        assert_eq!(fields[15], Some(100.0));
        let spaced = " [ 1 , null,\t2.5e1 ,-0,0.125,1E+2,3,4,5,6,7,8,9,10,11,12 ]\n";
        let fields = parse_nrg(spaced.as_bytes()).expect("whitespace and exponents");
        assert_eq!((fields[1], fields[2], fields[5]), (None, Some(25.0), Some(100.0)));
        for odd in [
            "[1,2,3]",
            "[\"1\",2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]",
            "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]",
            "[01,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]",
            "[1e999,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]",
            "[[1],2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]",
            "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16",
            "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]x",
            "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 16]",
            "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,nullnull]",
            "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,-]",
            "",
        ] {
            assert_eq!(parse_nrg(odd.as_bytes()), None, "{odd}");
        }
    }

    fn get(u: &Update, name: &str) -> Option<Value> {
        u.readings.iter().find(|(q, _)| q.name() == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn tables_parse_and_every_target_is_a_contract_quantity() {
        let t = tables();
        assert!(t.rules.len() >= 19);
        assert_eq!(t.nrg.len(), 16);
        assert!(t.known.contains("sse") && t.known.contains("nrg"));
    }

    #[test]
    fn nrg_fills_all_sixteen_quantities_in_canonical_units() {
        let mut m = Mapper::default();
        let (o, u) = map_one(
            &mut m,
            "nrg",
            "[227.54,225.99,226.61,2.79,15.314,15.39,15.466,3484.561,3471.439,3503.163,0,10459.16,100,99.81176,99.95472,100]",
        );
        assert_eq!(o, KeyOutcome::Mapped);
        assert_eq!(u.readings.len(), 16);
        assert_eq!(get(&u, "voltage_l1"), Some(Value::Number(227.54)));
        assert_eq!(get(&u, "current_l3"), Some(Value::Number(15.466)));
        assert_eq!(get(&u, "power"), Some(Value::Number(10459.16)));
        assert_eq!(get(&u, "power_n"), Some(Value::Number(0.0)));
        let pf = get(&u, "power_factor_l2").unwrap().as_f64().unwrap();
        assert!((pf - 0.9981176).abs() < 1e-9);
    }

    #[test]
    fn nrg_with_nulls_or_short_arrays_maps_what_is_there() {
        let mut m = Mapper::default();
        let (o, u) = map_one(&mut m, "nrg", "[230,null,231]");
        assert_eq!(o, KeyOutcome::Mapped);
        assert_eq!(u.readings.len(), 2);
        let (o, u) = map_one(&mut m, "nrg", "[230,\"x\",231]");
        assert_eq!(o, KeyOutcome::Invalid("bad_array_element"));
        assert_eq!(u.readings.len(), 2);
    }

    #[test]
    fn energy_arrives_in_kwh() {
        let mut m = Mapper::default();
        let (_, u) = map_one(&mut m, "eto", "527952");
        assert_eq!(get(&u, "energy_import"), Some(Value::Number(527.952)));
        let (_, u) = map_one(&mut m, "wh", "16481.01");
        assert!((get(&u, "session_energy").unwrap().as_f64().unwrap() - 16.48101).abs() < 1e-9);
    }

    #[test]
    fn car_states_map_to_words_and_connection() {
        let mut m = Mapper::default();
        let (_, u) = map_one(&mut m, "car", "2");
        assert_eq!(get(&u, "charger_state"), Some(Value::Text("charging".into())));
        assert_eq!(get(&u, "car_connected"), Some(Value::Bool(true)));
        let (_, u) = map_one(&mut m, "car", "null");
        assert_eq!(get(&u, "charger_state"), Some(Value::Text("unknown".into())));
        let (_, u) = map_one(&mut m, "car", "6");
        assert_eq!(get(&u, "charger_state"), Some(Value::Text("unknown".into())));
    }

    #[test]
    fn car_transitions_become_events_but_the_first_value_does_not() {
        let mut m = Mapper::default();
        let names = |u: &Update| u.events.iter().map(|e| e.name.to_string()).collect::<Vec<_>>();
        let (_, u) = map_one(&mut m, "car", "1");
        assert!(u.events.is_empty());
        let (_, u) = map_one(&mut m, "car", "3");
        assert_eq!(names(&u), ["car_connected"]);
        let (_, u) = map_one(&mut m, "car", "2");
        assert_eq!(names(&u), ["charging_started"]);
        let (_, u) = map_one(&mut m, "car", "4");
        assert_eq!(names(&u), ["charging_stopped"]);
        let (_, u) = map_one(&mut m, "car", "1");
        assert_eq!(names(&u), ["car_disconnected"]);
        let (_, u) = map_one(&mut m, "car", "2");
        assert_eq!(names(&u), ["car_connected", "charging_started"]);
        let (_, u) = map_one(&mut m, "car", "1");
        assert_eq!(names(&u), ["charging_stopped", "car_disconnected"]);
    }

    #[test]
    fn retained_replays_derive_no_events() {
        let mut m = Mapper::default();
        let mut u = Update::default();
        m.map("car", &Json::from(1), false, &mut u);
        m.map("car", &Json::from(2), false, &mut u);
        assert!(u.events.is_empty());
    }

    #[test]
    fn enums_outside_the_tables_keep_their_code() {
        let mut m = Mapper::default();
        let (_, u) = map_one(&mut m, "err", "17");
        assert_eq!(get(&u, "charger_error"), Some(Value::Text("code_17".into())));
        let (_, u) = map_one(&mut m, "modelStatus", "15");
        assert_eq!(get(&u, "charge_reason"), Some(Value::Text("charging_fallback_default".into())));
        let (_, u) = map_one(&mut m, "frc", "2");
        assert_eq!(get(&u, "force_state"), Some(Value::Text("on".into())));
    }

    #[test]
    fn odd_types_are_tolerated_or_reported() {
        let mut m = Mapper::default();
        let (o, u) = map_one(&mut m, "amp", "\"16\"");
        assert_eq!(o, KeyOutcome::Mapped);
        assert_eq!(get(&u, "current_limit"), Some(Value::Number(16.0)));
        let (o, _) = map_one(&mut m, "amp", "{\"a\":1}");
        assert_eq!(o, KeyOutcome::Invalid("bad_type"));
        let (o, u) = map_one(&mut m, "acu", "null");
        assert_eq!(o, KeyOutcome::Mapped);
        assert!(u.readings.is_empty(), "null is absent, never a made-up 0");
    }

    #[test]
    fn garbage_temperatures_are_dropped() {
        let mut m = Mapper::default();
        let (o, u) = map_one(&mut m, "tma", "[-16843.01]");
        assert_eq!(o, KeyOutcome::Invalid("implausible_temperature"));
        assert!(u.readings.is_empty());
        let (o, u) = map_one(&mut m, "tma", "[24.125,28.25]");
        assert_eq!(o, KeyOutcome::Mapped);
        assert_eq!(get(&u, "temperature"), Some(Value::Number(24.125)));
        assert_eq!(get(&u, "temperature_pcb"), Some(Value::Number(28.25)));
    }

    #[test]
    fn documented_but_unmapped_keys_are_ignored_and_new_ones_unknown() {
        let mut m = Mapper::default();
        assert_eq!(map_one(&mut m, "cid", "\"#0000FF\"").0, KeyOutcome::Ignored);
        assert_eq!(map_one(&mut m, "zzq", "1").0, KeyOutcome::Unknown);
    }

    #[test]
    fn identity_keys_fill_identity() {
        let mut m = Mapper::default();
        let (_, u) = map_one(&mut m, "fwv", "\"56.9\"");
        assert_eq!(u.identity.unwrap().firmware.as_deref(), Some("56.9"));
    }

    #[test]
    fn commands_translate_to_api_keys_with_json_values() {
        assert_eq!(command_to_key("current_limit", "16").unwrap().0, "amp");
        assert_eq!(command_to_key("current_limit", "16").unwrap().1, Json::from(16));
        assert!(command_to_key("current_limit", "40").is_err());
        assert!(command_to_key("current_limit", "6.5").is_err());
        assert_eq!(command_to_key("force_state", "off").unwrap().1, Json::from(1));
        assert_eq!(command_to_key("phase_mode", "three").unwrap().1, Json::from(2));
        assert!(command_to_key("phase_mode", "two").is_err());
    }
}

//! Shared pieces of the property-based fuzz tests (`cargo test fuzz`; README "Fuzzing"): mutation
//! strategies over real captures, a detached router to replay into, and the checks every target
//! shares (what was published is bounded by the input, JSON payloads are JSON, numbers are finite).
//!
//! Case counts come from proptest's defaults: 256 per target, `PROPTEST_CASES=100000` for a long run.
//! Failing inputs are kept by proptest under `proptest-regressions/` (committed) and replayed first.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use crate::config::types::AdapterKind;
use crate::metrics::Metrics;
use crate::mqtt::{CaptureRx, Captured, QoS};
use crate::router::{DeviceHandle, DeviceSpec, Router, RouterSettings};

/// Number spellings that break naive parsers: out of f64 range, not JSON at all (`NaN`), integers
/// past i64/u64, denormals, signs and exponents, and other JSON types where a number belongs.
pub(crate) const HOSTILE_NUMBERS: &[&str] = &[
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "1e400",
    "-1e400",
    "1e-400",
    "4.9e-324",
    "-0",
    "-0.0",
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "123456789012345678901234567890123456789",
    "0.000000000000000000000000000001",
    "1E+2",
    "1e",
    "-",
    "--1",
    "0x10",
    "\"12.5\"",
    "\"1e308\"",
    "\"NaN\"",
    "null",
    "true",
    "[]",
    "{}",
];

/// One way of damaging a capture. Positions are fractions (per mille) of the current length so
/// that shrinking keeps them meaningful.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// XOR one byte with a mask.
    FlipByte { at: u16, mask: u8 },
    /// Keep only the first part.
    Truncate { keep: u16 },
    /// Put arbitrary bytes in.
    Insert { at: u16, bytes: Vec<u8> },
    /// Splice: the start of this capture, then the tail of another one.
    Splice { at: u16, other: usize, from: u16 },
    /// Replace the n-th number-looking token with a hostile spelling.
    Number { nth: u16, with: usize },
    /// Replace the contents of the n-th `"..."` with a long run of one character.
    LongString { nth: u16, len: usize, fill: char },
    /// Wrap everything (or the n-th value) in deep JSON nesting.
    Nest { depth: usize, objects: bool },
    /// Repeat a slice several times (duplicated keys, repeated lines).
    Repeat { at: u16, len: u16, times: u8 },
}

fn pos(per_mille: u16, len: usize) -> usize {
    (len * usize::from(per_mille.min(1000))) / 1000
}

fn number_tokens(s: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let starts = s[i].is_ascii_digit() || (s[i] == b'-' && s.get(i + 1).is_some_and(u8::is_ascii_digit));
        if starts && (i == 0 || !s[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            i += 1;
            while i < s.len() && (s[i].is_ascii_digit() || matches!(s[i], b'.' | b'e' | b'E' | b'+' | b'-')) {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

fn string_contents(s: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'"' {
            let start = i + 1;
            let mut j = start;
            while j < s.len() && s[j] != b'"' {
                j += if s[j] == b'\\' { 2 } else { 1 };
            }
            if j >= s.len() {
                break;
            }
            out.push((start, j));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

impl Mutation {
    /// Applies the mutation to `data`; `seeds` are the captures a splice may take a tail from.
    pub(crate) fn apply(&self, data: &mut Vec<u8>, seeds: &[&[u8]]) {
        match self {
            Mutation::FlipByte { at, mask } => {
                if !data.is_empty() {
                    let i = pos(*at, data.len() - 1);
                    data[i] ^= mask;
                }
            }
            Mutation::Truncate { keep } => data.truncate(pos(*keep, data.len())),
            Mutation::Insert { at, bytes } => {
                let i = pos(*at, data.len());
                data.splice(i..i, bytes.iter().copied());
            }
            Mutation::Splice { at, other, from } => {
                let other = seeds[other % seeds.len().max(1)];
                data.truncate(pos(*at, data.len()));
                data.extend_from_slice(&other[pos(*from, other.len())..]);
            }
            Mutation::Number { nth, with } => {
                let tokens = number_tokens(data);
                if let Some(&(a, b)) = tokens.get(usize::from(*nth) % tokens.len().max(1)) {
                    data.splice(a..b, HOSTILE_NUMBERS[with % HOSTILE_NUMBERS.len()].bytes());
                }
            }
            Mutation::LongString { nth, len, fill } => {
                let strings = string_contents(data);
                if let Some(&(a, b)) = strings.get(usize::from(*nth) % strings.len().max(1)) {
                    let long: String = std::iter::repeat_n(*fill, *len).collect();
                    data.splice(a..b, long.bytes());
                }
            }
            Mutation::Nest { depth, objects } => {
                let (open, close): (&[u8], &[u8]) = if *objects { (b"{\"a\":", b"}") } else { (b"[", b"]") };
                let mut out = Vec::with_capacity(data.len() + depth * (open.len() + close.len()));
                for _ in 0..*depth {
                    out.extend_from_slice(open);
                }
                out.extend_from_slice(data);
                for _ in 0..*depth {
                    out.extend_from_slice(close);
                }
                *data = out;
            }
            Mutation::Repeat { at, len, times } => {
                let a = pos(*at, data.len());
                let b = (a + usize::from(*len)).min(data.len());
                let piece = data[a..b].to_vec();
                for _ in 0..*times {
                    data.splice(b..b, piece.iter().copied());
                }
            }
        }
    }
}

/// Any one mutation.
pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0u16..=1000;
    prop_oneof![
        3 => (at.clone(), 1u8..=255).prop_map(|(at, mask)| Mutation::FlipByte { at, mask }),
        2 => at.clone().prop_map(|keep| Mutation::Truncate { keep }),
        2 => (at.clone(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (at.clone(), any::<usize>(), at.clone()).prop_map(|(at, other, from)| Mutation::Splice { at, other, from }),
        4 => (any::<u16>(), any::<usize>()).prop_map(|(nth, with)| Mutation::Number { nth, with }),
        1 => (any::<u16>(), 0usize..100_000, prop_oneof![Just('x'), Just('\\'), Just('é'), Just('\u{0}'), Just('$')])
            .prop_map(|(nth, len, fill)| Mutation::LongString { nth, len, fill }),
        1 => (0usize..2_000, any::<bool>()).prop_map(|(depth, objects)| Mutation::Nest { depth, objects }),
        1 => (at, 1u16..200, 1u8..50).prop_map(|(at, len, times)| Mutation::Repeat { at, len, times }),
    ]
}

/// A capture from `seeds` with one to four mutations applied, as bytes.
pub(crate) fn mutated(seeds: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (0..seeds.len(), proptest::collection::vec(mutation(), 1..=4)).prop_map(move |(i, muts)| {
        let mut data = seeds[i].to_vec();
        for m in &muts {
            m.apply(&mut data, seeds);
        }
        data
    })
}

/// Bytes that are either random or a mutated capture: both halves of every fuzz target's input.
pub(crate) fn hostile(seeds: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        1 => any::<String>().prop_map(String::into_bytes),
        4 => mutated(seeds),
    ]
}

/// A router with one device (`id`, prefix `home`) publishing into a capture instead of a broker.
pub(crate) fn router(id: &str, adapter: AdapterKind) -> (Arc<Router>, DeviceHandle, CaptureRx) {
    let (mqtt, captured) = crate::mqtt::detached(1_000_000);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let spec = DeviceSpec {
        id: id.into(),
        adapter,
        prefix: "home".into(),
        freshness: Duration::from_secs(60),
        min_interval: None,
        heartbeat: None,
        commands: false,
        offered: &[],
    };
    let settings =
        RouterSettings { bridge_prefix: "home".into(), quantity_topics: true, state_json: true, qos: QoS::AtMostOnce };
    let router = Router::new(settings, vec![spec], mqtt, metrics);
    let handle = router.handle(id).expect("the device is configured");
    (router, handle, captured)
}

/// What every replay of hostile input must satisfy: the publishes are bounded by the input size
/// (count and bytes), every JSON payload parses, and every numeric quantity topic carries a finite
/// number (never `inf`, `NaN` or `null`).
pub(crate) fn check_published(captured: &[Captured], input_bytes: usize) -> Result<(), TestCaseError> {
    prop_assert!(captured.len() <= 64 + input_bytes, "{} publishes from {input_bytes} input bytes", captured.len());
    let bytes: usize = captured.iter().map(|c| c.topic.len() + c.payload.len()).sum();
    prop_assert!(bytes <= 65_536 + 16 * input_bytes, "{bytes} published bytes from {input_bytes} input bytes");
    for c in captured {
        let last = c.topic.rsplit('/').next().unwrap_or_default();
        if matches!(last, "state" | "info" | "event" | "result") {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&c.payload) {
                let at = c.payload.char_indices().nth(e.column().saturating_sub(60)).map_or(0, |(i, _)| i);
                prop_assert!(false, "{} is not JSON ({e}): …{:.120}", c.topic, &c.payload[at..]);
            }
        } else if !c.payload.is_empty()
            && let Some(q) = crate::model::Quantity::named(last)
            && q.family().kind.is_numeric()
        {
            let n = c.payload.parse::<f64>();
            prop_assert!(n.is_ok_and(f64::is_finite), "{} = {:?} is not a finite number", c.topic, c.payload);
        }
    }
    Ok(())
}

/// The `Debug` rendering's length: a stand-in for the heap a state holds, to show it stays
/// bounded however much input went through (no field of these states is skipped by `Debug`).
pub(crate) fn debug_len(state: &impl std::fmt::Debug) -> usize {
    format!("{state:?}").len()
}

/// `(topic, payload)` of every line of recorded MQTT captures (`topic<TAB>payload`, `#` comments).
pub(crate) fn capture_messages(captures: &[&'static str]) -> impl Iterator<Item = (&'static str, &'static [u8])> {
    captures
        .iter()
        .flat_map(|c| c.lines())
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, p)| (t, p.as_bytes()))
}

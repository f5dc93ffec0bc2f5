//! Property-based fuzzing of the go-e parsing entry points (README "Fuzzing"): the key mapper, the
//! MQTT message and HTTP status paths through the router, and command payloads. Inputs are random
//! bytes and the recorded captures under `adapters/goe/fixtures/`, mutated.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value as Json;

use super::Ingest;
use super::mapping::{Mapper, command_to_key};
use crate::config::types::AdapterKind;
use crate::fuzz_support::{check_published, hostile, router};
use crate::model::{Update, Value};
use crate::mqtt::Message;

const MQTT_LOGS: &[(&str, &str)] = &[
    ("mqtt-capture-053.1.log", include_str!("../../../adapters/goe/fixtures/mqtt-capture-053.1.log")),
    ("mqtt-traffic-055.2.log", include_str!("../../../adapters/goe/fixtures/mqtt-traffic-055.2.log")),
    ("mqtt-traffic-056.9.log", include_str!("../../../adapters/goe/fixtures/mqtt-traffic-056.9.log")),
    ("mqtt-vendor-doc-examples.txt", include_str!("../../../adapters/goe/fixtures/mqtt-vendor-doc-examples.txt")),
];

const GOLDEN: &[(&str, &str)] = &[
    (
        "mqtt-capture-053.1.log",
        include_str!("../../../adapters/goe/fixtures/golden/mqtt-capture-053.1.log.expected.json"),
    ),
    (
        "mqtt-traffic-055.2.log",
        include_str!("../../../adapters/goe/fixtures/golden/mqtt-traffic-055.2.log.expected.json"),
    ),
    (
        "mqtt-traffic-056.9.log",
        include_str!("../../../adapters/goe/fixtures/golden/mqtt-traffic-056.9.log.expected.json"),
    ),
];

const HTTP_BODIES: &str = concat!(
    include_str!("../../../adapters/goe/fixtures/http-status-filtered-fw055.0-3phase.jsonl"),
    "\n",
    include_str!("../../../adapters/goe/fixtures/http-set-responses.jsonl"),
);
const HTTP_SCREENSHOT: &str =
    include_str!("../../../adapters/goe/fixtures/http-status-filtered-vendor-screenshot.json");

/// `(serial, key, payload)` of every state message in a log (`<topic> <json>` lines).
fn messages(log: &'static str) -> Vec<(&'static str, &'static str, &'static str)> {
    log.lines()
        .filter_map(|line| {
            let (topic, payload) = line.split_once(' ')?;
            let rest = topic.strip_prefix("go-eCharger/").or_else(|| topic.strip_prefix("/go-eCharger/"))?;
            let (serial, key) = rest.split_once('/')?;
            (!key.is_empty() && !key.contains('/')).then_some((serial, key, payload.trim()))
        })
        .collect()
}

fn payload_seeds() -> &'static [&'static [u8]] {
    static SEEDS: std::sync::OnceLock<Vec<&'static [u8]>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<&'static [u8]> =
            MQTT_LOGS.iter().flat_map(|(_, log)| messages(log)).map(|(_, _, p)| p.as_bytes()).collect();
        seeds.extend(HTTP_BODIES.lines().filter(|l| l.starts_with('{')).map(str::as_bytes));
        seeds.push(HTTP_SCREENSHOT.as_bytes());
        seeds
    })
}

fn body_seeds() -> &'static [&'static [u8]] {
    static SEEDS: std::sync::OnceLock<Vec<&'static [u8]>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<&'static [u8]> =
            HTTP_BODIES.lines().filter(|l| l.starts_with('{')).map(str::as_bytes).collect();
        seeds.push(HTTP_SCREENSHOT.as_bytes());
        seeds
    })
}

/// A key the mapper knows (mapped, ignored) or an invented one.
fn key() -> impl Strategy<Value = String> {
    let mapped = include_str!("../../../adapters/goe/mapping.tsv").lines().filter_map(|l| l.split('\t').next());
    let documented = include_str!("../../../adapters/goe/known-keys.txt").lines();
    let known: Vec<&'static str> =
        mapped.chain(documented).map(str::trim).filter(|k| !k.is_empty() && !k.starts_with('#')).collect();
    prop_oneof![3 => proptest::sample::select(known).prop_map(str::to_owned), 1 => "[a-zA-Z0-9_/+#]{0,12}"]
}

fn finite_numbers(u: &Update) -> Result<(), TestCaseError> {
    for (q, v) in &u.readings {
        if let Value::Number(n) = v {
            prop_assert!(n.is_finite(), "{} = {n}", q.name());
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn the_key_mapper_never_panics_and_yields_a_bounded_finite_update(
        key in key(),
        payload in hostile(payload_seeds()),
        live in any::<bool>(),
    ) {
        let mut mapper = Mapper::default();
        let mut update = Update::fresh();
        if let Ok(value) = serde_json::from_slice::<Json>(&payload) {
            mapper.map(&key, &value, live, &mut update);
            // Twice: the second call has a previous `car` and may derive events.
            mapper.map(&key, &value, live, &mut update);
        }
        prop_assert!(update.readings.len() <= 2 * 17, "{} readings", update.readings.len());
        prop_assert!(update.events.len() <= 2 * 2);
        finite_numbers(&update)?;
    }

    #[test]
    fn mqtt_messages_through_the_router_publish_bounded_valid_payloads(
        msgs in proptest::collection::vec((key(), hostile(payload_seeds()), any::<bool>()), 1..8),
    ) {
        let (_router, handle, mut captured) = router("charger", AdapterKind::Goe);
        let mut ingest = Ingest::new(handle.clone());
        let mut input = 0;
        for (key, payload, retain) in &msgs {
            input += key.len() + payload.len();
            let msg = Message { topic: format!("go-eCharger/000001/{key}"), payload: Bytes::copy_from_slice(payload), retain: *retain };
            ingest.mqtt_message(key, &msg);
        }
        handle.flush();
        check_published(&captured.drain(), input)?;
    }

    #[test]
    fn http_status_bodies_through_the_router_publish_bounded_valid_payloads(
        body in hostile(body_seeds()),
        status in prop_oneof![Just(200u16), Just(400), any::<u16>()],
    ) {
        let (_router, handle, mut captured) = router("charger", AdapterKind::Goe);
        let mut ingest = Ingest::new(handle);
        if let Err(e) = ingest.http_status_body(status, &body) {
            prop_assert!(!e.is_empty(), "an error says what went wrong");
            prop_assert!(e.len() < 300, "the error quotes a bounded excerpt: {} bytes", e.len());
        }
        check_published(&captured.drain(), body.len())?;
    }

    #[test]
    fn command_payloads_never_panic_and_accepted_writes_are_in_range(
        quantity in prop_oneof![Just("current_limit".to_owned()), Just("force_state".to_owned()), Just("phase_mode".to_owned()), ".{0,12}"],
        payload in prop_oneof![
            3 => proptest::sample::select(crate::fuzz_support::HOSTILE_NUMBERS).prop_map(str::to_owned),
            1 => any::<String>(),
            1 => (-1e6f64..1e6).prop_map(|n| n.to_string()),
        ],
    ) {
        if let Ok((key, json, value)) = command_to_key(&quantity, &payload) {
            match key {
                "amp" => {
                    let n = json.as_i64().expect("amp is an integer");
                    prop_assert!((6..=32).contains(&n), "amp {n}");
                    prop_assert_eq!(value, Value::Number(n as f64));
                }
                "frc" | "psm" => prop_assert!(matches!(json.as_i64(), Some(0..=2)), "{key} {json}"),
                other => prop_assert!(false, "unexpected key {other}"),
            }
        }
    }
}

/// Unmutated captures: the fuzz harness replays them to exactly the values pinned in the golden
/// files (so the properties above start from today's behaviour, not from a different path).
#[test]
fn unmutated_mqtt_captures_replay_to_their_golden_values() {
    for (name, golden) in GOLDEN {
        let log = MQTT_LOGS.iter().find(|(n, _)| n == name).expect("capture of the golden file").1;
        let msgs = messages(log);
        let serial = msgs[0].0;
        assert!(msgs.iter().all(|m| m.0 == serial), "{name}: one charger per capture");
        let id = format!("goe-{serial}");
        let (_router, handle, mut captured) = router(&id, AdapterKind::Goe);
        let mut ingest = Ingest::new(handle.clone());
        for (_, key, payload) in &msgs {
            let msg = Message {
                topic: format!("go-eCharger/{serial}/{key}"),
                payload: Bytes::copy_from_slice(payload.as_bytes()),
                retain: false,
            };
            ingest.mqtt_message(key, &msg);
        }
        handle.flush();
        let mut last = std::collections::BTreeMap::new();
        for c in captured.drain() {
            if !c.topic.ends_with("/event") {
                last.insert(c.topic, c.payload);
            }
        }
        let golden: Json = serde_json::from_str(golden).expect("golden JSON");
        let mut compared = 0;
        for (topic, expected) in golden["topics"].as_object().expect("topics") {
            if let Json::String(expected) = expected {
                assert_eq!(last.get(topic), Some(expected), "{name}: {topic}");
                compared += 1;
            }
        }
        assert!(compared >= 10, "{name}: only {compared} plain topics compared");
    }
}

/// Found by the properties above: a finite but huge reading overflowed the rounding to the
/// quantity's precision and was published as `inf` (in the state JSON too, which is then not JSON).
#[test]
fn a_huge_finite_reading_is_published_as_a_finite_number() {
    let (_router, handle, mut captured) = router("charger", AdapterKind::Goe);
    let mut ingest = Ingest::new(handle.clone());
    let payload = "[1e308,230,230,0,1,1,1,0,0,0,0,0,100,100,100,100]";
    let msg = Message {
        topic: "go-eCharger/000001/nrg".into(),
        payload: Bytes::from_static(payload.as_bytes()),
        retain: false,
    };
    ingest.mqtt_message("nrg", &msg);
    handle.flush();
    let published = captured.drain();
    let runner_result = check_published(&published, payload.len());
    assert!(runner_result.is_ok(), "{runner_result:?}");
}

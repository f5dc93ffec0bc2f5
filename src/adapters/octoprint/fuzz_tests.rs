//! Property-based fuzzing of the OctoPrint-MQTT parsing entry points (README "Fuzzing"): topic
//! classification and every plugin message through the ingest and router, with random bytes and
//! the captures under `adapters/octoprint/fixtures/`, mutated; and the mapper's memory bound.

use bytes::Bytes;
use proptest::prelude::*;

use super::mapping::{Mapper, classify};
use super::{Ingest, OctoprintConfig};
use crate::config::types::AdapterKind;
use crate::fuzz_support::{capture_messages, check_published, debug_len, hostile, router};
use crate::mqtt::Message;

const CAPTURES: &[&str] = &[
    include_str!("../../../adapters/octoprint/fixtures/readme_0.8.16_examples.tsv"),
    include_str!("../../../adapters/octoprint/fixtures/readme_0.5_examples_2017.tsv"),
    include_str!("../../../adapters/octoprint/fixtures/synthesized_from_source_NOT_CAPTURED.tsv"),
    include_str!("../../../adapters/octoprint/fixtures/commands_homeassistant_plugin_readme.tsv"),
    include_str!("../../../adapters/octoprint/fixtures/commands_mqttsubscribe_issues.tsv"),
];

fn messages() -> &'static [(&'static str, &'static [u8])] {
    static M: std::sync::OnceLock<Vec<(&'static str, &'static [u8])>> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        capture_messages(CAPTURES).filter(|(t, _)| t.starts_with("octoPrint/") || t.starts_with("octoprint/")).collect()
    })
}

fn payloads() -> &'static [&'static [u8]] {
    static P: std::sync::OnceLock<Vec<&'static [u8]>> = std::sync::OnceLock::new();
    P.get_or_init(|| messages().iter().map(|m| m.1).collect())
}

/// A topic of the captures, or one with an invented last level. Invented names always carry a
/// `-`, which no quantity name has: each new temperature key would otherwise intern a quantity
/// name for the whole process (capped at 4096), and a long run would exhaust that for every test.
fn topic() -> impl Strategy<Value = String> {
    let topics: Vec<&'static str> = messages().iter().map(|m| m.0).collect();
    prop_oneof![
        4 => proptest::sample::select(topics.clone()).prop_map(str::to_owned),
        1 => (proptest::sample::select(topics), "[a-zA-Z0-9_+#/]{0,4}-[a-zA-Z0-9_ -]{0,6}").prop_map(|(t, tail)| {
            let parent = t.rsplit_once('/').map_or(t, |p| p.0);
            format!("{parent}/{tail}")
        }),
    ]
}

proptest! {
    #[test]
    fn plugin_messages_through_the_router_publish_bounded_valid_payloads(
        msgs in proptest::collection::vec((topic(), hostile(payloads()), any::<bool>()), 1..10),
    ) {
        let (_router, handle, mut captured) = router("printer", AdapterKind::Octoprint);
        let mut ingest = Ingest::new(&OctoprintConfig::default(), handle.clone());
        let mut input = 0;
        for (topic, payload, retain) in &msgs {
            input += topic.len() + payload.len();
            ingest.message(&Message { topic: topic.clone(), payload: Bytes::copy_from_slice(payload), retain: *retain });
        }
        handle.flush();
        check_published(&captured.drain(), input)?;
    }

    #[test]
    fn topic_classification_never_panics(base in "[a-zA-Z/]{0,12}", topic in any::<String>()) {
        let _ = classify(&base, &topic);
        let _ = classify("octoPrint/", &topic);
    }
}

/// However many distinct event and sensor names a plugin (or anyone on the broker) sends, the
/// mapper's state stays bounded: names beyond its caps are counted, not kept.
#[test]
fn the_mapper_state_stays_bounded_under_endless_new_names() {
    let mut mapper = Mapper::default();
    let mut after_warm_up = 0;
    for i in 0..5_000 {
        let key = format!("sensor-{i}");
        let event = format!("Event-{i}");
        let ts = 1_700_000_000 + i;
        let temperature = format!("{{\"_timestamp\": {ts}, \"actual\": 20.5, \"target\": 0}}");
        let _ = mapper.handle(super::mapping::Topic::Temperature(&key), temperature.as_bytes(), false);
        let _ =
            mapper.handle(super::mapping::Topic::Event(&event), format!("{{\"_timestamp\": {ts}}}").as_bytes(), false);
        if i == 1_000 {
            after_warm_up = debug_len(&mapper);
        }
    }
    let held = debug_len(&mapper);
    assert!(held <= after_warm_up + 4_096, "mapper state grew from {after_warm_up} to {held} bytes");
}

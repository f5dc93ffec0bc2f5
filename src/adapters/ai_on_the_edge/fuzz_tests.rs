//! Property-based fuzzing of the AI-on-the-edge parsing entry points (README "Fuzzing"): every
//! camera message (single topics, round `json`, discovery configs) through the ingest and router,
//! with random bytes and the captures under `adapters/ai_on_the_edge/fixtures/`, mutated.

use bytes::Bytes;
use proptest::prelude::*;

use super::mapping::{parse_decimal, parse_json, parse_timestamp};
use super::{AiOnTheEdgeConfig, Ingest};
use crate::config::types::AdapterKind;
use crate::fuzz_support::{capture_messages, check_published, hostile, router};
use crate::mqtt::Message;

const CAPTURES: &[&str] = &[
    include_str!("../../../adapters/ai_on_the_edge/fixtures/upstream_v16.1.0_round_ok_RECONSTRUCTED.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/upstream_v16.1.0_round_negrate_RECONSTRUCTED.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/upstream_v16.1.0_ha_discovery_RECONSTRUCTED.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/slfork_v17dev_docs_examples.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/raw_values_with_N.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/notes_v08.0_error_inside_value.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/notes_v10.0_raw_quote_missing.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/notes_v13.0.5_malformed_json.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/notes_v10_to_v13.0.4_old_topics.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/notes_slfork_v16.2_topics.tsv"),
    include_str!("../../../adapters/ai_on_the_edge/fixtures/control_payloads_docs.tsv"),
];

/// `(topic, payload)` of every capture line (payloads keep the samples' `\t`/`\n` escapes: the
/// mutations do not care, and a few escaped payloads are one more kind of odd input).
fn messages() -> &'static [(&'static str, &'static [u8])] {
    static M: std::sync::OnceLock<Vec<(&'static str, &'static [u8])>> = std::sync::OnceLock::new();
    M.get_or_init(|| capture_messages(CAPTURES).collect())
}

fn payloads() -> &'static [&'static [u8]] {
    static P: std::sync::OnceLock<Vec<&'static [u8]>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let mut p: Vec<&'static [u8]> = messages().iter().map(|m| m.1).collect();
        p.push(include_bytes!(
            "../../../adapters/ai_on_the_edge/fixtures/upstream_v16.1.0_main_json_RECONSTRUCTED.txt"
        ));
        p.push(include_bytes!("../../../adapters/ai_on_the_edge/fixtures/slfork_v16.2.0_main_json_docs.json"));
        p.push(include_bytes!(
            "../../../adapters/ai_on_the_edge/fixtures/slfork_v17dev_ha_discovery_actual_value_docs.json"
        ));
        p
    })
}

/// A topic of the captures, or one with an invented last level.
fn topic() -> impl Strategy<Value = String> {
    let topics: Vec<&'static str> = messages().iter().map(|m| m.0).collect();
    prop_oneof![
        4 => proptest::sample::select(topics.clone()).prop_map(str::to_owned),
        1 => (proptest::sample::select(topics), "[a-zA-Z0-9_+#/ -]{0,10}").prop_map(|(t, tail)| {
            let parent = t.rsplit_once('/').map_or(t, |p| p.0);
            format!("{parent}/{tail}")
        }),
    ]
}

fn camera() -> AiOnTheEdgeConfig {
    serde_json::from_value(serde_json::json!({ "main_topic": "watermeter" })).expect("a valid camera config")
}

proptest! {
    #[test]
    fn camera_messages_through_the_router_publish_bounded_valid_payloads(
        msgs in proptest::collection::vec((topic(), hostile(payloads()), any::<bool>()), 1..10),
    ) {
        let (_router, handle, mut captured) = router("camera", AdapterKind::AiOnTheEdge);
        let mut ingest = Ingest::new(&camera(), handle);
        ingest.set_clock(time::macros::datetime!(2025-03-22 15:20:00 UTC));
        let mut input = 0;
        for (topic, payload, retain) in &msgs {
            input += topic.len() + payload.len();
            ingest.message(&Message { topic: topic.clone(), payload: Bytes::copy_from_slice(payload), retain: *retain });
        }
        ingest.finish();
        check_published(&captured.drain(), input)?;
    }

    #[test]
    fn the_value_parsers_never_panic_and_give_finite_numbers(text in hostile(payloads())) {
        let text = String::from_utf8_lossy(&text);
        if let Some(n) = parse_decimal(&text) {
            prop_assert!(n.is_finite(), "{text:?} → {n}");
        }
        let _ = parse_timestamp(&text);
        let _ = parse_json(&text);
    }
}

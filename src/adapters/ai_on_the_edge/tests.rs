//! Unit tests of the `ai_on_the_edge` keys: defaults, required keys, the checks naming their
//! key, `sequences:` forms and the schema's refusals.

use super::config::DEFAULT_INTERVAL;
use super::mapping::Dialect;
use super::*;

fn cfg(yaml: &str) -> AiOnTheEdgeConfig {
    serde_norway::from_str(yaml).unwrap()
}

fn errors(yaml: &str) -> Vec<(String, String)> {
    validate(&cfg(yaml), "devices.w")
}

#[test]
fn a_minimal_camera_config_is_valid_with_defaults() {
    let c = cfg("main_topic: watermeter\n");
    assert!(validate(&c, "devices.w").is_empty());
    assert_eq!(c.dialect, Dialect::Auto);
    assert!(c.discovery);
    assert_eq!(cadence(&c), DEFAULT_INTERVAL);
    assert_eq!(cadence(&cfg("main_topic: w\ninterval: 1m\n")), Duration::from_secs(60));
}

#[test]
fn main_topic_or_sequence_of_is_required() {
    let e = errors("meter: water\n");
    assert_eq!(e[0].0, "devices.w.main_topic");
    let e = errors("main_topic: w\nsequence_of: cam\n");
    assert_eq!(e[0].0, "devices.w.sequence_of");
}

#[test]
fn bad_topics_units_and_intervals_name_their_key() {
    let e = errors("main_topic: water/#\nmeter: gas\nunit: l\ninterval: 10ms\n");
    let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["devices.w.main_topic", "devices.w.unit", "devices.w.interval"], "{e:?}");
    assert!(e[1].1.contains("m3, ft3"), "{e:?}");
    assert!(errors("main_topic: w\nunit: l\n")[0].1.contains("meter"));
}

#[test]
fn sequences_take_short_and_long_forms_and_one_device_each() {
    let c = cfg("main_topic: w\nsequences:\n  main: w\n  garden: {device: garden, meter: water, unit: l}\n");
    assert!(validate(&c, "devices.w").is_empty());
    assert_eq!(c.sequences["garden"].device(), "garden");
    let e = errors("main_topic: w\nsequences:\n  a: x\n  b: x\n");
    assert_eq!(e[0].0, "devices.w.sequences.b");
    let e = errors("main_topic: w\nmeter: water\nsequences:\n  a: {device: x, unit: parsecs}\n");
    assert!(e.iter().any(|(k, m)| k == "devices.w.sequences.a.unit" && m.contains("not a unit")), "{e:?}");
}

#[test]
fn a_sequence_device_may_not_carry_camera_keys() {
    let e = errors("sequence_of: cam\nmeter: gas\n");
    assert_eq!(
        e,
        [(
            "devices.w.meter".to_owned(),
            "set it on the camera device `cam` (its `sequences:` entry), not on a `sequence_of` device".to_owned()
        )]
    );
    assert!(errors("sequence_of: cam\ninterval: 1m\n").is_empty());
}

#[test]
fn unknown_keys_and_dialects_are_refused_by_the_schema() {
    assert!(serde_norway::from_str::<AiOnTheEdgeConfig>("main_topic: w\nmaintopic: x\n").is_err());
    assert!(serde_norway::from_str::<AiOnTheEdgeConfig>("main_topic: w\ndialect: sl\n").is_err());
}

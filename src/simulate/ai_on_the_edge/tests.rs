//! Tests of `ai_on_the_edge`, kept beside it so the module reads as code.

use super::*;

fn t0() -> OffsetDateTime {
    time::macros::datetime!(2025-03-22 15:13:58 UTC)
}

fn camera(dialect: SimDialect, pattern: &[RoundKind]) -> Camera {
    let spec =
        CameraSpec { dialect, pattern: pattern.to_vec(), interval: Duration::from_secs(300), ..Default::default() };
    Camera::new(spec, t0())
}

fn payload<'a>(out: &'a [Publish], topic: &str) -> Option<&'a str> {
    out.iter().rev().find(|p| p.topic == topic).map(|p| p.payload.as_str())
}

#[test]
fn a_first_upstream_round_publishes_in_the_firmware_order_with_static_topics() {
    let mut c = camera(SimDialect::Upstream, &[RoundKind::Good]);
    let out = c.round(t0() + time::Duration::minutes(5));
    let topics: Vec<&str> = out.iter().map(|p| p.topic.as_str()).collect();
    let pos = |t: &str| topics.iter().position(|x| *x == t).unwrap_or_else(|| panic!("{t} missing: {topics:?}"));
    assert!(pos("watermeter/fwVersion") < pos("watermeter/connection"));
    assert!(pos("watermeter/connection") < pos("watermeter/main/value"));
    assert!(pos("watermeter/main/value") < pos("watermeter/main/json"));
    assert_eq!(topics.last(), Some(&"watermeter/status"));
    assert_eq!(payload(&out, "watermeter/status"), Some("Flow finished"));
    assert!(out.iter().filter(|p| p.topic.starts_with("homeassistant/")).count() == 19);
    assert!(out.iter().all(|p| p.retain == p.topic.starts_with("homeassistant/")), "RetainMessages is off");
    let second = c.round(t0() + time::Duration::minutes(10));
    assert!(!second.iter().any(|p| p.topic == "watermeter/fwVersion"), "static topics only after boot");
}

#[test]
fn the_upstream_json_has_the_exact_v16_layout() {
    let mut c = camera(SimDialect::Upstream, &[RoundKind::Good]);
    let out = c.round(t0() + time::Duration::minutes(5));
    let json = payload(&out, "watermeter/main/json").unwrap();
    assert!(json.starts_with("  {\n    \"value\": \"") && json.ends_with("\"\n  }\n"), "{json:?}");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    for key in ["value", "raw", "pre", "error", "rate", "timestamp"] {
        assert!(v[key].is_string(), "{key} is a string in {json}");
    }
    assert!(v["timestamp"].as_str().unwrap().ends_with("+0100"));
    assert_eq!(v["raw"].as_str().unwrap().len(), 9, "leading zeros kept");
}

#[test]
fn a_neg_rate_round_publishes_no_value_or_rate_and_the_firmware_error_text() {
    let mut c = camera(SimDialect::Upstream, &[RoundKind::Good, RoundKind::NegRate]);
    c.round(t0() + time::Duration::minutes(5));
    let out = c.round(t0() + time::Duration::minutes(10));
    assert!(payload(&out, "watermeter/main/value").is_none());
    assert!(payload(&out, "watermeter/main/rate").is_none());
    let err = payload(&out, "watermeter/main/error").unwrap();
    assert!(err.starts_with("Neg. Rate - Read:  - Raw: ") && err.ends_with(' '), "{err:?}");
    assert_eq!(payload(&out, "watermeter/main/changeabsolut"), Some("0.0000"));
    let v: serde_json::Value = serde_json::from_str(payload(&out, "watermeter/main/json").unwrap()).unwrap();
    assert_eq!(v["value"], "");
}

#[test]
fn an_unreadable_digit_sends_no_error_topic_and_an_empty_json_error() {
    let mut c = camera(SimDialect::Upstream, &[RoundKind::DigitUnreadable]);
    let out = c.round(t0() + time::Duration::minutes(5));
    assert!(payload(&out, "watermeter/main/error").is_none());
    assert!(payload(&out, "watermeter/main/raw").unwrap().ends_with('N'));
    let v: serde_json::Value = serde_json::from_str(payload(&out, "watermeter/main/json").unwrap()).unwrap();
    assert_eq!((v["value"].as_str(), v["error"].as_str()), (Some(""), Some("")));
}

#[test]
fn the_meter_never_runs_backwards_in_good_rounds() {
    let mut c = camera(SimDialect::Upstream, &[]);
    let mut last = 0.0;
    for i in 1..200 {
        let out = c.round(t0() + time::Duration::minutes(5 * i));
        if let Some(v) = payload(&out, "watermeter/main/value") {
            let v: f64 = v.parse().unwrap();
            assert!(v >= last, "{v} < {last}");
            last = v;
        }
    }
}

#[test]
fn cluster_rounds_use_the_fork_topics_and_status_codes() {
    let mut c = camera(SimDialect::Clusters, &[RoundKind::Good, RoundKind::NegRate]);
    let first = c.round(t0() + time::Duration::minutes(5));
    assert_eq!(payload(&first, "watermeter/device/status/connection"), Some("online"));
    assert_eq!(payload(&first, "watermeter/device/info/firmware_version"), Some("v17.0.0 (1234567)"));
    let out = c.round(t0() + time::Duration::minutes(10));
    let v: serde_json::Value = serde_json::from_str(payload(&out, "watermeter/process/data/0/json").unwrap()).unwrap();
    assert_eq!(v["value_status"], "E91 Rate negative");
    assert_eq!(v["actual_value"], v["fallback_value"], "the fork publishes the fallback value");
    assert_eq!(payload(&out, "watermeter/process/status/process_state"), Some("Idle - Waiting for Autostart"));
    assert_eq!(c.last_will(), ("watermeter/device/status/connection".into(), "offline".into()));
}

#[test]
fn set_prevalue_follows_the_firmware_rules() {
    let mut c = camera(SimDialect::Upstream, &[RoundKind::Good]);
    let now = t0();
    let ok = c.control("watermeter/ctrl/set_prevalue", br#"{"numbersname": "main", "value": 600}"#, now);
    assert!(matches!(ok, ControlOutcome::Applied(_)), "{ok:?}");
    let quoted = c.control("watermeter/ctrl/set_prevalue", br#"{"numbersname": "main", "value": "600"}"#, now);
    assert!(matches!(quoted, ControlOutcome::Refused(_)), "a quoted number is refused");
    let unknown = c.control("watermeter/ctrl/set_prevalue", br#"{"numbersname": "gas", "value": 1}"#, now);
    assert!(matches!(unknown, ControlOutcome::Refused(_)));
    // The meter shows ~512 now, below the new previous value: the next round is a Neg. Rate.
    let out = c.round(now + time::Duration::minutes(5));
    assert!(payload(&out, "watermeter/main/error").unwrap().starts_with("Neg. Rate"));
    let v: serde_json::Value = serde_json::from_str(payload(&out, "watermeter/main/json").unwrap()).unwrap();
    assert_eq!(v["pre"], "600.000000", "std::to_string precision after set_prevalue");
    assert_eq!(c.control("watermeter/ctrl/flow_start", b"", now), ControlOutcome::StartRound);
}

#[test]
fn discovery_for_several_sequences_prefixes_object_ids_and_names() {
    let spec = CameraSpec { sequences: vec!["main".into(), "gas".into()], ..Default::default() };
    let c = Camera::new(spec, t0());
    let d = c.discovery_configs();
    let gas = d.iter().find(|p| p.topic == "homeassistant/sensor/watermeter/gas_value/config").unwrap();
    assert!(
        gas.payload.contains("\"state_topic\": \"~/gas/value\"") && gas.payload.contains("\"name\": \"gas Value\"")
    );
    assert!(d.iter().any(|p| p.topic == "homeassistant/sensor/watermeter/uptime/config"));
    for p in &d {
        serde_json::from_str::<serde_json::Value>(&p.payload).unwrap_or_else(|e| panic!("{}: {e}", p.topic));
    }
}

#[test]
fn the_single_sequence_discovery_equals_the_reconstructed_sample() {
    let c = Camera::new(CameraSpec::default(), t0());
    let ours: Vec<String> = c.discovery_configs().into_iter().map(|p| format!("{}\t{}", p.topic, p.payload)).collect();
    let sample: Vec<&str> =
        DISCOVERY_TEMPLATE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(ours, sample);
}

#[test]
fn sim_config_errors_name_their_keys() {
    let cfg: AiOnTheEdgeSimConfig =
        serde_norway::from_str("main_topic: a/#\ninterval: 1ms\nerrors: 2\nsequences: []\n").unwrap();
    let keys: Vec<String> = validate(&cfg, "simulators.cam").into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        ["simulators.cam.main_topic", "simulators.cam.interval", "simulators.cam.errors", "simulators.cam.sequences"]
    );
}

//! Tests of `router`, kept beside it so the module reads as code.

use super::*;
use crate::model::Event;
use crate::mqtt::{CaptureRx, Captured, detached};

fn spec(id: &str) -> DeviceSpec {
    DeviceSpec {
        id: id.into(),
        adapter: AdapterKind::Goe,
        prefix: "home".into(),
        freshness: Duration::from_secs(60),
        min_interval: None,
        heartbeat: None,
        commands: true,
        offered: crate::adapters::command_names(AdapterKind::Goe),
    }
}

fn setup(spec: DeviceSpec) -> (Arc<Router>, DeviceHandle, CaptureRx) {
    let (mqtt, rx) = detached(10_000);
    let id = spec.id.clone();
    let settings =
        RouterSettings { bridge_prefix: "home".into(), quantity_topics: true, state_json: true, qos: QoS::AtMostOnce };
    let router = Router::new(settings, vec![spec], mqtt, Metrics::detached());
    let h = router.handle(&id).unwrap();
    (router, h, rx)
}

fn update(pairs: &[(&str, Value)]) -> Update {
    let mut u = Update::fresh();
    for (q, v) in pairs {
        u.push(Quantity::known(q), v.clone());
    }
    u
}

fn topics(c: &[Captured]) -> Vec<&str> {
    c.iter().map(|c| c.topic.as_str()).collect()
}

#[test]
fn a_new_value_is_published_retained_as_plain_text() {
    let (_r, h, mut rx) = setup(spec("ev"));
    h.apply(update(&[("power", Value::Number(11040.0)), ("voltage_l1", Value::Number(230.100000001))]));
    let out = rx.drain();
    let p = out.iter().find(|c| c.topic == "home/ev/power").unwrap();
    assert_eq!((p.payload.as_str(), p.retain), ("11040", true));
    assert!(out.iter().any(|c| c.topic == "home/ev/voltage_l1" && c.payload == "230.1"));
    assert!(out.iter().any(|c| c.topic == "home/ev/availability" && c.payload == "online" && c.retain));
}

#[test]
fn an_empty_text_removes_the_quantity_and_deletes_its_retained_topic() {
    let (r, h, mut rx) = setup(spec("ev"));
    h.apply(update(&[("reading_error", Value::Text("Neg. Rate".into())), ("power", Value::Number(1.0))]));
    h.flush();
    rx.drain();
    h.apply(update(&[("reading_error", Value::Text("".into()))]));
    h.flush();
    let out = rx.drain();
    let del = out.iter().find(|c| c.topic == "home/ev/reading_error").expect("topic deleted");
    assert!(del.payload.is_empty() && del.retain, "an empty retained payload deletes the topic");
    let state = out.iter().find(|c| c.topic == "home/ev/state").expect("state republished");
    assert!(!state.payload.contains("reading_error"), "{}", state.payload);
    assert!(r.snapshot()[0].values.iter().all(|(q, _)| q.name() != "reading_error"));
    h.apply(update(&[("reading_error", Value::Text("".into()))]));
    assert!(rx.drain().is_empty(), "clearing it again publishes nothing");
}

#[test]
fn unchanged_values_are_not_published_again() {
    let (_r, h, mut rx) = setup(spec("ev"));
    h.apply(update(&[("power", Value::Number(1.0))]));
    rx.drain();
    h.apply(update(&[("power", Value::Number(1.0)), ("current_l1", Value::Number(2.0))]));
    assert_eq!(topics(&rx.drain()), ["home/ev/current_l1"]);
}

#[test]
fn state_json_is_one_snapshot_per_flush_with_source_timestamp() {
    let (_r, h, mut rx) = setup(spec("ev"));
    let mut u = update(&[("power", Value::Number(5.0))]);
    u.ts = Some(time::macros::datetime!(2026-01-02 03:04:05.678 UTC));
    h.apply(u);
    h.apply(update(&[("charger_state", Value::Text("charging".into()))]));
    assert!(!rx.drain().iter().any(|c| c.topic == "home/ev/state"), "state waits for flush");
    h.flush();
    let out = rx.drain();
    let states: Vec<_> = out.iter().filter(|c| c.topic == "home/ev/state").collect();
    assert_eq!(states.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&states[0].payload).unwrap();
    assert_eq!(v["values"]["power"], 5);
    assert_eq!(v["values"]["charger_state"], "charging");
    assert!(v["ts"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn retained_replays_set_values_but_do_not_make_a_device_online() {
    let (r, h, mut rx) = setup(spec("ev"));
    let mut u = update(&[("power", Value::Number(3.0))]);
    u.fresh = false;
    h.apply(u);
    let out = rx.drain();
    assert!(out.iter().any(|c| c.topic == "home/ev/power"));
    assert!(!out.iter().any(|c| c.topic == "home/ev/availability"));
    assert!(!r.snapshot()[0].online);
}

#[test]
fn link_down_takes_the_device_offline_at_once_and_up_restores_it() {
    let (r, h, mut rx) = setup(spec("ev"));
    h.apply(update(&[("power", Value::Number(3.0))]));
    rx.drain();
    h.set_link(Link::Down("HTTP timed out".into()));
    assert!(rx.drain().iter().any(|c| c.topic == "home/ev/availability" && c.payload == "offline"));
    assert_eq!(r.snapshot()[0].reason.as_deref(), Some("HTTP timed out"));
    h.set_link(Link::Up);
    assert!(rx.drain().iter().any(|c| c.topic == "home/ev/availability" && c.payload == "online"));
}

#[test]
fn events_are_published_unretained_with_timestamp_and_data() {
    let (_r, h, mut rx) = setup(spec("ev"));
    let mut u = Update::fresh();
    u.events.push(Event::new("charging_started").with("car", 2));
    h.apply(u);
    let out = rx.drain();
    let e = out.iter().find(|c| c.topic == "home/ev/event").unwrap();
    assert!(!e.retain && e.qos1);
    let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
    assert_eq!(v["event"], "charging_started");
    assert_eq!(v["data"]["car"], 2);
    assert!(v["ts"].is_string());
}

#[test]
fn republish_all_sends_every_retained_topic_again() {
    let (r, h, mut rx) = setup(spec("ev"));
    h.apply(update(&[("power", Value::Number(3.0)), ("current_l1", Value::Number(1.5))]));
    h.flush();
    rx.drain();
    r.republish_all();
    let t = rx.drain();
    let t = topics(&t);
    for want in ["home/bridge/info", "home/ev/availability", "home/ev/power", "home/ev/current_l1", "home/ev/state"] {
        assert!(t.contains(&want), "{want} missing from {t:?}");
    }
}

#[test]
fn identity_changes_publish_the_info_topic() {
    let (_r, h, mut rx) = setup(spec("ev"));
    let mut u = Update::fresh();
    u.identity = Some(Identity { firmware: Some("56.9".into()), ..Default::default() });
    h.apply(u);
    let out = rx.drain();
    let info = out.iter().find(|c| c.topic == "home/ev/info").unwrap();
    assert!(info.payload.contains("\"firmware\":\"56.9\"") && info.payload.contains("\"kind\":\"ev_charger\""));
}

#[test]
fn the_counter_guard_keeps_a_drop_out_counts_it_and_reports_an_event() {
    let (r, h, mut rx) = setup(spec("ev"));
    h.apply(update(&[("energy_import", Value::Number(1000.0))]));
    rx.drain();
    h.apply(update(&[("energy_import", Value::Number(10.0)), ("power", Value::Number(5.0))]));
    let out = rx.drain();
    assert!(!out.iter().any(|c| c.topic == "home/ev/energy_import"), "{out:?}");
    assert!(out.iter().any(|c| c.topic == "home/ev/power"), "other readings of the update still go through");
    let e = out.iter().find(|c| c.topic == "home/ev/event").expect("reading_rejected event");
    let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
    assert_eq!(v["event"], "reading_rejected");
    assert_eq!(v["data"]["reason"], "counter_decrease");
    assert_eq!(v["data"]["accepted"], 1000.0);
    assert_eq!(h.value(Quantity::known("energy_import")), Some(Value::Number(1000.0)));
    let _ = r;
}

#[test]
fn a_guard_reset_topic_accepts_the_next_reading_and_answers_on_result() {
    let (r, h, mut rx) = setup(spec("ev"));
    h.apply(update(&[("energy_import", Value::Number(1000.0))]));
    let msg = crate::mqtt::Message {
        topic: "home/ev/energy_import/reset".into(),
        payload: bytes::Bytes::from_static(b"1"),
        retain: false,
    };
    r.on_guard_reset(&r.devices()[0], &msg);
    h.apply(update(&[("energy_import", Value::Number(3.0))]));
    let out = rx.drain();
    let res = out.iter().find(|c| c.topic == "home/ev/energy_import/result").expect("result");
    assert!(res.payload.contains("\"ok\":true"), "{}", res.payload);
    assert!(out.iter().any(|c| c.topic == "home/ev/energy_import" && c.payload == "3"));
    let bad = crate::mqtt::Message { topic: "home/ev/power/reset".into(), ..msg };
    r.on_guard_reset(&r.devices()[0], &bad);
    assert!(rx.drain().iter().any(|c| c.topic == "home/ev/power/result" && c.payload.contains("\"ok\":false")));
}

fn count(
    family: &prometheus_client::metrics::family::Family<
        crate::metrics::DeviceReasonLabel,
        prometheus_client::metrics::counter::Counter,
    >,
    reason: &str,
) -> u64 {
    family.get_or_create(&crate::metrics::DeviceReasonLabel { device: "ev".into(), reason: reason.into() }).get()
}

#[test]
fn implausible_numbers_are_rejected_counted_and_the_last_good_value_stays() {
    let (r, h, mut rx) = setup(spec("ev"));
    h.apply(update(&[("current_limit", Value::Number(16.0)), ("frequency", Value::Number(50.0))]));
    rx.drain();
    h.apply(update(&[
        ("current_limit", Value::Number(-9.2e18)),
        ("frequency", Value::Number(-9.2e18)),
        ("temperature", Value::Number(1e9)),
        ("energy_import", Value::Number(-5e11)),
        ("power", Value::Number(f64::NAN)),
        ("voltage_l1", Value::Number(230.0)),
    ]));
    let out = rx.drain();
    let value_topics: Vec<&str> = out.iter().map(|c| c.topic.as_str()).filter(|t| !t.ends_with("/event")).collect();
    assert_eq!(value_topics, ["home/ev/voltage_l1"], "only the plausible reading is published");
    let events = out.iter().filter(|c| c.topic == "home/ev/event" && c.payload.contains("reading_rejected"));
    assert_eq!(events.count(), 5);
    assert_eq!(count(&r.metrics.readings_rejected, "out_of_range"), 4);
    assert_eq!(count(&r.metrics.readings_rejected, "not_finite"), 1);
    assert_eq!(h.value(Quantity::known("current_limit")), Some(Value::Number(16.0)));
    assert_eq!(h.value(Quantity::known("energy_import")), None, "no baseline from a negative total");
    h.apply(update(&[("energy_import", Value::Number(12.5))]));
    assert_eq!(h.value(Quantity::known("energy_import")), Some(Value::Number(12.5)));
}

#[test]
fn oversized_texts_and_identity_fields_are_cut_with_a_marker_and_counted() {
    let (r, h, mut rx) = setup(spec("ev"));
    let mut u = update(&[("reading_raw", Value::Text("9".repeat(150 * 1024).into()))]);
    u.identity = Some(Identity {
        firmware: Some("f".repeat(100 * 1024)),
        model: Some("m".repeat(100 * 1024)),
        name: Some("n".repeat(100 * 1024)),
        ..Default::default()
    });
    u.events.push(Event::new("print_started").with("name", "x".repeat(100 * 1024)));
    h.apply(u);
    h.flush();
    let out = rx.drain();
    let largest = out.iter().map(|c| c.payload.len()).max().unwrap();
    assert!(largest < 8 * 1024, "largest publish {largest} bytes");
    let raw = out.iter().find(|c| c.topic == "home/ev/reading_raw").unwrap();
    assert!(raw.payload.len() <= crate::untrusted::MAX_TEXT_BYTES);
    assert!(raw.payload.ends_with(crate::untrusted::TRUNCATED_MARKER));
    let info = out.iter().find(|c| c.topic == "home/ev/info").unwrap();
    assert!(info.payload.contains(crate::untrusted::TRUNCATED_MARKER), "{}", info.payload);
    assert_eq!(count(&r.metrics.parse_errors, "text_too_long"), 5);
}

#[test]
fn reset_topics_with_made_up_names_do_not_exhaust_the_quantity_table() {
    let (r, _h, mut rx) = setup(spec("ev"));
    for i in 0..5000 {
        let msg = crate::mqtt::Message {
            topic: format!("home/ev/temperature_a{i}/reset"),
            payload: bytes::Bytes::from_static(b"1"),
            retain: false,
        };
        r.on_guard_reset(&r.devices()[0], &msg);
    }
    assert!(rx.drain().iter().all(|c| c.payload.contains("\"ok\":false")));
    let legit = Quantity::named("temperature_reset_test_sensor");
    assert_eq!(legit.map(Quantity::name), Some("temperature_reset_test_sensor"));
}

#[test]
fn extend_freshness_lengthens_but_never_shortens_the_window() {
    let mut s = spec("ev");
    s.freshness = Duration::from_millis(20);
    let (r, h, _rx) = setup(s);
    let window = |r: &Router| {
        let d = &r.devices()[0];
        lock(&d.state).freshness(&d.spec)
    };
    assert_eq!(window(&r), Duration::from_millis(20));
    h.extend_freshness(Duration::from_secs(60));
    h.extend_freshness(Duration::from_millis(1));
    assert_eq!(window(&r), Duration::from_secs(60));
}

#[test]
fn device_prefix_beats_routes_which_beat_the_global_prefix() {
    let text = "output:\n  prefix: home\nroutes:\n  - match: { kind: ev_charger }\n    prefix: home/energy\ndevices:\n  a:\n    adapter: goe\n    serial: \"1\"\n  b:\n    adapter: goe\n    serial: \"2\"\n    prefix: garage\n";
    let c = crate::config::load_str(text, "t.yaml", std::path::Path::new(".")).unwrap();
    let a = c.device_spec("a").unwrap();
    let b = c.device_spec("b").unwrap();
    assert_eq!(a.prefix, "home/energy");
    assert_eq!(b.prefix, "garage");
    assert_eq!(a.freshness, Duration::from_secs(15));
}

//! Tests of `ai_on_the_edge`, kept beside it so the module reads as code.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::types::AdapterKind;
use crate::metrics::Metrics;
use crate::model::Value;
use crate::mqtt::{CaptureRx, Captured, Message, QoS, detached};
use crate::router::{DeviceSpec, Router, RouterSettings};

struct Rig {
    router: Arc<Router>,
    ingest: Ingest,
    rx: CaptureRx,
}

fn rig(yaml: &str, extra_devices: &[&str]) -> Rig {
    rig_fresh(yaml, extra_devices, Duration::from_secs(900))
}

fn rig_fresh(yaml: &str, extra_devices: &[&str], freshness: Duration) -> Rig {
    let (mqtt, rx) = detached(10_000);
    let specs = std::iter::once("cam")
        .chain(extra_devices.iter().copied())
        .map(|id| DeviceSpec {
            id: id.into(),
            adapter: AdapterKind::AiOnTheEdge,
            prefix: "home".into(),
            freshness,
            min_interval: None,
            heartbeat: None,
            commands: false,
            offered: &[],
        })
        .collect();
    let settings =
        RouterSettings { bridge_prefix: "home".into(), quantity_topics: true, state_json: true, qos: QoS::AtMostOnce };
    let router = Router::new(settings, specs, mqtt, Metrics::detached());
    let cfg: AiOnTheEdgeConfig = serde_norway::from_str(yaml).unwrap();
    let mut ingest = Ingest::new(&cfg, router.handle("cam").unwrap());
    ingest.set_clock(time::macros::datetime!(2025-03-22 15:20:00 UTC));
    Rig { router, ingest, rx }
}

impl Rig {
    fn send(&mut self, topic: &str, payload: &str) {
        self.send_with(topic, payload, false);
    }
    fn send_with(&mut self, topic: &str, payload: &str, retain: bool) {
        let msg = Message { topic: topic.into(), payload: Bytes::copy_from_slice(payload.as_bytes()), retain };
        self.ingest.message(&msg);
    }
    fn out(&mut self) -> Vec<Captured> {
        self.rx.drain()
    }
    fn online(&self, id: &str) -> bool {
        self.router.snapshot().into_iter().find(|d| d.id == id).unwrap().online
    }
}

fn on<'a>(out: &'a [Captured], topic: &str) -> Vec<&'a str> {
    out.iter().filter(|c| c.topic == topic).map(|c| c.payload.as_str()).collect()
}

const GOOD_JSON: &str = "  {\n    \"value\": \"512.3025\",\n    \"raw\": \"0512.3025\",\n    \"pre\": \"512.3025\",\n    \"error\": \"no error\",\n    \"rate\": \"0.000100\",\n    \"timestamp\": \"2025-03-22T16:18:58+0100\"\n  }\n";

#[test]
fn a_round_with_single_topics_and_json_is_routed_once_at_the_json() {
    let mut r = rig("main_topic: watermeter\nmeter: water\n", &[]);
    r.send("watermeter/main/value", "512.3025");
    r.send("watermeter/main/raw", "0512.3025");
    assert!(on(&r.out(), "home/cam/volume").is_empty(), "single topics wait for the json");
    r.send("watermeter/main/json", GOOD_JSON);
    let out = r.out();
    assert_eq!(on(&out, "home/cam/volume"), ["512.3025"]);
    assert_eq!(on(&out, "home/cam/flow_rate"), ["0.006"]);
    r.ingest.flush();
    let state: serde_json::Value = serde_json::from_str(on(&r.out(), "home/cam/state")[0]).unwrap();
    assert_eq!(state["ts"], "2025-03-22T15:18:58.000Z", "the device's timestamp, in UTC");
}

#[test]
fn a_device_without_json_is_routed_when_the_round_ends() {
    let mut r = rig("main_topic: watermeter\nmeter: water\n", &[]);
    r.send("watermeter/main/value", "10.5");
    r.send("watermeter/main/error", "no error");
    assert!(on(&r.out(), "home/cam/volume").is_empty());
    r.send("watermeter/status", "Flow finished");
    assert_eq!(on(&r.out(), "home/cam/volume"), ["10.5"]);
    // The same field again also ends a round.
    r.send("watermeter/main/value", "10.6");
    r.send("watermeter/main/value", "10.7");
    assert_eq!(on(&r.out(), "home/cam/volume"), ["10.6"]);
    r.ingest.finish();
    assert_eq!(on(&r.out(), "home/cam/volume"), ["10.7"]);
}

#[test]
fn malformed_json_is_completed_from_the_single_topics_of_its_round() {
    let mut r = rig("main_topic: watermeter\nmeter: water\n", &[]);
    r.send("watermeter/main/value", "638.7192");
    r.send("watermeter/main/raw", "0638.7192");
    r.send("watermeter/main/rate", "0.001000");
    r.send("watermeter/main/json", r#"{"value": 638.7192, "raw": "0638.7192, "pre": "638.7192", "error": "no error", "rate": 0.000000, "timestamp": "2022-12-14T10:12:19+0100"}"#);
    let out = r.out();
    assert_eq!(on(&out, "home/cam/volume"), ["638.7192"]);
    assert_eq!(on(&out, "home/cam/reading_raw"), ["0638.7192"]);
    assert_eq!(on(&out, "home/cam/flow_rate"), ["0.06"], "the exact single topic beats the scanned body");
}

#[test]
fn an_error_round_sets_the_error_emits_one_event_and_keeps_the_total() {
    let mut r = rig("main_topic: watermeter\n", &[]);
    r.send("watermeter/main/json", GOOD_JSON);
    r.out();
    let text = "Neg. Rate - Read:  - Raw: 0512.3015 - Pre: 512.3025 ";
    r.send("watermeter/main/error", text);
    r.send("watermeter/main/raw", "0512.3015");
    r.send(
        "watermeter/main/json",
        &GOOD_JSON
            .replace("\"512.3025\",\n    \"raw\": \"0512.3025\"", "\"\",\n    \"raw\": \"0512.3015\"")
            .replace("no error", text),
    );
    let out = r.out();
    assert!(on(&out, "home/cam/volume").is_empty());
    assert_eq!(on(&out, "home/cam/reading_error"), [text.trim()]);
    let events = on(&out, "home/cam/event");
    assert_eq!(events.len(), 1, "{events:?}");
    let e: serde_json::Value = serde_json::from_str(events[0]).unwrap();
    assert_eq!(e["event"], "reading_rejected");
    assert_eq!(e["data"]["reason"], "device_negative_rate");
    assert_eq!(e["data"]["raw"], "0512.3015");
    assert_eq!(
        r.router.handle("cam").unwrap().value(crate::model::Quantity::known("volume")),
        Some(Value::Number(512.3025))
    );
}

#[test]
fn retained_replays_set_values_without_events_or_availability() {
    let mut r = rig("main_topic: watermeter\n", &[]);
    r.send_with("watermeter/main/error", "Rate too high - Read: 600 - Pre: 512", true);
    r.send_with("watermeter/main/json", r#"{"value": "", "raw": "0600.0000", "error": "Rate too high - Read: 600 - Pre: 512", "rate": "", "timestamp": ""}"#, true);
    let out = r.out();
    assert!(on(&out, "home/cam/event").is_empty());
    assert_eq!(on(&out, "home/cam/reading_error").len(), 1);
    assert!(!r.online("cam"));
}

#[test]
fn a_retained_last_will_is_lifted_by_the_next_live_message() {
    let mut r = rig("main_topic: watermeter\n", &[]);
    r.send_with("watermeter/connection", "connection lost", true);
    assert!(!r.online("cam"));
    let reason = r.router.snapshot()[0].reason.clone().unwrap();
    assert!(reason.contains("may be stale"), "{reason}");
    r.send("watermeter/uptime", "1843");
    assert!(r.online("cam"), "a live uptime proves the camera is back");
    r.send("watermeter/connection", "connection lost");
    assert!(!r.online("cam"));
    assert!(r.router.snapshot()[0].reason.as_deref().unwrap().contains("dropped off the broker"));
    r.send("watermeter/connection", "connected");
    assert!(r.online("cam"));
}

#[test]
fn sequences_go_to_their_configured_devices() {
    let mut r = rig(
        "main_topic: watermeter\nmeter: water\nsequences:\n  main: cam\n  gas: {device: gasmeter, meter: energy}\n",
        &["gasmeter"],
    );
    r.send("watermeter/main/json", GOOD_JSON);
    r.send("watermeter/gas/json", &GOOD_JSON.replace("512.3025", "1000.5"));
    let out = r.out();
    assert_eq!(on(&out, "home/cam/volume"), ["512.3025"]);
    assert_eq!(on(&out, "home/gasmeter/energy_import"), ["1000.5"]);
    assert!(on(&out, "home/gasmeter/power").len() == 1, "the long form's meter decides the rate quantity");
}

#[test]
fn an_unmapped_second_sequence_is_counted_not_published() {
    let mut r = rig("main_topic: watermeter\n", &[]);
    r.send("watermeter/main/json", GOOD_JSON);
    r.send("watermeter/garden/json", GOOD_JSON);
    let out = r.out();
    assert_eq!(on(&out, "home/cam/volume").len(), 1);
    assert_eq!(r.router.handle("cam").unwrap().counters().unknown_keys.get(), 1);
    let details = &r.router.snapshot()[0].details;
    assert_eq!(details.get("unmapped_sequence").map(String::as_str), Some("garden"));
}

#[test]
fn a_forced_dialect_counts_the_other_layout_as_unknown() {
    let mut r = rig("main_topic: watermeter\ndialect: upstream\n", &[]);
    r.send("watermeter/device/status/wlan_rssi", "-54");
    assert!(on(&r.out(), "home/cam/rssi").is_empty());
    let snap = &r.router.snapshot()[0];
    assert!(snap.details["dialect_mismatch"].contains("dialect: clusters"));
}

#[test]
fn auto_detects_the_cluster_layout_and_reads_fork_json() {
    let mut r = rig("main_topic: watermeter\n", &[]);
    r.send("watermeter/device/status/wlan_rssi", "-54");
    r.send("watermeter/process/data/0/json", "{\n\t\"sequence_name\":\t\"main\",\n\t\"actual_value\":\t\"146.5400\",\n\t\"fallback_value\":\t\"146.5400\",\n\t\"raw_value\":\t\"0146.5400\",\n\t\"value_status\":\t\"000 Valid\",\n\t\"rate_per_minute\":\t\"0.0010\",\n\t\"timestamp_processed\":\t\"2024-02-02T16:59:24+0100\"\n}");
    let out = r.out();
    assert_eq!(on(&out, "home/cam/rssi"), ["-54"]);
    assert_eq!(on(&out, "home/cam/volume"), ["146.54"]);
    assert_eq!(r.router.snapshot()[0].details["dialect"], "clusters (detected)");
}

#[test]
fn discovery_sets_the_meter_when_the_config_does_not() {
    let mut r = rig("main_topic: watermeter\n", &[]);
    r.send_with(
        "homeassistant/sensor/watermeter/value/config",
        r#"{"~": "watermeter","state_topic": "~/main/value","unit_of_meas": "kWh","device_class": "energy","device": {"model": "Meter Digitizer","manufacturer": "AI on the Edge Device","sw_version": "v16.1.0"}}"#,
        true,
    );
    r.send("watermeter/main/json", GOOD_JSON);
    let out = r.out();
    assert_eq!(on(&out, "home/cam/energy_import"), ["512.3025"]);
    assert!(on(&out, "home/cam/volume").is_empty());
    let snap = &r.router.snapshot()[0];
    assert_eq!(snap.identity.firmware.as_deref(), Some("v16.1.0"));
    assert!(snap.details["meter"].contains("discovery"));
}

#[test]
fn a_longer_announced_interval_stretches_freshness_when_none_is_configured() {
    let mut stretched = rig_fresh("main_topic: watermeter\n", &[], Duration::from_millis(1));
    let mut fixed = rig_fresh("main_topic: watermeter\ninterval: 1m\n", &[], Duration::from_millis(1));
    for r in [&mut stretched, &mut fixed] {
        r.send("watermeter/interval", "15.0");
        r.send("watermeter/uptime", "100");
        assert!(r.online("cam"));
    }
    assert!(stretched.router.snapshot()[0].details["interval"].starts_with("15 min"));
    // Let the configured 1 ms window pass (time must elapse; nothing is waited for).
    std::thread::sleep(Duration::from_millis(5));
    stretched.router.tick();
    fixed.router.tick();
    assert!(stretched.online("cam"), "announced 15 min: fresh for 45 min");
    assert!(!fixed.online("cam"), "`interval:` configured: the device's announcement does not override it");
}

#[test]
fn implausible_device_values_are_counted_and_skipped() {
    let mut r = rig("main_topic: watermeter\n", &[]);
    r.send("watermeter/uptime", "1642490972");
    r.send("watermeter/Wifi RSSI", "-70");
    r.send("watermeter/wifiRSSI", "-127");
    let out = r.out();
    assert!(on(&out, "home/cam/uptime").is_empty());
    assert_eq!(on(&out, "home/cam/rssi"), ["-70"], "v10.4 spelling, and -127 means unknown");
}

#[test]
fn control_and_gpio_topics_are_neither_data_nor_drift() {
    let mut r = rig("main_topic: watermeter\n", &[]);
    r.send("watermeter/ctrl/flow_start", "1");
    r.send("watermeter/GPIO/GPIO12", "true");
    r.send("watermeter/ctrl/set_prevalue", r#"{"numbersname": "main", "value": 12345.67890}"#);
    let cam = r.router.handle("cam").unwrap();
    assert_eq!(cam.counters().unknown_keys.get(), 0);
    assert!(!r.online("cam"), "a command from someone else says nothing about the camera");
}

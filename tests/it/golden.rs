//! Golden replay: every recorded go-e capture goes through the real adapter and router code (no
//! broker: a detached MQTT handle captures what would be published). The result — the final
//! retained value per topic, the events and the health counters — is compared with
//! `adapters/goe/fixtures/golden/<capture>.expected.json`; `HLBRIDGE_BLESS=1` rewrites those files.
//! Each test also asserts the key facts in code, so re-blessing cannot hide a wrong value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use hlbridge::surface::adapters::goe::Ingest;
use hlbridge::surface::config::AdapterKind;
use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{CaptureRx, Captured, Message, QoS};
use hlbridge::surface::router::{DeviceSpec, Router, RouterSettings};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::common::{assert_rfc3339_utc, find_samples, manifest_dir, parse_samples};

fn fixtures() -> PathBuf {
    manifest_dir().join("adapters/goe/fixtures")
}

fn read_fixture(name: &str) -> String {
    crate::common::read_file(&fixtures().join(name))
}

/// The router and adapter state of one replay.
struct Replay {
    router: Arc<Router>,
    captured: CaptureRx,
    registry: Registry,
    ingests: BTreeMap<String, Ingest>,
    device_ids: Vec<String>,
}

impl Replay {
    fn new(ids: &[String]) -> Replay {
        let (mqtt, captured) = hlbridge::surface::mqtt::detached(100_000);
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let specs = ids
            .iter()
            .map(|id| DeviceSpec {
                id: id.clone(),
                adapter: AdapterKind::Goe,
                prefix: "home".into(),
                freshness: std::time::Duration::from_secs(15),
                min_interval: None,
                heartbeat: None,
                commands: false,
                offered: &[],
            })
            .collect();
        let router = Router::new(
            RouterSettings {
                bridge_prefix: "home".into(),
                quantity_topics: true,
                state_json: true,
                qos: QoS::AtMostOnce,
            },
            specs,
            mqtt,
            metrics,
        );
        let ingests = ids
            .iter()
            .map(|id| {
                let h = router.handle(id).expect("device handle");
                (id.clone(), Ingest::new(h))
            })
            .collect();
        Replay { router, captured, registry, ingests, device_ids: ids.to_vec() }
    }

    fn mqtt(&mut self, device: &str, key: &str, topic: &str, payload: &str, retain: bool) {
        let msg = Message { topic: topic.to_owned(), payload: Bytes::copy_from_slice(payload.as_bytes()), retain };
        self.ingests.get_mut(device).expect("known device").mqtt_message(key, &msg);
    }

    fn http(&mut self, device: &str, status: u16, body: &str) -> Result<(), String> {
        self.ingests.get_mut(device).expect("known device").http_status_body(status, body.as_bytes())
    }

    /// Flushes every device and reduces what was published (see module docs).
    fn finish(mut self, fixture: &str) -> Value {
        for id in &self.device_ids {
            self.router.handle(id).unwrap().flush();
        }
        let captured = self.captured.drain();
        check_publish_flags(&captured);
        let mut topics = BTreeMap::new();
        let mut events = Vec::new();
        for c in &captured {
            if c.topic.ends_with("/event") {
                let mut e = normalise(&c.payload);
                let obj = e.as_object_mut().expect("event object");
                obj.insert("topic".into(), c.topic.clone().into());
                events.push(e);
            } else {
                topics.insert(c.topic.clone(), normalise(&c.payload));
            }
        }
        let samples = parse_samples(&hlbridge::surface::metrics::render(&self.registry));
        let mut counters = serde_json::Map::new();
        for id in &self.device_ids {
            let one = |name: &str| find_samples(&samples, name, &[("device", id)]).iter().map(|s| s.value).sum::<f64>();
            let mut parse_errors = serde_json::Map::new();
            // Reasons start at 0 (health series exist from start-up); the golden lists what happened.
            for s in find_samples(&samples, "hlbridge_parse_errors_total", &[("device", id)])
                .into_iter()
                .filter(|s| s.value > 0.0)
            {
                let reason = s.labels.iter().find(|(k, _)| k == "reason").unwrap();
                parse_errors.insert(reason.1.clone(), json!(s.value));
            }
            counters.insert(
                id.clone(),
                json!({
                    "messages_received": one("hlbridge_messages_received_total"),
                    "unknown_keys": one("hlbridge_unknown_keys_total"),
                    "parse_errors": parse_errors,
                }),
            );
        }
        json!({
            "fixture": fixture,
            "topics": topics,
            "events": events,
            "counters": counters,
        })
    }
}

/// Retained: values, state, availability, info. Not retained: events. Availability and events QoS 1.
fn check_publish_flags(captured: &[Captured]) {
    for c in captured {
        let event = c.topic.ends_with("/event");
        assert_eq!(c.retain, !event, "retain flag of {} ({})", c.topic, c.payload);
        if event || c.topic.ends_with("/availability") {
            assert!(c.qos1, "{} must be published with QoS 1", c.topic);
        }
    }
}

/// JSON payloads (state, info, events) become objects with `ts` replaced (it is the replay's wall
/// clock, checked for format here); plain payloads stay text.
fn normalise(payload: &str) -> Value {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(mut m)) => {
            for key in ["ts", "started"] {
                // `null`: no source reading yet (only retained replays were seen).
                if let Some(ts) = m.get(key).filter(|t| !t.is_null()) {
                    let s = ts.as_str().unwrap_or_else(|| panic!("{key} is a string: {payload}"));
                    assert_rfc3339_utc(s);
                    m.insert(key.into(), "<ts>".into());
                }
            }
            Value::Object(m)
        }
        _ => Value::String(payload.to_owned()),
    }
}

/// Compares with (or, under `HLBRIDGE_BLESS=1`, writes) the golden file.
fn golden(fixture: &str, actual: &Value) {
    crate::common::golden(&fixtures(), fixture, actual);
}

/// Splits `<topic> <json>` log lines of go-e chargers into (serial, key, topic, payload).
fn mqtt_lines(text: &str) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((topic, payload)) = line.split_once(' ') else {
            continue;
        };
        let Some(rest) = topic.strip_prefix("go-eCharger/").or_else(|| topic.strip_prefix("/go-eCharger/")) else {
            continue;
        };
        let Some((serial, key)) = rest.split_once('/') else {
            continue;
        };
        if key.is_empty() || key.contains('/') {
            continue; // `<key>/set`, `<key>/result`: writes, not state
        }
        out.push((serial.to_owned(), key.to_owned(), topic.to_owned(), payload.trim().to_owned()));
    }
    out
}

/// Replays an MQTT log, one device per serial (`goe-<serial>`), every message live.
fn replay_mqtt_log(fixture: &str) -> Value {
    let lines = mqtt_lines(&read_fixture(fixture));
    assert!(!lines.is_empty(), "{fixture} has no `<topic> <payload>` lines");
    let mut ids: Vec<String> = Vec::new();
    for (serial, ..) in &lines {
        let id = format!("goe-{serial}");
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut r = Replay::new(&ids);
    for (serial, key, topic, payload) in &lines {
        r.mqtt(&format!("goe-{serial}"), key, topic, payload, false);
    }
    let out = r.finish(fixture);
    golden(fixture, &out);
    out
}

/// The final value of `topic` in a reduced replay (panics when absent).
fn topic<'a>(out: &'a Value, topic: &str) -> &'a Value {
    out["topics"]
        .get(topic)
        .unwrap_or_else(|| panic!("{topic} was not published; topics: {:?}", out["topics"].as_object().unwrap().keys()))
}

fn text<'a>(out: &'a Value, t: &str) -> &'a str {
    topic(out, t).as_str().unwrap_or_else(|| panic!("{t} is plain text"))
}

fn absent(out: &Value, t: &str) {
    assert!(out["topics"].get(t).is_none(), "{t} must not be published: {:?}", out["topics"][t]);
}

fn event_names(out: &Value) -> Vec<String> {
    out["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_owned()).collect()
}

fn counter(out: &Value, device: &str, name: &str) -> f64 {
    out["counters"][device][name].as_f64().unwrap()
}

/// Checks that the state JSON agrees with the per-quantity topics.
fn state_matches_topics(out: &Value, device: &str) {
    let state = topic(out, &format!("home/{device}/state"));
    assert_eq!(state["ts"], "<ts>");
    let values = state["values"].as_object().expect("state.values");
    assert!(!values.is_empty());
    for (q, v) in values {
        let plain = text(out, &format!("home/{device}/{q}"));
        let as_text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(plain, as_text, "state.values.{q} vs home/{device}/{q}");
    }
}

#[test]
fn capture_053_1_replays_to_its_golden_topics() {
    let out = replay_mqtt_log("mqtt-capture-053.1.log");
    let d = "home/goe-000001";
    state_matches_topics(&out, "goe-000001");
    assert_eq!(text(&out, &format!("{d}/availability")), "online");
    assert_eq!(text(&out, &format!("{d}/charger_state")), "idle");
    assert_eq!(text(&out, &format!("{d}/car_connected")), "false");
    assert_eq!(text(&out, &format!("{d}/charging_allowed")), "true");
    assert_eq!(text(&out, &format!("{d}/current_limit")), "10");
    assert_eq!(text(&out, &format!("{d}/current_allowed")), "10");
    assert_eq!(text(&out, &format!("{d}/force_state")), "neutral");
    assert_eq!(text(&out, &format!("{d}/phase_mode")), "three");
    assert_eq!(text(&out, &format!("{d}/charge_reason")), "charging_fallback_default");
    // eto 0 Wh is a real reading of this unit: 0 kWh, not absent.
    assert_eq!(text(&out, &format!("{d}/energy_import")), "0");
    assert_eq!(text(&out, &format!("{d}/session_energy")), "0");
    // The odd wiring of this test bench, mapped index by index: 15 V on L1, 223 V on N (last line).
    assert_eq!(text(&out, &format!("{d}/voltage_l1")), "15");
    assert_eq!(text(&out, &format!("{d}/voltage_n")), "223");
    // rbt 9578733 ms → 9578 s; tma last [24.25,28.25]; rssi last -46 dBm.
    assert_eq!(text(&out, &format!("{d}/uptime")), "9578");
    assert_eq!(text(&out, &format!("{d}/temperature")), "24.25");
    assert_eq!(text(&out, &format!("{d}/temperature_pcb")), "28.25");
    assert_eq!(text(&out, &format!("{d}/rssi")), "-46");
    assert_eq!(topic(&out, &format!("{d}/info"))["firmware"], "053.1");
    assert!(event_names(&out).is_empty(), "car never changes in this capture");
    assert_eq!(counter(&out, "goe-000001", "messages_received"), 135.0);
}

#[test]
fn traffic_055_2_replays_to_its_golden_topics() {
    let out = replay_mqtt_log("mqtt-traffic-055.2.log");
    let d = "home/goe-000001";
    state_matches_topics(&out, "goe-000001");
    assert_eq!(text(&out, &format!("{d}/charger_state")), "idle");
    assert_eq!(text(&out, &format!("{d}/current_limit")), "10");
    // Last nrg: [232,232,228,1,0,...].
    assert_eq!(text(&out, &format!("{d}/voltage_l1")), "232");
    assert_eq!(text(&out, &format!("{d}/voltage_l3")), "228");
    assert_eq!(text(&out, &format!("{d}/voltage_n")), "1");
    assert_eq!(text(&out, &format!("{d}/power")), "0");
    assert_eq!(text(&out, &format!("{d}/temperature")), "7");
    assert_eq!(text(&out, &format!("{d}/temperature_pcb")), "11");
    assert_eq!(text(&out, &format!("{d}/uptime")), "2028728");
    let info = topic(&out, &format!("{d}/info"));
    assert_eq!(info["firmware"], "055.2");
    assert_eq!(info["adapter"], "goe");
    assert_eq!(info["kind"], "ev_charger");
    assert!(event_names(&out).is_empty());
}

#[test]
fn traffic_056_9_replays_to_its_golden_topics() {
    let out = replay_mqtt_log("mqtt-traffic-056.9.log");
    let dev = "goe-072246";
    let d = format!("home/{dev}");
    state_matches_topics(&out, dev);
    assert_eq!(text(&out, &format!("{d}/voltage_l1")), "232");
    assert_eq!(text(&out, &format!("{d}/voltage_l2")), "231");
    assert_eq!(text(&out, &format!("{d}/charger_state")), "idle");
    assert_eq!(text(&out, &format!("{d}/energy_import")), "0");
    assert_eq!(text(&out, &format!("{d}/current_limit")), "20");
    assert_eq!(text(&out, &format!("{d}/current_allowed")), "10");
    assert_eq!(text(&out, &format!("{d}/charge_reason")), "charging_awattar_price_low");
    assert_eq!(text(&out, &format!("{d}/charger_error")), "none");
    assert_eq!(text(&out, &format!("{d}/rssi")), "-66");
    assert_eq!(text(&out, &format!("{d}/uptime")), "814");
    assert_eq!(text(&out, &format!("{d}/temperature")), "23");
    assert_eq!(text(&out, &format!("{d}/temperature_pcb")), "27.5");
    // Idle: the charger reports 0 % power factor; published as the ratio 0, within 0..1.
    for ph in ["l1", "l2", "l3"] {
        let pf: f64 = text(&out, &format!("{d}/power_factor_{ph}")).parse().unwrap();
        assert!((0.0..=1.0).contains(&pf), "power_factor_{ph} = {pf}");
    }
    let info = topic(&out, &format!("{d}/info"));
    assert_eq!(info["firmware"], "56.9");
    assert_eq!(info["model"], "go-eCharger");
    assert_eq!(info["vendor"], "go-e");
    // Keys with no canonical quantity are not invented: no frequency/tpa-derived topics yet.
    absent(&out, &format!("{d}/power_import"));
    absent(&out, &format!("{d}/energy_export"));
    assert!(event_names(&out).is_empty());
    assert_eq!(counter(&out, dev, "messages_received"), 132.0);
    assert_eq!(out["counters"][dev]["parse_errors"], json!({}));
}

#[test]
fn vendor_doc_transcript_replays_one_device_per_serial() {
    let out = replay_mqtt_log("mqtt-vendor-doc-examples.txt");
    let one = "home/goe-00000001";
    assert_eq!(text(&out, &format!("{one}/charging_allowed")), "true");
    assert_eq!(text(&out, &format!("{one}/current_allowed")), "16");
    // rbt 498432770 ms → 498432 s.
    assert_eq!(text(&out, &format!("{one}/uptime")), "498432");
    // Development builds print the firmware with a git suffix; the identity keeps it verbatim.
    assert_eq!(topic(&out, &format!("{one}/info"))["firmware"], "35.6-1-ga0d44e5");
    assert_eq!(topic(&out, "home/goe-00000004/info")["firmware"], "35.6-2-g99a02ad");
    assert_eq!(text(&out, "home/goe-00000004/uptime"), "498012");
    // The friendly name was renamed by the successful write; `/set` and `/result` are not state.
    assert_eq!(topic(&out, "home/goe-00000002/info")["name"], "mein charger");
    assert!(event_names(&out).is_empty());
}

#[test]
fn http_status_3phase_fw055_replays_to_its_golden_topics() {
    let fixture = "http-status-filtered-fw055.0-3phase.jsonl";
    let mut r = Replay::new(&["charger".into()]);
    for line in read_fixture(fixture).lines().filter(|l| !l.trim().is_empty()) {
        r.http("charger", 200, line).expect("a good status body");
    }
    let out = r.finish(fixture);
    golden(fixture, &out);
    let d = "home/charger";
    state_matches_topics(&out, "charger");
    assert_eq!(text(&out, &format!("{d}/charger_state")), "charging");
    assert_eq!(text(&out, &format!("{d}/car_connected")), "true");
    assert_eq!(text(&out, &format!("{d}/force_state")), "on");
    // Second line: eto 527967 Wh, wh 16495.62 Wh, nrg[11] 10460.44 W.
    assert_eq!(text(&out, &format!("{d}/energy_import")), "527.967");
    assert_eq!(text(&out, &format!("{d}/session_energy")), "16.4956");
    assert_eq!(text(&out, &format!("{d}/power")), "10460.4");
    assert_eq!(text(&out, &format!("{d}/power_l1")), "3485.2");
    assert_eq!(text(&out, &format!("{d}/current_l2")), "15.352");
    assert_eq!(text(&out, &format!("{d}/voltage_l3")), "227.23");
    assert_eq!(text(&out, &format!("{d}/power_factor_l1")), "1");
    assert_eq!(text(&out, &format!("{d}/power_factor_l3")), "0.9991");
    // tma had two sensors, then one: the second keeps its last value rather than vanishing or 0.
    assert_eq!(text(&out, &format!("{d}/temperature")), "25");
    assert_eq!(text(&out, &format!("{d}/temperature_pcb")), "22.5");
    assert_eq!(topic(&out, &format!("{d}/info"))["firmware"], "055.0");
    // car stayed 2: the first value derives no event, an unchanged one neither.
    assert!(event_names(&out).is_empty());
    assert_eq!(counter(&out, "charger", "messages_received"), 2.0);
}

#[test]
fn http_status_vendor_screenshot_publishes_no_made_up_values() {
    let fixture = "http-status-filtered-vendor-screenshot.json";
    let mut r = Replay::new(&["charger".into()]);
    r.http("charger", 200, &read_fixture(fixture)).expect("a good status body");
    let out = r.finish(fixture);
    golden(fixture, &out);
    let d = "home/charger";
    assert_eq!(text(&out, &format!("{d}/charging_allowed")), "false");
    assert_eq!(text(&out, &format!("{d}/current_limit")), "16");
    // acu null = "no current allowed right now": absent, never 0.
    absent(&out, &format!("{d}/current_allowed"));
    absent(&out, &format!("{d}/power"));
    absent(&out, &format!("{d}/charger_state"));
    assert_eq!(counter(&out, "charger", "unknown_keys"), 0.0);
}

#[test]
fn nrg_examples_map_to_canonical_units() {
    let fixture = "nrg-examples.jsonl";
    let examples: Vec<Value> = read_fixture(fixture)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect();
    // API v1 used scaled integers and is never fed to this v2 adapter; it is in the file for contrast.
    let v2: Vec<&Value> = examples.iter().filter(|e| e["api"] == "v2").collect();
    assert!(v2.len() >= 5 && v2.len() < examples.len());
    let ids: Vec<String> = (0..v2.len()).map(|i| format!("nrg-{i}")).collect();
    let mut r = Replay::new(&ids);
    for (id, e) in ids.iter().zip(&v2) {
        let payload = e["nrg"].to_string();
        r.mqtt(id, "nrg", "go-eCharger/000000/nrg", &payload, false);
    }
    let out = r.finish(fixture);
    golden(fixture, &out);
    // 3-phase 16 A (openHAB trace).
    assert_eq!(text(&out, "home/nrg-0/power"), "10459.2");
    assert_eq!(text(&out, "home/nrg-0/power_l1"), "3484.6");
    assert_eq!(text(&out, "home/nrg-0/voltage_l1"), "227.54");
    assert_eq!(text(&out, "home/nrg-0/voltage_n"), "2.79");
    assert_eq!(text(&out, "home/nrg-0/current_l3"), "15.466");
    assert_eq!(text(&out, "home/nrg-0/power_factor_l1"), "1");
    assert_eq!(text(&out, "home/nrg-0/power_factor_l2"), "0.9981");
    // 1-phase 12.4 A (evcc trace): other phases report 0 A and 0 W.
    assert_eq!(text(&out, "home/nrg-1/power"), "2781.3");
    assert_eq!(text(&out, "home/nrg-1/current_l1"), "12.426");
    assert_eq!(text(&out, "home/nrg-1/power_factor_l1"), "0.9877");
    // Early v2 rounded powers; pf N 9 % → 0.09.
    let early = ids.len() - 1;
    assert_eq!(text(&out, &format!("home/nrg-{early}/power")), "4140");
    assert_eq!(text(&out, &format!("home/nrg-{early}/power_factor_n")), "0.09");
    // Every power factor is a ratio in 0..1, whatever the example.
    for (t, v) in out["topics"].as_object().unwrap() {
        if t.contains("/power_factor") {
            let pf: f64 = v.as_str().unwrap().parse().unwrap();
            assert!((0.0..=1.0).contains(&pf), "{t} = {pf}");
        }
    }
}

#[test]
fn http_400_with_a_json_body_is_used_like_200() {
    // Firmware 60.x answers HTTP 400 when the filter names a key the model lacks, with good data.
    let mut r = Replay::new(&["charger".into()]);
    r.http(
        "charger",
        400,
        r#"{"car":2,"amp":16,"nrg":[230,231,232,0,10,10,10,2300,2310,2320,0,6930,100,100,100,100]}"#,
    )
    .expect("a 400 with a JSON body is data");
    let err = r.http("charger", 500, "couldn't take api lock in 3s").unwrap_err();
    assert!(err.contains("500"), "{err}");
    let err = r.http("charger", 200, "<html>").unwrap_err();
    assert!(err.contains("not JSON"), "{err}");
    let out = r.finish("http-400");
    assert_eq!(text(&out, "home/charger/power"), "6930");
    assert_eq!(text(&out, "home/charger/charger_state"), "charging");
    let pe = &out["counters"]["charger"]["parse_errors"];
    assert_eq!(pe["http_status"], 1.0, "{pe}");
    assert_eq!(pe["invalid_json"], 1.0, "{pe}");
}

#[test]
fn retained_replays_set_values_but_derive_no_events_and_no_availability() {
    let mut r = Replay::new(&["charger".into()]);
    let t = |k: &str| format!("go-eCharger/012345/{k}");
    r.mqtt("charger", "car", &t("car"), "1", true);
    r.mqtt("charger", "car", &t("car"), "2", true);
    r.mqtt("charger", "amp", &t("amp"), "16", true);
    let out = r.finish("retained");
    assert_eq!(text(&out, "home/charger/charger_state"), "charging");
    assert_eq!(text(&out, "home/charger/current_limit"), "16");
    assert!(event_names(&out).is_empty(), "{:?}", out["events"]);
    // A broker's retained store says nothing about the charger being alive now.
    absent(&out, "home/charger/availability");
}

#[test]
fn live_car_transitions_become_events_with_session_energy() {
    let mut r = Replay::new(&["charger".into()]);
    let t = |k: &str| format!("go-eCharger/012345/{k}");
    for (k, v) in [("car", "1"), ("car", "3"), ("car", "2"), ("wh", "1234.5"), ("car", "4"), ("car", "1")] {
        r.mqtt("charger", k, &t(k), v, false);
    }
    let out = r.finish("events");
    assert_eq!(event_names(&out), ["car_connected", "charging_started", "charging_stopped", "car_disconnected"]);
    let stopped = &out["events"][2];
    assert_eq!(stopped["topic"], "home/charger/event");
    assert_eq!(stopped["data"]["session_energy"], 1.2345);
    assert_eq!(stopped["data"]["car"], 4);
    assert_eq!(stopped["data"]["previous_car"], 2);
}

/// Files that are not device output captures, and why.
const NOT_REPLAYED: &[(&str, &str)] = &[
    ("apikeys.tsv", "vendor key table (data for the simulator and known-keys.txt)"),
    ("apikeys_fw60.4_export.tsv", "vendor key table"),
    ("http-set-responses.jsonl", "/api/set answers: write results, not status"),
];

/// Captures replayed by the tests above.
const REPLAYED: &[&str] = &[
    "mqtt-capture-053.1.log",
    "mqtt-traffic-055.2.log",
    "mqtt-traffic-056.9.log",
    "mqtt-vendor-doc-examples.txt",
    "http-status-filtered-fw055.0-3phase.jsonl",
    "http-status-filtered-vendor-screenshot.json",
    "nrg-examples.jsonl",
];

#[test]
fn every_fixture_is_replayed_or_explicitly_not_a_capture() {
    let dir = fixtures();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in &names {
        assert!(
            REPLAYED.contains(&n.as_str()) || NOT_REPLAYED.iter().any(|(f, _)| f == n),
            "new fixture {n}: add a golden replay test for it (tests/it/golden.rs) or list it in NOT_REPLAYED"
        );
    }
    for f in REPLAYED {
        assert!(names.iter().any(|n| n == f), "fixture {f} disappeared");
        let g: &Path = &dir.join("golden").join(format!("{f}.expected.json"));
        if std::env::var("HLBRIDGE_BLESS").is_err() {
            assert!(g.is_file(), "golden file {} is missing", g.display());
        }
    }
}

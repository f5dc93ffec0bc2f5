//! AI-on-the-edge adapter: every sample of `shared/samples/ai-on-the-edge` (copied to
//! `adapters/ai_on_the_edge/fixtures/`) and the historical formats of the protocol notes
//! (`notes_*.tsv`) replayed through the real adapter and router to golden files; then the
//! simulated camera → Mosquitto → bridge → probe for both dialects, error rounds, the counter guard,
//! a stale retained last will, freshness, control topics and several number sequences.
//!
//! Golden files live in `adapters/ai_on_the_edge/fixtures/golden/`; `HLBRIDGE_BLESS=1` rewrites
//! them. The replay clock is fixed, so every timestamp in them is meaningful: device timestamps
//! converted to UTC, or the replay's "now" (2025-03-22T15:20:00Z) where the device gave none.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hlbridge::surface::adapters::ai_on_the_edge::Ingest;
use hlbridge::surface::config::AdapterConfig;
use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{CaptureRx, Message, QoS};
use hlbridge::surface::router::{DeviceSpec, Router, RouterSettings};
use hlbridge::surface::simulate::ai_on_the_edge::{AiOnTheEdgeSimOptions, CameraSpec, RoundKind, SimDialect};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{
    Broker, ConnectPacket, Lab, Probe, Relay, bridge_yaml, client_settings, eventually, find_samples, http_base,
    http_get, load_config, manifest_dir, parse_samples, sample_value, scrape, start_bridge,
};

fn fixtures() -> PathBuf {
    manifest_dir().join("adapters/ai_on_the_edge/fixtures")
}

fn read_fixture(name: &str) -> String {
    crate::common::read_file(&fixtures().join(name))
}

/// `\t`, `\n`, `\\` as the samples' README describes.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The messages of a `.tsv` sample: (topic, payload).
fn tsv(name: &str) -> Vec<(String, String)> {
    read_fixture(name)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (t, p) = l.split_once('\t').unwrap_or_else(|| panic!("{name}: no TAB in {l:?}"));
            (t.to_owned(), unescape(p))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Golden replays
// ---------------------------------------------------------------------------------------------

/// The fixed wall clock of every replay.
const REPLAY_NOW: time::OffsetDateTime = time::macros::datetime!(2025-03-22 15:20:00 UTC);

/// Router + one ingest per camera device of a config, publishing into a capture.
struct Replay {
    router: Arc<Router>,
    captured: CaptureRx,
    registry: Registry,
    ingests: Vec<(Vec<String>, Ingest)>,
}

impl Replay {
    /// `devices` is the `devices:` block (indented by two spaces) of a config file.
    fn new(devices: &str) -> Replay {
        let config = load_config(&format!("devices:\n{devices}"));
        let (mqtt, captured) = hlbridge::surface::mqtt::detached(100_000);
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let specs: Vec<DeviceSpec> = config
            .devices
            .keys()
            .map(|id| DeviceSpec { commands: false, ..config.device_spec(id).expect("device spec") })
            .collect();
        let settings = RouterSettings {
            bridge_prefix: "home".into(),
            quantity_topics: true,
            state_json: true,
            qos: QoS::AtMostOnce,
        };
        let router = Router::new(settings, specs, mqtt, metrics);
        let mut ingests = Vec::new();
        for (id, d) in &config.devices {
            router.configure_guard(id, &d.common.guard);
            if let AdapterConfig::AiOnTheEdge(c) = &d.adapter
                && c.main_topic.is_some()
            {
                let mut ingest = Ingest::new(c, router.handle(id).unwrap());
                ingest.set_clock(REPLAY_NOW);
                ingests.push((ingest.filters(), ingest));
            }
        }
        Replay { router, captured, registry, ingests }
    }

    /// Delivers one message to every camera whose subscriptions match, as the broker would.
    fn send(&mut self, topic: &str, payload: &str, retain: bool) {
        let msg = Message { topic: topic.to_owned(), payload: Bytes::copy_from_slice(payload.as_bytes()), retain };
        for (filters, ingest) in &mut self.ingests {
            if filters.iter().any(|f| hlbridge::surface::mqtt::topic::matches(f, topic)) {
                ingest.message(&msg);
            }
        }
    }

    fn play(&mut self, fixture: &str, retain: bool) {
        for (t, p) in tsv(fixture) {
            self.send(&t, &p, retain);
        }
    }

    /// Ends the replay and reduces what was published: every payload per value topic in order,
    /// the final state/info JSON, the events, each device's availability, identity and `/readyz`
    /// details, and its health counters.
    fn finish(mut self, fixture: &str) -> Value {
        for (_, ingest) in &mut self.ingests {
            ingest.finish();
        }
        let captured = self.captured.drain();
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut latest: BTreeMap<String, Value> = BTreeMap::new();
        let mut events = Vec::new();
        for c in &captured {
            let event = c.topic.ends_with("/event");
            assert_eq!(c.retain, !event, "retain flag of {} ({})", c.topic, c.payload);
            if event || c.topic.ends_with("/availability") {
                assert!(c.qos1, "{} is published with QoS 1", c.topic);
            }
            if event {
                let mut e: Value = serde_json::from_str(&c.payload).unwrap();
                e["topic"] = c.topic.clone().into();
                events.push(e);
            } else if c.topic.ends_with("/state") || c.topic.ends_with("/info") {
                latest.insert(c.topic.clone(), serde_json::from_str(&c.payload).unwrap());
            } else {
                values.entry(c.topic.clone()).or_default().push(c.payload.clone());
            }
        }
        let samples = parse_samples(&hlbridge::surface::metrics::render(&self.registry));
        let by_reason = |name: &str, id: &str| {
            let mut m = serde_json::Map::new();
            // Reasons start at 0 (health series exist from start-up); the golden lists what happened.
            for s in find_samples(&samples, name, &[("device", id)]).into_iter().filter(|s| s.value > 0.0) {
                let reason = &s.labels.iter().find(|(k, _)| k == "reason").unwrap().1;
                m.insert(reason.clone(), json!(s.value));
            }
            Value::Object(m)
        };
        let mut devices = serde_json::Map::new();
        for d in self.router.snapshot() {
            let id = d.id.clone();
            devices.insert(
                id.clone(),
                json!({
                    "online": d.online,
                    "reason": d.reason,
                    "identity": d.identity,
                    "details": d.details,
                    "messages_received": sample_value(&samples, "hlbridge_messages_received_total", &[("device", &id)]),
                    "unknown_keys": sample_value(&samples, "hlbridge_unknown_keys_total", &[("device", &id)]),
                    "parse_errors": by_reason("hlbridge_parse_errors_total", &id),
                    "readings_rejected": by_reason("hlbridge_readings_rejected_total", &id),
                }),
            );
        }
        json!({ "fixture": fixture, "values": values, "latest": latest, "events": events, "devices": devices })
    }
}

/// Compares with (or, under `HLBRIDGE_BLESS=1`, writes) the golden file.
fn golden(name: &str, actual: &Value) {
    crate::common::golden(&fixtures(), name, actual);
}

/// The last payload published on `topic`.
fn last<'a>(out: &'a Value, topic: &str) -> Option<&'a str> {
    out["values"][topic].as_array().and_then(|a| a.last()).and_then(Value::as_str)
}

fn all<'a>(out: &'a Value, topic: &str) -> Vec<&'a str> {
    out["values"][topic].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn counter(out: &Value, device: &str, field: &str) -> f64 {
    out["devices"][device][field].as_f64().unwrap_or(0.0)
}

fn reasons(out: &Value, device: &str, family: &str) -> BTreeMap<String, f64> {
    out["devices"][device][family]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap())).collect())
        .unwrap_or_default()
}

const WATER: &str = "  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n    meter: water\n";

#[test]
fn golden_upstream_v16_round_ok_gives_every_quantity_in_canonical_units() {
    let mut r = Replay::new(WATER);
    r.play("upstream_v16.1.0_round_ok_RECONSTRUCTED.tsv", false);
    let out = r.finish("upstream_v16.1.0_round_ok");
    golden("upstream_v16.1.0_round_ok", &out);
    assert_eq!(all(&out, "home/water/volume"), ["512.3025"], "one reading per round");
    assert_eq!(last(&out, "home/water/flow_rate"), Some("0.006"), "0.0001 m³/min = 0.006 m³/h");
    assert_eq!(last(&out, "home/water/reading_raw"), Some("0512.3025"));
    assert_eq!(last(&out, "home/water/reading_error"), Some(""), "no error: the retained error topic is cleared");
    assert_eq!(last(&out, "home/water/rssi"), Some("-61"));
    assert_eq!(last(&out, "home/water/uptime"), Some("1843"));
    assert_eq!(last(&out, "home/water/temperature"), Some("47"));
    assert_eq!(out["latest"]["home/water/state"]["ts"], "2025-03-22T15:18:58.000Z", "+0100 converted to UTC");
    let dev = &out["devices"]["water"];
    assert_eq!(dev["online"], true);
    assert_eq!(dev["identity"]["firmware"], "Release: v16.1.0 (Commit: a1ccda2)");
    assert_eq!(dev["identity"]["serial"], "A0:B7:65:50:65:28");
    assert_eq!(dev["details"]["dialect"], "upstream (detected)");
    assert_eq!(dev["details"]["ip"], "192.168.1.50");
    assert!(out["events"].as_array().unwrap().is_empty());
    assert_eq!(counter(&out, "water", "unknown_keys"), 0.0);
    assert!(reasons(&out, "water", "parse_errors").is_empty());
}

#[test]
fn golden_upstream_v16_neg_rate_round_publishes_no_value_and_one_rejection() {
    let mut r = Replay::new(WATER);
    r.play("upstream_v16.1.0_round_negrate_RECONSTRUCTED.tsv", false);
    let out = r.finish("upstream_v16.1.0_round_negrate");
    golden("upstream_v16.1.0_round_negrate", &out);
    assert!(all(&out, "home/water/volume").is_empty() && all(&out, "home/water/flow_rate").is_empty());
    assert_eq!(last(&out, "home/water/reading_error"), Some("Neg. Rate - Read:  - Raw: 0512.3015 - Pre: 512.3025"));
    let events = out["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "one event per failed round, not one per topic");
    assert_eq!(events[0]["event"], "reading_rejected");
    assert_eq!(events[0]["data"]["reason"], "device_negative_rate");
    assert_eq!(reasons(&out, "water", "readings_rejected")["device_negative_rate"], 1.0);
}

#[test]
fn golden_a_good_round_then_a_neg_rate_round_keeps_the_last_good_total() {
    let mut r = Replay::new(WATER);
    r.play("upstream_v16.1.0_round_ok_RECONSTRUCTED.tsv", false);
    r.play("upstream_v16.1.0_round_negrate_RECONSTRUCTED.tsv", false);
    let out = r.finish("upstream_v16.1.0_round_ok_then_negrate");
    golden("upstream_v16.1.0_round_ok_then_negrate", &out);
    assert_eq!(all(&out, "home/water/volume"), ["512.3025"]);
    assert_eq!(all(&out, "home/water/reading_error").len(), 2, "cleared, then the error");
    assert_eq!(out["latest"]["home/water/state"]["values"]["volume"], 512.3025);
    assert_eq!(
        reasons(&out, "water", "readings_rejected").get("counter_decrease"),
        None,
        "the device rejected it, not the guard"
    );
}

#[test]
fn golden_the_exact_json_body_alone_is_a_complete_reading() {
    let mut r = Replay::new(WATER);
    r.send("watermeter/main/json", &read_fixture("upstream_v16.1.0_main_json_RECONSTRUCTED.txt"), false);
    let out = r.finish("upstream_v16.1.0_main_json");
    golden("upstream_v16.1.0_main_json", &out);
    assert_eq!(last(&out, "home/water/volume"), Some("512.3025"));
    assert_eq!(last(&out, "home/water/flow_rate"), Some("0.006"));
}

#[test]
fn golden_retained_discovery_gives_the_meter_type_and_identity() {
    let mut r = Replay::new("  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n");
    r.play("upstream_v16.1.0_ha_discovery_RECONSTRUCTED.tsv", true);
    r.play("upstream_v16.1.0_round_ok_RECONSTRUCTED.tsv", false);
    let out = r.finish("upstream_v16.1.0_ha_discovery_then_round_ok");
    golden("upstream_v16.1.0_ha_discovery_then_round_ok", &out);
    let dev = &out["devices"]["water"];
    assert_eq!(dev["details"]["meter"], "water m3 (the camera's discovery config)");
    assert_eq!(dev["identity"]["model"], "Meter Digitizer");
    assert_eq!(dev["identity"]["vendor"], "AI on the Edge Device");
    assert_eq!(
        dev["identity"]["firmware"], "Release: v16.1.0 (Commit: a1ccda2)",
        "the fwVersion topic beats discovery"
    );
    assert_eq!(last(&out, "home/water/volume"), Some("512.3025"));
    assert!(reasons(&out, "water", "parse_errors").is_empty());
}

#[test]
fn golden_raw_digits_with_n_are_text_for_every_camera() {
    let mut r = Replay::new(
        "  gas:\n    adapter: ai_on_the_edge\n    main_topic: gasmeter\n    meter: gas\n\
         \x20 water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n\
         \x20 docs:\n    adapter: ai_on_the_edge\n    main_topic: <MainTopic>\n",
    );
    r.play("raw_values_with_N.tsv", false);
    let out = r.finish("raw_values_with_N");
    golden("raw_values_with_N", &out);
    assert_eq!(all(&out, "home/gas/reading_raw"), ["04931.N", "04943.N"]);
    assert_eq!(all(&out, "home/water/reading_raw"), ["2N4.6256", "N00587.315"]);
    assert_eq!(last(&out, "home/docs/reading_raw"), Some("0018N.31102"));
    for id in ["gas", "water", "docs"] {
        assert!(all(&out, &format!("home/{id}/volume")).is_empty(), "raw is never parsed as a number");
        assert!(reasons(&out, id, "parse_errors").is_empty());
    }
}

#[test]
fn golden_control_payloads_to_the_camera_are_not_readings() {
    let mut r = Replay::new(WATER);
    r.play("control_payloads_docs.tsv", false);
    let out = r.finish("control_payloads_docs");
    golden("control_payloads_docs", &out);
    let published: Vec<&String> = out["values"].as_object().unwrap().keys().collect();
    assert!(published.iter().all(|t| !t.contains("volume")), "{published:?}");
    assert_eq!(counter(&out, "water", "messages_received"), 6.0, "domoticz/in is not below the MainTopic");
    assert_eq!(counter(&out, "water", "unknown_keys"), 0.0);
    assert_eq!(out["devices"]["water"]["online"], false, "commands say nothing about the camera");
}

#[test]
fn golden_fork_v17_cluster_topics_give_status_and_a_rejected_reading() {
    let mut r = Replay::new("  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n");
    r.play("slfork_v17dev_docs_examples.tsv", false);
    let out = r.finish("slfork_v17dev_docs_examples");
    golden("slfork_v17dev_docs_examples", &out);
    let dev = &out["devices"]["water"];
    assert_eq!(dev["details"]["dialect"], "clusters (detected)");
    assert_eq!(dev["identity"]["firmware"], "v17.0.0 (1234567)");
    assert_eq!(last(&out, "home/water/rssi"), Some("-54"));
    assert_eq!(last(&out, "home/water/uptime"), Some("147"));
    assert_eq!(last(&out, "home/water/temperature"), Some("45"));
    assert!(all(&out, "home/water/volume").is_empty(), "E91: the fork's actual value is its fallback");
    assert_eq!(last(&out, "home/water/reading_error"), Some("E91 Rate negative"));
    assert_eq!(last(&out, "home/water/reading_raw"), Some("146.539"));
    assert_eq!(reasons(&out, "water", "readings_rejected")["device_negative_rate"], 1.0);
    assert_eq!(counter(&out, "water", "unknown_keys"), 0.0, "GPIO and control topics are known");
}

#[test]
fn golden_fork_discovery_names_the_meter_of_a_nested_main_topic() {
    let mut r = Replay::new("  water:\n    adapter: ai_on_the_edge\n    main_topic: water/watermeterTest\n");
    r.send(
        "homeassistant/sensor/watermeterTest/main_actual_value/config",
        &read_fixture("slfork_v17dev_ha_discovery_actual_value_docs.json"),
        true,
    );
    for (t, p) in tsv("slfork_v17dev_docs_examples.tsv") {
        let t = t.replacen("watermeter/", "water/watermeterTest/", 1);
        r.send(&t, &p, false);
    }
    let out = r.finish("slfork_v17dev_ha_discovery_then_examples");
    golden("slfork_v17dev_ha_discovery_then_examples", &out);
    assert_eq!(out["devices"]["water"]["details"]["meter"], "water m3 (the camera's discovery config)");
    assert_eq!(last(&out, "home/water/reading_error"), Some("E91 Rate negative"));
}

#[test]
fn golden_fork_v16_json_is_read_by_its_field_names() {
    let mut r = Replay::new(WATER);
    r.send("watermeter/main/json", &read_fixture("slfork_v16.2.0_main_json_docs.json"), false);
    let out = r.finish("slfork_v16.2.0_main_json");
    golden("slfork_v16.2.0_main_json", &out);
    assert!(all(&out, "home/water/volume").is_empty());
    assert_eq!(last(&out, "home/water/reading_raw"), Some("146.539"));
    assert_eq!(reasons(&out, "water", "readings_rejected")["device_negative_rate"], 1.0);
}

#[test]
fn golden_fork_v16_topic_names_in_the_upstream_layout() {
    let mut r = Replay::new(WATER);
    r.play("notes_slfork_v16.2_topics.tsv", false);
    let out = r.finish("notes_slfork_v16.2_topics");
    golden("notes_slfork_v16.2_topics", &out);
    assert_eq!(last(&out, "home/water/reading_error"), Some("E91 Rate negative"));
    assert_eq!(out["events"].as_array().unwrap().len(), 1);
    assert_eq!(counter(&out, "water", "unknown_keys"), 0.0, "process_error and the fork field names are known");
}

#[test]
fn golden_v8_error_inside_value_is_a_rejection_not_a_number() {
    let mut r = Replay::new(WATER);
    r.play("notes_v08.0_error_inside_value.tsv", false);
    let out = r.finish("notes_v08.0_error_inside_value");
    golden("notes_v08.0_error_inside_value", &out);
    assert!(all(&out, "home/water/volume").is_empty());
    assert_eq!(reasons(&out, "water", "readings_rejected")["device_rate_too_high"], 1.0);
    assert_eq!(reasons(&out, "water", "parse_errors")["malformed_json"], 1.0);
}

#[test]
fn golden_v10_malformed_json_falls_back_to_the_single_topics() {
    let mut r = Replay::new(WATER);
    r.play("notes_v10.0_raw_quote_missing.tsv", false);
    let out = r.finish("notes_v10.0_raw_quote_missing");
    golden("notes_v10.0_raw_quote_missing", &out);
    assert_eq!(last(&out, "home/water/volume"), Some("288.5381"));
    assert_eq!(last(&out, "home/water/reading_raw"), Some("00288.5381"));
    assert_eq!(last(&out, "home/water/flow_rate"), Some("0"));
    // No offset in the timestamp: the time of receipt (the replay clock) is used instead.
    assert_eq!(out["latest"]["home/water/state"]["ts"], "2025-03-22T15:20:00.000Z");
    assert!(out["devices"]["water"]["details"]["timestamps"].as_str().unwrap().contains("no UTC offset"));
}

#[test]
fn golden_old_device_topics_are_renamed_and_checked() {
    let mut r = Replay::new(WATER);
    r.play("notes_v10_to_v13.0.4_old_topics.tsv", false);
    let out = r.finish("notes_v10_to_v13.0.4_old_topics");
    golden("notes_v10_to_v13.0.4_old_topics", &out);
    assert_eq!(last(&out, "home/water/rssi"), Some("-67"), "`Wifi RSSI` of v10.4");
    assert!(all(&out, "home/water/uptime").is_empty(), "the v10.2.0 epoch-like uptime is not published");
    assert_eq!(reasons(&out, "water", "parse_errors")["implausible_uptime"], 1.0);
    assert_eq!(last(&out, "home/water/volume"), Some("704.529"));
}

#[test]
fn golden_v13_0_5_malformed_json_with_renamed_round_topics() {
    let mut r = Replay::new(WATER);
    r.play("notes_v13.0.5_malformed_json.tsv", false);
    let out = r.finish("notes_v13.0.5_malformed_json");
    golden("notes_v13.0.5_malformed_json", &out);
    assert_eq!(all(&out, "home/water/volume"), ["638.7192"]);
    assert_eq!(last(&out, "home/water/reading_raw"), Some("0638.7192"), "not `0638.7192, ` from the broken body");
    assert_eq!(out["latest"]["home/water/state"]["ts"], "2022-12-14T09:12:19.000Z");
    assert_eq!(counter(&out, "water", "unknown_keys"), 0.0);
}

#[test]
fn golden_counter_guard_over_a_misread_and_a_replaced_meter() {
    // Readings a camera with a generous MaxRateValue lets through, five minutes apart.
    let mut r = Replay::new(&format!("{WATER}    guard:\n      max_rate: {{volume: 5}}\n"));
    let round = |v: &str, ts: &str| {
        format!(
            "  {{\n    \"value\": \"{v}\",\n    \"raw\": \"0{v}\",\n    \"pre\": \"\",\n    \"error\": \"no error\",\n    \"rate\": \"\",\n    \"timestamp\": \"2025-03-22T{ts}+0100\"\n  }}\n"
        )
    };
    for (v, ts) in [
        ("512.3025", "16:00:00"),
        ("582.3030", "16:05:00"), // a misread digit: 70 m³ in 5 minutes
        ("512.3040", "16:10:00"), // back to the truth
        ("12.0000", "16:15:00"),  // meter replaced ...
        ("12.0010", "16:20:00"),  // ... and the new level confirmed
        ("12.0020", "16:25:00"),
        ("12.0030", "16:30:00"),
    ] {
        r.send("watermeter/main/json", &round(v, ts), false);
    }
    let out = r.finish("counter_guard_cases");
    golden("counter_guard_cases", &out);
    assert_eq!(all(&out, "home/water/volume"), ["512.3025", "512.304", "12.002", "12.003"]);
    let rejected = reasons(&out, "water", "readings_rejected");
    assert_eq!(rejected["counter_jump"], 1.0);
    assert_eq!(rejected["counter_decrease"], 2.0);
    let reasons_in_events: Vec<&str> =
        out["events"].as_array().unwrap().iter().map(|e| e["data"]["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons_in_events, ["counter_jump", "counter_decrease", "counter_decrease"]);
}

// ---------------------------------------------------------------------------------------------
// End to end: simulated camera → Mosquitto → bridge → probe
// ---------------------------------------------------------------------------------------------

/// A simulated camera running in-process.
struct Camera {
    cancel: CancellationToken,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Camera {
    async fn start(broker: &Broker, spec: CameraSpec) -> Camera {
        crate::common::init();
        let id = format!("aioted-{}-{}", spec.main_topic.replace('/', "_"), crate::common::unique());
        let opts = AiOnTheEdgeSimOptions {
            broker: client_settings(broker, &id),
            camera: spec,
            wait_for_bridge: Default::default(),
        };
        let cancel = CancellationToken::new();
        let join = tokio::spawn(hlbridge::surface::simulate::ai_on_the_edge::run(opts, cancel.clone()));
        Camera { cancel, join: Some(join) }
    }

    /// Cuts the camera off (no DISCONNECT: the broker publishes its last will).
    async fn power_off(mut self) {
        self.cancel.cancel();
        if let Some(j) = self.join.take() {
            let r = tokio::time::timeout(crate::common::DEADLINE, j).await.expect("camera stops in time");
            r.expect("camera task does not panic").expect("camera ends without error");
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn fast(dialect: SimDialect, pattern: &[RoundKind]) -> CameraSpec {
    CameraSpec {
        dialect,
        interval: Duration::from_millis(150),
        pattern: pattern.to_vec(),
        error_rate: 0.0,
        ..Default::default()
    }
}

const CAMERA_DEVICE: &str = "  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n    interval: 1s\n";

async fn readyz_device(lab: &Lab, id: &str) -> Value {
    let got = http_get(&format!("{}/readyz", http_base(&lab.bridge))).await;
    let v: Value = serde_json::from_str(&got.body).unwrap();
    v["devices"][id].clone()
}

#[tokio::test]
async fn upstream_camera_end_to_end_publishes_totals_flow_and_diagnostics() {
    let lab = Lab::start(CAMERA_DEVICE, "").await;
    let cam = Camera::start(&lab.broker, fast(SimDialect::Upstream, &[RoundKind::Good])).await;
    lab.probe.wait_value("home/water/availability", "online").await;
    let first: f64 = lab.probe.wait_latest("home/water/volume", |_| true).await.parse().unwrap();
    let later: f64 = lab
        .probe
        .wait_latest("home/water/volume", |v| v.parse::<f64>().is_ok_and(|v| v > first))
        .await
        .parse()
        .unwrap();
    assert!(later > first && (500.0..600.0).contains(&first), "{first} → {later}");
    lab.probe.wait_latest("home/water/flow_rate", |v| v.parse::<f64>().is_ok()).await;
    lab.probe.wait_latest("home/water/rssi", |v| v.parse::<i32>().is_ok_and(|r| (-70..=-50).contains(&r))).await;
    lab.probe.wait_latest("home/water/uptime", |v| v.parse::<u64>().is_ok()).await;
    let raw = lab.probe.wait_latest("home/water/reading_raw", |_| true).await;
    assert_eq!(raw.len(), 9, "leading zeros kept: {raw}");
    let state = lab.probe.wait_for("a state snapshot with a volume", |m| {
        m.topic == "home/water/state" && m.json()["values"]["volume"].is_number()
    });
    let state = state.await.json();
    assert!(state["ts"].as_str().unwrap().ends_with('Z'));
    let dev = readyz_device(&lab, "water").await;
    assert_eq!(dev["availability"], "online");
    assert_eq!(dev["details"]["dialect"], "upstream (detected)");
    assert_eq!(dev["details"]["meter"], "water m3 (the camera's discovery config)");
    assert_eq!(dev["identity"]["firmware"], "Release: v16.1.0 (Commit: a1ccda2)");
    cam.power_off().await;
}

#[tokio::test]
async fn cluster_camera_end_to_end_reads_json_and_single_topics_once_per_round() {
    let lab = Lab::start(CAMERA_DEVICE, "").await;
    let mut spec = fast(SimDialect::Clusters, &[RoundKind::Good]);
    spec.cluster_topics = true;
    let cam = Camera::start(&lab.broker, spec).await;
    lab.probe.wait_value("home/water/availability", "online").await;
    let first = lab.probe.wait_latest("home/water/volume", |_| true).await;
    lab.probe.wait_latest("home/water/volume", |v| v != first).await;
    lab.probe.wait_latest("home/water/temperature", |v| v.parse::<i32>().is_ok()).await;
    let dev = readyz_device(&lab, "water").await;
    assert_eq!(dev["details"]["dialect"], "clusters (detected)");
    assert_eq!(dev["identity"]["model"], "ESP32CAM");
    // Several rounds in: json and single topics of a round were one reading, so the guard never
    // saw a reading twice and nothing was rejected or dropped as unknown.
    let (_, samples) = scrape(&lab.bridge).await;
    let rejected = find_samples(&samples, "hlbridge_readings_rejected_total", &[("device", "water")]);
    assert!(rejected.iter().all(|s| s.value == 0.0), "{rejected:?}");
    assert_eq!(sample_value(&samples, "hlbridge_unknown_keys_total", &[("device", "water")]), Some(0.0));
    cam.power_off().await;
    lab.probe.wait_value("home/water/availability", "offline").await;
}

#[tokio::test]
async fn error_rounds_end_to_end_emit_reading_rejected_and_keep_the_total() {
    let lab = Lab::start(CAMERA_DEVICE, "").await;
    let pattern = [
        RoundKind::Good,
        RoundKind::NegRate,
        RoundKind::RateTooHigh,
        RoundKind::DigitUnreadable,
        RoundKind::DigitSubstituted,
    ];
    let cam = Camera::start(&lab.broker, fast(SimDialect::Upstream, &pattern)).await;
    for reason in ["device_negative_rate", "device_rate_too_high", "device_unreadable_digits"] {
        let e = lab
            .probe
            .wait_for(&format!("a reading_rejected event for {reason}"), |m| {
                m.topic == "home/water/event" && m.json()["data"]["reason"] == reason
            })
            .await
            .json();
        assert_eq!(e["event"], "reading_rejected");
        assert!(e["data"]["raw"].is_string() && e["data"]["error"].is_string(), "{e}");
    }
    // After an error round a good round clears the error again.
    let mark = lab.probe.mark();
    lab.probe
        .wait_for_since(mark, "the error cleared", |m| m.topic == "home/water/reading_error" && m.payload.is_empty())
        .await;
    let totals: Vec<f64> = lab.probe.all("home/water/volume").iter().map(|m| m.payload.parse().unwrap()).collect();
    assert!(totals.windows(2).all(|w| w[1] >= w[0]), "the total never goes down: {totals:?}");
    let (_, samples) = scrape(&lab.bridge).await;
    for reason in ["device_negative_rate", "device_rate_too_high", "device_unreadable_digits"] {
        let n = sample_value(&samples, "hlbridge_readings_rejected_total", &[("device", "water"), ("reason", reason)]);
        assert!(n.is_some_and(|n| n >= 1.0), "{reason}: {n:?}");
    }
    assert_eq!(
        sample_value(
            &samples,
            "hlbridge_readings_rejected_total",
            &[("device", "water"), ("reason", "counter_decrease")]
        )
        .unwrap_or(0.0),
        0.0,
        "the guard has nothing to do when the camera rejects its own misreads"
    );
    cam.power_off().await;
}

/// Publishes one upstream round of sequence `main` for `value` at device time `ts` (HH:MM:SS).
fn publish_round(probe: &Probe, value: &str, ts: &str) {
    probe.publish("watermeter/connection", "connected");
    probe.publish("watermeter/main/value", value);
    probe.publish(
        "watermeter/main/json",
        &format!(
            "  {{\n    \"value\": \"{value}\",\n    \"raw\": \"0{value}\",\n    \"pre\": \"\",\n    \"error\": \"no error\",\n    \"rate\": \"\",\n    \"timestamp\": \"2025-03-22T{ts}+0100\"\n  }}\n"
        ),
    );
}

#[tokio::test]
async fn the_counter_guard_end_to_end_rejects_until_confirmed_and_a_reset_accepts_at_once() {
    let devices = format!("{CAMERA_DEVICE}    guard:\n      confirmations: 2\n      max_rate: {{volume: 5}}\n");
    let lab = Lab::start(&devices, "").await;
    publish_round(&lab.probe, "100.0000", "16:00:00");
    lab.probe.wait_value("home/water/volume", "100").await;

    let mark = lab.probe.mark();
    publish_round(&lab.probe, "900.0000", "16:05:00");
    let e = lab
        .probe
        .wait_for_since(mark, "the jump is rejected", |m| {
            m.topic == "home/water/event" && m.json()["data"]["reason"] == "counter_jump"
        })
        .await
        .json();
    assert_eq!((e["data"]["quantity"].as_str(), e["data"]["accepted"].as_f64()), (Some("volume"), Some(100.0)));
    assert_eq!(lab.probe.latest("home/water/volume").as_deref(), Some("100"));
    // A second agreeing reading makes it the new level (confirmations: 2).
    publish_round(&lab.probe, "900.0010", "16:10:00");
    lab.probe.wait_value("home/water/volume", "900.001").await;

    let mark = lab.probe.mark();
    publish_round(&lab.probe, "5.0000", "16:15:00");
    lab.probe
        .wait_for_since(mark, "the drop is rejected", |m| {
            m.topic == "home/water/event" && m.json()["data"]["reason"] == "counter_decrease"
        })
        .await;
    let mark = lab.probe.mark();
    lab.probe.publish("home/water/volume/reset", "1");
    let r = lab.probe.next_on(mark, "home/water/volume/result").await.json();
    assert_eq!(r["ok"], true, "{r}");
    publish_round(&lab.probe, "5.0010", "16:20:00");
    lab.probe.wait_value("home/water/volume", "5.001").await;

    let (_, samples) = scrape(&lab.bridge).await;
    let n =
        |reason| sample_value(&samples, "hlbridge_readings_rejected_total", &[("device", "water"), ("reason", reason)]);
    assert_eq!(n("counter_jump"), Some(1.0));
    assert_eq!(n("counter_decrease"), Some(1.0));
}

#[tokio::test]
async fn a_stale_retained_connection_lost_does_not_hide_a_camera_that_publishes_again() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    // A camera died uncleanly earlier: its last will is retained on the broker.
    probe.publish_retained("watermeter/connection", "connection lost");
    probe.wait_for("the retained will is stored", |m| m.topic == "watermeter/connection").await;
    let bridge = start_bridge(&bridge_yaml(&broker, CAMERA_DEVICE, "")).await;
    let base = format!("http://{}", bridge.http_addr.unwrap());
    let reason = eventually("/readyz shows the retained will", async || {
        let v: Value = serde_json::from_str(&http_get(&format!("{base}/readyz")).await.body).ok()?;
        let r = v["devices"]["water"]["reason"].as_str()?.to_owned();
        r.contains("may be stale").then_some(r)
    })
    .await;
    assert!(reason.contains("connection lost"), "{reason}");
    probe.wait_value("home/water/availability", "offline").await;

    // The camera is back, with RetainMessages off: its `connected` is not retained, the will stays.
    let cam = Camera::start(&broker, fast(SimDialect::Upstream, &[RoundKind::Good])).await;
    probe.wait_value("home/water/availability", "online").await;
    assert_eq!(
        crate::common::latest_retained(&broker, "watermeter/connection").await.as_deref(),
        Some("connection lost"),
        "the stale will is still what the broker holds"
    );
    // Power cut: the broker publishes the will live, and the bridge believes it at once.
    cam.power_off().await;
    probe.wait_value("home/water/availability", "offline").await;
    let v: Value = serde_json::from_str(&http_get(&format!("{base}/readyz")).await.body).unwrap();
    assert!(v["devices"]["water"]["reason"].as_str().unwrap().contains("dropped off the broker"), "{v}");
    bridge.shutdown().await;
}

#[tokio::test]
async fn a_silent_camera_goes_offline_after_three_round_intervals() {
    let devices = "  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n    interval: 200ms\n";
    let lab = Lab::start(devices, "").await;
    publish_round(&lab.probe, "100.0000", "16:00:00");
    lab.probe.wait_value("home/water/availability", "online").await;
    let started = tokio::time::Instant::now();
    lab.probe.wait_value("home/water/availability", "offline").await;
    assert!(started.elapsed() >= Duration::from_millis(500), "not before 3 × 200ms");
    let dev = readyz_device(&lab, "water").await;
    assert_eq!(dev["reason"], "no reading for 600ms");
    // The retained value stays, with its timestamp saying how old it is.
    assert_eq!(lab.probe.latest("home/water/volume").as_deref(), Some("100"));
}

#[tokio::test]
async fn the_simulated_camera_obeys_its_control_topics() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let mut spec = fast(SimDialect::Upstream, &[RoundKind::Good]);
    spec.interval = Duration::from_secs(3600);
    let cam = Camera::start(&broker, spec).await;
    // The first round runs at start; the next one only on demand.
    probe.wait_for("the first round", |m| m.topic == "watermeter/status" && m.payload == "Flow finished").await;
    let mark = probe.mark();
    probe.publish("watermeter/ctrl/set_prevalue", r#"{"numbersname": "main", "value": 600}"#);
    probe.publish("watermeter/ctrl/flow_start", "PRESS");
    let json = probe.next_on(mark, "watermeter/main/json").await.json();
    assert_eq!(json["pre"], "600.000000", "set_prevalue took effect before the round flow_start started");
    assert!(json["error"].as_str().unwrap().starts_with("Neg. Rate"), "{json}");
    cam.power_off().await;
}

#[tokio::test]
async fn two_number_sequences_go_to_their_own_devices_end_to_end() {
    let devices = "  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n    interval: 1s\n    meter: water\n\
                   \x20   sequences:\n      main: water\n      gas: {device: gas, meter: gas}\n\
                   \x20 gas:\n    adapter: ai_on_the_edge\n    sequence_of: water\n    interval: 1s\n";
    let lab = Lab::start(devices, "").await;
    let mut spec = fast(SimDialect::Upstream, &[RoundKind::Good]);
    spec.sequences = vec!["main".into(), "gas".into()];
    let cam = Camera::start(&lab.broker, spec).await;
    lab.probe.wait_latest("home/water/volume", |v| v.parse::<f64>().is_ok_and(|v| v < 600.0)).await;
    lab.probe.wait_latest("home/gas/volume", |v| v.parse::<f64>().is_ok_and(|v| v > 600.0)).await;
    lab.probe.wait_value("home/gas/availability", "online").await;
    let gas = readyz_device(&lab, "gas").await;
    assert_eq!(gas["details"]["fed_by"], "water (number sequence `gas`)");
    assert_eq!(gas["identity"]["name"], "gas");
    cam.power_off().await;
    lab.probe.wait_value("home/gas/availability", "offline").await;
}

#[test]
#[cfg(feature = "embedded-broker")]
fn the_config_snippets_for_demo_and_example_load() {
    // The snippets handed over for config/demo.yaml and config/example.yaml, verbatim.
    let demo = r#"mqtt:
  embedded:
    listen: 127.0.0.1:1884
simulators:
  demo_watermeter:                # an AI-on-the-edge camera on a water meter (firmware v16.1.0): a round
    type: ai_on_the_edge          # every 10s, now and then a misread digit (Neg. Rate, Rate too high, N)
    main_topic: watermeter
    dialect: upstream             # or clusters: the Slider0007 fork's topic clusters
    interval: 10s                 # a real camera: 5m
    errors: 0.15                  # share of rounds with a misread digit
devices:
  water_meter:                    # the simulated camera (layout detected; see /readyz)
    adapter: ai_on_the_edge
    main_topic: watermeter
    meter: water
    interval: 10s
"#;
    let c = load_config(demo);
    assert!(c.devices.contains_key("water_meter") && c.simulators.contains_key("demo_watermeter"));
    let example = r#"devices:
  water_meter:
    adapter: ai_on_the_edge           # AI-on-the-edge-device camera meter (kind utility_meter)
    main_topic: watermeter            # the camera's MainTopic (may contain /); required unless sequence_of is set
    dialect: auto                     # auto (detected, shown in /readyz) | upstream (jomjol v8-v16, flat topics)
                                      # | clusters (the Slider0007 fork: device/..., process/... topic clusters)
    meter: water                      # water | gas (-> volume m³, flow_rate m³/h) | energy (-> energy_import kWh,
                                      # power W); unset: from the camera's retained HA discovery config, else water
    unit: m3                          # what the digits count (the firmware's MeterType): water m3|l|ft3|gal,
                                      # gas m3|ft3, energy kwh|wh|mwh|gj; converted to the canonical unit
    interval: 5m                      # the camera's round interval: freshness = 3 x this. Unset: 5m, stretched
                                      # when the camera announces a longer one (its `interval` topic)
    # sequences:                      # number sequence -> device id; this device's own id = its own quantities.
    #   main: water_meter             # Unset: the first sequence seen (normally main) is this device's
    #   garden: water_garden          # long form: garden: {device: water_garden, meter: water, unit: l}
    discovery: true                   # read the camera's retained Home Assistant discovery config
    discovery_prefix: homeassistant   # where the camera publishes it (upstream firmware: always homeassistant)
    guard:                            # counter guard (any adapter, every lifetime counter): drops and rises faster
      enabled: true                   # than max_rate are rejected (hlbridge_readings_rejected_total{reason})...
      confirmations: 3                # ...until this many readings agree on the new level (2-100)
      max_rate:                       # per hour in the quantity's unit; defaults: volume 20 (m³/h),
        volume: 20                    # energy_import and energy_export 100 (kWh/h)
    # To accept the next reading as is (meter replaced): publish anything, not retained, to
    # <prefix>/<device>/<quantity>/reset, e.g. home/water_meter/volume/reset

  water_garden:                       # a second number sequence of the same camera, as a device of its own
    adapter: ai_on_the_edge
    sequence_of: water_meter          # fed by the camera device whose `sequences:` maps a sequence to this id
    interval: 5m                      # freshness only
    enabled: false                    # example only
"#;
    let c = load_config(example);
    assert!(c.devices.contains_key("water_meter") && c.devices.contains_key("water_garden"));
    let e = hlbridge::surface::config::load_str(
        "devices:\n  w:\n    adapter: ai_on_the_edge\n    meter: water\n\
         \x20 g:\n    adapter: ai_on_the_edge\n    main_topic: gasmeter\n    guard:\n      max_rate: {power: 3}\n",
        "t.yaml",
        std::path::Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("devices.w.main_topic") && e.contains("devices.g.guard.max_rate"), "{e}");
    assert!(e.contains("not a lifetime counter"), "{e}");
}

/// Resets are taken by one listener per prefix: a device under the global prefix, one with its
/// own `prefix:` and one added live (reload) each get their reset; a reset to an id nobody has
/// gets no answer, and a device removed live no longer answers.
#[tokio::test]
async fn resets_reach_devices_under_every_prefix_and_devices_added_or_removed_live() {
    let devices = format!(
        "{CAMERA_DEVICE}  garden:\n    adapter: ai_on_the_edge\n    main_topic: gardenmeter\n    prefix: yard\n    interval: 1s\n"
    );
    let lab = Lab::start(&devices, "").await;
    let reset = async |base: &str| {
        let mark = lab.probe.mark();
        lab.probe.publish(&format!("{base}/volume/reset"), "1");
        lab.probe.next_on(mark, &format!("{base}/volume/result")).await.json()
    };
    assert_eq!(reset("home/water").await["ok"], true);
    assert_eq!(reset("yard/garden").await["ok"], true);

    let config = crate::common::load_config(&crate::common::bridge_yaml(
        &lab.broker,
        "  late:\n    adapter: ai_on_the_edge\n    main_topic: latemeter\n    interval: 1s\n",
        "",
    ));
    lab.bridge.router.add_device(config.device_spec("late").expect("spec"));
    assert_eq!(reset("home/late").await["ok"], true);

    assert!(lab.bridge.router.remove_device("late", true));
    let mark = lab.probe.mark();
    lab.probe.publish("home/late/volume/reset", "1");
    lab.probe.publish("home/nobody/volume/reset", "1");
    // A reset to a live device afterwards is answered; the two before it were not.
    assert_eq!(reset("home/water").await["ok"], true);
    let answered: Vec<String> = lab
        .probe
        .everything()
        .into_iter()
        .skip(mark)
        .filter(|m| m.topic.ends_with("/result"))
        .map(|m| m.topic)
        .collect();
    assert_eq!(answered, ["home/water/volume/result"]);
}

/// A relay to `broker` that forwards the CONNECT of a client whose id starts with `held` and then
/// nothing more in either direction for `hold`: that client's CONNACK and SUBACKs come that much
/// late, as from a broker busy with a burst of reconnects. Every other client passes at once.
async fn holding_relay(broker: &Broker, held: &'static str, hold: Duration) -> Relay {
    Relay::start(broker, move |mut client, target| async move {
        use tokio::io::AsyncWriteExt;
        let Some(connect) = ConnectPacket::read(&mut client).await else { return };
        let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else { return };
        if upstream.write_all(&connect.bytes).await.is_err() {
            return;
        }
        if connect.client_id().starts_with(held) {
            tokio::time::sleep(hold).await;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_camera_says_its_once_per_boot_mac_only_after_the_bridge_listens() {
    // The camera simulator publishes its MAC and firmware once, in its first round, not retained;
    // the bridge's broker answers the bridge 1.5 s late. Started as soon as the bridge connects,
    // the camera's first round would beat the bridge's SUBSCRIBE by those 1.5 s and its identity
    // would be lost (seen: Home Assistant's device without its serial under a loaded machine).
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let relay = holding_relay(&broker, "hlbridge-held", Duration::from_millis(1500)).await;
    let yaml = format!(
        "mqtt:\n  url: mqtt://127.0.0.1:{}\n  client_id: hlbridge-held-{}\n  reconnect_max: 1s\n\
         output:\n  prefix: home\nhttp:\n  listen: 127.0.0.1:0\n\
         simulators:\n  sim_camera:\n    type: ai_on_the_edge\n    main_topic: heldcam\n    dialect: upstream\n    \
         interval: 1s\n    errors: 0\n    discovery: false\n\
         devices:\n  water_meter:\n    adapter: ai_on_the_edge\n    main_topic: heldcam\n    meter: water\n    interval: 1s\n",
        relay.port,
        crate::common::unique()
    );
    let bridge = start_bridge(&yaml).await;
    let info = probe.wait_latest("home/water_meter/info", |p| p.contains("\"serial\"")).await;
    let info: Value = serde_json::from_str(&info).expect("info is JSON");
    assert_eq!(info["serial"], "A0:B7:65:50:65:28", "{info}");
    assert_eq!(info["firmware"], "Release: v16.1.0 (Commit: a1ccda2)", "{info}");
    bridge.shutdown().await;
}

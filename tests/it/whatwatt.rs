//! whatwatt Go: every sample replayed through the real ingest and router code to golden files
//! (`adapters/whatwatt/fixtures/golden/`, `HLBRIDGE_BLESS=1` rewrites them), then each transport end
//! to end against the simulator and a real Mosquitto: SSE, polling and the templated MQTT client;
//! Basic and Digest authentication including a stale nonce; a gateway restart, a silent stream and
//! a second client kicking the stream; the SSE → poll fallback and back; the licence gating; HTML
//! error pages, broken JSON and malformed stream lines skipped and counted.
//!
//! Every test asserts the key facts in code as well, so re-blessing cannot hide a wrong value.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hlbridge::surface::adapters::whatwatt::{Ingest, ReportError, ReportOutcome, WhatwattConfig};
use hlbridge::surface::config::AdapterKind;
use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{CaptureRx, Message, QoS};
use hlbridge::surface::router::{DeviceSpec, Router, RouterSettings};
use hlbridge::surface::simulate::whatwatt::{Fault, SimAuth, SimControl, SimLicence, SimMeter, WhatwattSimOptions};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{
    Broker, DEADLINE, Probe, bridge_yaml, client_settings, eventually, find_samples, http_base, http_get, manifest_dir,
    parse_samples, scrape, start_bridge,
};

// ---------------------------------------------------------------------------------------------
// Golden replay
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    let p = manifest_dir().join("adapters/whatwatt/fixtures").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One replay: a router publishing into a capture, and the adapter's ingest in front of it.
struct Replay {
    router: Arc<Router>,
    captured: CaptureRx,
    registry: Registry,
    ingest: Ingest,
}

impl Replay {
    fn new(cfg: &WhatwattConfig) -> Replay {
        let (mqtt, captured) = hlbridge::surface::mqtt::detached(100_000);
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let spec = DeviceSpec {
            id: "meter".into(),
            adapter: AdapterKind::Whatwatt,
            prefix: "home".into(),
            freshness: Duration::from_secs(60),
            min_interval: None,
            heartbeat: None,
            commands: false,
            offered: &[],
        };
        let router = Router::new(
            RouterSettings {
                bridge_prefix: "home".into(),
                quantity_topics: true,
                state_json: true,
                qos: QoS::AtMostOnce,
            },
            vec![spec],
            mqtt,
            metrics,
        );
        let ingest = Ingest::new(router.handle("meter").unwrap(), cfg).expect("ingest");
        Replay { router, captured, registry, ingest }
    }

    fn mqtt(&mut self, topic: &str, payload: &str) {
        let msg = Message { topic: topic.into(), payload: Bytes::copy_from_slice(payload.as_bytes()), retain: false };
        self.ingest.mqtt_message(&msg);
    }

    /// Reduces what was published: last retained payload per topic, the router's view of the device
    /// (availability, reason, details) and the health counters.
    fn finish(mut self, name: &str) -> Value {
        self.router.handle("meter").unwrap().flush();
        let mut topics = serde_json::Map::new();
        for c in self.captured.drain() {
            assert!(c.retain, "{} is published retained", c.topic);
            topics.insert(c.topic.clone(), normalise(&c.payload));
        }
        let snap = self.router.snapshot().remove(0);
        let samples = parse_samples(&hlbridge::surface::metrics::render(&self.registry));
        let mut parse_errors = serde_json::Map::new();
        // Reasons start at 0 (health series exist from start-up); the golden lists what happened.
        for s in find_samples(&samples, "hlbridge_parse_errors_total", &[("device", "meter")])
            .into_iter()
            .filter(|s| s.value > 0.0)
        {
            let reason = &s.labels.iter().find(|(k, _)| k == "reason").unwrap().1;
            parse_errors.insert(reason.clone(), json!(s.value));
        }
        let one = |n: &str| find_samples(&samples, n, &[("device", "meter")]).iter().map(|s| s.value).sum::<f64>();
        json!({
            "fixture": name,
            "topics": topics,
            "device": {
                "online": snap.online,
                "reason": snap.reason,
                "details": snap.details,
            },
            "counters": {
                "messages_received": one("hlbridge_messages_received_total"),
                "unknown_keys": one("hlbridge_unknown_keys_total"),
                "parse_errors": parse_errors,
            },
        })
    }
}

/// JSON payloads become objects; a `ts` within ten minutes of now is the replay's receipt time and
/// becomes `<receipt>` (a source timestamp from a fixture is kept, so the golden file shows it).
fn normalise(payload: &str) -> Value {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(mut m)) => {
            if let Some(Value::String(ts)) = m.get("ts") {
                assert_rfc3339_utc(ts);
                let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
                if (time::OffsetDateTime::now_utc() - t).whole_minutes().abs() < 10 {
                    m.insert("ts".into(), "<receipt>".into());
                }
            }
            Value::Object(m)
        }
        _ => Value::String(payload.to_owned()),
    }
}

use crate::common::assert_rfc3339_utc;

fn golden(name: &str, actual: &Value) {
    crate::common::golden(&manifest_dir().join("adapters/whatwatt/fixtures"), name, actual);
}

fn topic<'a>(v: &'a Value, quantity: &str) -> &'a str {
    v["topics"][format!("home/meter/{quantity}")]
        .as_str()
        .unwrap_or_else(|| panic!("home/meter/{quantity} missing: {:#}", v["topics"]))
}

fn state(v: &Value) -> &Value {
    &v["topics"]["home/meter/state"]
}

fn replay_report(name: &str) -> Value {
    let mut r = Replay::new(&WhatwattConfig::default());
    let out = r.ingest.report_body(200, "application/json; charset=utf-8", fixture(name).as_bytes());
    assert_eq!(out, Ok(ReportOutcome::Fresh), "{name}");
    // A second poll of the same report is no new reading.
    let again = r.ingest.report_body(200, "application/json", fixture(name).as_bytes());
    assert_eq!(again, Ok(ReportOutcome::Unchanged), "{name}: same (boot_id, id)");
    r.finish(name)
}

#[test]
fn the_landis_gyr_mbus_report_from_the_docs_replays_to_its_golden_file() {
    let name = "docs_report_landisgyr_mbus_dlms.json";
    let v = replay_report(name);
    // kW → W and net power: an idle meter reads 0 W; kWh registers stay kWh.
    assert_eq!(topic(&v, "power"), "0");
    assert_eq!(topic(&v, "energy_import"), "75.133");
    assert_eq!(topic(&v, "energy_export"), "25.414");
    assert_eq!(topic(&v, "reactive_energy_import"), "82.328");
    assert_eq!(topic(&v, "voltage_l1"), "234");
    assert!(v["topics"].get("home/meter/voltage_l2").is_none(), "0 V on L2: single-phase site");
    assert_eq!(topic(&v, "tariff"), "1");
    // The meter's UTC time, not the local `date_time` with its wrong Z (14:26:10Z).
    assert_eq!(state(&v)["ts"], "2025-10-07T12:26:10.000Z");
    assert_eq!(v["topics"]["home/meter/info"]["serial"], "ECC9FF5C7F14");
    assert_eq!(v["counters"]["messages_received"], 2.0);
    assert_eq!(v["counters"]["unknown_keys"], 0.0);
    golden(name, &v);
}

#[test]
fn the_ensor_p1_report_drops_phantom_phases_and_replays_to_its_golden_file() {
    let name = "docs_report_ensor_p1_dsmr.json";
    let v = replay_report(name);
    assert_eq!(topic(&v, "power"), "15");
    assert_eq!(topic(&v, "power_l1"), "15");
    assert_eq!(topic(&v, "current_l1"), "0.26");
    assert_eq!(topic(&v, "energy_import_t1"), "120.133");
    assert_eq!(topic(&v, "energy_import_t2"), "69.877");
    for phantom in ["voltage_l2", "voltage_l3", "power_l2", "current_l3"] {
        assert!(v["topics"].get(format!("home/meter/{phantom}")).is_none(), "{phantom}: 36 V is a phantom");
    }
    assert!(v["topics"].get("home/meter/volume").is_none(), "the sub-meter entry has no reading");
    assert_eq!(state(&v)["ts"], "2025-10-07T12:29:41.000Z");
    golden(name, &v);
}

#[test]
fn the_kamstrup_field_capture_replays_to_its_golden_file() {
    let name = "gl_report_kamstrup_kmp_fw2.8.2.json";
    let v = replay_report(name);
    assert_eq!(topic(&v, "power"), "212");
    assert_eq!(topic(&v, "power_import"), "212");
    assert_eq!(topic(&v, "power_export"), "0");
    assert_eq!(topic(&v, "power_l1"), "39");
    assert_eq!(topic(&v, "power_l3"), "168");
    assert_eq!(topic(&v, "voltage_l3"), "237");
    assert_eq!(topic(&v, "energy_import"), "10526.027");
    assert_eq!(topic(&v, "reactive_power_export"), "109");
    assert_eq!(topic(&v, "power_factor"), "0.88");
    assert!(v["topics"].get("home/meter/apparent_power").is_none());
    assert_eq!(state(&v)["ts"], "2026-10-02T15:35:46.000Z");
    assert_eq!(v["device"]["details"]["meter"], "Kamstrup 12345678");
    assert_eq!(v["device"]["details"]["meter_status"], "OK");
    golden(name, &v);
}

#[test]
fn the_april_2025_report_without_utc_time_is_stamped_on_receipt() {
    let name = "tp_report_landisgyr_mbus_2025-04-14.json";
    let v = replay_report(name);
    assert_eq!(state(&v)["ts"], "<receipt>", "date_time is local with a wrong Z: never the source time");
    assert_eq!(topic(&v, "power"), "1");
    assert_eq!(topic(&v, "energy_export_t2"), "414.198");
    assert_eq!(v["counters"]["unknown_keys"], 0.0, "reactive quadrant registers are known, not mapped");
    golden(name, &v);
}

#[test]
fn the_documented_sse_event_replays_to_its_golden_file() {
    let name = "docs_live_sse_event.txt";
    let mut r = Replay::new(&WhatwattConfig::default());
    assert_eq!(r.ingest.sse_bytes(fixture(name).as_bytes()), 0, "the docs snippet has no final blank line");
    assert!(r.ingest.sse_end(), "the end of the capture hands the last event over");
    let v = r.finish(name);
    assert_eq!(topic(&v, "power"), "36");
    assert_eq!(topic(&v, "voltage_l1"), "230.1");
    assert_eq!(topic(&v, "energy_import_t1"), "33.388");
    assert_eq!(topic(&v, "uptime"), "255780", "71.05 h in seconds");
    assert_eq!(topic(&v, "volume"), "123.45");
    assert_eq!(state(&v)["ts"], "<receipt>", "the stream carries no UTC time");
    golden(name, &v);
}

#[test]
fn the_landis_gyr_sse_capture_replays_to_its_golden_file() {
    let name = "tp_live_sse_landisgyr_mbus_2025-04-14.txt";
    let mut r = Replay::new(&WhatwattConfig::default());
    let text = fixture(name);
    // Fed in awkward pieces, like TCP might deliver them.
    let mut events = 0;
    for chunk in text.as_bytes().chunks(37) {
        events += r.ingest.sse_bytes(chunk);
    }
    assert_eq!(events, 4);
    let v = r.finish(name);
    assert_eq!(topic(&v, "power"), "5", "the last event: 0.005 kW");
    assert_eq!(topic(&v, "energy_export"), "506.342");
    assert_eq!(v["counters"]["messages_received"], 4.0);
    golden(name, &v);
}

#[test]
fn a_malformed_sse_stream_is_skipped_and_counted_never_fatal() {
    let name = "constructed_live_sse_malformed.txt";
    let mut r = Replay::new(&WhatwattConfig::default());
    assert_eq!(r.ingest.sse_bytes(fixture(name).as_bytes()), 2, "the two good events");
    let v = r.finish(name);
    assert_eq!(topic(&v, "power"), "-700", "0.4 kW import − 1.1 kW export");
    let pe = &v["counters"]["parse_errors"];
    assert_eq!(pe["invalid_json"], 1.0);
    assert_eq!(pe["sse_bad_line"], 2.0, "two HTML lines");
    assert_eq!(pe["bad_type"], 1.0, "data that is not an object");
    assert_eq!(v["counters"]["unknown_keys"], 2.0, "event `ping` and key X_New");
    golden(name, &v);
}

#[test]
fn the_bridge_template_payload_replays_to_its_golden_file() {
    let name = "notes_mqtt_bridge_template_message.json";
    let mut r = Replay::new(&WhatwattConfig::default());
    r.mqtt("energy/whatwatt/go", &fixture(name));
    let v = r.finish(name);
    assert_eq!(topic(&v, "power"), "1845");
    assert_eq!(topic(&v, "power_l3"), "800");
    assert_eq!(topic(&v, "current_l3"), "3.52");
    assert_eq!(topic(&v, "energy_import_t1"), "3010.5");
    assert_eq!(topic(&v, "reactive_energy_export"), "310.25");
    assert!(v["topics"].get("home/meter/apparent_power").is_none(), "`s: null` is absent");
    assert_eq!(state(&v)["ts"], "2026-09-21T14:13:20.000Z", "${{timestamp}} 1790000000");
    assert_eq!(v["device"]["details"]["meter_status"], "OK");
    assert_eq!(v["counters"]["unknown_keys"], 0.0);
    golden(name, &v);
}

#[test]
fn the_ha_template_payload_with_quoted_values_replays_to_its_golden_file() {
    let name = "constructed_mqtt_ha_template_quoted.json";
    let mut r = Replay::new(&WhatwattConfig::default());
    r.mqtt("energy/whatwatt/go", &fixture(name));
    let v = r.finish(name);
    assert_eq!(topic(&v, "power"), "1845");
    assert_eq!(topic(&v, "voltage_l2"), "229");
    assert!(v["topics"].get("home/meter/energy_import_t1").is_none(), "\"null\" is absent");
    assert_eq!(state(&v)["ts"], "2026-09-21T14:13:20.000Z");
    assert_eq!(v["counters"]["parse_errors"], json!({}));
    golden(name, &v);
}

#[test]
fn the_ha_example_payload_replays_to_its_golden_file() {
    let name = "ha_integration_example_mqtt_message.json";
    let mut r = Replay::new(&WhatwattConfig::default());
    r.mqtt("energy/whatwatt/go", &fixture(name));
    let v = r.finish(name);
    assert_eq!(topic(&v, "power"), "1230");
    assert_eq!(topic(&v, "apparent_power"), "1260");
    assert_eq!(topic(&v, "reactive_power_import"), "250");
    assert_eq!(topic(&v, "energy_import"), "12345.6");
    assert_eq!(state(&v)["ts"], "2025-03-27T22:00:00.000Z");
    golden(name, &v);
}

#[test]
fn the_docs_template_payload_replays_to_its_golden_file() {
    let name = "docs_mqtt_message_example.json";
    let mut r = Replay::new(&WhatwattConfig::default());
    r.mqtt("test", &fixture(name));
    let v = r.finish(name);
    assert_eq!(topic(&v, "power"), "14");
    assert_eq!(topic(&v, "energy_import"), "200.934");
    assert_eq!(state(&v)["ts"], "<receipt>", "Meter.DateTime is ${{meter.date_time}}: local time with a wrong Z");
    assert_eq!(v["topics"]["home/meter/info"]["serial"], "ECC9FF5C7F14");
    golden(name, &v);
}

/// Renders `template` from the `/api/v1/variables` sample, like the gateway would.
fn render_from_variables(template: &str) -> String {
    let vars: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&fixture("docs_variables_get.json")).unwrap();
    let mut out = template.to_owned();
    for m in &vars {
        for (k, v) in m {
            let v = v.as_str().unwrap();
            out = out.replace(&format!("${{{k}}}"), v);
        }
    }
    out
}

#[test]
fn the_variables_sample_rendered_with_the_docs_template_replays_to_its_golden_file() {
    let name = "docs_variables_get.json";
    let cfg = WhatwattConfig {
        transport: hlbridge::surface::adapters::whatwatt::WhatwattTransport::Mqtt,
        template: Some(fixture("docs_mqtt_template_example.tmpl")),
        ..Default::default()
    };
    let mut r = Replay::new(&cfg);
    let payload = render_from_variables(&fixture("docs_mqtt_template_example.tmpl"));
    r.mqtt("test", &payload);
    let v = r.finish(name);
    assert_eq!(topic(&v, "power_import"), "6");
    assert_eq!(topic(&v, "energy_export"), "0.004");
    assert_eq!(state(&v)["ts"], "<receipt>");
    golden(name, &v);
}

#[test]
fn old_firmware_leaves_newer_variables_verbatim_and_the_payload_is_rejected() {
    // fw 1.2.15 (the variables sample) has no 13_7_0 or 9_7_0: the bridge template keeps them as
    // `${...}`, which is not JSON; the adapter names the problem instead of guessing.
    let mut r = Replay::new(&WhatwattConfig::default());
    let payload = render_from_variables(hlbridge::surface::adapters::whatwatt::mapping::BRIDGE_TEMPLATE);
    assert!(payload.contains("${13_7_0}"), "{payload}");
    r.mqtt("energy/whatwatt/go", &payload);
    let v = r.finish("old firmware");
    assert_eq!(v["counters"]["parse_errors"]["template_unresolved"], 1.0);
    assert!(v["topics"].get("home/meter/power").is_none());
}

#[test]
fn a_template_pasted_from_the_gateways_mqtt_settings_maps_its_fields() {
    let settings: Value = serde_json::from_str(&fixture("docs_mqtt_settings_get_after_tls.json")).unwrap();
    let mut cfg = WhatwattConfig {
        transport: hlbridge::surface::adapters::whatwatt::WhatwattTransport::Mqtt,
        template: Some(settings["publish"]["template"].as_str().unwrap().to_owned()),
        ..Default::default()
    };
    let mut r = Replay::new(&cfg);
    r.mqtt("lab/energy/whatwatt-001", r#"{ "P_In": 0.5, "P_Out": 0.25 }"#);
    r.mqtt("lab/energy/whatwatt-001", r#"{ "P_In": 0.5, "p_in": 9 }"#);
    let v = r.finish("mqtt settings template");
    assert_eq!(topic(&v, "power"), "250");
    assert_eq!(topic(&v, "power_import"), "500");
    assert_eq!(v["counters"]["unknown_keys"], 1.0, "the template replaces the presets: p_in is unknown");

    // The docs' settings answer carries the example template; its payload reads with it.
    let settings: Value = serde_json::from_str(&fixture("docs_mqtt_settings_get.json")).unwrap();
    cfg.template = Some(settings["publish"]["template"].as_str().unwrap().to_owned());
    let mut r = Replay::new(&cfg);
    r.mqtt("test", &fixture("docs_mqtt_message_example.json"));
    let v = r.finish("mqtt settings template, docs");
    assert_eq!(topic(&v, "power"), "14");
    assert_eq!(v["counters"]["unknown_keys"], 0.0);
    assert_eq!(state(&v)["ts"], "<receipt>", "Meter.DateTime holds ${{meter.date_time}}: never the time");
}

#[test]
fn the_system_answer_fills_identity_licence_and_meter() {
    let mut r = Replay::new(&WhatwattConfig::default());
    let info =
        r.ingest.system_body(200, "application/json", fixture("docs_system_get_fw1.10.0.json").as_bytes()).unwrap();
    assert_eq!(info.licence.as_deref(), Some("PLUS"));
    let v = r.finish("docs_system_get_fw1.10.0.json");
    let id = &v["topics"]["home/meter/info"];
    assert_eq!(id["vendor"], "whatwatt");
    assert_eq!(id["model"], "WW_Go_1.2");
    assert_eq!(id["firmware"], "1.10.0");
    assert_eq!(id["serial"], "ECC9FF5C7F14");
    assert_eq!(id["kind"], "energy_meter");
    assert_eq!(topic(&v, "rssi"), "-29");
    assert_eq!(v["device"]["online"], false, "gateway facts are not a meter reading");
    assert_eq!(v["device"]["details"]["licence"], "PLUS");
    assert_eq!(v["device"]["details"]["meter"], "Landis+Gyr LGZ1030784855204 (MBUS/DLMS)");
    golden("docs_system_get_fw1.10.0.json", &v);
}

#[test]
fn a_meter_status_other_than_ok_takes_the_device_offline_with_the_reason() {
    let mut r = Replay::new(&WhatwattConfig::default());
    let ok = fixture("gl_report_kamstrup_kmp_fw2.8.2.json");
    assert_eq!(r.ingest.report_body(200, "application/json", ok.as_bytes()), Ok(ReportOutcome::Fresh));
    let bad = ok.replace("\"status\": \"OK\"", "\"status\": \"KEY REQUIRED\"").replace("\"id\": 223", "\"id\": 224");
    let out = r.ingest.report_body(200, "application/json", bad.as_bytes());
    assert!(matches!(out, Ok(ReportOutcome::MeterNotOk(ref m)) if m.contains("KEY REQUIRED")), "{out:?}");
    let v = r.finish("status");
    assert_eq!(v["device"]["online"], false);
    assert!(v["device"]["reason"].as_str().unwrap().contains("meter status KEY REQUIRED"), "{v:#}");
}

#[test]
fn a_licence_404_is_recognised_and_other_error_pages_are_counted() {
    let mut r = Replay::new(&WhatwattConfig::default());
    assert_eq!(r.ingest.report_body(404, "text/plain", b"License required"), Err(ReportError::LicenceRequired));
    let html = b"<!DOCTYPE html><html><body><h1>Service Unavailable</h1></body></html>";
    assert!(matches!(r.ingest.report_body(503, "text/html", html), Err(ReportError::Bad(m)) if m.contains("HTML")));
    assert!(matches!(r.ingest.report_body(200, "text/html", html), Err(ReportError::Bad(_))));
    assert!(matches!(
        r.ingest.report_body(200, "application/json", b"{\"report\":{\"id\":1,"),
        Err(ReportError::Bad(_))
    ));
    let v = r.finish("errors");
    let pe = &v["counters"]["parse_errors"];
    assert_eq!(
        (pe["http_status"].clone(), pe["html_page"].clone(), pe["invalid_json"].clone()),
        (json!(1.0), json!(1.0), json!(1.0))
    );
}

// ---------------------------------------------------------------------------------------------
// Simulator and bridge
// ---------------------------------------------------------------------------------------------

/// A simulated gateway on its own loopback port.
struct WwSim {
    addr: SocketAddr,
    url: String,
    control: SimControl,
    cancel: CancellationToken,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl WwSim {
    /// Reports every 100 ms; `tweak` sets auth, licence, meter, MQTT...
    async fn start(tweak: impl FnOnce(&mut WhatwattSimOptions)) -> WwSim {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        WwSim::with_listener(l, tweak)
    }

    /// On a given address (a restart on the port the bridge knows).
    async fn start_on(addr: SocketAddr, tweak: impl FnOnce(&mut WhatwattSimOptions)) -> WwSim {
        let l = eventually("the old port can be bound again", async || tokio::net::TcpListener::bind(addr).await.ok())
            .await;
        WwSim::with_listener(l, tweak)
    }

    fn with_listener(l: tokio::net::TcpListener, tweak: impl FnOnce(&mut WhatwattSimOptions)) -> WwSim {
        crate::common::init();
        let addr = l.local_addr().unwrap();
        let control = SimControl::default();
        let mut opts = WhatwattSimOptions {
            listener: Some(l),
            interval: Some(Duration::from_millis(100)),
            mqtt_interval: Duration::from_millis(200),
            control: control.clone(),
            ..Default::default()
        };
        tweak(&mut opts);
        let cancel = CancellationToken::new();
        let join = tokio::spawn(hlbridge::surface::simulate::whatwatt::run(opts, cancel.clone()));
        WwSim { addr, url: format!("http://{addr}"), control, cancel, join: Some(join) }
    }

    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(j) = self.join.take() {
            tokio::time::timeout(DEADLINE, j)
                .await
                .expect("simulator stops in time")
                .expect("no panic")
                .expect("no error");
        }
    }
}

impl Drop for WwSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A `meter` device with quick timings for tests; `extra` adds keys (4-space indented lines).
fn device(url: &str, extra: &str) -> String {
    format!(
        "  meter:\n    adapter: whatwatt\n    url: {url}\n    watchdog: 1s\n    interval: 500ms\n    timeout: 2s\n    \
         reconnect_delay: 100ms\n    reconnect_max: 500ms\n{extra}"
    )
}

async fn readyz(running: &hlbridge::surface::app::Running) -> Value {
    let got = http_get(&format!("{}/readyz", http_base(running))).await;
    serde_json::from_str(&got.body).unwrap_or_else(|e| panic!("readyz is JSON ({e}): {}", got.body))
}

async fn detail(running: &hlbridge::surface::app::Running, key: &str) -> Option<String> {
    readyz(running).await["devices"]["meter"]["details"][key].as_str().map(str::to_owned)
}

async fn parse_errors(running: &hlbridge::surface::app::Running, reason: &str) -> f64 {
    let (_, samples) = scrape(running).await;
    find_samples(&samples, "hlbridge_parse_errors_total", &[("device", "meter"), ("reason", reason)])
        .iter()
        .map(|s| s.value)
        .sum()
}

fn number(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("`{s}` is a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_end_to_end_publishes_contract_units_from_the_simulated_kamstrup() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|_| {}).await;
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, ""), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    let energy = number(&probe.wait_latest("home/meter/energy_import", |_| true).await);
    assert!((10_526.0..10_600.0).contains(&energy), "kWh as the meter counts it: {energy}");
    let import = number(&probe.wait_latest("home/meter/power_import", |_| true).await);
    assert!((0.0..12_000.0).contains(&import) && import.fract() == 0.0, "watts, whole: {import}");
    let u = number(&probe.wait_latest("home/meter/voltage_l2", |_| true).await);
    assert!((220.0..240.0).contains(&u), "{u}");
    // The first snapshot may hold only the identity probe's rssi (`ts` null: no reading yet).
    let st = probe
        .wait_for("a state snapshot of a reading", |m| m.topic == "home/meter/state" && m.json()["ts"].is_string())
        .await
        .json();
    assert_rfc3339_utc(st["ts"].as_str().unwrap());
    for q in ["power", "power_l1", "energy_import_t1", "power_factor", "current_l3", "uptime"] {
        assert!(st["values"].get(q).is_some(), "{q} in {st}");
    }
    let info = probe
        .wait_for("the info topic", |m| m.topic == "home/meter/info" && m.payload.contains("firmware"))
        .await
        .json();
    assert_eq!(info["serial"], "A842E39F8124");
    assert_eq!(info["firmware"], "1.10.0");
    assert_eq!(detail(&bridge, "transport").await.as_deref(), Some("sse"));
    assert_eq!(detail(&bridge, "auth").await.as_deref(), Some("none"));
    assert_eq!(sim.control.requests("/api/v1/report"), 0, "SSE mode never polls");
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_end_to_end_skips_unchanged_report_ids_and_goes_stale() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|o| {
        o.meter = SimMeter::Mbus;
        o.interval = Some(Duration::from_millis(300));
    })
    .await;
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, "    transport: poll\n"), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    probe.wait_latest("home/meter/energy_import", |v| number(v) >= 75.133).await;
    assert!(probe.latest("home/meter/voltage_l2").is_none(), "single-phase L+G: no L2");
    assert_eq!(detail(&bridge, "transport").await.as_deref(), Some("poll"));
    // The meter stops reporting: the report id stands still, polls go on, nothing is fresh.
    sim.control.set_silent(true);
    let before = sim.control.requests("/api/v1/report");
    probe.wait_value("home/meter/availability", "offline").await;
    assert!(sim.control.requests("/api/v1/report") > before + 1, "still polling");
    let r = readyz(&bridge).await;
    assert!(r["devices"]["meter"]["reason"].as_str().unwrap().starts_with("no reading for"), "{r}");
    sim.control.set_silent(false);
    probe.wait_value("home/meter/availability", "online").await;
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_end_to_end_reads_the_bridge_template_with_the_meters_utc_time() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|o| {
        o.broker = Some(client_settings(&broker, "whatwatt-sim"));
        o.topic = "energy/whatwatt/go".into();
    })
    .await;
    let dev =
        "  meter:\n    adapter: whatwatt\n    transport: mqtt\n    topic: energy/whatwatt/go\n    interval: 200ms\n";
    let bridge = start_bridge(&bridge_yaml(&broker, dev, "")).await;
    let raw = probe.wait_for("a gateway payload", |m| m.topic == "energy/whatwatt/go").await.json();
    assert!(raw["ts"].is_u64() && raw["s"].is_null(), "the bridge template, numerics unquoted: {raw}");
    probe.wait_value("home/meter/availability", "online").await;
    let e = number(&probe.wait_latest("home/meter/energy_import_t2", |_| true).await);
    assert!(e >= 2486.751, "{e}");
    // The state's time is the payload's ${timestamp}: whole seconds of the meter's UTC clock.
    let st = probe.wait_for("a state", |m| m.topic == "home/meter/state").await.json();
    let ts = st["ts"].as_str().unwrap();
    assert!(ts.ends_with(".000Z"), "{ts}");
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
    assert!((time::OffsetDateTime::now_utc() - t).whole_seconds().abs() < 60, "UTC, not local: {ts}");
    assert_eq!(detail(&bridge, "transport").await.as_deref(), Some("mqtt"));
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_end_to_end_reads_the_home_assistant_template_with_quoted_values() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|o| {
        o.broker = Some(client_settings(&broker, "whatwatt-sim-ha"));
        o.topic = "energy/whatwatt/ha".into();
        o.template = "ha".into();
        o.meter = SimMeter::Mbus;
    })
    .await;
    let dev =
        "  meter:\n    adapter: whatwatt\n    transport: mqtt\n    topic: energy/whatwatt/ha\n    interval: 200ms\n";
    let bridge = start_bridge(&bridge_yaml(&broker, dev, "")).await;
    let raw = probe.wait_for("a gateway payload", |m| m.topic == "energy/whatwatt/ha").await.json();
    assert_eq!(raw["energy_in_t1"], "null", "quoted template: {raw}");
    assert!(raw["power_in"].is_string());
    let e = number(&probe.wait_latest("home/meter/energy_import", |_| true).await);
    assert!(e >= 75.133, "{e}");
    assert!(probe.latest("home/meter/energy_import_t1").is_none(), "\"null\" is no value");
    assert_eq!(parse_errors(&bridge, "bad_type").await, 0.0);
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_on_old_firmware_is_detected_and_used() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|o| {
        o.auth = SimAuth::Basic;
        o.password = "s3cret".into();
    })
    .await;
    let dir = crate::common::TempDir::new("ww-pw");
    let pw = dir.write("whatwatt.pw", "s3cret\n");
    let extra = format!("    transport: poll\n    password_file: {}\n", pw.display());
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, &extra), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    probe.wait_latest("home/meter/power", |_| true).await;
    assert_eq!(detail(&bridge, "auth").await.as_deref(), Some("basic"));
    let info = probe.wait_for("firmware", |m| m.topic == "home/meter/info" && m.payload.contains("1.2.15")).await;
    assert!(info.json()["firmware"] == "1.2.15");
    assert!(sim.control.unauthorized() <= 1, "one probe 401, then credentials every time");
    let body = http_get(&format!("{}/readyz", http_base(&bridge))).await.body;
    assert!(!body.contains("s3cret"));
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_counts_nc_and_recovers_from_a_stale_nonce() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|o| {
        o.auth = SimAuth::Digest;
        o.password = "s3cret".into();
        o.meter = SimMeter::P1;
    })
    .await;
    let extra = "    transport: poll\n    password: s3cret\n";
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, extra), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    eventually("nc counts up on one nonce", async || (sim.control.last_nc()? >= 3).then_some(())).await;
    assert_eq!(sim.control.unauthorized(), 1, "only the first, unauthenticated probe was refused");
    assert_eq!(detail(&bridge, "auth").await.as_deref(), Some("digest (MD5-sess)"));
    // The gateway expires its nonces: the next request gets 401 stale=true and is retried once.
    sim.control.expire_nonces();
    eventually("a stale nonce was answered", async || (sim.control.stale() >= 1).then_some(())).await;
    let after = sim.control.requests("/api/v1/report");
    eventually("polls go on with the new nonce", async || {
        (sim.control.requests("/api/v1/report") >= after + 2).then_some(())
    })
    .await;
    assert!(sim.control.last_nc().unwrap() < 10, "nc restarted at 1 with the new nonce");
    assert_eq!(sim.control.unauthorized(), 2, "one probe, one stale: no password retries");
    assert_eq!(readyz(&bridge).await["devices"]["meter"]["availability"], "online");
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_also_protects_the_sse_stream() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|o| {
        o.auth = SimAuth::Digest;
        o.password = "s3cret".into();
    })
    .await;
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, "    password: s3cret\n"), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    probe.wait_latest("home/meter/power", |_| true).await;
    assert_eq!(sim.control.requests("/api/v1/live"), 1);
    assert!(sim.control.last_nc().unwrap() >= 2, "the stream request carried the next nc");
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_takes_the_device_offline_with_a_clear_reason() {
    let broker = Broker::start().await;
    let sim = WwSim::start(|o| {
        o.auth = SimAuth::Digest;
        o.password = "right".into();
    })
    .await;
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, "    password: wrong-pw\n"), "")).await;
    let reason = eventually("the reason names the password", async || {
        let r = readyz(&bridge).await["devices"]["meter"]["reason"].as_str()?.to_owned();
        r.contains("refused the password").then_some(r)
    })
    .await;
    assert!(!reason.contains("wrong-pw"));
    let body = http_get(&format!("{}/readyz", http_base(&bridge))).await.body;
    assert!(!body.contains("wrong-pw"), "{body}");
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_digest_verifier_agrees_with_curl() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let sim = WwSim::start(|o| {
        o.auth = SimAuth::Digest;
        o.password = "s3cret".into();
    })
    .await;
    let url = format!("{}/api/v1/system", sim.url);
    let curl = |pw: &str| {
        let url = url.clone();
        let pw = pw.to_owned();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args([
                    "-s",
                    "--noproxy",
                    "*",
                    "--digest",
                    "-u",
                    &format!(":{pw}"),
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &url,
                ])
                .output()
                .expect("curl runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    assert_eq!(curl("s3cret").await.unwrap(), "200", "curl's MD5-sess answer is accepted");
    assert_eq!(curl("nope").await.unwrap(), "401");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_reconnects_after_the_gateway_restarts() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|_| {}).await;
    let addr = sim.addr;
    let extra = "    fallback:\n      after: 0\n";
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, extra), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    sim.stop().await;
    probe.wait_value("home/meter/availability", "offline").await;
    let mark = probe.mark();
    let sim = WwSim::start_on(addr, |_| {}).await;
    probe.wait_value("home/meter/availability", "online").await;
    probe.next_on(mark, "home/meter/power_import").await;
    assert_eq!(sim.control.live_connections(), 1);
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_trips_the_watchdog_and_is_reopened() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|_| {}).await;
    let extra = "    fallback:\n      after: 0\n";
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, extra), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    sim.control.set_silent(true);
    probe.wait_value("home/meter/availability", "offline").await;
    eventually("the stream is reopened", async || (sim.control.live_connections() >= 2).then_some(())).await;
    let r = readyz(&bridge).await;
    let reason = r["devices"]["meter"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("no SSE event") || reason.starts_with("no reading"), "{reason}");
    sim.control.set_silent(false);
    probe.wait_value("home/meter/availability", "online").await;
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_kicks_the_stream_and_the_bridge_counts_it_and_returns() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|_| {}).await;
    // The bridge waits a second before taking the stream back, so the other client surely reads
    // its first event (100 ms cadence) before it is kicked in turn.
    let extra = "    fallback:\n      after: 0\n";
    let dev = device(&sim.url, extra)
        .replace("reconnect_delay: 100ms", "reconnect_delay: 1s")
        .replace("reconnect_max: 500ms", "reconnect_max: 2s");
    let bridge = start_bridge(&bridge_yaml(&broker, &dev, "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    // Another consumer (say the Web UI's live page) opens the stream and reads one event.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut other = client.get(format!("{}/api/v1/live", sim.url)).send().await.unwrap();
    let first = tokio::time::timeout(DEADLINE, other.chunk()).await.unwrap().unwrap().unwrap();
    assert!(first.starts_with(b"event: live\ndata: {"), "{first:?}");
    eventually("the kick is counted", async || (detail(&bridge, "sse_kicked").await? == "1").then_some(())).await;
    assert_eq!(parse_errors(&bridge, "sse_kicked").await, 1.0);
    // The bridge takes the stream back (and now the other client is the one kicked).
    eventually("the bridge reconnects", async || (sim.control.live_connections() >= 3).then_some(())).await;
    let mark = probe.mark();
    probe.next_on(mark, "home/meter/power_import").await;
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sse_failures_fall_back_to_polling_and_return_to_sse_later() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|_| {}).await;
    for _ in 0..2 {
        sim.control.fault("/api/v1/live", Fault::Html503);
    }
    let extra = "    fallback:\n      after: 2\n      retry_sse: 2s\n";
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, extra), "")).await;
    eventually("the adapter polls", async || {
        (detail(&bridge, "transport").await? == "poll (SSE fallback)").then_some(())
    })
    .await;
    probe.wait_value("home/meter/availability", "online").await;
    eventually("reports are polled", async || (sim.control.requests("/api/v1/report") >= 2).then_some(())).await;
    assert_eq!(parse_errors(&bridge, "html_page").await, 2.0, "both HTML error pages counted");
    eventually("back on SSE", async || (detail(&bridge, "transport").await? == "sse").then_some(())).await;
    eventually("the stream is open", async || (sim.control.live_connections() >= 1).then_some(())).await;
    let mark = probe.mark();
    probe.next_on(mark, "home/meter/power_import").await;
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_required_404_switches_polling_to_sse_once() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|o| o.licence = SimLicence::Free).await;
    // The first identity probe fails, so the adapter only learns the licence from the 404.
    sim.control.fault("/api/v1/system", Fault::Html503);
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, "    transport: poll\n"), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    probe.wait_latest("home/meter/power", |_| true).await;
    assert_eq!(detail(&bridge, "transport").await.as_deref(), Some("sse"));
    assert_eq!(detail(&bridge, "licence").await.as_deref(), Some("FREE"));
    assert_eq!(sim.control.requests("/api/v1/report"), 1, "one 404, never again");
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_licence_seen_in_the_system_answer_never_polls() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|o| o.licence = SimLicence::Free).await;
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, "    transport: poll\n"), "")).await;
    probe.wait_latest("home/meter/power", |_| true).await;
    assert_eq!(sim.control.requests("/api/v1/report"), 0);
    assert_eq!(detail(&bridge, "transport").await.as_deref(), Some("sse"));
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_error_pages_and_broken_json_from_the_report_are_counted_and_skipped() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|_| {}).await;
    for f in [Fault::Html503, Fault::Html200, Fault::TruncatedJson] {
        sim.control.fault("/api/v1/report", f);
    }
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, "    transport: poll\n"), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    probe.wait_latest("home/meter/power", |_| true).await;
    assert_eq!(parse_errors(&bridge, "http_status").await, 1.0);
    assert_eq!(parse_errors(&bridge, "html_page").await, 1.0);
    assert_eq!(parse_errors(&bridge, "invalid_json").await, 1.0);
    assert_eq!(readyz(&bridge).await["devices"]["meter"]["availability"], "online");
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_stream_lines_are_counted_and_the_stream_goes_on() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|_| {}).await;
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, ""), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    sim.control.inject_sse(&b"event: live\ndata: {\"P_In\":1.0,\"P_Out\n\n<html><body>oops</body></html>\n\n"[..]);
    eventually("the broken event is counted", async || {
        (parse_errors(&bridge, "invalid_json").await >= 1.0 && parse_errors(&bridge, "sse_bad_line").await >= 1.0)
            .then_some(())
    })
    .await;
    let mark = probe.mark();
    probe.next_on(mark, "home/meter/power_import").await;
    assert_eq!(sim.control.live_connections(), 1, "the same stream goes on");
    bridge.shutdown().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_problem_on_the_gateway_shows_as_offline_with_the_status() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = WwSim::start(|_| {}).await;
    let bridge = start_bridge(&bridge_yaml(&broker, &device(&sim.url, "    transport: poll\n"), "")).await;
    probe.wait_value("home/meter/availability", "online").await;
    sim.control.set_meter_status(Some("NOT CONNECTED"));
    probe.wait_value("home/meter/availability", "offline").await;
    let reason = eventually("the reason names the status", async || {
        let r = readyz(&bridge).await["devices"]["meter"]["reason"].as_str()?.to_owned();
        r.contains("NOT CONNECTED").then_some(r)
    })
    .await;
    assert!(reason.starts_with("meter status"), "{reason}");
    sim.control.set_meter_status(None);
    probe.wait_value("home/meter/availability", "online").await;
    bridge.shutdown().await;
    sim.stop().await;
}

/// The YAML handed to the lead for `config/demo.yaml` and `config/example.yaml` (see the report).
const DEMO_SNIPPET: &str = r#"
simulators:
  demo_meter:
    type: whatwatt
    listen: 127.0.0.1:8091
    meter: kmp
    auth: digest
    password: demo
    interval: 2s
    mqtt:
      topic: energy/whatwatt/go
      template: bridge
      interval: 5s
devices:
  house_meter:
    adapter: whatwatt
    url: http://127.0.0.1:8091
    password: demo
  house_meter_mqtt:
    adapter: whatwatt
    transport: mqtt
    topic: energy/whatwatt/go
    interval: 5s
"#;

#[test]
fn the_demo_snippet_loads() {
    let c = crate::common::load_config(DEMO_SNIPPET);
    assert_eq!(c.devices.len(), 2);
    assert!(c.to_redacted_yaml().contains("<redacted>") && !c.to_redacted_yaml().contains("password: demo"));
}

#[test]
fn config_errors_name_whatwatt_keys() {
    let load =
        |t: &str| hlbridge::surface::config::load_str(t, "t.yaml", std::path::Path::new(".")).unwrap_err().to_string();
    let e = load("devices:\n  m:\n    adapter: whatwatt\n    transport: mqtt\n    url: ftp://x\n    interval: 50ms\n");
    assert!(e.contains("devices.m.topic: `transport: mqtt` needs the topic"), "{e}");
    assert!(e.contains("t.yaml:5: devices.m.url"), "{e}");
    assert!(e.contains("t.yaml:6: devices.m.interval"), "{e}");
    let e = load("devices:\n  m:\n    adapter: whatwatt\n    url: http://x\n    fallback:\n      aftr: 2\n");
    assert!(e.contains("devices.m.fallback.aftr: unknown key `aftr`; did you mean `after`?"), "{e}");
}

/// A gateway that is down when the bridge starts (a power cut brings both back, the bridge first)
/// shows its identity and RSSI as soon as it answers, over either transport: the identity probe
/// is retried with each connection attempt while the gateway cannot be reached, not 30 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_comes_up_after_the_bridge_shows_its_identity_with_its_first_readings() {
    for transport in ["sse", "poll"] {
        let broker = Broker::start().await;
        let probe = Probe::start(&broker).await;
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let extra = format!("    transport: {transport}\n");
        let bridge = start_bridge(&bridge_yaml(&broker, &device(&format!("http://{addr}"), &extra), "")).await;
        eventually(&format!("{transport}: the bridge says the gateway cannot be reached"), async || {
            readyz(&bridge).await["devices"]["meter"]["reason"].as_str().map(str::to_owned)
        })
        .await;
        let sim = WwSim::start_on(addr, |_| {}).await;
        probe.wait_value("home/meter/availability", "online").await;
        let rssi = number(&probe.wait_latest("home/meter/rssi", |_| true).await);
        assert!((-100.0..0.0).contains(&rssi), "{transport}: rssi {rssi} dBm");
        let info = probe
            .wait_for("the info topic", |m| m.topic == "home/meter/info" && m.payload.contains("serial"))
            .await
            .json();
        assert_eq!(info["serial"], "A842E39F8124", "{transport}");
        bridge.shutdown().await;
        sim.stop().await;
    }
}

/// Over the `mqtt` transport the identity probe is asked again once the gateway publishes, when
/// the gateway could not be reached at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt_a_gateway_that_was_down_at_start_gets_its_identity_once_it_publishes() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dev = format!(
        "  meter:\n    adapter: whatwatt\n    transport: mqtt\n    url: http://{addr}\n    topic: energy/whatwatt/late\n    \
         interval: 200ms\n    timeout: 2s\n"
    );
    let bridge = start_bridge(&bridge_yaml(&broker, &dev, "")).await;
    let sim = WwSim::start_on(addr, |o| {
        o.broker = Some(client_settings(&broker, "whatwatt-sim-late"));
        o.topic = "energy/whatwatt/late".into();
        o.mqtt_interval = Duration::from_millis(200);
    })
    .await;
    probe.wait_value("home/meter/availability", "online").await;
    let info = probe
        .wait_for("the info topic with the probed serial", |m| {
            m.topic == "home/meter/info" && m.payload.contains("A842E39F8124")
        })
        .await
        .json();
    assert_eq!(info["serial"], "A842E39F8124");
    let rssi = number(&probe.wait_latest("home/meter/rssi", |_| true).await);
    assert!((-100.0..0.0).contains(&rssi), "rssi {rssi} dBm");
    assert_eq!(sim.control.requests("/api/v1/system"), 1, "asked once the gateway answered, not again");
    bridge.shutdown().await;
    sim.stop().await;
}

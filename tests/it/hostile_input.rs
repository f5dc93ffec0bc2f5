//! Hostile and absurd input against a real broker: oversized device texts, implausible numbers,
//! a bogus counter level, made-up command topics. The bridge must cut, reject and count, keep its
//! one MQTT connection, and keep serving legitimate names.

use std::collections::BTreeMap;
use std::path::Path;

use hlbridge::surface::model::{FAMILIES, Quantity};
use hlbridge::surface::untrusted::{MAX_TEXT_BYTES, TRUNCATED_MARKER};
use serde_json::Value;

use crate::common::{Lab, Probe, eventually, manifest_dir, sample_value, scrape};

const CHARGER: &str = "  garage:\n    adapter: goe\n    serial: \"012345\"\n";
const DEV: (&str, &str) = ("device", "garage");

fn goe_topic(key: &str) -> String {
    format!("go-eCharger/012345/{key}")
}

/// The adapter subscribes in the background: repeats a first good reading until the bridge routes it.
async fn charger_online(p: &Probe) {
    eventually("the charger online", async || {
        p.publish(&goe_topic("car"), "1");
        (p.latest("home/garage/availability").as_deref() == Some("online")).then_some(())
    })
    .await;
}

async fn counter(lab: &Lab, family: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, samples) = scrape(&lab.bridge).await;
    sample_value(&samples, family, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_charger_identity_strings_are_cut_and_the_connection_stays_up() {
    let lab = Lab::start(CHARGER, "").await;
    let p = &lab.probe;
    charger_online(p).await;
    // 3 × 100 KiB made the retained `info` 307 KB, over the 256 KiB packet limit: the connection looped.
    for (key, fill) in [("fwv", 'f'), ("typ", 't'), ("fna", 'n')] {
        p.publish(&goe_topic(key), &format!("\"{}\"", fill.to_string().repeat(100 * 1024)));
    }
    let info = p
        .wait_latest("home/garage/info", |s| {
            serde_json::from_str::<Value>(s).is_ok_and(|v| {
                ["firmware", "model", "name"]
                    .iter()
                    .all(|f| v[f].as_str().is_some_and(|t| t.ends_with(TRUNCATED_MARKER)))
            })
        })
        .await;
    assert!(info.len() < 4 * MAX_TEXT_BYTES, "info is {} bytes", info.len());
    let v: Value = serde_json::from_str(&info).unwrap();
    assert!(v["firmware"].as_str().unwrap().starts_with("fff"), "the start of the text is kept");
    // Later readings still flow over the same connection.
    p.publish(&goe_topic("amp"), "9");
    p.wait_value("home/garage/current_limit", "9").await;
    assert_eq!(counter(&lab, "hlbridge_parse_errors_total", &[DEV, ("reason", "text_too_long")]).await, 3.0);
    assert_eq!(counter(&lab, "hlbridge_mqtt_connections_total", &[]).await, 1.0, "the connection never dropped");
    assert_eq!(counter(&lab, "hlbridge_mqtt_connection_errors_total", &[]).await, 0.0);
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_camera_raw_and_error_texts_are_cut_in_topics_state_and_metrics() {
    let lab =
        Lab::start("  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n    meter: water\n", "").await;
    let p = &lab.probe;
    let raw = "1".repeat(150 * 1024);
    let error = format!("Neg. Rate - Read: {}", "e".repeat(150 * 1024));
    eventually("the camera round routed", async || {
        p.publish("watermeter/connection", "connected");
        p.publish("watermeter/main/error", &error);
        p.publish("watermeter/main/raw", &raw);
        p.publish("watermeter/main/timestamp", "2025-03-22T16:18:58+0100");
        p.publish("watermeter/status", "Flow finished");
        p.latest("home/water/reading_raw").filter(|r| r.ends_with(TRUNCATED_MARKER))
    })
    .await;
    let err = p.wait_latest("home/water/reading_error", |e| e.ends_with(TRUNCATED_MARKER)).await;
    assert!(err.starts_with("Neg. Rate - Read: eee") && err.len() <= MAX_TEXT_BYTES, "{} bytes", err.len());
    let state = p.wait_latest("home/water/state", |s| s.contains("reading_raw")).await;
    assert!(state.len() < 4 * MAX_TEXT_BYTES, "state is {} bytes", state.len());
    let (body, _) = scrape(&lab.bridge).await;
    let longest = body.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2 * MAX_TEXT_BYTES, "a /metrics line of {longest} bytes");
    assert!(
        counter(&lab, "hlbridge_parse_errors_total", &[("device", "water"), ("reason", "text_too_long")]).await >= 2.0
    );
    assert_eq!(counter(&lab, "hlbridge_mqtt_connections_total", &[]).await, 1.0);
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_charger_numbers_are_rejected_counted_and_the_last_good_value_stays() {
    let lab = Lab::start(CHARGER, "").await;
    let p = &lab.probe;
    charger_online(p).await;
    p.publish(&goe_topic("amp"), "16");
    p.publish(&goe_topic("fhz"), "49.98");
    p.publish(&goe_topic("eto"), "527952");
    p.wait_value("home/garage/energy_import", "527.952").await;
    p.wait_value("home/garage/frequency", "49.98").await;
    let mark = p.mark();
    for (key, payload) in [
        ("amp", "-9223372036854775808"),
        ("fhz", "-9.2e18"),
        ("eto", "-1"),
        ("eto", "-500000000000000"),
        ("eto", "1.8e19"),
        ("rbt", "-5"),
    ] {
        p.publish(&goe_topic(key), payload);
    }
    // A good reading after all that: once it is out, every absurd one before it was handled.
    p.publish(&goe_topic("amp"), "10");
    p.wait_value("home/garage/current_limit", "10").await;
    let published: Vec<String> = p.all("home/garage/current_limit").into_iter().map(|m| m.payload).collect();
    assert_eq!(published, ["16", "10"], "the absurd limit was never published");
    assert_eq!(p.latest("home/garage/frequency").as_deref(), Some("49.98"));
    assert_eq!(p.latest("home/garage/energy_import").as_deref(), Some("527.952"));
    assert!(p.all("home/garage/uptime").iter().all(|m| !m.payload.starts_with('-')));
    let rejected_events = p
        .all("home/garage/event")
        .into_iter()
        .filter(|m| {
            m.seq >= mark && m.json()["event"] == "reading_rejected" && m.json()["data"]["reason"] == "out_of_range"
        })
        .count();
    let all_events: Vec<String> = p.all("home/garage/event").into_iter().map(|m| m.payload).collect();
    // Negative `eto` is the adapter's own parse error; the router's range catches the rest.
    assert_eq!(rejected_events, 4, "{all_events:#?}");
    let out_of_range = counter(&lab, "hlbridge_readings_rejected_total", &[DEV, ("reason", "out_of_range")]).await;
    assert_eq!(out_of_range, 4.0);
    assert_eq!(counter(&lab, "hlbridge_parse_errors_total", &[DEV, ("reason", "negative_energy")]).await, 2.0);
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_camera_reading_never_becomes_the_counter_baseline() {
    let lab =
        Lab::start("  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n    meter: water\n", "").await;
    let p = &lab.probe;
    let round = |value: &str| {
        p.publish("watermeter/connection", "connected");
        p.publish("watermeter/main/value", value);
        p.publish("watermeter/main/timestamp", "2025-03-22T16:18:58+0100");
        p.publish("watermeter/status", "Flow finished");
    };
    let water = ("device", "water");
    eventually("the negative reading rejected", async || {
        round("-1");
        let n = counter(&lab, "hlbridge_readings_rejected_total", &[water, ("reason", "out_of_range")]).await;
        (n >= 1.0).then_some(())
    })
    .await;
    eventually("a good reading becomes the baseline", async || {
        round("512.3");
        (p.latest("home/water/volume").as_deref() == Some("512.3")).then_some(())
    })
    .await;
    assert!(p.all("home/water/volume").iter().all(|m| m.payload == "512.3"), "-1 was never published");
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_energy_level_from_identical_readings_is_replaced_by_the_next_good_reading() {
    let lab = Lab::start(CHARGER, "").await;
    let p = &lab.probe;
    charger_online(p).await;
    p.publish(&goe_topic("eto"), "527952");
    p.wait_value("home/garage/energy_import", "527.952").await;
    // Three identical garbage registers (in range, so only the guard can judge them) agree with
    // each other and become a new level ...
    for _ in 0..3 {
        p.publish(&goe_topic("eto"), "900000000000");
    }
    p.wait_value("home/garage/energy_import", "900000000").await;
    // ... but go-e sends `eto` only when it changes: the one good reading that follows must win back.
    p.publish(&goe_topic("eto"), "527953");
    p.wait_value("home/garage/energy_import", "527.953").await;
    p.publish(&goe_topic("eto"), "527954");
    p.wait_value("home/garage/energy_import", "527.954").await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_made_up_set_topics_do_not_exhaust_the_quantity_table() {
    let devices = format!("{CHARGER}  printer:\n    adapter: octoprint\n");
    let lab = Lab::start(&devices, "").await;
    let p = &lab.probe;
    charger_online(p).await;
    let tag = crate::common::unique();
    let topic = |i: usize| format!("home/garage/temperature_x{tag}n{i}");
    // In batches smaller than the command subscription's queue, each waited for, so all 5 000 are
    // handled (a full queue would drop some, and a dropped topic proves nothing).
    for batch in 0..100 {
        for i in batch * 50..(batch + 1) * 50 {
            p.publish(&format!("{}/set", topic(i)), "1");
        }
        let last = topic((batch + 1) * 50 - 1);
        let answer = p.wait_for("the batch answered", |m| m.topic == format!("{last}/result")).await;
        assert_eq!(answer.json()["ok"], false, "made-up names are answered as not writable");
    }
    // A heater name no device reported before still resolves and is published.
    let tool = format!("tool{tag}");
    eventually("a new OctoPrint heater published", async || {
        p.publish(&format!("octoPrint/temperature/{tool}"), r#"{"actual": 201.5, "target": 205.0}"#);
        p.latest(&format!("home/printer/temperature_{tool}")).filter(|v| v == "201.5")
    })
    .await;
    assert!(Quantity::lookup(&format!("temperature_x{tag}n4999")).is_none(), "made-up names were not interned");
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_command_topics_and_payloads_are_refused_without_echoing_them() {
    let lab = Lab::start(CHARGER, "").await;
    let p = &lab.probe;
    charger_online(p).await;
    let long_name = "x".repeat(10_000);
    p.publish(&format!("home/garage/{long_name}/set"), "1");
    let result = lab.command("home/garage", "current_limit", &"9".repeat(100 * 1024)).await;
    assert_eq!(result["ok"], false);
    assert!(result["error"].as_str().unwrap().contains("too long"), "{result}");
    assert!(result.to_string().len() < 1024, "the payload is not echoed back");
    // The long name got no `/result` topic (it would be as long as the name).
    assert!(p.all(&format!("home/garage/{long_name}/result")).is_empty());
    assert_eq!(counter(&lab, "hlbridge_mqtt_connections_total", &[]).await, 1.0);
    lab.bridge.shutdown().await;
}

/// Every numeric value in every golden file (the real captures replayed) lies inside the plausible
/// range of its quantity: the ranges reject garbage, never a real device.
#[test]
fn every_value_of_every_golden_capture_is_inside_its_plausible_range() {
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    let adapters = manifest_dir().join("adapters");
    for adapter in std::fs::read_dir(&adapters).unwrap() {
        let dir = adapter.unwrap().path().join("fixtures/golden");
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        for f in files {
            let path = f.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let v: Value = serde_json::from_str(&crate::common::read_file(&path)).unwrap();
            walk(&path, &v, &mut checked);
        }
    }
    for f in FAMILIES.iter().filter(|f| f.kind.is_numeric()) {
        if let Some(n) = checked.get(f.name) {
            assert!(*n > 0);
        }
    }
    assert!(checked.len() >= 20, "too few families seen in the goldens: {checked:?}");
}

fn walk(path: &Path, v: &Value, checked: &mut BTreeMap<&'static str, usize>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if let (Some(leaf), Value::String(s)) = (k.rsplit('/').next().filter(|_| k.contains('/')), v)
                    && let Some(q) = Quantity::lookup(leaf).or_else(|| Quantity::named(leaf))
                    && q.family().kind.is_numeric()
                    && let Ok(n) = s.parse::<f64>()
                {
                    assert!(q.plausible(n), "{}: {k} = {n} is outside {:?}", path.display(), q.def().range);
                    *checked.entry(q.family().name).or_default() += 1;
                }
                walk(path, v, checked);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| walk(path, v, checked)),
        _ => {}
    }
}

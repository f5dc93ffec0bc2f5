//! `/metrics` (OpenMetrics, contract §6), `/healthz`, `/readyz`, and what staleness does to them.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::assert_rfc3339_utc;
use crate::common::{Lab, Sim, eventually, find_samples, http_base, http_get, latest_retained, sample_value, scrape};

const CHARGER: &str = "  garage:\n    adapter: goe\n    serial: \"012345\"\n";
const DEV: (&str, &str) = ("device", "garage");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_openmetrics_with_device_and_health_families() {
    let lab = Lab::start(CHARGER, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    lab.probe.wait_value("home/garage/availability", "online").await;
    let (body, samples) = eventually("the charger's values are scraped", async || {
        let (body, samples) = scrape(&lab.bridge).await;
        let ready = ["hlbridge_power_watts", "hlbridge_energy_import_kilowatt_hours", "hlbridge_charger_state_info"]
            .iter()
            .all(|n| !find_samples(&samples, n, &[DEV]).is_empty());
        ready.then_some((body, samples))
    })
    .await;

    let got = http_get(&format!("{}/metrics", http_base(&lab.bridge))).await;
    assert_eq!(got.content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics ends with `# EOF`: {}", &body[body.len().saturating_sub(200)..]);

    // Device values: unit-suffixed families, device/adapter/kind labels, phase as a label.
    assert!(
        body.contains(r#"hlbridge_power_watts{device="garage",adapter="goe",kind="ev_charger",phase="l1"} "#),
        "{body}"
    );
    assert!(body.contains("# TYPE hlbridge_power_watts gauge"), "{body}");
    let power = find_samples(&samples, "hlbridge_power_watts", &[DEV]);
    assert!(
        power.iter().any(|s| !s.labels.iter().any(|(k, _)| k == "phase")),
        "the total power has no phase label: {power:?}"
    );
    let kwh = find_samples(&samples, "hlbridge_energy_import_kilowatt_hours", &[DEV])[0].value;
    assert!((527.9..600.0).contains(&kwh), "energy_import {kwh} kWh (the simulator starts at 527952 Wh)");
    let v = sample_value(&samples, "hlbridge_voltage_volts", &[DEV, ("phase", "l1")]).expect("voltage l1");
    assert!((200.0..250.0).contains(&v), "voltage {v}");
    for pf in find_samples(&samples, "hlbridge_power_factor_ratio", &[DEV]) {
        assert!((0.0..=1.0).contains(&pf.value), "power factor is a ratio: {pf:?}");
    }
    let states = find_samples(&samples, "hlbridge_charger_state_info", &[DEV]);
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].value, 1.0);
    let word = &states[0].labels.iter().find(|(k, _)| k == "value").expect("value label").1;
    assert!(hlbridge::model::CHARGER_STATES.contains(&word.as_str()), "{word}");
    assert!(body.contains(&format!(
        r#"hlbridge_charger_state_info{{device="garage",adapter="goe",kind="ev_charger",value="{word}"}} 1"#
    )));

    // Health families.
    assert_eq!(sample_value(&samples, "hlbridge_device_up", &[DEV]), Some(1.0));
    assert!(body.contains("hlbridge_device_up{device=\"garage\"} 1"), "{body}");
    let received = sample_value(&samples, "hlbridge_messages_received_total", &[DEV]).expect("received");
    assert!(received > 10.0, "messages received {received}");
    assert_eq!(sample_value(&samples, "hlbridge_mqtt_connected", &[]), Some(1.0));
    assert!(sample_value(&samples, "hlbridge_publish_queue_depth", &[]).is_some_and(|d| d >= 0.0));
    assert!(sample_value(&samples, "hlbridge_messages_published_total", &[]).is_some_and(|n| n > 10.0));
    assert!(sample_value(&samples, "hlbridge_unknown_keys_total", &[DEV]).is_some());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let seen = sample_value(&samples, "hlbridge_device_last_seen_timestamp_seconds", &[DEV]).expect("last seen");
    assert!((now - seen).abs() < 60.0, "last seen {seen}, now {now}");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_report_mqtt_and_every_device() {
    let devices = format!("{CHARGER}  silent:\n    adapter: goe\n    serial: \"999999\"\n");
    let lab = Lab::start(&devices, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    lab.probe.wait_value("home/garage/availability", "online").await;
    let base = http_base(&lab.bridge);

    let health = http_get(&format!("{base}/healthz")).await;
    assert_eq!(health.status, 200);

    let ready = eventually("/readyz shows garage online", async || {
        let got = http_get(&format!("{base}/readyz")).await;
        let j: serde_json::Value = serde_json::from_str(&got.body).expect("readyz is JSON");
        (got.status == 200 && j["devices"]["garage"]["availability"] == "online").then_some(j)
    })
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["mqtt"]["connected"], true, "{ready}");
    let garage = &ready["devices"]["garage"];
    assert_eq!(garage["adapter"], "goe");
    assert_eq!(garage["kind"], "ev_charger");
    assert_eq!(garage["topic"], "home/garage");
    assert_rfc3339_utc(garage["last_seen"].as_str().expect("last_seen"));
    assert_eq!(garage["identity"]["serial"], "012345", "{garage}");
    // A configured charger that never said anything: offline, with the reason, no last_seen.
    let silent = &ready["devices"]["silent"];
    assert_eq!(silent["availability"], "offline", "{silent}");
    assert!(silent["reason"].as_str().is_some_and(|r| !r.is_empty()), "{silent}");
    assert!(silent.get("last_seen").is_none(), "{silent}");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_device_goes_offline_and_drops_out_of_the_value_families() {
    let devices = format!("{CHARGER}    freshness: 1s\n");
    let lab = Lab::start(&devices, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    lab.probe.wait_value("home/garage/availability", "online").await;
    eventually("power is scraped", async || {
        let (_, s) = scrape(&lab.bridge).await;
        (!find_samples(&s, "hlbridge_power_watts", &[DEV]).is_empty()).then_some(())
    })
    .await;

    sim.stop().await;
    lab.probe.wait_value("home/garage/availability", "offline").await;
    let (body, samples) = scrape(&lab.bridge).await;
    assert_eq!(sample_value(&samples, "hlbridge_device_up", &[DEV]), Some(0.0), "{body}");
    for family in [
        "hlbridge_power_watts",
        "hlbridge_voltage_volts",
        "hlbridge_energy_import_kilowatt_hours",
        "hlbridge_charger_state_info",
    ] {
        assert!(
            find_samples(&samples, family, &[DEV]).is_empty(),
            "a stale device must not look live in {family}:\n{body}"
        );
    }
    // Last seen stays, so dashboards can show how old the data is.
    assert!(sample_value(&samples, "hlbridge_device_last_seen_timestamp_seconds", &[DEV]).is_some());

    let got = http_get(&format!("{}/readyz", http_base(&lab.bridge))).await;
    let ready: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(ready["devices"]["garage"]["availability"], "offline", "{ready}");
    assert!(ready["devices"]["garage"]["reason"].as_str().unwrap().contains("no reading"), "{ready}");
    // Values keep their last retained state (contract §5).
    assert!(latest_retained(&lab.broker, "home/garage/power").await.is_some());
    assert_eq!(latest_retained(&lab.broker, "home/garage/availability").await.as_deref(), Some("offline"));
    lab.bridge.shutdown().await;
}

//! Home Assistant discovery against a real broker: the device-based discovery message of one device
//! per adapter (fed by the in-process simulators) against golden files, the availability list of every
//! component, controls only with commands, announcing again when Home Assistant comes online, and
//! clearing the discovery of devices removed by a reload or while the bridge was down.

use std::time::Duration;

use serde_json::Value as Json;
use tokio::time::Instant;

use crate::common::{Broker, DEADLINE, Probe, free_port, golden, latest_retained, manifest_dir, start_bridge};

/// A bridge config on `broker` with a fixed client id (discovery node ids derive from it, and each
/// test owns its broker, so goldens stay stable).
fn yaml(broker: &Broker, simulators: &str, devices: &str) -> String {
    format!(
        "mqtt:\n  url: {}\n  client_id: hlbridge\n  reconnect_max: 1s\noutput:\n  prefix: home\n\
         simulators:\n{simulators}devices:\n{devices}",
        broker.url()
    )
}

const CHARGER_SIM: &str = "  sim_charger:\n    type: goe\n    serial: \"024680\"\n    tick: 100ms\n";
const CHARGER: &str =
    "  garage_charger:\n    adapter: goe\n    serial: \"024680\"\n    name: Wallbox\n    commands: true\n";
const PRINTER_SIM: &str =
    "  sim_printer:\n    type: octoprint\n    base_topic: haPrint/\n    tick: 50ms\n    printer_data: true\n";
const PRINTER: &str = "  printer:\n    adapter: octoprint\n    base_topic: haPrint/\n";

fn topic(device: &str) -> String {
    format!("homeassistant/device/hlbridge_{device}/config")
}

/// The discovery message with the bridge version (which changes with every release) masked.
fn normalised(payload: &str) -> Json {
    let mut v: Json =
        serde_json::from_str(payload).unwrap_or_else(|e| panic!("discovery is not JSON ({e}): {payload}"));
    v["o"]["sw"] = "<version>".into();
    if v["dev"].get("sw_version").is_some() && v["dev"]["manufacturer"] == "hlbridge" {
        v["dev"]["sw_version"] = "<version>".into();
    }
    v
}

fn components(v: &Json) -> Vec<String> {
    v["cmps"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// Waits until the device's announcement holds every component and the device block of `expected`
/// (the simulators produce some quantities only in some phases), or, when blessing, until it
/// stopped changing.
async fn settled_announcement(probe: &Probe, device: &str, expected: Option<&Json>) -> Json {
    let t = topic(device);
    let deadline = Instant::now() + DEADLINE * 2;
    let mut last: Option<(String, Instant)> = None;
    loop {
        if let Some(p) = probe.latest(&t).filter(|p| !p.is_empty()) {
            let v = normalised(&p);
            match expected {
                // The device block too: identity (a camera's MAC, a meter's serial) may arrive after
                // the first values, and the announcement follows it.
                Some(exp) if components(exp).iter().all(|c| v["cmps"].get(c).is_some()) && v["dev"] == exp["dev"] => {
                    return v;
                }
                None if last
                    .as_ref()
                    .is_some_and(|(l, since)| *l == p && since.elapsed() >= Duration::from_secs(6)) =>
                {
                    return v;
                }
                None if last.as_ref().is_none_or(|(l, _)| *l != p) => last = Some((p, Instant::now())),
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "{device}: no settled discovery on {t}; latest: {:?}", probe.latest(&t));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn expected(fixture: &str) -> Option<Json> {
    if std::env::var("HLBRIDGE_BLESS").is_ok_and(|v| v == "1") {
        return None;
    }
    let path = manifest_dir().join("tests/it/golden").join(format!("{fixture}.expected.json"));
    std::fs::read_to_string(&path).ok().map(|t| serde_json::from_str(&t).expect("golden file is JSON"))
}

/// Every component waits for both the bridge and its device.
fn assert_availability(device: &str, v: &Json) {
    for (key, c) in v["cmps"].as_object().expect("cmps") {
        assert_eq!(
            c["availability"],
            serde_json::json!([{ "topic": "home/bridge/status" }, { "topic": format!("home/{device}/availability") }]),
            "{device}.{key}"
        );
        assert_eq!(c["availability_mode"], "all", "{device}.{key}");
        assert!(c["unique_id"].as_str().is_some_and(|u| u == format!("hlbridge_{device}_{key}")), "{device}.{key}");
    }
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["cmps", "dev", "o"], "Home Assistant drops a device message with any other top-level key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_is_announced_as_its_golden_discovery_message_with_both_availabilities() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let port = free_port();
    let sims = format!(
        "{CHARGER_SIM}{PRINTER_SIM}  sim_meter:\n    type: whatwatt\n    listen: 127.0.0.1:{port}\n    interval: 200ms\n\
         \x20 sim_camera:\n    type: ai_on_the_edge\n    main_topic: hacam\n    dialect: upstream\n    interval: 1s\n    errors: 0\n"
    );
    let devices = format!(
        "{CHARGER}{PRINTER}  house_meter:\n    adapter: whatwatt\n    url: http://127.0.0.1:{port}\n    heartbeat: 5s\n\
         \x20 water_meter:\n    adapter: ai_on_the_edge\n    main_topic: hacam\n    meter: water\n    interval: 1s\n"
    );
    let bridge = start_bridge(&yaml(&broker, &sims, &devices)).await;
    let dir = manifest_dir().join("tests/it");
    for (device, fixture) in [
        ("garage_charger", "homeassistant/goe"),
        ("printer", "homeassistant/octoprint"),
        ("house_meter", "homeassistant/whatwatt"),
        ("water_meter", "homeassistant/ai_on_the_edge"),
    ] {
        let v = settled_announcement(&probe, device, expected(fixture).as_ref()).await;
        assert_availability(device, &v);
        golden(&dir, fixture, &v);
    }
    let bridge_msg = probe.wait_latest("homeassistant/device/hlbridge/config", |p| !p.is_empty()).await;
    golden(&dir, "homeassistant/bridge", &normalised(&bridge_msg));
    probe.wait_latest("home/bridge/messages_received", |p| p.parse::<u64>().is_ok_and(|n| n > 0)).await;
    probe.wait_value("home/bridge/parse_errors", "0").await;
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_coming_online_gets_every_device_announced_again_and_controls_follow_commands() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let devices = format!("{CHARGER}  charger_ro:\n    adapter: goe\n    serial: \"024680\"\n    commands: false\n");
    let bridge = start_bridge(&yaml(&broker, CHARGER_SIM, &devices)).await;
    let with = normalised(&probe.wait_latest(&topic("garage_charger"), |p| p.contains("current_limit")).await);
    let without = normalised(&probe.wait_latest(&topic("charger_ro"), |p| p.contains("current_limit")).await);
    assert_eq!(with["cmps"]["current_limit"]["p"], "number");
    assert_eq!(with["cmps"]["current_limit"]["command_topic"], "home/garage_charger/current_limit/set");
    assert_eq!(without["cmps"]["current_limit"]["p"], "sensor");
    for v in [&with, &without] {
        for c in v["cmps"].as_object().unwrap().values() {
            let control = c.get("command_topic").is_some();
            assert_eq!(control, v == &with && matches!(c["p"].as_str(), Some("number" | "select")), "{c}");
        }
    }

    let mark = probe.mark();
    probe.publish("homeassistant/status", "online");
    for t in [topic("garage_charger"), topic("charger_ro"), "homeassistant/device/hlbridge/config".into()] {
        let again = probe.next_on(mark, &t).await;
        assert!(!again.payload.is_empty(), "{t} announced again, not cleared");
        // Compared with the last announcement before the birth: the first one may predate some readings.
        let before = probe.all(&t).into_iter().rfind(|m| m.seq < mark).expect("announced before");
        assert_eq!(normalised(&again.payload)["cmps"], normalised(&before.payload)["cmps"], "{t}");
    }
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_by_reload_or_opted_out_has_its_discovery_cleared_and_the_rest_stays() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sims = format!("{CHARGER_SIM}{PRINTER_SIM}");
    let mut bridge = start_bridge(&yaml(&broker, &sims, &format!("{CHARGER}{PRINTER}"))).await;
    probe.wait_latest(&topic("garage_charger"), |p| !p.is_empty()).await;
    probe.wait_latest(&topic("printer"), |p| !p.is_empty()).await;

    let removed = crate::common::load_config(&yaml(&broker, &sims, CHARGER));
    bridge.reload(removed).await.expect("reload");
    probe.wait_value(&topic("printer"), "").await;
    assert_eq!(latest_retained(&broker, &topic("printer")).await, None, "nothing retained for the printer");
    assert!(latest_retained(&broker, &topic("garage_charger")).await.is_some(), "the charger stays");

    let opted_out = crate::common::load_config(&yaml(&broker, &sims, &format!("{CHARGER}    homeassistant: false\n")));
    bridge.reload(opted_out).await.expect("reload");
    probe.wait_value(&topic("garage_charger"), "").await;
    assert_eq!(latest_retained(&broker, &topic("garage_charger")).await, None);
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_removed_while_the_bridge_was_down_is_cleared_at_the_next_start() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sims = format!("{CHARGER_SIM}{PRINTER_SIM}");
    let bridge = start_bridge(&yaml(&broker, &sims, &format!("{CHARGER}{PRINTER}"))).await;
    probe.wait_latest(&topic("printer"), |p| !p.is_empty()).await;
    bridge.shutdown().await;
    // Another bridge's device of the same name must survive: it hangs off another bridge.
    let foreign =
        r#"{"dev":{"identifiers":["hlbridge_guest"],"name":"Guest","via_device":"other"},"o":{"name":"x"},"cmps":{}}"#;
    probe.publish_retained(&topic("guest"), foreign);
    probe.wait_value(&topic("guest"), foreign).await;

    let bridge = start_bridge(&yaml(&broker, &sims, CHARGER)).await;
    probe.wait_value(&topic("printer"), "").await;
    assert_eq!(latest_retained(&broker, &topic("printer")).await, None);
    probe.wait_latest(&topic("garage_charger"), |p| !p.is_empty()).await;
    assert_eq!(latest_retained(&broker, &topic("guest")).await.as_deref(), Some(foreign));
    bridge.shutdown().await;
}

/// More devices than one announcing pass takes (32): every one is announced, the later ones once
/// the broker took the earlier ones, and all of them again when Home Assistant comes online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_devices_are_all_announced_in_paced_passes_and_again_when_home_assistant_restarts() {
    const N: usize = 100;
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let devices: String =
        (0..N).map(|i| format!("  ev{i}:\n    adapter: goe\n    serial: \"{:06}\"\n", 800_000 + i)).collect();
    let bridge = start_bridge(&yaml(&broker, "", &devices)).await;
    probe.wait_value("home/bridge/status", "online").await;
    for i in 0..N {
        probe.publish(&format!("go-eCharger/{:06}/amp", 800_000 + i), "16");
    }
    let announced = |since: usize| {
        let mut seen = std::collections::BTreeSet::new();
        for m in probe.everything().into_iter().skip(since) {
            if let Some(id) =
                m.topic.strip_prefix("homeassistant/device/hlbridge_ev").and_then(|t| t.strip_suffix("/config"))
                && m.payload.contains("current_limit")
            {
                seen.insert(id.to_owned());
            }
        }
        seen.len()
    };
    crate::common::eventually("every device announced", async || (announced(0) == N).then_some(())).await;

    let mark = probe.mark();
    probe.publish("homeassistant/status", "online");
    crate::common::eventually("every device announced again", async || (announced(mark) == N).then_some(())).await;
    bridge.shutdown().await;
}

//! Simulator → broker → bridge → probe: the unified topics, events and commands of contract §3 for
//! every go-e transport and prefix form.

use serde_json::json;

use crate::common::assert_rfc3339_utc;
use crate::common::{Broker, Lab, Probe, Sim, bridge_yaml, http_base, http_get, latest_retained, start_bridge};

const CHARGER: &str = "  garage:\n    adapter: goe\n    serial: \"012345\"\n";
/// The charger with commands on (off by default for a charger) and no rate limit.
const CHARGER_COMMANDS: &str =
    "  garage:\n    adapter: goe\n    serial: \"012345\"\n    commands: true\n    command_rate_limit: 0s\n";

fn number(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("`{s}` is not a plain number"))
}

/// Waits until the device is online with a power reading, and returns the power.
async fn wait_online_with_power(probe: &Probe, base: &str) -> f64 {
    probe.wait_value(&format!("{base}/availability"), "online").await;
    let p = probe.wait_latest(&format!("{base}/power"), |_| true).await;
    number(&p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_charger_with_the_default_prefix_appears_on_unified_topics() {
    let lab = Lab::start(CHARGER, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    let p = &lab.probe;
    let base = "home/garage";
    let power = wait_online_with_power(p, base).await;
    assert!(power >= 0.0, "power {power}");

    let state = p.wait_latest(&format!("{base}/charger_state"), |_| true).await;
    assert!(["idle", "charging", "waiting_for_car", "complete"].contains(&state.as_str()), "charger_state {state}");
    // eto starts at 527952 Wh in the simulator: published in kWh.
    let energy = number(&p.wait_latest(&format!("{base}/energy_import"), |_| true).await);
    assert!((527.9..600.0).contains(&energy), "energy_import {energy} kWh");
    let v = number(&p.wait_latest(&format!("{base}/voltage_l1"), |_| true).await);
    assert!((200.0..250.0).contains(&v), "voltage_l1 {v}");
    let current_limit = p.wait_latest(&format!("{base}/current_limit"), |_| true).await;
    assert_eq!(current_limit, "16");

    let snapshot = p
        .wait_for("a state snapshot with power and charger_state", |m| {
            m.topic == "home/garage/state" && {
                let j: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
                j["values"]["power"].is_number() && j["values"]["charger_state"].is_string()
            }
        })
        .await
        .json();
    assert_rfc3339_utc(snapshot["ts"].as_str().expect("state.ts is a string"));
    assert!(snapshot["values"]["energy_import"].is_number(), "{snapshot}");
    assert!(snapshot["values"]["car_connected"].is_boolean(), "{snapshot}");

    // Identity grows as the burst arrives (`fwv` before `typ`): wait for the whole of it.
    let dev_info = p.wait_latest(&format!("{base}/info"), |v| v.contains("firmware") && v.contains("model")).await;
    let dev_info: serde_json::Value = serde_json::from_str(&dev_info).unwrap();
    assert_eq!(dev_info["serial"], "012345");
    assert_eq!(dev_info["vendor"], "go-e");
    assert_eq!(dev_info["firmware"], "56.9");
    assert_eq!(dev_info["model"], "go-eCharger");

    // What a consumer connecting now gets: retained values and status.
    assert_eq!(latest_retained(&lab.broker, "home/bridge/status").await.as_deref(), Some("online"));
    assert_eq!(latest_retained(&lab.broker, "home/garage/availability").await.as_deref(), Some("online"));
    assert!(latest_retained(&lab.broker, "home/garage/power").await.is_some());
    // Unknown or vendor-only names never appear under the unified prefix.
    assert!(p.all("home/garage/nrg").is_empty() && p.all("home/garage/car").is_empty());

    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_charging_session_emits_events_in_order() {
    let lab = Lab::start(CHARGER, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    let p = &lab.probe;
    let topic = "home/garage/event";
    let first = p.wait_for("car_connected", |m| m.topic == topic && m.payload.contains("\"car_connected\"")).await;
    p.wait_for_since(first.seq, "car_disconnected", |m| m.topic == topic && m.payload.contains("\"car_disconnected\""))
        .await;
    let events: Vec<serde_json::Value> = p
        .all(topic)
        .into_iter()
        .filter(|m| m.seq >= first.seq)
        .map(|m| {
            assert!(!m.retain, "events are not retained");
            m.json()
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names[..4], ["car_connected", "charging_started", "charging_stopped", "car_disconnected"], "{events:?}");
    for e in &events[..4] {
        assert_rfc3339_utc(e["ts"].as_str().unwrap());
        assert!(e["data"].is_object(), "{e}");
    }
    assert_eq!(events[1]["data"]["car"], 2);
    let session = events[2]["data"]["session_energy"].as_f64().expect("session energy in kWh");
    assert!(session > 0.0 && session < 5.0, "session_energy {session} kWh");

    // While charging, the values said so too.
    p.wait_for("charger_state charging", |m| m.topic == "home/garage/charger_state" && m.payload == "charging").await;
    p.wait_for("power above 5 kW", |m| {
        m.topic == "home/garage/power" && m.payload.parse::<f64>().is_ok_and(|w| w > 5000.0)
    })
    .await;
    p.wait_for("car_connected true", |m| m.topic == "home/garage/car_connected" && m.payload == "true").await;
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_round_trip_through_the_charger_and_bad_ones_are_refused() {
    let broker = Broker::start().await;
    // A stale retained order left on the broker: replayed with RETAIN=1 when the bridge
    // subscribes, and refused. (A retained publish to an existing subscription arrives with
    // RETAIN=0, MQTT 3.1.1 §3.3.1.3, so only replays can be told apart.)
    let old = Probe::start(&broker).await;
    old.publish_retained("home/garage/current_limit/set", "6");
    old.wait_for("the stale order is stored", |m| m.topic == "home/garage/current_limit/set").await;
    drop(old);
    let lab = Lab::start_on(broker, CHARGER_COMMANDS, "").await;
    let r = lab.probe.next_on(0, "home/garage/current_limit/result").await.json();
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("retained"), "{r}");
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    let base = "home/garage";
    wait_online_with_power(&lab.probe, base).await;

    let r = lab.command(base, "current_limit", "10").await;
    assert_eq!(r, json!({"ok": true, "value": 10}));
    lab.probe.wait_value(&format!("{base}/current_limit"), "10").await;
    // The charger got the write on its own `<key>/set` topic and answered on `/result`.
    lab.probe
        .wait_for("the charger's amp/result", |m| m.topic == "go-eCharger/012345/amp/result" && m.payload == "success")
        .await;

    let r = lab.command(base, "current_limit", "40").await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("6 to 32"), "{r}");

    let r = lab.command(base, "force_state", "on").await;
    assert_eq!(r, json!({"ok": true, "value": "on"}));
    lab.probe.wait_value(&format!("{base}/force_state"), "on").await;

    let r = lab.command(base, "power", "100").await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("read-only"), "{r}");

    assert_eq!(lab.probe.latest(&format!("{base}/current_limit")).as_deref(), Some("10"));
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_slash_prefix_is_read_and_written_under_the_same_prefix() {
    let lab = Lab::start(CHARGER_COMMANDS, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |o| {
        o.topic_prefix = Some("/go-eCharger/012345/".into());
    })
    .await;
    let base = "home/garage";
    wait_online_with_power(&lab.probe, base).await;
    lab.probe.wait_latest(&format!("{base}/charger_state"), |_| true).await;
    let r = lab.command(base, "current_limit", "12").await;
    assert_eq!(r, json!({"ok": true, "value": 12}));
    lab.probe.wait_value(&format!("{base}/current_limit"), "12").await;
    assert!(!lab.probe.all("/go-eCharger/012345/amp/set").is_empty(), "the write went to the prefix the charger uses");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_topic_prefix_is_read_and_written() {
    let devices = "  wallbox:\n    adapter: goe\n    topic_prefix: wallbox/garage/\n    commands: true\n";
    let lab = Lab::start(devices, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |o| {
        o.serial = "222333".into();
        o.topic_prefix = Some("wallbox/garage/".into());
    })
    .await;
    let base = "home/wallbox";
    wait_online_with_power(&lab.probe, base).await;
    let r = lab.command(base, "phase_mode", "single").await;
    assert_eq!(r, json!({"ok": true, "value": "single"}));
    lab.probe.wait_value(&format!("{base}/phase_mode"), "single").await;
    assert!(!lab.probe.all("wallbox/garage/psm/set").is_empty());
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_prefix_beats_routes_and_routes_beat_the_global_prefix() {
    let devices = "  garage:\n    adapter: goe\n    serial: \"012345\"\n    prefix: lab\n\
                   \x20 routed:\n    adapter: goe\n    serial: \"012345\"\n    commands: false\n";
    let routes = "routes:\n  - match: { kind: ev_charger }\n    prefix: home/energy\n";
    let lab = Lab::start(devices, routes).await;
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    wait_online_with_power(&lab.probe, "lab/garage").await;
    wait_online_with_power(&lab.probe, "home/energy/routed").await;
    // The bridge's own topics stay under output.prefix.
    assert_eq!(lab.probe.latest("home/bridge/status").as_deref(), Some("online"));
    assert!(lab.probe.all("home/garage/power").is_empty());
    assert!(lab.probe.all("home/routed/power").is_empty());
    let ready = http_get(&format!("{}/readyz", http_base(&lab.bridge))).await;
    let ready: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!(ready["devices"]["garage"]["topic"], "lab/garage", "{ready}");
    assert_eq!(ready["devices"]["routed"]["topic"], "home/energy/routed", "{ready}");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_charger_makes_writes_fail_after_the_write_timeout() {
    let lab = Lab::start(CHARGER_COMMANDS, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |o| o.read_only = true).await;
    let base = "home/garage";
    wait_online_with_power(&lab.probe, base).await;
    let r = lab.command(base, "current_limit", "10").await;
    assert_eq!(r["ok"], false, "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("did not answer") && err.contains("mcr"), "{r}");
    // The charger ignored the write: no result from it, the limit is unchanged.
    assert!(lab.probe.all("go-eCharger/012345/amp/result").is_empty());
    assert_eq!(lab.probe.latest(&format!("{base}/current_limit")).as_deref(), Some("16"));
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_transport_polls_the_status_api_and_writes_through_api_set() {
    let broker = Broker::start().await;
    let sim = Sim::start(None, true, |o| {
        o.serial = "098765".into();
        o.http_400_on_unknown_filter = true;
    })
    .await;
    let url = sim.http_url.clone().unwrap();
    let devices = format!(
        "  carport:\n    adapter: goe\n    transport: http\n    url: {url}\n    interval: 500ms\n    commands: true\n    \
         command_rate_limit: 0s\n"
    );
    let lab = Lab::start_on(broker, &devices, "").await;
    let base = "home/carport";
    wait_online_with_power(&lab.probe, base).await;
    let info = lab.probe.wait_latest(&format!("{base}/info"), |v| v.contains("serial")).await;
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["serial"], "098765", "`sse` over HTTP: {info}");
    assert_eq!(info["name"], "go-echarger_098765");
    assert_eq!(info["firmware"], "56.9");

    let r = lab.command(base, "current_limit", "12").await;
    assert_eq!(r, json!({"ok": true, "value": 12}));
    lab.probe.wait_value(&format!("{base}/current_limit"), "12").await;
    let r = lab.command(base, "phase_mode", "two").await;
    assert_eq!(r["ok"], false, "{r}");

    let ready = http_get(&format!("{}/readyz", http_base(&lab.bridge))).await;
    let ready: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!(ready["devices"]["carport"]["details"]["transport"], "http", "{ready}");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

/// `bridge/info` and every device's `availability` must be published on each start, also for
/// devices that have not said anything yet (contract §3, §5). Whether the router sees the first
/// ConnAck is a race (see the report: src/router.rs `Router::run`), so each round starts several
/// bridges at once, under different prefixes, and there are many rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_info_and_availability_are_published_on_every_start() {
    const AT_ONCE: usize = 4;
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let limit = std::time::Duration::from_secs(3);
    for round in 1..=40 {
        let mark = probe.mark();
        let mut starting = tokio::task::JoinSet::new();
        for k in 0..AT_ONCE {
            let yaml = bridge_yaml(&broker, CHARGER, "").replace("  prefix: home\n", &format!("  prefix: b{k}\n"));
            starting.spawn(async move { start_bridge(&yaml).await });
        }
        let bridges = starting.join_all().await;
        for k in 0..AT_ONCE {
            let info = probe
                .wait_for_within(mark, limit, &format!("b{k}/bridge/info in round {round}"), |m| {
                    m.topic == format!("b{k}/bridge/info")
                })
                .await
                .json();
            assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
            assert_eq!(info["devices"][0]["id"], "garage");
            assert_eq!(info["devices"][0]["kind"], "ev_charger");
            assert_eq!(info["devices"][0]["topic"], format!("b{k}/garage"));
            assert_eq!(info["adapters"], json!(["goe"]));
            assert_rfc3339_utc(info["started"].as_str().expect("started"));
            probe
                .wait_for_within(mark, limit, &format!("b{k}/garage/availability in round {round}"), |m| {
                    m.topic == format!("b{k}/garage/availability") && m.payload == "offline"
                })
                .await;
        }
        for b in bridges {
            b.shutdown().await;
        }
    }
}

/// The birth `online` means every device is listened to: the adapters register their
/// subscriptions before the bridge connects, so one non-retained message per device, sent right
/// after `online`, reaches every device (before, the adapters started after the connection and a
/// device's first messages could arrive before its SUBSCRIBE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_hears_its_first_message_sent_right_after_the_bridge_says_online() {
    const N: usize = 60;
    let devices: String =
        (0..N).map(|i| format!("  ev{i}:\n    adapter: goe\n    serial: \"{:06}\"\n", 700_000 + i)).collect();
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let bridge = start_bridge(&bridge_yaml(&broker, &devices, "")).await;
    probe.wait_value("home/bridge/status", "online").await;
    for i in 0..N {
        probe.publish(&format!("go-eCharger/{:06}/amp", 700_000 + i), &format!("{}", 6 + i % 10));
    }
    for i in 0..N {
        probe.wait_value(&format!("home/ev{i}/current_limit"), &format!("{}", 6 + i % 10)).await;
    }
    bridge.shutdown().await;
}

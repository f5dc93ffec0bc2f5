//! Every adapter that takes device data over MQTT (go-e, whatwatt in MQTT mode, AI-on-the-edge,
//! OctoPrint) counts the messages it cannot keep up with on its device's
//! `hlbridge_ingest_dropped_total`: a raw publisher floods the device's topics through a real
//! Mosquitto far faster than the adapter handles them (its `ingest_queue` is 4 messages), and every
//! message sent is then either received or dropped, never silently lost. The bridge keeps running
//! and the device keeps working afterwards. go-e's handler is a fast lane (`src/mqtt/inline.rs`):
//! it takes the flood on the connection task, so its queue drops little or nothing; its messages
//! must add up all the same.

use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{MqttHandle, QoS};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{
    Broker, DEADLINE, Lab, client_settings, eventually, http_base, http_get, received_and_dropped, sample_value,
    scrape, unique,
};

/// Messages per flood: enough to overrun a 4-message queue many times over.
const FLOOD: u64 = 50_000;

/// One MQTT-fed adapter under flood.
struct Case {
    /// Device id.
    id: &'static str,
    /// The device's YAML (indented for `devices:`), with a tiny `ingest_queue`.
    yaml: &'static str,
    /// Topic and payload of flood message `i`.
    message: fn(u64) -> (String, String),
    /// A last message after the flood, the unified topic it lands on and the value it must show.
    after: (&'static str, &'static str, &'static str, &'static str),
    /// Whether the adapter handles messages on a fast lane (then the flood need not overflow its
    /// queue: the lane takes it whenever nothing is queued ahead).
    lane: bool,
}

fn goe() -> Case {
    Case {
        id: "charger",
        yaml: "  charger:\n    adapter: goe\n    serial: \"012345\"\n    ingest_queue: 4\n",
        message: |i| ("go-eCharger/012345/amp".into(), (6 + i % 10).to_string()),
        after: ("go-eCharger/012345/amp", "32", "home/charger/current_limit", "32"),
        lane: true,
    }
}

fn whatwatt() -> Case {
    Case {
        id: "meter",
        yaml: "  meter:\n    adapter: whatwatt\n    transport: mqtt\n    topic: energy/whatwatt/go\n    ingest_queue: 4\n",
        message: |i| {
            let p = format!(
                r#"{{"P_In": {}.{:03}, "P_Out": 0, "E_In": 200.934, "E_Out": 8.965, "Meter": {{"DateTime": "2025-11-17T15:52:50Z"}}, "Sys": {{"Id": "ECC9FF5C7F14"}}}}"#,
                i / 1000 % 10,
                i % 1000
            );
            ("energy/whatwatt/go".into(), p)
        },
        after: (
            "energy/whatwatt/go",
            r#"{"P_In": 4.321, "P_Out": 0, "E_In": 200.935, "E_Out": 8.965, "Meter": {"DateTime": "2025-11-17T15:53:00Z"}, "Sys": {"Id": "ECC9FF5C7F14"}}"#,
            "home/meter/power_import",
            "4321",
        ),
        lane: false,
    }
}

fn ai_on_the_edge() -> Case {
    Case {
        id: "water",
        yaml: "  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n    meter: water\n    ingest_queue: 4\n",
        message: |i| ("watermeter/uptime".into(), (1000 + i).to_string()),
        after: ("watermeter/uptime", "987654", "home/water/uptime", "987654"),
        lane: false,
    }
}

fn octoprint() -> Case {
    Case {
        id: "printer",
        yaml: "  printer:\n    adapter: octoprint\n    ingest_queue: 4\n",
        message: |i| {
            let p = format!(
                r#"{{"actual": {}.{}, "target": 60.0, "_timestamp": {}}}"#,
                20 + i % 40,
                i % 10,
                1_700_000_000 + i
            );
            ("octoPrint/temperature/bed".into(), p)
        },
        after: (
            "octoPrint/temperature/bed",
            r#"{"actual": 77.7, "target": 60.0, "_timestamp": 1800000000}"#,
            "home/printer/temperature_bed",
            "77.7",
        ),
        lane: false,
    }
}

/// A bare publisher (the crate's own client) with room to queue the whole flood.
fn publisher(broker: &Broker, tracker: &TaskTracker, cancel: &CancellationToken) -> MqttHandle {
    let mut s = client_settings(broker, &format!("flood-{}", unique()));
    s.queue_capacity = FLOOD as usize + 1000;
    s.tcp_nodelay = false;
    hlbridge::surface::mqtt::spawn(&s, Metrics::detached(), tracker, cancel.clone()).expect("flood client")
}

/// (received, dropped) of `device` on /metrics.
async fn counts(lab: &Lab, device: &str) -> (u64, u64) {
    received_and_dropped(&scrape(&lab.bridge).await.1, device)
}

async fn flood_is_counted(case: Case) {
    let lab = Lab::start(case.yaml, "").await;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let flood = publisher(&lab.broker, &tracker, &cancel);
    // Until the adapter's subscription is live, a message is lost before the bridge sees it:
    // publish a first message until the device counts it.
    let (topic, payload) = (case.message)(0);
    let mut sent = 0;
    eventually("the adapter receives its first message", async || {
        assert!(flood.publish(topic.clone(), payload.clone(), QoS::AtMostOnce, false));
        sent += 1;
        let (received, dropped) = counts(&lab, case.id).await;
        (received + dropped > 0).then_some(())
    })
    .await;
    // Every first message lands eventually (they were sent before the subscription was known to be live).
    let (before_received, before_dropped) = counts(&lab, case.id).await;
    assert_eq!(before_dropped, 0, "nothing dropped before the flood");
    let before = before_received;

    for i in 1..=FLOOD {
        let (topic, payload) = (case.message)(i);
        assert!(flood.publish(topic, payload, QoS::AtMostOnce, false), "the flood publisher queues everything");
    }
    // Every flood message is either handled (received) or counted as dropped.
    let (received, dropped) = eventually("received + dropped accounts for the whole flood", async || {
        let (r, d) = counts(&lab, case.id).await;
        (r + d >= before + FLOOD).then_some((r, d))
    })
    .await;
    assert!(
        dropped > 0 || case.lane,
        "{}: a 4-message queue under a {FLOOD}-message flood drops (received {received})",
        case.id
    );
    assert!(received > before, "{}: the adapter kept handling messages during the flood", case.id);
    // Exactly the flood, plus the first messages still arriving late at most.
    let extra = received + dropped - before - FLOOD;
    assert!(extra < sent, "{}: {received} received + {dropped} dropped for {FLOOD} + {sent} sent", case.id);
    eprintln!("{}: flood of {FLOOD}: {received} received, {dropped} dropped", case.id);

    // The bridge is still up and the device still works.
    let (topic, payload, unified, value) = case.after;
    assert!(flood.publish(topic, payload, QoS::AtLeastOnce, false));
    lab.probe.wait_value(unified, value).await;
    lab.probe.wait_value(&format!("home/{}/availability", case.id), "online").await;
    assert_eq!(lab.probe.latest("home/bridge/status").as_deref(), Some("online"));
    assert_eq!(http_get(&format!("{}/healthz", http_base(&lab.bridge))).await.status, 200);
    let (_, s) = scrape(&lab.bridge).await;
    assert_eq!(sample_value(&s, "hlbridge_device_up", &[("device", case.id)]), Some(1.0));
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(DEADLINE, tracker.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_go_e_charger_counts_what_it_drops_and_keeps_working() {
    flood_is_counted(goe()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_whatwatt_gateway_over_mqtt_counts_what_it_drops_and_keeps_working() {
    flood_is_counted(whatwatt()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_ai_on_the_edge_camera_counts_what_it_drops_and_keeps_working() {
    flood_is_counted(ai_on_the_edge()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_octoprint_counts_what_it_drops_and_keeps_working() {
    flood_is_counted(octoprint()).await;
}

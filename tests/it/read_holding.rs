//! Under a flood the MQTT connection holds its reads until 4 KiB or 1 ms have gathered
//! (`src/mqtt/coalesce.rs`): fewer wake-ups per message. What holding must never do is lose a
//! message or strand the last ones of a burst: after 1 ms without a read the kernel is told to
//! hand over whatever is waiting. With nothing sent after the burst, its tail would otherwise wait
//! for good (the keep-alive's answer is 2 bytes), and these tests would time out.

use crate::common::{Lab, sample_value, scrape};

const CHARGER: &str = "  garage:\n    adapter: goe\n    serial: \"012345\"\n";
/// Readings in the burst: far more than one read takes, so the connection falls behind.
const READINGS: u64 = 2_000;

/// An `nrg` array whose total power (field 11) is `power`.
pub(crate) fn nrg(power: u64) -> String {
    format!("[230,231,232,0,16.1,16.2,16.3,3700,3710,3720,0,{power},99,98,97,0]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_of_a_burst_arrives_after_the_connection_held_its_reads() {
    let lab = Lab::start(CHARGER, "").await;
    for i in 1..=READINGS {
        lab.probe.publish("go-eCharger/012345/nrg", &nrg(i));
    }
    lab.probe.wait_value("home/garage/power", &READINGS.to_string()).await;

    let (_, samples) = scrape(&lab.bridge).await;
    let holds = sample_value(&samples, "hlbridge_mqtt_read_holds_total", &[]).unwrap_or(0.0);
    assert!(holds >= 1.0, "the burst put the connection behind and its reads were held ({holds} times)");
    let received = sample_value(&samples, "hlbridge_messages_received_total", &[("device", "garage")]);
    let dropped = sample_value(&samples, "hlbridge_ingest_dropped_total", &[("device", "garage")]);
    assert_eq!(
        (received, dropped),
        (Some(READINGS as f64), Some(0.0)),
        "every reading handled once, none dropped (received, dropped)"
    );

    // Quiet again: a single reading is handed over on its own, not held back for company.
    lab.probe.publish("go-eCharger/012345/nrg", &nrg(READINGS + 1));
    lab.probe.wait_value("home/garage/power", &(READINGS + 1).to_string()).await;
}

/// The binary as operators run it (current-thread runtime) with its embedded broker, which hands a
/// flood over faster than Mosquitto does. While behind, messages go through the device's bounded
/// queue; the connection must let the adapter's task drain it instead of reading on until the
/// runtime's budget runs out. Without that yield 75–87 % of such a flood was dropped while the
/// bridge used half a core.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_the_broker_hands_over_faster_than_the_adapter_runs_is_handled_whole() {
    use crate::common::{Broker, Probe, TempDir, client_settings, free_port, http_get, parse_samples, spawn_hlbridge};
    use hlbridge::surface::metrics::Metrics;
    use hlbridge::surface::mqtt::{self, QoS};

    const FLOOD: u64 = 20_000;
    let (port, http) = (free_port(), free_port());
    let dir = TempDir::new("flood");
    let config = dir.write(
        "hlbridge.yaml",
        &format!(
            "mqtt:\n  embedded:\n    listen: 127.0.0.1:{port}\n  client_id: hlbridge-flood\noutput:\n  prefix: flood\n  \
             state_json: false\nhttp:\n  listen: 127.0.0.1:{http}\ndevices:\n  garage:\n    adapter: goe\n    \
             serial: \"012345\"\n    commands: false\n"
        ),
    );
    let _child = spawn_hlbridge(&config);
    let broker = Broker::external(port);
    let probe = Probe::start_filtered(&broker, &["flood/#"]).await;
    probe.wait_value("flood/bridge/status", "online").await;

    // A publisher of its own with room for the whole flood, written in batches as fast as it can.
    let mut settings = client_settings(&broker, "flood-publisher");
    settings.queue_capacity = FLOOD as usize;
    let (tracker, cancel) = (tokio_util::task::TaskTracker::new(), tokio_util::sync::CancellationToken::new());
    let publisher = mqtt::spawn(&settings, Metrics::detached(), &tracker, cancel.clone()).expect("publisher");
    crate::common::eventually("the publisher connects", async || publisher.state().connected.then_some(())).await;
    for seconds in 1..=FLOOD {
        assert!(publisher.publish("go-eCharger/012345/rbt", (seconds * 1000).to_string(), QoS::AtMostOnce, false));
    }
    probe.wait_value("flood/garage/uptime", &FLOOD.to_string()).await;

    let metrics = http_get(&format!("http://127.0.0.1:{http}/metrics")).await;
    let samples = parse_samples(&metrics.body);
    let received = sample_value(&samples, "hlbridge_messages_received_total", &[("device", "garage")]);
    let dropped = sample_value(&samples, "hlbridge_ingest_dropped_total", &[("device", "garage")]);
    assert_eq!(
        (received, dropped),
        (Some(FLOOD as f64), Some(0.0)),
        "every message of the flood handled once, none dropped (received, dropped)"
    );
    cancel.cancel();
}

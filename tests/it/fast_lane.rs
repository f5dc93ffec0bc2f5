//! A go-e charger's messages are handled on the MQTT connection task while its fast lane allows it
//! and through its queue otherwise (`src/mqtt/inline.rs`): an answer on `<key>/result` always goes
//! through the queue, and so does everything behind it until the adapter's task has handled it.
//! Whichever way each message takes, the unified topics must see them in the order the charger
//! sent them, and none may be lost.

use crate::common::{Lab, sample_value, scrape};

const CHARGER: &str = "  garage:\n    adapter: goe\n    serial: \"012345\"\n";
/// Readings per run: many switches between the lane and the queue.
const READINGS: u64 = 1_500;

/// An `nrg` array whose total power (field 11) is `power`.
fn nrg(power: u64) -> String {
    format!("[230,231,232,0,16.1,16.2,16.3,3700,3710,3720,0,{power},99,98,97,0]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chargers_readings_keep_their_order_whether_handled_on_the_spot_or_queued() {
    readings_keep_their_order().await;
}

/// On a current-thread runtime (the bridge's default) what the lane publishes is also written with
/// the read's own flush instead of queued (`src/mqtt/collected.rs`): it must still come after what
/// the adapter's task queued before it.
#[tokio::test(flavor = "current_thread")]
async fn on_one_thread_what_the_lane_publishes_is_written_in_order_with_what_was_queued() {
    readings_keep_their_order().await;
}

async fn readings_keep_their_order() {
    let lab = Lab::start(CHARGER, "").await;
    let mut results = 0;
    for i in 1..=READINGS {
        lab.probe.publish("go-eCharger/012345/nrg", &nrg(i));
        if i % 7 == 0 {
            // No write is waiting for it: the adapter's task reads it and moves on.
            lab.probe.publish("go-eCharger/012345/amp/result", "success");
            results += 1;
        }
    }
    lab.probe.wait_value("home/garage/power", &READINGS.to_string()).await;
    let seen: Vec<u64> = lab
        .probe
        .all("home/garage/power")
        .iter()
        .map(|m| m.payload.parse::<f64>().unwrap_or_else(|_| panic!("power is a number: {}", m.payload)) as u64)
        .collect();
    assert!(seen.len() > 1, "several readings reached the unified topic: {seen:?}");
    let out_of_order: Vec<(u64, u64)> = seen.windows(2).filter(|w| w[1] <= w[0]).map(|w| (w[0], w[1])).collect();
    assert!(out_of_order.is_empty(), "readings in the order sent; out of order: {out_of_order:?}");

    // Every message was handled once, none dropped.
    let (_, samples) = scrape(&lab.bridge).await;
    let received = sample_value(&samples, "hlbridge_messages_received_total", &[("device", "garage")]);
    let dropped = sample_value(&samples, "hlbridge_ingest_dropped_total", &[("device", "garage")]);
    assert_eq!(dropped, Some(0.0), "nothing dropped");
    assert!(received == Some(READINGS as f64), "{received:?} received for {READINGS} readings and {results} answers");
}

//! Under a flood the MQTT connection holds its reads until 4 KiB or 1 ms have gathered
//! (`src/mqtt/coalesce.rs`): fewer wake-ups per message. What holding must never do is lose a
//! message or strand the last ones of a burst: after 1 ms without a read the kernel is told to
//! hand over whatever is waiting. With nothing sent after the burst, its tail would otherwise wait
//! for good (the keep-alive's answer is 2 bytes), and these tests would time out.

use crate::common::{Lab, eventually, latest_retained, received_and_dropped, sample_value, scrape};

const CHARGER: &str = "  garage:\n    adapter: goe\n    serial: \"012345\"\n";
/// Readings in the burst: far more than one read takes, so the connection falls behind.
const READINGS: u64 = 2_000;

/// An `nrg` array whose total power (field 11) is `power`.
pub(crate) fn nrg(power: u64) -> String {
    format!("[230,231,232,0,16.1,16.2,16.3,3700,3710,3720,0,{power},99,98,97,0]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_of_a_burst_arrives_after_the_connection_held_its_reads() {
    tail_arrives_after_held_reads("nrg", nrg, ("power", |i| i.to_string())).await;
}

/// On one thread (the bridge's default) a connection that is behind reads on what is ready before
/// it writes what the adapters published (`read_on` in `src/mqtt/connection.rs`): reads are still
/// held, nothing is lost, and the burst's tail still arrives. One output per message (`rbt`, the
/// uptime), so a turn's reads are not cut short by the batch's cap of publishes.
#[tokio::test(flavor = "current_thread")]
async fn on_one_thread_the_tail_of_a_burst_arrives_after_the_connection_held_its_reads() {
    tail_arrives_after_held_reads("rbt", |i| (i * 1000).to_string(), ("uptime", |i| i.to_string())).await;
}

/// A burst of `READINGS` messages on the charger's `key`, the unified quantity that shows each.
async fn tail_arrives_after_held_reads(key: &str, payload: fn(u64) -> String, shown: (&str, fn(u64) -> String)) {
    let lab = Lab::start(CHARGER, "").await;
    let (input, unified) = (format!("go-eCharger/012345/{key}"), format!("home/garage/{}", shown.0));
    for i in 1..=READINGS {
        lab.probe.publish(&input, &payload(i));
    }
    // Counted by the bridge and retained by the broker, not seen by the probe: a probe that falls
    // behind the burst's outputs under load loses QoS 0 messages at Mosquitto (past its
    // `max_queued_messages`), which says nothing of the bridge.
    let (received, dropped, holds) = eventually("the bridge accounts for the whole burst", async || {
        let (_, samples) = scrape(&lab.bridge).await;
        let (received, dropped) = received_and_dropped(&samples, "garage");
        let holds = sample_value(&samples, "hlbridge_mqtt_read_holds_total", &[]).unwrap_or(0.0);
        (received + dropped >= READINGS).then_some((received, dropped, holds))
    })
    .await;
    assert_eq!((received, dropped), (READINGS, 0), "every reading handled once, none dropped (received, dropped)");
    assert!(holds >= 1.0, "the burst put the connection behind and its reads were held ({holds} times)");
    let last = shown.1(READINGS);
    eventually(&format!("{unified} = {last} is retained"), async || {
        (latest_retained(&lab.broker, &unified).await.as_deref() == Some(last.as_str())).then_some(())
    })
    .await;

    // Quiet again: a single reading is handed over on its own, not held back for company.
    lab.probe.publish(&input, &payload(READINGS + 1));
    lab.probe.wait_value(&unified, &shown.1(READINGS + 1)).await;
}

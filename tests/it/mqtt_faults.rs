//! MQTT-core faults from the reliability issue, each once a reproduced defect: a broker restart with
//! publishes piled up (no re-subscription), packets over the size limit in either direction (a
//! reconnect loop), events published during an outage (lost), a refused subscription (ready anyway).

use std::time::Duration;

use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{Outgoing, QoS};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{
    Broker, Lab, Probe, Reaped, Relay, Sim, TempDir, client_settings, eventually, http_base, http_get, latest_retained,
    mosquitto_path, sample_value, scrape,
};

const CHARGER: &str = "  garage:\n    adapter: goe\n    serial: \"012345\"\n";

async fn counter(lab: &Lab, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, samples) = scrape(&lab.bridge).await;
    sample_value(&samples, name, labels).unwrap_or(0.0)
}

/// Defect 1: while the broker is down the bridge keeps publishing (here: 2 000 events, far more than
/// any request channel holds). After the restart it must subscribe again, say `online`, receive the
/// charger's data and be ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_with_publishes_piled_up_still_resubscribes_and_says_online() {
    let broker = Broker::start().await;
    if !broker.can_restart() {
        eprintln!("note: skipped: the in-process broker cannot be restarted (install mosquitto)");
        return;
    }
    let mut lab = Lab::start_on(broker, CHARGER, "").await;

    lab.broker.stop();
    eventually("the bridge notices the broker is gone", async || (!lab.bridge.mqtt.state().connected).then_some(()))
        .await;
    for i in 0..2_000 {
        lab.bridge.mqtt.publish("home/pileup/event", format!("{i}"), QoS::AtLeastOnce, false);
    }
    let mark = lab.probe.mark();
    lab.broker.restart().await;
    let p = &lab.probe;
    p.wait_for_since(mark, "bridge/status online again", |m| m.topic == "home/bridge/status" && m.payload == "online")
        .await;
    // The charger's topics reach the bridge only through a fresh subscription.
    eventually("a charger value through the restarted broker", async || {
        p.publish("go-eCharger/012345/amp", "13");
        tokio::time::sleep(Duration::from_millis(50)).await;
        (p.latest("home/garage/current_limit").as_deref() == Some("13")).then_some(())
    })
    .await;
    let base = http_base(&lab.bridge);
    let ready = eventually("ready again", async || {
        let r = http_get(&format!("{base}/readyz")).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert!(ready.body.contains("\"subscribed\":true"), "{}", ready.body);
    // Everything published during the outage came out, in order.
    let last = p
        .wait_for_since(mark, "the last piled-up event", |m| m.topic == "home/pileup/event" && m.payload == "1999")
        .await;
    let seen: Vec<u32> = p
        .all("home/pileup/event")
        .iter()
        .filter(|m| m.seq > mark && m.seq <= last.seq)
        .map(|m| m.payload.parse().unwrap())
        .collect();
    // The probe is a client of the restarted broker too: the bridge may reconnect and deliver the
    // first events before the probe's own subscription is back, so the probe sees a tail of them.
    // What it sees must be that tail exactly: in order, none twice, none missing, ending at 1999.
    let first = *seen.first().expect("events after the restart");
    assert_eq!(seen, (first..2_000).collect::<Vec<_>>(), "events published during the outage, in order, none twice");
    assert!(first < 1_000, "the probe resubscribed after half the pile-up had gone ({first}): too late to judge");
    lab.bridge.shutdown().await;
}

/// Defect 2 (outgoing): a publish over the packet limit used to break the connection, and a
/// retained one looped it forever. Now it is dropped and counted, and the connection stays. The same
/// for a topic longer than MQTT's 16-bit length prefix (65 535 bytes) although the packet would fit
/// the limit. Both QoS levels: QoS 0 is encoded by the bridge itself (`mqtt::wire`), QoS 1 by rumqttc.
async fn outgoing_publishes_that_cannot_be_sent_are_dropped_and_counted(qos: QoS) {
    let lab = Lab::start(CHARGER, "").await;
    let mark = lab.probe.mark();
    assert!(lab.bridge.mqtt.publish("home/garage/huge", "x".repeat(300 * 1024), qos, true));
    let long_topic = format!("home/garage/{}", "t".repeat(70_000));
    assert!(lab.bridge.mqtt.publish(long_topic, "small", qos, false));
    assert!(lab.bridge.mqtt.publish("home/garage/after", "small", qos, false));
    lab.probe.wait_for_since(mark, "the publish after the dropped ones", |m| m.topic == "home/garage/after").await;
    assert_eq!(counter(&lab, "hlbridge_mqtt_oversized_total", &[("direction", "out")]).await, 2.0);
    assert_eq!(counter(&lab, "hlbridge_mqtt_connections_total", &[]).await, 1.0, "no reconnect");
    assert!(lab.probe.all("home/garage/huge").is_empty(), "never sent");
    assert!(lab.bridge.mqtt.state().connected);
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_qos1_publish_over_the_packet_limit_or_with_an_unencodable_topic_is_dropped_and_counted() {
    outgoing_publishes_that_cannot_be_sent_are_dropped_and_counted(QoS::AtLeastOnce).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_qos0_publish_over_the_packet_limit_or_with_an_unencodable_topic_is_dropped_and_counted() {
    outgoing_publishes_that_cannot_be_sent_are_dropped_and_counted(QoS::AtMostOnce).await;
}

/// Defect 2 (incoming): a retained device message over the limit used to reset the connection on
/// every re-subscription. Now it is read, dropped and counted, and the device's next message flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_retained_message_over_the_limit_is_counted_not_a_reconnect_loop() {
    let lab = Lab::start(CHARGER, "").await;
    if !lab.broker.can_restart() {
        eprintln!("note: skipped: the in-process broker refuses a 400 KiB publish itself (install mosquitto)");
        return;
    }
    // A stranger's client with a larger limit than the bridge's 256 KiB.
    let mut settings = client_settings(&lab.broker, "stranger");
    settings.max_packet_size = 1024 * 1024;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let stranger = hlbridge::surface::mqtt::spawn(&settings, Metrics::detached(), &tracker, cancel.clone()).unwrap();
    eventually("the stranger connects", async || stranger.state().connected.then_some(())).await;
    let huge = format!("\"{}\"", "y".repeat(400 * 1024));
    assert!(stranger.publish("go-eCharger/012345/fwv", huge, QoS::AtLeastOnce, true));
    eventually("the oversized message is counted", async || {
        (counter(&lab, "hlbridge_mqtt_oversized_total", &[("direction", "in")]).await >= 1.0).then_some(())
    })
    .await;
    let mark = lab.probe.mark();
    assert!(stranger.publish("go-eCharger/012345/amp", "13", QoS::AtLeastOnce, false));
    lab.probe
        .wait_for_since(mark, "the next charger value", |m| m.topic == "home/garage/current_limit" && m.payload == "13")
        .await;
    assert_eq!(counter(&lab, "hlbridge_mqtt_connections_total", &[]).await, 1.0, "no reconnect");
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    lab.bridge.shutdown().await;
}

/// Outage buffering: events raised while the broker is unreachable are delivered after the
/// reconnect, in order, with their original timestamps; retained state is republished once, latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_raised_during_an_outage_arrive_after_the_reconnect_with_their_original_order() {
    let mut lab = Lab::start(CHARGER, "").await;
    if !lab.broker.can_restart() {
        eprintln!("note: skipped: the in-process broker cannot be restarted (install mosquitto)");
        return;
    }
    lab.broker.stop();
    eventually("the bridge notices the broker is gone", async || (!lab.bridge.mqtt.state().connected).then_some(()))
        .await;
    for (i, v) in ["1", "2", "3"].iter().enumerate() {
        lab.bridge.mqtt.publish("home/garage/event", format!("{{\"n\":{i}}}"), QoS::AtLeastOnce, false);
        lab.bridge.mqtt.publish("home/garage/coalesced", *v, QoS::AtLeastOnce, true);
    }
    let mark = lab.probe.mark();
    lab.broker.restart().await;
    let last = lab
        .probe
        .wait_for_since(mark, "the last event", |m| m.topic == "home/garage/event" && m.payload == "{\"n\":2}")
        .await;
    let events: Vec<String> =
        lab.probe.all("home/garage/event").iter().filter(|m| m.seq > mark).map(|m| m.payload.clone()).collect();
    assert_eq!(events, ["{\"n\":0}", "{\"n\":1}", "{\"n\":2}"]);
    let coalesced: Vec<String> = lab
        .probe
        .all("home/garage/coalesced")
        .iter()
        .filter(|m| m.seq > mark && m.seq <= last.seq)
        .map(|m| m.payload.clone())
        .collect();
    assert_eq!(coalesced, ["3"], "retained state coalesced to the latest value");
    assert_eq!(latest_retained(&lab.broker, "home/garage/coalesced").await.as_deref(), Some("3"));
    lab.bridge.shutdown().await;
}

/// `/readyz` says why it is not ready: here the broker refuses the connection (no anonymous
/// clients), and the answer names the broker's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_the_broker_refused_the_connection_as_not_authorized() {
    let Some(bin) = mosquitto_path() else {
        eprintln!("note: skipped: needs mosquitto to refuse anonymous clients");
        return;
    };
    let dir = TempDir::new("noanon");
    let port = crate::common::free_port();
    let conf = dir.write(
        "mosquitto.conf",
        &format!("listener {port} 127.0.0.1\nallow_anonymous false\npersistence false\nlog_dest none\n"),
    );
    let mut child = Reaped(
        std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto"),
    );
    let broker = Broker::external(port);
    eventually("the broker listens", async || tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()).await;
    let bridge = crate::common::start_bridge(&crate::common::bridge_yaml(&broker, CHARGER, "")).await;
    let base = http_base(&bridge);
    let body = eventually("readyz names the refusal", async || {
        let r = http_get(&format!("{base}/readyz")).await;
        (r.status == 503 && r.body.contains("NotAuthorized")).then_some(r.body)
    })
    .await;
    assert!(body.contains("\"status\":\"not_ready\""), "{body}");
    bridge.shutdown().await;
    let _ = child.kill();
    let _ = child.wait();
}

/// A broker too busy to read, between the bridge and Mosquitto: what the client sends reaches the
/// broker only `delay` later, and when the client goes away, what has not reached the broker yet is
/// dropped and the broker side closed, as a broker's kernel drops unread data when the client
/// resets the connection. Broker → client traffic passes as soon as the proxy gets to it.
async fn slow_broker(broker: &Broker, delay: Duration) -> Relay {
    Relay::start(broker, move |client, target| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else { return };
        let (mut client_rx, mut client_tx) = client.into_split();
        let (chunks, mut due) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
        let gone = CancellationToken::new();
        let client_gone = gone.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                let _ = chunks.send((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
            }
            client_gone.cancel();
        });
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                _ = gone.cancelled() => break,
                next = due.recv() => {
                    let Some((at, bytes)) = next else { break };
                    tokio::select! {
                        // The client went away first: this never reaches the broker.
                        _ = gone.cancelled() => break,
                        _ = tokio::time::sleep_until(at) => {}
                    }
                    if upstream.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                n = upstream.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if client_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
    })
    .await
}

/// Defect 5: with a broker slow to read, the bridge used to close its connection right after
/// handing the offline states to the socket, and they never arrived: devices stayed `online`
/// retained. Shutdown now waits for the broker's acknowledgements (within its budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_gets_every_offline_state_before_the_bridge_lets_go() {
    let broker = Broker::start().await;
    let probe = crate::common::Probe::start(&broker).await;
    let slow = slow_broker(&broker, Duration::from_millis(400)).await;
    let sim = crate::common::Sim::start(Some(&broker), false, |_| {}).await;
    let yaml = format!(
        "mqtt:\n  url: mqtt://127.0.0.1:{}\n  client_id: hlbridge-slow-{}\n\
         output:\n  prefix: home\nhttp:\n  listen: null\ndevices:\n{CHARGER}",
        slow.port,
        crate::common::unique()
    );
    let bridge = crate::common::start_bridge(&yaml).await;
    probe.wait_value("home/garage/availability", "online").await;
    probe.wait_value("home/bridge/status", "online").await;
    bridge.shutdown().await;
    drop(slow);
    assert_eq!(
        latest_retained(&broker, "home/garage/availability").await.as_deref(),
        Some("offline"),
        "the device's offline state reached the broker before the bridge closed its connection"
    );
    assert_eq!(latest_retained(&broker, "home/bridge/status").await.as_deref(), Some("offline"));
    sim.stop().await;
}

/// Defect 6: a broker with persistence (most installs) keeps every retained device message across a
/// restart and replays all of them to the re-subscribing bridge. Readings the bridge handled before
/// the restart, from devices that have gone since, must not bring those devices back `online` nor
/// refresh the time in their state; live data afterwards still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_broker_replays_old_readings_after_a_restart_and_no_gone_device_comes_back_online() {
    let Some(broker) = Broker::start_persistent().await else {
        eprintln!("note: skipped: the in-process broker cannot be restarted (install mosquitto)");
        return;
    };
    let devices = "  garage:\n    adapter: goe\n    serial: \"012345\"\n    freshness: 1s\n  \
                   printer:\n    adapter: octoprint\n";
    let mut lab = Lab::start_on(broker, devices, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    lab.probe.wait_value("home/garage/availability", "online").await;
    lab.probe.wait_latest("home/garage/power", |_| true).await;
    // The plugin's retained status and a retained temperature sample, delivered live to the bridge.
    lab.probe.publish_retained("octoPrint/mqtt", "connected");
    let bed = r#"{"actual": 59.9, "target": 60.0, "_timestamp": 1700000000}"#;
    eventually("the printer online from a live temperature", async || {
        lab.probe.publish_retained("octoPrint/temperature/bed", bed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        (lab.probe.latest("home/printer/availability").as_deref() == Some("online")).then_some(())
    })
    .await;

    // Both devices go away: the charger stops publishing, the plugin's last will says so.
    sim.stop().await;
    lab.probe.publish_retained("octoPrint/mqtt", "disconnected");
    lab.probe.wait_value("home/garage/availability", "offline").await;
    lab.probe.wait_value("home/printer/availability", "offline").await;
    let garage_state = lab.probe.wait_latest("home/garage/state", |_| true).await;
    let garage = [("device", "garage")];
    let printer = [("device", "printer")];
    let received_garage = counter(&lab, "hlbridge_messages_received_total", &garage).await;
    let received_printer = counter(&lab, "hlbridge_messages_received_total", &printer).await;
    // A persistent broker replays one message per retained topic.
    let retained_goe = {
        let mut topics: Vec<String> = lab
            .probe
            .everything()
            .into_iter()
            .filter(|m| m.topic.starts_with("go-eCharger/012345/") && !m.payload.is_empty())
            .map(|m| m.topic)
            .collect();
        topics.sort();
        topics.dedup();
        topics.len() as f64
    };
    assert!(retained_goe > 10.0, "the charger published {retained_goe} retained keys");

    let mark = lab.probe.mark();
    lab.broker.restart_gracefully().await;
    let p = &lab.probe;
    p.wait_for_since(mark, "bridge/status online again", |m| m.topic == "home/bridge/status" && m.payload == "online")
        .await;
    // The probe re-subscribed too and sees the store kept the devices' messages.
    p.wait_for_since(mark, "the charger's retained keys replayed", |m| {
        m.retain && m.topic.starts_with("go-eCharger/012345/")
    })
    .await;
    eventually("every retained device message replayed to the bridge", async || {
        let g = counter(&lab, "hlbridge_messages_received_total", &garage).await;
        let pr = counter(&lab, "hlbridge_messages_received_total", &printer).await;
        (g >= received_garage + retained_goe && pr >= received_printer + 2.0).then_some(())
    })
    .await;
    // Handled, and nothing brought back to life: no `online` since the restart, nor a state
    // stamped by the replay.
    let woke: Vec<_> = p
        .everything()
        .into_iter()
        .filter(|m| m.seq >= mark && m.topic.ends_with("/availability") && m.payload == "online")
        .map(|m| m.topic)
        .collect();
    assert!(woke.is_empty(), "replayed readings brought {woke:?} back online");
    assert_eq!(counter(&lab, "hlbridge_device_up", &garage).await, 0.0);
    assert_eq!(counter(&lab, "hlbridge_device_up", &printer).await, 0.0);
    let state_now: serde_json::Value =
        serde_json::from_str(&latest_retained(&lab.broker, "home/garage/state").await.unwrap()).unwrap();
    let state_before: serde_json::Value = serde_json::from_str(&garage_state).unwrap();
    assert_eq!(state_now["ts"], state_before["ts"], "the replay moved the reading time");

    // Live data from the charger still brings it back.
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    p.wait_for_since(mark, "the charger online from live data", |m| {
        m.topic == "home/garage/availability" && m.payload == "online"
    })
    .await;
    sim.stop().await;
}

/// One hand-over bigger than a flush takes (256 publishes) and than the QoS 1 in-flight window (5
/// here) goes out whole: in order, each publish once, none left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_flush_and_the_qos1_window_arrives_whole_in_order_and_once() {
    let broker = Broker::start().await;
    let probe = Probe::start_filtered(&broker, &["batch/#"]).await;
    let mut settings = client_settings(&broker, "batcher");
    settings.inflight = 5;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let client = hlbridge::surface::mqtt::spawn(&settings, Metrics::detached(), &tracker, cancel.clone()).unwrap();
    eventually("the client connects", async || client.state().connected.then_some(())).await;
    let batch: Vec<Outgoing> = (0..600)
        .map(|i| Outgoing {
            topic: format!("batch/{}", i % 7).into(),
            payload: i.to_string().into_bytes().into(),
            qos: if i % 2 == 0 { QoS::AtLeastOnce } else { QoS::AtMostOnce },
            retain: false,
        })
        .collect();
    client.publish_batch(batch);
    let got = eventually("all 600 publishes arrived", async || {
        // The probe's own readiness message is in its log too.
        let got: Vec<_> = probe.everything().into_iter().filter(|m| m.topic.starts_with("batch/")).collect();
        (got.len() >= 600).then_some(got)
    })
    .await;
    let order: Vec<u32> = got.iter().map(|m| m.payload.parse().unwrap()).collect();
    assert_eq!(order, (0..600).collect::<Vec<u32>>(), "in order, each once");
    for m in &got {
        assert_eq!(m.topic, format!("batch/{}", m.payload.parse::<u32>().unwrap() % 7));
    }
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

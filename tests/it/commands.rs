//! The shared command path end to end (simulators → broker → bridge → probe): every command of the
//! charger and the camera, and every refusal — range, enum, state, rate limit, allow-list, commands
//! off, read-only, unknown device, retained (stored, and published live: refused over the MQTT 5
//! command link, run once and cleared where the broker speaks MQTT 3.1.1 only) — plus duplicate
//! delivery and timeouts when the device stays silent. Runs against Mosquitto or the embedded broker
//! (`HLBRIDGE_TEST_BROKER=embedded`); the embedded broker and a 3.1.1-only proxy are also tested
//! explicitly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hlbridge::surface::simulate::ai_on_the_edge::{AiOnTheEdgeSimOptions, CameraSpec, RoundKind, SimDialect};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::common::{
    Broker, ConnectPacket, Lab, Probe, Relay, Sim, bridge_yaml, client_settings, eventually, http_base, http_get,
    latest_retained, load_config, start_bridge,
};

/// A charger that takes commands, without a rate limit (tests of other rules send several).
const CHARGER: &str =
    "  garage:\n    adapter: goe\n    serial: \"012345\"\n    commands: true\n    command_rate_limit: 0s\n";
const BASE: &str = "home/garage";

fn error_of(r: &serde_json::Value) -> &str {
    assert_eq!(r["ok"], false, "expected a refusal: {r}");
    r["error"].as_str().unwrap_or_else(|| panic!("no error text: {r}"))
}

async fn charger_lab(devices: &str) -> (Lab, Sim) {
    charger_lab_on(Broker::start().await, devices).await
}

async fn charger_lab_on(broker: Broker, devices: &str) -> (Lab, Sim) {
    let lab = Lab::start_on(broker, devices, "").await;
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    lab.probe.wait_value(&format!("{BASE}/availability"), "online").await;
    lab.probe.wait_latest(&format!("{BASE}/current_limit"), |_| true).await;
    (lab, sim)
}

/// How many writes reached the charger's own `<key>/set` topic.
fn charger_writes(probe: &Probe, key: &str) -> usize {
    probe.all(&format!("go-eCharger/012345/{key}/set")).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_runs_and_its_id_is_echoed() {
    let (lab, sim) = charger_lab(CHARGER).await;
    let r = lab.command(BASE, "current_limit", r#"{"value": 11, "id": "req-1"}"#).await;
    assert_eq!(r, json!({"ok": true, "value": 11, "id": "req-1"}));
    lab.probe.wait_value(&format!("{BASE}/current_limit"), "11").await;
    let r = lab.command(BASE, "force_state", r#"{"value": "maybe", "id": 42}"#).await;
    assert!(error_of(&r).contains("maybe"), "{r}");
    assert_eq!(r["id"], "42", "the id comes back with refusals too");
    let r = lab.command(BASE, "phase_mode", r#"{"value": "three", "colour": "red"}"#).await;
    assert!(error_of(&r).contains("`colour`"), "{r}");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_reason_for_range_enum_read_only_and_unknown_names() {
    let (lab, sim) = charger_lab(CHARGER).await;
    assert!(error_of(&lab.command(BASE, "current_limit", "40").await).contains("6 to 32"));
    assert!(error_of(&lab.command(BASE, "force_state", "sideways").await).contains("sideways"));
    let e = lab.command(BASE, "power", "100").await;
    assert!(error_of(&e).contains("read-only") && error_of(&e).contains("current_limit"), "{e}");
    assert!(error_of(&lab.command(BASE, "warp_drive", "1").await).contains("not a command"));
    assert_eq!(charger_writes(&lab.probe, "amp"), 0, "nothing refused reached the charger");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charger_without_commands_key_refuses_them_and_says_how_to_allow() {
    let (lab, sim) = charger_lab("  garage:\n    adapter: goe\n    serial: \"012345\"\n").await;
    let r = lab.command(BASE, "current_limit", "10").await;
    let e = error_of(&r);
    assert!(e.contains("commands are off") && e.contains("commands: true"), "{r}");
    assert_eq!(charger_writes(&lab.probe, "amp"), 0);
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allow_list_admits_its_commands_and_refuses_the_others() {
    let devices = "  garage:\n    adapter: goe\n    serial: \"012345\"\n    commands: [current_limit]\n";
    let (lab, sim) = charger_lab(devices).await;
    assert_eq!(lab.command(BASE, "current_limit", "9").await, json!({"ok": true, "value": 9}));
    let r = lab.command(BASE, "force_state", "on").await;
    assert!(error_of(&r).contains("devices.garage.commands ([current_limit])"), "{r}");
    assert_eq!(charger_writes(&lab.probe, "frc"), 0);
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_refuses_a_second_command_within_the_window() {
    let devices =
        "  garage:\n    adapter: goe\n    serial: \"012345\"\n    commands: true\n    command_rate_limit: 1h\n";
    let (lab, sim) = charger_lab(devices).await;
    assert_eq!(lab.command(BASE, "current_limit", "8").await["ok"], true);
    let r = lab.command(BASE, "current_limit", "9").await;
    assert!(error_of(&r).contains("rate limited") && error_of(&r).contains("command_rate_limit"), "{r}");
    // Each command has its own budget.
    assert_eq!(lab.command(BASE, "force_state", "off").await["ok"], true);
    assert_eq!(charger_writes(&lab.probe, "amp"), 1);
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_id_that_does_not_exist_gets_an_answer() {
    let (lab, sim) = charger_lab(CHARGER).await;
    let r = lab.command("home", "nosuch/current_limit", "10").await;
    assert!(error_of(&r).contains("no device `nosuch` under `home`"), "{r}");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_delivered_twice_runs_once_and_is_answered_once() {
    let (lab, sim) = charger_lab(CHARGER).await;
    let p = &lab.probe;
    let mark = p.mark();
    // What the bridge sees when the broker sends one copy per matching subscription (rumqttd):
    // the same message back to back.
    for body in [r#"{"value": 12, "id": "twice"}"#, r#"{"value": 12, "id": "twice"}"#, "on", "on"] {
        let q = if body == "on" { "force_state" } else { "current_limit" };
        p.publish(&format!("{BASE}/{q}/set"), body);
    }
    p.wait_for_since(mark, "the current_limit result", |m| m.topic == format!("{BASE}/current_limit/result")).await;
    p.wait_for_since(mark, "the force_state result", |m| m.topic == format!("{BASE}/force_state/result")).await;
    // Commands are handled in order: once the next one is answered, no second answer can follow.
    let fence = lab.command(BASE, "phase_mode", "auto").await;
    assert_eq!(fence["ok"], true, "{fence}");
    let results = |q: &str| p.all(&format!("{BASE}/{q}/result")).into_iter().filter(|m| m.seq >= mark).count();
    assert_eq!((results("current_limit"), results("force_state")), (1, 1));
    assert_eq!((charger_writes(p, "amp"), charger_writes(p, "frc")), (1, 1), "each command wrote the charger once");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_of_the_bridge_do_not_run_a_command_twice() {
    // A camera whose MainTopic is the bridge's prefix makes the bridge subscribe `home/#` besides
    // `home/+/+/set`: the embedded broker (rumqttd) then delivers every command twice.
    let devices = format!("{CHARGER}  odd_camera:\n    adapter: ai_on_the_edge\n    main_topic: home\n");
    let (lab, sim) = charger_lab(&devices).await;
    let r = lab.command(BASE, "current_limit", "13").await;
    assert_eq!(r, json!({"ok": true, "value": 13}));
    let fence = lab.command(BASE, "phase_mode", "auto").await;
    assert_eq!(fence["ok"], true, "{fence}");
    assert_eq!(lab.probe.all(&format!("{BASE}/current_limit/result")).len(), 1);
    assert_eq!(charger_writes(&lab.probe, "amp"), 1);
    sim.stop().await;
    lab.bridge.shutdown().await;
}

/// Where the bridge's command filters travel once it decided (`/readyz` `mqtt.commands`), waiting
/// for `/readyz` to say ready: the MQTT 5 link with retain-as-published, or the main connection
/// because the broker speaks MQTT 3.1.1 only.
async fn command_carrier(lab: &Lab) -> String {
    let url = format!("{}/readyz", http_base(&lab.bridge));
    eventually("the bridge is ready and decided where its commands travel", async || {
        let got = http_get(&url).await;
        let body: serde_json::Value = serde_json::from_str(&got.body).ok()?;
        let carrier = body["mqtt"]["commands"].as_str()?.to_owned();
        let decided = matches!(carrier.as_str(), MQTT5 | FALLBACK);
        (got.status == 200 && decided).then_some(carrier)
    })
    .await
}

const MQTT5: &str = "mqtt5_retain_as_published";
const FALLBACK: &str = "mqtt311_broker_main_connection";

/// Waits until `/readyz` is ready with `want` as the carrier of the command filters.
async fn wait_carrier(lab: &Lab, want: &str) {
    let url = format!("{}/readyz", http_base(&lab.bridge));
    eventually(&format!("the commands travel as {want}"), async || {
        let got = http_get(&url).await;
        let body: serde_json::Value = serde_json::from_str(&got.body).ok()?;
        (got.status == 200 && body["mqtt"]["commands"] == want).then_some(())
    })
    .await;
}

/// A stale retained order on `broker`, stored before any bridge runs.
async fn store_retained_order(broker: &Broker, payload: &str) {
    let old = Probe::start(broker).await;
    old.publish_retained(&format!("{BASE}/current_limit/set"), payload);
    old.wait_for("the stale order is stored", |m| m.topic == format!("{BASE}/current_limit/set")).await;
}

/// The clear of `<BASE>/current_limit/set` after `mark` is on the wire and the broker stores nothing.
async fn assert_cleared(lab: &Lab, mark: usize) {
    lab.probe
        .wait_for_since(mark, "the clear", |m| m.topic == format!("{BASE}/current_limit/set") && m.payload.is_empty())
        .await;
    assert_eq!(latest_retained(&lab.broker, &format!("{BASE}/current_limit/set")).await, None);
}

/// Answers to `current_limit` commands so far, after a fence command (commands are handled in
/// order, so once the fence is answered no earlier answer can still come).
async fn current_limit_answers(lab: &Lab) -> usize {
    let fence = lab.command(BASE, "phase_mode", "auto").await;
    assert_eq!(fence["ok"], true, "{fence}");
    lab.probe.all(&format!("{BASE}/current_limit/result")).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_command_stored_before_the_bridge_starts_is_refused_cleared_and_never_runs() {
    let broker = Broker::start().await;
    // Replayed when the bridge subscribes (on whichever connection), refused, cleared.
    store_retained_order(&broker, "6").await;
    let lab = Lab::start_on(broker, CHARGER, "").await;
    let r = lab.probe.next_on(0, &format!("{BASE}/current_limit/result")).await.json();
    assert!(error_of(&r).contains("retained"), "{r}");
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    lab.probe.wait_value(&format!("{BASE}/availability"), "online").await;
    // The clear is on the wire: an empty retained payload, which the bridge ignores (no answer).
    assert_cleared(&lab, 0).await;
    // Once the link has the filters too, the order is gone: no second replay, no second answer.
    command_carrier(&lab).await;
    assert_eq!(current_limit_answers(&lab).await, 1, "one answer, and none for the clear");
    assert_eq!(charger_writes(&lab.probe, "amp"), 0, "the stale order never reached the charger");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_command_published_while_the_bridge_listens_is_refused_never_reaches_the_charger_and_is_cleared() {
    let (lab, sim) = charger_lab(CHARGER).await;
    let carrier = command_carrier(&lab).await;
    let mark = lab.probe.mark();
    lab.probe.publish_retained(&format!("{BASE}/current_limit/set"), r#"{"value": 7, "id": "live-r"}"#);
    let r = lab.probe.next_on(mark, &format!("{BASE}/current_limit/result")).await.json();
    if lab.broker.can_restart() {
        // Mosquitto speaks MQTT 5: retain-as-published shows the flag on the live path too.
        assert_eq!(carrier, MQTT5);
        assert!(error_of(&r).contains("retained"), "{r}");
        assert_eq!(r["id"], "live-r", "{r}");
        assert_cleared(&lab, mark).await;
        assert_eq!(current_limit_answers(&lab).await, 1);
        assert_eq!(charger_writes(&lab.probe, "amp"), 0, "the retained order never reached the charger");
        // The topic is free again: a plain command runs.
        let r = lab.command(BASE, "current_limit", "8").await;
        assert_eq!(r, json!({"ok": true, "value": 8}));
        assert_eq!(charger_writes(&lab.probe, "amp"), 1);
    } else {
        // The embedded broker speaks MQTT 3.1.1 only: the old behaviour, it runs once and is cleared.
        assert_eq!(carrier, FALLBACK);
        assert_eq!(r, json!({"ok": true, "value": 7, "id": "live-r"}));
        assert_cleared(&lab, mark).await;
        assert_eq!(current_limit_answers(&lab).await, 1);
        assert_eq!(charger_writes(&lab.probe, "amp"), 1);
    }
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_command_runs_exactly_once_once_the_command_link_carries_it() {
    let (lab, sim) = charger_lab(CHARGER).await;
    let carrier = command_carrier(&lab).await;
    assert_eq!(carrier, if lab.broker.can_restart() { MQTT5 } else { FALLBACK });
    let r = lab.command(BASE, "current_limit", "14").await;
    assert_eq!(r, json!({"ok": true, "value": 14}));
    assert_eq!(current_limit_answers(&lab).await, 1);
    assert_eq!(charger_writes(&lab.probe, "amp"), 1);
    // Taken commands are cleared (their retain flag aside): nothing stays on the broker.
    assert_eq!(latest_retained(&lab.broker, &format!("{BASE}/current_limit/set")).await, None);
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_the_command_link_takes_the_commands_back_and_a_live_retained_one_is_refused() {
    let broker = Broker::start().await;
    if !broker.can_restart() {
        eprintln!("note: skipped: the in-process broker cannot be restarted (install mosquitto)");
        return;
    }
    let (mut lab, sim) = charger_lab_on(broker, CHARGER).await;
    assert_eq!(command_carrier(&lab).await, MQTT5);
    lab.broker.stop();
    eventually("the bridge notices the broker is gone", async || (!lab.bridge.mqtt.state().connected).then_some(()))
        .await;
    lab.broker.restart().await;
    // Both connections were cut; the main one carries the commands until the link is back.
    assert_eq!(command_carrier(&lab).await, MQTT5);
    lab.probe.wait_value(&format!("{BASE}/availability"), "online").await;
    let mark = lab.probe.mark();
    lab.probe.publish_retained(&format!("{BASE}/current_limit/set"), "7");
    let r = lab.probe.next_on(mark, &format!("{BASE}/current_limit/result")).await.json();
    assert!(error_of(&r).contains("retained"), "{r}");
    assert_cleared(&lab, mark).await;
    let r = lab.command(BASE, "current_limit", "12").await;
    assert_eq!(r, json!({"ok": true, "value": 12}));
    assert_eq!(current_limit_answers(&lab).await, 2);
    assert_eq!(charger_writes(&lab.probe, "amp"), 1, "only the plain command reached the charger");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

/// Starts the in-process broker (rumqttd) on a free port, whatever `HLBRIDGE_TEST_BROKER` says.
#[cfg(feature = "embedded-broker")]
async fn embedded_broker() -> Broker {
    for _ in 0..10 {
        let port = crate::common::free_port();
        if hlbridge::surface::broker::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await.is_ok() {
            return Broker::external(port);
        }
    }
    panic!("the in-process broker did not start on a free port after 10 tries");
}

#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_embedded_broker_a_stored_retained_command_is_refused_and_a_plain_one_runs_once() {
    let broker = embedded_broker().await;
    store_retained_order(&broker, "6").await;
    let lab = Lab::start_on(broker, CHARGER, "").await;
    let r = lab.probe.next_on(0, &format!("{BASE}/current_limit/result")).await.json();
    assert!(error_of(&r).contains("retained"), "{r}");
    assert_cleared(&lab, 0).await;
    // rumqttd's MQTT 3.1.1 listener closes an MQTT 5 CONNECT: the fallback.
    assert_eq!(command_carrier(&lab).await, FALLBACK);
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    lab.probe.wait_value(&format!("{BASE}/availability"), "online").await;
    let r = lab.command(BASE, "current_limit", "15").await;
    assert_eq!(r, json!({"ok": true, "value": 15}));
    assert_eq!(current_limit_answers(&lab).await, 2, "the refusal and this one");
    assert_eq!(charger_writes(&lab.probe, "amp"), 1, "rumqttd's copies per subscription ran it once");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

/// A broker that speaks MQTT 3.1.1 only, in front of a real one: a CONNECT asking for protocol
/// level 5 gets the connection closed (as 3.1.1 brokers do), anything else is passed through.
struct Mqtt311Only {
    /// Where clients connect.
    relay: Relay,
    /// MQTT 5 CONNECTs turned away.
    refused: Arc<AtomicUsize>,
}

impl Mqtt311Only {
    async fn start(broker: &Broker) -> Mqtt311Only {
        let refused = Arc::new(AtomicUsize::new(0));
        let count = refused.clone();
        let relay = Relay::start(broker, move |mut client, target| {
            let count = count.clone();
            async move {
                let Some(connect) = ConnectPacket::read(&mut client).await else { return };
                if connect.level() == 5 {
                    count.fetch_add(1, Ordering::SeqCst);
                    return; // dropping the socket closes it, no CONNACK
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else { return };
                if upstream.write_all(&connect.bytes).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            }
        })
        .await;
        Mqtt311Only { relay, refused }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_onto_a_broker_speaking_only_mqtt_3_1_1_falls_back_and_a_reload_back_takes_mqtt_5_again() {
    let broker = Broker::start().await;
    if !broker.can_restart() {
        eprintln!("note: skipped: the in-process broker speaks MQTT 3.1.1 only (install mosquitto)");
        return;
    }
    let yaml = bridge_yaml(&broker, CHARGER, "");
    let probe = Probe::start(&broker).await;
    let bridge = start_bridge(&yaml).await;
    probe.wait_value("home/bridge/status", "online").await;
    let mut lab = Lab { broker, probe, bridge };
    let sim = Sim::start(Some(&lab.broker), false, |_| {}).await;
    lab.probe.wait_value(&format!("{BASE}/availability"), "online").await;
    wait_carrier(&lab, MQTT5).await;

    let proxy = Mqtt311Only::start(&lab.broker).await;
    let via_proxy = yaml.replace(&lab.broker.url(), &format!("mqtt://127.0.0.1:{}", proxy.relay.port));
    let plan = lab.bridge.reload(load_config(&via_proxy)).await.expect("reload applies");
    assert!(plan.mqtt, "{plan}");
    wait_carrier(&lab, FALLBACK).await;
    assert!(proxy.refused.load(Ordering::SeqCst) >= 1, "the link asked the new broker for MQTT 5");
    let r = lab.command(BASE, "current_limit", "9").await;
    assert_eq!(r, json!({"ok": true, "value": 9}));

    let plan = lab.bridge.reload(load_config(&yaml)).await.expect("reload applies");
    assert!(plan.mqtt, "{plan}");
    wait_carrier(&lab, MQTT5).await;
    let mark = lab.probe.mark();
    lab.probe.publish_retained(&format!("{BASE}/current_limit/set"), "10");
    let r = lab.probe.next_on(mark, &format!("{BASE}/current_limit/result")).await.json();
    assert!(error_of(&r).contains("retained"), "{r}");
    assert_cleared(&lab, mark).await;
    let answers = current_limit_answers(&lab).await;
    let all: Vec<String> = lab
        .probe
        .all(&format!("{BASE}/current_limit/result"))
        .into_iter()
        .map(|m| format!("#{} {}", m.seq, m.payload))
        .collect();
    let sets: Vec<String> = lab
        .probe
        .all(&format!("{BASE}/current_limit/set"))
        .into_iter()
        .map(|m| format!("#{} {:?} r={}", m.seq, m.payload, m.retain))
        .collect();
    assert_eq!(answers, 2, "{all:?} {sets:?} charger writes {}", charger_writes(&lab.probe, "amp"));
    assert_eq!(charger_writes(&lab.probe, "amp"), 1, "only the plain command reached the charger");
    sim.stop().await;
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_speaking_only_mqtt_3_1_1_gets_commands_over_the_main_connection_and_the_bridge_becomes_ready() {
    let real = Broker::start().await;
    let proxy = Mqtt311Only::start(&real).await;
    let (lab, sim) = charger_lab_on(Broker::external(proxy.relay.port), CHARGER).await;
    assert_eq!(command_carrier(&lab).await, FALLBACK);
    assert!(proxy.refused.load(Ordering::SeqCst) >= 1, "the bridge asked for MQTT 5 and was turned away");
    let r = lab.command(BASE, "current_limit", "9").await;
    assert_eq!(r, json!({"ok": true, "value": 9}));
    // Live retained: unflagged in MQTT 3.1.1, so it runs once, and is cleared so it never comes back.
    let mark = lab.probe.mark();
    lab.probe.publish_retained(&format!("{BASE}/current_limit/set"), "10");
    let r = lab.probe.next_on(mark, &format!("{BASE}/current_limit/result")).await.json();
    assert_eq!(r, json!({"ok": true, "value": 10}));
    assert_cleared(&lab, mark).await;
    assert_eq!(current_limit_answers(&lab).await, 2);
    assert_eq!(charger_writes(&lab.probe, "amp"), 2, "each command wrote the charger once");
    sim.stop().await;
    lab.bridge.shutdown().await;
    drop(real);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_charger_times_out() {
    let lab = Lab::start(CHARGER, "").await;
    let r = lab.command(BASE, "current_limit", "10").await;
    assert!(error_of(&r).contains("did not answer"), "{r}");
    lab.bridge.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The camera
// ---------------------------------------------------------------------------------------------

const WATER: &str = "home/water";

/// A camera that runs one round when it connects and then only when told (interval 1 h).
async fn camera(
    broker: &Broker,
    dialect: SimDialect,
) -> (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    crate::common::init();
    let spec = CameraSpec {
        dialect,
        interval: Duration::from_secs(3600),
        pattern: vec![RoundKind::Good],
        error_rate: 0.0,
        ..Default::default()
    };
    let id = format!("aioted-cmd-{}", crate::common::unique());
    let opts = AiOnTheEdgeSimOptions {
        broker: client_settings(broker, &id),
        camera: spec,
        wait_for_bridge: Default::default(),
    };
    let cancel = CancellationToken::new();
    let join = tokio::spawn(hlbridge::surface::simulate::ai_on_the_edge::run(opts, cancel.clone()));
    (cancel, join)
}

const CAMERA: &str = "  water:\n    adapter: ai_on_the_edge\n    main_topic: watermeter\n    meter: water\n    \
                      interval: 1h\n    command_rate_limit: 0s\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_now_starts_a_round_and_is_answered_with_its_reading() {
    let lab = Lab::start(CAMERA, "").await;
    let (cancel, _join) = camera(&lab.broker, SimDialect::Upstream).await;
    lab.probe.wait_value(&format!("{WATER}/availability"), "online").await;
    let first: f64 = lab.probe.wait_latest(&format!("{WATER}/volume"), |_| true).await.parse().unwrap();
    let r = lab.command(WATER, "read_now", r#"{"id": "r1"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], "r1");
    let read = r["value"].as_f64().expect("the round's reading");
    assert!(read >= first, "{first} → {read}");
    let flow_start = lab.probe.all("watermeter/ctrl/flow_start");
    assert_eq!(flow_start.len(), 1);
    assert!(!flow_start[0].retain, "never retained");
    cancel.cancel();
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_value_is_sent_for_the_sequence_and_confirmed_by_the_next_round() {
    let lab = Lab::start(CAMERA, "").await;
    let (cancel, _join) = camera(&lab.broker, SimDialect::Upstream).await;
    lab.probe.wait_value(&format!("{WATER}/availability"), "online").await;
    let current: f64 = lab.probe.wait_latest(&format!("{WATER}/volume"), |_| true).await.parse().unwrap();
    let mark = lab.probe.mark();
    lab.probe.publish(&format!("{WATER}/previous_value/set"), &format!("{current}"));
    let sent = lab.probe.next_on(mark, "watermeter/ctrl/set_prevalue").await;
    assert!(!sent.retain, "never retained");
    assert_eq!(sent.json(), json!({"numbersname": "main", "value": current}));
    // No answer before a round: the firmware acknowledges nothing. The next round confirms it.
    let r = lab.command(WATER, "read_now", "1").await;
    assert_eq!(r["ok"], true, "{r}");
    let r = lab.probe.next_on(mark, &format!("{WATER}/previous_value/result")).await.json();
    assert_eq!(r, json!({"ok": true, "value": current}));

    let r = lab.command(WATER, "previous_value", "-3").await;
    assert!(error_of(&r).contains("≥ 0"), "{r}");
    let r = lab.command(WATER, "previous_value", "lots").await;
    assert!(error_of(&r).contains("lots"), "{r}");
    cancel.cancel();
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fork_camera_gets_cycle_start_and_set_fallbackvalue() {
    let lab = Lab::start(CAMERA, "").await;
    let (cancel, _join) = camera(&lab.broker, SimDialect::Clusters).await;
    lab.probe.wait_value(&format!("{WATER}/availability"), "online").await;
    let current: f64 = lab.probe.wait_latest(&format!("{WATER}/volume"), |_| true).await.parse().unwrap();
    let mark = lab.probe.mark();
    lab.probe.publish(&format!("{WATER}/previous_value/set"), &format!("{current}"));
    let sent = lab.probe.next_on(mark, "watermeter/process/ctrl/set_fallbackvalue").await.json();
    assert_eq!(sent, json!({"sequence": "main", "value": current}));
    let r = lab.command(WATER, "read_now", "1").await;
    assert!(r["value"].as_f64().is_some(), "{r}");
    assert_eq!(lab.probe.all("watermeter/process/ctrl/cycle_start").len(), 1);
    let r = lab.probe.next_on(mark, &format!("{WATER}/previous_value/result")).await.json();
    assert_eq!(r, json!({"ok": true, "value": current}));
    cancel.cancel();
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_camera_refuses_commands_and_a_silent_one_times_out() {
    let devices = format!("{CAMERA}    command_timeout: 1s\n");
    let lab = Lab::start(&devices, "").await;
    let r = lab.command(WATER, "read_now", "1").await;
    assert!(error_of(&r).contains("offline"), "{r}");
    assert!(lab.probe.all("watermeter/ctrl/flow_start").is_empty(), "nothing sent to a camera that is away");
    // A camera that published a round and then went quiet (its automatic flow stopped).
    lab.probe.publish(
        "watermeter/main/json",
        r#"{"value": "512.3", "raw": "0512.3000", "pre": "512.3", "error": "no error", "rate": "0.0", "timestamp": "2025-03-22T16:18:58+0100"}"#,
    );
    lab.probe.wait_value(&format!("{WATER}/availability"), "online").await;
    // An `id` makes a repeat of the same body a new command, however soon it follows.
    let r = lab.command(WATER, "read_now", r#"{"id": "again"}"#).await;
    assert!(error_of(&r).contains("timeout"), "{r}");
    assert_eq!(lab.probe.all("watermeter/ctrl/flow_start").len(), 1);
    lab.bridge.shutdown().await;
}

/// The bridge says `online` only once it listens for commands: a command sent the moment
/// `bridge/status` says `online` gets its answer. Several starts, because the order used to depend
/// on which task ran first (about one start in six lost the command).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_the_moment_the_bridge_says_online_is_answered() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    // A camera that is away: its commands are refused at once (no device round trip to wait for).
    let yaml = crate::common::bridge_yaml(&broker, CAMERA, "");
    for start in 0..8 {
        let mark = probe.mark();
        let bridge = crate::common::start_bridge(&yaml).await;
        probe
            .wait_for_since(mark, "bridge/status online", |m| m.topic == "home/bridge/status" && m.payload == "online")
            .await;
        probe.publish(&format!("{WATER}/read_now/set"), &format!(r#"{{"id": "start-{start}"}}"#));
        let r = probe
            .wait_for_within(mark, Duration::from_secs(3), &format!("the answer after start {start}"), |m| {
                m.topic == format!("{WATER}/read_now/result")
            })
            .await
            .json();
        assert_eq!(r["id"], format!("start-{start}"), "{r}");
        assert!(error_of(&r).contains("offline"), "{r}");
        bridge.shutdown().await;
    }
}

//! OctoPrint adapter: the plugin samples of `shared/samples/octoprint` (copied to
//! `adapters/octoprint/fixtures/`) and the capture of a real OctoPrint 1.11.8 + OctoPrint-MQTT
//! 0.8.16 run (`scripts/real-octoprint.sh`) replayed through the real adapter and router to golden files,
//! then the simulated plugin → Mosquitto → bridge → probe for the print lifecycle, stale retained
//! events, out-of-order temperatures, availability and several printers.
//!
//! Golden files live in `adapters/octoprint/fixtures/golden/`; `HLBRIDGE_BLESS=1` rewrites them.
//! Timestamps taken from the plugin's `_timestamp` stay in the golden files (they prove it is used);
//! only arrival-time stamps (payloads before plugin 0.6) become `<now>`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hlbridge::surface::adapters::octoprint::{Ingest, OctoprintConfig};
use hlbridge::surface::config::AdapterKind;
use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{CaptureRx, Message, QoS};
use hlbridge::surface::router::{DeviceSpec, Router, RouterSettings};
use hlbridge::surface::simulate::octoprint::{OctoprintSimOptions, PhaseTicks, SimOutcome};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{
    Broker, DEADLINE, Lab, Probe, client_settings, eventually, find_samples, http_base, http_get, latest_retained,
    manifest_dir, parse_samples, sample_value, scrape, unique,
};

fn fixtures() -> PathBuf {
    manifest_dir().join("adapters/octoprint/fixtures")
}

fn read_fixture(name: &str) -> String {
    crate::common::read_file(&fixtures().join(name))
}

// ---------------------------------------------------------------------------------------------
// Golden replays
// ---------------------------------------------------------------------------------------------

/// Router + one OctoPrint ingest per (device id, base topic), publishing into a capture.
struct Replay {
    router: Arc<Router>,
    captured: CaptureRx,
    registry: Registry,
    ingests: Vec<(String, Ingest)>,
    /// When the replay began: a `ts` from then on is arrival time, an earlier one came from the
    /// plugin's `_timestamp` (a capture is always older than its replay).
    started: time::OffsetDateTime,
}

impl Replay {
    fn new(devices: &[(&str, &str)]) -> Replay {
        let (mqtt, captured) = hlbridge::surface::mqtt::detached(100_000);
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let specs = devices
            .iter()
            .map(|(id, _)| DeviceSpec {
                id: (*id).to_owned(),
                adapter: AdapterKind::Octoprint,
                prefix: "home".into(),
                freshness: Duration::from_secs(60),
                min_interval: None,
                heartbeat: None,
                commands: false,
                offered: &[],
            })
            .collect();
        let settings = RouterSettings {
            bridge_prefix: "home".into(),
            quantity_topics: true,
            state_json: true,
            qos: QoS::AtMostOnce,
        };
        let router = Router::new(settings, specs, mqtt, metrics);
        let ingests = devices
            .iter()
            .map(|(id, base)| {
                let cfg = OctoprintConfig { base_topic: (*base).to_owned(), ..Default::default() };
                ((*id).to_owned(), Ingest::new(&cfg, router.handle(id).expect("device handle")))
            })
            .collect();
        Replay { router, captured, registry, ingests, started: time::OffsetDateTime::now_utc() }
    }

    /// Feeds one message to every device (each ignores topics outside its base, like its
    /// subscription would).
    fn feed(&mut self, topic: &str, payload: &str, retain: bool) {
        let msg = Message { topic: topic.to_owned(), payload: Bytes::copy_from_slice(payload.as_bytes()), retain };
        for (_, ingest) in &mut self.ingests {
            ingest.message(&msg);
        }
    }

    /// Reduces what was published: final retained value per topic, events in order, counters.
    fn finish(self, fixture: &str) -> Value {
        self.finish_with_history(fixture, &[]).0
    }

    /// [`Replay::finish`], plus every payload published on the topics of `history`, in order.
    fn finish_with_history(mut self, fixture: &str, history: &[&str]) -> (Value, BTreeMap<String, Vec<String>>) {
        for (id, _) in &self.ingests {
            self.router.handle(id).unwrap().flush();
        }
        let mut topics = BTreeMap::new();
        let mut events = Vec::new();
        let mut seen: BTreeMap<String, Vec<String>> = history.iter().map(|t| ((*t).to_owned(), Vec::new())).collect();
        let since = self.started;
        for c in self.captured.drain() {
            if let Some(h) = seen.get_mut(&c.topic) {
                h.push(c.payload.clone());
            }
            let event = c.topic.ends_with("/event");
            assert_eq!(c.retain, !event, "retain flag of {}", c.topic);
            if event {
                assert!(c.qos1, "events are QoS 1");
                let mut e = normalise(&c.payload, since);
                e.as_object_mut().unwrap().insert("topic".into(), c.topic.clone().into());
                events.push(e);
            } else {
                topics.insert(c.topic.clone(), normalise(&c.payload, since));
            }
        }
        let samples = parse_samples(&hlbridge::surface::metrics::render(&self.registry));
        let mut counters = serde_json::Map::new();
        for (id, _) in &self.ingests {
            let by_reason = |name: &str| {
                let mut m = serde_json::Map::new();
                // Reasons start at 0 (health series exist from start-up); the golden lists what happened.
                for s in find_samples(&samples, name, &[("device", id)]).into_iter().filter(|s| s.value > 0.0) {
                    let reason = s.labels.iter().find(|(k, _)| k == "reason").unwrap();
                    m.insert(reason.1.clone(), json!(s.value));
                }
                Value::Object(m)
            };
            counters.insert(
                id.clone(),
                json!({
                    "messages_received": sample_value(&samples, "hlbridge_messages_received_total", &[("device", id)]),
                    "unknown_keys": sample_value(&samples, "hlbridge_unknown_keys_total", &[("device", id)]),
                    "parse_errors": by_reason("hlbridge_parse_errors_total"),
                    "readings_rejected": by_reason("hlbridge_readings_rejected_total"),
                }),
            );
        }
        (json!({ "fixture": fixture, "topics": topics, "events": events, "counters": counters }), seen)
    }
}

/// JSON payloads become objects; a `ts` from the replay's start on is arrival time (`<now>`),
/// older ones came from `_timestamp` and are kept.
fn normalise(payload: &str, since: time::OffsetDateTime) -> Value {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(mut m)) => {
            if let Some(ts) = m.get("ts").and_then(Value::as_str) {
                crate::common::assert_rfc3339_utc(ts);
                let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).unwrap();
                // Stamps carry milliseconds; the start has nanoseconds.
                if t >= since - time::Duration::seconds(1) {
                    m.insert("ts".into(), "<now>".into());
                }
            }
            Value::Object(m)
        }
        _ => Value::String(payload.to_owned()),
    }
}

/// Compares with (or, under `HLBRIDGE_BLESS=1`, writes) the golden file.
fn golden(fixture: &str, actual: &Value) {
    crate::common::golden(&fixtures(), fixture, actual);
}

/// `topic<TAB>payload` lines of a sample file.
fn tsv_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, p)| (t.trim().to_owned(), p.trim_end_matches(['\r', '\n']).to_owned()))
        .collect()
}

fn replay(fixture: &str, devices: &[(&str, &str)], retain: bool) -> Value {
    let lines = tsv_lines(&read_fixture(fixture));
    assert!(!lines.is_empty(), "{fixture} has no lines");
    let mut r = Replay::new(devices);
    for (topic, payload) in &lines {
        r.feed(topic, payload, retain);
    }
    r.finish(fixture)
}

fn topic<'a>(out: &'a Value, t: &str) -> &'a Value {
    out["topics"].get(t).unwrap_or_else(|| panic!("{t} was not published; topics: {:?}", out["topics"]))
}

fn text<'a>(out: &'a Value, t: &str) -> &'a str {
    topic(out, t).as_str().unwrap_or_else(|| panic!("{t} is plain text"))
}

fn event_names(out: &Value) -> Vec<&str> {
    out["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect()
}

fn find_event<'a>(out: &'a Value, name: &str) -> &'a Value {
    out["events"].as_array().unwrap().iter().find(|e| e["event"] == name).unwrap_or_else(|| panic!("no {name} event"))
}

#[test]
fn readme_0_8_16_examples_replay_to_their_golden_topics() {
    let out =
        replay("readme_0.8.16_examples.tsv", &[("printer", "octoPrint/"), ("printer_lower", "octoprint/")], false);
    golden("readme_0.8.16_examples.tsv", &out);
    let d = "home/printer";
    assert_eq!(text(&out, &format!("{d}/temperature_tool0")), "65.3");
    assert_eq!(text(&out, &format!("{d}/temperature_tool0_target")), "210");
    assert_eq!(text(&out, &format!("{d}/temperature_bed")), "42.1");
    assert_eq!(text(&out, &format!("{d}/temperature_bed_target")), "65");
    // The last progress message carries printer_data: completion 0.0085 % → 0.01, 273 s left.
    assert_eq!(text(&out, &format!("{d}/print_progress")), "0.01");
    assert_eq!(text(&out, &format!("{d}/print_file")), "Stringing_Test.gco");
    assert_eq!(text(&out, &format!("{d}/print_time_left")), "273");
    assert_eq!(text(&out, &format!("{d}/print_time_elapsed")), "0");
    assert_eq!(text(&out, &format!("{d}/printer_state")), "printing");
    assert_eq!(text(&out, &format!("{d}/slicing_progress")), "42");
    assert_eq!(text(&out, &format!("{d}/availability")), "online");
    // The state JSON is stamped with the newest source time (2018-05-07), not arrival time.
    assert_eq!(topic(&out, &format!("{d}/state"))["ts"], "2018-05-07T01:00:24.000Z");
    let started = find_event(&out, "print_started");
    assert_eq!(started["data"]["file"], "case_bp_3.6.v1.0.gco", "pre-1.4 payload: file from `filename`");
    assert_eq!(started["ts"], "2018-01-29T01:50:29.000Z", "event time is the plugin's _timestamp");
    assert_eq!(find_event(&out, "client_opened")["data"]["remote_address"], "127.0.0.1");
    // The lowercase base (README metadata examples) is a different printer.
    assert_eq!(event_names(&out).iter().filter(|e| **e == "print_metadata").count(), 3);
    let meta = out["events"].as_array().unwrap().iter().filter(|e| e["event"] == "print_metadata");
    assert!(meta.clone().all(|e| e["topic"] == "home/printer_lower/event"));
    assert!(meta.clone().any(|e| e["data"]["value"] == 0.2));
    assert_eq!(text(&out, "home/printer_lower/printer_state"), "unknown");
    assert!(out["topics"].get("home/printer_lower/temperature_tool0").is_none(), "octoPrint/ data stays on printer");
    assert_eq!(out["counters"]["printer"]["parse_errors"], json!({}));
}

#[test]
fn readme_0_5_examples_without_timestamps_replay_to_their_golden_topics() {
    let out = replay("readme_0.5_examples_2017.tsv", &[("printer", "octoprint/")], false);
    golden("readme_0.5_examples_2017.tsv", &out);
    let d = "home/printer";
    assert_eq!(text(&out, &format!("{d}/temperature_tool0")), "65.3");
    assert_eq!(text(&out, &format!("{d}/temperature_bed_target")), "65");
    assert_eq!(text(&out, &format!("{d}/print_progress")), "23");
    assert_eq!(text(&out, &format!("{d}/print_file")), "test.gco");
    assert_eq!(text(&out, &format!("{d}/printer_state")), "printing", "PrintStarted, then live progress");
    assert_eq!(event_names(&out), ["client_opened", "connected", "print_started"]);
    assert_eq!(find_event(&out, "connected")["data"], json!({"baudrate": 250000, "port": "VIRTUAL"}));
    assert_eq!(find_event(&out, "print_started")["ts"], "<now>", "no _timestamp in 2017: arrival time");
}

#[test]
fn synthesized_plugin_messages_replay_to_their_golden_topics() {
    let out = replay("synthesized_from_source_NOT_CAPTURED.tsv", &[("printer", "octoPrint/")], false);
    golden("synthesized_from_source_NOT_CAPTURED.tsv", &out);
    let d = "home/printer";
    assert_eq!(text(&out, &format!("{d}/temperature_tool0")), "214.87");
    assert_eq!(text(&out, &format!("{d}/temperature_chamber")), "31.2");
    assert!(out["topics"].get(format!("{d}/temperature_chamber_target")).is_none(), "target null → not published");
    assert_eq!(text(&out, &format!("{d}/temperature_p")), "35.2", "custom key P (PINDA)");
    assert_eq!(text(&out, &format!("{d}/print_file")), "folder/benchy.gcode");
    assert_eq!(text(&out, &format!("{d}/print_progress")), "100", "PrintDone completes the job");
    assert_eq!(text(&out, &format!("{d}/printer_state")), "operational");
    // Line 2 is the plugin's `disconnected` and no `connected` follows: data of the same second
    // does not prove a new connection (a shutdown still sends its Shutdown event), so the printer
    // never comes online.
    assert!(out["topics"].get(format!("{d}/availability")).is_none(), "{:?}", out["topics"]);
    let names = event_names(&out);
    for n in [
        "printer_state_changed",
        "disconnected",
        "connected",
        "print_started",
        "print_paused",
        "print_done",
        "print_failed",
        "z_change",
        "dwelling",
        "paused_for_user",
        "print_metadata",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let failed = find_event(&out, "print_failed");
    assert_eq!(failed["data"]["progress"], 42.31, "reason=error progress fraction → percent");
    assert_eq!(failed["data"]["reason"], "error");
    let done = find_event(&out, "print_done");
    assert_eq!(done["data"]["duration"], 3605.12);
    assert_eq!(done["data"]["file"], "folder/benchy.gcode");
    let paused = find_event(&out, "print_paused");
    assert_eq!(paused["data"]["progress"], 37);
    assert_eq!(paused["data"]["position"]["z"], 4.2);
    let last = out["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["data"]["connector"], "serial", "OctoPrint 2.0 connector passed through");
    assert_eq!(last["data"]["state"], "operational");
    assert_eq!(out["counters"]["printer"]["messages_received"], 23.0);
    assert_eq!(out["counters"]["printer"]["unknown_keys"], 0.0);
}

#[test]
fn retained_replay_of_the_readme_examples_publishes_no_event() {
    let out = replay("readme_0.8.16_examples.tsv", &[("printer", "octoPrint/")], true);
    assert!(event_names(&out).is_empty(), "{:?}", out["events"]);
    let d = "home/printer";
    // Retained values are the printer's last known values, stamped with their source time...
    assert_eq!(text(&out, &format!("{d}/temperature_tool0")), "65.3");
    // ...but prove nothing about now: the device is not online.
    assert!(out["topics"].get(format!("{d}/availability")).is_none());
    // printer_data on the retained progress tells the state at start-up.
    assert_eq!(text(&out, &format!("{d}/printer_state")), "printing");
    let rejected = &out["counters"]["printer"]["readings_rejected"];
    assert_eq!(rejected["retained_event"], 3.0, "ClientOpened, Connected, PrintStarted: {rejected}");
}

#[test]
fn companion_plugin_command_topics_are_not_printer_data() {
    for fixture in ["commands_homeassistant_plugin_readme.tsv", "commands_mqttsubscribe_issues.tsv"] {
        let out = replay(fixture, &[("printer", "octoPrint/")], false);
        golden(fixture, &out);
        assert!(out["topics"].as_object().unwrap().is_empty(), "{fixture}: {:?}", out["topics"]);
        assert!(event_names(&out).is_empty());
        assert_eq!(out["counters"]["printer"]["messages_received"], 0.0);
    }
}

#[test]
fn every_event_of_the_events_table_is_published_in_snake_case() {
    let table = read_fixture("events.tsv");
    let mut r = Replay::new(&[("printer", "octoPrint/")]);
    let mut count = 0;
    for line in table.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let event = line
            .split('\t')
            .next()
            .unwrap()
            .replace("${ScriptName}", "AfterPrintDone")
            .replace("<identifier>_<name>", "psucontrol_psu_state_changed");
        r.feed(
            &format!("octoPrint/event/{event}"),
            &format!(r#"{{"_event": "{event}", "_timestamp": 1700000000}}"#),
            false,
        );
        count += 1;
    }
    let out = r.finish("events.tsv");
    golden("events.tsv", &out);
    let names = event_names(&out);
    assert_eq!(names.len(), count, "one unified event per row");
    assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    for n in [
        "e_stop",
        "z_change",
        "dwelling",
        "gcode_script_after_print_done_running",
        "plugin_psucontrol_psu_state_changed",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    assert_eq!(out["counters"]["printer"]["unknown_keys"], 0.0, "every documented event is known");
}

/// The capture of `scripts/real-octoprint.sh`: a real OctoPrint 1.11.8 + OctoPrint-MQTT 0.8.16
/// (virtual printer) and the live hlbridge, everything on the broker in arrival order.
const REAL_CAPTURE: &str = "real_octoprint_1.11.8_mqtt_0.8.16.tsv";

/// One line of a capture: `seconds<TAB>retain 0|1<TAB>topic<TAB>payload` (payload verbatim).
struct CaptureLine {
    retain: bool,
    topic: String,
    payload: String,
}

fn capture_lines(text: &str) -> Vec<CaptureLine> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(4, '\t');
            let (_t, retain, topic) = (f.next(), f.next(), f.next());
            let retain = match retain {
                Some("0") => false,
                Some("1") => true,
                other => panic!("bad retain flag {other:?} in {l}"),
            };
            CaptureLine { retain, topic: topic.expect("topic").to_owned(), payload: f.next().unwrap_or("").to_owned() }
        })
        .collect()
}

#[test]
fn a_real_octoprint_run_replays_to_its_golden_topics_and_to_what_the_live_bridge_published() {
    let lines = capture_lines(&read_fixture(REAL_CAPTURE));
    let d = "home/printer";
    let mut r = Replay::new(&[("printer", "octoPrint/")]);
    let mut plugin = 0;
    for c in lines.iter().filter(|c| c.topic.starts_with("octoPrint/")) {
        r.feed(&c.topic, &c.payload, c.retain);
        plugin += 1;
    }
    assert!(plugin > 100, "the capture holds the plugin's traffic");
    let watched = [
        format!("{d}/availability"),
        format!("{d}/printer_state"),
        format!("{d}/print_time_left"),
        format!("{d}/print_time_elapsed"),
    ];
    let (out, history) = r.finish_with_history(REAL_CAPTURE, &watched.each_ref().map(String::as_str));
    golden(REAL_CAPTURE, &out);

    // What the live bridge published in the same run, per topic in order.
    let live = |topic: &str| -> Vec<String> {
        lines.iter().filter(|c| c.topic == topic).map(|c| c.payload.clone()).collect::<Vec<_>>()
    };
    // The replay ends where the live bridge ended, on every value topic of the printer.
    let mut compared = 0;
    for (topic, value) in out["topics"].as_object().unwrap() {
        let quantity = topic.strip_prefix("home/printer/").unwrap();
        if ["state", "info"].contains(&quantity) {
            continue;
        }
        let last = live(topic).pop().unwrap_or_else(|| panic!("the live bridge never published {topic}"));
        assert_eq!(value.as_str(), Some(last.as_str()), "{topic}: replay vs live");
        compared += 1;
    }
    assert!(compared >= 10, "{compared} topics compared");
    // Printer connected, disconnected and connected again through hlbridge, then OctoPrint shut
    // down: offline once at the end (the live bridge also said offline at its own start).
    let availability = &history[&watched[0]];
    assert_eq!(availability, &["online", "offline", "online", "offline"]);
    assert_eq!(live(&watched[0])[1..], availability[..], "live and replay agree");
    let states = &history[&watched[1]];
    assert_eq!(states, &live(&watched[1]), "printer_state, replay vs live");
    let order = [
        "offline",
        "operational",
        "printing",
        "pausing",
        "paused",
        "printing",
        "cancelling",
        "operational",
        "offline",
        "operational",
        "printing",
        "finishing",
        "operational",
    ];
    let mut it = states.iter();
    for want in order {
        assert!(it.any(|s| s == want), "{want} missing or out of order in {states:?}");
    }
    assert_eq!(states.last().map(String::as_str), Some("unknown"), "after the shutdown: {states:?}");
    // Issue #11 item 10 (a): after the cancel the null times delete print_time_left (an empty
    // payload); the print that follows sets it again, 0 once it is done.
    // (At start-up OctoPrint's reset has null times too: deleted once before anything was set.)
    let left = &history[&watched[2]];
    let set = left.iter().position(|v| !v.is_empty()).unwrap_or_else(|| panic!("never set: {left:?}"));
    assert!(left[set..].iter().any(String::is_empty), "deleted after the cancel: {left:?}");
    assert_eq!(left.last().map(String::as_str), Some("0"), "{left:?}");
    assert_eq!(text(&out, &format!("{d}/print_progress")), "100");
    assert_eq!(text(&out, &format!("{d}/print_file")), "hlbridge-real-done.gcode");
    // PrintDone's fractional `time` and the next tick's whole `printTime` are one value, published
    // once (the live bridge of the capture, before that fix, published `8` twice).
    let elapsed = &history[&watched[3]];
    assert!(elapsed.windows(2).all(|w| w[0] != w[1]), "a value published twice in a row: {elapsed:?}");
    assert_eq!(text(&out, &format!("{d}/print_time_elapsed")), "8");
    let names = event_names(&out);
    for n in [
        "connected",
        "print_started",
        "print_paused",
        "print_resumed",
        "print_cancelled",
        "print_failed",
        "print_done",
        "shutdown",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(find_event(&out, "print_failed")["data"]["reason"], "cancelled");
    assert_eq!(out["counters"]["printer"]["parse_errors"], json!({}));
    assert_eq!(out["counters"]["printer"]["messages_received"], json!(plugin as f64));
}

// ---------------------------------------------------------------------------------------------
// End to end: simulator / probe → Mosquitto → bridge → probe
// ---------------------------------------------------------------------------------------------

/// The simulated OctoPrint running in-process.
struct OctoSim {
    cancel: CancellationToken,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl OctoSim {
    /// A 20 ms tick: a whole cycle in about 1.5 s.
    fn start(broker: &Broker, tweak: impl FnOnce(&mut OctoprintSimOptions)) -> OctoSim {
        let mut opts = OctoprintSimOptions::new(client_settings(broker, &format!("octoprint-sim-{}", unique())));
        opts.tick = Duration::from_millis(20);
        tweak(&mut opts);
        let cancel = CancellationToken::new();
        let join = tokio::spawn(hlbridge::surface::simulate::octoprint::run(opts, cancel.clone()));
        OctoSim { cancel, join: Some(join) }
    }

    /// Stops like OctoPrint does (Shutdown event, `disconnected`) and waits for it.
    async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(j) = self.join.take() {
            let r = tokio::time::timeout(DEADLINE, j).await.expect("simulator stops in time").expect("no panic");
            r.expect("simulator ends without error");
        }
    }
}

impl Drop for OctoSim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

const PRINTER: &str = "  printer:\n    adapter: octoprint\n";

/// Waits until the unified event `name` was published for `base` and returns its JSON.
async fn wait_event(p: &Probe, base: &str, name: &str) -> Value {
    let topic = format!("{base}/event");
    p.wait_for(&format!("event {name} on {topic}"), |m| m.topic == topic && m.json()["event"] == name).await.json()
}

/// Waits until `quantity` of `base` was published as `value` (at any time, not only the latest).
async fn wait_seen(p: &Probe, base: &str, quantity: &str, value: &str) {
    let topic = format!("{base}/{quantity}");
    p.wait_for(&format!("{topic} = {value}"), |m| m.topic == topic && m.payload == value).await;
}

/// Publishes `payload` live on `topic` until `watch` reads `value`: right after start-up the
/// adapter's subscription may still be on its way to the broker, and a live message is not replayed.
async fn publish_until_value(p: &Probe, topic: &str, payload: &str, watch: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        p.publish(topic, payload);
        if tokio::time::timeout(Duration::from_millis(200), p.wait_value(watch, value)).await.is_ok() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{watch} never became {value} after publishing on {topic}");
    }
}

fn unified_events(p: &Probe, base: &str) -> Vec<String> {
    p.all(&format!("{base}/event")).iter().map(|m| m.json()["event"].as_str().unwrap().to_owned()).collect()
}

/// A print long enough (40 s of 20 ms ticks) that a loaded machine still reads /metrics while it
/// runs: the bridge's state, progress and set points as gauges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_running_print_with_its_progress_and_set_points() {
    let lab = Lab::start(PRINTER, "").await;
    let sim = OctoSim::start(&lab.broker, |o| {
        o.printer_data = true;
        o.phases = PhaseTicks { print: 2_000, ..PhaseTicks::default() };
    });
    let p = &lab.probe;
    let base = "home/printer";
    wait_seen(p, base, "printer_state", "printing").await;
    // While it prints, /metrics shows the state, the progress and the set points.
    let (progress, left) = eventually("/metrics shows the running print", async || {
        let (_, s) = scrape(&lab.bridge).await;
        let dev = [("device", "printer")];
        let printing = sample_value(
            &s,
            "hlbridge_printer_state_info",
            &[("device", "printer"), ("adapter", "octoprint"), ("kind", "printer"), ("value", "printing")],
        );
        let progress = sample_value(&s, "hlbridge_print_progress_percent", &dev)?;
        let left = sample_value(&s, "hlbridge_print_time_left_seconds", &dev)?;
        let target = sample_value(
            &s,
            "hlbridge_temperature_celsius",
            &[("device", "printer"), ("sensor", "tool0"), ("target", "true")],
        );
        (printing == Some(1.0) && progress > 0.0 && target == Some(215.0)).then_some((progress, left))
    })
    .await;
    assert!(progress <= 100.0 && left >= 0.0, "progress {progress}, time left {left}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_print_can_be_followed_through_unified_topics_and_readyz() {
    let lab = Lab::start(PRINTER, "").await;
    let sim = OctoSim::start(&lab.broker, |o| {
        o.printer_data = true;
        o.outcome = SimOutcome::Done;
        o.phases = PhaseTicks { print: 200, ..PhaseTicks::default() };
    });
    let p = &lab.probe;
    let base = "home/printer";
    wait_seen(p, base, "printer_state", "operational").await;
    p.wait_value(&format!("{base}/availability"), "online").await;
    let started = wait_event(p, base, "print_started").await;
    assert_eq!(started["data"]["file"], "folder/benchy.gcode");
    assert_eq!(started["data"]["origin"], "local");
    crate::common::assert_rfc3339_utc(started["ts"].as_str().unwrap());
    wait_seen(p, base, "printer_state", "printing").await;
    wait_seen(p, base, "print_file", "folder/benchy.gcode").await;
    wait_seen(p, base, "temperature_tool0_target", "215").await;
    wait_seen(p, base, "temperature_bed_target", "60").await;
    let info = p.wait_latest(&format!("{base}/info"), |v| v.contains("firmware")).await;
    assert!(info.contains("Marlin 2.1.2.4") && info.contains("\"kind\":\"printer\""), "{info}");

    // Pause and resume, then done.
    wait_seen(p, base, "printer_state", "paused").await;
    wait_event(p, base, "print_paused").await;
    wait_event(p, base, "print_resumed").await;
    let done = wait_event(p, base, "print_done").await;
    assert!(done["data"]["duration"].as_f64().unwrap() > 0.0, "{done}");
    wait_seen(p, base, "print_progress", "100").await;
    wait_seen(p, base, "print_time_left", "0").await;
    // Then the printer is switched off: offline state, availability offline with the reason.
    wait_event(p, base, "disconnected").await;
    wait_seen(p, base, "printer_state", "offline").await;
    // The probe has seen `offline` before (at start-up): the device's own state says when it is now.
    let url = format!("{}/readyz", http_base(&lab.bridge));
    let reason = crate::common::eventually("/readyz says the printer is offline", async || {
        let ready: Value = serde_json::from_str(&http_get(&url).await.body).ok()?;
        let device = &ready["devices"]["printer"];
        (device["availability"] == "offline").then(|| device["reason"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(reason.contains("not connected to OctoPrint"), "{reason}");

    let names = unified_events(p, base);
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n} missing: {names:?}"));
    assert!(pos("connected") < pos("print_started"));
    assert!(pos("print_started") < pos("print_paused"));
    assert!(pos("print_paused") < pos("print_resumed"));
    assert!(pos("print_resumed") < pos("print_done"));
    assert!(pos("print_done") < pos("disconnected"));
    let states: Vec<String> = p.all(&format!("{base}/printer_state")).into_iter().map(|m| m.payload).collect();
    let order = ["operational", "printing", "pausing", "paused", "printing", "finishing", "operational", "offline"];
    let mut it = states.iter();
    for want in order {
        assert!(it.any(|s| s == want), "{want} missing or out of order in {states:?}");
    }
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_print_on_octoprint_2_ends_with_cancelled_and_failed_events() {
    let lab = Lab::start(PRINTER, "").await;
    let sim = OctoSim::start(&lab.broker, |o| {
        o.outcome = SimOutcome::Cancelled;
        o.octoprint2 = true;
    });
    let p = &lab.probe;
    let base = "home/printer";
    let cancelled = wait_event(p, base, "print_cancelled").await;
    assert!(cancelled["data"]["progress"].as_i64().unwrap() >= 70, "{cancelled}");
    assert_eq!(cancelled["data"]["connector"], "serial");
    let events = format!("{base}/event");
    let failed = p.wait_for("print_failed", |m| m.topic == events && m.json()["event"] == "print_failed").await;
    assert_eq!(failed.json()["data"]["reason"], "cancelled");
    wait_seen(p, base, "printer_state", "cancelling").await;
    // OctoPrint 2.0 says CLOSED, not OFFLINE, when the printer goes away after the print.
    let state = format!("{base}/printer_state");
    p.wait_for_since(failed.seq, "offline after the print", |m| m.topic == state && m.payload == "offline").await;
    let states: Vec<String> = p.all(&format!("{base}/printer_state")).into_iter().map(|m| m.payload).collect();
    let c = states.iter().position(|s| s == "cancelling").unwrap();
    assert_eq!(states[c + 1], "operational", "{states:?}");
    // After a cancel the plugin's timer publishes progress 0 for the same file.
    let progress: Vec<String> = p.all(&format!("{base}/print_progress")).into_iter().map(|m| m.payload).collect();
    assert_eq!(progress.last().map(String::as_str), Some("0"), "{progress:?}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_retained_events_are_not_replayed_at_start_up() {
    let broker = Broker::start().await;
    // What a broker that once served plugin ≤ 0.8.13 still holds, years later.
    let seed = Probe::start(&broker).await;
    let old = 1_600_000_000;
    for (event, body) in [
        ("PrintStarted", r#""name": "old.gcode", "path": "old.gcode", "origin": "local""#),
        ("PrinterStateChanged", r#""state_id": "PRINTING", "state_string": "Printing""#),
        ("Shutdown", ""),
        ("ZChange", r#""new": 4.4, "old": 4.2"#),
    ] {
        let sep = if body.is_empty() { "" } else { ", " };
        seed.publish_retained(
            &format!("octoPrint/event/{event}"),
            &format!(r#"{{{body}{sep}"_event": "{event}", "_timestamp": {old}}}"#),
        );
    }
    seed.publish_retained(
        "octoPrint/progress/printing",
        &format!(r#"{{"location": "local", "path": "old.gcode", "progress": 42, "_timestamp": {old}}}"#),
    );
    seed.publish_retained("octoPrint/mqtt", "connected");
    // The seed sees its own messages back in order: once the last is back, all are stored.
    seed.wait_for("the seeded status back", |m| m.topic == "octoPrint/mqtt").await;
    assert_eq!(latest_retained(&broker, "octoPrint/mqtt").await.as_deref(), Some("connected"));
    drop(seed);

    let lab = Lab::start_on(broker, PRINTER, "").await;
    let p = &lab.probe;
    let base = "home/printer";
    // The retained progress is the last known job; the state is not guessed from it.
    p.wait_value(&format!("{base}/print_progress"), "42").await;
    p.wait_value(&format!("{base}/printer_state"), "unknown").await;
    // A live event goes through; it is the only one.
    p.publish(
        "octoPrint/event/ClientOpened",
        r#"{"remoteAddress": "10.0.0.5", "_event": "ClientOpened", "_timestamp": 1700000000}"#,
    );
    wait_event(p, base, "client_opened").await;
    assert_eq!(unified_events(p, base), ["client_opened"]);
    assert_eq!(p.latest(&format!("{base}/printer_state")).as_deref(), Some("unknown"));
    let (_, s) = scrape(&lab.bridge).await;
    let rejected =
        sample_value(&s, "hlbridge_readings_rejected_total", &[("device", "printer"), ("reason", "retained_event")]);
    // PrintStarted, PrinterStateChanged, Shutdown (ZChange is retained by design); a subscription
    // sent twice around the first connect makes the broker replay them twice.
    let rejected = rejected.expect("retained events are counted");
    assert!(rejected >= 3.0 && rejected % 3.0 == 0.0, "{rejected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_retained_by_an_old_plugin_are_not_replayed_to_a_bridge_started_later() {
    let broker = Broker::start().await;
    let watcher = Probe::start(&broker).await;
    let sim = OctoSim::start(&broker, |o| {
        o.legacy_retained_events = true;
        o.outcome = SimOutcome::Done;
    });
    watcher.wait_for("a whole simulated print", |m| m.topic == "octoPrint/event/Disconnected").await;
    sim.stop().await;
    watcher
        .wait_for("the plugin's `disconnected`", |m| m.topic == "octoPrint/mqtt" && m.payload == "disconnected")
        .await;
    assert!(latest_retained(&broker, "octoPrint/event/PrintDone").await.is_some(), "plugin <= 0.8.13 retains events");
    assert_eq!(latest_retained(&broker, "octoPrint/mqtt").await.as_deref(), Some("disconnected"));
    drop(watcher);

    let lab = Lab::start_on(broker, PRINTER, "").await;
    let p = &lab.probe;
    let base = "home/printer";
    p.wait_value(&format!("{base}/printer_state"), "unknown").await;
    p.wait_latest(&format!("{base}/temperature_bed"), |_| true).await;
    let reason = eventually("the host-down reason shows in /readyz", async || {
        let body = http_get(&format!("{}/readyz", http_base(&lab.bridge))).await.body;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["devices"]["printer"]["reason"].as_str().filter(|r| r.contains("disconnected")).map(str::to_owned)
    })
    .await;
    assert!(reason.contains("last will"), "{reason}");
    let ready: Value =
        serde_json::from_str(&http_get(&format!("{}/readyz", http_base(&lab.bridge))).await.body).unwrap();
    assert_eq!(ready["devices"]["printer"]["availability"], "offline");
    p.publish(
        "octoPrint/event/ClientOpened",
        r#"{"remoteAddress": "10.0.0.5", "_event": "ClientOpened", "_timestamp": 1700000000}"#,
    );
    wait_event(p, base, "client_opened").await;
    assert_eq!(unified_events(p, base), ["client_opened"], "no retained event was replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_temperatures_never_overwrite_newer_values() {
    let lab = Lab::start(PRINTER, "").await;
    let p = &lab.probe;
    let base = "home/printer";
    let t = 1_700_000_000;
    let first = format!(r#"{{"actual": 210.0, "target": 215.0, "_timestamp": {}}}"#, t + 100);
    publish_until_value(p, "octoPrint/temperature/tool0", &first, &format!("{base}/temperature_tool0"), "210").await;
    // The plugin flushes samples queued during an outage late, with their original times.
    p.publish(
        "octoPrint/temperature/tool0",
        &format!(r#"{{"actual": 100.0, "target": 215.0, "_timestamp": {}}}"#, t + 50),
    );
    p.publish(
        "octoPrint/temperature/tool0",
        &format!(r#"{{"actual": 120.0, "target": 0.0, "_timestamp": {}}}"#, t + 60),
    );
    // A later sample of another heater: once it is out, the two above were handled.
    p.publish("octoPrint/temperature/bed", &format!(r#"{{"actual": 60.0, "target": 60.0, "_timestamp": {}}}"#, t + 51));
    p.wait_value(&format!("{base}/temperature_bed"), "60").await;
    let tool0: Vec<String> = p.all(&format!("{base}/temperature_tool0")).into_iter().map(|m| m.payload).collect();
    assert_eq!(tool0, ["210"]);
    assert_eq!(p.latest(&format!("{base}/temperature_tool0_target")).as_deref(), Some("215"));
    let (_, s) = scrape(&lab.bridge).await;
    let rejected =
        sample_value(&s, "hlbridge_readings_rejected_total", &[("device", "printer"), ("reason", "out_of_order")]);
    assert_eq!(rejected, Some(2.0));
    // A newer sample is taken again.
    p.publish(
        "octoPrint/temperature/tool0",
        &format!(r#"{{"actual": 214.5, "target": 215.0, "_timestamp": {}}}"#, t + 101),
    );
    p.wait_value(&format!("{base}/temperature_tool0"), "214.5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnected_status_takes_the_printer_offline_and_connected_brings_it_back() {
    let lab = Lab::start(PRINTER, "").await;
    let p = &lab.probe;
    let base = "home/printer";
    let sample = r#"{"actual": 59.9, "target": 60.0, "_timestamp": 1700000000}"#;
    publish_until_value(p, "octoPrint/temperature/bed", sample, &format!("{base}/availability"), "online").await;
    // What the broker publishes as the plugin's last will (retained, QoS 1).
    p.publish_retained("octoPrint/mqtt", "disconnected");
    p.wait_value(&format!("{base}/availability"), "offline").await;
    p.wait_value(&format!("{base}/printer_state"), "unknown").await;
    let (_, s) = scrape(&lab.bridge).await;
    assert_eq!(sample_value(&s, "hlbridge_device_up", &[("device", "printer")]), Some(0.0));
    assert!(
        find_samples(&s, "hlbridge_temperature_celsius", &[("device", "printer")]).is_empty(),
        "offline devices leave the value families"
    );
    p.publish_retained("octoPrint/mqtt", "connected");
    p.publish("octoPrint/temperature/bed", r#"{"actual": 60.1, "target": 60.0, "_timestamp": 1700000010}"#);
    p.wait_value(&format!("{base}/availability"), "online").await;
    p.wait_value(&format!("{base}/temperature_bed"), "60.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_printers_are_one_device_per_base_topic() {
    let devices = "  mk3:\n    adapter: octoprint\n  ender:\n    adapter: octoprint\n    base_topic: octoprint/\n  voron:\n    adapter: octoprint\n    base_topic: farm/voron\n";
    let lab = Lab::start(devices, "").await;
    let sim = OctoSim::start(&lab.broker, |o| o.base_topic = "farm/voron/".into());
    let p = &lab.probe;
    let bed = |v: f64| format!(r#"{{"actual": {v:?}, "target": {v:?}, "_timestamp": 1700000000}}"#);
    publish_until_value(p, "octoPrint/temperature/bed", &bed(60.0), "home/mk3/temperature_bed", "60").await;
    publish_until_value(p, "octoprint/temperature/bed", &bed(70.0), "home/ender/temperature_bed", "70").await;
    // Without a trailing slash the plugin glues the sub-topic on: `farm/vorontemperature/...`.
    let chamber = r#"{"actual": 41.0, "target": null, "_timestamp": 1700000000}"#;
    publish_until_value(p, "farm/vorontemperature/chamber", chamber, "home/voron/temperature_chamber", "41").await;
    wait_event(p, "home/voron", "print_started").await;
    assert!(p.all("home/mk3/temperature_bed").iter().all(|m| m.payload == "60"));
    assert!(p.all("home/ender/temperature_bed").iter().all(|m| m.payload == "70"));
    assert!(
        p.all("home/mk3/event").is_empty() && p.all("home/ender/event").is_empty(),
        "the simulated printer is voron's"
    );
    let (_, s) = scrape(&lab.bridge).await;
    for d in ["mk3", "ender", "voron"] {
        assert_eq!(sample_value(&s, "hlbridge_device_up", &[("device", d)]), Some(1.0), "{d}");
    }
    sim.stop().await;
    // The simulated OctoPrint shut down cleanly: its `disconnected` takes voron offline, not the others.
    p.wait_value("home/voron/availability", "offline").await;
    assert_eq!(p.latest("home/mk3/availability").as_deref(), Some("online"));
}

// ---------------------------------------------------------------------------------------------
// What a real OctoPrint 1.11.8 + OctoPrint-MQTT 0.8.16 does (shared/protocols/octoprint-mqtt.md §14)
// ---------------------------------------------------------------------------------------------

/// The printer connects, then idles for good at a steady temperature.
fn idle_for_good(o: &mut OctoprintSimOptions) {
    o.phases = PhaseTicks { idle: 1_000_000, ..PhaseTicks::default() };
}

/// The availability payloads published after probe position `from` and before `to`.
fn availability_between(p: &Probe, base: &str, from: usize, to: usize) -> Vec<String> {
    p.all(&format!("{base}/availability"))
        .into_iter()
        .filter(|m| m.seq > from && m.seq < to)
        .map(|m| m.payload)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_print_times_after_a_cancel_delete_the_retained_times() {
    let lab = Lab::start(PRINTER, "").await;
    let sim = OctoSim::start(&lab.broker, |o| {
        o.printer_data = true;
        o.outcome = SimOutcome::Cancelled;
        // Cool down for good after the cancel: no next print brings times back.
        o.phases = PhaseTicks { cool: 1_000_000, ..PhaseTicks::default() };
    });
    let p = &lab.probe;
    let base = "home/printer";
    let (left, elapsed, state) =
        (format!("{base}/print_time_left"), format!("{base}/print_time_elapsed"), format!("{base}/state"));
    p.wait_for("a time left while printing", |m| m.topic == left && !m.payload.is_empty()).await;
    let events = format!("{base}/event");
    let cancelled = p.wait_for("the cancel", |m| m.topic == events && m.json()["event"] == "print_cancelled").await;
    // The plugin's next progress message has printTime/printTimeLeft null: both topics are deleted
    // (an empty retained payload) and leave the state JSON and /metrics.
    let gone =
        p.wait_for_since(cancelled.seq, "print_time_left deleted", |m| m.topic == left && m.payload.is_empty()).await;
    p.wait_for_since(cancelled.seq, "print_time_elapsed deleted", |m| m.topic == elapsed && m.payload.is_empty()).await;
    let snapshot = p.wait_for_since(gone.seq, "the state JSON after the cancel", |m| m.topic == state).await.json();
    let values = snapshot["values"].as_object().unwrap();
    assert!(!values.contains_key("print_time_left") && !values.contains_key("print_time_elapsed"), "{snapshot}");
    assert_eq!(values["print_progress"], 0, "{snapshot}");
    assert_eq!(latest_retained(&lab.broker, &left).await, None, "nothing retained on {left}");
    assert_eq!(latest_retained(&lab.broker, &elapsed).await, None, "nothing retained on {elapsed}");
    let (_, s) = scrape(&lab.bridge).await;
    assert!(find_samples(&s, "hlbridge_print_time_left_seconds", &[("device", "printer")]).is_empty());
    assert!(find_samples(&s, "hlbridge_print_time_elapsed_seconds", &[("device", "printer")]).is_empty());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_idle_printer_at_a_steady_temperature_stays_online_through_minutes_of_silence() {
    // A freshness window of 300 ms stands for the default minute: silence longer than any window.
    let lab = Lab::start("  printer:\n    adapter: octoprint\n    freshness: 300ms\n", "").await;
    let sim = OctoSim::start(&lab.broker, idle_for_good);
    let p = &lab.probe;
    let base = "home/printer";
    wait_seen(p, base, "printer_state", "operational").await;
    let online =
        p.wait_for("the printer online", |m| m.topic == format!("{base}/availability") && m.payload == "online").await;
    // The plugin publishes nothing while the temperatures hold; wait until the bridge itself has
    // seen nothing for ten windows.
    let readyz = format!("{}/readyz", http_base(&lab.bridge));
    let ready = eventually("the bridge has heard nothing from the printer for 3 s", async || {
        let v: Value = serde_json::from_str(&http_get(&readyz).await.body).ok()?;
        let age = v["devices"]["printer"]["age_seconds"].as_f64()?;
        (age >= 3.0).then_some(v)
    })
    .await;
    assert_eq!(ready["devices"]["printer"]["availability"], "online", "{ready}");
    assert_eq!(availability_between(p, base, online.seq, usize::MAX), Vec::<String>::new(), "no flip to offline");
    let (_, s) = scrape(&lab.bridge).await;
    assert_eq!(sample_value(&s, "hlbridge_device_up", &[("device", "printer")]), Some(1.0));
    let bed = find_samples(&s, "hlbridge_temperature_celsius", &[("device", "printer"), ("sensor", "bed")])
        .into_iter()
        .find(|x| !x.labels.iter().any(|(k, _)| k == "target"))
        .map(|x| x.value);
    assert!(bed.is_some_and(|t| (21.0..23.0).contains(&t)), "the bed at room temperature stays on /metrics: {bed:?}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn octoprint_shutting_down_goes_offline_once_without_an_online_flap() {
    let lab = Lab::start(PRINTER, "").await;
    let sim = OctoSim::start(&lab.broker, idle_for_good);
    let p = &lab.probe;
    let base = "home/printer";
    wait_seen(p, base, "printer_state", "operational").await;
    p.wait_value(&format!("{base}/availability"), "online").await;
    let mark = p.mark();
    sim.stop().await;
    // What reaches the broker: `disconnected`, the live Shutdown event, the last will.
    let status = |m: &crate::common::Msg| m.topic == "octoPrint/mqtt" && m.payload == "disconnected";
    let first = p.wait_for_since(mark, "the plugin's `disconnected`", status).await;
    let shutdown = p.wait_for_since(first.seq, "the Shutdown event", |m| m.topic == "octoPrint/event/Shutdown").await;
    p.wait_for_since(shutdown.seq, "the last will", status).await;
    wait_event(p, base, "shutdown").await;
    // A marker behind everything else in the adapter's queue: once its event is out, the bridge
    // has handled the whole shutdown sequence.
    p.publish(
        "octoPrint/event/ClientClosed",
        r#"{"remoteAddress": "10.0.0.9", "_event": "ClientClosed", "_timestamp": 1700000000}"#,
    );
    let events = format!("{base}/event");
    let marker =
        p.wait_for_since(mark, "the marker event", |m| m.topic == events && m.json()["event"] == "client_closed").await;
    assert_eq!(availability_between(p, base, mark, marker.seq), ["offline"], "offline once, no online in between");
    let ready: Value =
        serde_json::from_str(&http_get(&format!("{}/readyz", http_base(&lab.bridge))).await.body).unwrap();
    assert_eq!(ready["devices"]["printer"]["availability"], "offline");
    assert!(ready["devices"]["printer"]["reason"].as_str().unwrap().contains("disconnected"), "{ready}");
}

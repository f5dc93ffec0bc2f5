//! Unit tests of the OctoPrint simulator: the cycle, the payloads and retain flags, the start-up
//! and shutdown order, and the adapter's mapping following a simulated cycle.

use super::printer::{Phase, THRESHOLD};
use super::*;
use crate::adapters::octoprint::mapping::{Mapper, Topic, classify};

const T0: i64 = 1_700_000_000;

fn opts() -> OctoprintSimOptions {
    let broker = MqttSettings::from_url("mqtt://127.0.0.1:1", "t").unwrap();
    OctoprintSimOptions {
        phases: PhaseTicks { off: 2, idle: 2, heat: 3, print: 10, paused: 2, cool: 2 },
        ..OctoprintSimOptions::new(broker)
    }
}

/// Connects the plugin and runs `ticks` ticks, one second apart.
fn run_ticks(sim: &mut PrinterSim, ticks: u32) -> Vec<SimPublish> {
    let mut out = sim.on_connect(T0);
    for i in 0..ticks {
        out.extend(sim.step(T0 + 1 + i64::from(i)));
    }
    out
}

fn events(msgs: &[SimPublish]) -> Vec<&str> {
    msgs.iter().filter_map(|m| m.topic.strip_prefix("octoPrint/event/")).collect()
}

fn state_ids(msgs: &[SimPublish]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.topic.ends_with("/PrinterStateChanged"))
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["state_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn position(list: &[&str], name: &str) -> usize {
    list.iter().position(|e| *e == name).unwrap_or_else(|| panic!("{name} missing from {list:?}"))
}

#[test]
fn a_cycle_connects_heats_prints_pauses_resumes_finishes_and_disconnects() {
    let o = opts();
    let mut sim = PrinterSim::new(&o);
    let msgs = run_ticks(&mut sim, o.phases.cycle());
    let ev = events(&msgs);
    let order = [
        "Connecting",
        "Connected",
        "FirmwareData",
        "FileSelected",
        "PrintStarted",
        "PrintPaused",
        "PrintResumed",
        "PrintDone",
        "Disconnecting",
        "Disconnected",
    ];
    for pair in order.windows(2) {
        assert!(position(&ev, pair[0]) < position(&ev, pair[1]), "{} before {}: {ev:?}", pair[0], pair[1]);
    }
    assert!(ev.contains(&"ZChange"));
    let ids = state_ids(&msgs);
    assert_eq!(ids.first().map(String::as_str), Some("OPEN_SERIAL"));
    assert_eq!(ids.last().map(String::as_str), Some("OFFLINE"));
    for id in ["OPERATIONAL", "STARTING", "PRINTING", "PAUSING", "PAUSED", "RESUMING", "FINISHING"] {
        assert!(ids.iter().any(|i| i == id), "{id} missing: {ids:?}");
    }
    let temps: Vec<_> = msgs.iter().filter(|m| m.topic == "octoPrint/temperature/tool0").collect();
    let peak = temps
        .iter()
        .map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["actual"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(peak > 205.0, "the nozzle heats to about 215 °C, got {peak}");
    let progress: Vec<i64> = msgs
        .iter()
        .filter(|m| m.topic == "octoPrint/progress/printing")
        .map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["progress"].as_i64().unwrap())
        .collect();
    assert_eq!(progress.last(), Some(&100));
    assert!(progress.windows(2).all(|w| w[0] <= w[1] || w[1] == 0), "progress only rises: {progress:?}");
}

#[test]
fn alternate_outcome_cancels_the_second_print() {
    let o = opts();
    let mut sim = PrinterSim::new(&o);
    let msgs = run_ticks(&mut sim, o.phases.cycle() * 2 + 4);
    let ev = events(&msgs);
    let cancelled = position(&ev, "PrintCancelled");
    // The order of a real OctoPrint 1.11.8: the event, then the state change, then the cancel.
    assert_eq!(ev[cancelled - 2..cancelled], ["PrintCancelling", "PrinterStateChanged"]);
    let ids = state_ids(&msgs);
    assert!(ids.windows(2).any(|w| w == ["CANCELLING", "OPERATIONAL"]), "{ids:?}");
    assert_eq!(ev[cancelled + 1], "PrintFailed");
    let failed = msgs.iter().find(|m| m.topic.ends_with("/PrintFailed")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&failed.payload).unwrap();
    assert_eq!(v["reason"], "cancelled");
    assert!(v["progress"].as_i64().unwrap() >= 70);
    // After a cancel OctoPrint's completion is None: the timer publishes 0 for the same path.
    let after: Vec<_> = msgs
        .iter()
        .skip_while(|m| !m.topic.ends_with("/PrintCancelled"))
        .filter(|m| m.topic.ends_with("progress/printing"))
        .collect();
    assert!(after[0].payload.contains("\"path\": \"folder/benchy.gcode\", \"progress\": 0"), "{}", after[0].payload);
}

#[test]
fn payloads_are_written_like_python_json_dumps() {
    let o = opts();
    let mut sim = PrinterSim::new(&o);
    let msgs = run_ticks(&mut sim, o.phases.off + 1);
    let t = msgs.iter().find(|m| m.topic == "octoPrint/temperature/bed").unwrap();
    assert!(t.payload.starts_with("{\"actual\": "), "{}", t.payload);
    assert!(t.payload.contains(", \"target\": 0.0, \"_timestamp\": 17"), "{}", t.payload);
    let c = msgs.iter().find(|m| m.topic == "octoPrint/event/Connected").unwrap();
    assert!(c.payload.starts_with(
        "{\"port\": \"/dev/ttyACM0\", \"baudrate\": 115200, \"_event\": \"Connected\", \"_timestamp\": 17"
    ));
}

#[test]
fn retain_flags_and_qos_follow_the_plugin() {
    let o = opts();
    let mut sim = PrinterSim::new(&o);
    let msgs = run_ticks(&mut sim, o.phases.cycle());
    for m in &msgs {
        let want = m.topic.contains("/progress/")
            || m.topic.contains("/temperature/")
            || m.topic.ends_with("/ZChange")
            || m.topic.ends_with("/FirmwareData");
        assert_eq!(m.retain, want, "{}", m.topic);
        assert!(!m.qos1, "{} is QoS 0", m.topic);
    }
    let mut legacy = PrinterSim::new(&OctoprintSimOptions { legacy_retained_events: true, ..opts() });
    let msgs = run_ticks(&mut legacy, 5);
    assert!(msgs.iter().filter(|m| m.topic.contains("/event/")).all(|m| m.retain));
}

#[test]
fn the_first_connect_publishes_resets_and_a_reconnect_flushes_queued_temperatures() {
    let o = opts();
    let mut sim = PrinterSim::new(&o);
    let first = sim.on_connect(T0);
    assert_eq!(first[0].payload, "{\"location\": \"\", \"path\": \"\", \"progress\": 0, \"_timestamp\": 1700000000}");
    assert!(first[1].topic.ends_with("progress/slicing") && first[1].retain);
    // Into the print, so that the heaters move and temperatures are published.
    let mut i = 0;
    while sim.phase() != Phase::Heating {
        sim.step(T0 + i);
        i += 1;
    }
    sim.on_disconnect();
    let mut dropped = Vec::new();
    for i in i..i + 4 {
        dropped.extend(sim.step(T0 + i));
    }
    assert!(dropped.is_empty(), "nothing is published while the broker is away: {dropped:?}");
    let flushed = sim.on_connect(T0 + 9);
    assert!(!flushed.is_empty());
    assert!(flushed.iter().all(|m| m.topic.contains("/temperature/") && m.retain));
    assert!(flushed.iter().all(|m| m.payload.contains("\"_timestamp\": 170000000")), "original sample times kept");
}

#[test]
fn an_idle_printer_at_a_steady_temperature_publishes_nothing() {
    let o = OctoprintSimOptions { phases: PhaseTicks { idle: 10_000, ..opts().phases }, ..opts() };
    let mut sim = PrinterSim::new(&o);
    let mut msgs = run_ticks(&mut sim, 50);
    assert_eq!(sim.phase(), Phase::Idle);
    let temps = msgs.iter().filter(|m| m.topic.contains("/temperature/")).count();
    assert_eq!(temps, 2, "one sample per heater when the printer connects, then silence: {msgs:?}");
    msgs.clear();
    for i in 0..1000 {
        msgs.extend(sim.step(T0 + 100 + i));
    }
    assert!(msgs.is_empty(), "{msgs:?}");
}

#[test]
fn a_heating_printer_publishes_only_moves_of_at_least_the_threshold() {
    let o = opts();
    let mut sim = PrinterSim::new(&o);
    let msgs = run_ticks(&mut sim, o.phases.cycle());
    let tool0: Vec<f64> = msgs
        .iter()
        .filter(|m| m.topic == "octoPrint/temperature/tool0")
        .map(|m| serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["actual"].as_f64().unwrap())
        .collect();
    assert!(tool0.len() > 3, "{tool0:?}");
    // Consecutive samples with the same target differ by the threshold (0.1 °C, to rounding).
    assert!(tool0.windows(2).all(|w| (w[1] - w[0]).abs() >= THRESHOLD - 1e-9), "{tool0:?}");
}

#[test]
fn a_cancel_is_followed_by_progress_with_null_times() {
    let o = OctoprintSimOptions { printer_data: true, outcome: SimOutcome::Cancelled, ..opts() };
    let mut sim = PrinterSim::new(&o);
    let msgs = run_ticks(&mut sim, o.phases.cycle());
    let after = msgs
        .iter()
        .skip_while(|m| !m.topic.ends_with("/PrintCancelled"))
        .find(|m| m.topic.ends_with("progress/printing"))
        .expect("progress after the cancel");
    let v: serde_json::Value = serde_json::from_str(&after.payload).unwrap();
    let p = &v["printer_data"]["progress"];
    assert_eq!(v["progress"], 0);
    assert!(p["printTime"].is_null() && p["printTimeLeft"].is_null() && p["completion"].is_null(), "{p}");
}

#[test]
fn shutdown_says_disconnected_then_shutdown_then_the_last_will() {
    let o = opts();
    let mut sim = PrinterSim::new(&o);
    run_ticks(&mut sim, 10);
    let out = sim.shutdown(T0 + 20);
    let seq: Vec<(&str, &str)> = out.iter().map(|m| (m.topic.as_str(), m.payload.as_str())).collect();
    assert_eq!(seq[0], ("octoPrint/mqtt", "disconnected"));
    assert_eq!(seq[1].0, "octoPrint/event/Shutdown");
    assert_eq!(seq[2], ("octoPrint/mqtt", "disconnected"));
    assert_eq!(seq.len(), 3);
    assert!(out[0].qos1 && out[0].retain && out[2].qos1 && out[2].retain && !out[1].retain);
    assert!(sim.shutdown(T0 + 21).is_empty(), "nothing more once disconnected");
}

#[test]
fn octoprint_2_adds_the_connector_and_says_closed_when_off() {
    let o = OctoprintSimOptions { octoprint2: true, printer_data: true, ..opts() };
    let mut sim = PrinterSim::new(&o);
    let msgs = run_ticks(&mut sim, o.phases.cycle());
    let ids = state_ids(&msgs);
    assert!(!ids.iter().any(|i| i == "OPEN_SERIAL" || i == "OFFLINE"));
    assert_eq!(ids.last().map(String::as_str), Some("CLOSED"));
    let started = msgs.iter().find(|m| m.topic.ends_with("/PrintStarted")).unwrap();
    assert!(started.payload.contains("\"connector\": \"serial\""));
    let p = msgs.iter().find(|m| m.topic.ends_with("progress/printing") && m.payload.contains("printer_data")).unwrap();
    assert!(p.payload.contains("\"currentTool\": 0") && !p.payload.contains("resends"));
}

#[test]
fn the_adapter_mapping_follows_a_simulated_cycle() {
    let o = OctoprintSimOptions { printer_data: true, ..opts() };
    let mut sim = PrinterSim::new(&o);
    let msgs = run_ticks(&mut sim, o.phases.cycle() * 2 + 4);
    let mut m = Mapper::default();
    let mut states = Vec::new();
    let mut names = Vec::new();
    for msg in &msgs {
        let topic = classify("octoPrint/", &msg.topic).expect("every simulated topic is the plugin's");
        assert!(!matches!(topic, Topic::Metadata(_)));
        let out = m.handle(topic, msg.payload.as_bytes(), false);
        assert!(out.problems.is_empty(), "{}: {:?}", msg.topic, out.problems);
        for (q, v) in &out.update.readings {
            if q.name() == "printer_state" {
                let mut s = String::new();
                v.write_plain(0, &mut s);
                if states.last() != Some(&s) {
                    states.push(s);
                }
            }
        }
        names.extend(out.update.events.iter().map(|e| e.name.to_string()));
    }
    let want =
        ["offline", "operational", "printing", "pausing", "paused", "printing", "finishing", "operational", "offline"];
    assert!(states.windows(want.len()).any(|w| w == want), "{states:?}");
    assert!(states.contains(&"cancelling".to_owned()));
    for n in ["print_started", "print_paused", "print_resumed", "print_done", "print_cancelled", "print_failed"] {
        assert!(names.iter().any(|x| x == n), "{n} missing");
    }
}

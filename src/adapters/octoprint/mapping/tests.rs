//! Unit tests of the OctoPrint mapping: the tables, the topic split and every message kind
//! through [`Mapper::handle`].

use super::events::snake_case;
use super::tables::tables;
use super::*;

fn q(name: &str) -> Quantity {
    Quantity::known(name)
}

fn value(out: &Outcome, name: &str) -> Option<Value> {
    out.update.readings.iter().rev().find(|(k, _)| *k == q(name)).map(|(_, v)| v.clone())
}

fn text(out: &Outcome, name: &str) -> Option<String> {
    match value(out, name) {
        Some(Value::Text(t)) => Some(t.into_owned()),
        _ => None,
    }
}

fn num(out: &Outcome, name: &str) -> Option<f64> {
    value(out, name).and_then(|v| v.as_f64())
}

fn live(m: &mut Mapper, topic: Topic<'_>, payload: &str) -> Outcome {
    m.handle(topic, payload.as_bytes(), false)
}

fn retained(m: &mut Mapper, topic: Topic<'_>, payload: &str) -> Outcome {
    m.handle(topic, payload.as_bytes(), true)
}

#[test]
fn the_tables_parse_and_every_word_is_a_contract_printer_state() {
    let t = tables();
    assert!(t.events.len() > 75);
    assert_eq!(t.state(Some("PRINTING"), None), ("printing", LinkEffect::Up));
}

#[test]
fn every_event_of_the_protocol_table_has_a_row() {
    let shared = include_str!("../../../../adapters/octoprint/fixtures/events.tsv");
    let t = tables();
    for line in shared.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let event = line.split('\t').next().unwrap();
        let probe = event.replace("${ScriptName}", "BeforePrintStarted").replace("<identifier>_<name>", "psu_on");
        assert!(t.event(&probe).is_some(), "{event} has no row in adapters/octoprint/events.tsv");
    }
}

#[test]
fn table_names_are_the_snake_case_of_the_event() {
    for (event, row) in &tables().events {
        if let Some(n) = row.name {
            assert_eq!(n, snake_case(event), "events.tsv row {event}");
        }
    }
}

#[test]
fn snake_case_splits_words_and_acronyms() {
    assert_eq!(snake_case("PrintStarted"), "print_started");
    assert_eq!(snake_case("EStop"), "e_stop");
    assert_eq!(snake_case("ZChange"), "z_change");
    assert_eq!(snake_case("remoteAddress"), "remote_address");
    assert_eq!(snake_case("state_id"), "state_id");
    assert_eq!(snake_case("plugin_psucontrol_psu_state_changed"), "plugin_psucontrol_psu_state_changed");
    assert_eq!(snake_case("GcodeScriptAfterPrintDoneRunning"), "gcode_script_after_print_done_running");
    assert_eq!(snake_case("Weird Name!"), "weird_name");
    assert_eq!(snake_case("💥"), "unnamed");
    assert!(snake_case(&"A".repeat(500)).len() <= 64);
}

#[test]
fn topics_are_split_below_a_base_glued_without_a_slash() {
    assert_eq!(classify("octoPrint/", "octoPrint/event/PrintDone"), Some(Topic::Event("PrintDone")));
    assert_eq!(classify("octoPrint/", "octoPrint/mqtt"), Some(Topic::Lwt));
    assert_eq!(classify("octoPrint/", "octoPrint/temperature/tool0"), Some(Topic::Temperature("tool0")));
    assert_eq!(classify("octoPrint/", "octoPrint/metadata/a.b"), Some(Topic::Metadata("a.b")));
    assert_eq!(classify("octoPrint/", "octoprint/event/PrintDone"), None, "base topics are case-sensitive");
    assert_eq!(classify("octoPrint/", "octoPrint/hassControl/cancel"), None);
    assert_eq!(classify("octoPrint/", "octoPrint/event/"), None);
    assert_eq!(classify("op", "opevent/X"), Some(Topic::Event("X")));
}

#[test]
fn state_ids_of_octoprint_1_and_2_map_to_contract_words() {
    let t = tables();
    assert_eq!(t.state(Some("OFFLINE"), Some("Offline")), ("offline", LinkEffect::Down));
    assert_eq!(t.state(Some("CLOSED"), Some("Offline")), ("offline", LinkEffect::Down));
    assert_eq!(t.state(Some("OPERATIONAL"), None), ("operational", LinkEffect::Up));
    assert_eq!(t.state(Some("TRANSFERING_FILE"), None).0, "operational");
    assert_eq!(t.state(Some("TRANSFERRING_FILE"), None).0, "operational");
    assert_eq!(t.state(Some("DETECTING"), None).0, "offline");
    assert_eq!(t.state(Some("CLOSED_WITH_ERROR"), None), ("error", LinkEffect::Down));
    assert_eq!(t.state(Some("RESUMING"), None).0, "printing");
    assert_eq!(t.state(Some("FINISHING"), None).0, "finishing");
}

#[test]
fn unknown_state_ids_fall_back_to_the_state_string_then_unknown() {
    let t = tables();
    assert_eq!(t.state(Some("NEW_STATE"), Some("Printing from SD")).0, "printing");
    assert_eq!(t.state(Some("NEW_STATE"), Some("Offline after error")).0, "error");
    assert_eq!(t.state(Some("NEW_STATE"), Some("Something else")).0, "unknown");
    assert_eq!(t.state(None, None).0, "unknown");
}

#[test]
fn printer_state_changed_sets_the_state_and_publishes_a_normalised_event() {
    let mut m = Mapper::default();
    let out = live(
        &mut m,
        Topic::Event("PrinterStateChanged"),
        r#"{"state_id": "PAUSED", "state_string": "Paused", "connector": "serial", "_event": "PrinterStateChanged", "_timestamp": 1700000000}"#,
    );
    assert_eq!(text(&out, "printer_state").as_deref(), Some("paused"));
    let e = &out.update.events[0];
    assert_eq!(e.name, "printer_state_changed");
    assert_eq!(e.data["state"], "paused");
    assert_eq!(e.data["state_id"], "PAUSED");
    assert_eq!(e.data["connector"], "serial");
    assert!(!e.data.contains_key("_event") && !e.data.contains_key("_timestamp"));
    assert_eq!(out.update.ts, OffsetDateTime::from_unix_timestamp(1_700_000_000).ok());
    assert!(out.update.fresh);
}

#[test]
fn print_events_carry_file_origin_and_duration() {
    let mut m = Mapper::default();
    let out = live(
        &mut m,
        Topic::Event("PrintDone"),
        r#"{"name": "benchy.gcode", "path": "folder/benchy.gcode", "origin": "sdcard", "size": 1234567, "owner": "admin", "time": 3605.1234, "_event": "PrintDone", "_timestamp": 1700000000}"#,
    );
    let e = &out.update.events[0];
    assert_eq!(e.name, "print_done");
    assert_eq!(e.data["file"], "folder/benchy.gcode");
    assert_eq!(e.data["origin"], "printer");
    assert_eq!(e.data["duration"], 3605.12);
    assert!(!e.data.contains_key("time") && !e.data.contains_key("path"));
    assert_eq!(num(&out, "print_progress"), Some(100.0));
}

#[test]
fn pre_1_4_print_started_payloads_give_the_file_name() {
    let mut m = Mapper::default();
    let out = live(
        &mut m,
        Topic::Event("PrintStarted"),
        r#"{"origin": "local", "_event": "PrintStarted", "file":"/home/pi/.octoprint/uploads/case.gco", "filename": "case.gco"}"#,
    );
    assert_eq!(out.update.events[0].data["file"], "case.gco");
    assert_eq!(text(&out, "print_file").as_deref(), Some("case.gco"));
    assert_eq!(text(&out, "printer_state").as_deref(), Some("printing"));
    assert_eq!(out.update.ts, None, "no _timestamp before plugin 0.6: the router uses arrival time");
}

#[test]
fn print_failed_with_an_error_reports_progress_as_a_percent() {
    let mut m = Mapper::default();
    live(&mut m, Topic::Event("PrintStarted"), r#"{"path": "a.gcode", "_timestamp": 10}"#);
    let out = live(
        &mut m,
        Topic::Event("PrintFailed"),
        r#"{"path": "a.gcode", "origin": "local", "time": 812.5, "reason": "error", "error": "Printer halted. kill() called!", "progress": 0.4231, "_timestamp": 20}"#,
    );
    let e = &out.update.events[0];
    assert_eq!(e.data["progress"], 42.31);
    assert_eq!(e.data["reason"], "error");
    assert_eq!(e.data["duration"], 812.5);
    assert_eq!(text(&out, "printer_state").as_deref(), Some("operational"));
}

#[test]
fn a_job_end_after_the_printer_went_offline_does_not_claim_operational() {
    let mut m = Mapper::default();
    live(&mut m, Topic::Event("PrintStarted"), r#"{"path": "a.gcode", "_timestamp": 10}"#);
    live(&mut m, Topic::Event("Disconnected"), r#"{"_timestamp": 20}"#);
    let out = live(&mut m, Topic::Event("PrintFailed"), r#"{"reason": "error", "_timestamp": 20}"#);
    assert_eq!(text(&out, "printer_state"), None);
    assert_eq!(m.state(), Some("offline"));
    assert_eq!(m.link(), Some(LinkWish::PrinterDown));
}

#[test]
fn cancel_sequence_ends_operational_with_both_events() {
    let mut m = Mapper::default();
    live(&mut m, Topic::Event("PrintStarted"), r#"{"path": "a.gcode", "_timestamp": 10}"#);
    let c = live(&mut m, Topic::Event("PrintCancelling"), r#"{"path": "a.gcode", "_timestamp": 11}"#);
    assert_eq!(text(&c, "printer_state").as_deref(), Some("cancelling"));
    let c = live(&mut m, Topic::Event("PrintCancelled"), r#"{"path": "a.gcode", "progress": 37, "_timestamp": 12}"#);
    assert_eq!(c.update.events[0].data["progress"], 37);
    assert_eq!(text(&c, "printer_state").as_deref(), Some("operational"));
    let f = live(&mut m, Topic::Event("PrintFailed"), r#"{"reason": "cancelled", "progress": 37, "_timestamp": 12}"#);
    assert_eq!(f.update.events[0].name, "print_failed");
    assert_eq!(f.update.events[0].data["reason"], "cancelled");
    assert_eq!(f.update.events[0].data["progress"], 37, "cancelled copies keep the int percent");
}

#[test]
fn unknown_events_pass_through_with_their_name_and_are_counted() {
    let mut m = Mapper::default();
    let out = live(&mut m, Topic::Event("BrandNewThing"), r#"{"someKey": 1, "_timestamp": 5}"#);
    assert_eq!(out.update.events[0].name, "brand_new_thing");
    assert_eq!(out.update.events[0].data["some_key"], 1);
    assert_eq!(out.problems[0].counted, Counted::Unknown);
    let plugin = live(&mut m, Topic::Event("plugin_psucontrol_psu_state_changed"), r#"{"isPSUOn": true}"#);
    assert_eq!(plugin.update.events[0].name, "plugin_psucontrol_psu_state_changed");
    assert!(plugin.problems.is_empty(), "documented plugin events are not unknown");
}

#[test]
fn retained_events_are_history_not_new_events() {
    let mut m = Mapper::default();
    let out = retained(&mut m, Topic::Event("PrintStarted"), r#"{"path": "old.gcode", "_timestamp": 1500000000}"#);
    assert!(out.update.events.is_empty());
    assert!(!out.update.fresh);
    assert_eq!(text(&out, "printer_state").as_deref(), Some("unknown"));
    assert_eq!(out.problems[0].counted, Counted::Rejected("retained_event"));
    // Retained by design (≥ 0.8.14): no event either, but not counted as stale.
    let z = retained(&mut m, Topic::Event("ZChange"), r#"{"new": 4.4, "old": 4.2, "_timestamp": 1700000000}"#);
    assert!(z.update.events.is_empty() && z.problems.is_empty());
}

#[test]
fn retained_firmware_data_still_gives_the_identity() {
    let mut m = Mapper::default();
    let out = retained(
        &mut m,
        Topic::Event("FirmwareData"),
        r#"{"name": "Marlin", "data": {"FIRMWARE_NAME": "Marlin 2.1.2", "MACHINE_TYPE": "Ender-3"}, "_event": "FirmwareData", "_timestamp": 1}"#,
    );
    let id = out.update.identity.unwrap();
    assert_eq!(id.firmware.as_deref(), Some("Marlin 2.1.2"));
    assert_eq!(id.model.as_deref(), Some("Ender-3"));
    assert!(out.update.events.is_empty());
}

#[test]
fn temperatures_are_null_safe_and_custom_keys_become_sensors() {
    let mut m = Mapper::default();
    let out = live(&mut m, Topic::Temperature("chamber"), r#"{"actual": 31.2, "target": null, "_timestamp": 1}"#);
    assert_eq!(num(&out, "temperature_chamber"), Some(31.2));
    assert_eq!(num(&out, "temperature_chamber_target"), None);
    let p = live(&mut m, Topic::Temperature("P"), r#"{"actual": 35.2, "target": null, "_timestamp": 1}"#);
    assert_eq!(num(&p, "temperature_p"), Some(35.2));
    let soc = live(&mut m, Topic::Temperature("soc"), r#"{"temperature": 48.3, "_timestamp": 1}"#);
    assert_eq!(num(&soc, "temperature_soc"), Some(48.3));
    let off = live(&mut m, Topic::Temperature("tool0"), r#"{"actual": 25.0, "target": 0.0, "_timestamp": 1}"#);
    assert_eq!(num(&off, "temperature_tool0_target"), Some(0.0), "a target of 0 means heater off, a real value");
    let bad = live(&mut m, Topic::Temperature("bed"), r#"{"actual": "hot", "_timestamp": 1}"#);
    assert_eq!(bad.problems[0].counted, Counted::ParseError("bad_type"));
}

#[test]
fn an_older_temperature_never_overwrites_a_newer_one() {
    let mut m = Mapper::default();
    let new = live(&mut m, Topic::Temperature("tool0"), r#"{"actual": 210.0, "target": 215.0, "_timestamp": 200}"#);
    assert_eq!(num(&new, "temperature_tool0"), Some(210.0));
    let old = live(&mut m, Topic::Temperature("tool0"), r#"{"actual": 100.0, "target": 215.0, "_timestamp": 150}"#);
    assert!(old.update.readings.is_empty());
    assert_eq!(old.problems[0].counted, Counted::Rejected("out_of_order"));
    // Another sensor has its own clock; the same second is accepted.
    let bed = live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.0, "_timestamp": 150}"#);
    assert_eq!(num(&bed, "temperature_bed"), Some(50.0));
    let same = live(&mut m, Topic::Temperature("tool0"), r#"{"actual": 211.0, "_timestamp": 200}"#);
    assert_eq!(num(&same, "temperature_tool0"), Some(211.0));
    assert_eq!(same.update.ts, OffsetDateTime::from_unix_timestamp(200).ok());
}

#[test]
fn a_timestamp_a_day_ahead_is_not_used_to_order_samples() {
    let mut m = Mapper::default();
    let future = OffsetDateTime::now_utc().unix_timestamp() + 3 * 86_400;
    let out = live(&mut m, Topic::Temperature("bed"), &format!(r#"{{"actual": 60.0, "_timestamp": {future}}}"#));
    assert_eq!(out.problems[0].counted, Counted::ParseError("future_timestamp"));
    assert_eq!(num(&out, "temperature_bed"), Some(60.0), "the value is still used");
    let next = live(&mut m, Topic::Temperature("bed"), r#"{"actual": 61.0, "_timestamp": 1700000000}"#);
    assert_eq!(num(&next, "temperature_bed"), Some(61.0));
}

#[test]
fn pre_0_6_temperatures_use_their_time_field() {
    let mut m = Mapper::default();
    live(&mut m, Topic::Temperature("bed"), r#"{"actual": 60.0, "target": 60.0, "time": 1500000100}"#);
    let old = live(&mut m, Topic::Temperature("bed"), r#"{"actual": 20.0, "target": 60.0, "time": 1500000000}"#);
    assert!(old.update.readings.is_empty());
}

#[test]
fn progress_without_printer_data_gives_progress_and_file_but_no_guessed_state() {
    let mut m = Mapper::default();
    let out = retained(
        &mut m,
        Topic::Progress("printing"),
        r#"{"location": "local", "path": "folder/benchy.gcode", "progress": 42, "_timestamp": 1700000000}"#,
    );
    assert_eq!(num(&out, "print_progress"), Some(42.0));
    assert_eq!(text(&out, "print_file").as_deref(), Some("folder/benchy.gcode"));
    assert_eq!(text(&out, "printer_state").as_deref(), Some("unknown"));
    assert!(!out.update.fresh);
    assert_eq!(m.link(), None, "a retained replay says nothing about the link");
}

#[test]
fn live_progress_of_a_running_job_resolves_an_unknown_state_to_printing() {
    let mut m = Mapper::default();
    retained(&mut m, Topic::Progress("printing"), r#"{"path": "a.gcode", "progress": 42, "_timestamp": 100}"#);
    let out = live(&mut m, Topic::Progress("printing"), r#"{"path": "a.gcode", "progress": 43, "_timestamp": 105}"#);
    assert_eq!(text(&out, "printer_state").as_deref(), Some("printing"));
    // ...but never overrides a known state.
    live(&mut m, Topic::Event("PrintPaused"), r#"{"path": "a.gcode", "_timestamp": 110}"#);
    let again = live(&mut m, Topic::Progress("printing"), r#"{"path": "a.gcode", "progress": 44, "_timestamp": 115}"#);
    assert_eq!(text(&again, "printer_state"), None);
    assert_eq!(m.state(), Some("paused"));
}

#[test]
fn printer_data_gives_times_state_and_precise_progress() {
    let mut m = Mapper::default();
    let out = retained(
        &mut m,
        Topic::Progress("printing"),
        r#"{"progress": 0, "_timestamp": 1525654824, "location": "local", "path": "Stringing_Test.gco", "printer_data": {"progress": {"completion": 0.008520926537352922, "printTimeLeftOrigin": "average", "printTime": 0, "printTimeLeft": 273, "filepos": 139}, "state": {"text": "Printing", "flags": {"cancelling": false, "paused": false, "operational": true, "pausing": false, "printing": true, "sdReady": true, "error": false, "ready": false, "closedOrError": false}}, "currentZ": null}}"#,
    );
    assert!((num(&out, "print_progress").unwrap() - 0.0085).abs() < 1e-3);
    assert_eq!(num(&out, "print_time_elapsed"), Some(0.0));
    assert_eq!(num(&out, "print_time_left"), Some(273.0));
    assert_eq!(text(&out, "printer_state").as_deref(), Some("printing"));
}

#[test]
fn print_time_genius_progress_is_taken_from_the_plugin() {
    let mut m = Mapper::default();
    let out = live(
        &mut m,
        Topic::Progress("printing"),
        r#"{"path": "a.gcode", "progress": 61, "printer_data": {"progress": {"completion": 48.2, "printTimeLeftOrigin": "genius", "printTime": 610, "printTimeLeft": 390}}, "_timestamp": 5}"#,
    );
    assert_eq!(num(&out, "print_progress"), Some(61.0));
}

#[test]
fn printer_data_does_not_undo_an_event_of_the_same_second() {
    let mut m = Mapper::default();
    live(&mut m, Topic::Event("PrintPaused"), r#"{"path": "a.gcode", "_timestamp": 100}"#);
    let pd = r#"{"path": "a.gcode", "progress": 40, "printer_data": {"state": {"text": "Printing", "flags": {"printing": true, "operational": true}}}, "_timestamp": 100}"#;
    let out = live(&mut m, Topic::Progress("printing"), pd);
    assert_eq!(text(&out, "printer_state"), None);
    let later = pd.replace("\"_timestamp\": 100", "\"_timestamp\": 101");
    let out = live(&mut m, Topic::Progress("printing"), &later);
    assert_eq!(text(&out, "printer_state").as_deref(), Some("printing"));
}

#[test]
fn disconnected_status_takes_the_host_down_and_the_state_to_unknown() {
    let mut m = Mapper::default();
    live(&mut m, Topic::Event("PrinterStateChanged"), r#"{"state_id": "OPERATIONAL", "_timestamp": 1}"#);
    assert_eq!(m.link(), Some(LinkWish::Up));
    let out = live(&mut m, Topic::Lwt, "disconnected");
    assert_eq!(m.link(), Some(LinkWish::HostDown));
    assert_eq!(text(&out, "printer_state").as_deref(), Some("unknown"));
    assert!(!out.update.fresh, "a status message is not a reading");
    // A retained state replay while OctoPrint is gone is not believed.
    let stale = retained(
        &mut m,
        Topic::Progress("printing"),
        r#"{"path": "a", "progress": 5, "printer_data": {"state": {"flags": {"printing": true}}}, "_timestamp": 9}"#,
    );
    assert_eq!(text(&stale, "printer_state"), None);
    live(&mut m, Topic::Lwt, "connected");
    assert_eq!(m.link(), Some(LinkWish::Up));
    let garbage = live(&mut m, Topic::Lwt, "maybe");
    assert_eq!(garbage.problems[0].counted, Counted::ParseError("bad_status"));
}

#[test]
fn half_a_minute_of_live_plugin_traffic_after_a_late_last_will_brings_the_host_back() {
    let mut m = Mapper::default();
    live(&mut m, Topic::Lwt, "connected");
    live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.0, "_timestamp": 100}"#);
    live(&mut m, Topic::Lwt, "disconnected");
    assert_eq!(m.link(), Some(LinkWish::HostDown));
    retained(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.2, "_timestamp": 101}"#);
    assert_eq!(m.link(), Some(LinkWish::HostDown), "a retained replay proves nothing");
    live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.4, "_timestamp": 102}"#);
    assert_eq!(m.link(), Some(LinkWish::HostDown), "one live message could be a shutdown's last gasp");
    live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.6, "_timestamp": 131}"#);
    assert_eq!(m.link(), Some(LinkWish::HostDown));
    live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.8, "_timestamp": 132}"#);
    assert_eq!(m.link(), Some(LinkWish::Up), "the plugin kept publishing for 30 s: a new connection");
    assert_eq!(m.state(), Some("unknown"));
}

#[test]
fn a_shutdown_event_between_disconnected_and_the_last_will_keeps_the_host_down() {
    // The order a real OctoPrint 1.11.8 + plugin 0.8.16 shutdown produces.
    let mut m = Mapper::default();
    live(&mut m, Topic::Lwt, "connected");
    live(&mut m, Topic::Event("PrinterStateChanged"), r#"{"state_id": "OPERATIONAL", "_timestamp": 100}"#);
    assert_eq!(m.link(), Some(LinkWish::Up));
    let mut links = Vec::new();
    live(&mut m, Topic::Lwt, "disconnected");
    links.push(m.link());
    let shutdown = live(&mut m, Topic::Event("Shutdown"), r#"{"_event": "Shutdown", "_timestamp": 101}"#);
    assert_eq!(shutdown.update.events[0].name, "shutdown", "the event itself is still published");
    links.push(m.link());
    live(&mut m, Topic::Lwt, "disconnected");
    links.push(m.link());
    assert_eq!(links, [Some(LinkWish::HostDown); 3]);
    // Only the plugin's own `connected` proves the next connection.
    live(&mut m, Topic::Lwt, "connected");
    assert_eq!(m.link(), Some(LinkWish::Up));
}

#[test]
fn a_done_print_ends_at_the_elapsed_time_the_plugins_next_tick_repeats() {
    // A real OctoPrint 1.11.8 + plugin 0.8.16: PrintDone's `time` is fractional, the progress tick
    // that follows has `printTime` in whole seconds (`int()`): the same value, not a change.
    let mut m = Mapper::default();
    live(
        &mut m,
        Topic::Progress("printing"),
        r#"{"location": "local", "path": "d.gcode", "progress": 66, "printer_data": {"progress": {"completion": 66.28, "filepos": 228, "printTime": 4, "printTimeLeft": 2, "printTimeLeftOrigin": "linear"}}, "_timestamp": 1796209617}"#,
    );
    let done = live(
        &mut m,
        Topic::Event("PrintDone"),
        r#"{"name": "d.gcode", "path": "d.gcode", "origin": "local", "size": 344, "owner": "admin", "time": 8.080070350999904, "_event": "PrintDone", "_timestamp": 1796209621}"#,
    );
    assert_eq!(num(&done, "print_time_elapsed"), Some(8.0));
    assert_eq!(num(&done, "print_time_left"), Some(0.0));
    assert_eq!(num(&done, "print_progress"), Some(100.0));
    assert_eq!(done.update.events[0].data["duration"], 8.08, "the event keeps the precise duration");
    let tick = live(
        &mut m,
        Topic::Progress("printing"),
        r#"{"location": "local", "path": "d.gcode", "progress": 100, "printer_data": {"progress": {"completion": 100.0, "filepos": 344, "printTime": 8, "printTimeLeft": 0, "printTimeLeftOrigin": null}}, "_timestamp": 1796209623}"#,
    );
    assert_eq!(num(&tick, "print_time_elapsed"), num(&done, "print_time_elapsed"));
}

#[test]
fn null_print_times_after_a_cancel_make_the_times_absent() {
    let mut m = Mapper::default();
    let running = live(
        &mut m,
        Topic::Progress("printing"),
        r#"{"path": "a.gcode", "progress": 70, "printer_data": {"progress": {"completion": 70.2, "printTime": 4, "printTimeLeft": 34}}, "_timestamp": 100}"#,
    );
    assert_eq!(num(&running, "print_time_left"), Some(34.0));
    let cancelled = live(
        &mut m,
        Topic::Progress("printing"),
        r#"{"path": "a.gcode", "progress": 0, "printer_data": {"progress": {"completion": null, "filepos": null, "printTime": null, "printTimeLeft": null, "printTimeLeftOrigin": null}}, "_timestamp": 101}"#,
    );
    assert_eq!(value(&cancelled, "print_time_left"), Some(absent()));
    assert_eq!(value(&cancelled, "print_time_elapsed"), Some(absent()));
    assert_eq!(num(&cancelled, "print_progress"), Some(0.0), "the plugin's own progress 0 is a value");
    assert!(cancelled.problems.is_empty(), "{:?}", cancelled.problems);
    // Without printer_data (or without the keys) the times are left alone.
    let plain = live(&mut m, Topic::Progress("printing"), r#"{"path": "a.gcode", "progress": 0, "_timestamp": 102}"#);
    assert_eq!(value(&plain, "print_time_left"), None);
}

#[test]
fn a_retained_disconnected_at_start_up_is_host_down() {
    let mut m = Mapper::default();
    retained(&mut m, Topic::Lwt, "disconnected");
    assert_eq!(m.link(), Some(LinkWish::HostDown));
    assert_eq!(m.state(), Some("unknown"));
}

#[test]
fn printer_offline_then_live_temperatures_bring_it_back_as_unknown() {
    let mut m = Mapper::default();
    live(&mut m, Topic::Event("PrinterStateChanged"), r#"{"state_id": "OFFLINE", "_timestamp": 100}"#);
    assert_eq!(m.link(), Some(LinkWish::PrinterDown));
    // Same second: could be the last sample before the disconnect.
    live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.0, "_timestamp": 100}"#);
    assert_eq!(m.link(), Some(LinkWish::PrinterDown));
    let out = live(&mut m, Topic::Temperature("bed"), r#"{"actual": 50.5, "_timestamp": 130}"#);
    assert_eq!(m.link(), Some(LinkWish::Up));
    assert_eq!(text(&out, "printer_state").as_deref(), Some("unknown"));
}

#[test]
fn slicing_progress_ignores_the_start_up_reset() {
    let mut m = Mapper::default();
    let reset = live(
        &mut m,
        Topic::Progress("slicing"),
        r#"{"slicer": "", "source_location": "", "source_path": "", "destination_location": "", "destination_path": "", "progress": 0, "_timestamp": 1}"#,
    );
    assert_eq!(num(&reset, "slicing_progress"), None);
    let real = live(
        &mut m,
        Topic::Progress("slicing"),
        r#"{"progress": 42, "source_location": "local", "source_path": "test.stl", "destination_location": "local", "destination_path": "test.gcode", "slicer": "cura"}"#,
    );
    assert_eq!(num(&real, "slicing_progress"), Some(42.0));
}

#[test]
fn live_metadata_becomes_an_event_and_clearing_it_does_nothing() {
    let mut m = Mapper::default();
    let out = live(&mut m, Topic::Metadata("slicer_settings.material_type"), "PLA");
    let e = &out.update.events[0];
    assert_eq!(e.name, "print_metadata");
    assert_eq!(e.data["key"], "slicer_settings.material_type");
    assert_eq!(e.data["value"], "PLA");
    let num_meta = live(&mut m, Topic::Metadata("layer_height"), "0.2");
    assert_eq!(num_meta.update.events[0].data["value"], 0.2);
    assert!(live(&mut m, Topic::Metadata("layer_height"), "").update.events.is_empty());
    assert!(retained(&mut m, Topic::Metadata("layer_height"), "0.2").update.events.is_empty());
}

#[test]
fn paused_for_user_is_published_once_a_minute_while_it_repeats() {
    let mut m = Mapper::default();
    let first = live(&mut m, Topic::Event("PausedForUser"), r#"{"_event": "PausedForUser", "_timestamp": 1000}"#);
    assert_eq!(first.update.events.len(), 1);
    for t in [1002, 1004, 1059] {
        let again = live(&mut m, Topic::Event("PausedForUser"), &format!(r#"{{"_timestamp": {t}}}"#));
        assert!(again.update.events.is_empty(), "t={t}");
    }
    let later = live(&mut m, Topic::Event("PausedForUser"), r#"{"_timestamp": 1060}"#);
    assert_eq!(later.update.events.len(), 1);
}

#[test]
fn garbage_payloads_are_counted_and_never_panic() {
    let mut m = Mapper::default();
    let topics = [
        Topic::Event("PrintDone"),
        Topic::Event("PrinterStateChanged"),
        Topic::Progress("printing"),
        Topic::Progress("slicing"),
        Topic::Temperature("tool0"),
        Topic::Lwt,
        Topic::Metadata("x"),
    ];
    let payloads = [
        "",
        "{",
        "[1,2]",
        "null",
        "\"x\"",
        "{\"_timestamp\": \"soon\"}",
        "{\"_timestamp\": -5}",
        "{\"progress\": \"half\"}",
        "{\"state_id\": 5}",
        "{\"printer_data\": 7}",
        "\u{0}",
        "💥",
        "{\"actual\": 1e999}",
        "{\"time\": \"x\", \"path\": 3}",
    ];
    for t in topics {
        for p in payloads {
            let _ = live(&mut m, t, p);
            let _ = retained(&mut m, t, p);
        }
    }
    let out = live(&mut m, Topic::Temperature("tool0"), "{");
    assert_eq!(out.problems[0].counted, Counted::ParseError("invalid_json"));
}

#[test]
fn temperature_keys_are_bounded() {
    let mut m = Mapper::default();
    for i in 0..(MAX_SENSORS + 5) {
        let _ = live(&mut m, Topic::Temperature(&format!("s{i}")), r#"{"actual": 1.0}"#);
    }
    let out = live(&mut m, Topic::Temperature("one_more"), r#"{"actual": 1.0}"#);
    assert_eq!(out.problems[0].counted, Counted::Rejected("too_many_sensors"));
}

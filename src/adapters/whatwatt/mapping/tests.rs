//! Unit tests of the whatwatt mapping: the tables, the three dialects against the captures under
//! `adapters/whatwatt/fixtures/`, the template reader and the contract conversions.

use super::*;

fn json(s: &str) -> Json {
    serde_json::from_str(s).unwrap()
}

fn get(u: &Update, name: &str) -> Option<f64> {
    u.readings.iter().find(|(q, _)| q.name() == name).and_then(|(_, v)| v.as_f64())
}

fn names(u: &Update) -> Vec<&'static str> {
    let mut v: Vec<_> = u.readings.iter().map(|(q, _)| q.name()).collect();
    v.sort_unstable();
    v
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn every_table_row_names_a_signal_and_every_preset_a_variable() {
    let t = tables();
    assert!(t.report.len() >= 70, "{}", t.report.len());
    assert!(t.sse.len() >= 40);
    assert!(t.variables.len() >= 80);
    assert!(t.mqtt_fields.iter().filter(|(p, _, _)| *p == "ha").count() == 30);
    let _ = quantities();
}

#[test]
fn the_report_converts_kilowatts_to_watts_and_keeps_kilowatt_hours() {
    let v = json(include_str!("../../../../adapters/whatwatt/fixtures/gl_report_kamstrup_kmp_fw2.8.2.json"));
    let mut r = Reading::default();
    let mut issues = Vec::new();
    read_report(&v, &mut r, &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    let mut u = Update::fresh();
    to_update(&r, &Options::default(), &mut u);
    assert!(close(get(&u, "power_import"), 212.0));
    assert!(close(get(&u, "power"), 212.0));
    assert!(close(get(&u, "power_l3"), 168.0));
    assert!(close(get(&u, "energy_import"), 10526.027));
    assert!(close(get(&u, "energy_import_t2"), 2486.751));
    assert!(close(get(&u, "reactive_power_export"), 109.0));
    assert!(close(get(&u, "power_factor"), 0.88));
    assert!(close(get(&u, "uptime"), 2065.0));
    assert_eq!(get(&u, "apparent_power"), None, "absent stays absent");
    assert_eq!(u.ts, Some(time::macros::datetime!(2026-10-02 15:35:46 UTC)), "date_time_utc, not date_time");
}

#[test]
fn net_power_is_import_minus_export() {
    let mut r = Reading::default();
    r.set_num(Sig::PIn, 0.4);
    r.set_num(Sig::POut, 1.1);
    r.set_num(Sig::PInL1, 0.0);
    r.set_num(Sig::POutL1, 1.1);
    let mut u = Update::fresh();
    to_update(&r, &Options::default(), &mut u);
    assert!(close(get(&u, "power"), -700.0));
    assert!(close(get(&u, "power_export"), 1100.0));
    assert!(close(get(&u, "power_l1"), -1100.0));
}

#[test]
fn net_power_needs_both_directions() {
    let mut r = Reading::default();
    r.set_num(Sig::PIn, 0.4);
    let mut u = Update::fresh();
    to_update(&r, &Options::default(), &mut u);
    assert_eq!(names(&u), ["power_import"], "no made-up export of 0");
}

#[test]
fn phantom_and_dead_phases_are_dropped() {
    let v = json(include_str!("../../../../adapters/whatwatt/fixtures/docs_report_ensor_p1_dsmr.json"));
    let mut r = Reading::default();
    let mut issues = Vec::new();
    read_report(&v, &mut r, &mut issues);
    let mut u = Update::fresh();
    to_update(&r, &Options::default(), &mut u);
    assert!(close(get(&u, "voltage_l1"), 234.01));
    assert_eq!(get(&u, "voltage_l2"), None, "36.12 V is a phantom");
    assert_eq!(get(&u, "power_l3"), None);
    assert_eq!(get(&u, "current_l2"), None);
    let mut u = Update::fresh();
    to_update(&r, &Options { phase_min_voltage: 0.0 }, &mut u);
    assert!(close(get(&u, "voltage_l2"), 36.12), "0 turns the check off");
}

#[test]
fn the_local_time_with_a_wrong_z_is_never_the_timestamp() {
    let v = json(include_str!("../../../../adapters/whatwatt/fixtures/tp_report_landisgyr_mbus_2025-04-14.json"));
    let mut r = Reading::default();
    let mut issues = Vec::new();
    read_report(&v, &mut r, &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(r.text(Txt::TsLocalZ), Some("2025-04-14T21:53:10Z"));
    assert_eq!(source_ts(&r), None, "old firmware without date_time_utc: stamped on receipt");
    let mut r = Reading::default();
    r.text[Txt::TsLocalZ as usize] = Some("2025-10-07T14:26:10Z".into());
    r.text[Txt::TsOffset as usize] = Some("2025-10-07T14:26:10+02:00".into());
    assert_eq!(source_ts(&r), Some(time::macros::datetime!(2025-10-07 12:26:10 UTC)));
}

#[test]
fn a_meter_status_other_than_ok_yields_no_values() {
    let v = json(
        r#"{"report":{"id":1,"instantaneous_power":{"active":{"positive":{"total":1.5}}}},"meter":{"status":"KEY REQUIRED"}}"#,
    );
    let mut r = Reading::default();
    read_report(&v, &mut r, &mut Vec::new());
    let mut u = Update::fresh();
    to_update(&r, &Options::default(), &mut u);
    assert!(u.readings.is_empty());
    assert_eq!(r.text(Txt::MeterStatus), Some("KEY REQUIRED"));
}

#[test]
fn unknown_report_leaves_are_reported_by_path() {
    let v = json(r#"{"report":{"id":1,"new_thing":{"x":1}},"meter":{"status":"OK"}}"#);
    let mut issues = Vec::new();
    read_report(&v, &mut Reading::default(), &mut issues);
    assert_eq!(issues, [Issue::Unknown("report.new_thing.x".into())]);
}

#[test]
fn the_documented_sse_event_maps_every_key() {
    let text = include_str!("../../../../adapters/whatwatt/fixtures/docs_live_sse_event.txt");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let v = json(data);
    let mut r = Reading::default();
    let mut issues = Vec::new();
    read_sse(v.as_object().unwrap(), &mut r, &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    read_volume(v.get("Vol"), &VolumeFrom::Auto, &mut r);
    let mut u = Update::fresh();
    to_update(&r, &Options::default(), &mut u);
    assert!(close(get(&u, "power"), 36.0));
    assert!(close(get(&u, "voltage_l2"), 229.8));
    assert!(close(get(&u, "energy_export_t1"), 7.868));
    assert!(close(get(&u, "tariff"), 1.0));
    assert!(close(get(&u, "uptime"), 255_780.0), "71.05 h");
    assert!(close(get(&u, "volume"), 123.45));
    assert_eq!(u.ts, None, "the stream has no UTC time: stamped on receipt");
}

#[test]
fn quoted_numbers_and_null_strings_are_accepted() {
    assert_eq!(number(&json("\"0.006\"")), Ok(Some(0.006)));
    assert_eq!(number(&json("\"null\"")), Ok(None));
    assert_eq!(number(&json("\"\"")), Ok(None));
    assert_eq!(number(&json("null")), Ok(None));
    assert_eq!(number(&json("233")), Ok(Some(233.0)));
    assert_eq!(number(&json("\"abc\"")), Err("bad_type"));
    assert_eq!(number(&json("[1]")), Err("bad_type"));
}

#[test]
fn the_ha_template_payload_reads_with_the_presets() {
    let v = json(include_str!("../../../../adapters/whatwatt/fixtures/constructed_mqtt_ha_template_quoted.json"));
    let mut r = Reading::default();
    let mut issues = Vec::new();
    read_payload(&v, &FieldMap::presets(), &mut r, &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    let mut u = Update::fresh();
    to_update(&r, &Options::default(), &mut u);
    assert!(close(get(&u, "power"), 1845.0));
    assert!(close(get(&u, "power_l2"), 433.0));
    assert_eq!(get(&u, "energy_import_t1"), None, "\"null\" is absent");
    assert_eq!(get(&u, "apparent_power"), None);
    assert!(close(get(&u, "tariff"), 2.0));
    assert_eq!(u.ts, OffsetDateTime::from_unix_timestamp(1_790_000_000).ok());
    assert_eq!(r.text(Txt::SysId), Some("A1B2C3D4E5F6"));
}

#[test]
fn the_ha_example_with_an_iso_time_is_a_utc_timestamp() {
    let v = json(include_str!("../../../../adapters/whatwatt/fixtures/ha_integration_example_mqtt_message.json"));
    let mut r = Reading::default();
    let mut issues = Vec::new();
    read_payload(&v, &FieldMap::presets(), &mut r, &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(source_ts(&r), Some(time::macros::datetime!(2025-03-27 22:00:00 UTC)));
}

#[test]
fn the_docs_template_payload_never_uses_its_local_datetime() {
    let v = json(include_str!("../../../../adapters/whatwatt/fixtures/docs_mqtt_message_example.json"));
    let mut r = Reading::default();
    let mut issues = Vec::new();
    read_payload(&v, &FieldMap::presets(), &mut r, &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(source_ts(&r), None);
    let mut u = Update::fresh();
    to_update(&r, &Options::default(), &mut u);
    assert!(close(get(&u, "power"), 14.0));
    assert!(close(get(&u, "energy_import"), 200.934));
}

#[test]
fn a_template_gives_its_own_field_map() {
    let tmpl = include_str!("../../../../adapters/whatwatt/fixtures/docs_mqtt_template_example.tmpl");
    let TemplateFields { fields, mixed } = fields_from_template(tmpl).unwrap();
    assert!(mixed.is_empty());
    assert!(fields.contains(&("Meter.DateTime".into(), "meter.date_time".into())));
    assert!(fields.contains(&("P_In".into(), "1_7_0".into())));
    assert_eq!(fields_from_template(BRIDGE_TEMPLATE).unwrap().fields.len(), 31);
    let TemplateFields { fields, mixed } =
        fields_from_template(r#"{"id":"gw-${sys.id}","p":${1_7_0},"k":"const"}"#).unwrap();
    assert_eq!(fields, [("p".to_string(), "1_7_0".to_string())]);
    assert_eq!(mixed, ["id"]);
    assert!(fields_from_template("{\"p\": ${1_7_0}").is_err());
    assert!(FieldMap::from_pairs([("x", "nope")]).is_err());
}

#[test]
fn sub_meters_are_picked_by_bus_meter_id_or_when_alone() {
    let arr = json(r#"[{"bus":1,"meter_id":"A","cumulative":1.5},{"bus":2,"meter_id":"B","cumulative":7}]"#);
    let mut r = Reading::default();
    let seen = read_volume(Some(&arr), &VolumeFrom::Auto, &mut r);
    assert_eq!((seen.entries, seen.with_reading, r.volume), (2, 2, None), "ambiguous: none");
    read_volume(Some(&arr), &VolumeFrom::parse("2"), &mut r);
    assert_eq!(r.volume, Some(7.0));
    let mut r = Reading::default();
    read_volume(Some(&arr), &VolumeFrom::parse("A"), &mut r);
    assert_eq!(r.volume, Some(1.5));
    let ensor = json(r#"[{"bus":1,"meter_id":"20000741"}]"#);
    let mut r = Reading::default();
    assert_eq!(read_volume(Some(&ensor), &VolumeFrom::Auto, &mut r).with_reading, 0);
    assert_eq!(r.volume, None, "an entry without a reading publishes nothing");
}

#[test]
fn the_system_answer_gives_identity_licence_and_meter() {
    let v = json(include_str!("../../../../adapters/whatwatt/fixtures/docs_system_get_fw1.10.0.json"));
    let s = read_system(&v);
    assert_eq!(s.identity.serial.as_deref(), Some("ECC9FF5C7F14"));
    assert_eq!(s.identity.firmware.as_deref(), Some("1.10.0"));
    assert_eq!(s.identity.model.as_deref(), Some("WW_Go_1.2"));
    assert_eq!(s.identity.name, None, "empty name is absent");
    assert_eq!(s.licence.as_deref(), Some("PLUS"));
    assert_eq!(s.meter_status.as_deref(), Some("OK"));
    assert_eq!(s.meter.as_deref(), Some("Landis+Gyr LGZ1030784855204 (MBUS/DLMS)"));
    assert_eq!(s.mqtt_client, Some((false, false)));
    assert_eq!(s.rssi, Some(-29.0));
    assert!(!s.licence_free());
}

#[test]
fn timestamps_before_2000_are_an_unset_clock() {
    assert_eq!(parse_ts("1970-01-01T00:00:05Z"), None);
    let mut r = Reading::default();
    r.set_num(Sig::TsUnix, 5.0);
    assert_eq!(source_ts(&r), None);
}

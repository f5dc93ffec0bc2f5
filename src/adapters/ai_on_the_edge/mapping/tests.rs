//! Tests of `mapping`, kept beside it so the module reads as code.

use super::*;

fn water() -> &'static Meter {
    meter("water", None).unwrap()
}

fn get(u: &Update, name: &str) -> Option<Value> {
    u.readings.iter().find(|(q, _)| q.name() == name).map(|(_, v)| v.clone())
}

fn rec(value: Option<&str>, raw: Option<&str>, error: Option<&str>, rate: Option<&str>) -> Record {
    Record {
        value: value.map(str::to_owned),
        raw: raw.map(str::to_owned),
        error: error.map(str::to_owned),
        rate: rate.map(str::to_owned),
        timestamp: None,
        name: None,
    }
}

#[test]
fn tables_parse_and_every_target_is_a_contract_quantity() {
    let t = tables();
    assert!(t.upstream.len() >= 12 && t.clusters.len() >= 15 && t.fields.len() >= 20);
    assert!(t.meters.iter().all(|m| m.factor > 0.0 && m.rate_factor > 0.0));
    assert_eq!(meter("energy", None).unwrap().quantity.name(), "energy_import");
    assert_eq!(units_of("gas"), ["m3", "ft3"]);
}

#[test]
fn upstream_topics_classify_by_name_and_depth() {
    assert_eq!(classify("connection"), Classified::Device(Dialect::Upstream, DeviceRole::Connection));
    assert_eq!(classify("Wifi RSSI"), Classified::Device(Dialect::Upstream, DeviceRole::Rssi));
    assert_eq!(
        classify("main/value"),
        Classified::Sequence { dialect: Dialect::Upstream, key: "main", role: FieldRole::Value }
    );
    assert_eq!(
        classify("json"),
        Classified::Sequence { dialect: Dialect::Upstream, key: "default", role: FieldRole::Json }
    );
    assert_eq!(
        classify("main/rate_per_digitalization_round"),
        Classified::Sequence { dialect: Dialect::Upstream, key: "main", role: FieldRole::Ignore }
    );
    assert_eq!(classify("ctrl/flow_start"), Classified::Control);
    assert_eq!(classify("GPIO/GPIO12"), Classified::Gpio);
    assert_eq!(classify("main/brand_new_field"), Classified::Unknown);
    assert_eq!(classify("a/b/c"), Classified::Unknown);
}

#[test]
fn cluster_topics_classify_into_device_and_process_data() {
    assert_eq!(classify("device/status/connection"), Classified::Device(Dialect::Clusters, DeviceRole::Connection));
    assert_eq!(
        classify("process/data/1/value_status"),
        Classified::Sequence { dialect: Dialect::Clusters, key: "1", role: FieldRole::Error }
    );
    assert_eq!(
        classify("process/data/0/json"),
        Classified::Sequence { dialect: Dialect::Clusters, key: "0", role: FieldRole::Json }
    );
    assert_eq!(classify("process/ctrl/set_fallbackvalue"), Classified::Control);
    assert_eq!(classify("device/gpio/GPIO4/state"), Classified::Gpio);
    assert_eq!(classify("process/data/1/x/y"), Classified::Unknown);
    // An upstream sequence may be called `process`: two levels are always upstream.
    assert_eq!(
        classify("process/value"),
        Classified::Sequence { dialect: Dialect::Upstream, key: "process", role: FieldRole::Value }
    );
}

#[test]
fn the_current_all_string_multiline_json_parses() {
    let body = "  {\n    \"value\": \"512.3025\",\n    \"raw\": \"0512.3025\",\n    \"pre\": \"512.3025\",\n    \"error\": \"no error\",\n    \"rate\": \"0.000100\",\n    \"timestamp\": \"2025-03-22T16:18:58+0100\"\n  }\n";
    let j = parse_json(body).unwrap();
    assert!(j.well_formed && j.unknown_keys.is_empty());
    assert_eq!(j.record.value.as_deref(), Some("512.3025"));
    assert_eq!(j.record.raw.as_deref(), Some("0512.3025"));
    assert_eq!(j.record.rate.as_deref(), Some("0.000100"));
}

#[test]
fn bare_numbers_of_older_firmware_keep_their_digits() {
    let j = parse_json(
        r#"{"value":704.529,"raw":"00704.529","error":"no error","rate":0.000000,"timestamp":"2022-08-26T00:03:18"}"#,
    )
    .unwrap();
    assert!(j.well_formed);
    assert_eq!(j.record.value.as_deref(), Some("704.529"));
    assert_eq!(j.record.rate.as_deref(), Some("0.0"));
}

#[test]
fn malformed_json_of_v13_0_5_is_recovered_by_scanning() {
    let j = parse_json(r#"{"value": 638.7192, "raw": "0638.7192, "pre": "638.7192", "error": "no error", "rate": 0.000000, "timestamp": "2022-12-14T10:12:19+0100"}"#).unwrap();
    assert!(!j.well_formed);
    assert_eq!(j.record.value.as_deref(), Some("638.7192"));
    assert_eq!(j.record.raw.as_deref(), Some("0638.7192"));
    assert_eq!(j.record.error.as_deref(), Some("no error"));
    assert_eq!(j.record.timestamp.as_deref(), Some("2022-12-14T10:12:19+0100"));
}

#[test]
fn malformed_json_of_v10_0_0_is_recovered_by_scanning() {
    let j = parse_json(
        r#"{"value":288.5381,"raw":"00288.5381,"error":"no error","rate":0.000000,"timestamp":"2022-01-01T10:00:00"}"#,
    )
    .unwrap();
    assert!(!j.well_formed);
    assert_eq!(j.record.raw.as_deref(), Some("00288.5381"));
    assert_eq!(j.record.value.as_deref(), Some("288.5381"));
}

#[test]
fn the_v8_error_inside_value_becomes_a_rejected_reading() {
    let body = "{\"value\":1355.9060\tRate too high - Read: 1356.8436 - Pre: 1355.9060,\"error\":\"Rate too high - Read: 1356.8436 - Pre: 1355.9060\",\"rate\":0.000000,\"timestamp\":\"\"}";
    let j = parse_json(body).unwrap();
    assert!(!j.well_formed);
    let mut u = Update::default();
    let r = reading(&j.record, water(), &mut u);
    assert_eq!(r.outcome, Outcome::Rejected("device_rate_too_high"));
    assert!(get(&u, "volume").is_none());
}

#[test]
fn garbage_that_is_not_json_yields_nothing() {
    assert!(parse_json("hello").is_none());
    assert!(parse_json("").is_none());
}

#[test]
fn the_fork_json_uses_its_own_field_names() {
    let j = parse_json(r#"{"actual_value": "146.540", "fallback_value": "146.540", "raw_value": "146.539", "value_status": "E91 Rate negative", "rate_per_min": "0.0000", "rate_per_processing": "0.000", "timestamp_processed": "2024-02-02T20:13:54+0100"}"#).unwrap();
    assert!(j.well_formed && j.unknown_keys.is_empty());
    let mut u = Update::default();
    let r = reading(&j.record, water(), &mut u);
    assert_eq!(r.outcome, Outcome::Rejected("device_negative_rate"));
    assert!(get(&u, "volume").is_none(), "the fork's fallback value is not a new reading");
    assert_eq!(get(&u, "reading_error"), Some(Value::Text("E91 Rate negative".into())));
}

#[test]
fn unknown_json_keys_are_reported_as_drift() {
    let j = parse_json(r#"{"value": "1", "shiny": "x"}"#).unwrap();
    assert_eq!(j.unknown_keys, ["shiny"]);
}

#[test]
fn a_good_reading_publishes_total_rate_raw_and_an_empty_error() {
    let mut u = Update::default();
    let r = reading(&rec(Some("512.3025"), Some("0512.3025"), Some("no error"), Some("0.000100")), water(), &mut u);
    assert_eq!(r.outcome, Outcome::Good);
    assert_eq!(get(&u, "volume"), Some(Value::Number(512.3025)));
    let Some(Value::Number(flow)) = get(&u, "flow_rate") else { panic!("flow_rate") };
    assert!((flow - 0.006).abs() < 1e-12, "0.0001 m³/min is 0.006 m³/h, got {flow}");
    assert_eq!(get(&u, "reading_raw"), Some(Value::Text("0512.3025".into())));
    assert_eq!(get(&u, "reading_error"), Some(Value::Text("".into())));
}

#[test]
fn a_neg_rate_round_publishes_no_value_and_the_trimmed_error() {
    let mut u = Update::default();
    let text = "Neg. Rate - Read:  - Raw: 0512.3015 - Pre: 512.3025 ";
    let r = reading(&rec(Some(""), Some("0512.3015"), Some(text), Some("")), water(), &mut u);
    assert_eq!(r.outcome, Outcome::Rejected("device_negative_rate"));
    assert!(get(&u, "volume").is_none() && get(&u, "flow_rate").is_none());
    assert_eq!(get(&u, "reading_error"), Some(Value::Text(text.trim().to_owned().into())));
}

#[test]
fn an_unsubstitutable_n_is_a_rejection_with_a_clear_text() {
    let mut u = Update::default();
    let r = reading(&rec(Some(""), Some("04931.N"), Some(""), Some("")), water(), &mut u);
    assert_eq!(r.outcome, Outcome::Rejected("device_unreadable_digits"));
    assert_eq!(get(&u, "reading_error"), Some(Value::Text(UNREADABLE_DIGITS.into())));
    assert_eq!(get(&u, "reading_raw"), Some(Value::Text("04931.N".into())), "raw is text, never a number");
}

#[test]
fn a_substituted_n_in_raw_with_a_value_is_a_good_reading() {
    let mut u = Update::default();
    let r = reading(&rec(Some("587.315"), Some("N00587.315"), Some("no error"), None), water(), &mut u);
    assert_eq!(r.outcome, Outcome::Good);
    assert_eq!(get(&u, "volume"), Some(Value::Number(587.315)));
    assert!(get(&u, "flow_rate").is_none(), "no rate, no made-up 0");
}

#[test]
fn only_raw_digits_are_a_partial_round() {
    let mut u = Update::default();
    let r = reading(&rec(None, Some("2N4.6256"), None, None), water(), &mut u);
    assert_eq!(r.outcome, Outcome::Partial);
    assert_eq!(u.readings.len(), 1);
}

#[test]
fn litres_and_energy_meters_convert_to_canonical_units() {
    let mut u = Update::default();
    reading(&rec(Some("1500"), None, None, Some("2.000000")), meter("water", Some("l")).unwrap(), &mut u);
    assert_eq!(get(&u, "volume"), Some(Value::Number(1.5)));
    assert_eq!(get(&u, "flow_rate"), Some(Value::Number(0.12)));
    let mut u = Update::default();
    reading(&rec(Some("12345.6"), None, None, Some("0.010000")), meter("energy", None).unwrap(), &mut u);
    assert_eq!(get(&u, "energy_import"), Some(Value::Number(12345.6)));
    assert_eq!(get(&u, "power"), Some(Value::Number(600.0)), "0.01 kWh per minute is 600 W");
}

#[test]
fn a_value_that_is_not_a_number_is_reported_not_published() {
    let mut u = Update::default();
    let r = reading(&rec(Some("51,3"), None, Some("no error"), None), water(), &mut u);
    assert_eq!(r.bad_field, Some(("bad_number", "value")));
    assert!(get(&u, "volume").is_none());
}

#[test]
fn decimals_parse_like_the_firmware_prints_them() {
    assert_eq!(parse_decimal("512.3025"), Some(512.3025));
    assert_eq!(parse_decimal(" -0.000000 "), Some(-0.0));
    assert_eq!(parse_decimal("1843"), Some(1843.0));
    for bad in ["", "1,5", "1.2.3", "nan", "inf", "-", "1e5", "04931.N"] {
        assert_eq!(parse_decimal(bad), None, "{bad}");
    }
}

#[test]
fn timestamps_with_and_without_offset() {
    let Stamp::At(t) = parse_timestamp("2025-03-22T16:18:58+0100") else { panic!() };
    assert_eq!(t, time::macros::datetime!(2025-03-22 15:18:58 UTC));
    assert!(matches!(parse_timestamp("2025-03-22T16:18:58+01:00"), Stamp::At(_)));
    assert_eq!(parse_timestamp("2022-08-26T00:03:18"), Stamp::NoOffset);
    assert_eq!(parse_timestamp("1970-01-01T00:00:12+0000"), Stamp::Unsynced);
    assert_eq!(parse_timestamp(""), Stamp::Missing);
    assert_eq!(parse_timestamp("yesterday"), Stamp::Missing);
}

#[test]
fn errors_classify_by_prefix() {
    assert_eq!(classify_error("no error"), ErrorClass::Ok);
    assert_eq!(classify_error("000 Valid"), ErrorClass::Ok);
    assert_eq!(
        classify_error("Rate too high - Read: 513.1 - Pre: 512.3 - Rate: 0.8"),
        ErrorClass::Rejected("device_rate_too_high")
    );
    assert_eq!(
        classify_error("E90 No data to substitute N | Raw: 0N1"),
        ErrorClass::Rejected("device_unreadable_digits")
    );
    assert_eq!(classify_error("  "), ErrorClass::None);
    assert_eq!(classify_error("Something new"), ErrorClass::Unknown);
}

#[test]
fn device_numbers_are_checked_for_plausibility() {
    assert_eq!(device_number(DeviceRole::Uptime, "1843"), Ok(Some((Quantity::known("uptime"), 1843.0))));
    assert_eq!(device_number(DeviceRole::Uptime, "1642490972"), Err("implausible_uptime"));
    assert_eq!(device_number(DeviceRole::Rssi, "-127"), Ok(None));
    assert_eq!(device_number(DeviceRole::Rssi, "-61"), Ok(Some((Quantity::known("rssi"), -61.0))));
    assert_eq!(device_number(DeviceRole::Temperature, "470"), Err("implausible_temperature"));
    assert_eq!(device_number(DeviceRole::Temperature, "x"), Err("bad_number"));
}

#[test]
fn connection_payloads_of_both_dialects() {
    assert_eq!(connection_state("connected"), Some(true));
    assert_eq!(connection_state("online"), Some(true));
    assert_eq!(connection_state("connection lost"), Some(false));
    assert_eq!(connection_state("offline"), Some(false));
    assert_eq!(connection_state("maybe"), None);
}

#[test]
fn upstream_discovery_gives_meter_sequence_and_firmware() {
    let p = br#"{"~": "watermeter","unique_id": "watermeter-value","state_topic": "~/main/value","unit_of_meas": "m\u00b3","device_class": "water","state_class": "total_increasing","device": {"identifiers": ["watermeter"],"model": "Meter Digitizer","manufacturer": "AI on the Edge Device","sw_version": "v16.1.0"}}"#;
    let d = parse_discovery(p, "watermeter").unwrap().unwrap();
    assert_eq!(d.value_of.as_deref(), Some("main"));
    assert_eq!(meter_from_discovery(d.device_class.as_deref(), d.unit.as_deref()), meter("water", Some("m3")));
    assert_eq!(d.firmware.as_deref(), Some("v16.1.0"));
    assert_eq!(parse_discovery(p, "gasmeter").unwrap(), None, "another device's config");
    assert_eq!(parse_discovery(b"", "watermeter").unwrap(), None);
    assert_eq!(parse_discovery(b"{nope", "watermeter"), Err("invalid_discovery_json"));
}

#[test]
fn fork_discovery_with_abbreviated_keys_points_at_process_data() {
    let p = br#"{"~": "water/watermeterTest","stat_t": "~/process/data/1/json","val_tpl": "{{value_json.actual_value}}","unit_of_meas": "m\u00b3","dev_cla": "water","dev": {"ids": ["watermeterTest"]}}"#;
    let d = parse_discovery(p, "water/watermeterTest").unwrap().unwrap();
    assert_eq!(d.value_of.as_deref(), Some("1"));
    assert_eq!(d.device_class.as_deref(), Some("water"));
}

#[test]
fn discovery_of_meter_types_the_bridge_cannot_map_gives_no_meter() {
    assert!(meter_from_discovery(Some("temperature"), Some("°C")).is_none());
    assert!(meter_from_discovery(None, None).is_none());
    assert_eq!(meter_from_discovery(Some("energy"), Some("kWh")), meter("energy", Some("kwh")));
    assert_eq!(meter_from_discovery(Some("gas"), Some("ft³")), meter("gas", Some("ft3")));
}

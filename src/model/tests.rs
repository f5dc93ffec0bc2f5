//! Tests of `model`, kept beside it so the module reads as code.

use super::*;
use proptest::strategy::Strategy as _;

#[test]
fn every_contract_quantity_resolves() {
    for name in [
        "power",
        "power_import",
        "power_export",
        "power_l1",
        "power_l3",
        "voltage_l1",
        "voltage_n",
        "current_l2",
        "power_factor",
        "power_factor_l3",
        "frequency",
        "energy_import",
        "energy_export_t2",
        "tariff",
        "session_energy",
        "charger_state",
        "car_connected",
        "charging_allowed",
        "current_limit",
        "force_state",
        "phase_mode",
        "temperature",
        "temperature_pcb",
        "volume",
        "flow_rate",
        "reading_raw",
        "reading_error",
        "printer_state",
        "print_progress",
        "print_time_elapsed",
        "print_time_left",
        "print_file",
        "temperature_bed",
        "temperature_tool0_target",
        "temperature_chamber",
        "rssi",
        "uptime",
    ] {
        let q = Quantity::named(name).unwrap_or_else(|| panic!("{name} must resolve"));
        assert_eq!(q.name(), name);
    }
}

#[test]
fn variants_carry_their_label_and_family() {
    let q = Quantity::known("power_l2");
    assert_eq!(q.family().name, "power");
    assert_eq!(q.def().variant, Some((VariantLabel::Phase, "l2")));
    let t = Quantity::known("temperature_tool1_target");
    assert!(t.def().target);
    assert_eq!(t.def().variant, Some((VariantLabel::Sensor, "tool1")));
    let e = Quantity::known("energy_import_t1");
    assert_eq!(e.def().variant, Some((VariantLabel::Tariff, "1")));
}

#[test]
fn names_outside_the_contract_do_not_resolve() {
    assert!(Quantity::named("watts").is_none());
    assert!(Quantity::named("frequency_l1").is_none());
    assert!(Quantity::named("temperature_Bad Name").is_none());
}

#[test]
fn interning_returns_the_same_handle() {
    assert_eq!(Quantity::known("voltage_l1"), Quantity::known("voltage_l1"));
    assert_ne!(Quantity::known("voltage_l1"), Quantity::known("voltage_l2"));
}

#[test]
fn every_numeric_family_has_exactly_one_plausible_range_and_nothing_else_has_one() {
    for f in FAMILIES {
        let n = PLAUSIBLE_RANGES.iter().filter(|(name, _, _)| *name == f.name).count();
        assert_eq!(n, usize::from(f.kind.is_numeric()), "{}: {n} ranges", f.name);
    }
    for (name, lo, hi) in PLAUSIBLE_RANGES {
        assert!(FAMILIES.iter().any(|f| f.name == *name), "range for unknown family {name}");
        assert!(lo < hi, "{name}");
    }
}

#[test]
fn absurd_and_non_finite_values_are_not_plausible() {
    for (name, bad) in [
        ("current_limit", -9.2e18),
        ("frequency", -9.2e18),
        ("temperature", 1e9),
        ("temperature_tool0", -1e9),
        ("volume", -1.0),
        ("energy_import", -5e11),
        ("energy_import_t1", 1.8e16),
        ("power", f64::NAN),
        ("power_l1", f64::INFINITY),
        ("rssi", 12.0),
        ("power_factor_l2", 100.0),
    ] {
        assert!(!Quantity::known(name).plausible(bad), "{name} = {bad} must be implausible");
    }
    for (name, good) in [
        ("frequency", 49.944),
        ("energy_import", 527_952.0),
        ("power", -700.0),
        ("print_progress", 100.000_000_01),
        ("rssi", -127.0),
        ("temperature_tool0", 214.87),
        ("power_factor_l1", 1.0),
    ] {
        assert!(Quantity::known(name).plausible(good), "{name} = {good} must be plausible");
    }
}

#[test]
fn looking_up_names_from_topics_never_interns_sensor_names() {
    for i in 0..5000 {
        let name = format!("temperature_lookup{i}");
        assert!(Quantity::lookup(&name).is_none());
    }
    let table = interned().lock().unwrap();
    assert!(!table.names.keys().any(|n| n.starts_with("temperature_lookup")));
    drop(table);
    // Names a device reported, and every finite name of the grammar, are still found.
    let reported = Quantity::named("temperature_hotend_lookup").unwrap();
    assert_eq!(Quantity::lookup("temperature_hotend_lookup"), Some(reported));
    assert_eq!(Quantity::lookup("current_limit").map(Quantity::name), Some("current_limit"));
    assert_eq!(Quantity::lookup("energy_import_t3").map(Quantity::name), Some("energy_import_t3"));
    assert!(Quantity::lookup("watts").is_none());
}

#[test]
fn numbers_print_without_float_noise() {
    let mut s = String::new();
    write_number(49.79999924, 3, &mut s);
    assert_eq!(s, "49.8");
    s.clear();
    write_number(230.100000001, 2, &mut s);
    assert_eq!(s, "230.1");
    s.clear();
    write_number(11040.0, 1, &mut s);
    assert_eq!(s, "11040");
    s.clear();
    write_number(-0.00001, 2, &mut s);
    assert_eq!(s, "0");
}

/// What `write_number` printed before its integer fast path: the float formatter on the rounded value.
fn printed_by_the_float_formatter(n: f64, decimals: u8) -> String {
    let r = round_to(n, decimals);
    if r.fract() == 0.0 && r.abs() < 9.0e15 {
        format!("{}", r as i64)
    } else if r.abs() >= 9.0e15 {
        format!("{r:e}")
    } else {
        format!("{r}")
    }
}

#[test]
fn the_integer_fast_path_prints_small_and_edge_numbers_like_the_float_formatter() {
    let cases = [
        0.0,
        -0.0,
        0.004,
        -0.004,
        0.005,
        0.05,
        -0.05,
        0.1,
        0.01,
        0.001,
        1.0,
        -1.0,
        10.0,
        100.5,
        230.1,
        230.12,
        -230.125,
        999.9999,
        0.9999,
        1e14,
        -1e14,
        9.99e14,
        123456789.123,
        4.35,
        2.675,
        1.005,
        0.3,
        0.7,
    ];
    for n in cases {
        for d in 0..=6 {
            let mut s = String::new();
            write_number(n, d, &mut s);
            assert_eq!(s, printed_by_the_float_formatter(n, d), "{n} with {d} decimals");
        }
    }
}

proptest::proptest! {
    #[test]
    fn numbers_print_exactly_as_the_float_formatter_would(
        n in proptest::prop_oneof![
            -1e6f64..1e6,
            -1e16f64..1e16,
            -1.0f64..1.0,
            (-100_000i64..100_000).prop_map(|i| i as f64 / 1000.0),
            proptest::num::f64::NORMAL,
        ],
        d in 0u8..=8,
    ) {
        let mut s = String::new();
        write_number(n, d, &mut s);
        proptest::prop_assert_eq!(s, printed_by_the_float_formatter(n, d));
    }
}

proptest::proptest! {
    #[test]
    fn timestamps_print_exactly_as_the_formatter_would(
        secs in -62_135_596_800i64..253_402_300_799, // years 1 to 9999
        millis in 0u16..1000,
        offset_minutes in -720i16..=840,
    ) {
        let utc = OffsetDateTime::from_unix_timestamp(secs).unwrap() + time::Duration::milliseconds(i64::from(millis));
        let offset = time::UtcOffset::from_whole_seconds(i32::from(offset_minutes) * 60).unwrap();
        let t = utc.to_offset(offset);
        let expected = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            utc.year(), u8::from(utc.month()), utc.day(), utc.hour(), utc.minute(), utc.second(), utc.millisecond()
        );
        proptest::prop_assert_eq!(ts_string(t), expected);
    }
}

#[test]
fn json_strings_are_escaped() {
    let mut s = String::new();
    write_json_string("a\"b\\c\n", &mut s);
    assert_eq!(s, r#""a\"b\\c\n""#);
}

#[test]
fn timestamps_are_rfc3339_utc_millis() {
    let ts = time::macros::datetime!(2024-09-18 09:31:23.460 +02:00);
    assert_eq!(ts_string(ts), "2024-09-18T07:31:23.460Z");
}

/// `round_half_away` must agree with `f64::round` (the library call it replaces) on every double,
/// up to the sign of a zero result.
fn rounds_like_the_library(x: f64) -> bool {
    let (ours, std) = (round_half_away(x), x.round());
    (ours.is_nan() && std.is_nan()) || ours == std
}

#[test]
fn rounding_without_the_library_call_agrees_with_it_at_the_edges() {
    let below_half = 0.5 - f64::EPSILON / 4.0; // 0.49999999999999994: `x + 0.5` rounds it up wrongly
    let two52 = 4_503_599_627_370_496.0;
    let cases = [
        0.0,
        -0.0,
        below_half,
        -below_half,
        0.5,
        -0.5,
        1.5,
        -1.5,
        2.5,
        -2.5,
        1e-310,
        -1e-310,
        two52 - 0.5,
        -(two52 - 0.5),
        two52,
        two52 + 1.0,
        2.0 * two52 + 2.0,
        1e300,
        -1e300,
        f64::MAX,
        f64::MIN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        23012.499999999996,
        23012.5,
    ];
    for x in cases {
        assert!(rounds_like_the_library(x), "{x:e}: {} vs {}", round_half_away(x), x.round());
    }
}

proptest::proptest! {
    #[test]
    fn rounding_without_the_library_call_agrees_with_it_everywhere(
        x in proptest::prop_oneof![
            -1e6f64..1e6,
            (-1_000_000i64..1_000_000).prop_map(|i| i as f64 / 2.0),
            proptest::num::f64::ANY,
        ],
    ) {
        proptest::prop_assert!(rounds_like_the_library(x), "{:e}", x);
    }
}

#[test]
fn a_kept_number_text_is_given_back_only_for_the_exact_double_it_was_printed_from() {
    let mut t = NumberText::default();
    assert_eq!(t.text_for(0.0), None, "nothing kept yet");
    t.keep(230.1, "230.1");
    assert_eq!(t.text_for(230.1), Some("230.1"));
    assert_eq!(t.text_for(230.10000000000002), None, "one ULP away is another number");
    assert_eq!(t.text_for(f64::NAN), None);
    t.keep(f64::NAN, "NaN");
    assert_eq!(t.text_for(f64::NAN), None, "NaN prints differently as JSON: not kept");
    assert_eq!(t.text_for(230.1), None, "the earlier text is gone too");
    t.keep(-0.5, "-0.5");
    assert_eq!(t.text_for(-0.5), Some("-0.5"));
    assert_eq!(t.text_for(0.5), None);
    let long = "-1.2345678901234567e300";
    t.keep(-1.2345678901234567e300, long);
    assert_eq!(t.text_for(-1.2345678901234567e300), Some(long));
    assert_eq!(t.text_for(-0.5), None, "the one before is gone");
}

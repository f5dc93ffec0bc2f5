//! Tests of `goe`, kept beside it so the module reads as code.

use std::collections::HashMap;

use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;

use super::keys::*;
use super::session::*;
use super::*;

const T0: OffsetDateTime = datetime!(2024-09-18 07:31:23.457 UTC);

fn state(ticks: PhaseTicks) -> ChargerState {
    ChargerState::new("012345", Duration::from_secs(1), ticks)
}

fn short() -> PhaseTicks {
    PhaseTicks { idle: 2, waiting: 1, charging: 4, complete: 2 }
}

/// Ticks once with a fixed clock so results don't depend on the machine.
fn step(s: &mut ChargerState, rng: &mut StdRng, n: i64) -> Vec<&'static str> {
    s.tick_at(rng, T0 + time::Duration::seconds(n))
}

fn num(s: &ChargerState, key: &str) -> f64 {
    s.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("{key} is not a number: {:?}", s.get(key)))
}

fn nrg(s: &ChargerState) -> Vec<f64> {
    s.get("nrg").and_then(Value::as_array).expect("nrg array").iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Ticks until the session is charging (car=2); panics if it never gets there.
fn until_charging(s: &mut ChargerState, rng: &mut StdRng) {
    for n in 0..100 {
        step(s, rng, n);
        if s.get("car") == Some(&Value::from(2)) {
            return;
        }
    }
    panic!("never started charging");
}

#[test]
fn charging_session_moves_through_every_car_state() {
    let mut s = state(short());
    let mut rng = StdRng::seed_from_u64(7);
    let mut seen = vec![num(&s, "car") as i64];
    for n in 0..30 {
        step(&mut s, &mut rng, n);
        let car = num(&s, "car") as i64;
        if seen.last() != Some(&car) {
            seen.push(car);
        }
    }
    assert_eq!(&seen[..5], &[1, 3, 2, 4, 1], "car sequence {seen:?}");
    // And it loops: the next session starts again.
    assert!(seen.len() > 5 && seen[5] == 3, "session should repeat: {seen:?}");
}

#[test]
fn each_phase_lasts_the_configured_number_of_ticks() {
    let ticks = PhaseTicks { idle: 3, waiting: 2, charging: 5, complete: 4 };
    let mut s = state(ticks);
    let mut rng = StdRng::seed_from_u64(1);
    let mut counts: HashMap<i64, u32> = HashMap::new();
    // Two whole sessions: the second one must last as long as the first.
    let total = 2 * (3 + 2 + 5 + 4);
    for n in 0..total {
        step(&mut s, &mut rng, i64::from(n));
        *counts.entry(num(&s, "car") as i64).or_default() += 1;
    }
    assert_eq!(counts.get(&1), Some(&6));
    assert_eq!(counts.get(&3), Some(&4));
    assert_eq!(counts.get(&2), Some(&10));
    assert_eq!(counts.get(&4), Some(&8));
}

#[test]
fn energy_counter_rises_only_while_charging() {
    let mut s = ChargerState::new("012345", Duration::from_secs(60), short());
    let mut rng = StdRng::seed_from_u64(3);
    let mut rose_while_charging = false;
    for n in 0..20 {
        let (eto0, wh0) = (num(&s, "eto"), num(&s, "wh"));
        step(&mut s, &mut rng, n * 60);
        let car = num(&s, "car") as i64;
        let (eto1, wh1) = (num(&s, "eto"), num(&s, "wh"));
        assert!(eto1 >= eto0, "eto must be monotonic");
        assert_eq!(s.get("eto").and_then(Value::as_u64).map(|_| ()), Some(()), "eto is an integer");
        if car == 2 {
            assert!(eto1 > eto0 && wh1 > wh0, "charging tick {n} must add energy");
            // A minute at ~11 kW is ~180 Wh (less while the car ramps up).
            assert!(wh1 - wh0 < 200.0, "wh step {}", wh1 - wh0);
            rose_while_charging |= wh1 - wh0 > 150.0;
        } else {
            assert_eq!(eto1, eto0, "eto moved with car={car} at tick {n}");
            if car != 1 {
                assert_eq!(wh1, wh0, "wh moved with car={car} at tick {n}");
            }
        }
    }
    assert!(rose_while_charging);
}

#[test]
fn unplugging_resets_session_energy_and_force_state() {
    let mut s = state(short());
    let mut rng = StdRng::seed_from_u64(5);
    until_charging(&mut s, &mut rng);
    s.set("frc", "2").unwrap();
    let mut n = 100;
    while num(&s, "car") as i64 != 4 {
        step(&mut s, &mut rng, n);
        n += 1;
    }
    assert!(num(&s, "wh") > 0.0);
    assert_eq!(num(&s, "frc"), 2.0);
    while num(&s, "car") as i64 != 1 {
        let changed = step(&mut s, &mut rng, n);
        n += 1;
        if num(&s, "car") as i64 == 1 {
            assert!(changed.contains(&"frc") && changed.contains(&"wh"), "{changed:?}");
        }
    }
    assert_eq!(num(&s, "wh"), 0.0);
    assert_eq!(num(&s, "frc"), 0.0);
}

#[test]
fn three_phase_power_is_voltage_times_current_times_power_factor() {
    let mut s = state(PhaseTicks { idle: 0, waiting: 0, charging: 100, complete: 1 });
    let mut rng = StdRng::seed_from_u64(11);
    for n in 0..8 {
        step(&mut s, &mut rng, n);
    }
    assert_eq!(num(&s, "car"), 2.0);
    let e = nrg(&s);
    assert_eq!(e.len(), 16);
    for ph in 0..3 {
        assert!((220.0..240.0).contains(&e[ph]), "U{ph} = {}", e[ph]);
        assert!((14.5..16.0).contains(&e[4 + ph]), "I{ph} = {} at amp 16", e[4 + ph]);
        assert!((98.8..=100.0).contains(&e[12 + ph]), "pf{ph} = {}", e[12 + ph]);
        let expect = e[ph] * e[4 + ph] * e[12 + ph] / 100.0;
        assert!((e[7 + ph] - expect).abs() < 2.0, "P{ph} {} vs {expect}", e[7 + ph]);
    }
    assert!((e[11] - (e[7] + e[8] + e[9])).abs() < 0.05, "total {}", e[11]);
    assert_eq!(num(&s, "acu"), 16.0);
    assert_eq!(num(&s, "pnp"), 3.0);
    let changed = step(&mut s, &mut rng, 8);
    assert!(changed.contains(&"nrg") && changed.contains(&"wh"), "live values change every charging tick");
    assert!([3.0, 15.0].contains(&num(&s, "modelStatus")));
    assert_eq!(s.get("pha"), Some(&serde_json::json!([true, true, true, true, true, true])));
}

#[test]
fn single_phase_mode_charges_on_l1_only() {
    let mut s = state(PhaseTicks { idle: 0, waiting: 0, charging: 100, complete: 1 });
    let mut rng = StdRng::seed_from_u64(2);
    s.set("psm", "1").unwrap();
    s.set("amp", "12").unwrap();
    for n in 0..6 {
        step(&mut s, &mut rng, n);
    }
    let e = nrg(&s);
    assert!((11.0..12.0).contains(&e[4]), "I1 {}", e[4]);
    assert_eq!((e[5], e[6], e[8], e[9]), (0.0, 0.0, 0.0, 0.0));
    assert!((e[11] - e[7]).abs() < 0.01);
    assert_eq!(num(&s, "pnp"), 1.0);
    assert_eq!(num(&s, "acu"), 12.0);
    assert_eq!(s.get("fsp"), Some(&Value::Bool(true)));
}

#[test]
fn idle_charger_reports_whole_volts_and_no_power() {
    let mut s = state(PhaseTicks { idle: 50, ..short() });
    let mut rng = StdRng::seed_from_u64(4);
    for n in 0..10 {
        step(&mut s, &mut rng, n);
        let e = nrg(&s);
        for u in &e[..3] {
            assert_eq!(u.fract(), 0.0, "idle voltage {u}");
            assert!((222.0..=240.0).contains(u));
        }
        assert!(e[4..].iter().all(|&x| x == 0.0), "{e:?}");
        let printed = s.get("nrg").unwrap().to_string();
        assert!(!printed.contains('.'), "printed without decimals: {printed}");
    }
}

#[test]
fn frc_off_stops_charging() {
    let mut s = state(PhaseTicks { idle: 0, waiting: 0, charging: 100, complete: 1 });
    let mut rng = StdRng::seed_from_u64(9);
    until_charging(&mut s, &mut rng);
    assert_eq!(s.set("frc", "1"), Ok(()));
    step(&mut s, &mut rng, 200);
    assert_eq!(num(&s, "car"), 3.0);
    assert_eq!(s.get("alw"), Some(&Value::Bool(false)));
    assert_eq!(s.get("acu"), Some(&Value::Null));
    assert_eq!(num(&s, "modelStatus"), 4.0);
    assert_eq!(nrg(&s)[11], 0.0);
    let wh = num(&s, "wh");
    for n in 201..210 {
        step(&mut s, &mut rng, n);
        assert_eq!(num(&s, "car"), 3.0, "stays paused while frc=1");
    }
    assert_eq!(num(&s, "wh"), wh, "no energy while paused");
    s.set("frc", "0").unwrap();
    step(&mut s, &mut rng, 210);
    assert_eq!(num(&s, "car"), 2.0);
    assert!(nrg(&s)[11] > 0.0);
}

#[test]
fn frc_on_starts_a_plugged_car_without_waiting() {
    let mut s = state(PhaseTicks { idle: 0, waiting: 50, charging: 10, complete: 1 });
    let mut rng = StdRng::seed_from_u64(6);
    step(&mut s, &mut rng, 0);
    assert_eq!(num(&s, "car"), 3.0);
    s.set("frc", "2").unwrap();
    step(&mut s, &mut rng, 1);
    assert_eq!(num(&s, "car"), 2.0);
    assert_eq!(num(&s, "modelStatus"), 3.0);
}

#[test]
fn access_control_waits_for_a_transaction() {
    let mut s = state(PhaseTicks { idle: 0, waiting: 0, charging: 10, complete: 1 });
    let mut rng = StdRng::seed_from_u64(8);
    s.set("acs", "1").unwrap();
    for n in 0..5 {
        step(&mut s, &mut rng, n);
        assert_eq!(num(&s, "car"), 3.0);
        assert_eq!(num(&s, "modelStatus"), 2.0);
    }
    s.set("trx", "0").unwrap();
    step(&mut s, &mut rng, 5);
    assert_eq!(num(&s, "car"), 2.0);
}

#[test]
fn amp_change_shows_in_acu_at_the_next_tick() {
    let mut s = state(PhaseTicks { idle: 0, waiting: 0, charging: 100, complete: 1 });
    let mut rng = StdRng::seed_from_u64(12);
    until_charging(&mut s, &mut rng);
    s.set("amp", "10").unwrap();
    assert_eq!(num(&s, "acu"), 16.0, "not before the logic tick");
    for n in 300..305 {
        step(&mut s, &mut rng, n);
    }
    assert_eq!(num(&s, "acu"), 10.0);
    assert!(nrg(&s)[4] < 10.0 && nrg(&s)[4] > 9.0);
}

#[test]
fn bare_word_write_is_rejected_as_invalid_json() {
    // The vendor transcript for fna, exactly.
    let mut s = state(short());
    assert_eq!(s.set("fna", "new_name"), Err("invalid json IncompleteInput: new_name".to_owned()));
    assert_eq!(s.set("fna", "0"), Err("value must be string 0".to_owned()));
    assert_eq!(s.set("fna", "\"mein charger\""), Ok(()));
    assert_eq!(s.get("fna"), Some(&Value::from("mein charger")));
}

#[test]
fn http_words_invalid_json_like_the_device() {
    let mut s = state(short());
    let err = s.set_http("mcu", "mqtt://192.168.1.2:1883").unwrap_err();
    assert_eq!(err, "mcu: tried to set api key with invalid json InvalidInput (mqtt://192.168.1.2:1883)");
    assert_eq!(s.set_http("frc", "1"), Ok(()));
}

#[test]
fn read_only_keys_answer_without_setter() {
    let mut s = state(short());
    for key in ["alw", "car", "nrg", "eto", "err", "modelStatus", "fsp", "acu", "rbt", "tma", "wh"] {
        let before = s.get(key).cloned();
        assert_eq!(s.set(key, "true"), Err(format!("{key}: tried to set api key without setter (true)")), "key {key}");
        assert_eq!(s.get(key).cloned(), before, "{key} must not change");
    }
    // HTTP says the same (issue #4).
    assert_eq!(s.set_http("alw", "true"), Err("alw: tried to set api key without setter (true)".to_owned()));
}

#[test]
fn amp_outside_6_to_32_is_refused() {
    let mut s = state(short());
    for bad in ["5", "33", "0", "-1", "255", "18446744073709551615"] {
        let err = s.set("amp", bad).unwrap_err();
        assert!(err.contains("between 6 and 32"), "amp={bad}: {err}");
    }
    assert_eq!(s.set("amp", "16.5"), Err("value must be integer 16.5".to_owned()));
    assert_eq!(s.set("amp", "\"16\""), Err("value must be integer \"16\"".to_owned()));
    assert_eq!(num(&s, "amp"), 16.0, "refused writes leave amp alone");
    assert_eq!(s.set("amp", "6"), Ok(()));
    assert_eq!(s.set("amp", "32"), Ok(()));
    assert_eq!(num(&s, "amp"), 32.0);
}

#[test]
fn control_keys_accept_only_their_documented_values() {
    let mut s = state(short());
    for (key, good, bad) in
        [("frc", "2", "3"), ("psm", "0", "3"), ("acs", "1", "2"), ("lmo", "4", "1"), ("ama", "20", "40")]
    {
        assert_eq!(s.set(key, good), Ok(()), "{key}={good}");
        assert!(s.set(key, bad).is_err(), "{key}={bad} must fail");
        assert_eq!(s.get(key).map(Value::to_string), Some(good.to_owned()));
    }
    assert_eq!(s.set("frc", "true"), Err("value must be integer true".to_owned()));
    assert_eq!(s.set("trx", "null"), Ok(()));
    assert_eq!(s.set("mtp", "null"), Ok(()));
}

#[test]
fn unknown_key_is_rejected() {
    let mut s = state(short());
    let err = s.set("nosuchkey", "1").unwrap_err();
    assert!(err.contains("nosuchkey") && err.contains("unknown"), "{err}");
    assert!(s.get("nosuchkey").is_none());
}

#[test]
fn garbage_writes_never_panic_and_never_change_state() {
    let mut s = state(short());
    let before = s.status(None).0;
    let payloads = ["", " ", "{", "[1,", "\"", "nul", "tru", "1e999999", "\u{0}", "{\"a\":}", "💥", "16 17"];
    for key in ["amp", "frc", "fna", "psm", "ids", "nrg", "", "a/b", "💥"] {
        for p in payloads {
            assert!(s.set(key, p).is_err(), "{key}={p:?} should fail");
            assert!(s.set_http(key, p).is_err());
        }
    }
    assert_eq!(s.status(None).0, before);
    assert_eq!(s.set("amp", ""), Err("invalid json EmptyInput: ".to_owned()));
}

#[test]
fn generic_writable_keys_follow_the_vendor_table() {
    let mut s = state(short());
    // cid is a documented R/W string, awcp a read-only status object.
    assert_eq!(s.set("cid", "\"#FF0000\""), Ok(()));
    assert_eq!(s.set("cid", "1"), Err("value must be string 1".to_owned()));
    assert_eq!(s.set("awcp", "{}"), Err("awcp: tried to set api key without setter ({})".to_owned()));
}

#[test]
fn status_filter_omits_unknown_keys() {
    let s = state(short());
    let (body, missing) = s.status(Some(&["car", "nope", "amp", "cbl"]));
    assert_eq!(body.keys().map(String::as_str).collect::<Vec<_>>(), vec!["amp", "car", "cbl"]);
    assert_eq!(body["car"], Value::from(1));
    assert_eq!(body["cbl"], Value::Null, "a present key that is null is still returned");
    assert_eq!(missing, vec!["nope".to_owned()]);
    let (all, missing) = s.status(None);
    assert!(missing.is_empty());
    assert!(all.len() > 119, "full status has every key ({})", all.len());
    assert_eq!(all["sse"], Value::from("012345"));
}

#[test]
fn filter_accepts_comma_lists_and_the_old_json_array_form() {
    assert_eq!(parse_filter("alw, car,,amp"), vec!["alw", "car", "amp"]);
    assert_eq!(parse_filter("[\"rfb\",\"alw\"]"), vec!["rfb", "alw"]);
    assert!(parse_filter("").is_empty());
}

#[test]
fn state_starts_from_the_56_9_burst_with_every_normalised_key() {
    let s = state(short());
    for key in NORMALISED_KEYS {
        assert!(s.get(key).is_some(), "missing {key}");
    }
    assert_eq!(s.get("typ"), Some(&Value::from("go-eCharger")));
    assert_eq!(s.get("fwv"), Some(&Value::from("56.9")));
    assert_eq!(s.get("var"), Some(&Value::from(22)));
    assert_eq!(s.get("cid"), Some(&Value::from("#0000FF")), "burst values are kept");
    let snap = s.mqtt_snapshot();
    assert_eq!(snap[0].0, "alw", "burst order follows the capture");
    assert!(snap.iter().all(|(k, _)| k != "sse" && k != "mcu"), "sse/mcu are HTTP-only");
    assert!(snap.iter().any(|(k, _)| k == "fna"));
}

#[test]
fn rbt_and_clock_keys_advance_in_the_chargers_formats() {
    let mut s = ChargerState::new("012345", Duration::from_millis(50), short());
    let mut rng = StdRng::seed_from_u64(1);
    let rbt0 = num(&s, "rbt");
    let changed = s.tick_at(&mut rng, T0);
    assert_eq!(num(&s, "rbt") - rbt0, 50.0);
    for key in ["rbt", "utc", "loc", "fhz"] {
        assert!(changed.contains(&key), "{key} should change every tick: {changed:?}");
    }
    assert!(!changed.contains(&"amp") && !changed.contains(&"fwv"), "unchanged keys are not reported");
    assert_eq!(s.get("utc"), Some(&Value::from("2024-09-18T07:31:23.457")));
    let loc = s.get("loc").and_then(Value::as_str).unwrap();
    assert!(loc.starts_with("2024-09-18T09:31:23.46") && loc.ends_with(" +02:00"), "{loc}");
    // Winter time is +01:00.
    s.tick_at(&mut rng, datetime!(2024-12-01 12:00:00 UTC));
    assert!(s.get("loc").and_then(Value::as_str).unwrap().ends_with(" +01:00"));
}

#[test]
fn floats_look_like_float32_firmware_output() {
    assert_eq!(f32_noise(49.959, 10), 49.95899963);
    assert_eq!(f32_noise(49.8, 10), 49.79999924);
    assert_eq!(number(232.0).to_string(), "232");
    assert_eq!(number(f64::NAN), Value::Null);
}

#[test]
fn same_seed_gives_the_same_session() {
    let run = |seed| {
        let mut s = state(short());
        let mut rng = StdRng::seed_from_u64(seed);
        (0..12)
            .map(|n| {
                step(&mut s, &mut rng, n);
                s.get("nrg").cloned()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn reboot_restarts_rbt_and_counts_rbc() {
    let mut s = state(short());
    let mut rng = StdRng::seed_from_u64(1);
    step(&mut s, &mut rng, 0);
    let rbc = num(&s, "rbc");
    assert_eq!(s.set("rst", "true"), Ok(()));
    assert!(s.take_rebooted());
    assert!(!s.take_rebooted(), "reported once");
    step(&mut s, &mut rng, 1);
    assert_eq!(num(&s, "rbc"), rbc + 1.0);
    assert_eq!(num(&s, "rbt"), 1000.0);
}

#[test]
fn pv_surplus_input_is_readable_and_goes_stale() {
    let mut s = state(short());
    let mut rng = StdRng::seed_from_u64(1);
    assert!(s.set("ids", "{\"pPv\":100}").is_err(), "pGrid is required");
    assert_eq!(s.set("ids", "{\"pGrid\":-1200,\"pPv\":3000}"), Ok(()));
    assert_eq!(s.get("pgrid"), Some(&Value::from(-1200)));
    assert_eq!(s.get("pakku"), Some(&Value::Null));
    for n in 0..12 {
        step(&mut s, &mut rng, n);
    }
    assert_eq!(s.get("pgrid"), Some(&Value::Null));
}

#[test]
fn mqtt_connection_state_is_mirrored_in_mcc() {
    let mut s = state(short());
    assert_eq!(s.get("mcc"), Some(&Value::Bool(false)));
    s.set_mqtt_connected(true);
    assert_eq!(s.get("mcc"), Some(&Value::Bool(true)));
    assert_eq!(s.get("mcca"), s.get("rbt"));
    assert!(!s.mqtt_read_only());
    s.set_http("mcr", "true").unwrap();
    assert!(s.mqtt_read_only());
}

#[test]
fn options_fill_serial_prefix_and_read_only() {
    let opts = GoeSimOptions { read_only: true, serial: "072246".into(), ..GoeSimOptions::default() };
    assert_eq!(opts.effective_prefix(), "go-eCharger/072246/");
    let s = ChargerState::from_options(&opts);
    assert!(s.mqtt_read_only());
    assert_eq!(s.get("sse"), Some(&Value::from("072246")));
    assert_eq!(s.get("mtp"), Some(&Value::Null));
    let custom = GoeSimOptions { topic_prefix: Some("/goe/".into()), ..GoeSimOptions::default() };
    assert_eq!(custom.effective_prefix(), "/goe/");
    assert_eq!(ChargerState::from_options(&custom).get("mtp"), Some(&Value::from("/goe/")));
    assert_eq!(GoeSimOptions::default().phase_ticks, PhaseTicks { idle: 8, waiting: 3, charging: 30, complete: 5 });
}

//! The device state machine driven step by step: no broker, no clock, no sleep. Time is a value
//! each step receives, so "50 ms later" is `now.after(50 ms)`.

use std::time::Duration;

use time::OffsetDateTime;

use super::*;
use crate::clock::{Clock, SystemClock};
use crate::config::types::AdapterKind;
use crate::metrics::Metrics;

/// One device with its context, as the router holds it.
struct Rig {
    spec: DeviceSpec,
    settings: RouterSettings,
    counters: DeviceCounters,
    base: String,
    st: DeviceState,
    t0: Now,
}

impl Rig {
    fn new(tweak: impl FnOnce(&mut DeviceSpec)) -> Rig {
        let mut spec = DeviceSpec {
            id: "ev".into(),
            adapter: AdapterKind::Goe,
            prefix: "home".into(),
            freshness: Duration::from_secs(60),
            min_interval: None,
            heartbeat: None,
            commands: false,
            offered: &[],
        };
        tweak(&mut spec);
        let t0 = SystemClock.now();
        let settings = RouterSettings {
            bridge_prefix: "home".into(),
            quantity_topics: true,
            state_json: true,
            qos: QoS::AtMostOnce,
        };
        let counters = Metrics::detached().start_device(&spec.id, spec.adapter, spec.commands);
        Rig { base: "home/ev".into(), spec, settings, counters, st: DeviceState::new(t0), t0 }
    }

    /// `ms` milliseconds after the rig started.
    fn at(&self, ms: u64) -> Now {
        self.t0.after(Duration::from_millis(ms))
    }

    fn apply(&mut self, update: Update, now: Now) -> Vec<Publish> {
        let cx = Ctx { spec: &self.spec, base: &self.base, settings: &self.settings, counters: &self.counters };
        self.st.apply(&cx, update, now);
        std::mem::take(&mut self.st.out)
    }

    fn tick(&mut self, now: Now) -> Vec<Publish> {
        let cx = Ctx { spec: &self.spec, base: &self.base, settings: &self.settings, counters: &self.counters };
        self.st.tick(&cx, now);
        std::mem::take(&mut self.st.out)
    }

    fn flush(&mut self, now: Now) -> Vec<Publish> {
        let cx = Ctx { spec: &self.spec, base: &self.base, settings: &self.settings, counters: &self.counters };
        self.st.flush(&cx, now);
        std::mem::take(&mut self.st.out)
    }
}

fn power(w: f64) -> Update {
    let mut u = Update::fresh();
    u.push(Quantity::known("power"), Value::Number(w));
    u
}

fn on<'a>(out: &'a [Publish], topic: &str) -> Vec<&'a str> {
    out.iter().filter(|p| *p.topic == *topic).map(|p| std::str::from_utf8(&p.payload).unwrap()).collect()
}

#[test]
fn the_first_reading_publishes_its_value_and_availability_online_and_nothing_else() {
    let mut rig = Rig::new(|_| {});
    let out = rig.apply(power(11040.0), rig.at(0));
    let topics: Vec<_> = out.iter().map(|p| (&*p.topic, p.retain)).collect();
    assert_eq!(topics, [("home/ev/power", true), ("home/ev/availability", true)]);
    assert_eq!(on(&out, "home/ev/power"), ["11040"]);
    assert_eq!(on(&out, "home/ev/availability"), ["online"]);
}

#[test]
fn a_change_below_the_quantitys_precision_publishes_nothing_and_the_state_json_stays_unchanged() {
    let mut rig = Rig::new(|_| {});
    assert_eq!(on(&rig.apply(power(230.04), rig.at(0)), "home/ev/power"), ["230"]);
    rig.flush(rig.at(0));
    // Float noise (and OctoPrint's 8.08 s vs 8 s) prints the same: no republish, no new snapshot.
    assert!(rig.apply(power(229.96), rig.at(10)).iter().all(|p| &*p.topic != "home/ev/power"));
    assert!(on(&rig.flush(rig.at(10)), "home/ev/state").is_empty(), "nothing changed that anyone can see");
    assert_eq!(on(&rig.apply(power(230.1), rig.at(20)), "home/ev/power"), ["230.1"]);
}

#[test]
fn min_interval_holds_changes_until_the_tick_after_it_then_publishes_only_the_latest() {
    let mut rig = Rig::new(|s| s.min_interval = Some(Duration::from_millis(50)));
    assert_eq!(on(&rig.apply(power(1.0), rig.at(0)), "home/ev/power"), ["1"]);
    assert!(on(&rig.apply(power(2.0), rig.at(10)), "home/ev/power").is_empty());
    assert!(on(&rig.apply(power(3.0), rig.at(20)), "home/ev/power").is_empty());
    assert!(on(&rig.tick(rig.at(49)), "home/ev/power").is_empty(), "still inside min_interval");
    assert_eq!(on(&rig.tick(rig.at(50)), "home/ev/power"), ["3"], "only the latest held value");
    assert!(on(&rig.tick(rig.at(200)), "home/ev/power").is_empty(), "published once");
}

#[test]
fn the_state_json_waits_for_the_flush_and_one_burst_gives_one_snapshot() {
    let mut rig = Rig::new(|_| {});
    rig.apply(power(1.0), rig.at(0));
    let mut u = Update::fresh();
    u.push(Quantity::known("current_l1"), Value::Number(2.0));
    assert!(on(&rig.apply(u, rig.at(1)), "home/ev/state").is_empty());
    let out = rig.flush(rig.at(2));
    let state = on(&out, "home/ev/state");
    assert_eq!(state.len(), 1);
    assert!(state[0].contains("\"values\":{\"power\":1,\"current_l1\":2}"), "{}", state[0]);
    assert!(rig.flush(rig.at(3)).is_empty(), "nothing changed since");
}

#[test]
fn the_state_json_prints_a_value_held_back_by_min_interval_not_the_text_its_topic_printed_before() {
    // Min interval 50 ms: the state JSON goes out at the first flush, then the topic holds 2.5
    // while the text it printed (for 1) is still kept beside the slot.
    let mut rig = Rig::new(|s| s.min_interval = Some(Duration::from_millis(50)));
    assert_eq!(on(&rig.apply(power(1.0), rig.at(0)), "home/ev/power"), ["1"]);
    assert_eq!(on(&rig.flush(rig.at(0)), "home/ev/state").len(), 1);
    assert!(on(&rig.apply(power(2.5), rig.at(10)), "home/ev/power").is_empty(), "held back");
    let out = rig.tick(rig.at(60));
    assert_eq!(on(&out, "home/ev/power"), ["2.5"]);
    let state = on(&out, "home/ev/state");
    assert!(state.len() == 1 && state[0].contains("\"power\":2.5"), "{state:?}");
    // Values printed by their topics and copied into the state JSON read the same in both.
    let mut u = Update::fresh();
    for (q, v) in [("power", -0.004), ("current_l1", 16.049999), ("voltage_l1", 229.96)] {
        u.push(Quantity::known(q), Value::Number(v));
    }
    let out = rig.apply(u, rig.at(200));
    let out = [out, rig.flush(rig.at(200))].concat();
    let state = on(&out, "home/ev/state");
    for q in ["power", "current_l1", "voltage_l1"] {
        let topic = on(&out, &format!("home/ev/{q}"));
        assert!(state[0].contains(&format!("\"{q}\":{}", topic[0])), "{q}: {topic:?} vs {state:?}");
    }
}

#[test]
fn a_heartbeat_republishes_unchanged_values_while_online_and_not_before_it_is_due() {
    let mut rig = Rig::new(|s| s.heartbeat = Some(Duration::from_secs(30)));
    rig.apply(power(7.0), rig.at(0));
    rig.flush(rig.at(0));
    assert!(rig.tick(rig.at(29_999)).is_empty());
    let out = rig.tick(rig.at(30_000));
    assert_eq!(on(&out, "home/ev/power"), ["7"]);
    assert_eq!(on(&out, "home/ev/state").len(), 1);
    assert!(rig.tick(rig.at(30_001)).is_empty(), "the next one is 30 s later");
}

#[test]
fn a_device_goes_offline_with_a_reason_once_its_freshness_window_passes() {
    let mut rig = Rig::new(|s| s.freshness = Duration::from_secs(10));
    rig.apply(power(7.0), rig.at(0));
    rig.flush(rig.at(0));
    assert!(rig.tick(rig.at(10_000)).is_empty(), "exactly at the window it is still fresh");
    let out = rig.tick(rig.at(10_001));
    assert_eq!(on(&out, "home/ev/availability"), ["offline"]);
    assert!(!rig.st.online);
    assert_eq!(rig.st.reason.as_deref(), Some("no reading for 10s"));
    assert!(rig.tick(rig.at(20_000)).is_empty(), "offline is published once");
}

#[test]
fn a_replayed_older_reading_does_not_make_a_stale_device_alive_a_second_time() {
    let mut rig = Rig::new(|s| s.freshness = Duration::from_secs(10));
    let t1 = OffsetDateTime::now_utc() - time::Duration::seconds(30);
    let at_ts = |ts: OffsetDateTime, w: f64| {
        let mut u = power(w);
        u.ts = Some(ts);
        u
    };
    rig.apply(at_ts(t1, 7.0), rig.at(0));
    rig.apply(at_ts(t1 + time::Duration::seconds(1), 8.0), rig.at(1));
    rig.tick(rig.at(20_000));
    assert!(!rig.st.online);
    let replay = rig.apply(at_ts(t1, 7.0), rig.at(20_001));
    assert!(on(&replay, "home/ev/availability").is_empty(), "a replay is no new sign of life");
    let again = rig.apply(at_ts(t1 + time::Duration::seconds(1), 8.0), rig.at(20_002));
    assert_eq!(on(&again, "home/ev/availability"), ["online"], "the newest reading again is");
}

#[test]
fn a_device_clock_set_back_by_hours_counts_as_a_new_start_not_a_replay() {
    let now = OffsetDateTime::now_utc();
    assert!(proves_alive_again(None, now));
    assert!(proves_alive_again(Some(now), now));
    assert!(!proves_alive_again(Some(now), now - time::Duration::minutes(5)));
    assert!(proves_alive_again(Some(now), now - time::Duration::hours(2)));
}

#[test]
fn link_up_brings_a_device_back_only_while_its_last_reading_is_fresh() {
    let mut rig = Rig::new(|s| s.freshness = Duration::from_secs(10));
    rig.apply(power(1.0), rig.at(0));
    let cx = Ctx { spec: &rig.spec, base: &rig.base, settings: &rig.settings, counters: &rig.counters };
    rig.st.set_link(&cx, Link::Down("connection refused".into()), rig.t0.after(Duration::from_secs(1)));
    assert!(!rig.st.online);
    rig.st.set_link(&cx, Link::Up, rig.t0.after(Duration::from_secs(2)));
    assert!(rig.st.online, "the reading is 2 s old");
    rig.st.set_link(&cx, Link::Down("gone".into()), rig.t0.after(Duration::from_secs(3)));
    rig.st.set_link(&cx, Link::Up, rig.t0.after(Duration::from_secs(11)));
    assert!(!rig.st.online, "the reading is 11 s old: up, but not fresh");
    let out = std::mem::take(&mut rig.st.out);
    assert_eq!(on(&out, "home/ev/availability"), ["offline", "online", "offline"]);
}

#[test]
fn a_reading_without_a_source_timestamp_is_stamped_with_the_wall_clock_of_the_step() {
    let mut rig = Rig::new(|_| {});
    let now = rig.at(0);
    rig.apply(power(1.0), now);
    assert_eq!(rig.st.ts, Some(OffsetDateTime::from(now.wall)));
    assert_eq!(rig.st.last_seen.map(|(m, _)| m), Some(now.mono));
}

#[test]
fn readings_land_on_their_own_quantity_whatever_order_they_come_in_and_after_one_is_cleared() {
    let mut rig = Rig::new(|_| {});
    let names = ["power", "power_l1", "power_l2", "power_l3"];
    let step = |order: &[usize], base: f64| {
        let mut u = Update::fresh();
        for &i in order {
            u.push(Quantity::known(names[i]), Value::Number(base + i as f64));
        }
        u
    };
    rig.apply(step(&[0, 1, 2, 3], 10.0), rig.at(0));
    // Reversed, then rotated: the slot found last time is never the one asked for next.
    for (n, order) in [[3, 2, 1, 0], [2, 3, 0, 1], [1, 0, 3, 2]].iter().enumerate() {
        let base = 20.0 + 10.0 * n as f64;
        let out = rig.apply(step(order, base), rig.at(1000 * (n as u64 + 1)));
        for (i, name) in names.iter().enumerate() {
            let want = format!("{}", base + i as f64);
            assert_eq!(on(&out, &format!("home/ev/{name}")), [want.as_str()], "{name} in order {order:?}");
        }
    }
    // Clearing one shifts the slots after it: the rest still land right.
    let mut clear = Update::fresh();
    clear.push(Quantity::known("power_l1"), Value::Text(String::new().into()));
    rig.apply(clear, rig.at(5000));
    let out = rig.apply(step(&[0, 2, 3], 70.0), rig.at(6000));
    assert_eq!(on(&out, "home/ev/power"), ["70"]);
    assert_eq!(on(&out, "home/ev/power_l2"), ["72"]);
    assert_eq!(on(&out, "home/ev/power_l3"), ["73"]);
    assert_eq!(rig.st.slots.iter().map(|s| s.quantity.name()).collect::<Vec<_>>(), ["power", "power_l2", "power_l3"]);
}

#[test]
fn two_devices_stepped_in_turn_on_one_thread_each_print_their_own_payloads() {
    // The scratch text is one per thread: a step must never see what another device printed.
    let mut ev = Rig::new(|_| {});
    let mut meter = Rig::new(|s| s.id = "meter".into());
    meter.base = "home/meter".into();
    let mut volts = Update::fresh();
    volts.push(Quantity::known("voltage_l1"), Value::Number(231.4));
    assert_eq!(on(&ev.apply(power(11040.0), ev.at(0)), "home/ev/power"), ["11040"]);
    assert_eq!(on(&meter.apply(volts, meter.at(0)), "home/meter/voltage_l1"), ["231.4"]);
    let ev_state = ev.flush(ev.at(1));
    let meter_state = meter.flush(meter.at(1));
    let ev_json: serde_json::Value = serde_json::from_str(on(&ev_state, "home/ev/state")[0]).unwrap();
    let meter_json: serde_json::Value = serde_json::from_str(on(&meter_state, "home/meter/state")[0]).unwrap();
    assert_eq!(ev_json["values"], serde_json::json!({"power": 11040}));
    assert_eq!(meter_json["values"], serde_json::json!({"voltage_l1": 231.4}));
}

#[test]
fn a_state_json_larger_than_the_kept_scratch_is_published_whole_and_its_room_let_go() {
    let mut rig = Rig::new(|_| {});
    let names = [
        "power_l1",
        "power_l2",
        "power_l3",
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "current_l1",
        "current_l2",
        "current_l3",
        "energy_import",
        "energy_export",
        "energy_import_t1",
        "energy_import_t2",
        "energy_export_t1",
        "energy_export_t2",
        "power",
        "frequency",
        "power_factor",
    ];
    let mut update = Update::fresh();
    for (i, name) in names.iter().enumerate() {
        let text = char::from(b'a' + i as u8).to_string().repeat(untrusted::MAX_TEXT_BYTES);
        update.push(Quantity::known(name), Value::Text(text.into()));
    }
    let out = rig.apply(update, rig.at(0));
    assert_eq!(on(&out, "home/ev/power_l1"), ["a".repeat(untrusted::MAX_TEXT_BYTES)]);
    let state = rig.flush(rig.at(1));
    let payload = on(&state, "home/ev/state")[0];
    assert!(payload.len() > SCRATCH_KEPT, "the case needs a state JSON of {} bytes or more", SCRATCH_KEPT);
    let json: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(json["values"]["power_factor"], "r".repeat(untrusted::MAX_TEXT_BYTES));
    assert_eq!(json["values"].as_object().unwrap().len(), names.len());
    assert!(SCRATCH.with_borrow(|s| s.capacity()) <= SCRATCH_KEPT, "one large payload does not keep its room");
}

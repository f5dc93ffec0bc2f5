//! What the console shows, without a terminal: the view model built from the router snapshot and
//! the event messages, plus the little state kept between frames (power history, recent events).
//! Drawing ([`super::draw`]) only lays this out; tests check both without a terminal.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::model::{DeviceKind, Quantity, Value};
use crate::router::DeviceSnapshot;

/// Power samples kept per device for the sparkline (two a second: a minute).
pub(crate) const POWER_HISTORY: usize = 120;

/// Recent events kept for the events panel.
pub(crate) const EVENTS_KEPT: usize = 50;

/// Quantities that are not values to list: the state and power get their own column.
const HEADLINE: &[&str] = &["charger_state", "printer_state", "power"];

/// The quantities worth a glance per kind, in order; every other value follows in the expanded view.
fn key_quantities(kind: DeviceKind) -> &'static [&'static str] {
    match kind {
        DeviceKind::EvCharger => {
            &["session_energy", "current_limit", "car_connected", "energy_import", "charger_error", "phase_mode"]
        }
        DeviceKind::Printer => {
            &["print_progress", "print_file", "print_time_left", "temperature_tool0", "temperature_bed"]
        }
        DeviceKind::EnergyMeter => &["power_import", "power_export", "energy_import", "energy_export", "tariff"],
        DeviceKind::UtilityMeter => &["volume", "flow_rate", "reading_error", "reading_raw"],
    }
}

/// The whole screen's content for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The top line: broker, connection, how many devices are online, uptime.
    pub header: Header,
    /// One panel per device, in configuration order.
    pub devices: Vec<DevicePanel>,
    /// Newest first: events from `<prefix>/<device>/event` and captured log lines.
    pub events: Vec<String>,
}

/// The bridge's own status.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The broker URL the bridge connects to.
    pub broker: String,
    /// Whether the MQTT client is connected right now.
    pub connected: bool,
    /// Since the console started.
    pub uptime: Duration,
    /// The HTTP endpoint, for the help line.
    pub http: Option<std::net::SocketAddr>,
}

/// One device: the compact line plus what the expanded view lists.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePanel {
    /// Device id from the config.
    pub id: String,
    /// `ev_charger`, `printer`, ...
    pub kind: &'static str,
    /// Published availability.
    pub online: bool,
    /// Why it is offline (from the router), shown instead of the values.
    pub reason: Option<String>,
    /// `charging`, `printing`, ... (the device's state quantity), if it has one.
    pub state: Option<String>,
    /// `power` (or `power_import`), humanised: `11.04 kW`.
    pub power: Option<String>,
    /// The key values first, then every other value: `(name, value with unit)`. Empty texts are
    /// absent values (contract) and never listed.
    pub values: Vec<(String, String)>,
    /// How many of `values` are key values (the compact line's candidates).
    pub key_count: usize,
    /// Time since the last fresh message, humanised (`3s`, `2m05s`); `-` before the first.
    pub age: String,
    /// Recent power samples in W (negative clamped to 0), oldest first.
    pub power_history: Vec<u64>,
}

/// State kept between frames: per-device power history and recent events.
#[derive(Debug, Default)]
pub struct Model {
    /// Power samples per device id, bounded by [`POWER_HISTORY`].
    history: HashMap<String, VecDeque<u64>>,
    /// Newest first, bounded by [`EVENTS_KEPT`].
    events: VecDeque<String>,
}

impl Model {
    /// Records one event line (newest first), dropping the oldest beyond [`EVENTS_KEPT`].
    pub(crate) fn push_event(&mut self, line: String) {
        self.events.push_front(line);
        self.events.truncate(EVENTS_KEPT);
    }

    /// Takes one power sample per device from `snapshots` (call once per frame tick).
    pub fn sample(&mut self, snapshots: &[DeviceSnapshot]) {
        for snap in snapshots {
            let Some(watts) = power_of(snap) else { continue };
            let h = self.history.entry(snap.id.clone()).or_default();
            if h.len() == POWER_HISTORY {
                h.pop_front();
            }
            h.push_back(watts.max(0.0).round() as u64);
        }
    }

    /// Builds the frame's view from the router snapshot at wall-clock `now`.
    pub fn view(&self, snapshots: &[DeviceSnapshot], header: Header, now: SystemTime) -> View {
        let devices = snapshots
            .iter()
            .map(|s| {
                let history = self.history.get(&s.id).map(|h| h.iter().copied().collect()).unwrap_or_default();
                panel(s, now, history)
            })
            .collect();
        View { header, devices, events: self.events.iter().cloned().collect() }
    }
}

/// The device's power in W: `power`, else `power_import - power_export` (a meter's net flow).
fn power_of(snap: &DeviceSnapshot) -> Option<f64> {
    let get = |name: &str| snap.values.iter().find(|(q, _)| q.name() == name).and_then(|(_, v)| v.as_f64());
    get("power").or_else(|| Some(get("power_import")? - get("power_export").unwrap_or(0.0)))
}

/// Builds one device's panel.
pub(crate) fn panel(snap: &DeviceSnapshot, now: SystemTime, power_history: Vec<u64>) -> DevicePanel {
    let present: Vec<&(Quantity, Value)> =
        snap.values.iter().filter(|(_, v)| !matches!(v, Value::Text(t) if t.trim().is_empty())).collect();
    let find = |name: &str| present.iter().find(|(q, _)| q.name() == name);
    let state = ["charger_state", "printer_state"].iter().find_map(|n| find(n)).map(|(q, v)| plain(*q, v));
    let mut values: Vec<(String, String)> = Vec::with_capacity(present.len());
    for name in key_quantities(snap.kind) {
        if let Some((q, v)) = find(name) {
            values.push((q.name().to_owned(), with_unit(*q, v)));
        }
    }
    let key_count = values.len();
    let mut rest: Vec<(String, String)> = present
        .iter()
        .filter(|(q, _)| !HEADLINE.contains(&q.name()) && !key_quantities(snap.kind).contains(&q.name()))
        .map(|(q, v)| (q.name().to_owned(), with_unit(*q, v)))
        .collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    values.extend(rest);
    DevicePanel {
        id: snap.id.clone(),
        kind: snap.kind.as_str(),
        online: snap.online,
        reason: if snap.online { None } else { snap.reason.clone() },
        state,
        power: power_of(snap).map(watts),
        values,
        key_count,
        age: snap.last_seen.map(|t| age(now.duration_since(t).unwrap_or_default())).unwrap_or_else(|| "-".into()),
        power_history,
    }
}

/// The value as published (rounded to the quantity's precision), without unit.
fn plain(q: Quantity, v: &Value) -> String {
    let mut s = String::new();
    v.write_plain(q.family().decimals, &mut s);
    s
}

/// The value with its unit; seconds read as a duration (`12m30s`), numbers keep the contract unit.
pub(crate) fn with_unit(q: Quantity, v: &Value) -> String {
    let family = q.family();
    match (v, family.unit) {
        (Value::Number(n), "s") if n.is_finite() && *n >= 0.0 => age(Duration::from_secs_f64(*n)),
        (Value::Number(_), unit) if !unit.is_empty() => format!("{} {unit}", plain(q, v)),
        _ => plain(q, v),
    }
}

/// Watts humanised: `230 W`, `11.04 kW`, `1.2 MW`.
pub(crate) fn watts(w: f64) -> String {
    let a = w.abs();
    if a >= 1_000_000.0 {
        format!("{:.2} MW", w / 1_000_000.0)
    } else if a >= 1000.0 {
        format!("{:.2} kW", w / 1000.0)
    } else {
        format!("{w:.0} W")
    }
}

/// A duration humanised to at most two units: `0s`, `42s`, `2m05s`, `1h02m`, `3d04h`.
pub(crate) fn age(d: Duration) -> String {
    let s = d.as_secs();
    let mut out = String::with_capacity(8);
    let _ = match s {
        0..60 => write!(out, "{s}s"),
        60..3600 => write!(out, "{}m{:02}s", s / 60, s % 60),
        3600..86_400 => write!(out, "{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => write!(out, "{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    };
    out
}

/// One event line: UTC time of day, device, event name and the scalar data fields.
pub(crate) fn event_line(at: time::OffsetDateTime, topic: &str, payload: &[u8]) -> String {
    let device = topic.strip_suffix("/event").unwrap_or(topic);
    let device = device.rsplit('/').next().unwrap_or(device);
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    let name = v["event"].as_str().unwrap_or("?");
    let mut line = format!("{:02}:{:02}:{:02}Z  {device}  {name}", at.hour(), at.minute(), at.second());
    if let Some(map) = v["data"].as_object() {
        for (k, val) in map.iter().filter(|(_, val)| !val.is_object() && !val.is_array()) {
            let _ = match val {
                serde_json::Value::String(s) => write!(line, " {k}={s}"),
                other => write!(line, " {k}={other}"),
            };
        }
    }
    line
}

/// One plain log line for a device (the non-terminal mode): id, availability, state, power, key values, age.
pub(crate) fn plain_line(p: &DevicePanel) -> String {
    let mut line = format!("{} {}", p.id, if p.online { "online" } else { "offline" });
    if let Some(reason) = &p.reason {
        let _ = write!(line, " ({reason})");
    }
    if let Some(s) = &p.state {
        let _ = write!(line, " {s}");
    }
    if let Some(w) = &p.power {
        let _ = write!(line, " power={}", w.replace(' ', ""));
    }
    for (name, value) in &p.values[..p.key_count] {
        let _ = write!(line, " {name}={}", value.replace(' ', ""));
    }
    let _ = write!(line, " age={}", p.age);
    line
}

#[cfg(test)]
pub(crate) mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::types::AdapterKind;
    use crate::model::Identity;

    /// A snapshot as the router gives it, seen `seen_ago` before `now`.
    pub(crate) fn snapshot(
        id: &str,
        adapter: AdapterKind,
        online: bool,
        values: &[(&str, Value)],
        now: SystemTime,
    ) -> DeviceSnapshot {
        DeviceSnapshot {
            id: id.into(),
            adapter,
            kind: adapter.device_kind(),
            online,
            reason: if online { None } else { Some("no reading yet".into()) },
            last_seen: online.then(|| now - Duration::from_secs(3)),
            ts: None,
            values: values.iter().map(|(n, v)| (Quantity::known(n), v.clone())).collect(),
            identity: Identity::default(),
            details: BTreeMap::new(),
            base: format!("home/{id}"),
        }
    }

    pub(crate) fn text(s: &'static str) -> Value {
        Value::Text(Cow::Borrowed(s))
    }

    #[test]
    fn a_panel_puts_state_power_and_key_values_first_and_skips_empty_texts() {
        let now = SystemTime::now();
        let s = snapshot(
            "printer",
            AdapterKind::Octoprint,
            true,
            &[
                ("temperature_bed", Value::Number(60.04)),
                ("printer_state", text("printing")),
                ("print_file", text("folder/benchy.gcode")),
                ("print_progress", Value::Number(42.0)),
                ("power", Value::Number(11040.0)),
                ("charger_error", text("")),
                ("print_time_left", Value::Number(750.0)),
            ],
            now,
        );
        let p = panel(&s, now, vec![]);
        assert_eq!(p.state.as_deref(), Some("printing"));
        assert_eq!(p.power.as_deref(), Some("11.04 kW"));
        assert_eq!(p.age, "3s");
        let names: Vec<&str> = p.values.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["print_progress", "print_file", "print_time_left", "temperature_bed"]);
        assert_eq!(p.key_count, 4);
        assert_eq!(p.values[1].1, "folder/benchy.gcode", "text values are whole");
        assert_eq!(p.values[2].1, "12m30s");
        assert_eq!(p.values[3].1, "60.04 °C");
        assert!(!p.values.iter().any(|(n, _)| n == "charger_error"), "an empty text is an absent value");
    }

    #[test]
    fn an_offline_device_says_why_and_has_no_age_before_its_first_message() {
        let now = SystemTime::now();
        let p = panel(&snapshot("water_meter", AdapterKind::AiOnTheEdge, false, &[], now), now, vec![]);
        assert!(!p.online);
        assert_eq!(p.reason.as_deref(), Some("no reading yet"));
        assert_eq!(p.age, "-");
        assert_eq!(plain_line(&p), "water_meter offline (no reading yet) age=-");
    }

    #[test]
    fn a_meter_without_power_shows_its_net_import() {
        let now = SystemTime::now();
        let s = snapshot(
            "house",
            AdapterKind::Whatwatt,
            true,
            &[("power_import", Value::Number(1500.0)), ("power_export", Value::Number(200.0))],
            now,
        );
        let mut model = Model::default();
        model.sample(std::slice::from_ref(&s));
        let view = model.view(
            &[s],
            Header { broker: "mqtt://x".into(), connected: true, uptime: Duration::ZERO, http: None },
            now,
        );
        assert_eq!(view.devices[0].power.as_deref(), Some("1.30 kW"));
        assert_eq!(view.devices[0].power_history, [1300]);
    }

    #[test]
    fn history_and_events_stay_bounded() {
        let now = SystemTime::now();
        let s = snapshot("c", AdapterKind::Goe, true, &[("power", Value::Number(-5.0))], now);
        let mut model = Model::default();
        for _ in 0..POWER_HISTORY + 10 {
            model.sample(std::slice::from_ref(&s));
        }
        for i in 0..EVENTS_KEPT + 10 {
            model.push_event(format!("e{i}"));
        }
        assert_eq!(model.history["c"].len(), POWER_HISTORY);
        assert!(model.history["c"].iter().all(|w| *w == 0), "export clamps to 0 on the sparkline");
        assert_eq!(model.events.len(), EVENTS_KEPT);
        assert_eq!(model.events[0], format!("e{}", EVENTS_KEPT + 9), "newest first");
    }

    #[test]
    fn event_lines_name_the_device_and_the_scalar_data() {
        let at = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        let line = event_line(
            at,
            "home/garage_charger/event",
            br#"{"ts":"x","event":"charging_started","data":{"session_energy":0,"car":"x","nested":{}}}"#,
        );
        assert_eq!(line, "03:04:05Z  garage_charger  charging_started car=x session_energy=0");
        assert_eq!(event_line(at, "home/p/event", b"not json"), "03:04:05Z  p  ?");
    }

    #[test]
    fn durations_and_powers_read_like_a_human_wrote_them() {
        assert_eq!(age(Duration::from_secs(0)), "0s");
        assert_eq!(age(Duration::from_secs(125)), "2m05s");
        assert_eq!(age(Duration::from_secs(3720)), "1h02m");
        assert_eq!(age(Duration::from_secs(90_000)), "1d01h");
        assert_eq!(watts(230.4), "230 W");
        assert_eq!(watts(-1500.0), "-1.50 kW");
    }
}

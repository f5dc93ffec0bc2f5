//! The simulated charger itself ([`ChargerState`]): every API key plus the hidden physics and the
//! session lifecycle behind them, and the write rules. Pure: no sockets, no clock reads except in
//! [`ChargerState::tick`].

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use serde_json::{Map, Value};
use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, UtcOffset};

use super::keys::*;
use super::{GoeSimOptions, PhaseTicks};

/// Where the simulated session currently is; `car` is derived from it and from the charge logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionPhase {
    /// Nothing plugged in.
    Idle,
    /// Car plugged in; charging has not started yet (waiting time, `frc=1`, or access control).
    Plugged,
    /// Charging run in progress (shows `car=3` while paused by `frc=1`).
    Charging,
    /// Car full, still plugged in.
    Complete,
}

/// Insertion-ordered key store, so the MQTT burst keeps the device's order.
#[derive(Debug, Clone, Default)]
pub(super) struct Store {
    /// Keys and values in first-insertion order.
    entries: Vec<(String, Value)>,
    /// Position of each key in `entries`.
    index: HashMap<String, usize>,
}

impl Store {
    fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Sets `key`; returns whether the value actually changed (new keys count as changed).
    fn insert(&mut self, key: &str, value: Value) -> bool {
        match self.index.get(key) {
            Some(&i) => {
                if self.entries[i].1 == value {
                    false
                } else {
                    self.entries[i].1 = value;
                    true
                }
            }
            None => {
                self.index.insert(key.to_owned(), self.entries.len());
                self.entries.push((key.to_owned(), value));
                true
            }
        }
    }
}

/// Rounds to `decimals` places.
pub(super) fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// A JSON number printed like the firmware: integral values without a fraction (`232`, not `232.0`).
pub(super) fn number(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

/// The value after a trip through float32 printed with `sig` significant digits (`49.95899963`).
pub(super) fn f32_noise(x: f64, sig: i32) -> f64 {
    let y = f64::from(x as f32);
    if y == 0.0 || !y.is_finite() {
        return y;
    }
    let magnitude = y.abs().log10().floor() as i32 + 1;
    let decimals = (sig - magnitude).clamp(0, 12) as usize;
    format!("{y:.decimals$}").parse().unwrap_or(y)
}

/// Last Sunday of `month` at 01:00 UTC: the EU daylight-saving switch instants.
pub(super) fn eu_switch(year: i32, month: Month) -> Option<OffsetDateTime> {
    let last = Date::from_calendar_date(year, month, month.length(year)).ok()?;
    let back = i64::from(last.weekday().number_days_from_sunday());
    let sunday = last.checked_sub(time::Duration::days(back))?;
    Some(sunday.with_hms(1, 0, 0).ok()?.assume_utc())
}

/// The device's local offset from `tof` (minutes) and `tds` (1 = European summer time).
pub(super) fn local_offset(now: OffsetDateTime, tof_minutes: i64, tds: i64) -> UtcOffset {
    let mut minutes = tof_minutes;
    if tds == 1
        && let (Some(start), Some(end)) = (eu_switch(now.year(), Month::March), eu_switch(now.year(), Month::October))
        && now >= start
        && now < end
    {
        minutes += 60;
    }
    let secs = i32::try_from(minutes.clamp(-1080, 1080) * 60).unwrap_or(0);
    UtcOffset::from_whole_seconds(secs).unwrap_or(UtcOffset::UTC)
}

/// The whole simulated charger: every API key plus the hidden physics behind them. Pure: no IO,
/// no clock reads except in [`ChargerState::tick`] (use [`ChargerState::tick_at`] in tests).
#[derive(Debug, Clone)]
pub(crate) struct ChargerState {
    /// Every API key the device has, as the JSON value HTTP and MQTT serve.
    store: Store,
    /// Simulated time per tick: `rbt` and the energy integration step.
    tick: Duration,
    /// Length of each session phase.
    phase_ticks: PhaseTicks,
    /// Where the endless demo session is.
    phase: SessionPhase,
    /// Ticks spent in the current phase (idle, plugged, complete).
    phase_elapsed: u32,
    /// Ticks that delivered energy in the current session (drives `Charging` → `Complete`).
    charged_ticks: u32,
    /// Ticks since the current uninterrupted charging run began (drives the current ramp-up).
    run_ticks: u32,
    /// `rbt` when the current charging run began, for `cdi` type 0 (running).
    run_started_rbt: Option<u64>,
    /// Length of the last charging run, for `cdi` type 1 (last duration).
    last_run_ms: u64,
    /// Milliseconds since boot; the adapter's liveness signal.
    rbt: u64,
    /// Unrounded energy counters: `eto` is published as whole Wh and would never rise otherwise.
    eto_wh: f64,
    /// Unrounded session energy behind `wh`.
    wh: f64,
    /// Unloaded grid voltage per phase (random walk); the load sag is applied on top.
    grid_v: [f64; 3],
    /// Grid frequency behind `fhz`, kept unquantised so the walk stays smooth.
    fhz: f64,
    /// Running average behind `avgfhz`.
    avg_fhz: f64,
    /// Unquantised temperatures behind `tma` (the sensors publish 1/8 °C steps).
    tma: [f64; 2],
    /// 30 s average power behind `tpa`.
    tpa: f64,
    /// `rbt` of the last `ids` write; PV data goes stale 10 s later.
    ids_at: Option<u64>,
    /// `car` at the previous tick, to stamp `lccfi`/`lccfc`/`lcctc` on transitions.
    prev_car: i64,
    /// `modelStatus` at the previous tick, to stamp `lmsc` on changes.
    prev_model_status: i64,
    /// Set by an `rst` write until the IO side has re-sent the burst.
    rebooted: bool,
}

impl ChargerState {
    /// A charger with serial `serial` in the idle state, keys as in the 56.9 connect burst.
    pub(crate) fn new(serial: &str, tick: Duration, phase_ticks: PhaseTicks) -> ChargerState {
        let mut store = Store::default();
        for line in BURST_56_9.lines() {
            let Some((topic, json)) = line.split_once(' ') else {
                continue;
            };
            let Some(key) = topic.rsplit('/').next().filter(|k| !k.is_empty()) else {
                continue;
            };
            if store.get(key).is_some() {
                continue; // later lines are updates, not part of the burst
            }
            if let Ok(v) = serde_json::from_str::<Value>(json.trim()) {
                store.insert(key, v);
            }
        }
        let rbt = store.get("rbt").and_then(Value::as_u64).unwrap_or(812_334);
        let mut s = ChargerState {
            store,
            tick,
            phase_ticks,
            phase: SessionPhase::Idle,
            phase_elapsed: 0,
            charged_ticks: 0,
            run_ticks: 0,
            run_started_rbt: None,
            last_run_ms: 0,
            rbt,
            // A lifetime counter that looks used (the 56.9 unit reported 0; the 055.0 trace this).
            eto_wh: 527_952.0,
            wh: 0.0,
            grid_v: [232.0, 232.0, 231.0],
            fhz: 49.959,
            avg_fhz: 49.906,
            tma: [22.875, 27.625],
            tpa: 0.0,
            ids_at: None,
            prev_car: 1,
            prev_model_status: 15,
            rebooted: false,
        };
        let ins = |s: &mut ChargerState, k: &str, v: Value| {
            s.store.insert(k, v);
        };
        // Identity (HTTP-only `sse`, vendor-transcript style `fna`) and a 22 kW HOME+.
        ins(&mut s, "sse", Value::from(serial));
        ins(&mut s, "fna", Value::from(format!("go-echarger_{serial}")));
        ins(&mut s, "typ", Value::from("go-eCharger"));
        ins(&mut s, "fwv", Value::from("56.9"));
        ins(&mut s, "var", Value::from(22));
        ins(&mut s, "oem", Value::from("go-e"));
        // Default logic mode, no adapter, full current range: a plain session reports
        // modelStatus 15 and acu = amp instead of the capture's eco-mode 10 A.
        ins(&mut s, "lmo", Value::from(3));
        ins(&mut s, "amp", Value::from(16));
        ins(&mut s, "ama", Value::from(32));
        ins(&mut s, "adi", Value::Bool(false));
        ins(&mut s, "psm", Value::from(2));
        ins(&mut s, "frc", Value::from(0));
        ins(&mut s, "acs", Value::from(0));
        ins(&mut s, "car", Value::from(1));
        ins(&mut s, "alw", Value::Bool(true));
        ins(&mut s, "acu", Value::from(16));
        ins(&mut s, "modelStatus", Value::from(15));
        ins(&mut s, "err", Value::from(0));
        ins(&mut s, "eto", Value::from(527_952u64));
        ins(&mut s, "wh", Value::from(0));
        ins(&mut s, "pnp", Value::from(0));
        ins(&mut s, "tof", Value::from(60));
        ins(&mut s, "tds", Value::from(1));
        // MQTT configuration and health keys (go-e.md §1.1); run() fills in the real values.
        ins(&mut s, "mce", Value::Bool(true));
        ins(&mut s, "mcu", Value::from(""));
        ins(&mut s, "mcr", Value::Bool(false));
        ins(&mut s, "mtp", Value::Null);
        ins(&mut s, "mcs", Value::Bool(false));
        ins(&mut s, "mcc", Value::Bool(false));
        ins(&mut s, "mcca", Value::Null);
        ins(&mut s, "mlr", Value::Null);
        ins(&mut s, "mlra", Value::Null);
        s.store.insert(
            "cll",
            serde_json::json!({"adapterCurrentLimit":32,"awattar":32,"currentLimitMax":32,"loadLimit":32,
                "requestedCurrent":16,"temperatureCurrentLimit":32,"unsymetryCurrentLimit":32}),
        );
        // Keys that must exist even if a future fixture lacks them.
        for (k, v) in [
            ("rbc", Value::from(84)),
            ("rbt", Value::from(rbt)),
            ("rssi", Value::from(-65)),
            ("fhz", Value::from(49.95899963)),
            ("nrg", serde_json::json!([232, 232, 231, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            ("tma", serde_json::json!([22.875, 27.625])),
            ("utc", Value::from("")),
            ("loc", Value::from("")),
        ] {
            if s.store.get(k).is_none() {
                s.store.insert(k, v);
            }
        }
        let now = OffsetDateTime::now_utc();
        s.update_clock(now, 5, &mut Vec::new());
        let tab = now.unix_timestamp_nanos() / 1_000_000 - i128::from(s.rbt);
        s.store.insert("tab", Value::from(i64::try_from(tab).unwrap_or(0)));
        s
    }

    /// The state [`run`] starts from: serial, `mcr`, `mtp` and `mcu` taken from the options.
    pub(crate) fn from_options(opts: &GoeSimOptions) -> ChargerState {
        let mut s = ChargerState::new(&opts.serial, opts.tick, opts.phase_ticks);
        s.store.insert("mcr", Value::Bool(opts.read_only));
        s.store.insert("mtp", opts.topic_prefix.clone().map_or(Value::Null, Value::from));
        let mcu = opts.broker.as_ref().map(|b| format!("mqtt://{}:{}/", b.host, b.port)).unwrap_or_default();
        s.store.insert("mcu", Value::from(mcu));
        s.store.insert("mce", Value::Bool(opts.broker.is_some()));
        s
    }

    /// Current value of `key`, if the device has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.store.get(key)
    }

    /// Whether MQTT writes must be ignored (`mcr`, changeable at runtime over HTTP).
    pub(crate) fn mqtt_read_only(&self) -> bool {
        self.get_bool("mcr").unwrap_or(false)
    }

    /// Whether `key` is published on MQTT (some keys are HTTP-only on real firmware).
    pub(crate) fn is_mqtt_key(key: &str) -> bool {
        !HTTP_ONLY_KEYS.contains(&key)
    }

    /// Every MQTT-published key with its value, in burst order: what a (re)connect publishes.
    pub(crate) fn mqtt_snapshot(&self) -> Vec<(String, Value)> {
        self.store.entries.iter().filter(|(k, _)| Self::is_mqtt_key(k)).cloned().collect()
    }

    /// Records the MQTT connection state in `mcs`/`mcc`/`mcca` like the firmware does.
    pub(crate) fn set_mqtt_connected(&mut self, connected: bool) {
        self.store.insert("mcs", Value::Bool(true));
        if self.store.insert("mcc", Value::Bool(connected)) && connected {
            self.store.insert("mcca", Value::from(self.rbt));
        }
    }

    /// True once after a write to `rst` rebooted the charger (the IO side then re-sends the burst).
    pub(crate) fn take_rebooted(&mut self) -> bool {
        std::mem::take(&mut self.rebooted)
    }

    /// `/api/status`: the requested keys (all without a filter) and the requested keys the
    /// device does not have.
    pub(crate) fn status(&self, filter: Option<&[&str]>) -> (Map<String, Value>, Vec<String>) {
        let mut out = Map::new();
        let mut missing = Vec::new();
        match filter {
            None => {
                for (k, v) in &self.store.entries {
                    out.insert(k.clone(), v.clone());
                }
            }
            Some(keys) => {
                for &k in keys {
                    match self.store.get(k) {
                        Some(v) => {
                            out.insert(k.to_owned(), v.clone());
                        }
                        None => missing.push(k.to_owned()),
                    }
                }
            }
        }
        (out, missing)
    }

    /// An MQTT write (`<key>/set`): `Ok` or the exact `/result` error text. Effects on derived
    /// keys (`alw`, `acu`, `car`, …) show at the next tick, as on the device.
    pub(crate) fn set(&mut self, key: &str, payload: &str) -> Result<(), String> {
        self.write(key, payload).map_err(|e| e.mqtt_text(key, payload))
    }

    /// An HTTP write (`/api/set?key=payload`): same rules as [`ChargerState::set`], with the
    /// HTTP wording of the error text.
    pub(crate) fn set_http(&mut self, key: &str, payload: &str) -> Result<(), String> {
        self.write(key, payload).map_err(|e| e.http_text(key, payload))
    }

    fn write_spec(&self, key: &str) -> Result<Spec, WriteError> {
        if let Some((_, spec)) = WRITE_SPECS.iter().find(|(k, _)| *k == key) {
            return Ok(*spec);
        }
        let current = self.store.get(key);
        if READ_ONLY_KEYS.contains(&key) {
            return Err(WriteError::NoSetter);
        }
        let Some(current) = current else {
            return Err(WriteError::UnknownKey);
        };
        match vendor_key_table().get(key) {
            Some((typ, rw)) if rw.contains('W') => Ok(spec_from_vendor_type(typ, Some(current))),
            _ => Err(WriteError::NoSetter),
        }
    }

    fn write(&mut self, key: &str, payload: &str) -> Result<(), WriteError> {
        let spec = self.write_spec(key)?;
        let value = parse_payload(payload)?;
        spec.check(&value)?;
        match key {
            "rst" => self.reboot(),
            "ids" => {
                let pgrid = value.get("pGrid").filter(|v| v.is_number()).cloned();
                let Some(pgrid) = pgrid else {
                    return Err(WriteError::WrongType("object with pGrid".to_owned()));
                };
                self.store.insert("pgrid", pgrid);
                for (field, k) in [("pPv", "ppv"), ("pAkku", "pakku")] {
                    let v = value.get(field).filter(|v| v.is_number()).cloned().unwrap_or(Value::Null);
                    self.store.insert(k, v);
                }
                self.ids_at = Some(self.rbt);
            }
            _ => {
                self.store.insert(key, value);
            }
        }
        Ok(())
    }

    fn reboot(&mut self) {
        let rbc = self.get_i64("rbc").unwrap_or(0) + 1;
        self.store.insert("rbc", Value::from(rbc));
        let tab = self.get_i64("tab").unwrap_or(0) + i64::try_from(self.rbt).unwrap_or(0);
        self.rbt = 0;
        self.store.insert("rbt", Value::from(0));
        self.store.insert("tab", Value::from(tab));
        self.rebooted = true;
    }

    fn get_i64(&self, key: &str) -> Option<i64> {
        self.store.get(key).and_then(Value::as_i64)
    }

    fn get_bool(&self, key: &str) -> Option<bool> {
        self.store.get(key).and_then(Value::as_bool)
    }

    fn put(&mut self, key: &'static str, value: Value, changed: &mut Vec<&'static str>) {
        if self.store.insert(key, value) {
            changed.push(key);
        }
    }

    /// Whether the charge logic lets a car charge now (`frc`, then access control).
    fn allowed(&self) -> bool {
        match self.get_i64("frc").unwrap_or(0) {
            1 => false,
            2 => true,
            // Old firmware accepted 3..5 and treated them as neutral (go-e.md §3.3).
            _ => self.get_i64("acs").unwrap_or(0) == 0 || !self.store.get("trx").is_none_or(Value::is_null),
        }
    }

    fn model_status(&self) -> i64 {
        match self.get_i64("frc").unwrap_or(0) {
            2 => 3,
            1 => 4,
            _ if !self.allowed() => 2,
            _ => match self.get_i64("lmo").unwrap_or(3) {
                4 => 7,
                5 => 10,
                _ => 15,
            },
        }
    }

    /// One logic tick at the current wall-clock time.
    pub(crate) fn tick<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Vec<&'static str> {
        self.tick_at(rng, OffsetDateTime::now_utc())
    }

    /// One logic tick at `now`: advances `rbt`, the clock keys, the session and the measurements.
    /// Returns the keys whose value changed.
    pub(crate) fn tick_at<R: Rng + ?Sized>(&mut self, rng: &mut R, now: OffsetDateTime) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let tick_ms = u64::try_from(self.tick.as_millis()).unwrap_or(u64::MAX);
        self.rbt = self.rbt.saturating_add(tick_ms);
        self.put("rbt", Value::from(self.rbt), &mut changed);
        let loc_lag_ms = rng.random_range(3..9);
        self.update_clock(now, loc_lag_ms, &mut changed);
        self.advance_session(&mut changed);
        self.update_outputs(rng, &mut changed);
        changed
    }

    fn update_clock(&mut self, now: OffsetDateTime, loc_lag_ms: i64, changed: &mut Vec<&'static str>) {
        let utc_fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]");
        let loc_fmt = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3] [offset_hour sign:mandatory]:[offset_minute]"
        );
        let offset = local_offset(now, self.get_i64("tof").unwrap_or(60), self.get_i64("tds").unwrap_or(1));
        // The firmware formats `loc` a few ms after `utc`, as the 56.9 capture shows.
        let local = (now + time::Duration::milliseconds(loc_lag_ms)).to_offset(offset);
        let utc = now.format(&utc_fmt).unwrap_or_default();
        let loc = local.format(&loc_fmt).unwrap_or_default();
        self.put("utc", Value::from(utc), changed);
        self.put("loc", Value::from(loc), changed);
    }

    fn advance_session(&mut self, changed: &mut Vec<&'static str>) {
        let allowed = self.allowed();
        let frc = self.get_i64("frc").unwrap_or(0);
        match self.phase {
            SessionPhase::Idle => {
                if self.phase_elapsed >= self.phase_ticks.idle {
                    tracing::debug!("simulated car plugged in");
                    self.phase = SessionPhase::Plugged;
                    // This tick already shows the new phase, so it counts.
                    self.phase_elapsed = 1;
                    self.charged_ticks = 0;
                    // `wh` counts from plug-in.
                    self.wh = 0.0;
                } else {
                    self.phase_elapsed += 1;
                }
            }
            SessionPhase::Plugged => {
                // `frc=2` starts a plugged car at once; otherwise the car takes a moment.
                if allowed && (self.phase_elapsed >= self.phase_ticks.waiting || frc == 2) {
                    tracing::debug!("simulated charging starts");
                    self.phase = SessionPhase::Charging;
                    self.phase_elapsed = 0;
                } else {
                    self.phase_elapsed = self.phase_elapsed.saturating_add(1);
                }
            }
            SessionPhase::Charging => {
                if self.charged_ticks >= self.phase_ticks.charging {
                    tracing::debug!("simulated car full");
                    self.phase = SessionPhase::Complete;
                    self.phase_elapsed = 1;
                }
            }
            SessionPhase::Complete => {
                if self.phase_elapsed >= self.phase_ticks.complete {
                    tracing::debug!("simulated car unplugged");
                    self.phase = SessionPhase::Idle;
                    self.phase_elapsed = 1;
                    self.wh = 0.0;
                    // The firmware resets the force state and the transaction on unplug.
                    self.put("frc", Value::from(0), changed);
                    self.put("trx", Value::Null, changed);
                } else {
                    self.phase_elapsed += 1;
                }
            }
        }
    }

    fn update_outputs<R: Rng + ?Sized>(&mut self, rng: &mut R, changed: &mut Vec<&'static str>) {
        let dt = self.tick.as_secs_f64();
        let allowed = self.allowed();
        let plugged = self.phase != SessionPhase::Idle;
        let charging = self.phase == SessionPhase::Charging && allowed;
        let car: i64 = match self.phase {
            SessionPhase::Idle => 1,
            SessionPhase::Plugged => 3,
            SessionPhase::Charging if allowed => 2,
            SessionPhase::Charging => 3,
            SessionPhase::Complete => 4,
        };

        let amp = self.get_i64("amp").unwrap_or(16).clamp(6, 32);
        let ama = self.get_i64("ama").unwrap_or(32).clamp(6, 32);
        let amt = self.get_i64("amt").unwrap_or(32);
        let cbl: Option<i64> = plugged.then_some(32);
        let tcl = self.get_i64("tcl");
        let mut limit = amp.min(ama).min(amt).min(cbl.unwrap_or(32));
        if let Some(t) = tcl {
            limit = limit.min(t);
        }
        let acu = allowed.then_some(limit);
        let three_phase = self.get_i64("psm").unwrap_or(0) != 1;
        let phases: usize = if three_phase { 3 } else { 1 };

        // Charging run bookkeeping: ramp-up, cdi and the lcc* timestamps.
        if charging {
            if self.run_started_rbt.is_none() {
                self.run_started_rbt = Some(self.rbt);
                self.run_ticks = 0;
            }
            self.run_ticks = self.run_ticks.saturating_add(1);
            self.charged_ticks = self.charged_ticks.saturating_add(1);
        } else if let Some(start) = self.run_started_rbt.take() {
            self.last_run_ms = self.rbt.saturating_sub(start);
            self.run_ticks = 0;
        }
        // Cars ramp the current up over a few seconds after the contactor closes.
        let ramp = (f64::from(self.run_ticks) / 3.0).min(1.0);

        // Grid: a mean-reverting random walk around 231 V per phase.
        for v in &mut self.grid_v {
            *v += rng.random_range(-0.4..0.4) + (231.5 - *v) * 0.05;
            *v = v.clamp(222.0, 240.0);
        }
        let mut u = [0.0; 3];
        let mut i = [0.0; 3];
        let mut p = [0.0; 3];
        let mut pf = [0.0; 3];
        for ph in 0..3 {
            if charging && ph < phases {
                // Cars draw slightly below the allowed current (15.3 A at 16 A in the trace).
                i[ph] = (limit as f64 * rng.random_range(0.952..0.968) * ramp).max(0.0);
                pf[ph] = if rng.random_bool(0.3) { 100.0 } else { rng.random_range(98.8..100.0) };
            }
            // Line impedance: the voltage sags a little under load.
            u[ph] = self.grid_v[ph] - 0.28 * i[ph];
            p[ph] = u[ph] * i[ph] * pf[ph] / 100.0;
        }
        let total: f64 = p.iter().sum();
        let nrg = if charging {
            let pf_val = |x: f64| number(f32_noise(x, 7));
            serde_json::json!([
                number(round_to(u[0], 2)),
                number(round_to(u[1], 2)),
                number(round_to(u[2], 2)),
                number(round_to(rng.random_range(2.4..2.9), 2)),
                number(round_to(i[0], 3)),
                number(round_to(i[1], 3)),
                number(round_to(i[2], 3)),
                number(round_to(p[0], 3)),
                number(round_to(p[1], 3)),
                number(round_to(p[2], 3)),
                0,
                number(round_to(total, 2)),
                pf_val(pf[0]),
                pf_val(pf[1]),
                pf_val(pf[2]),
                100
            ])
        } else {
            // Idle chargers report whole volts and zeros (56.9 and 60.5 captures).
            serde_json::json!([
                number(u[0].round()),
                number(u[1].round()),
                number(u[2].round()),
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0
            ])
        };

        let energy = total * dt / 3600.0;
        self.wh += energy;
        self.eto_wh += energy;

        // Temperatures follow the load slowly; the sensors resolve 1/8 °C.
        let heat = total / 1000.0 * 0.9;
        let k = (dt / 120.0).min(1.0);
        let targets = [22.875 + heat, 27.625 + heat * 1.3];
        for (t, target) in self.tma.iter_mut().zip(targets) {
            *t += (target - *t) * k + rng.random_range(-0.06..0.06);
        }
        let tma: Vec<Value> = self.tma.iter().map(|t| number((t * 8.0).round() / 8.0)).collect();

        self.fhz = (self.fhz + rng.random_range(-0.06..0.06) + (50.0 - self.fhz) * 0.2).clamp(49.8, 50.2);
        self.avg_fhz += (self.fhz - self.avg_fhz) * 0.1;
        self.tpa += (total - self.tpa) * (dt / 30.0).min(1.0);
        let rssi = self.get_i64("rssi").unwrap_or(-65);
        let rssi = if rng.random_bool(0.3) { (rssi + rng.random_range(-1..=1)).clamp(-80, -50) } else { rssi };

        let model_status = self.model_status();
        let cdi = match self.run_started_rbt {
            Some(start) => serde_json::json!({"type": 0, "value": self.rbt.saturating_sub(start)}),
            None => serde_json::json!({"type": 1, "value": self.last_run_ms}),
        };
        let ust = self.get_i64("ust").unwrap_or(1);
        let cus = match self.phase {
            SessionPhase::Idle => 1,
            // AutoUnlock (ust=1) releases the cable once charging has finished.
            SessionPhase::Complete if ust == 1 => 1,
            _ => 3,
        };
        let mut pha = [false, false, false, true, true, true];
        for (ph, out) in pha.iter_mut().take(3).enumerate() {
            *out = charging && ph < phases;
        }

        if car != self.prev_car {
            match (self.prev_car, car) {
                (1, _) => self.put("lccfi", Value::from(self.rbt), changed),
                (2, _) => self.put("lccfc", Value::from(self.rbt), changed),
                _ => {}
            }
            if car == 2 {
                self.put("lcctc", Value::from(self.rbt), changed);
            }
            self.prev_car = car;
        }
        if model_status != self.prev_model_status {
            self.put("lmsc", Value::from(self.rbt), changed);
            self.prev_model_status = model_status;
        }
        if let Some(at) = self.ids_at
            && self.rbt.saturating_sub(at) > 10_000
        {
            // PV-surplus input goes stale when not refreshed (go-e.md §3.3).
            self.ids_at = None;
            for k in ["pgrid", "ppv", "pakku"] {
                self.put(k, Value::Null, changed);
            }
        }

        self.put("car", Value::from(car), changed);
        self.put("alw", Value::Bool(allowed), changed);
        self.put("acu", acu.map_or(Value::Null, Value::from), changed);
        self.put("modelStatus", Value::from(model_status), changed);
        self.put("nrg", nrg, changed);
        self.put("eto", Value::from(self.eto_wh.floor() as u64), changed);
        self.put("wh", number(round_to(self.wh, 2)), changed);
        self.put("tma", Value::Array(tma), changed);
        self.put("fhz", number(f32_noise(self.fhz, 10)), changed);
        self.put("avgfhz", number(f32_noise(self.avg_fhz, 10)), changed);
        self.put("tpa", number(f32_noise(round_to(self.tpa, 3), 7)), changed);
        self.put("rssi", Value::from(rssi), changed);
        self.put("cbl", cbl.map_or(Value::Null, Value::from), changed);
        self.put("cus", Value::from(cus), changed);
        self.put("pha", serde_json::json!(pha), changed);
        self.put("pnp", Value::from(if charging { phases } else { 0 }), changed);
        self.put("fsp", Value::Bool(!three_phase), changed);
        self.put("cdi", cdi, changed);
        let cll = serde_json::json!({
            "adapterCurrentLimit": if self.get_bool("adi").unwrap_or(false) { 16 } else { 32 },
            "awattar": 32,
            "currentLimitMax": ama,
            "loadLimit": 32,
            "requestedCurrent": amp,
            "temperatureCurrentLimit": amt,
            "unsymetryCurrentLimit": 32
        });
        self.put("cll", cll, changed);
    }
}

//! The simulated whatwatt Go itself ([`Gateway`], pure: no IO): the meter profiles started from real
//! reports, the random walk of the load and the integrating registers, the `/api/v1/report` and
//! `/api/v1/system` answers and the framed SSE `live` event.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use time::{OffsetDateTime, UtcOffset};

use super::WhatwattSimOptions;
use super::config::{SimAuth, SimLicence, SimMeter};

const REPORT_MBUS: &str = include_str!("../../../adapters/whatwatt/fixtures/docs_report_landisgyr_mbus_dlms.json");
const REPORT_P1: &str = include_str!("../../../adapters/whatwatt/fixtures/docs_report_ensor_p1_dsmr.json");
const REPORT_KMP: &str = include_str!("../../../adapters/whatwatt/fixtures/gl_report_kamstrup_kmp_fw2.8.2.json");
const SYSTEM: &str = include_str!("../../../adapters/whatwatt/fixtures/docs_system_get_fw1.10.0.json");

/// Report path ↔ SSE key ↔ template variable, the simulator's own copy of notes §6 (kept apart from
/// the adapter's tables so that a mistake there is not mirrored here).
pub(super) const FIELDS: &[(&str, &str, &str)] = &[
    ("/report/instantaneous_power/active/positive/total", "P_In", "1_7_0"),
    ("/report/instantaneous_power/active/negative/total", "P_Out", "2_7_0"),
    ("/report/instantaneous_power/active/positive/l1", "P_P1_In", "21_7_0"),
    ("/report/instantaneous_power/active/positive/l2", "P_P2_In", "41_7_0"),
    ("/report/instantaneous_power/active/positive/l3", "P_P3_In", "61_7_0"),
    ("/report/instantaneous_power/active/negative/l1", "P_P1_Out", "22_7_0"),
    ("/report/instantaneous_power/active/negative/l2", "P_P2_Out", "42_7_0"),
    ("/report/instantaneous_power/active/negative/l3", "P_P3_Out", "62_7_0"),
    ("/report/instantaneous_power/reactive/positive/total", "rP_In", "3_7_0"),
    ("/report/instantaneous_power/reactive/negative/total", "rP_Out", "4_7_0"),
    ("/report/instantaneous_power/reactive/positive/l1", "rP_P1_In", "23_7_0"),
    ("/report/instantaneous_power/reactive/positive/l2", "rP_P2_In", "43_7_0"),
    ("/report/instantaneous_power/reactive/positive/l3", "rP_P3_In", "63_7_0"),
    ("/report/instantaneous_power/reactive/negative/l1", "rP_P1_Out", "24_7_0"),
    ("/report/instantaneous_power/reactive/negative/l2", "rP_P2_Out", "44_7_0"),
    ("/report/instantaneous_power/reactive/negative/l3", "rP_P3_Out", "64_7_0"),
    ("/report/instantaneous_power/apparent/total", "", "9_7_0"),
    ("/report/power_factor", "PF", "13_7_0"),
    ("/report/voltage/l1", "V_P1", "32_7_0"),
    ("/report/voltage/l2", "V_P2", "52_7_0"),
    ("/report/voltage/l3", "V_P3", "72_7_0"),
    ("/report/current/l1", "I_P1", "31_7_0"),
    ("/report/current/l2", "I_P2", "51_7_0"),
    ("/report/current/l3", "I_P3", "71_7_0"),
    ("/report/energy/active/positive/total", "E_In", "1_8_0"),
    ("/report/energy/active/positive/t1", "E_In_T1", "1_8_1"),
    ("/report/energy/active/positive/t2", "E_In_T2", "1_8_2"),
    ("/report/energy/active/negative/total", "E_Out", "2_8_0"),
    ("/report/energy/active/negative/t1", "E_Out_T1", "2_8_1"),
    ("/report/energy/active/negative/t2", "E_Out_T2", "2_8_2"),
    ("/report/energy/reactive/positive/total", "rE_In", "3_8_0"),
    ("/report/energy/reactive/negative/total", "rE_Out", "4_8_0"),
    ("/report/conv_factor", "", "conv_factor"),
];

impl SimMeter {
    pub(super) fn base_report(self) -> &'static str {
        match self {
            SimMeter::P1 => REPORT_P1,
            SimMeter::Mbus => REPORT_MBUS,
            SimMeter::Kmp => REPORT_KMP,
        }
    }
}

pub(super) fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// A JSON number printed like the firmware: `234`, not `234.0`.
pub(super) fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

pub(super) fn set(v: &mut Value, pointer: &str, x: Value) {
    if let Some(slot) = v.pointer_mut(pointer) {
        *slot = x;
    }
}

fn has(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).is_some()
}

fn fmt_local(t: OffsetDateTime, z: bool) -> String {
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if z {
        return format!("{base}Z");
    }
    let o = t.offset();
    let sign = if o.is_negative() { '-' } else { '+' };
    format!("{base}{sign}{:02}:{:02}", o.whole_hours().abs(), o.minutes_past_hour().abs())
}

/// The simulated meter and gateway (pure: no IO).
pub(crate) struct Gateway {
    pub(super) report: Value,
    pub(super) system: Value,
    meter: SimMeter,
    interval: Duration,
    offset: UtcOffset,
    booted: Instant,
    rng: StdRng,
    /// Net power per phase (kW), the random walk behind the report.
    net: [f64; 3],
    /// Unrounded registers.
    e_in: f64,
    e_out: f64,
    e_in_t: [f64; 2],
    e_out_t: [f64; 2],
    eq_in: f64,
    eq_out: f64,
}

impl Gateway {
    /// A gateway with `opts`' id, licence and meter, at its first report.
    pub(crate) fn new(opts: &WhatwattSimOptions) -> Gateway {
        let mut report: Value = serde_json::from_str(opts.meter.base_report()).unwrap_or_else(|_| json!({}));
        let mut system: Value = serde_json::from_str(SYSTEM).unwrap_or_else(|_| json!({}));
        let interval = opts.interval.unwrap_or_else(|| {
            let secs = report.pointer("/report/interval").and_then(Value::as_f64).unwrap_or(5.0);
            Duration::from_secs_f64(secs)
        });
        set(&mut report, "/system/id", json!(opts.id));
        set(&mut report, "/system/boot_id", json!(format!("{:08X}", opts.seed.wrapping_mul(2_654_435_761) as u32)));
        set(&mut report, "/report/id", json!(0));
        let fw = if opts.auth == SimAuth::Basic { "1.2.15" } else { "1.10.0" };
        set(&mut system, "/device/id", json!(opts.id));
        set(&mut system, "/device/firmware", json!(fw));
        set(&mut system, "/wifi/mac", json!(opts.id));
        let eth = u64::from_str_radix(&opts.id, 16).map(|m| format!("{:012X}", m + 3)).unwrap_or_default();
        set(&mut system, "/ethernet/mac", json!(eth));
        let lic = if opts.licence == SimLicence::Free { "FREE" } else { "PLUS" };
        set(&mut system, "/device/license/type", json!(lic));
        let m = report.get("meter").cloned().unwrap_or_default();
        let s = |k: &str| m.get(k).cloned().unwrap_or(json!(""));
        for (k, v) in [
            ("interface", s("interface")),
            ("id", s("id")),
            ("manufacturer", s("vendor")),
            ("type", s("logical_name")),
            ("model", s("model")),
            ("protocol", s("protocol")),
            ("protocol_version", s("protocol_version")),
        ] {
            set(&mut system, &format!("/meter/{k}"), v);
        }
        set(&mut system, "/meter/report_interval", number(round(interval.as_secs_f64(), 3)));
        let get = |p: &str| report.pointer(p).and_then(Value::as_f64).unwrap_or(0.0);
        let mut g = Gateway {
            e_in: get("/report/energy/active/positive/total"),
            e_out: get("/report/energy/active/negative/total"),
            e_in_t: [get("/report/energy/active/positive/t1"), get("/report/energy/active/positive/t2")],
            e_out_t: [get("/report/energy/active/negative/t1"), get("/report/energy/active/negative/t2")],
            eq_in: get("/report/energy/reactive/positive/total"),
            eq_out: get("/report/energy/reactive/negative/total"),
            net: [
                get("/report/instantaneous_power/active/positive/l1")
                    - get("/report/instantaneous_power/active/negative/l1"),
                get("/report/instantaneous_power/active/positive/l2")
                    - get("/report/instantaneous_power/active/negative/l2"),
                get("/report/instantaneous_power/active/positive/l3")
                    - get("/report/instantaneous_power/active/negative/l3"),
            ],
            report,
            system,
            meter: opts.meter,
            interval,
            offset: opts.utc_offset,
            booted: Instant::now(),
            rng: StdRng::seed_from_u64(opts.seed),
        };
        if g.net == [0.0; 3] {
            g.net = [0.3, 0.2, 0.25];
        }
        g
    }

    /// The meter report period.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether phase `n` (0-based) carries a real voltage in this profile.
    fn live_phase(&self, n: usize) -> bool {
        let p = format!("/report/voltage/l{}", n + 1);
        match self.report.pointer(&p).and_then(Value::as_f64) {
            Some(u) => u >= 100.0,
            None => n == 0,
        }
    }

    /// One meter report at wall-clock `now`.
    pub(crate) fn tick(&mut self, now: OffsetDateTime) {
        let dt_h = self.interval.as_secs_f64() / 3600.0;
        let id = self.report.pointer("/report/id").and_then(Value::as_u64).unwrap_or(0) + 1;
        set(&mut self.report, "/report/id", json!(id));
        let jitter = self.rng.random_range(-0.02..0.02);
        set(&mut self.report, "/report/interval", number(round(self.interval.as_secs_f64() + jitter, 3)));
        let ap = "/report/instantaneous_power/active";
        let (mut total_in, mut total_out) = (0.0, 0.0);
        for ph in 0..3 {
            let l = format!("l{}", ph + 1);
            if !self.live_phase(ph) {
                continue;
            }
            // A household load: mean-reverting walk, now and then below zero (solar export).
            let target = if self.meter == SimMeter::Kmp { 0.25 } else { 0.6 };
            let step = self.rng.random_range(-0.15..0.15) + (target - self.net[ph]) * 0.1;
            self.net[ph] = (self.net[ph] + step).clamp(-1.5, 3.5);
            let (imp, exp) = (self.net[ph].max(0.0), (-self.net[ph]).max(0.0));
            total_in += imp;
            total_out += exp;
            set(&mut self.report, &format!("{ap}/positive/{l}"), number(round(imp, 3)));
            set(&mut self.report, &format!("{ap}/negative/{l}"), number(round(exp, 3)));
            let volts = 230.0 + self.rng.random_range(-3.0..6.0);
            let u = if self.meter == SimMeter::P1 { round(volts, 2) } else { volts.round() };
            set(&mut self.report, &format!("/report/voltage/{l}"), number(u));
            set(&mut self.report, &format!("/report/current/{l}"), number(round(self.net[ph].abs() * 1000.0 / u, 2)));
        }
        set(&mut self.report, &format!("{ap}/positive/total"), number(round(total_in, 3)));
        set(&mut self.report, &format!("{ap}/negative/total"), number(round(total_out, 3)));
        let q = round(self.rng.random_range(0.0..0.15), 3);
        let rp = "/report/instantaneous_power/reactive";
        if has(&self.report, &format!("{rp}/positive/total")) {
            set(&mut self.report, &format!("{rp}/positive/total"), number(q));
            set(&mut self.report, &format!("{rp}/negative/total"), number(0.0));
        }
        if has(&self.report, "/report/power_factor") {
            set(&mut self.report, "/report/power_factor", number(round(self.rng.random_range(0.82..0.99), 2)));
        }
        self.e_in += total_in * dt_h;
        self.e_out += total_out * dt_h;
        self.eq_in += q * dt_h;
        let tariff = self.report.pointer("/report/tariff").and_then(Value::as_u64).unwrap_or(1).clamp(1, 2) as usize;
        self.e_in_t[tariff - 1] += total_in * dt_h;
        self.e_out_t[tariff - 1] += total_out * dt_h;
        let e = "/report/energy";
        for (p, v) in [
            ("active/positive/total", self.e_in),
            ("active/negative/total", self.e_out),
            ("active/positive/t1", self.e_in_t[0]),
            ("active/positive/t2", self.e_in_t[1]),
            ("active/negative/t1", self.e_out_t[0]),
            ("active/negative/t2", self.e_out_t[1]),
            ("reactive/positive/total", self.eq_in),
            ("reactive/negative/total", self.eq_out),
        ] {
            set(&mut self.report, &format!("{e}/{p}"), number(round(v, 3)));
        }
        let local = now.to_offset(self.offset);
        // The meter's clock, formatted like the firmware: `date_time` is local with a wrong `Z`.
        set(&mut self.report, "/report/date_time", json!(fmt_local(local, true)));
        set(&mut self.report, "/report/date_time_local", json!(fmt_local(local, false)));
        set(&mut self.report, "/report/date_time_utc", json!(fmt_local(now.to_offset(UtcOffset::UTC), true)));
        self.touch_system(now);
    }

    fn touch_system(&mut self, now: OffsetDateTime) {
        let up = self.booted.elapsed().as_secs();
        let local = now.to_offset(self.offset);
        set(&mut self.report, "/system/date_time", json!(fmt_local(local, true)));
        set(&mut self.report, "/system/date_time_local", json!(fmt_local(local, false)));
        set(&mut self.report, "/system/date_time_utc", json!(fmt_local(now.to_offset(UtcOffset::UTC), true)));
        set(&mut self.report, "/system/time_since_boot", json!(up));
        set(&mut self.system, "/device/time_since_boot", json!(up));
        let date = format!("{:04}-{:02}-{:02}", local.year(), u8::from(local.month()), local.day());
        let time = format!("{:02}:{:02}:{:02}", local.hour(), local.minute(), local.second());
        set(&mut self.system, "/device/date", json!(date));
        set(&mut self.system, "/device/time", json!(time));
    }

    /// `GET /api/v1/report` with `status` as the meter status.
    pub(crate) fn report(&self, status: &str) -> Value {
        let mut r = self.report.clone();
        set(&mut r, "/meter/status", json!(status));
        r
    }

    /// `GET /api/v1/system`.
    pub(crate) fn system(&self, status: &str, mqtt: Option<bool>) -> Value {
        let mut s = self.system.clone();
        set(&mut s, "/meter/status", json!(status));
        if let Some(connected) = mqtt {
            set(&mut s, "/clouds/mqtc/enabled", json!(true));
            set(&mut s, "/clouds/mqtc/connected", json!(connected));
        }
        s
    }

    /// One SSE `live` event, framed: only the keys the meter provides (docs §4).
    pub(crate) fn live_event(&self) -> String {
        let mut data = serde_json::Map::new();
        for (path, key, _) in FIELDS {
            if !key.is_empty()
                && let Some(v) = self.report.pointer(path)
            {
                data.insert((*key).to_owned(), v.clone());
            }
        }
        if let Some(t) = self.report.pointer("/report/tariff").filter(|t| t.as_u64().is_some_and(|t| t > 0)) {
            data.insert("T".into(), t.clone());
        }
        if let Some(Value::Array(vol)) = self.report.pointer("/report/volume") {
            let items: Vec<Value> = vol
                .iter()
                .map(|e| {
                    let mut o = serde_json::Map::new();
                    for (from, to) in [("bus", "Bus"), ("meter_id", "M_ID"), ("date_time", "DT"), ("cumulative", "Cum")]
                    {
                        if let Some(v) = e.get(from) {
                            o.insert(to.into(), v.clone());
                        }
                    }
                    Value::Object(o)
                })
                .collect();
            data.insert("Vol".into(), Value::Array(items));
        }
        let dt = self.report.pointer("/report/date_time").and_then(Value::as_str).unwrap_or("");
        if let Some((d, t)) = dt.trim_end_matches('Z').split_once('T') {
            data.insert("Date".into(), json!(d));
            data.insert("Time".into(), json!(t));
        }
        let hours = round(self.booted.elapsed().as_secs_f64() / 3600.0, 2);
        data.insert("Uptime".into(), number(hours));
        format!("event: live\ndata: {}\n\n", Value::Object(data))
    }
}

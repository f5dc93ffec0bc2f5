//! whatwatt Go simulator: a stand-in gateway that speaks the local REST API, the single-consumer
//! SSE stream and (optionally) the templated MQTT client exactly as
//! `shared/protocols/whatwatt-go.md` describes, so the adapter can be tested and demonstrated
//! without hardware.
//!
//! Meter profiles start from real reports and keep their exact field sets: `mbus` is the
//! Landis+Gyr over M-Bus of the vendor docs (single phase, reactive phases without total, ~6.7 s),
//! `p1` the Ensor DSMR meter of the docs (~1 s, phantom L2/L3 voltages, a sub-meter without reading),
//! `kmp` the Kamstrup OMNIPOWER field capture of fw 2.8.2 (three phases, T1/T2, power factor,
//! ~4.2 s). The values then move: a random walk of the load per live phase, registers integrate.
//!
//! Behaviour reproduced on purpose: `date_time` is local time with a wrong `Z` (quirk 1); kW/kWh
//! units; the report's `id` counts per meter report; on a FREE licence `/report` and `/variables`
//! answer `404 License required` while `/live` and `/system` work; a new `/live` client ends the
//! previous stream; no heartbeats; auth none, Basic (`firmware` 1.2.15) or Digest MD5-sess with
//! `qop=auth`, nonce expiry answered with `stale=true`, `nc` replay refused; a meter status other
//! than `OK` stops reports, events and MQTT. [`SimControl`] lets tests inject faults (silence,
//! kicks, HTML error pages, broken JSON, raw stream bytes, nonce expiry) and read counters.
//!
//! The SSE body is written as raw bytes rather than with `axum::response::sse`, so the framing is
//! byte-for-byte the documented `event: live` / `data: {...}` / blank line, and faults can put
//! arbitrary bytes on the wire.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::{OffsetDateTime, UtcOffset};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapters::whatwatt::digest;
use crate::config::{Config, Dur, Secret};
use crate::mqtt::{MqttHandle, MqttSettings, QoS};

const REPORT_MBUS: &str = include_str!("../../adapters/whatwatt/fixtures/docs_report_landisgyr_mbus_dlms.json");
const REPORT_P1: &str = include_str!("../../adapters/whatwatt/fixtures/docs_report_ensor_p1_dsmr.json");
const REPORT_KMP: &str = include_str!("../../adapters/whatwatt/fixtures/gl_report_kamstrup_kmp_fw2.8.2.json");
const SYSTEM: &str = include_str!("../../adapters/whatwatt/fixtures/docs_system_get_fw1.10.0.json");
const TEMPLATE_DOCS: &str = include_str!("../../adapters/whatwatt/fixtures/docs_mqtt_template_example.tmpl");
const TEMPLATE_HA: &str = include_str!("../../adapters/whatwatt/fixtures/ha_integration_readme_template.tmpl");
const TEMPLATE_BRIDGE: &str = include_str!("../../adapters/whatwatt/bridge-template.tmpl");

/// Report path ↔ SSE key ↔ template variable, the simulator's own copy of notes §6 (kept apart from
/// the adapter's tables so that a mistake there is not mirrored here).
const FIELDS: &[(&str, &str, &str)] = &[
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

/// Numeric template variables every gateway knows even when the meter lacks them (rendered `null`).
const NULL_VARIABLES: &[&str] = &[
    "1_8_1", "1_8_2", "2_8_1", "2_8_2", "3_8_1", "3_8_2", "4_8_1", "4_8_2", "13_7_0", "9_7_0", "3_7_0", "4_7_0",
    "21_7_0", "41_7_0", "61_7_0", "22_7_0", "42_7_0", "62_7_0", "31_7_0", "51_7_0", "71_7_0", "32_7_0", "52_7_0",
    "72_7_0",
];

/// HTTP protection of the simulated Web UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimAuth {
    /// Protection off (the factory default).
    #[default]
    None,
    /// Firmware < 1.10: HTTP Basic.
    Basic,
    /// Firmware ≥ 1.10: HTTP Digest, MD5-sess, qop=auth.
    Digest,
}

/// Licence tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimLicence {
    /// Report, variables and the MQTT client are off (404 License required).
    Free,
    /// Everything on.
    #[default]
    Plus,
}

/// Meter profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimMeter {
    /// Ensor DSMR 5 over P1 (~1 s).
    P1,
    /// Landis+Gyr over M-Bus, DLMS (~6.7 s).
    Mbus,
    /// Kamstrup OMNIPOWER over TTL, KMP (~4.2 s).
    #[default]
    Kmp,
}

impl SimMeter {
    fn base_report(self) -> &'static str {
        match self {
            SimMeter::P1 => REPORT_P1,
            SimMeter::Mbus => REPORT_MBUS,
            SimMeter::Kmp => REPORT_KMP,
        }
    }
}

/// `mqtt:` of a simulator entry: publish like the gateway's MQTT client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimMqttConfig {
    /// The gateway's publish topic.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// `bridge` (notes §10.3), `docs` (the vendor example), `ha` (the Home Assistant template), or a
    /// template text with `${variables}`.
    #[serde(default = "default_template")]
    pub template: String,
    /// `services.report_interval` (gateway default 30s).
    #[serde(default = "default_mqtt_interval")]
    pub interval: Dur,
    /// Broker URL; the bridge's own broker when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
}

fn default_topic() -> String {
    "energy/whatwatt/go".into()
}
fn default_template() -> String {
    "bridge".into()
}
fn default_mqtt_interval() -> Dur {
    Dur::secs(30)
}
fn default_password() -> Secret {
    Secret::new("whatwatt")
}
fn default_id() -> String {
    "A842E39F8124".into()
}

/// `type: whatwatt` simulator keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatwattSimConfig {
    /// Address of the simulated REST API and SSE stream (the real gateway: port 80).
    pub listen: SocketAddr,
    /// `none`, `basic` or `digest`.
    #[serde(default)]
    pub auth: SimAuth,
    /// The Web UI password when `auth` is not `none`.
    #[serde(default = "default_password")]
    pub password: Secret,
    /// `free` or `plus`.
    #[serde(default)]
    pub licence: SimLicence,
    /// `p1`, `mbus` or `kmp`.
    #[serde(default)]
    pub meter: SimMeter,
    /// Meter report period; the profile's own (1s, 6.7s, 4.2s) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    /// Gateway id (12 upper-case hex digits, the Wi-Fi MAC).
    #[serde(default = "default_id")]
    pub id: String,
    /// Also publish templated MQTT like the gateway's client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mqtt: Option<SimMqttConfig>,
}

/// Command-line arguments of `hlbridge simulate whatwatt`.
#[derive(clap::Args, Debug)]
pub struct CliArgs {
    /// Address for the REST API and SSE stream, e.g. 127.0.0.1:8090.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Web UI protection.
    #[arg(long, value_enum, default_value = "none")]
    pub auth: SimAuth,
    /// Web UI password (user name empty).
    #[arg(long, default_value = "whatwatt")]
    pub password: String,
    /// Licence tier.
    #[arg(long, value_enum, default_value = "plus")]
    pub licence: SimLicence,
    /// Meter profile.
    #[arg(long, value_enum, default_value = "kmp")]
    pub meter: SimMeter,
    /// Meter report period (default: the profile's).
    #[arg(long, value_parser = parse_dur)]
    pub interval: Option<Duration>,
    /// Gateway id.
    #[arg(long, default_value = "A842E39F8124")]
    pub id: String,
    /// Publish templated MQTT to this broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long)]
    pub broker: Option<String>,
    /// MQTT publish topic.
    #[arg(long, default_value = "energy/whatwatt/go")]
    pub topic: String,
    /// MQTT template: bridge, docs, ha, or template text.
    #[arg(long, default_value = "bridge")]
    pub template: String,
    /// MQTT publish period (`services.report_interval`).
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    pub mqtt_interval: Duration,
    /// Announce the gateway over mDNS like a real one (`_http._tcp`, TXT `id`, `type=100`), so
    /// `hlbridge discover` finds it; on the `--listen` address's interface only.
    #[cfg(feature = "mdns")]
    #[arg(long)]
    pub mdns: bool,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::config::types::parse_duration(s)
}

fn template_text(t: &str) -> &str {
    match t {
        "bridge" => TEMPLATE_BRIDGE,
        "docs" => TEMPLATE_DOCS,
        "ha" => TEMPLATE_HA,
        other => other,
    }
}

fn check_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// Checks the simulator's keys.
pub(crate) fn validate(cfg: &WhatwattSimConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if !check_id(&cfg.id) {
        errs.push((format!("{path}.id"), "must be 12 upper-case hex digits, e.g. A842E39F8124".into()));
    }
    if cfg.interval.is_some_and(|i| i.0 < Duration::from_millis(10)) {
        errs.push((format!("{path}.interval"), "must be at least 10ms".into()));
    }
    if cfg.password.expose().len() > 31 {
        errs.push((format!("{path}.password"), "the gateway allows at most 31 characters".into()));
    }
    if let Some(m) = &cfg.mqtt {
        let t = template_text(&m.template);
        if !t.contains("${") {
            errs.push((format!("{path}.mqtt.template"), "bridge, docs, ha, or a template with ${variables}".into()));
        }
        if t.len() > 1023 {
            errs.push((format!("{path}.mqtt.template"), "the gateway allows at most 1023 characters".into()));
        }
        if m.interval.0 < Duration::from_millis(10) {
            errs.push((format!("{path}.mqtt.interval"), "must be at least 10ms".into()));
        }
        if let Some(b) = &m.broker
            && let Err(e) = MqttSettings::from_url(b, "sim")
        {
            errs.push((format!("{path}.mqtt.broker"), e.to_string()));
        }
        if !crate::mqtt::topic::valid_topic(&m.topic) {
            errs.push((format!("{path}.mqtt.topic"), "must be a topic without wildcards".into()));
        }
    }
    errs
}

/// A fault for the next matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503` with an HTML page (a proxy or the ESP web server's error page).
    Html503,
    /// `200` with an HTML page instead of JSON / an event stream.
    Html200,
    /// `200` JSON cut off in the middle.
    TruncatedJson,
}

#[derive(Default)]
struct ControlInner {
    silent: AtomicBool,
    meter_status: Mutex<Option<String>>,
    faults: Mutex<VecDeque<(String, Fault)>>,
    inject: Mutex<Vec<Bytes>>,
    kick: AtomicU64,
    nonce_epoch: AtomicU64,
    live_connections: AtomicU64,
    unauthorized: AtomicU64,
    stale: AtomicU64,
    requests: Mutex<HashMap<String, u64>>,
    last_nc: Mutex<Option<u32>>,
    nudge: tokio::sync::Notify,
}

/// A handle tests keep to steer a running simulator and read its counters.
#[derive(Clone, Default)]
pub struct SimControl(Arc<ControlInner>);

impl SimControl {
    /// Stops meter reports (the stream goes silent, the report id stands still).
    pub fn set_silent(&self, silent: bool) {
        self.0.silent.store(silent, Ordering::SeqCst);
    }

    /// Sets `meter.status` (e.g. `NO DATA`); `OK` or `None` restores it.
    pub fn set_meter_status(&self, status: Option<&str>) {
        *self.0.meter_status.lock().unwrap_or_else(|e| e.into_inner()) = status.map(str::to_owned);
    }

    /// The next request to `path` gets `fault` (queued in order).
    pub fn fault(&self, path: &str, fault: Fault) {
        self.0.faults.lock().unwrap_or_else(|e| e.into_inner()).push_back((path.to_owned(), fault));
    }

    /// Writes raw bytes into the current SSE stream.
    pub fn inject_sse(&self, bytes: impl Into<Bytes>) {
        self.0.inject.lock().unwrap_or_else(|e| e.into_inner()).push(bytes.into());
        self.0.nudge.notify_waiters();
    }

    /// Expires every Digest nonce issued so far: their next use gets `401` with `stale=true`.
    pub fn expire_nonces(&self) {
        self.0.nonce_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// `/api/v1/live` streams opened so far.
    pub fn live_connections(&self) -> u64 {
        self.0.live_connections.load(Ordering::SeqCst)
    }

    /// `401` answers so far.
    pub fn unauthorized(&self) -> u64 {
        self.0.unauthorized.load(Ordering::SeqCst)
    }

    /// `401` answers with `stale=true` so far.
    pub fn stale(&self) -> u64 {
        self.0.stale.load(Ordering::SeqCst)
    }

    /// Requests that passed authentication on `path` (licence refusals included).
    pub fn requests(&self, path: &str) -> u64 {
        self.0.requests.lock().unwrap_or_else(|e| e.into_inner()).get(path).copied().unwrap_or(0)
    }

    /// The `nc` of the last accepted Digest request.
    pub fn last_nc(&self) -> Option<u32> {
        *self.0.last_nc.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut q = self.0.faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = q.iter().position(|(p, _)| p == path)?;
        q.remove(i).map(|(_, f)| f)
    }

    fn meter_status(&self) -> String {
        self.0.meter_status.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| "OK".into())
    }
}

/// Everything [`run`] needs.
pub struct WhatwattSimOptions {
    /// Listener for REST and SSE; `None` = MQTT only.
    pub listener: Option<TcpListener>,
    /// Web UI protection.
    pub auth: SimAuth,
    /// Web UI password.
    pub password: String,
    /// Licence tier.
    pub licence: SimLicence,
    /// Meter profile.
    pub meter: SimMeter,
    /// Meter report period; the profile's when `None`.
    pub interval: Option<Duration>,
    /// Gateway id.
    pub id: String,
    /// Broker for the templated MQTT client; `None` = no MQTT.
    pub broker: Option<MqttSettings>,
    /// MQTT topic.
    pub topic: String,
    /// MQTT template text (see [`SimMqttConfig::template`]).
    pub template: String,
    /// MQTT publish period.
    pub mqtt_interval: Duration,
    /// Lifetime of a Digest nonce (the gateway's is undocumented; 5 minutes here).
    pub nonce_ttl: Duration,
    /// The gateway's time zone, for the local `date_time` fields.
    pub utc_offset: UtcOffset,
    /// RNG seed.
    pub seed: u64,
    /// Fault injection and counters.
    pub control: SimControl,
    /// Announce the gateway over mDNS ([`crate::discover::Announcement`]) while it runs; needs
    /// `listener`.
    #[cfg(feature = "mdns")]
    pub mdns: bool,
}

impl Default for WhatwattSimOptions {
    fn default() -> Self {
        WhatwattSimOptions {
            listener: None,
            auth: SimAuth::None,
            password: "whatwatt".into(),
            licence: SimLicence::Plus,
            meter: SimMeter::Kmp,
            interval: None,
            id: default_id(),
            broker: None,
            topic: default_topic(),
            template: "bridge".into(),
            mqtt_interval: Duration::from_secs(30),
            nonce_ttl: Duration::from_secs(300),
            utc_offset: UtcOffset::from_hms(2, 0, 0).unwrap_or(UtcOffset::UTC),
            seed: 1,
            control: SimControl::default(),
            #[cfg(feature = "mdns")]
            mdns: false,
        }
    }
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// A JSON number printed like the firmware: `234`, not `234.0`.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn set(v: &mut Value, pointer: &str, x: Value) {
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
    report: Value,
    system: Value,
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

    /// Every template variable with its value as text; numerics without a value are `None`.
    pub(crate) fn variables(&self, status: &str) -> Vec<(&'static str, Option<String>, bool)> {
        let num = |v: Option<&Value>| v.and_then(Value::as_f64).map(fmt_number);
        let text = |p: &str| self.report.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
        let mut out: Vec<(&'static str, Option<String>, bool)> = Vec::new();
        out.push(("sys.name", Some(String::new()), false));
        out.push(("sys.id", Some(text("/system/id")), false));
        let fw = self.system.pointer("/device/firmware").and_then(Value::as_str).unwrap_or("").to_owned();
        out.push(("sys.firmware", Some(fw), false));
        out.push(("sys.date_time", Some(text("/system/date_time")), false));
        for (path, _, var) in FIELDS {
            out.push((var, num(self.report.pointer(path)), true));
        }
        for var in NULL_VARIABLES {
            if !out.iter().any(|(v, _, _)| v == var) {
                out.push((var, None, true));
            }
        }
        let alias = |out: &mut Vec<(&'static str, Option<String>, bool)>, alias: &'static str, of: &str| {
            let v = out.iter().find(|(n, _, _)| *n == of).and_then(|(_, v, _)| v.clone());
            out.push((alias, v, true));
        };
        alias(&mut out, "power.in", "1_7_0");
        alias(&mut out, "power.out", "2_7_0");
        alias(&mut out, "energy.in", "1_8_0");
        alias(&mut out, "energy.out", "2_8_0");
        out.push(("tariff", num(self.report.pointer("/report/tariff")), true));
        let ts = self
            .report
            .pointer("/report/date_time_utc")
            .and_then(Value::as_str)
            .and_then(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
            .map(|t| t.unix_timestamp().to_string());
        out.push(("timestamp", ts, true));
        out.push(("meter.date_time", Some(text("/report/date_time")), false));
        out.push(("meter.date_time_local", Some(text("/report/date_time_local")), false));
        out.push(("meter.date_time_utc", Some(text("/report/date_time_utc")), false));
        for (var, p) in [
            ("meter.id", "/meter/id"),
            ("meter.type", "/meter/logical_name"),
            ("meter.vendor", "/meter/vendor"),
            ("meter.model", "/meter/model"),
            ("meter.interface", "/meter/interface"),
            ("meter.protocol", "/meter/protocol"),
            ("meter.protocol_ver", "/meter/protocol_version"),
        ] {
            out.push((var, Some(text(p)), false));
        }
        out.push(("meter.status", Some(status.to_owned()), false));
        if let Some(Value::Array(vol)) = self.report.pointer("/report/volume") {
            for (i, e) in vol.iter().enumerate().take(4) {
                let name: &'static str =
                    ["vol[0].cumulative", "vol[1].cumulative", "vol[2].cumulative", "vol[3].cumulative"][i];
                out.push((name, num(e.get("cumulative")), true));
            }
        }
        out
    }

    /// Renders a template like the firmware: numerics plain or `null`, texts as is (empty when
    /// missing), unknown names left verbatim.
    pub(crate) fn render(&self, template: &str, status: &str) -> String {
        let vars = self.variables(status);
        let mut out = String::with_capacity(template.len() + 128);
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &after[..end];
            match vars.iter().find(|(n, _, _)| *n == name) {
                Some((_, Some(v), _)) => out.push_str(v),
                Some((_, None, true)) => out.push_str("null"),
                Some((_, None, false)) => {}
                None => out.push_str(&rest[start..start + 3 + end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// A number as the gateway prints it in templates and variables (`0.006`, `233`).
fn fmt_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 9.0e15 { format!("{}", x as i64) } else { format!("{x}") }
}

/// The Digest verifier's nonces.
struct Nonces {
    /// nonce → (epoch issued in, issued at, highest nc seen).
    issued: HashMap<String, (u64, Instant, u32)>,
    opaque: String,
}

/// Shared by the HTTP handlers and the tick loop.
#[derive(Clone)]
struct Shared {
    gateway: Arc<Mutex<Gateway>>,
    control: SimControl,
    auth: SimAuth,
    password: Arc<str>,
    licence: SimLicence,
    realm: Arc<str>,
    nonces: Arc<Mutex<Nonces>>,
    nonce_ttl: Duration,
    /// Framed SSE events to the current stream.
    events: broadcast::Sender<Bytes>,
    /// Bumped by each new `/live` client: older streams end.
    generation: watch::Sender<u64>,
    /// The MQTT client's state for `/system` (None: no MQTT configured).
    mqtt_connected: Arc<Mutex<Option<bool>>>,
    cancel: CancellationToken,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Gateway> {
        self.gateway.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn challenge(&self, stale: bool) -> Response {
        self.control.0.unauthorized.fetch_add(1, Ordering::SeqCst);
        let value = match self.auth {
            SimAuth::Basic => format!("Basic realm=\"{}\"", self.realm),
            _ => {
                if stale {
                    self.control.0.stale.fetch_add(1, Ordering::SeqCst);
                }
                let nonce = format!("{:032x}", rand::random::<u128>());
                let epoch = self.control.0.nonce_epoch.load(Ordering::SeqCst);
                let mut n = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
                if n.issued.len() > 1000 {
                    n.issued.clear();
                }
                n.issued.insert(nonce.clone(), (epoch, Instant::now(), 0));
                // The order and unquoted tokens of the fw 2.8.2 capture.
                format!(
                    "Digest realm=\"{}\", algorithm=MD5-sess, qop=auth, nonce=\"{nonce}\", opaque=\"{}\"{}",
                    self.realm,
                    n.opaque,
                    if stale { ", stale=true" } else { "" }
                )
            }
        };
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, value)], "401 Unauthorized").into_response()
    }

    /// `None` when the request may proceed, else the `401` to answer.
    fn refuse(&self, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
        self.check_auth(headers, uri).err().map(|b| *b)
    }

    fn check_auth(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Box<Response>> {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match self.auth {
            SimAuth::None => Ok(()),
            SimAuth::Basic => match given {
                Some(g) if g == digest::basic_authorization("", &self.password) => Ok(()),
                _ => Err(Box::new(self.challenge(false))),
            },
            SimAuth::Digest => {
                let Some(g) = given else { return Err(Box::new(self.challenge(false))) };
                // The crate's parser slices by character index as if it were a byte index
                // (see `digest.rs`): only ASCII headers reach it, anything else is refused.
                if !g.is_ascii() {
                    return Err(Box::new(self.challenge(false)));
                }
                let Ok(sent) = digest_auth::AuthorizationHeader::parse(g) else {
                    return Err(Box::new(self.challenge(false)));
                };
                let path_q = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
                let md5_sess = digest::Algorithm::new(digest_auth::AlgorithmType::MD5, true);
                if !g.trim_start().get(..6).is_some_and(|s| s.eq_ignore_ascii_case("digest"))
                    || !sent.username.is_empty()
                    || sent.realm != *self.realm
                    || sent.uri != path_q
                    || sent.algorithm != md5_sess
                    || sent.qop.is_none()
                    || !g.contains("nc=")
                {
                    return Err(Box::new(self.challenge(false)));
                }
                if sent.opaque.as_deref() != Some(self.nonces.lock().unwrap_or_else(|e| e.into_inner()).opaque.as_str())
                {
                    return Err(Box::new(self.challenge(false)));
                }
                // Replicate the hash server-side (the crate's documented use) and compare.
                let mut expected = sent.clone();
                let context = digest_auth::AuthContext::new_with_method(
                    "",
                    &*self.password,
                    path_q,
                    Some(&[][..]),
                    digest_auth::HttpMethod::GET,
                );
                expected.digest(&context);
                if expected.response != sent.response {
                    return Err(Box::new(self.challenge(false)));
                }
                let (nonce, nc) = (sent.nonce.as_str(), sent.nc);
                let epoch = self.control.0.nonce_epoch.load(Ordering::SeqCst);
                let mut n = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
                let Some(entry) = n.issued.get_mut(nonce) else {
                    drop(n);
                    // Right password, unknown nonce (e.g. issued before a reboot): stale.
                    return Err(Box::new(self.challenge(true)));
                };
                if entry.0 != epoch || entry.1.elapsed() > self.nonce_ttl {
                    drop(n);
                    return Err(Box::new(self.challenge(true)));
                }
                if nc <= entry.2 {
                    drop(n);
                    // A replayed counter.
                    return Err(Box::new(self.challenge(false)));
                }
                entry.2 = nc;
                drop(n);
                *self.control.0.last_nc.lock().unwrap_or_else(|e| e.into_inner()) = Some(nc);
                Ok(())
            }
        }
    }

    fn served(&self, path: &str) {
        *self.control.0.requests.lock().unwrap_or_else(|e| e.into_inner()).entry(path.to_owned()).or_default() += 1;
    }

    fn fault_response(fault: Fault) -> Response {
        let html = "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>\n<body><h1>Service Unavailable</h1></body></html>\n";
        match fault {
            Fault::Html503 => {
                (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/html")], html).into_response()
            }
            Fault::Html200 => (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], html).into_response(),
            Fault::TruncatedJson => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                "{\"report\":{\"id\":12,\"instantaneous_power\":{\"act",
            )
                .into_response(),
        }
    }
}

fn json_response(v: &Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

fn licence_required() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "License required").into_response()
}

async fn h_system(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = s.refuse(&headers, &uri) {
        return r;
    }
    s.served("/api/v1/system");
    if let Some(f) = s.control.take_fault("/api/v1/system") {
        return Shared::fault_response(f);
    }
    let mqtt = *s.mqtt_connected.lock().unwrap_or_else(|e| e.into_inner());
    let body = s.lock().system(&s.control.meter_status(), mqtt);
    json_response(&body)
}

async fn h_report(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = s.refuse(&headers, &uri) {
        return r;
    }
    s.served("/api/v1/report");
    if s.licence == SimLicence::Free {
        return licence_required();
    }
    if let Some(f) = s.control.take_fault("/api/v1/report") {
        return Shared::fault_response(f);
    }
    let body = s.lock().report(&s.control.meter_status());
    json_response(&body)
}

async fn h_variables(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = s.refuse(&headers, &uri) {
        return r;
    }
    s.served("/api/v1/variables");
    if s.licence == SimLicence::Free {
        return licence_required();
    }
    let list: Vec<Value> = s
        .lock()
        .variables(&s.control.meter_status())
        .into_iter()
        .map(|(k, v, _)| json!({ k: v.unwrap_or_else(|| "null".into()) }))
        .collect();
    json_response(&Value::Array(list))
}

async fn h_live(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = s.refuse(&headers, &uri) {
        return r;
    }
    s.served("/api/v1/live");
    if let Some(f) = s.control.take_fault("/api/v1/live") {
        return Shared::fault_response(f);
    }
    s.control.0.live_connections.fetch_add(1, Ordering::SeqCst);
    // Single consumer: this client's generation ends every older stream.
    let mut mine = 0;
    s.generation.send_modify(|g| {
        *g += 1;
        mine = *g;
    });
    let state = LiveStream {
        events: s.events.subscribe(),
        generation: s.generation.subscribe(),
        mine,
        kicks: s.control.0.kick.load(Ordering::SeqCst),
        control: s.control.clone(),
        cancel: s.cancel.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let next = st.next().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(next), st))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One open `/api/v1/live` response.
struct LiveStream {
    events: broadcast::Receiver<Bytes>,
    generation: watch::Receiver<u64>,
    mine: u64,
    kicks: u64,
    control: SimControl,
    cancel: CancellationToken,
}

impl LiveStream {
    /// The next bytes for this client, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if *self.generation.borrow() != self.mine || self.control.0.kick.load(Ordering::SeqCst) != self.kicks {
                return None;
            }
            let injected: Vec<Bytes> =
                std::mem::take(&mut *self.control.0.inject.lock().unwrap_or_else(|e| e.into_inner()));
            if !injected.is_empty() {
                let mut all = Vec::new();
                for b in injected {
                    all.extend_from_slice(&b);
                }
                return Some(Bytes::from(all));
            }
            let nudge = self.control.0.nudge.notified();
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = self.generation.changed() => {}
                _ = nudge => {}
                e = self.events.recv() => match e {
                    Ok(b) => return Some(b),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// Runs the simulated gateway until `cancel` fires.
pub async fn run(opts: WhatwattSimOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut gateway = Gateway::new(&opts);
    // The first report exists before anyone asks: nothing is served with the capture's old clock.
    gateway.tick(OffsetDateTime::now_utc());
    let interval = gateway.interval();
    let id = opts.id.clone();
    let (events, _) = broadcast::channel(64);
    let (generation, _) = watch::channel(0u64);
    let shared = Shared {
        gateway: Arc::new(Mutex::new(gateway)),
        control: opts.control.clone(),
        auth: opts.auth,
        password: opts.password.clone().into(),
        licence: opts.licence,
        realm: format!("whatwatt-{id}").into(),
        nonces: Arc::new(Mutex::new(Nonces {
            issued: HashMap::new(),
            opaque: format!("{:016x}", rand::random::<u64>()),
        })),
        nonce_ttl: opts.nonce_ttl,
        events,
        generation,
        mqtt_connected: Arc::new(Mutex::new(opts.broker.as_ref().map(|_| false))),
        cancel: cancel.clone(),
    };
    #[cfg(feature = "mdns")]
    let announcement = match (opts.mdns, opts.listener.as_ref().and_then(|l| l.local_addr().ok())) {
        (true, Some(addr)) => Some(
            crate::discover::Announcement::whatwatt_go(&id, addr)
                .map_err(|e| e.context("cannot announce over mDNS"))?,
        ),
        (true, None) => {
            tracing::warn!("simulated whatwatt: no HTTP listener, nothing to announce over mDNS");
            None
        }
        (false, _) => None,
    };
    let tracker = TaskTracker::new();
    let mqtt_cancel = CancellationToken::new();
    let mqtt = match (&opts.broker, opts.licence) {
        (Some(b), SimLicence::Plus) => {
            Some(crate::mqtt::spawn(b, crate::metrics::Metrics::detached(), &tracker, mqtt_cancel.clone())?)
        }
        (Some(_), SimLicence::Free) => {
            tracing::warn!("simulated whatwatt: FREE licence, the MQTT client does not publish");
            None
        }
        (None, _) => None,
    };
    if let Some(listener) = opts.listener {
        let addr = listener.local_addr().ok();
        let app = axum::Router::new()
            .route("/api/v1/system", get(h_system))
            .route("/api/v1/report", get(h_report))
            .route("/api/v1/variables", get(h_variables))
            .route("/api/v1/live", get(h_live))
            .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found") })
            .with_state(shared.clone());
        let shutdown = cancel.clone().cancelled_owned();
        tracing::info!(addr = %addr.map(|a| a.to_string()).unwrap_or_default(), id = %id, auth = ?opts.auth, licence = ?opts.licence, meter = ?opts.meter,
            "simulated whatwatt Go listening (REST /api/v1/{{system,report,variables}}, SSE /api/v1/live)");
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "simulated whatwatt HTTP server failed");
            }
        });
    }
    let template = template_text(&opts.template).to_owned();
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish = tokio::time::interval(opts.mqtt_interval.max(Duration::from_millis(10)));
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch_conn = mqtt.as_ref().map(MqttHandle::watch);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {
                let status = shared.control.meter_status();
                if shared.control.0.silent.load(Ordering::SeqCst) || status != "OK" {
                    continue;
                }
                let event = {
                    let mut g = shared.lock();
                    g.tick(OffsetDateTime::now_utc());
                    g.live_event()
                };
                let _ = shared.events.send(Bytes::from(event));
            }
            _ = publish.tick(), if mqtt.is_some() => {
                let status = shared.control.meter_status();
                // The gateway publishes only while a meter is connected.
                if status != "OK" || shared.control.0.silent.load(Ordering::SeqCst) {
                    continue;
                }
                if let Some(m) = &mqtt {
                    let payload = shared.lock().render(&template, &status);
                    m.publish(opts.topic.clone(), payload, QoS::AtMostOnce, false);
                }
            }
            changed = async { match &mut watch_conn { Some(w) => w.changed().await.is_ok(), None => std::future::pending().await } } => {
                match (&mut watch_conn, changed) {
                    (Some(w), true) => {
                        let c = w.borrow_and_update().connected;
                        *shared.mqtt_connected.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
                    }
                    _ => watch_conn = None,
                }
            }
        }
    }
    // Like a gateway going away: the goodbye first, then the HTTP server.
    #[cfg(feature = "mdns")]
    if let Some(a) = announcement {
        a.stop().await;
    }
    if let Some(m) = &mqtt {
        m.flush_and_disconnect(Duration::from_secs(1)).await;
    }
    mqtt_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("simulated whatwatt tasks did not stop within 5 s");
    }
    tracing::info!(id = %id, "simulated whatwatt Go stopped");
    Ok(())
}

/// Starts the simulator inside the bridge process.
pub(crate) async fn start(
    name: &str,
    cfg: &WhatwattSimConfig,
    config: &Config,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let listener = super::bind(cfg.listen, &format!("simulators.{name}.listen")).await?;
    let mut opts = WhatwattSimOptions {
        listener: Some(listener),
        auth: cfg.auth,
        password: cfg.password.expose().to_owned(),
        licence: cfg.licence,
        meter: cfg.meter,
        interval: cfg.interval.map(|d| d.0),
        id: cfg.id.clone(),
        ..Default::default()
    };
    if let Some(m) = &cfg.mqtt {
        opts.broker = Some(super::broker_settings(m.broker.as_deref(), config, &format!("whatwatt-{}", cfg.id))?);
        opts.topic = m.topic.clone();
        opts.template = m.template.clone();
        opts.mqtt_interval = m.interval.0;
    }
    super::spawn_named(tracker, name, run(opts, cancel));
    Ok(())
}

/// Runs the simulator from the command line until Ctrl-C.
pub async fn run_cli(args: CliArgs) -> ExitCode {
    if !check_id(&args.id) {
        eprintln!("--id: must be 12 upper-case hex digits");
        return ExitCode::from(2);
    }
    let broker = match &args.broker {
        Some(url) => match MqttSettings::from_url(url, &format!("whatwatt-{}", args.id)) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("--broker: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("--listen {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let opts = WhatwattSimOptions {
        listener: Some(listener),
        auth: args.auth,
        password: args.password,
        licence: args.licence,
        meter: args.meter,
        interval: args.interval,
        id: args.id,
        broker,
        topic: args.topic,
        template: args.template,
        mqtt_interval: args.mqtt_interval,
        #[cfg(feature = "mdns")]
        mdns: args.mdns,
        ..Default::default()
    };
    super::run_until_signal(|cancel| run(opts, cancel)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::whatwatt::mapping;

    fn gateway(meter: SimMeter) -> Gateway {
        Gateway::new(&WhatwattSimOptions { meter, ..Default::default() })
    }

    const T0: OffsetDateTime = time::macros::datetime!(2026-06-01 10:00:00 UTC);

    #[test]
    fn every_profile_keeps_its_capture_field_set_and_counts_reports() {
        for meter in [SimMeter::P1, SimMeter::Mbus, SimMeter::Kmp] {
            let mut g = gateway(meter);
            let base: Value = serde_json::from_str(meter.base_report()).unwrap();
            g.tick(T0);
            g.tick(T0 + time::Duration::seconds(5));
            let r = g.report("OK");
            assert_eq!(r.pointer("/report/id"), Some(&json!(2)));
            let keys = |v: &Value| {
                let mut out = Vec::new();
                let mut stack = vec![(String::new(), v.clone())];
                while let Some((p, v)) = stack.pop() {
                    match v {
                        Value::Object(m) => stack.extend(m.into_iter().map(|(k, c)| (format!("{p}/{k}"), c))),
                        _ => out.push(p),
                    }
                }
                out.sort();
                out
            };
            assert_eq!(keys(&r), keys(&base), "{meter:?} keeps the capture's fields");
        }
    }

    #[test]
    fn the_report_reproduces_the_local_time_z_quirk() {
        let mut g = gateway(SimMeter::Kmp);
        g.tick(T0);
        let r = g.report("OK");
        assert_eq!(r.pointer("/report/date_time_utc"), Some(&json!("2026-06-01T10:00:00Z")));
        assert_eq!(r.pointer("/report/date_time"), Some(&json!("2026-06-01T12:00:00Z")), "local time, wrong Z");
        assert_eq!(r.pointer("/report/date_time_local"), Some(&json!("2026-06-01T12:00:00+02:00")));
    }

    #[test]
    fn energy_registers_only_rise() {
        let mut g = gateway(SimMeter::Kmp);
        let mut last = 0.0;
        for i in 0..200 {
            g.tick(T0 + time::Duration::seconds(i));
            let e = g.report("OK").pointer("/report/energy/active/positive/total").and_then(Value::as_f64).unwrap();
            assert!(e >= last);
            last = e;
        }
    }

    #[test]
    fn the_live_event_is_framed_like_the_docs_and_reads_back() {
        let mut g = gateway(SimMeter::P1);
        g.tick(T0);
        let ev = g.live_event();
        assert!(ev.starts_with("event: live\ndata: {") && ev.ends_with("}\n\n"), "{ev}");
        let data = ev.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert!(v.get("P_In").is_some() && v.get("V_P2").is_some() && v.get("Vol").is_some());
        assert!(v.get("PF").is_none(), "the Ensor report has no power factor");
        let mut r = mapping::Reading::default();
        let mut issues = Vec::new();
        mapping::read_sse(v.as_object().unwrap(), &mut r, &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
    }

    #[test]
    fn templates_render_numbers_plain_and_missing_ones_as_null() {
        let mut g = gateway(SimMeter::Mbus);
        g.tick(T0);
        let out = g.render(TEMPLATE_BRIDGE, "OK");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["s"], Value::Null, "no apparent power on this meter");
        assert_eq!(v["e_in_t1"], Value::Null);
        assert_eq!(v["ts"], json!(T0.unix_timestamp()));
        assert_eq!(v["sys"], json!("A842E39F8124"));
        let ha = g.render(TEMPLATE_HA, "OK");
        let v: Value = serde_json::from_str(&ha).unwrap();
        assert_eq!(v["energy_in_t1"], json!("null"), "quoted numerics give \"null\"");
        assert_eq!(g.render("{\"x\":${foo}}", "OK"), "{\"x\":${foo}}", "unknown names stay verbatim");
    }
}

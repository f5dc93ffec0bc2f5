//! whatwatt Go adapter (`adapter: whatwatt`, kind `energy_meter`): a Wi-Fi dongle on the smart
//! meter's customer port, read over its local REST API, its Server-Sent-Events stream, or the MQTT
//! messages its own client publishes from a user template (protocol notes:
//! `shared/protocols/whatwatt-go.md`).
//!
//! Transports (`transport:`):
//! - `sse` (default): `GET /api/v1/live`. Works on every licence. The gateway serves **one stream at
//!   a time**: a second client (another bridge, Homey, the Web UI's live page) closes ours. A stream
//!   the gateway ends is counted (`/readyz` detail `sse_kicked`, `hlbridge_parse_errors_total{reason=
//!   "sse_kicked"}`), logged once, and reopened after a backoff. A silence watchdog (`watchdog`,
//!   60 s) reopens a stream that stopped talking. After `fallback.after` failed streams in a row
//!   the adapter polls the report instead, and tries the stream again after `fallback.retry_sse`.
//! - `poll`: `GET /api/v1/report` every `interval`. The same `(system.boot_id, report.id)` twice is
//!   no new reading and is not republished as fresh. Needs a Plus licence: on FREE the gateway
//!   answers `404 License required`, which is logged once and the adapter uses SSE instead.
//! - `mqtt`: subscribes `topic` and reads the user's template payload; which field holds which
//!   template variable comes from `template:` (the template text itself), `fields:`, or the
//!   built-in presets (the bridge template, the vendor's example, the Home Assistant template).
//!
//! Authentication (none, Basic for firmware < 1.10, Digest MD5-sess for ≥ 1.10) is detected from
//! the gateway's `401` and applied to every request, the stream included ([`digest`], [`client`]).
//! Identity, licence and meter status come from `GET /api/v1/system` (works without a licence);
//! a meter status other than `OK` takes the device offline with the status as the reason.
//!
//! Why the stream is parsed here ([`sse`]) over a `reqwest` body instead of with eventsource-client
//! 0.18 (dropped from the dependencies): its parser has no size bound. A line without a line end
//! grows `incomplete_line` for as long as the gateway keeps sending, and `data:` lines are joined
//! into the event without limit, so one misbehaving gateway could take all of the bridge's memory;
//! our framer stops at [`sse::MAX_LINE`]. Its `HttpTransport` hook (0.18's
//! `ClientBuilder::build_with_transport`) would have allowed a fresh Digest `Authorization` per
//! connection over our `reqwest` client, so auth was not the blocker; the unbounded buffer is, and
//! capping it from outside would mean scanning every body chunk for line and event boundaries in
//! the transport, i.e. a second SSE framer in front of the crate's. So the adapter owns the whole connection loop: the first connection is retried
//! like any other, no proxy is used for the LAN gateway, and backoff, the silence
//! watchdog and the single-consumer detection are explicit. The parser handles chunk splits,
//! CR/LF variants and HTML written into the stream.
//!
//! Nothing the gateway sends can grow memory without bound: REST answers are read through the
//! shared capped reader ([`crate::adapters::http::read_capped`], `body_too_large`), and a stream
//! line or event over [`sse::MAX_LINE`] (`sse_overflow`) drops the connection at once, takes the
//! device offline with that reason and reopens the stream with backoff.
//!
//! Everything per message goes through [`Ingest`], public so that recorded captures replay through
//! exactly the code a live gateway goes through.

pub(crate) mod client;
pub(crate) mod digest;

crate::adapters::adapter!(
    /// The Whatwatt adapter in the registry ([`crate::adapters::Adapter`]).
    Whatwatt,
    config = WhatwattConfig,
    kind = Whatwatt,
    quantities = &[
        "apparent_power",
        "current_l1",
        "current_l2",
        "current_l3",
        "energy_export",
        "energy_export_t*",
        "energy_import",
        "energy_import_t*",
        "power",
        "power_export",
        "power_factor",
        "power_import",
        "power_l1",
        "power_l2",
        "power_l3",
        "reactive_energy_export",
        "reactive_energy_import",
        "reactive_power_export",
        "reactive_power_import",
        "rssi",
        "tariff",
        "uptime",
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "volume",
    ],
    commands = &[],
);

#[cfg(test)]
mod fuzz_tests;
pub(crate) mod mapping;
pub(crate) mod sse;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapters::http::{self, MAX_BODY, REASON_BODY_TOO_LARGE};
use crate::adapters::log_once::LogOnce;
use crate::config::{Dur, Secret};
use crate::model::{Identity, Update};
use crate::mqtt::Message;
use crate::router::{DeviceHandle, Link};
use crate::untrusted::clip;

use client::{Gateway, GatewayError};
use mapping::{FieldMap, Issue, Reading, SystemInfo, Txt, VolumeFrom};
use sse::{SseItem, SseParser};

/// Where the adapter reads the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhatwattTransport {
    /// The `/api/v1/live` SSE stream (any licence; one consumer at a time).
    Sse,
    /// Poll `/api/v1/report` (Plus licence).
    Poll,
    /// The gateway's own MQTT client publishes a templated payload to our broker (Plus licence).
    Mqtt,
}

/// `fallback:` — what `transport: sse` does when the stream keeps failing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatwattFallback {
    /// Poll the report after this many failed streams in a row (a stream that delivered data for at
    /// least `watchdog` resets the count); 0 never falls back.
    #[serde(default = "default_fallback_after")]
    pub after: u32,
    /// While polling as a fallback, try the stream again after this long.
    #[serde(default = "default_retry_sse")]
    pub retry_sse: Dur,
}

impl Default for WhatwattFallback {
    fn default() -> Self {
        WhatwattFallback { after: default_fallback_after(), retry_sse: default_retry_sse() }
    }
}

/// `adapter: whatwatt` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatwattConfig {
    /// The gateway's base URL, e.g. `http://whatwatt-9f8124.local` or `http://192.168.1.40`
    /// (plain HTTP, port 80). Required for `sse` and `poll`; optional for `mqtt`, where it only
    /// serves the identity and licence check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `sse` (default), `poll` or `mqtt`.
    #[serde(default = "default_transport")]
    pub transport: WhatwattTransport,
    /// `poll` (and the SSE fallback): time between report requests, default 10s; keep it at or above
    /// the meter's report interval, meter-powered gateways brown out under fast polling. `mqtt`:
    /// the gateway's `services.report_interval` (default 30s), which sets the freshness window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    /// Per request timeout, and the time the stream's response headers may take.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Reopen the SSE stream after this long without an event (the gateway sends no heartbeats).
    #[serde(default = "default_watchdog")]
    pub watchdog: Dur,
    /// First wait before reopening a failed stream; doubles per failure (with jitter).
    #[serde(default = "default_reconnect_delay")]
    pub reconnect_delay: Dur,
    /// Longest wait between stream attempts.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: Dur,
    /// User name for the gateway's web UI protection; the gateway's is empty.
    #[serde(default)]
    pub username: String,
    /// The gateway's web UI password when protection is on (prefer `password_file`); never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// File holding that password (trailing newline ignored). A relative path is read from the
    /// working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// `mqtt`: the topic configured on the gateway (`publish.topic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// `mqtt`: the template configured on the gateway (`publish.template`), pasted as is; the adapter
    /// reads which field holds which `${variable}` from it. Replaces the built-in presets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `mqtt`: payload field (dots for nesting) → template variable, e.g. `P_In: 1_7_0`,
    /// `Meter.Time: timestamp`, or `-` to ignore a field; added to (and winning over) the template or
    /// the presets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// What `transport: sse` does when the stream keeps failing.
    #[serde(default)]
    pub fallback: WhatwattFallback,
    /// A phase whose voltage is below this many volts is treated as absent (single-phase sites
    /// report 0 V or phantom voltages such as 36 V on L2/L3); 0 turns the check off.
    #[serde(default = "default_phase_min_voltage")]
    pub phase_min_voltage: f64,
    /// Which sub-meter (`volume[]` / `Vol[]`, e.g. an M-Bus gas meter) becomes the `volume`
    /// quantity: `auto` (the only one with a reading), `off`, a bus number, or a meter id.
    #[serde(default = "default_volume_from", deserialize_with = "string_or_number")]
    pub volume_from: String,
}

fn default_transport() -> WhatwattTransport {
    WhatwattTransport::Sse
}
fn default_timeout() -> Dur {
    Dur::secs(3)
}
fn default_watchdog() -> Dur {
    Dur::secs(60)
}
fn default_reconnect_delay() -> Dur {
    Dur::secs(1)
}
fn default_reconnect_max() -> Dur {
    Dur::secs(30)
}
fn default_fallback_after() -> u32 {
    3
}
fn default_retry_sse() -> Dur {
    Dur::secs(300)
}
fn default_phase_min_voltage() -> f64 {
    50.0
}
fn default_volume_from() -> String {
    "auto".into()
}

/// `volume_from: 2` (a bus number) and `volume_from: auto` are both natural to write.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(crate::config::types::string_or_number(d)?.unwrap_or_else(default_volume_from))
}

impl Default for WhatwattConfig {
    fn default() -> Self {
        WhatwattConfig {
            url: None,
            transport: default_transport(),
            interval: None,
            timeout: default_timeout(),
            watchdog: default_watchdog(),
            reconnect_delay: default_reconnect_delay(),
            reconnect_max: default_reconnect_max(),
            username: String::new(),
            password: None,
            password_file: None,
            topic: None,
            template: None,
            fields: BTreeMap::new(),
            fallback: WhatwattFallback::default(),
            phase_min_voltage: default_phase_min_voltage(),
            volume_from: default_volume_from(),
        }
    }
}

impl WhatwattConfig {
    /// Time between report polls (`poll` and the SSE fallback).
    pub(crate) fn poll_interval(&self) -> Duration {
        self.interval.map_or(Duration::from_secs(10), |d| d.0)
    }

    /// The MQTT field map: the template's (or the presets), then `fields`.
    pub(crate) fn field_map(&self) -> Result<FieldMap, String> {
        let mut map = match &self.template {
            Some(t) => {
                let t = mapping::fields_from_template(t)?;
                FieldMap::from_pairs(t.fields.iter().map(|(p, v)| (p.as_str(), v.as_str())))?
            }
            None => FieldMap::presets(),
        };
        map.extend(FieldMap::from_pairs(self.fields.iter().map(|(p, v)| (p.as_str(), v.as_str())))?);
        Ok(map)
    }
}

/// Problems starting the adapter, naming the device and the key.
#[derive(Debug, thiserror::Error)]
pub enum WhatwattError {
    /// The password file cannot be read.
    #[error("devices.{device}.password_file: cannot read {path}: {source}")]
    PasswordFile {
        /// Device id.
        device: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// `template` or `fields` cannot be used.
    #[error("devices.{device}.{key}: {reason}")]
    Fields {
        /// Device id.
        device: String,
        /// `template` or `fields`.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// `url` is missing for an HTTP transport.
    #[error("devices.{device}.url: needed for transport sse and poll")]
    NoUrl {
        /// Device id.
        device: String,
    },
    /// The HTTP client cannot be built.
    #[error("devices.{device}: cannot build the HTTP client: {source}")]
    Client {
        /// Device id.
        device: String,
        /// Why.
        source: reqwest::Error,
    },
}

/// The expected time between readings (freshness defaults to three of them).
pub(crate) fn cadence(cfg: &WhatwattConfig) -> Duration {
    let min = Duration::from_millis(100);
    match cfg.transport {
        // Freshness = the watchdog: offline exactly when the stream would be reopened; at least
        // three polls when the fallback polls.
        WhatwattTransport::Sse => (cfg.watchdog.0 / 3).max(cfg.poll_interval()).max(min),
        WhatwattTransport::Poll => cfg.poll_interval().max(min),
        WhatwattTransport::Mqtt => cfg.interval.map_or(Duration::from_secs(30), |d| d.0).max(min),
    }
}

fn check_url(u: &str) -> Option<String> {
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        return Some(format!("`{u}` must start with http:// (the gateway serves plain HTTP on port 80)"));
    }
    let rest = u.split_once("://").map_or("", |(_, r)| r);
    if rest.split('/').next().unwrap_or("").contains('@') {
        return Some("put the password in `password` / `password_file`, not in the URL".into());
    }
    if rest.trim_matches('/').is_empty() {
        return Some("the host is missing".into());
    }
    if rest.trim_end_matches('/').contains('/') {
        return Some(format!("`{u}` should be the gateway's base URL only (no path such as /api/v1/report)"));
    }
    None
}

/// Checks the whatwatt keys of device `path` (`devices.<id>`); returns (key path, message) pairs.
pub(crate) fn validate(cfg: &WhatwattConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    let mut err = |k: &str, m: String| errs.push((format!("{path}.{k}"), m));
    let http = cfg.transport != WhatwattTransport::Mqtt;
    match &cfg.url {
        Some(u) => {
            if let Some(m) = check_url(u) {
                err("url", m);
            }
        }
        None if http => err("url", "the gateway's address is needed, e.g. http://whatwatt-9f8124.local".into()),
        None => {}
    }
    if cfg.transport == WhatwattTransport::Mqtt {
        match cfg.topic.as_deref() {
            None | Some("") => err(
                "topic",
                "`transport: mqtt` needs the topic configured on the gateway (MQTT settings, publish topic)".into(),
            ),
            Some(t) if !crate::mqtt::topic::valid_filter(t) => err("topic", format!("`{t}` is not a valid MQTT topic")),
            Some(_) => {}
        }
        if let Some(t) = &cfg.template {
            match mapping::fields_from_template(t) {
                Err(m) => err("template", m),
                Ok(t) => {
                    let pairs = t.fields;
                    if pairs.is_empty() {
                        err("template", "no field of the template holds exactly one ${variable}".into());
                    }
                    if let Err(m) = FieldMap::from_pairs(pairs.iter().map(|(p, v)| (p.as_str(), v.as_str()))) {
                        err("template", format!("{m}; the gateway would leave it verbatim and break the JSON"));
                    }
                }
            }
        }
        if let Err(m) = FieldMap::from_pairs(cfg.fields.iter().map(|(p, v)| (p.as_str(), v.as_str()))) {
            err("fields", m);
        }
    } else {
        for (key, set) in
            [("topic", cfg.topic.is_some()), ("template", cfg.template.is_some()), ("fields", !cfg.fields.is_empty())]
        {
            if set {
                err(key, "only used with `transport: mqtt`".into());
            }
        }
    }
    if cfg.password.is_some() && cfg.password_file.is_some() {
        err("password_file", "set either `password` or `password_file`, not both".into());
    }
    if let Some(f) = &cfg.password_file
        && let Err(e) = std::fs::read_to_string(f)
    {
        err("password_file", format!("cannot read {}: {e}", f.display()));
    }
    if let Some(i) = cfg.interval {
        if http && i.0 < Duration::from_millis(500) {
            err(
                "interval",
                "must be at least 500ms (meters report every 1-10s; fast polls brown out the gateway)".into(),
            );
        } else if i.0 < Duration::from_millis(100) {
            err("interval", "must be at least 100ms".into());
        }
    }
    if cfg.timeout.0.is_zero() {
        err("timeout", "must be longer than 0s".into());
    }
    if cfg.watchdog.0 < Duration::from_millis(500) {
        err("watchdog", "must be at least 500ms".into());
    }
    if cfg.reconnect_delay.0.is_zero() {
        err("reconnect_delay", "must be longer than 0s".into());
    }
    if cfg.reconnect_max.0 < cfg.reconnect_delay.0 {
        err("reconnect_max", "must not be shorter than reconnect_delay".into());
    }
    if cfg.fallback.retry_sse.0 < Duration::from_secs(1) {
        err("fallback.retry_sse", "must be at least 1s".into());
    }
    if !(cfg.phase_min_voltage.is_finite() && cfg.phase_min_voltage >= 0.0) {
        err("phase_min_voltage", "must be a voltage of 0 or more".into());
    }
    errs
}

/// The password from `password` or `password_file`.
pub(crate) fn resolve_password(cfg: &WhatwattConfig, device: &str) -> Result<Option<Secret>, WhatwattError> {
    if let Some(f) = &cfg.password_file {
        let text = std::fs::read_to_string(f).map_err(|source| WhatwattError::PasswordFile {
            device: device.to_owned(),
            path: f.display().to_string(),
            source,
        })?;
        return Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))));
    }
    Ok(cfg.password.clone())
}

/// A poll's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// A new reading was published.
    Fresh,
    /// The same `(boot_id, report.id)` as last time: nothing new.
    Unchanged,
    /// The meter status is not `OK`; the device is offline with this reason.
    MeterNotOk(String),
}

/// Why a report answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// `404 License required`: the gateway has a FREE licence.
    #[error("/api/v1/report needs a Plus licence (the gateway answered 404 License required)")]
    LicenceRequired,
    /// Anything else (HTTP status, HTML page, bad JSON), already counted.
    #[error("{0}")]
    Bad(String),
}

/// Per-message handling shared by every transport; public so that recorded captures replay
/// through exactly the code a live gateway goes through (golden tests, benchmark).
pub struct Ingest {
    device: DeviceHandle,
    opts: mapping::Options,
    volume_from: VolumeFrom,
    fields: FieldMap,
    logged: LogOnce,
    /// Reused per message.
    issues: Vec<Issue>,
    parser: SseParser,
    /// `(boot_id, report.id)` of the last report published.
    last_report: Option<(String, u64)>,
    /// Gateway id last put into the identity.
    sys_id: Option<String>,
    /// Meter description last shown in `/readyz`.
    meter: Option<String>,
    /// The not-OK meter status the device is offline for.
    bad_status: Option<String>,
    /// `meter_status: OK` is in `/readyz` already (spares a string per message).
    status_shown: bool,
    /// The stream sent a line or event over the parser's cap since the last look: its framing is
    /// lost, so the connection is dropped and reopened (see [`Ingest::sse_overflowed`]).
    sse_overflowed: bool,
}

fn looks_html(content_type: &str, body: &[u8]) -> bool {
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).map_or(&[][..], |i| &body[i..]);
    content_type.contains("html") || start.starts_with(b"<")
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(80)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Ingest {
    /// A fresh ingest state for `device` with `cfg`'s mapping options.
    pub fn new(device: DeviceHandle, cfg: &WhatwattConfig) -> Result<Ingest, WhatwattError> {
        if let Some(t) = &cfg.template
            && let Ok(t) = mapping::fields_from_template(t)
            && !t.mixed.is_empty()
        {
            tracing::info!(device = %device.id(), fields = %t.mixed.join(", "),
                "template fields mixing text and variables cannot be read back; ignored");
        }
        let fields = if cfg.transport == WhatwattTransport::Mqtt {
            cfg.field_map().map_err(|reason| WhatwattError::Fields {
                device: device.id().to_owned(),
                key: if cfg.template.is_some() { "template" } else { "fields" },
                reason,
            })?
        } else {
            FieldMap::presets()
        };
        Ok(Ingest {
            device,
            opts: mapping::Options { phase_min_voltage: cfg.phase_min_voltage },
            volume_from: VolumeFrom::parse(&cfg.volume_from),
            fields,
            logged: LogOnce::default(),
            issues: Vec::with_capacity(8),
            parser: SseParser::new(),
            last_report: None,
            sys_id: None,
            meter: None,
            bad_status: None,
            status_shown: false,
            sse_overflowed: false,
        })
    }

    /// The device this ingest feeds.
    pub(crate) fn device(&self) -> &DeviceHandle {
        &self.device
    }

    fn report_issues(&mut self, source: &'static str) {
        if self.issues.is_empty() {
            return;
        }
        let device = self.device.clone();
        for issue in self.issues.drain(..) {
            match issue {
                Issue::Unknown(key) => {
                    device.counters().unknown_keys.inc();
                    if self.logged.first_of("unknown", &key) {
                        tracing::info!(device = %device.id(), source, key = %clip(&key),
                            "unknown whatwatt key (newer firmware or an unmapped template field); counted and ignored");
                    }
                }
                Issue::Invalid { key, reason } => {
                    device.counters().parse_error(reason);
                    if self.logged.first_of(reason, &key) {
                        tracing::warn!(device = %device.id(), source, key = %clip(&key), reason,
                            "whatwatt value not understood; skipped");
                    }
                }
            }
        }
    }

    fn parse_error(&mut self, reason: &'static str, what: &str, detail: &str) {
        self.device.counters().parse_error(reason);
        if self.logged.first_of(reason, what) {
            tracing::warn!(device = %self.device.id(), reason, what, detail = %clip(detail), "whatwatt payload skipped (counted)");
        }
    }

    /// Takes the device offline for a meter status other than `OK` (once per status), or back.
    fn meter_status(&mut self, status: Option<&str>) -> Option<String> {
        match status {
            Some(s) if !mapping::status_ok(s) => {
                let reason = format!("meter status {s} (values are only trusted with OK)");
                if self.bad_status.as_deref() != Some(s) {
                    tracing::warn!(device = %self.device.id(), status = %clip(s), "whatwatt meter status is not OK; device offline");
                    self.bad_status = Some(s.to_owned());
                    self.device.set_detail("meter_status", s);
                }
                self.device.set_link(Link::Down(reason.clone()));
                Some(reason)
            }
            Some(s) => {
                if self.bad_status.take().is_some() {
                    tracing::info!(device = %self.device.id(), "whatwatt meter status is OK again");
                    self.status_shown = false;
                }
                if !self.status_shown {
                    self.status_shown = true;
                    self.device.set_detail("meter_status", s);
                }
                None
            }
            None => None,
        }
    }

    fn identity_from(&mut self, r: &Reading<'_>, update: &mut Update) {
        if let Some(id) = r.text(Txt::SysId)
            && self.sys_id.as_deref() != Some(id)
        {
            self.sys_id = Some(id.to_owned());
            update.identity =
                Some(Identity { vendor: Some("whatwatt".into()), serial: Some(id.to_owned()), ..Default::default() });
        }
        let meter = r.text(Txt::MeterId).or(r.text(Txt::MeterType));
        if let Some(m) = meter
            && self.meter.as_deref() != Some(m)
        {
            self.meter = Some(m.to_owned());
            let vendor = r.text(Txt::MeterVendor).map(|v| format!("{v} ")).unwrap_or_default();
            self.device.set_detail("meter", format!("{vendor}{m}"));
        }
    }

    fn publish(&mut self, r: &Reading<'_>, fresh: bool) {
        let mut update = Update { fresh, ..Default::default() };
        update.readings.reserve(24);
        self.identity_from(r, &mut update);
        mapping::to_update(r, &self.opts, &mut update);
        if fresh {
            self.device.set_link(Link::Up);
        }
        self.device.apply(update);
        self.device.flush();
    }

    fn note_volume(&mut self, seen: mapping::VolumeSeen) {
        if seen.with_reading > 1 && self.volume_from == VolumeFrom::Auto && self.logged.first_of("volume", "several") {
            tracing::info!(device = %self.device.id(), sub_meters = seen.with_reading,
                "several sub-meters report a reading; set `volume_from` to a bus number or meter id to publish one as `volume`");
            self.device.set_detail("sub_meters", format!("{} with readings; set volume_from", seen.with_reading));
        }
    }

    /// Handles one `/api/v1/report` answer (HTTP status, content type and body), as a poll would.
    pub fn report_body(&mut self, status: u16, content_type: &str, body: &[u8]) -> Result<ReportOutcome, ReportError> {
        self.device.counters().received.inc();
        if status == 404 && String::from_utf8_lossy(body).to_ascii_lowercase().contains("license required") {
            return Err(ReportError::LicenceRequired);
        }
        if !(200..300).contains(&status) {
            let html = if looks_html(content_type, body) { " (an HTML error page)" } else { "" };
            self.parse_error("http_status", &format!("report {status}"), &excerpt(body));
            return Err(ReportError::Bad(format!("/api/v1/report answered HTTP {status}{html}")));
        }
        if looks_html(content_type, body) {
            self.parse_error("html_page", "report html", &excerpt(body));
            return Err(ReportError::Bad("/api/v1/report answered with an HTML page instead of JSON".into()));
        }
        let root: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                self.parse_error("invalid_json", "report json", &e.to_string());
                return Err(ReportError::Bad(format!("/api/v1/report is not JSON: {e}")));
            }
        };
        if root.get("report").is_none_or(|r| !r.is_object()) {
            self.parse_error("bad_type", "report shape", &excerpt(body));
            return Err(ReportError::Bad("/api/v1/report has no `report` object".into()));
        }
        let mut r = Reading::default();
        let mut issues = std::mem::take(&mut self.issues);
        mapping::read_report(&root, &mut r, &mut issues);
        self.issues = issues;
        self.report_issues("report");
        let seen = mapping::read_volume(root.pointer("/report/volume"), &self.volume_from, &mut r);
        self.note_volume(seen);
        if let Some(reason) = self.meter_status(r.text(Txt::MeterStatus)) {
            return Ok(ReportOutcome::MeterNotOk(reason));
        }
        if let Some(id) = r.num(mapping::Sig::ReportId).filter(|n| *n >= 0.0) {
            let boot = r.text(Txt::BootId).unwrap_or("");
            let key_same = self.last_report.as_ref().is_some_and(|(b, i)| b == boot && *i == id as u64);
            if key_same {
                self.device.set_link(Link::Up);
                return Ok(ReportOutcome::Unchanged);
            }
            self.last_report = Some((boot.to_owned(), id as u64));
        }
        self.publish(&r, true);
        Ok(ReportOutcome::Fresh)
    }

    /// Handles one `/api/v1/system` answer; returns what it says.
    pub fn system_body(&mut self, status: u16, content_type: &str, body: &[u8]) -> Result<SystemInfo, String> {
        if !(200..300).contains(&status) {
            return Err(format!("/api/v1/system answered HTTP {status}"));
        }
        if looks_html(content_type, body) {
            self.parse_error("html_page", "system html", &excerpt(body));
            return Err("/api/v1/system answered with an HTML page (is this a whatwatt Go?)".into());
        }
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            self.parse_error("invalid_json", "system json", &e.to_string());
            format!("/api/v1/system is not JSON: {e}")
        })?;
        let info = mapping::read_system(&v);
        if let Some(l) = &info.licence {
            self.device.set_detail("licence", l.clone());
        }
        if let Some(m) = &info.meter {
            self.device.set_detail("meter", m.clone());
        }
        if let Some((enabled, connected)) = info.mqtt_client {
            self.device.set_detail(
                "gateway_mqtt_client",
                match (enabled, connected) {
                    (false, _) => "disabled",
                    (true, false) => "enabled, not connected",
                    (true, true) => "connected",
                },
            );
        }
        self.sys_id = info.identity.serial.clone();
        let mut update = Update { identity: Some(info.identity.clone()), ..Default::default() };
        if let Some(rssi) = info.rssi {
            update.push(crate::model::Quantity::known("rssi"), crate::model::Value::Number(rssi));
        }
        // Gateway facts, not a meter reading: they do not make the device fresh.
        self.device.apply(update);
        self.meter_status(info.meter_status.as_deref());
        Ok(info)
    }

    /// Starts a new SSE connection (forgets a partial event of the previous one).
    pub(crate) fn sse_reset(&mut self) {
        self.parser.reset();
        self.sse_overflowed = false;
    }

    /// Whether the stream sent a line or event over [`sse::MAX_LINE`] since the last call (already
    /// counted as `sse_overflow`); clears the flag.
    pub(crate) fn sse_overflowed(&mut self) -> bool {
        std::mem::take(&mut self.sse_overflowed)
    }

    /// Counts a gateway answer refused for its size (`body_too_large`); logging is the caller's.
    fn count_transport_error(&self, e: &GatewayError) {
        if e.is_too_large() {
            self.device.counters().parse_error(REASON_BODY_TOO_LARGE);
        }
    }

    /// Feeds raw stream bytes; returns how many `live` events were published.
    pub fn sse_bytes(&mut self, chunk: &[u8]) -> usize {
        let mut parser = std::mem::take(&mut self.parser);
        let mut published = 0;
        parser.feed(chunk, &mut |item| match item {
            SseItem::Event { event, data } => {
                if self.sse_event(event, data) {
                    published += 1;
                }
            }
            SseItem::BadLine(line) => self.parse_error("sse_bad_line", "sse line", line),
            SseItem::Overflow => {
                self.sse_overflowed = true;
                self.parse_error("sse_overflow", "sse overflow", "a line or event longer than 64 KiB")
            }
        });
        self.parser = parser;
        published
    }

    /// The stream ended: a complete event still waiting for its blank line is handed over (captures
    /// and file servers often lack the final one; the gateway itself always sends it). Returns
    /// whether it published a reading.
    pub fn sse_end(&mut self) -> bool {
        let mut parser = std::mem::take(&mut self.parser);
        let mut published = false;
        parser.finish(&mut |item| {
            if let SseItem::Event { event, data } = item {
                published = self.sse_event(event, data);
            }
        });
        self.parser = parser;
        published
    }

    /// Handles one SSE event; returns whether it published a reading.
    pub(crate) fn sse_event(&mut self, event: &str, data: &str) -> bool {
        if event != "live" {
            self.device.counters().unknown_keys.inc();
            if self.logged.first_of("sse event", event) {
                tracing::info!(device = %self.device.id(), event = %clip(event), "unknown whatwatt SSE event type; ignored");
            }
            return false;
        }
        self.device.counters().received.inc();
        let v: serde_json::Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                self.parse_error("invalid_json", "sse json", &format!("{e}: {}", excerpt(data.as_bytes())));
                return false;
            }
        };
        let Some(obj) = v.as_object() else {
            self.parse_error("bad_type", "sse shape", &excerpt(data.as_bytes()));
            return false;
        };
        let mut r = Reading::default();
        let mut issues = std::mem::take(&mut self.issues);
        mapping::read_sse(obj, &mut r, &mut issues);
        self.issues = issues;
        self.report_issues("sse");
        let seen = mapping::read_volume(obj.get("Vol"), &self.volume_from, &mut r);
        self.note_volume(seen);
        if self.bad_status.is_some() {
            // The stream carries no status, but an event means the meter delivers again.
            self.meter_status(Some("OK"));
        }
        self.publish(&r, true);
        true
    }

    /// Handles one MQTT message from the gateway's template.
    pub fn mqtt_message(&mut self, msg: &Message) {
        self.device.counters().received.inc();
        let payload = &msg.payload[..];
        if payload.windows(2).any(|w| w == b"${") {
            // The gateway leaves unknown variables verbatim: a template error the user must fix.
            self.parse_error("template_unresolved", "template", &excerpt(payload));
            return;
        }
        let v: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.parse_error("invalid_json", "mqtt json", &format!("{e}: {}", excerpt(payload)));
                return;
            }
        };
        if !v.is_object() {
            self.parse_error("bad_type", "mqtt shape", &excerpt(payload));
            return;
        }
        let mut r = Reading::default();
        let mut issues = std::mem::take(&mut self.issues);
        mapping::read_payload(&v, &self.fields, &mut r, &mut issues);
        self.issues = issues;
        self.report_issues("mqtt");
        if !r.has_measurements() && self.logged.first_of("no fields", &msg.topic) {
            tracing::warn!(device = %self.device.id(), topic = %clip(&msg.topic),
                "no field of this whatwatt payload is mapped to a measurement; set `template:` (the gateway's template) or `fields:`");
        }
        if self.meter_status(r.text(Txt::MeterStatus)).is_some() {
            return;
        }
        // A retained replay says nothing about now.
        self.publish(&r, !msg.retain);
    }
}

/// Runs the adapter until `cancel`.
pub(crate) async fn run(cfg: WhatwattConfig, device: DeviceHandle, cancel: CancellationToken) {
    let started = async {
        let password = resolve_password(&cfg, device.id())?;
        let ingest = Ingest::new(device.clone(), &cfg)?;
        Ok::<_, WhatwattError>((password, ingest))
    };
    let (password, ingest) = match started.await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(device = %device.id(), error = %e, "whatwatt adapter cannot start");
            device.set_link(Link::Down(e.to_string()));
            cancel.cancelled().await;
            return;
        }
    };
    let gateway = match &cfg.url {
        Some(url) => match Gateway::new(url, &cfg.username, password, cfg.timeout.0) {
            Ok(g) => Some(g),
            Err(source) => {
                let e = WhatwattError::Client { device: device.id().to_owned(), source };
                tracing::error!(device = %device.id(), error = %e, "whatwatt adapter cannot start");
                device.set_link(Link::Down(e.to_string()));
                cancel.cancelled().await;
                return;
            }
        },
        None => None,
    };
    if let Some(g) = &gateway {
        device.set_detail("url", g.base().to_owned());
    }
    match (cfg.transport, gateway) {
        (WhatwattTransport::Mqtt, gateway) => run_mqtt(cfg, gateway, ingest, cancel).await,
        (_, Some(gateway)) => Http::new(cfg, gateway, ingest, cancel).run().await,
        (_, None) => {
            let e = WhatwattError::NoUrl { device: device.id().to_owned() };
            device.set_link(Link::Down(e.to_string()));
            cancel.cancelled().await;
        }
    }
}

async fn run_mqtt(cfg: WhatwattConfig, gateway: Option<Gateway>, mut ingest: Ingest, cancel: CancellationToken) {
    let device = ingest.device().clone();
    let topic = cfg.topic.clone().unwrap_or_default();
    device.set_detail("transport", "mqtt");
    device.set_detail("topic", topic.clone());
    let mut rx = super::ingest::subscribe(&device, &[&topic], 256).await;
    if let Some(g) = &gateway {
        let probe = tokio::select! {
            _ = cancel.cancelled() => return,
            p = g.get("/api/v1/system") => p,
        };
        match probe {
            Ok(a) => match ingest.system_body(a.status, &a.content_type, &a.body) {
                Ok(info) => {
                    device.set_detail("auth", g.auth_name());
                    if info.licence_free() {
                        tracing::warn!(device = %device.id(),
                            "the gateway's licence is FREE: its MQTT client needs Plus and will not publish; use `transport: sse`");
                    } else if info.mqtt_client.is_some_and(|(enabled, _)| !enabled) {
                        tracing::warn!(device = %device.id(),
                            "the gateway's MQTT client is disabled (Web UI: MQTT settings); nothing will arrive on {topic}");
                    }
                }
                Err(e) => {
                    tracing::warn!(device = %device.id(), error = %clip(&e.to_string()), "whatwatt identity probe failed")
                }
            },
            Err(e) => {
                ingest.count_transport_error(&e);
                tracing::warn!(device = %device.id(), error = %clip(&e.to_string()), "whatwatt identity probe failed")
            }
        }
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                ingest.mqtt_message(&msg);
            }
        }
    }
}

/// How an SSE connection ended.
enum StreamEnd {
    Cancelled,
    /// The gateway closed a working stream: another client took the slot (or it restarted).
    Closed,
    /// No event within the watchdog.
    Silent,
    /// Read error.
    Broken(String),
    /// A line or event crossed the parser's cap: the stream lost its framing (or is hostile).
    Oversized,
}

/// What to do after a transport phase.
enum Next {
    Stop,
    Sse,
    Poll { until: Option<Instant> },
}

/// The HTTP transports (SSE with fallback, polling) of one gateway.
struct Http {
    cfg: WhatwattConfig,
    gateway: Gateway,
    ingest: Ingest,
    device: DeviceHandle,
    cancel: CancellationToken,
    /// The report is licence-gated on this gateway: never poll.
    licence_free: bool,
    last_probe: Option<Instant>,
    /// `/api/v1/system` answered once (identity, licence); until then it is retried now and then.
    identity_known: bool,
    /// Streams the gateway closed on us.
    kicked: u64,
    /// Stream (re)connections.
    connects: u64,
    logged: LogOnce,
}

/// How often the identity / meter-status probe runs at most while streaming.
const PROBE_EVERY: Duration = Duration::from_secs(600);
/// How soon a failed identity probe is tried again (the gateway was down at start-up).
const PROBE_RETRY: Duration = Duration::from_secs(30);

impl Http {
    fn new(cfg: WhatwattConfig, gateway: Gateway, ingest: Ingest, cancel: CancellationToken) -> Http {
        let device = ingest.device().clone();
        Http {
            cfg,
            gateway,
            ingest,
            device,
            cancel,
            licence_free: false,
            last_probe: None,
            identity_known: false,
            kicked: 0,
            connects: 0,
            logged: LogOnce::default(),
        }
    }

    async fn run(mut self) {
        self.probe().await;
        let mut next = match self.cfg.transport {
            WhatwattTransport::Poll if self.licence_free => {
                self.log_licence();
                Next::Sse
            }
            WhatwattTransport::Poll => Next::Poll { until: None },
            _ => Next::Sse,
        };
        loop {
            next = match next {
                Next::Stop => break,
                Next::Sse => self.sse_phase().await,
                Next::Poll { until } => self.poll_phase(until).await,
            };
        }
    }

    fn log_licence(&mut self) {
        self.licence_free = true;
        self.device.set_detail("licence", "FREE");
        if self.logged.first_of("licence", "") {
            tracing::warn!(device = %self.device.id(),
                "the gateway has a FREE licence: /api/v1/report (polling) needs Plus; reading the SSE stream /api/v1/live instead");
        }
    }

    /// `GET /api/v1/system`: identity, licence, meter status. Failures are logged, not fatal.
    async fn probe(&mut self) -> Option<SystemInfo> {
        self.last_probe = Some(Instant::now());
        let answer = tokio::select! {
            _ = self.cancel.cancelled() => return None,
            a = self.gateway.get("/api/v1/system") => a,
        };
        let result = match answer {
            Ok(a) => self.ingest.system_body(a.status, &a.content_type, &a.body),
            Err(e) => {
                self.ingest.count_transport_error(&e);
                Err(e.to_string())
            }
        };
        self.device.set_detail("auth", self.gateway.auth_name());
        match result {
            Ok(info) => {
                self.identity_known = true;
                if info.licence_free() {
                    self.log_licence();
                }
                Some(info)
            }
            Err(e) => {
                if self.logged.first_of("probe", &e) {
                    tracing::warn!(device = %self.device.id(), error = %clip(&e.to_string()), "whatwatt identity probe failed");
                }
                None
            }
        }
    }

    fn probe_due(&self) -> bool {
        let every = if self.identity_known { PROBE_EVERY } else { PROBE_RETRY };
        self.last_probe.is_none_or(|t| t.elapsed() >= every)
    }

    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    async fn sse_phase(&mut self) -> Next {
        self.device.set_detail("transport", "sse");
        let watchdog = self.cfg.watchdog.0;
        let mut failures: u32 = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Next::Stop;
            }
            if self.probe_due() {
                self.probe().await;
            }
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return Next::Stop,
                r = self.gateway.open_stream("/api/v1/live") => r,
            };
            let since = Instant::now();
            let mut healthy = false;
            match opened {
                Err(e) => self.connect_failed(&e),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let ct = http::content_type(&resp);
                    if !ct.is_empty() && !ct.starts_with("text/event-stream") && !ct.contains("html") && status == 200 {
                        // A capture served by a plain file server; parse it anyway, say so once.
                        if self.logged.first_of("content type", &ct) {
                            tracing::info!(device = %self.device.id(), content_type = %clip(&ct),
                                "/api/v1/live is not text/event-stream; reading it as an event stream anyway");
                        }
                    }
                    if status != 200 || ct.contains("html") {
                        let body = tokio::time::timeout(self.cfg.timeout.0, http::read_capped(resp, MAX_BODY)).await;
                        let (body, oversized) = match body {
                            Ok(Ok(b)) => (b, None),
                            Ok(Err(e)) if e.is_too_large() => (Default::default(), Some(e)),
                            _ => (Default::default(), None),
                        };
                        let html = looks_html(&ct, &body);
                        let reason = format!(
                            "/api/v1/live answered HTTP {status} ({}){}",
                            if ct.is_empty() { "no content type" } else { ct.as_str() },
                            if html { " with an HTML page" } else { "" }
                        );
                        let reason = match oversized {
                            Some(e) => {
                                self.ingest.parse_error(REASON_BODY_TOO_LARGE, "live error page", &e.to_string());
                                format!("{reason}: {e}")
                            }
                            None => {
                                self.ingest.parse_error(
                                    if html { "html_page" } else { "http_status" },
                                    "live",
                                    &excerpt(&body),
                                );
                                reason
                            }
                        };
                        self.device.set_link(Link::Down(reason));
                    } else {
                        self.connects += 1;
                        self.device.set_detail("sse_connects", self.connects.to_string());
                        self.ingest.sse_reset();
                        let (end, events) = self.stream(resp).await;
                        healthy = events > 0 && since.elapsed() >= watchdog;
                        match end {
                            StreamEnd::Cancelled => return Next::Stop,
                            StreamEnd::Closed => {
                                let last = self.ingest.sse_end();
                                self.closed(events + last as u64);
                            }
                            StreamEnd::Silent => self.silent().await,
                            StreamEnd::Broken(e) => {
                                if self.logged.first_of("broken", &e) {
                                    tracing::warn!(device = %self.device.id(), error = %e, "whatwatt SSE stream broke; reopening");
                                }
                            }
                            StreamEnd::Oversized => self.oversized(),
                        }
                    }
                }
            }
            failures = if healthy { 0 } else { failures.saturating_add(1) };
            let after = self.cfg.fallback.after;
            if after > 0 && failures >= after {
                if !self.licence_free {
                    tracing::warn!(device = %self.device.id(), failures,
                        retry_in = %self.cfg.fallback.retry_sse, "the whatwatt SSE stream keeps failing; polling /api/v1/report instead for a while");
                    return Next::Poll { until: Some(Instant::now() + self.cfg.fallback.retry_sse.0) };
                }
                if self.logged.first_of("no fallback", "") {
                    tracing::warn!(device = %self.device.id(),
                        "the whatwatt SSE stream keeps failing and polling needs a Plus licence (this gateway: FREE); staying on SSE");
                }
            }
            let delay = crate::mqtt::backoff_delay(
                failures.saturating_sub(1),
                self.cfg.reconnect_delay.0,
                self.cfg.reconnect_max.0,
            );
            if !self.sleep(delay).await {
                return Next::Stop;
            }
        }
    }

    fn connect_failed(&mut self, e: &GatewayError) {
        let reason = e.to_string();
        let level_error = matches!(e, GatewayError::Auth { .. });
        if self.logged.first_of("connect", &reason) {
            if level_error {
                tracing::error!(device = %self.device.id(), error = %clip(&reason), "whatwatt authentication failed");
            } else {
                tracing::warn!(device = %self.device.id(), error = %clip(&reason), "cannot open the whatwatt SSE stream; retrying with backoff");
            }
        }
        self.device.set_link(Link::Down(reason));
    }

    fn closed(&mut self, events: u64) {
        self.kicked += 1;
        self.device.counters().parse_error("sse_kicked");
        self.device.set_detail("sse_kicked", self.kicked.to_string());
        if self.logged.first_of("kicked", "") {
            tracing::warn!(device = %self.device.id(), events,
                "the whatwatt gateway closed the SSE stream: it serves one /api/v1/live stream at a time, so another client \
                 (a second bridge, Homey, the Web UI's live page) probably took it, or the gateway restarted; reopening with \
                 backoff (counted in /readyz `sse_kicked`; logged once)");
        }
    }

    fn oversized(&mut self) {
        // Logged by the parse-error path once; the reason stays in /readyz until events return.
        self.device.set_link(Link::Down(format!(
            "/api/v1/live sent a line or event longer than {} KiB (the gateway's are ~600 bytes); \
             the stream was dropped and is reopened",
            sse::MAX_LINE / 1024
        )));
    }

    async fn silent(&mut self) {
        let watchdog = self.cfg.watchdog;
        // Ask the gateway why: a meter problem shows in /api/v1/system.
        let info = self.probe().await;
        let meter_bad = info.as_ref().and_then(|i| i.meter_status.as_deref()).is_some_and(|s| !mapping::status_ok(s));
        if !meter_bad {
            self.device.set_link(Link::Down(format!("no SSE event for {watchdog}")));
        }
        if self.logged.first_of("silent", "") {
            tracing::warn!(device = %self.device.id(), %watchdog, "no whatwatt SSE event within the watchdog; reopening the stream");
        }
    }

    async fn stream(&mut self, mut resp: reqwest::Response) -> (StreamEnd, u64) {
        let watchdog = self.cfg.watchdog.0;
        let mut deadline = Instant::now() + watchdog;
        let mut events = 0u64;
        loop {
            let chunk = tokio::select! {
                _ = self.cancel.cancelled() => return (StreamEnd::Cancelled, events),
                c = tokio::time::timeout_at(deadline, resp.chunk()) => c,
            };
            match chunk {
                Err(_) => return (StreamEnd::Silent, events),
                Ok(Ok(Some(bytes))) => {
                    let n = self.ingest.sse_bytes(&bytes);
                    if self.ingest.sse_overflowed() {
                        // Dropping `resp` closes the connection: the rest of the line is never read.
                        return (StreamEnd::Oversized, events + n as u64);
                    }
                    if n > 0 {
                        events += n as u64;
                        // Only events feed the watchdog: a trickle of junk is no sign of life.
                        deadline = Instant::now() + watchdog;
                    }
                }
                Ok(Ok(None)) => return (StreamEnd::Closed, events),
                Ok(Err(e)) => return (StreamEnd::Broken(http::describe(&e)), events),
            }
        }
    }

    async fn poll_phase(&mut self, until: Option<Instant>) -> Next {
        self.device.set_detail("transport", if until.is_some() { "poll (SSE fallback)" } else { "poll" });
        let mut ticker = tokio::time::interval(self.cfg.poll_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Next::Stop,
                _ = ticker.tick() => {}
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                tracing::info!(device = %self.device.id(), "trying the whatwatt SSE stream again");
                return Next::Sse;
            }
            let answer = tokio::select! {
                _ = self.cancel.cancelled() => return Next::Stop,
                a = self.gateway.get("/api/v1/report") => a,
            };
            let result = match answer {
                Ok(a) => self.ingest.report_body(a.status, &a.content_type, &a.body).map_err(|e| match e {
                    ReportError::LicenceRequired => None,
                    ReportError::Bad(m) => Some(m),
                }),
                Err(e) => {
                    self.ingest.count_transport_error(&e);
                    Err(Some(e.to_string()))
                }
            };
            match result {
                Ok(_) => {
                    if failing {
                        tracing::info!(device = %self.device.id(), "whatwatt report answers again");
                        failing = false;
                    }
                    if !self.identity_known && self.probe_due() {
                        self.probe().await;
                    }
                }
                Err(None) => {
                    self.log_licence();
                    return Next::Sse;
                }
                Err(Some(reason)) => {
                    if !failing {
                        tracing::warn!(device = %self.device.id(), reason = %clip(&reason), "whatwatt report poll failed; retrying every interval");
                        failing = true;
                    }
                    self.device.set_link(Link::Down(reason));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> WhatwattConfig {
        serde_norway::from_str(yaml).unwrap()
    }

    fn errors(c: &WhatwattConfig) -> String {
        validate(c, "devices.m").into_iter().map(|(k, m)| format!("{k}: {m}\n")).collect()
    }

    #[test]
    fn defaults_are_sse_with_a_one_minute_watchdog() {
        let c = cfg("url: http://whatwatt-9f8124.local\n");
        assert_eq!(c.transport, WhatwattTransport::Sse);
        assert_eq!(c.watchdog, Dur::secs(60));
        assert_eq!(c.poll_interval(), Duration::from_secs(10));
        assert_eq!(c.fallback.after, 3);
        assert_eq!(c.username, "");
        assert!(errors(&c).is_empty(), "{}", errors(&c));
        assert_eq!(cadence(&c), Duration::from_secs(20), "freshness = 3 × 20 s = the watchdog");
    }

    #[test]
    fn http_transports_need_a_plain_base_url() {
        let e = errors(&cfg("transport: poll\n"));
        assert!(e.contains("devices.m.url"), "{e}");
        let e = errors(&cfg("url: whatwatt.local\n"));
        assert!(e.contains("http://"), "{e}");
        let e = errors(&cfg("url: http://:pw@host\n"));
        assert!(e.contains("password_file"), "{e}");
        let e = errors(&cfg("url: http://host/api/v1/report\n"));
        assert!(e.contains("base URL"), "{e}");
    }

    #[test]
    fn mqtt_needs_a_topic_and_checks_the_template() {
        let e = errors(&cfg("transport: mqtt\n"));
        assert!(e.contains("devices.m.topic"), "{e}");
        let e = errors(&cfg("transport: mqtt\ntopic: t\ntemplate: '{\"a\": ${foo}}'\n"));
        assert!(e.contains("devices.m.template") && e.contains("foo"), "{e}");
        let e = errors(&cfg("transport: mqtt\ntopic: t\nfields:\n  x: 99_9_9\n"));
        assert!(e.contains("devices.m.fields"), "{e}");
        let ok = cfg("transport: mqtt\ntopic: energy/whatwatt/go\ntemplate: '{\"P\": ${1_7_0}}'\n");
        assert!(errors(&ok).is_empty(), "{}", errors(&ok));
        assert_eq!(cadence(&ok), Duration::from_secs(30));
    }

    #[test]
    fn mqtt_keys_are_refused_on_http_transports() {
        let e = errors(&cfg("url: http://h\ntopic: t\n"));
        assert!(e.contains("devices.m.topic: only used with `transport: mqtt`"), "{e}");
    }

    #[test]
    fn an_unreadable_password_file_is_a_config_error() {
        let e = errors(&cfg("url: http://h\npassword_file: /nonexistent/whatwatt.pw\n"));
        assert!(e.contains("devices.m.password_file: cannot read"), "{e}");
        let e = errors(&cfg("url: http://h\npassword: a\npassword_file: /etc/hostname\n"));
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn a_password_file_is_read_and_trimmed_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("hlb-ww-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let mut c = cfg("url: http://h\n");
        c.password_file = Some(f);
        assert_eq!(resolve_password(&c, "m").unwrap().unwrap().expose(), "s3cret");
        c.password = Some(Secret::new("hunter2"));
        c.password_file = None;
        let printed = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn volume_from_takes_a_bus_number_or_a_word() {
        assert_eq!(cfg("url: http://h\nvolume_from: 2\n").volume_from, "2");
        assert_eq!(cfg("url: http://h\n").volume_from, "auto");
        assert_eq!(VolumeFrom::parse(&cfg("url: http://h\nvolume_from: 2\n").volume_from), VolumeFrom::Bus(2));
    }

    #[test]
    fn silly_durations_are_refused() {
        let e = errors(&cfg(
            "url: http://h\ninterval: 100ms\ntimeout: 0s\nwatchdog: 10ms\nreconnect_delay: 5s\nreconnect_max: 1s\nphase_min_voltage: -1\n",
        ));
        for k in ["interval", "timeout", "watchdog", "reconnect_max", "phase_min_voltage"] {
            assert!(e.contains(&format!("devices.m.{k}")), "{k}: {e}");
        }
    }

    #[test]
    fn fallback_polling_shortens_the_sse_cadence_only_up_to_the_poll_interval() {
        let c = cfg("url: http://h\nwatchdog: 1s\ninterval: 500ms\n");
        assert_eq!(cadence(&c), Duration::from_millis(500));
    }
}

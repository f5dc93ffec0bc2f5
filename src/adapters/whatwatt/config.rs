//! whatwatt adapter configuration: the `adapter: whatwatt` keys ([`WhatwattConfig`], its transport
//! and SSE fallback), their validation, the password lookup, the start-up errors and the cadence
//! (expected time between readings) each transport implies.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mapping::{self, FieldMap};
use crate::config::types::{Dur, Secret};

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

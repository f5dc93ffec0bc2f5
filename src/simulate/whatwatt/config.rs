//! whatwatt simulator configuration: the `type: whatwatt` simulator keys ([`WhatwattSimConfig`]),
//! the `hlbridge simulate whatwatt` arguments ([`CliArgs`]), the auth / licence / meter choices both
//! share, and their validation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::template_text;
use crate::config::types::{Dur, Secret};
use crate::mqtt::MqttSettings;

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

pub(super) fn default_topic() -> String {
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
pub(super) fn default_id() -> String {
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

pub(super) fn check_id(id: &str) -> bool {
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

//! `adapter: goe` keys: the charger's identity and transport, their validation, and the reading
//! cadence they imply.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::types::{Dur, string_or_number};

/// go-e transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GoeTransport {
    /// The charger's own MQTT client publishes to our broker (push, ~1 s).
    Mqtt,
    /// Poll the local HTTP API v2 (`/api/status`).
    Http,
}

/// `adapter: goe` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoeConfig {
    /// Charger serial (6 digits, quote it: `"012345"`); gives the default topic prefix.
    #[serde(default, deserialize_with = "string_or_number", skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// `mqtt` (default) or `http`.
    #[serde(default = "goe_default_transport")]
    pub(crate) transport: GoeTransport,
    /// The charger's full topic prefix (`mtp`) when customised, with trailing `/`. Default: both
    /// `go-eCharger/<serial>/` and the pre-054.6 `/go-eCharger/<serial>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// Base URL of the charger for `transport: http` (e.g. `http://192.168.1.50`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Poll interval for `transport: http`.
    #[serde(default = "goe_default_interval")]
    pub interval: Dur,
    /// HTTP request timeout.
    #[serde(default = "goe_default_timeout")]
    pub timeout: Dur,
}

fn goe_default_transport() -> GoeTransport {
    GoeTransport::Mqtt
}
fn goe_default_interval() -> Dur {
    Dur::secs(5)
}
fn goe_default_timeout() -> Dur {
    Dur::secs(3)
}

/// The expected time between two readings, from which freshness defaults to three times.
pub(crate) fn cadence(cfg: &GoeConfig) -> Duration {
    match cfg.transport {
        // `rbt` changes every second; 5 s leaves room for a busy Wi-Fi.
        GoeTransport::Mqtt => Duration::from_secs(5),
        GoeTransport::Http => cfg.interval.0.max(Duration::from_secs(1)),
    }
}

/// Checks the go-e keys of device `path` (`devices.<id>`); returns (key path, message) pairs.
pub(crate) fn validate(g: &GoeConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if let Some(tp) = &g.topic_prefix {
        if !tp.ends_with('/') {
            errs.push((
                format!("{path}.topic_prefix"),
                format!("must end with `/` like the charger's `mtp` (`{tp}/`)"),
            ));
        }
        if tp.contains(['+', '#']) {
            errs.push((format!("{path}.topic_prefix"), "must not contain MQTT wildcards".into()));
        }
    }
    match g.transport {
        GoeTransport::Mqtt => {
            if g.serial.is_none() && g.topic_prefix.is_none() {
                errs.push((
                    format!("{path}.serial"),
                    "set `serial` (or `topic_prefix`) so the bridge knows the charger's topics".into(),
                ));
            }
            if g.url.is_some() {
                errs.push((format!("{path}.url"), "only used with `transport: http`".into()));
            }
        }
        GoeTransport::Http => match &g.url {
            None => {
                errs.push((format!("{path}.url"), "`transport: http` needs `url` (e.g. http://192.168.1.50)".into()))
            }
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                errs.push((format!("{path}.url"), format!("`{u}` must start with http:// or https://")))
            }
            _ => {}
        },
    }
    if g.interval.0 < std::time::Duration::from_millis(500) {
        errs.push((format!("{path}.interval"), "must be at least 500ms (the charger updates once a second)".into()));
    }
    if g.timeout.0.is_zero() {
        errs.push((format!("{path}.timeout"), "must be longer than 0s".into()));
    }
    errs
}

//! OctoPrint adapter: follows a printer through the OctoPrint-MQTT plugin's topics under its base
//! topic (`event/<Event>`, `progress/printing|slicing`, `temperature/<key>`, `mqtt`, `metadata/<key>`)
//! and feeds them to the pure [`mapping`]. One device per base topic, so several printers (one
//! OctoPrint instance each, or one instance per printer profile) are several devices.
//!
//! The plugin is publish-only, so commands (pause/resume/cancel, heater set points, connect and
//! disconnect) go to OctoPrint's REST API ([`rest`]) when `url` and an API key are configured;
//! each is confirmed by the state the plugin then reports, or fails after `command_timeout`.
//! Availability comes from the plugin's own status topic (`mqtt`: `connected` /
//! `disconnected`, also its last will) and the printer's connection state inside OctoPrint, never
//! from message cadence: the plugin publishes temperatures only when they move by 0.1 °C, so a
//! connected printer holding a steady temperature is silent for minutes (see [`cadence`]).

crate::adapters::adapter!(
    /// The Octoprint adapter in the registry ([`crate::adapters::Adapter`]).
    Octoprint,
    config = OctoprintConfig,
    kind = Octoprint,
    tables = mapping::try_tables,
    quantities = &[
        "print_file",
        "print_progress",
        "print_time_elapsed",
        "print_time_left",
        "printer_state",
        "slicing_progress",
        "temperature_*",
    ],
    commands = rest::COMMANDS,
    commands_on_by_default = false,
);

#[cfg(test)]
mod fuzz_tests;
pub(crate) mod mapping;
pub(crate) mod rest;

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::adapters::log_once::LogOnce;
use crate::config::types::{Dur, Secret};
use crate::mqtt::Message;
use crate::router::{Command, DeviceHandle, Link};
use crate::untrusted::{clip, clip_bytes};

use mapping::{Counted, LinkWish, Mapper};

/// Sub-topics the plugin publishes below its base topic (plugin 0.8.x defaults).
const SUBTOPICS: [&str; 5] = ["event/+", "progress/+", "temperature/+", "mqtt", "metadata/#"];

/// `adapter: octoprint` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OctoprintConfig {
    /// The plugin's base topic (`publish.baseTopic`), case-sensitive: `octoPrint/` since plugin
    /// 0.8.4, `octoprint/` before; one device per base topic. The plugin glues it to `event/...`
    /// without a slash; without a trailing `/` here both `<base>/event/...` and the glued
    /// `<base>event/...` are followed.
    #[serde(default = "default_base_topic")]
    pub base_topic: String,
    /// The plugin's `timestamp_fieldname`: the payload field holding the sample time (unix seconds).
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    /// OctoPrint's web address (`http://octopi.local`) for commands over its REST API; without
    /// it (and a key) the printer takes no commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The API key sent as `X-Api-Key` (prefer `api_key_file`); never logged or shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// File holding the API key (trailing newline ignored), relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// How long a command waits for OctoPrint's answer and then for the plugin to report its
    /// effect (`paused`, the new set point) before it fails.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: Dur,
}

fn default_command_timeout() -> Dur {
    Dur::secs(15)
}

/// The API key from `api_key` or `api_key_file`.
pub(crate) fn resolve_api_key(cfg: &OctoprintConfig) -> Result<Option<Secret>, String> {
    if let Some(f) = &cfg.api_key_file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        return Ok(Some(Secret::new(text.trim_end_matches(['\n', '\r']))));
    }
    Ok(cfg.api_key.clone())
}

fn default_base_topic() -> String {
    "octoPrint/".into()
}

fn default_timestamp_field() -> String {
    "_timestamp".into()
}

impl Default for OctoprintConfig {
    fn default() -> Self {
        OctoprintConfig {
            base_topic: default_base_topic(),
            timestamp_field: default_timestamp_field(),
            url: None,
            api_key: None,
            api_key_file: None,
            command_timeout: default_command_timeout(),
        }
    }
}

/// Checks the adapter's keys of device `path`; returns (key path, message) pairs.
pub(crate) fn validate(cfg: &OctoprintConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    let b = &cfg.base_topic;
    if b.contains(['+', '#']) {
        errs.push((format!("{path}.base_topic"), format!("`{b}` must not contain MQTT wildcards")));
    } else if b.contains('\0') || b.len() > 200 {
        errs.push((format!("{path}.base_topic"), "must be a plain topic prefix (at most 200 bytes)".into()));
    }
    if cfg.timestamp_field.is_empty() {
        errs.push((
            format!("{path}.timestamp_field"),
            "must not be empty (the plugin's default is `_timestamp`)".into(),
        ));
    }
    let has_key = cfg.api_key.is_some() || cfg.api_key_file.is_some();
    match &cfg.url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            errs.push((format!("{path}.url"), format!("`{}` must start with http:// or https://", clip(u))));
        }
        Some(u) if u.contains('@') => {
            errs.push((format!("{path}.url"), "put the key in `api_key` / `api_key_file`, not in the URL".into()));
        }
        Some(_) if !has_key => errs
            .push((format!("{path}.api_key_file"), "`url` needs an API key: set `api_key_file` or `api_key`".into())),
        None if has_key => errs.push((format!("{path}.url"), "the API key needs OctoPrint's `url`".into())),
        _ => {}
    }
    if cfg.api_key.is_some() && cfg.api_key_file.is_some() {
        errs.push((format!("{path}.api_key_file"), "set either `api_key` or `api_key_file`, not both".into()));
    } else if cfg.api_key_file.is_some()
        && let Err(e) = resolve_api_key(cfg)
    {
        errs.push((format!("{path}.api_key_file"), e));
    }
    if cfg.command_timeout.0.is_zero() {
        errs.push((format!("{path}.command_timeout"), "must be longer than 0s".into()));
    }
    errs
}

/// Expected time between readings while a job runs (the plugin's 5 s progress timer, temperatures
/// moving every 2–5 s). It does not decide availability: an idle printer at a steady temperature
/// publishes nothing at all (73 s of silence seen on a real OctoPrint 1.11.8, printer
/// `Operational`), so [`run`] lifts the device's freshness window to [`NEVER_STALE`] and the
/// plugin's `connected`/`disconnected` (its last will) and the printer's state decide. A printer
/// switched off goes offline at once through its `Disconnected`/`OFFLINE` events.
pub(crate) fn cadence(_cfg: &OctoprintConfig) -> Duration {
    Duration::from_secs(20)
}

/// The freshness window of an OctoPrint device: silence is normal, so no window at all (about
/// 136 years; the configured `freshness` is overridden).
pub(crate) const NEVER_STALE: Duration = Duration::from_secs(u32::MAX as u64);

/// The base topics followed for `cfg` (see [`OctoprintConfig::base_topic`]).
pub(crate) fn base_topics(cfg: &OctoprintConfig) -> Vec<String> {
    let b = &cfg.base_topic;
    if b.is_empty() || b.ends_with('/') { vec![b.clone()] } else { vec![format!("{b}/"), b.clone()] }
}

/// The MQTT filters subscribed for `cfg`.
pub(crate) fn filters(cfg: &OctoprintConfig) -> Vec<String> {
    base_topics(cfg).iter().flat_map(|b| SUBTOPICS.iter().map(move |s| format!("{b}{s}"))).collect()
}

/// Per-message handling, public so that recorded traffic can be replayed through exactly the
/// code a live printer goes through (golden tests, benchmark).
pub struct Ingest {
    bases: Vec<String>,
    mapper: Mapper,
    device: DeviceHandle,
    logged: LogOnce,
    /// The link last reported to the router.
    link: Option<LinkWish>,
}

impl Ingest {
    /// A fresh ingest state for `device` configured by `cfg`.
    pub fn new(cfg: &OctoprintConfig, device: DeviceHandle) -> Ingest {
        Ingest {
            bases: base_topics(cfg),
            mapper: Mapper::new(&cfg.timestamp_field),
            device,
            logged: LogOnce::default(),
            link: None,
        }
    }

    /// Handles one MQTT message (full topic); topics outside the plugin's are ignored.
    pub fn message(&mut self, msg: &Message) {
        let Some(topic) = self.bases.iter().find_map(|b| mapping::classify(b, &msg.topic)) else { return };
        self.device.counters().received.inc();
        let out = self.mapper.handle(topic, &msg.payload, msg.retain);
        for p in &out.problems {
            self.count(p, msg);
        }
        if let Some(wish) = self.mapper.link()
            && self.link != Some(wish)
        {
            self.link = Some(wish);
            self.device.set_link(match wish.reason() {
                None => Link::Up,
                Some(r) => Link::Down(r.to_owned()),
            });
        }
        self.device.apply(out.update);
    }

    fn count(&mut self, p: &mapping::Problem, msg: &Message) {
        let c = self.device.counters();
        let (kind, reason) = match p.counted {
            Counted::ParseError(r) => {
                c.parse_error(r);
                ("parse", r)
            }
            Counted::Rejected(r) => {
                c.rejected(r);
                ("rejected", r)
            }
            Counted::Unknown => {
                c.unknown_keys.inc();
                ("unknown", "unknown")
            }
        };
        if !self.logged.first(&format!("{kind} {reason} {}", p.what)) {
            return;
        }
        let device = self.device.id();
        let what = p.what.as_str();
        match p.counted {
            Counted::Unknown => tracing::info!(device, what, topic = %clip(&msg.topic),
                "OctoPrint name not in the adapter's tables (newer OctoPrint or a plugin); passed through and counted"),
            Counted::Rejected("retained_event") => tracing::info!(device, what, topic = %clip(&msg.topic),
                "retained OctoPrint event on the broker (left by plugin <= 0.8.13?): history, not replayed; \
                 clear it with `mosquitto_pub -r -n -t <topic>`"),
            Counted::Rejected(reason) => tracing::info!(device, what, reason, topic = %clip(&msg.topic),
                "OctoPrint sample not used (an older sample arrived after a newer one, e.g. queued during an outage); counted"),
            Counted::ParseError(reason) => tracing::warn!(device, what, reason, topic = %clip(&msg.topic),
                payload = %clip_bytes(&msg.payload),
                "OctoPrint payload not understood; skipped"),
        }
    }
}

/// A command sent to OctoPrint, waiting for the plugin to report its effect.
struct Pending {
    /// The command being answered (its name and `id`).
    cmd: Command,
    /// What confirms it.
    plan: rest::Plan,
    /// When it fails.
    deadline: Instant,
}

/// Runs the adapter until `cancel`.
pub(crate) async fn run(cfg: OctoprintConfig, device: DeviceHandle, cancel: CancellationToken) {
    let filters = filters(&cfg);
    device.set_detail("transport", "mqtt");
    device.set_detail("topics", filters.join(" "));
    let rest = start_rest(&cfg, &device);
    device.set_detail("availability", "the plugin's `mqtt` status and the printer state (silence is normal)");
    device.extend_freshness(NEVER_STALE);
    let mut rx = super::ingest::subscribe(&device, &filters, 4096).await;
    let mut commands = Some(device.commands());
    let mut ingest = Ingest::new(&cfg, device.clone());
    let mut pending: Option<Pending> = None;
    // Registered once, not once per message (each fresh `cancelled()` locks the token twice).
    let mut cancelled = std::pin::pin!(cancel.cancelled());
    loop {
        let deadline = pending.as_ref().map(|p| p.deadline);
        tokio::select! {
            _ = &mut cancelled => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                ingest.message(&msg);
                if rx.is_empty() {
                    device.flush();
                }
                confirm(&device, &mut pending);
            }
            cmd = crate::adapters::wait::recv(&mut commands), if pending.is_none() => {
                let Some(cmd) = cmd else { commands = None; continue };
                pending = start_command(&rest, &device, cmd, cfg.command_timeout.0).await;
                confirm(&device, &mut pending);
            }
            _ = crate::adapters::wait::sleep_until(deadline), if deadline.is_some() => {
                if let Some(p) = pending.take() {
                    device.command_result(&p.cmd, Err(format!(
                        "OctoPrint accepted it but the plugin did not report the change within {}",
                        crate::config::types::format_duration(cfg.command_timeout.0))));
                }
            }
        }
    }
}

/// The REST client when `url` and a key are configured; `Err` says why commands are off.
fn start_rest(cfg: &OctoprintConfig, device: &DeviceHandle) -> Result<rest::Rest, String> {
    let url = cfg.url.as_deref();
    let key = resolve_api_key(cfg);
    let made = match (url, key) {
        (Some(url), Ok(Some(key))) => rest::Rest::new(url, key, cfg.command_timeout.0),
        (_, Err(e)) => Err(format!("no commands: api_key_file: {e}")),
        _ => Err("no commands: set `url` and `api_key_file` (OctoPrint's REST API; the MQTT plugin is publish-only)"
            .to_owned()),
    };
    match &made {
        Ok(_) => {
            device.set_detail("commands", "OctoPrint REST API");
            device.set_detail("url", url.unwrap_or_default().to_owned());
        }
        Err(e) => device.set_detail("commands", e.clone()),
    }
    made
}

/// Plans and sends `cmd`; returns what to wait for, or answers at once when it cannot run.
async fn start_command(
    rest: &Result<rest::Rest, String>,
    device: &DeviceHandle,
    cmd: Command,
    timeout: Duration,
) -> Option<Pending> {
    let rest = match rest {
        Ok(r) => r,
        Err(e) => {
            device.command_result(&cmd, Err(format!("device `{}` has {e}", device.id())));
            return None;
        }
    };
    let state = match device.value(crate::model::Quantity::known("printer_state")) {
        Some(crate::model::Value::Text(s)) if s != "unknown" => Some(s),
        _ => None,
    };
    // Heater commands check the printer's profile (tools, bed, chamber); read per command, so a
    // profile changed in OctoPrint counts at once. Unreadable: the fixed bounds, OctoPrint decides.
    let profile = if cmd.name.starts_with("temperature_") {
        match rest.profile().await {
            Ok(p) => Some(p),
            Err(rest::ProfileError::KeyRefused(e)) => {
                device.command_result(&cmd, Err(e));
                return None;
            }
            Err(rest::ProfileError::Unreadable(_)) => None,
        }
    } else {
        None
    };
    let plan = match rest::plan(cmd.name, &cmd.value, state.as_deref(), profile.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            device.command_result(&cmd, Err(e));
            return None;
        }
    };
    if let Err(e) = rest.send(&plan).await {
        device.command_result(&cmd, Err(e));
        return None;
    }
    Some(Pending { cmd, plan, deadline: Instant::now() + timeout })
}

/// Answers the pending command once the plugin reports what it expects.
fn confirm(device: &DeviceHandle, pending: &mut Option<Pending>) {
    if let Some(p) = pending.take_if(|p| p.plan.expect.met(|q| device.value(q))) {
        device.command_result(&p.cmd, Ok(p.plan.answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_base_topic_is_the_plugins_since_0_8_4() {
        let c = OctoprintConfig::default();
        assert_eq!(c.base_topic, "octoPrint/");
        assert_eq!(
            filters(&c),
            [
                "octoPrint/event/+",
                "octoPrint/progress/+",
                "octoPrint/temperature/+",
                "octoPrint/mqtt",
                "octoPrint/metadata/#"
            ]
        );
    }

    #[test]
    fn a_base_topic_without_slash_follows_both_spellings() {
        let c = OctoprintConfig { base_topic: "printers/mk4".into(), ..Default::default() };
        assert_eq!(base_topics(&c), ["printers/mk4/", "printers/mk4"]);
        assert!(filters(&c).contains(&"printers/mk4event/+".to_owned()));
    }

    #[test]
    fn wildcards_and_an_empty_timestamp_field_are_config_errors() {
        let c = OctoprintConfig { base_topic: "octo/+/".into(), timestamp_field: String::new(), ..Default::default() };
        let errs = validate(&c, "devices.p");
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].0, "devices.p.base_topic");
        assert_eq!(errs[1].0, "devices.p.timestamp_field");
        assert!(validate(&OctoprintConfig::default(), "devices.p").is_empty());
    }

    #[test]
    fn commands_need_a_url_and_exactly_one_key_and_the_key_is_never_serialised() {
        let key = Some(Secret::new("k3y-value"));
        let url = Some("http://octopi.local".to_owned());
        let keys = |c: &OctoprintConfig| validate(c, "devices.p").into_iter().map(|e| e.0).collect::<Vec<_>>();
        assert_eq!(keys(&OctoprintConfig { url: url.clone(), ..Default::default() }), ["devices.p.api_key_file"]);
        assert_eq!(keys(&OctoprintConfig { api_key: key.clone(), ..Default::default() }), ["devices.p.url"]);
        let both = OctoprintConfig {
            url: url.clone(),
            api_key: key.clone(),
            api_key_file: Some("/nonexistent".into()),
            ..Default::default()
        };
        assert_eq!(keys(&both), ["devices.p.api_key_file"]);
        let in_url =
            OctoprintConfig { url: Some("http://k3y@octopi".into()), api_key: key.clone(), ..Default::default() };
        assert_eq!(keys(&in_url), ["devices.p.url"]);
        let good = OctoprintConfig { url, api_key: key, ..Default::default() };
        assert!(keys(&good).is_empty());
        let shown = serde_json::to_string(&good).unwrap();
        assert!(!shown.contains("k3y-value") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn silence_never_makes_a_printer_stale() {
        assert!(NEVER_STALE > Duration::from_secs(100 * 365 * 86_400));
        assert!(NEVER_STALE > cadence(&OctoprintConfig::default()) * 3);
    }
}

//! OctoPrint adapter: follows a printer through the OctoPrint-MQTT plugin's topics under its base
//! topic (`event/<Event>`, `progress/printing|slicing`, `temperature/<key>`, `mqtt`, `metadata/<key>`)
//! and feeds them to the pure [`mapping`]. One device per base topic, so several printers (one
//! OctoPrint instance each, or one instance per printer profile) are several devices.
//!
//! The plugin is publish-only: pause, resume and cancel need OctoPrint's REST API and are not
//! offered here. Availability comes from the plugin's own status topic (`mqtt`: `connected` /
//! `disconnected`, also its last will) and the printer's connection state inside OctoPrint, never
//! from message cadence: the plugin publishes temperatures only when they move by 0.1 °C, so a
//! connected printer holding a steady temperature is silent for minutes (see [`cadence`]).

crate::adapters::adapter!(
    /// The Octoprint adapter in the registry ([`crate::adapters::Adapter`]).
    Octoprint,
    config = OctoprintConfig,
    kind = Octoprint,
    quantities = &[
        "print_file",
        "print_progress",
        "print_time_elapsed",
        "print_time_left",
        "printer_state",
        "slicing_progress",
        "temperature_*",
    ],
    commands = &[],
    commands_on_by_default = false,
);

#[cfg(test)]
mod fuzz_tests;
pub mod mapping;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::adapters::log_once::LogOnce;
use crate::mqtt::Message;
use crate::router::{DeviceHandle, Link};
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
}

fn default_base_topic() -> String {
    "octoPrint/".into()
}

fn default_timestamp_field() -> String {
    "_timestamp".into()
}

impl Default for OctoprintConfig {
    fn default() -> Self {
        OctoprintConfig { base_topic: default_base_topic(), timestamp_field: default_timestamp_field() }
    }
}

/// Checks the adapter's keys of device `path`; returns (key path, message) pairs.
pub fn validate(cfg: &OctoprintConfig, path: &str) -> Vec<(String, String)> {
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
    errs
}

/// Expected time between readings while a job runs (the plugin's 5 s progress timer, temperatures
/// moving every 2–5 s). It does not decide availability: an idle printer at a steady temperature
/// publishes nothing at all (73 s of silence seen on a real OctoPrint 1.11.8, printer
/// `Operational`), so [`run`] lifts the device's freshness window to [`NEVER_STALE`] and the
/// plugin's `connected`/`disconnected` (its last will) and the printer's state decide. A printer
/// switched off goes offline at once through its `Disconnected`/`OFFLINE` events.
pub fn cadence(_cfg: &OctoprintConfig) -> Duration {
    Duration::from_secs(20)
}

/// The freshness window of an OctoPrint device: silence is normal, so no window at all (about
/// 136 years; the configured `freshness` is overridden).
pub const NEVER_STALE: Duration = Duration::from_secs(u32::MAX as u64);

/// The base topics followed for `cfg` (see [`OctoprintConfig::base_topic`]).
pub fn base_topics(cfg: &OctoprintConfig) -> Vec<String> {
    let b = &cfg.base_topic;
    if b.is_empty() || b.ends_with('/') { vec![b.clone()] } else { vec![format!("{b}/"), b.clone()] }
}

/// The MQTT filters subscribed for `cfg`.
pub fn filters(cfg: &OctoprintConfig) -> Vec<String> {
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

/// Runs the adapter until `cancel`.
pub async fn run(cfg: OctoprintConfig, device: DeviceHandle, cancel: CancellationToken) {
    let filters = filters(&cfg);
    device.set_detail("transport", "mqtt");
    device.set_detail("topics", filters.join(" "));
    device.set_detail("commands", "none: OctoPrint-MQTT is publish-only (pause/resume/cancel need the REST API)");
    device.set_detail("availability", "the plugin's `mqtt` status and the printer state (silence is normal)");
    device.extend_freshness(NEVER_STALE);
    let mut rx = super::ingest::subscribe(&device, &filters, 4096).await;
    let mut ingest = Ingest::new(&cfg, device.clone());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                ingest.message(&msg);
                if rx.is_empty() {
                    device.flush();
                }
            }
        }
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
        let c = OctoprintConfig { base_topic: "octo/+/".into(), timestamp_field: String::new() };
        let errs = validate(&c, "devices.p");
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].0, "devices.p.base_topic");
        assert_eq!(errs[1].0, "devices.p.timestamp_field");
        assert!(validate(&OctoprintConfig::default(), "devices.p").is_empty());
    }

    #[test]
    fn silence_never_makes_a_printer_stale() {
        assert!(NEVER_STALE > Duration::from_secs(100 * 365 * 86_400));
        assert!(NEVER_STALE > cadence(&OctoprintConfig::default()) * 3);
    }
}

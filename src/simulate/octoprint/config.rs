//! What the OctoPrint simulator is told: the options [`run`](super::run) takes, the
//! `type: octoprint` keys of `simulators:` (and their checks) and the command line of
//! `hlbridge simulate octoprint`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::types::Dur;
use crate::mqtt::MqttSettings;

/// How prints end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SimOutcome {
    /// Every print finishes (`PrintDone`).
    Done,
    /// Every print is cancelled at 70 % (`PrintCancelled` + `PrintFailed` reason `cancelled`).
    Cancelled,
    /// Done, then cancelled, then done...
    #[default]
    Alternate,
}

/// How many ticks each phase of the cycle lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTicks {
    /// Printer switched off (not connected to OctoPrint; nothing but the status is published).
    pub off: u32,
    /// Connected and idle, before the print starts.
    pub idle: u32,
    /// Print started, heaters warming up, progress 0.
    pub heat: u32,
    /// Printing from 0 to 100 % (pause excluded).
    pub print: u32,
    /// Paused (at 40 %).
    pub paused: u32,
    /// Print over, heaters off, before the printer is disconnected.
    pub cool: u32,
}

impl Default for PhaseTicks {
    fn default() -> Self {
        // With 1 s ticks a whole cycle takes about a minute: enough to watch in the demo.
        PhaseTicks { off: 3, idle: 5, heat: 8, print: 40, paused: 4, cool: 6 }
    }
}

impl PhaseTicks {
    /// Ticks of one full cycle.
    #[cfg(test)]
    pub(crate) fn cycle(&self) -> u32 {
        self.off + self.idle + self.heat + self.print + self.paused + self.cool
    }
}

/// Everything [`run`](super::run) needs; built by the CLI (`hlbridge simulate octoprint`) and `simulators:`.
#[derive(Debug, Clone)]
pub struct OctoprintSimOptions {
    /// Broker to publish to (the last will and `connected` status are set from `base_topic`).
    pub broker: MqttSettings,
    /// The plugin's `baseTopic`, glued to the sub-topics as is (so normally ending in `/`).
    pub base_topic: String,
    /// One simulated temperature poll / progress-timer step (real: 2–5 s).
    pub tick: Duration,
    /// Publish `printer_data` on `progress/printing` (plugin setting, off by default).
    pub printer_data: bool,
    /// How prints end.
    pub outcome: SimOutcome,
    /// OctoPrint 2.0: `connector` in events, `CLOSED` instead of `OFFLINE`, 2.0 `printer_data`.
    pub octoprint2: bool,
    /// Plugin ≤ 0.8.13: every event retained.
    pub legacy_retained_events: bool,
    /// Phase lengths.
    pub phases: PhaseTicks,
    /// RNG seed for temperature noise.
    pub seed: u64,
    /// When to connect to the bridge's broker (in-process simulators: once the bridge listens).
    pub wait_for_bridge: crate::simulate::WaitForBridge,
}

impl OctoprintSimOptions {
    /// Options with the plugin's defaults for `broker`.
    pub fn new(broker: MqttSettings) -> OctoprintSimOptions {
        OctoprintSimOptions {
            broker,
            base_topic: "octoPrint/".into(),
            tick: Duration::from_secs(1),
            printer_data: false,
            outcome: SimOutcome::Alternate,
            octoprint2: false,
            legacy_retained_events: false,
            phases: PhaseTicks::default(),
            seed: 1,
            wait_for_bridge: Default::default(),
        }
    }
}

/// `type: octoprint` simulator keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OctoprintSimConfig {
    /// Broker the simulated OctoPrint publishes to; the bridge's own broker when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The plugin's base topic (`publish.baseTopic`), glued to `event/...` as is.
    #[serde(default = "default_base_topic")]
    pub base_topic: String,
    /// One simulated temperature poll / progress-timer step (a real plugin: 2–5 s).
    #[serde(default = "one_second")]
    pub tick: Dur,
    /// Publish `printer_data` on `progress/printing` (the plugin's `printerData`, off by default):
    /// gives print times and the printer state during a print.
    #[serde(default)]
    pub printer_data: bool,
    /// How prints end: `done`, `cancelled` or `alternate`.
    #[serde(default)]
    pub outcome: SimOutcome,
    /// Speak OctoPrint 2.0 (`connector` in events, `CLOSED` when off, 2.0 `printer_data`).
    #[serde(default)]
    pub octoprint2: bool,
    /// Behave like plugin ≤ 0.8.13, which retained every event.
    #[serde(default)]
    pub legacy_retained_events: bool,
}

fn default_base_topic() -> String {
    "octoPrint/".into()
}

fn one_second() -> Dur {
    Dur::secs(1)
}

/// Command-line arguments of `hlbridge simulate octoprint`.
#[derive(clap::Args, Debug)]
pub struct CliArgs {
    /// Broker to publish to.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// The plugin's base topic (`octoPrint/` since plugin 0.8.4, `octoprint/` before).
    #[arg(long, default_value = "octoPrint/")]
    pub base_topic: String,
    /// Tick length: one temperature poll / progress step.
    #[arg(long, default_value = "1s", value_parser = parse_dur)]
    pub tick: Duration,
    /// Publish `printer_data` on `progress/printing`.
    #[arg(long)]
    pub printer_data: bool,
    /// How prints end.
    #[arg(long, value_enum, default_value_t = SimOutcome::Alternate)]
    pub outcome: SimOutcome,
    /// Speak OctoPrint 2.0.
    #[arg(long)]
    pub octoprint2: bool,
    /// Retain every event, like plugin <= 0.8.13.
    #[arg(long)]
    pub legacy_retained_events: bool,
    /// Also serve OctoPrint's REST API for commands here (e.g. 127.0.0.1:5000).
    #[arg(long)]
    pub rest_listen: Option<std::net::SocketAddr>,
    /// The API key the REST API expects in `X-Api-Key`.
    #[arg(long, default_value = "simulated-octoprint-key")]
    pub api_key: String,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::config::types::parse_duration(s)
}

/// Checks the simulator's keys (`path` = `simulators.<name>`).
pub(crate) fn validate(cfg: &OctoprintSimConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if cfg.base_topic.contains(['+', '#']) {
        errs.push((format!("{path}.base_topic"), "must not contain MQTT wildcards".into()));
    }
    if let Some(b) = &cfg.broker
        && let Err(e) = MqttSettings::from_url(b, "sim")
    {
        errs.push((format!("{path}.broker"), e.to_string()));
    }
    if cfg.tick.0 < Duration::from_millis(1) {
        errs.push((format!("{path}.tick"), "must be at least 1ms".into()));
    }
    errs
}

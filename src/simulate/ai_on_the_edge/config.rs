//! What the AI-on-the-edge simulator is told: the options [`run`](super::run) takes, the
//! `type: ai_on_the_edge` keys of `simulators:`, the command line of
//! `hlbridge simulate ai-on-the-edge`, and the checks both share.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CameraSpec, RoundKind, SimDialect, SimMeterType};
use crate::config::types::Dur;
use crate::mqtt::MqttSettings;

/// Everything [`run`](super::run) needs.
#[derive(Debug, Clone)]
pub struct AiOnTheEdgeSimOptions {
    /// The broker (client id: the camera's host name, as the firmware's default ClientID).
    pub broker: MqttSettings,
    /// The camera.
    pub camera: CameraSpec,
    /// When to connect to the bridge's broker (in-process simulators: once the bridge listens).
    pub wait_for_bridge: crate::simulate::WaitForBridge,
}
fn default_main_topic() -> String {
    "watermeter".into()
}
fn default_interval() -> Dur {
    Dur::secs(10)
}
fn default_errors() -> f64 {
    0.1
}
fn default_sequences() -> Vec<String> {
    vec!["main".into()]
}
fn default_start() -> f64 {
    512.3025
}
fn yes() -> bool {
    true
}

/// `type: ai_on_the_edge` simulator keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiOnTheEdgeSimConfig {
    /// Broker the simulated camera publishes to; the bridge's own broker when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The camera's MainTopic.
    #[serde(default = "default_main_topic")]
    pub main_topic: String,
    /// `upstream` (jomjol v16.1.0, default) or `clusters` (the Slider0007 fork's topic clusters).
    #[serde(default)]
    pub dialect: SimDialect,
    /// Round interval (a real camera: 5m; the demo: 10s).
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// `RetainMessages` (the firmware's default is false).
    #[serde(default)]
    pub retain: bool,
    /// Publish Home Assistant discovery configs after boot (always retained).
    #[serde(default = "yes")]
    pub discovery: bool,
    /// MeterType announced in discovery: `water_m3`, `gas_m3` or `energy_kwh`.
    #[serde(default)]
    pub meter_type: SimMeterType,
    /// Share of rounds with a misread digit (0 to 1).
    #[serde(default = "default_errors")]
    pub errors: f64,
    /// Number sequences.
    #[serde(default = "default_sequences")]
    pub sequences: Vec<String>,
    /// Meter reading at start.
    #[serde(default = "default_start")]
    pub start_value: f64,
    /// Fork only: publish process data as single topics too.
    #[serde(default)]
    pub cluster_topics: bool,
    /// RNG seed (runs are reproducible).
    #[serde(default)]
    pub seed: u64,
}

/// Command-line arguments of `hlbridge simulate ai-on-the-edge`.
#[derive(clap::Args, Debug)]
pub struct CliArgs {
    /// Broker to publish to, e.g. mqtt://127.0.0.1:1883.
    #[arg(long)]
    pub broker: String,
    /// MQTT layout.
    #[arg(long, value_enum, default_value = "upstream")]
    pub dialect: SimDialect,
    /// The camera's MainTopic.
    #[arg(long, default_value = "watermeter")]
    pub main_topic: String,
    /// Round interval (a real camera: 5m).
    #[arg(long, default_value = "10s", value_parser = parse_dur)]
    pub interval: Duration,
    /// Publish data retained (`RetainMessages`).
    #[arg(long)]
    pub retain: bool,
    /// Do not publish Home Assistant discovery configs.
    #[arg(long)]
    pub no_discovery: bool,
    /// MeterType announced in discovery.
    #[arg(long, value_enum, default_value = "water-m3")]
    pub(crate) meter_type: SimMeterType,
    /// Share of rounds with a misread digit (0 to 1).
    #[arg(long, default_value_t = 0.1)]
    pub errors: f64,
    /// Fixed cycle of round kinds instead of random misreads, e.g. good,neg-rate,good.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub pattern: Vec<RoundKind>,
    /// Number sequences, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "main")]
    pub sequences: Vec<String>,
    /// Meter reading at start.
    #[arg(long, default_value_t = 512.3025)]
    pub start_value: f64,
    /// Fork only: publish process data as single topics too.
    #[arg(long)]
    pub cluster_topics: bool,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::config::types::parse_duration(s)
}
/// Checks the keys `simulators:` and the command line share; `keys` names them in the messages.
pub(super) fn check(
    main_topic: &str,
    interval: Duration,
    errors: f64,
    sequences: &[String],
    path: &str,
    keys: [&str; 4],
) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if main_topic.is_empty()
        || main_topic.contains(['+', '#'])
        || main_topic.starts_with('/')
        || main_topic.ends_with('/')
    {
        errs.push((format!("{path}{}", keys[0]), "must be a topic without wildcards or leading/trailing `/`".into()));
    }
    if interval < Duration::from_millis(10) || interval > Duration::from_secs(86_400) {
        errs.push((format!("{path}{}", keys[1]), "must be between 10ms and 24h".into()));
    }
    if !(0.0..=1.0).contains(&errors) {
        errs.push((format!("{path}{}", keys[2]), "must be between 0 and 1".into()));
    }
    let mut seen = std::collections::HashSet::new();
    if sequences.is_empty()
        || sequences.iter().any(|s| s.is_empty() || s.contains(['/', '+', '#', '"']) || !seen.insert(s.as_str()))
    {
        errs.push((format!("{path}{}", keys[3]), "must be distinct names without `/`, wildcards or quotes".into()));
    }
    errs
}

/// Checks the simulator's keys (`path` = `simulators.<name>`).
pub(crate) fn validate(cfg: &AiOnTheEdgeSimConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = check(
        &cfg.main_topic,
        cfg.interval.0,
        cfg.errors,
        &cfg.sequences,
        path,
        [".main_topic", ".interval", ".errors", ".sequences"],
    );
    if let Some(b) = &cfg.broker
        && let Err(e) = MqttSettings::from_url(b, "sim")
    {
        errs.push((format!("{path}.broker"), e.to_string()));
    }
    errs
}
/// The camera a `simulators:` entry describes.
pub(super) fn spec_of(cfg: &AiOnTheEdgeSimConfig) -> CameraSpec {
    CameraSpec {
        main_topic: cfg.main_topic.clone(),
        dialect: cfg.dialect,
        sequences: cfg.sequences.clone(),
        interval: cfg.interval.0,
        retain: cfg.retain,
        discovery: cfg.discovery,
        meter_type: cfg.meter_type,
        start_value: cfg.start_value,
        error_rate: cfg.errors,
        pattern: Vec::new(),
        cluster_topics: cfg.cluster_topics,
        seed: cfg.seed,
    }
}

//! How a simulated go-e charger is set up: the `simulators:` entry (`type: goe`) run inside the
//! bridge, and the `hlbridge simulate goe` command line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{GoeSimOptions, run};
use crate::config::types::{Dur, string_or_number};
use crate::mqtt::MqttSettings;

/// `type: goe` simulator keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoeSimulatorConfig {
    /// Serial of the simulated charger.
    #[serde(deserialize_with = "string_or_number_required")]
    pub serial: String,
    /// Broker the simulated charger publishes to; the bridge's own broker when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Full topic prefix (`mtp`); `go-eCharger/<serial>/` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// Serve the HTTP API v2 on this address too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// `mcr`: refuse writes over MQTT.
    #[serde(default)]
    pub read_only: bool,
    /// Simulated tick (real chargers: 1s).
    #[serde(default = "one_second")]
    pub tick: Dur,
}

fn one_second() -> Dur {
    Dur::secs(1)
}

/// Like [`string_or_number`] for a key that must be present (a serial written without quotes).
fn string_or_number_required<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    string_or_number(d)?.ok_or_else(|| serde::de::Error::custom("a value is required"))
}

/// Checks a `type: goe` entry (`path` = `simulators.<name>`); returns (key path, message) pairs.
pub(crate) fn validate(g: &GoeSimulatorConfig, path: &str) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    if g.serial.is_empty() {
        errs.push((format!("{path}.serial"), "must not be empty".into()));
    }
    if let Some(b) = &g.broker
        && let Err(e) = MqttSettings::from_url(b, "sim")
    {
        errs.push((format!("{path}.broker"), e.to_string()));
    }
    errs
}

/// Starts the `simulators.<name>` charger inside the bridge process.
pub(crate) async fn start(
    name: &str,
    g: &GoeSimulatorConfig,
    config: &crate::simulate::BridgeBroker,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let broker = crate::simulate::broker_settings(g.broker.as_deref(), config, &format!("go-echarger_{}", g.serial))?;
    let http = match g.http_listen {
        Some(addr) => Some(crate::simulate::bind(addr, &format!("simulators.{name}.http_listen")).await?),
        None => None,
    };
    let opts = GoeSimOptions {
        broker: Some(broker),
        serial: g.serial.clone(),
        topic_prefix: g.topic_prefix.clone(),
        read_only: g.read_only,
        http,
        tick: g.tick.0,
        ..Default::default()
    };
    crate::simulate::spawn_named(tracker, name, run(opts, cancel));
    Ok(())
}

/// `hlbridge simulate goe`: a go-e Charger with the MQTT API keys and the HTTP API v2.
#[derive(clap::Args, Debug)]
pub struct CliArgs {
    /// Broker to publish to (omit for HTTP only).
    #[arg(long)]
    pub broker: Option<String>,
    /// Charger serial.
    #[arg(long, default_value = "012345")]
    pub serial: String,
    /// Full topic prefix (`mtp`), with trailing slash.
    #[arg(long, conflicts_with = "legacy_prefix")]
    pub topic_prefix: Option<String>,
    /// Use the pre-054.6 prefix `/go-eCharger/<serial>/`.
    #[arg(long)]
    pub legacy_prefix: bool,
    /// Serve the HTTP API v2 on this address, e.g. 127.0.0.1:8080.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// MQTT read-only (`mcr=true`): ignore `<key>/set`.
    #[arg(long)]
    pub read_only: bool,
    /// Answer HTTP 400 when the filter names a missing key, like firmware 60.x.
    #[arg(long)]
    pub http_400: bool,
    /// Tick length (real chargers: 1s).
    #[arg(long, default_value = "1s", value_parser = parse_dur)]
    pub tick: Duration,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::config::types::parse_duration(s)
}

/// Runs `hlbridge simulate goe` until SIGINT/SIGTERM; the exit code for `main`.
pub async fn run_cli(args: CliArgs) -> ExitCode {
    let broker = match &args.broker {
        Some(url) => match MqttSettings::from_url(url, &format!("go-echarger_{}", args.serial)) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("--broker: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let http = match args.http {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("--http {addr}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if broker.is_none() && http.is_none() {
        eprintln!("give --broker and/or --http");
        return ExitCode::from(2);
    }
    let topic_prefix =
        if args.legacy_prefix { Some(format!("/go-eCharger/{}/", args.serial)) } else { args.topic_prefix };
    let opts = GoeSimOptions {
        broker,
        serial: args.serial,
        topic_prefix,
        read_only: args.read_only,
        http,
        http_400_on_unknown_filter: args.http_400,
        tick: args.tick,
        ..Default::default()
    };
    crate::simulate::run_until_signal(|cancel| run(opts, cancel)).await
}

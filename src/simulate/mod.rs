//! Device simulators (`hlbridge simulate ...`): our own stand-ins for real devices, following
//! `shared/protocols` exactly, for the demo, the tests and the benchmark. Each can run inside the
//! bridge process (`simulators:` in the config) or on its own from the CLI.

pub(crate) mod ai_on_the_edge;
pub(crate) mod goe;
pub(crate) mod octoprint;
pub(crate) mod whatwatt;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, GoeSimulatorConfig, SimulatorConfig};
use crate::mqtt::MqttSettings;

/// Checks a simulator entry (`path` = `simulators.<name>`); returns (key path, message) pairs.
pub(crate) fn validate(sim: &SimulatorConfig, path: &str) -> Vec<(String, String)> {
    match sim {
        SimulatorConfig::Goe(g) => {
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
        SimulatorConfig::Whatwatt(c) => whatwatt::validate(c, path),
        SimulatorConfig::AiOnTheEdge(c) => ai_on_the_edge::validate(c, path),
        SimulatorConfig::Octoprint(c) => octoprint::validate(c, path),
    }
}

/// Broker settings for a simulator: its own `broker` URL, or the bridge's broker (with the bridge's
/// credentials) under the client id `client_id`.
pub(crate) fn broker_settings(own: Option<&str>, config: &Config, client_id: &str) -> anyhow::Result<MqttSettings> {
    let url = own.map(str::to_owned).unwrap_or_else(|| config.mqtt.url.clone());
    let mut s = MqttSettings::from_url(&url, client_id)?;
    if own.is_none() {
        s.username = config.mqtt.username.clone();
        s.password = config.mqtt.password.as_ref().map(|p| p.expose().to_owned());
    }
    Ok(s)
}

/// Runs a simulator from the command line until SIGINT/SIGTERM; the exit code for `main`.
pub async fn run_until_signal<F>(run: impl FnOnce(CancellationToken) -> F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        crate::app::shutdown_signal().await;
        stop.cancel();
    });
    match run(cancel).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a simulator inside the bridge process on `tracker`, logging why it stopped if it fails.
pub(crate) fn spawn_named<F>(tracker: &TaskTracker, name: &str, run: F)
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let name = name.to_owned();
    tracker.spawn(async move {
        if let Err(e) = run.await {
            tracing::error!(simulator = %name, error = %e, "simulator stopped");
        }
    });
}

/// Binds a simulator's HTTP listener, naming the config key on failure.
pub(crate) async fn bind(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("{key}: cannot listen on {addr}"))
}

/// Starts simulator `name` inside the bridge process.
pub(crate) async fn start(
    name: &str,
    sim: &SimulatorConfig,
    config: &Config,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    match sim {
        SimulatorConfig::Goe(g) => start_goe(name, g, config, tracker, cancel).await,
        SimulatorConfig::Whatwatt(c) => whatwatt::start(name, c, config, tracker, cancel).await,
        SimulatorConfig::AiOnTheEdge(c) => ai_on_the_edge::start(name, c, config, tracker, cancel).await,
        SimulatorConfig::Octoprint(c) => octoprint::start(name, c, config, tracker, cancel).await,
    }
}

async fn start_goe(
    name: &str,
    g: &GoeSimulatorConfig,
    config: &Config,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let broker = broker_settings(g.broker.as_deref(), config, &format!("go-echarger_{}", g.serial))?;
    let http = match g.http_listen {
        Some(addr) => Some(bind(addr, &format!("simulators.{name}.http_listen")).await?),
        None => None,
    };
    let opts = goe::GoeSimOptions {
        broker: Some(broker),
        serial: g.serial.clone(),
        topic_prefix: g.topic_prefix.clone(),
        read_only: g.read_only,
        http,
        tick: g.tick.0,
        ..Default::default()
    };
    spawn_named(tracker, name, goe::run(opts, cancel));
    Ok(())
}

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

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::mqtt::MqttSettings;

/// `simulators:` entry: a simulated device run inside the process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum SimulatorConfig {
    /// A go-e Charger (keys defined beside the simulator).
    Goe(goe::GoeSimulatorConfig),
    /// A whatwatt Go gateway (keys defined beside the simulator).
    Whatwatt(whatwatt::WhatwattSimConfig),
    /// An AI-on-the-edge-device camera meter (keys defined beside the simulator).
    AiOnTheEdge(ai_on_the_edge::AiOnTheEdgeSimConfig),
    /// An OctoPrint printer with the MQTT plugin (keys defined beside the simulator).
    Octoprint(octoprint::OctoprintSimConfig),
}

/// What config loading lends the simulators to parse one entry's keys: its own parser, which
/// reports every bad key with its path and file line.
pub(crate) trait ParseKeys {
    /// The entry's keys (without `type`) as `T`; None after reporting the errors.
    fn keys<T: DeserializeOwned>(&mut self) -> Option<T>;
}

/// Parses the keys of a `type: <kind>` entry as that type's own struct; `None` for an unknown
/// type (the caller then lets the enum name the valid ones).
pub(crate) fn parse(kind: &str, p: &mut impl ParseKeys) -> Option<Option<SimulatorConfig>> {
    Some(match kind {
        "goe" => p.keys().map(SimulatorConfig::Goe),
        "whatwatt" => p.keys().map(SimulatorConfig::Whatwatt),
        "ai_on_the_edge" => p.keys().map(SimulatorConfig::AiOnTheEdge),
        "octoprint" => p.keys().map(SimulatorConfig::Octoprint),
        _ => return None,
    })
}

/// Checks a simulator entry (`path` = `simulators.<name>`); returns (key path, message) pairs.
pub(crate) fn validate(sim: &SimulatorConfig, path: &str) -> Vec<(String, String)> {
    match sim {
        SimulatorConfig::Goe(c) => goe::validate(c, path),
        SimulatorConfig::Whatwatt(c) => whatwatt::validate(c, path),
        SimulatorConfig::AiOnTheEdge(c) => ai_on_the_edge::validate(c, path),
        SimulatorConfig::Octoprint(c) => octoprint::validate(c, path),
    }
}

/// Holds an in-process simulator's connection to the bridge's broker until the bridge listens there
/// (the broker acknowledged its subscriptions). A device says some things only once after boot (a
/// camera's MAC and firmware); published before our SUBSCRIBE, they would be lost. The default
/// (the CLI, a simulator with a `broker:` of its own) does not wait.
#[derive(Clone, Debug, Default)]
pub struct WaitForBridge(Option<tokio::sync::watch::Receiver<bool>>);

impl WaitForBridge {
    /// Waits for `listening` to turn true (or its sender to go away).
    pub(crate) fn on(listening: tokio::sync::watch::Receiver<bool>) -> WaitForBridge {
        WaitForBridge(Some(listening))
    }
}

/// A simulator's MQTT client: connects at once, or once `wait` says the bridge listens (the client
/// queues what the simulator publishes meanwhile, like a device that is still booting).
pub(crate) fn connect(
    settings: &MqttSettings,
    wait: &WaitForBridge,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<crate::mqtt::MqttHandle, crate::mqtt::MqttError> {
    let metrics = crate::metrics::Metrics::detached();
    let Some(listening) = &wait.0 else {
        return crate::mqtt::spawn(settings, metrics, tracker, cancel);
    };
    let (mqtt, gate) = crate::mqtt::spawn_held(settings, metrics, tracker, cancel.clone())?;
    let mut listening = listening.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = listening.wait_for(|on| *on) => gate.open(),
        }
    });
    Ok(mqtt)
}

/// The bridge's broker, which a simulator without a `broker:` of its own joins: all a simulator needs
/// of the bridge's config (so simulators do not depend on the config module, which lists them).
#[derive(Clone)]
pub(crate) struct BridgeBroker {
    /// `mqtt.url`.
    pub(crate) url: String,
    /// `mqtt.username`.
    pub(crate) username: Option<String>,
    /// `mqtt.password` (or its file's contents), for the simulator's own connection only.
    pub(crate) password: Option<String>,
    /// Turns true once the bridge listens on its broker.
    pub(crate) listening: tokio::sync::watch::Receiver<bool>,
}

impl BridgeBroker {
    /// What a simulator with `own` broker (None: the bridge's) waits for before it connects.
    pub(crate) fn wait_for(&self, own: Option<&str>) -> WaitForBridge {
        match own {
            Some(_) => WaitForBridge::default(),
            None => WaitForBridge::on(self.listening.clone()),
        }
    }
}

/// Broker settings for a simulator: its own `broker` URL, or the bridge's broker (with the bridge's
/// credentials) under the client id `client_id`.
pub(crate) fn broker_settings(
    own: Option<&str>,
    bridge: &BridgeBroker,
    client_id: &str,
) -> anyhow::Result<MqttSettings> {
    let url = own.unwrap_or(&bridge.url);
    let mut s = MqttSettings::from_url(url, client_id)?;
    if own.is_none() {
        s.username = bridge.username.clone();
        s.password = bridge.password.clone();
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
        crate::shutdown::signal().await;
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
    config: &BridgeBroker,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    match sim {
        SimulatorConfig::Goe(c) => goe::start(name, c, config, tracker, cancel).await,
        SimulatorConfig::Whatwatt(c) => whatwatt::start(name, c, config, tracker, cancel).await,
        SimulatorConfig::AiOnTheEdge(c) => ai_on_the_edge::start(name, c, config, tracker, cancel).await,
        SimulatorConfig::Octoprint(c) => octoprint::start(name, c, config, tracker, cancel).await,
    }
}

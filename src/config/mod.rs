//! Configuration: the YAML schema (these `///` docs are the user reference, mirrored in
//! `config/example.yaml`), loading through figment with `HLBRIDGE_A__B` env overrides, and validation
//! that reports every error at once with its key path and file line.

#[cfg(test)]
mod fuzz_tests;
mod load;
mod syntax;
pub(crate) mod types;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::adapters::AdapterConfig;
pub use crate::adapters::device::{DeviceCommon, DeviceConfig};
#[cfg(feature = "simulators")]
pub use crate::simulate::SimulatorConfig;
pub(crate) use load::ConfigErrors;
pub use load::{ConfigError, load_file, load_str};
pub(crate) use types::Secret;
pub use types::{AdapterKind, Dur};

use crate::model::DeviceKind;

/// Stands in for the simulator entries in a binary built without them (cargo feature
/// `simulators`): no value exists, so `simulators:` is always empty (loading refuses the section).
#[cfg(not(feature = "simulators"))]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SimulatorConfig {}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Config {
    /// The MQTT broker the bridge publishes to (and reads MQTT devices from).
    pub(crate) mqtt: MqttConfig,
    /// How unified topics are written.
    pub output: OutputConfig,
    /// The HTTP endpoint for `/metrics`, `/healthz`, `/readyz`.
    pub http: HttpConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// How many threads run the bridge.
    pub runtime: RuntimeConfig,
    /// Configured devices, keyed by device id (`[a-z0-9_-]{1,64}`).
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Topic-prefix routes matched by adapter or device kind; the first match wins.
    pub(crate) routes: Vec<RouteConfig>,
    /// Simulated devices run inside the process (the no-hardware demo).
    pub simulators: BTreeMap<String, SimulatorConfig>,
    /// Home Assistant MQTT discovery.
    pub(crate) homeassistant: HomeAssistantConfig,
    /// This instance's share of the devices when several bridges split them (`crate::cluster`).
    pub(crate) cluster: crate::cluster::ClusterConfig,
}

/// `homeassistant:` — Home Assistant MQTT discovery (device-based, Home Assistant 2024.12 or newer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HomeAssistantConfig {
    /// Publish one retained discovery message per device (and one for the bridge itself), so every
    /// device shows up in Home Assistant with its entities.
    pub enabled: bool,
    /// The topic prefix Home Assistant's MQTT integration listens on for discovery (its
    /// `discovery_prefix`, `homeassistant` unless changed there).
    pub discovery_prefix: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig { enabled: true, discovery_prefix: "homeassistant".into() }
    }
}

/// `mqtt:` — the broker connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MqttConfig {
    /// Broker URL: `mqtt://host:1883` or `mqtts://host:8883` for TLS.
    pub url: String,
    /// MQTT client id; must be unique on the broker.
    pub client_id: String,
    /// User name, when the broker wants one.
    pub username: Option<String>,
    /// Password inline (prefer `password_file` or `HLBRIDGE_MQTT__PASSWORD`); never logged.
    pub password: Option<Secret>,
    /// File holding the password (trailing newline ignored), e.g. a container secret.
    pub password_file: Option<PathBuf>,
    /// Keep-alive interval (at least 1s).
    pub keep_alive: Dur,
    /// TLS options for `mqtts://`.
    pub tls: TlsConfig,
    /// Outbound queue length; publishes beyond it are dropped and counted while the broker is slow.
    pub queue_capacity: usize,
    /// Longest wait between reconnect attempts (the delay doubles from 250ms up to this, with jitter).
    pub reconnect_max: Dur,
    /// Send every publish at once (TCP_NODELAY). `false` lets small publishes coalesce: about half
    /// the CPU per fanned-out device message, but latency spikes of up to ~40 ms.
    pub tcp_nodelay: bool,
    /// Run a broker inside the process (cargo feature `embedded-broker`); the client then connects
    /// to it unless `url` is set explicitly.
    pub embedded: Option<EmbeddedBrokerConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "hlbridge".into(),
            username: None,
            password: None,
            password_file: None,
            keep_alive: Dur::secs(30),
            tls: TlsConfig::default(),
            queue_capacity: 10_000,
            reconnect_max: Dur::secs(30),
            tcp_nodelay: true,
            embedded: None,
        }
    }
}

/// `mqtt.tls:` — TLS for `mqtts://`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsConfig {
    /// PEM CA file to trust; the operating system's roots when unset.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS).
    pub client_cert_file: Option<PathBuf>,
    /// PEM client key (mutual TLS).
    pub client_key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for lab brokers; logged as a warning at start-up.
    pub insecure: bool,
}

/// `mqtt.embedded:` — an in-process broker for demos and single-box setups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmbeddedBrokerConfig {
    /// Address the embedded broker listens on.
    pub listen: SocketAddr,
}

/// `output:` — the unified topics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Global topic prefix (contract §3); devices and routes can override it.
    pub prefix: String,
    /// Publish one retained topic per quantity (`<prefix>/<device>/<quantity>`).
    pub quantity_topics: bool,
    /// Publish the retained JSON snapshot `<prefix>/<device>/state`.
    pub state_json: bool,
    /// QoS of value and state publishes (0 or 1). Status, availability and events always use 1.
    pub qos: u8,
    /// Default minimum time between two publishes of one quantity (devices can override).
    pub min_interval: Option<Dur>,
    /// Default heartbeat: republish unchanged values this often (devices can override).
    pub heartbeat: Option<Dur>,
    /// Print a live, readable view of unified topics on the terminal (the demo turns it on).
    pub console: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            prefix: "home".into(),
            quantity_topics: true,
            state_json: true,
            qos: 0,
            min_interval: None,
            heartbeat: None,
            console: false,
        }
    }
}

/// `http:` — the metrics and health endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address for `/metrics`, `/healthz` and `/readyz`; `null` turns the endpoint off.
    pub listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))) }
    }
}

/// `log:` — logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` (human) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
    /// Level filter in `RUST_LOG` syntax, e.g. `info` or `info,hlbridge=debug`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Pretty, level: "info".into() }
    }
}

/// `runtime:` — threads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads running the bridge's tasks. `1` (default): one thread does everything, which costs
    /// the least CPU and latency at home-lab rates (no cross-thread wake-ups); more threads only pay
    /// off with very many busy devices.
    pub worker_threads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { worker_threads: 1 }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// JSON lines.
    Json,
}

/// `routes:` entry: a topic prefix for every device matching `match`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    /// What the route applies to; every given field must match.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// The prefix for matching devices.
    pub prefix: String,
}

/// Route conditions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteMatch {
    /// Match devices of this adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterKind>,
    /// Match devices of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DeviceKind>,
}

impl Config {
    /// What the router needs to know about device `id` (`None` when it is not configured): its
    /// topic prefix (device > route > global), freshness (default: three of its adapter's cadence),
    /// output pacing and commands, resolved through the adapters registry.
    pub fn device_spec(&self, id: &str) -> Option<crate::router::DeviceSpec> {
        let d = self.devices.get(id)?;
        let adapter = d.common.adapter;
        let kind = adapter.device_kind();
        let prefix = d
            .common
            .prefix
            .clone()
            .or_else(|| {
                self.routes
                    .iter()
                    .find(|r| {
                        r.matches.adapter.is_none_or(|a| a == adapter) && r.matches.kind.is_none_or(|k| k == kind)
                    })
                    .map(|r| r.prefix.clone())
            })
            .unwrap_or_else(|| self.output.prefix.clone());
        Some(crate::router::DeviceSpec {
            id: id.to_owned(),
            adapter,
            prefix,
            freshness: d.common.freshness.map(|f| f.0).unwrap_or(crate::adapters::cadence(d) * 3),
            min_interval: d.common.min_interval.or(self.output.min_interval).map(|d| d.0),
            heartbeat: d.common.heartbeat.or(self.output.heartbeat).map(|d| d.0),
            commands: crate::adapters::accepts_commands(d),
            offered: crate::adapters::command_names(adapter),
        })
    }

    /// What to warn about a config that runs nothing on purpose (`devices: {}`, no simulators):
    /// logged at start-up and printed by `check-config`. Loading refuses a file that merely lacks
    /// devices, so this is only ever the deliberate case (a container whose devices come later).
    pub fn idle_warning(&self) -> Option<String> {
        (self.devices.is_empty() && self.simulators.is_empty()).then(|| {
            "no devices configured (`devices: {}`): the bridge connects, answers /healthz and /metrics and \
             waits; add devices under `devices:` or as environment variables \
             (HLBRIDGE_DEVICES__<ID>__ADAPTER=...) and reload or restart"
                .to_owned()
        })
    }

    /// Devices that are enabled.
    pub(crate) fn enabled_devices(&self) -> impl Iterator<Item = (&String, &DeviceConfig)> {
        self.devices.iter().filter(|(_, d)| d.common.enabled)
    }

    /// Enabled devices this instance owns (all of them unless `cluster.instances` > 1): the ones
    /// it starts, subscribes to and polls.
    pub(crate) fn owned_devices(&self) -> impl Iterator<Item = (&String, &DeviceConfig)> {
        self.enabled_devices().filter(|(id, _)| self.cluster.owns(id))
    }

    /// The effective config as YAML with secrets redacted (`hlbridge check-config`).
    pub fn to_redacted_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# could not print the config: {e}\n"))
    }
}

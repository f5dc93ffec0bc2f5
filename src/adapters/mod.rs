//! Device adapters, one module per device family. Each turns its vendor's dialect into
//! [`crate::model::Update`]s for the router; vendor tables live as data under `adapters/<vendor>/`.
//!
//! Every adapter implements one contract, [`Adapter`]: its config type (keys under `devices.<id>`
//! beside the common ones) and validation, its cadence (expected time between readings; freshness
//! defaults to three of them), the quantities and commands it may produce (for discovery), and
//! `run`, which serves one device until its token is cancelled. [`with_adapter!`] and
//! [`with_kind!`] are the registry: the one place that maps a configured adapter to its type, so
//! everything else (config loading, app wiring, reload, discovery) dispatches through here.
//! Adapters that speak HTTP share [`http`]: the LAN client, the size-capped body reader, the error
//! describer. The device config types ([`AdapterConfig`], [`device::DeviceConfig`]) live here too,
//! beside the registry, so `config` depends on `adapters` (and both on the leaf `config::types`),
//! never the other way round (the vendors need only the leaf, directly or through `config`'s
//! re-exports).

pub(crate) mod ai_on_the_edge;
pub(crate) mod device;
pub(crate) mod goe;
pub(crate) mod http;
pub(crate) mod ingest;
pub(crate) mod log_once;
pub(crate) mod octoprint;
pub(crate) mod table;
pub(crate) mod wait;
pub(crate) mod whatwatt;

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::types::AdapterKind;
use crate::router::DeviceHandle;
use device::DeviceConfig;

/// The adapter-specific part of a device ([`DeviceConfig::adapter`]). Serialised as
/// the bare keys (untagged): they sit beside the common ones under `devices.<id>`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum AdapterConfig {
    /// go-e Charger (keys defined beside the adapter).
    Goe(goe::GoeConfig),
    /// whatwatt Go (keys defined beside the adapter).
    Whatwatt(whatwatt::WhatwattConfig),
    /// AI-on-the-edge-device camera meter (keys defined beside the adapter).
    AiOnTheEdge(ai_on_the_edge::AiOnTheEdgeConfig),
    /// OctoPrint via OctoPrint-MQTT (keys defined beside the adapter).
    Octoprint(octoprint::OctoprintConfig),
}

/// The contract every adapter implements (a unit type per vendor, listed in the registry macros).
pub(crate) trait Adapter {
    /// The adapter's own keys under `devices.<id>`.
    type Config: serde::de::DeserializeOwned + serde::Serialize + Clone + std::fmt::Debug + Send + Sync + 'static;
    /// Wraps its config into the config enum (config loading).
    fn wrap(cfg: Self::Config) -> AdapterConfig;
    /// Checks beyond the types, as (key path under `path`, message) pairs.
    fn validate(cfg: &Self::Config, path: &str) -> Vec<(String, String)>;
    /// Expected time between readings; freshness defaults to three of them.
    fn cadence(cfg: &Self::Config) -> Duration;
    /// Parses its vendor tables (compiled in); the first row that does not fit, with file and line.
    fn check_tables() -> Result<(), table::TableError>;
    /// Whether commands are on when `commands:` is not set: off for devices that act on the
    /// physical world (a charger switching a car's current, a printer), on for meters and cameras.
    const COMMANDS_ON_BY_DEFAULT: bool = true;
    /// Quantity names it may produce; `name_*` stands for a family of variants (sensors, tariffs).
    /// Discovery announces from this; a test checks every recorded capture stays inside it.
    const QUANTITIES: &'static [&'static str];
    /// Writable quantities it can execute.
    const COMMANDS: &'static [&'static str] = &[];
    /// Serves one device until `cancel` fires; must return promptly after it does.
    fn run(
        cfg: Self::Config,
        device: DeviceHandle,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// Implements [`Adapter`] for `$ty` from its module's `validate`, `cadence` and `run` functions.
macro_rules! adapter {
    (
        $(#[$doc:meta])* $ty:ident, config = $cfg:ty, kind = $kind:ident,
        tables = $tables:path, quantities = $q:expr, commands = $c:expr
        $(, commands_on_by_default = $on:expr)? $(,)?
    ) => {
        $(#[$doc])*
        pub(crate) struct $ty;

        impl $crate::adapters::Adapter for $ty {
            type Config = $cfg;
            const QUANTITIES: &'static [&'static str] = $q;
            const COMMANDS: &'static [&'static str] = $c;

            fn wrap(cfg: Self::Config) -> $crate::adapters::AdapterConfig {
                $crate::adapters::AdapterConfig::$kind(cfg)
            }

            fn validate(cfg: &Self::Config, path: &str) -> Vec<(String, String)> {
                validate(cfg, path)
            }

            fn cadence(cfg: &Self::Config) -> std::time::Duration {
                cadence(cfg)
            }

            fn check_tables() -> Result<(), $crate::adapters::table::TableError> {
                $tables().map(|_| ()).map_err(Clone::clone)
            }

            $(const COMMANDS_ON_BY_DEFAULT: bool = $on;)?

            fn run(
                cfg: Self::Config,
                device: $crate::router::DeviceHandle,
                cancel: tokio_util::sync::CancellationToken,
            ) -> impl std::future::Future<Output = ()> + Send + 'static {
                run(cfg, device, cancel)
            }
        }
    };
}
pub(crate) use adapter;

/// Runs `$body` with `$A` bound to the adapter type of `$cfg` (an [`AdapterConfig`]) and `$c` to its
/// config. The registry: adding an adapter adds one line here and one in [`with_kind!`].
#[macro_export]
macro_rules! with_adapter {
    ($cfg:expr, $A:ident, $c:ident => $body:expr) => {
        match $cfg {
            $crate::adapters::AdapterConfig::Goe($c) => {
                type $A = $crate::adapters::goe::Goe;
                $body
            }
            $crate::adapters::AdapterConfig::Whatwatt($c) => {
                type $A = $crate::adapters::whatwatt::Whatwatt;
                $body
            }
            $crate::adapters::AdapterConfig::AiOnTheEdge($c) => {
                type $A = $crate::adapters::ai_on_the_edge::AiOnTheEdge;
                $body
            }
            $crate::adapters::AdapterConfig::Octoprint($c) => {
                type $A = $crate::adapters::octoprint::Octoprint;
                $body
            }
        }
    };
}

/// Runs `$body` with `$A` bound to the adapter type of `$kind` (an [`AdapterKind`]).
#[macro_export]
macro_rules! with_kind {
    ($kind:expr, $A:ident => $body:expr) => {
        match $kind {
            $crate::config::types::AdapterKind::Goe => {
                type $A = $crate::adapters::goe::Goe;
                $body
            }
            $crate::config::types::AdapterKind::Whatwatt => {
                type $A = $crate::adapters::whatwatt::Whatwatt;
                $body
            }
            $crate::config::types::AdapterKind::AiOnTheEdge => {
                type $A = $crate::adapters::ai_on_the_edge::AiOnTheEdge;
                $body
            }
            $crate::config::types::AdapterKind::Octoprint => {
                type $A = $crate::adapters::octoprint::Octoprint;
                $body
            }
        }
    };
}

/// Parses every adapter's vendor tables: start-up and `check-config` call it, so a bad row stops the
/// boot with its file and line instead of the first message that needs it.
pub fn check_tables() -> Result<(), table::TableError> {
    for kind in AdapterKind::ALL {
        with_kind!(kind, A => A::check_tables())?;
    }
    Ok(())
}

/// The adapter-specific keys of `adapter` (for unknown-key checks and suggestions).
pub(crate) fn config_fields(adapter: AdapterKind) -> &'static [&'static str] {
    with_kind!(adapter, A => crate::config::types::fields_of::<<A as Adapter>::Config>())
}

/// Makes the secret files an adapter's keys name (`password_file`, `api_key_file`) relative to the
/// config file's directory `base_dir`, like `mqtt.password_file`.
pub(crate) fn resolve_files(cfg: &mut AdapterConfig, base_dir: &std::path::Path) {
    let file = match cfg {
        AdapterConfig::Whatwatt(w) => &mut w.password_file,
        AdapterConfig::Octoprint(o) => &mut o.api_key_file,
        AdapterConfig::Goe(_) | AdapterConfig::AiOnTheEdge(_) => return,
    };
    if let Some(f) = file
        && f.is_relative()
    {
        *f = base_dir.join(&*f);
    }
}

/// Semantic checks of the adapter-specific keys of device `path` (`devices.<id>`).
pub(crate) fn validate(cfg: &AdapterConfig, path: &str) -> Vec<(String, String)> {
    with_adapter!(cfg, A, c => A::validate(c, path))
}

/// The adapter's expected time between readings (freshness defaults to three of them).
pub fn cadence(cfg: &DeviceConfig) -> Duration {
    with_adapter!(&cfg.adapter, A, c => A::cadence(c))
}

/// The quantities (`name_*` = a family of variants) and commands `adapter` may produce.
pub(crate) fn capabilities(adapter: AdapterKind) -> (&'static [&'static str], &'static [&'static str]) {
    with_kind!(adapter, A => (<A as Adapter>::QUANTITIES, <A as Adapter>::COMMANDS))
}

/// Whether `quantity` is one `adapter` declares (exactly, or as a variant of a `name_*` entry).
pub fn declares(adapter: AdapterKind, quantity: &str) -> bool {
    capabilities(adapter).0.iter().any(|q| match q.strip_suffix('*') {
        Some(prefix) => quantity.starts_with(prefix) && quantity.len() > prefix.len(),
        None => *q == quantity,
    })
}

/// The `<name>/set` commands an adapter offers (what `devices.<id>.commands` may list).
pub(crate) fn command_names(adapter: AdapterKind) -> &'static [&'static str] {
    capabilities(adapter).1
}

/// Whether commands are on when `commands:` is not set: off for devices that act on the physical
/// world (a charger switching a car's current, a printer), on for meters and cameras.
pub(crate) fn commands_default_on(adapter: AdapterKind) -> bool {
    with_kind!(adapter, A => <A as Adapter>::COMMANDS_ON_BY_DEFAULT)
}

/// The command rules of a device (`commands`, `command_rate_limit`).
pub(crate) fn command_policy(cfg: &DeviceConfig) -> crate::commands::Policy {
    let adapter = cfg.common.adapter;
    crate::commands::Policy::new(
        command_names(adapter),
        cfg.common.commands.as_ref(),
        commands_default_on(adapter),
        cfg.common.command_rate_limit.map(|d| d.0).unwrap_or(crate::commands::DEFAULT_RATE_LIMIT),
    )
}

/// Whether the device accepts some `<name>/set` command.
pub fn accepts_commands(cfg: &DeviceConfig) -> bool {
    command_policy(cfg).accepts_any()
}

/// A started adapter task.
pub struct Spawned {
    /// The adapter's task: it ends after its cancel token fires.
    pub task: tokio::task::JoinHandle<()>,
    /// Fires once the adapter took its first step. Adapters register their MQTT subscriptions
    /// before their first await (the compliance test holds them to it), so from then on the
    /// connection's readiness covers them: the bridge waits for this before it connects, so its
    /// birth `online` means every device is listened to.
    pub first_step: oneshot::Receiver<()>,
}

/// Starts the adapter task for one device.
pub fn spawn(cfg: &DeviceConfig, device: DeviceHandle, tracker: &TaskTracker, cancel: CancellationToken) -> Spawned {
    device.set_ingest_queue(cfg.common.ingest_queue);
    let (stepped, first_step) = oneshot::channel();
    let task = with_adapter!(&cfg.adapter, A, c => tracker.spawn(after_first_poll(A::run(c.clone(), device, cancel), stepped)));
    Spawned { task, first_step }
}

/// Runs `fut`, sending on `stepped` right after its first poll.
async fn after_first_poll<F: Future<Output = ()>>(fut: F, stepped: oneshot::Sender<()>) {
    let mut fut = std::pin::pin!(fut);
    let mut stepped = Some(stepped);
    std::future::poll_fn(|cx| {
        let r = fut.as_mut().poll(cx);
        if let Some(tx) = stepped.take() {
            let _ = tx.send(());
        }
        r
    })
    .await
}

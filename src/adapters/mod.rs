//! Device adapters, one module per device family. Each turns its vendor's dialect into
//! [`crate::model::Update`]s for the router; vendor tables live as data under `adapters/<vendor>/`.
//!
//! Every adapter module offers the same small surface, dispatched here: its config struct (keys
//! under `devices.<id>` beside the common ones), `validate`, `cadence` (expected time between
//! readings; freshness defaults to three of them), whether it accepts commands, and `run`.
//! Adapters that speak HTTP share [`http`]: the LAN client, the size-capped body reader, the error
//! describer.

pub mod ai_on_the_edge;
pub mod goe;
pub mod http;
pub mod ingest;
pub mod octoprint;
pub mod whatwatt;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AdapterConfig, AdapterKind, DeviceConfig, GoeConfig};
use crate::router::DeviceHandle;

/// The adapter-specific keys of `adapter` (for unknown-key checks and suggestions).
pub fn config_fields(adapter: AdapterKind) -> &'static [&'static str] {
    use crate::config::fields_of;
    match adapter {
        AdapterKind::Goe => fields_of::<GoeConfig>(),
        AdapterKind::Whatwatt => fields_of::<whatwatt::WhatwattConfig>(),
        AdapterKind::AiOnTheEdge => fields_of::<ai_on_the_edge::AiOnTheEdgeConfig>(),
        AdapterKind::Octoprint => fields_of::<octoprint::OctoprintConfig>(),
    }
}

/// Semantic checks of the adapter-specific keys of device `path` (`devices.<id>`).
pub fn validate(cfg: &AdapterConfig, path: &str) -> Vec<(String, String)> {
    match cfg {
        AdapterConfig::Goe(c) => goe::validate(c, path),
        AdapterConfig::Whatwatt(c) => whatwatt::validate(c, path),
        AdapterConfig::AiOnTheEdge(c) => ai_on_the_edge::validate(c, path),
        AdapterConfig::Octoprint(c) => octoprint::validate(c, path),
    }
}

/// The adapter's expected time between readings (freshness defaults to three of them).
pub fn cadence(cfg: &DeviceConfig) -> Duration {
    match &cfg.adapter {
        AdapterConfig::Goe(c) => goe::cadence(c),
        AdapterConfig::Whatwatt(c) => whatwatt::cadence(c),
        AdapterConfig::AiOnTheEdge(c) => ai_on_the_edge::cadence(c),
        AdapterConfig::Octoprint(c) => octoprint::cadence(c),
    }
}

/// The `<name>/set` commands an adapter offers (what `devices.<id>.commands` may list).
pub fn command_names(adapter: AdapterKind) -> &'static [&'static str] {
    match adapter {
        AdapterKind::Goe => goe::COMMANDS,
        AdapterKind::AiOnTheEdge => ai_on_the_edge::COMMANDS,
        AdapterKind::Whatwatt | AdapterKind::Octoprint => &[],
    }
}

/// Whether commands are on when `commands:` is not set: off for devices that act on the physical
/// world (a charger switching a car's current, a printer), on for meters and cameras.
pub fn commands_default_on(adapter: AdapterKind) -> bool {
    match adapter {
        AdapterKind::Goe | AdapterKind::Octoprint => false,
        AdapterKind::Whatwatt | AdapterKind::AiOnTheEdge => true,
    }
}

/// The command rules of a device (`commands`, `command_rate_limit`).
pub fn command_policy(cfg: &DeviceConfig) -> crate::commands::Policy {
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

/// Starts the adapter task for one device.
pub fn spawn(
    cfg: &DeviceConfig,
    device: DeviceHandle,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    device.set_ingest_queue(cfg.common.ingest_queue);
    match &cfg.adapter {
        AdapterConfig::Goe(c) => tracker.spawn(goe::run(c.clone(), device, cancel)),
        AdapterConfig::Whatwatt(c) => tracker.spawn(whatwatt::run(c.clone(), device, cancel)),
        AdapterConfig::AiOnTheEdge(c) => tracker.spawn(ai_on_the_edge::run(c.clone(), device, cancel)),
        AdapterConfig::Octoprint(c) => tracker.spawn(octoprint::run(c.clone(), device, cancel)),
    }
}

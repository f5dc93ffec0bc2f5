//! Device adapters, one module per device family. Each turns its vendor's dialect into
//! [`crate::model::Update`]s for the router; vendor tables live as data under `adapters/<vendor>/`.

pub mod goe;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AdapterConfig, DeviceConfig};
use crate::router::DeviceHandle;

/// The adapter's expected time between readings (freshness defaults to three of them).
pub fn cadence(cfg: &DeviceConfig) -> Duration {
    match &cfg.adapter {
        AdapterConfig::Goe(g) => goe::cadence(g),
    }
}

/// Whether the device accepts `<quantity>/set` commands.
pub fn accepts_commands(cfg: &DeviceConfig) -> bool {
    match &cfg.adapter {
        AdapterConfig::Goe(g) => g.commands,
    }
}

/// Starts the adapter task for one device.
pub fn spawn(cfg: &DeviceConfig, device: DeviceHandle, tracker: &TaskTracker, cancel: CancellationToken) {
    match &cfg.adapter {
        AdapterConfig::Goe(g) => {
            tracker.spawn(goe::run(g.clone(), device, cancel));
        }
    }
}

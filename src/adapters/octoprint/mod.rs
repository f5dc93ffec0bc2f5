//! OctoPrint adapter: not implemented yet (placeholder so the config schema and dispatch exist).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::router::DeviceHandle;

/// `adapter: octoprint` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OctoprintConfig {}

/// Checks the adapter's keys of device `path`.
pub fn validate(_cfg: &OctoprintConfig, path: &str) -> Vec<(String, String)> {
    vec![(format!("{path}.adapter"), "the `octoprint` adapter is not available in this build yet".into())]
}

/// Expected time between readings.
pub fn cadence(_cfg: &OctoprintConfig) -> Duration {
    Duration::from_secs(10)
}

/// Runs the adapter until `cancel`.
pub async fn run(_cfg: OctoprintConfig, _device: DeviceHandle, cancel: CancellationToken) {
    cancel.cancelled().await;
}

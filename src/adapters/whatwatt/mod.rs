//! whatwatt Go adapter: not implemented yet (placeholder so the config schema and dispatch exist).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::router::DeviceHandle;

/// `adapter: whatwatt` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatwattConfig {}

/// Checks the adapter's keys of device `path`.
pub fn validate(_cfg: &WhatwattConfig, path: &str) -> Vec<(String, String)> {
    vec![(format!("{path}.adapter"), "the `whatwatt` adapter is not available in this build yet".into())]
}

/// Expected time between readings.
pub fn cadence(_cfg: &WhatwattConfig) -> Duration {
    Duration::from_secs(10)
}

/// Runs the adapter until `cancel`.
pub async fn run(_cfg: WhatwattConfig, _device: DeviceHandle, cancel: CancellationToken) {
    cancel.cancelled().await;
}

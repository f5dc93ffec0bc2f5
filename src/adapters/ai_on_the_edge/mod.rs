//! AI-on-the-edge-device adapter: not implemented yet (placeholder so the config schema and dispatch exist).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::router::DeviceHandle;

/// `adapter: ai_on_the_edge` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiOnTheEdgeConfig {}

/// Checks the adapter's keys of device `path`.
pub fn validate(_cfg: &AiOnTheEdgeConfig, path: &str) -> Vec<(String, String)> {
    vec![(format!("{path}.adapter"), "the `ai_on_the_edge` adapter is not available in this build yet".into())]
}

/// Expected time between readings.
pub fn cadence(_cfg: &AiOnTheEdgeConfig) -> Duration {
    Duration::from_secs(10)
}

/// Runs the adapter until `cancel`.
pub async fn run(_cfg: AiOnTheEdgeConfig, _device: DeviceHandle, cancel: CancellationToken) {
    cancel.cancelled().await;
}

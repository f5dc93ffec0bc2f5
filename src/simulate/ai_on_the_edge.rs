//! AI-on-the-edge-device simulator: not implemented yet (placeholder so the config schema, dispatch and CLI exist).

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

/// `type: ai_on_the_edge` simulator keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiOnTheEdgeSimConfig {}

/// Command-line arguments of `hlbridge simulate ai-on-the-edge`.
#[derive(clap::Args, Debug)]
pub struct CliArgs {}

/// Checks the simulator's keys.
pub fn validate(_cfg: &AiOnTheEdgeSimConfig, path: &str) -> Vec<(String, String)> {
    vec![(format!("{path}.type"), "the `ai_on_the_edge` simulator is not available in this build yet".into())]
}

/// Starts the simulator inside the bridge process.
pub async fn start(
    _name: &str,
    _cfg: &AiOnTheEdgeSimConfig,
    _config: &Config,
    _tracker: &TaskTracker,
    _cancel: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::bail!("the `ai_on_the_edge` simulator is not available in this build yet")
}

/// Runs the simulator from the command line until Ctrl-C.
pub async fn run_cli(_args: CliArgs) -> ExitCode {
    eprintln!("the `ai_on_the_edge` simulator is not available in this build yet");
    ExitCode::from(2)
}

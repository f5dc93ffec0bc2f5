//! AI-on-the-edge-device adapter (camera meters): reads what the camera publishes below its
//! MainTopic in either MQTT dialect — the upstream flat layout (jomjol firmware v8–v16) or the
//! topic clusters of the Slider0007 fork — plus its retained Home Assistant discovery config, and
//! turns each number sequence's round into `volume` / `energy_import`, `flow_rate` / `power`,
//! `reading_raw` and `reading_error`, with `reading_rejected` events for failed readings.
//!
//! Rounds: the firmware publishes a sequence's single topics (`value`, `error`, `raw`, ...) and then
//! its `json`. A round is routed exactly once: when its `json` arrives (merged with the single topics
//! that came before; they fill in what a malformed `json` lost), or, for a device that sends no
//! `json`, when the round ends (the same field again, the next device-status topic, or two quiet
//! seconds). So the counter guard sees one reading per round, and an event is emitted once.
//!
//! Availability: `connection` (`connected` / `connection lost`, fork `online` / `offline`) sets the
//! link; a retained `connection lost` may be a stale last will (the firmware's `connected` is not
//! retained by default), so any live message from the camera brings the link back up. Freshness is
//! 3 × the round interval (config `interval`, else 5 min, stretched when the camera announces a
//! longer one).
//!
//! Commands (`<prefix>/<device>/<name>/set`, through the router's shared checks): `read_now` publishes
//! `ctrl/flow_start` (fork clusters: `process/ctrl/cycle_start`) and is answered when the camera's
//! next round arrives, with that round's reading; `previous_value` (a number in the canonical unit
//! of the device's total, m³ or kWh) publishes `ctrl/set_prevalue` `{"numbersname": <sequence>,
//! "value": <in the meter's unit>}` (clusters: `process/ctrl/set_fallbackvalue` `{"sequence": ...}`)
//! and is answered by the next round: refused when that round reads less than the value set (the
//! camera did not take it). The firmware never acknowledges either, so silence ends in a timeout
//! (`command_timeout`); while the camera is offline they are refused at once (it keeps nothing
//! for a client that is away). Never published retained: a retained `flow_start` would start a
//! round, and a retained `set_prevalue` reset the meter, at every reconnect of the camera.
//!
//! Several number sequences: `sequences:` maps each to a device id — this device's own, or a device
//! configured with `sequence_of: <this device>` (the router is built from the config, so every
//! device that gets values must be listed there). Without `sequences:` the first sequence seen
//! (normally `main`) belongs to this device and any other is counted and reported.
//!
//! The room: this file registers the adapter and runs it ([`run`]: the live loop of messages,
//! commands and round timeouts); `config` holds the `ai_on_the_edge` keys, their checks and the
//! cadence; `ingest` assembles and routes rounds ([`Ingest`], the code replays go through too), its
//! child `ingest::commands` sends commands and answers them from the next round; `mapping` is the
//! pure topic/payload → reading knowledge; `tests`, `ingest_tests` and `fuzz_tests` test them.

crate::adapters::adapter!(
    /// The AiOnTheEdge adapter in the registry ([`crate::adapters::Adapter`]).
    AiOnTheEdge,
    config = AiOnTheEdgeConfig,
    kind = AiOnTheEdge,
    tables = mapping::try_tables,
    quantities = &["flow_rate", "reading_error", "reading_raw", "rssi", "temperature", "uptime", "volume"],
    commands = COMMANDS,
);

mod config;
#[cfg(test)]
mod fuzz_tests;
mod ingest;
pub(crate) mod mapping;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::router::{Command, DeviceHandle};

pub use config::AiOnTheEdgeConfig;
use config::{cadence, validate};
pub use ingest::Ingest;

/// The commands a camera takes on `<name>/set`.
pub(crate) const COMMANDS: &[&str] = &["read_now", "previous_value"];
/// How long `read_now` waits for the round it starts (a real round takes under a minute).
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// A round of a device that sends no `json` ends after this much silence.
const ROUND_IDLE: Duration = Duration::from_secs(2);

/// Runs the adapter until `cancel`.
pub(crate) async fn run(cfg: AiOnTheEdgeConfig, device: DeviceHandle, cancel: CancellationToken) {
    if let Some(parent) = &cfg.sequence_of {
        // Fed by the camera device's adapter; nothing to read here.
        if device.sibling(parent).is_none() {
            let msg = format!("sequence_of: `{parent}` is not an ai_on_the_edge device in this config");
            tracing::error!(device = %device.id(), "{msg}");
            device.set_detail("config_error", msg);
        }
        device.set_detail("transport", format!("mqtt, via device `{parent}`"));
        cancel.cancelled().await;
        return;
    }
    let mut ingest = Ingest::new(&cfg, device.clone());
    let filters = ingest.filters();
    device.set_detail("transport", "mqtt");
    device.set_detail("topics", filters.join(" "));
    let mut rx = crate::adapters::ingest::subscribe(&device, &filters, 1024).await;
    let mut commands = take_commands(&ingest);
    let timeout = cfg.command_timeout.map(|d| d.0).unwrap_or(DEFAULT_COMMAND_TIMEOUT);
    let interval = cadence(&cfg);
    let mut idle: Option<Instant> = None;
    // Registered once, not once per message (each fresh `cancelled()` locks the token twice).
    let mut cancelled = std::pin::pin!(cancel.cancelled());
    loop {
        let command_deadline = ingest.next_command_deadline();
        tokio::select! {
            _ = &mut cancelled => break,
            cmd = commands.recv(), if !commands.is_closed() => {
                match cmd {
                    Some((t, cmd)) => ingest.command(t, cmd, timeout, interval),
                    None => commands.close(),
                }
            }
            _ = crate::adapters::wait::sleep_until(command_deadline), if command_deadline.is_some() => {
                ingest.expire_commands(Instant::now());
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                ingest.message(&msg);
                if rx.is_empty() {
                    ingest.flush();
                }
                idle = ingest.has_open_rounds().then(|| Instant::now() + ROUND_IDLE);
            }
            _ = crate::adapters::wait::sleep_until(idle), if idle.is_some() => {
                idle = None;
                ingest.finish();
            }
        }
    }
}

/// One stream of the commands for the camera and every device it feeds, tagged with the target.
fn take_commands(ingest: &Ingest) -> tokio::sync::mpsc::Receiver<(usize, Command)> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for (t, handle) in ingest.command_targets() {
        let mut from = handle.commands();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(cmd) = from.recv().await {
                if tx.send((t, cmd)).await.is_err() {
                    break;
                }
            }
        });
    }
    rx
}
#[cfg(test)]
mod ingest_tests;
#[cfg(test)]
mod tests;

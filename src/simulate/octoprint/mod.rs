//! OctoPrint simulator: a printer behind OctoPrint 1.11 (or 2.0) with the OctoPrint-MQTT plugin
//! 0.8.16, publishing exactly the plugin's topics, retain flags, QoS and payloads
//! (`shared/protocols/octoprint-mqtt.md`): the `mqtt` status and last will, `event/<Event>` with
//! `_event`/`_timestamp`, the retained `progress/printing` of the plugin's progress timer (with
//! `printer_data` as an option), the start-up resets, retained `temperature/<key>` samples above the
//! 0.1 °C threshold, queued while the broker is away and flushed on reconnect.
//!
//! Observed on a real OctoPrint 1.11.8 + plugin 0.8.16 and reproduced here: temperatures are
//! change-driven only (a heater at a steady temperature publishes nothing, an idle printer is
//! silent); after a cancel `progress/printing` carries `printTime`/`printTimeLeft` null; shutdown
//! is `disconnected`, then the live `Shutdown` event, then the broker's last will.
//!
//! It plays an endless cycle: printer off → connect → idle → print started and heat-up → printing
//! with progress → pause and resume → done or cancelled → cool-down → disconnect.
//!
//! Split like the go-e simulator: [`PrinterSim`] is the pure device (given the time, it says what
//! the plugin would publish) and [`run`] wires it to a broker. [`run_with_rest`] also serves the
//! REST endpoints the bridge's commands use (`POST /api/job`, `/api/printer/tool|bed|chamber`,
//! `/api/connection`), checking `X-Api-Key` and answering 409 where OctoPrint does (a job command
//! while neither printing nor paused, a heater command while the printer is not operational, a
//! chamber the printer profile lacks).
//!
//! The room: this file is the entry ([`run`], [`run_with_rest`], `start` inside the bridge,
//! [`run_cli`]) and wires the printer to the broker; `config` holds the options, the
//! `simulators:` keys and the command line; `printer` is the pure device and its event plan (what
//! the plugin publishes when, payloads written like the plugin's); `rest` serves OctoPrint's REST
//! API for commands; `tests` holds the unit tests.

mod config;
mod printer;
mod rest;
#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mqtt::{MqttHandle, MqttSettings, QoS};

pub(crate) use config::validate;
pub use config::{CliArgs, OctoprintSimConfig, OctoprintSimOptions, PhaseTicks, SimOutcome};
use printer::{PrinterSim, SimPublish};
pub use rest::RestSim;
use rest::{RestCtx, rest_router};

fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn send(mqtt: &MqttHandle, msgs: Vec<SimPublish>) {
    for m in msgs {
        let qos = if m.qos1 { QoS::AtLeastOnce } else { QoS::AtMostOnce };
        mqtt.publish(m.topic, m.payload, qos, m.retain);
    }
}

/// The printer, locked for one step; a panic elsewhere does not stop the simulation.
fn lock_sim(sim: &Mutex<PrinterSim>) -> std::sync::MutexGuard<'_, PrinterSim> {
    sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the simulated OctoPrint until `cancel` fires, then shuts it down like OctoPrint does.
pub async fn run(opts: OctoprintSimOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    run_with_rest(opts, None, cancel).await
}

/// Like [`run`], also serving the REST API on `rest` when given.
pub async fn run_with_rest(
    opts: OctoprintSimOptions,
    rest: Option<RestSim>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut settings = opts.broker.clone();
    let status = format!("{}mqtt", opts.base_topic);
    // The plugin's status topic: `connected` (QoS 1, retained) after every connect, and
    // `disconnected` as its last will.
    settings.last_will = Some((status.clone(), "disconnected".into()));
    settings.birth = Some((status, "connected".into()));
    settings.keep_alive = Duration::from_secs(60);
    let tracker = TaskTracker::new();
    // The MQTT tasks get their own token: they must outlive `cancel` long enough to flush.
    let mqtt_cancel = CancellationToken::new();
    let mqtt = crate::simulate::connect(&settings, &opts.wait_for_bridge, &tracker, mqtt_cancel.clone())?;
    let mut watch = mqtt.watch();
    // A ConnAck that came before this receiver existed is no change for `changed()`: without this
    // the plugin's `on_connect` publishes never went out when the connection won that race (a
    // loaded machine; the OctoPrint tests' rare "printer_state never arrived").
    watch.mark_changed();
    let sim = Arc::new(Mutex::new(PrinterSim::new(&opts)));
    if let Some(rest) = rest {
        let ctx = RestCtx { sim: sim.clone(), mqtt: mqtt.clone(), api_key: rest.api_key.into(), silent: rest.silent };
        let shutdown = cancel.clone().cancelled_owned();
        tracker.spawn(async move {
            if let Err(e) = axum::serve(rest.listener, rest_router(ctx)).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "simulated OctoPrint REST server failed");
            }
        });
    }
    let mut interval = tokio::time::interval(opts.tick.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut generation = 0;
    tracing::info!(base_topic = %opts.base_topic, printer_data = opts.printer_data, "simulated OctoPrint started");
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => send(&mqtt, lock_sim(&sim).step(unix_now())),
            changed = watch.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = *watch.borrow_and_update();
                if s.connected && s.generation != generation {
                    generation = s.generation;
                    send(&mqtt, lock_sim(&sim).on_connect(unix_now()));
                } else if !s.connected {
                    lock_sim(&sim).on_disconnect();
                }
            }
        }
    }
    let last = lock_sim(&sim).shutdown(unix_now());
    send(&mqtt, last);
    mqtt.flush_and_disconnect(Duration::from_secs(1)).await;
    mqtt_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("simulated OctoPrint tasks did not stop within 5 s");
    }
    tracing::info!(base_topic = %opts.base_topic, "simulated OctoPrint stopped");
    Ok(())
}

/// Starts the simulator inside the bridge process.
pub(crate) async fn start(
    name: &str,
    cfg: &OctoprintSimConfig,
    config: &crate::simulate::BridgeBroker,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let broker = super::broker_settings(cfg.broker.as_deref(), config, &format!("octoprint-sim-{name}"))?;
    let opts = OctoprintSimOptions {
        base_topic: cfg.base_topic.clone(),
        tick: cfg.tick.0,
        printer_data: cfg.printer_data,
        outcome: cfg.outcome,
        octoprint2: cfg.octoprint2,
        legacy_retained_events: cfg.legacy_retained_events,
        wait_for_bridge: config.wait_for(cfg.broker.as_deref()),
        ..OctoprintSimOptions::new(broker)
    };
    super::spawn_named(tracker, name, run(opts, cancel));
    Ok(())
}

/// Runs the simulator from the command line until Ctrl-C.
pub async fn run_cli(args: CliArgs) -> ExitCode {
    let broker = match MqttSettings::from_url(&args.broker, &format!("octoprint-sim-{}", std::process::id()))
        .context("--broker")
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let opts = OctoprintSimOptions {
        base_topic: args.base_topic,
        tick: args.tick,
        printer_data: args.printer_data,
        outcome: args.outcome,
        octoprint2: args.octoprint2,
        legacy_retained_events: args.legacy_retained_events,
        ..OctoprintSimOptions::new(broker)
    };
    let rest = match args.rest_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(RestSim { listener, api_key: args.api_key, silent: false }),
            Err(e) => {
                eprintln!("--rest-listen {addr}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    super::run_until_signal(|cancel| run_with_rest(opts, rest, cancel)).await
}

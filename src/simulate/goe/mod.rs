//! go-e Charger simulator: a stand-in for a HOME+ V3 charger on firmware 56.9 (with the 60.x
//! HTTP 400 quirk as an option) that speaks the local HTTP API v2 and the MQTT API exactly as
//! `shared/protocols/go-e.md` describes, so the go-e adapter can be tested without hardware and the
//! demo shows a plausible charging session.
//!
//! Split in the rumqtt style: [`ChargerState`] is the pure device (every API key, the session
//! lifecycle, the write rules) and knows nothing about sockets; [`run`] wires it to the broker (via
//! [`crate::mqtt`]) and to an axum HTTP server, and drives its once-per-tick logic.
//!
//! The initial key set is the real connect burst of `adapters/goe/fixtures/mqtt-traffic-056.9.log`,
//! and which keys are writable comes from the vendor key table `adapters/goe/fixtures/apikeys.tsv`,
//! so the simulator answers like the captures rather than like our guess of them.
//!
//! Files by role: `keys` (the key set and write rules), `session` (the device model), `mqtt` and
//! `http` (the two APIs), `config` (the `simulators:` entry and the command line).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod config;
mod http;
mod keys;
mod mqtt;
mod session;

pub use config::{CliArgs, GoeSimulatorConfig, run_cli};
pub(crate) use config::{start, validate};
use http::{HttpCtx, http_router};
use mqtt::{MqttSide, connection_changed, next_write};
use session::ChargerState;

/// How many ticks each phase of the endless demo session lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseTicks {
    /// No car plugged in (`car=1`).
    pub idle: u32,
    /// Car plugged in, waiting before the charger starts (`car=3`).
    pub waiting: u32,
    /// Ticks of actual charging (paused ticks, e.g. `frc=1`, do not count).
    pub charging: u32,
    /// Car full but still plugged in (`car=4`) before it is unplugged.
    pub complete: u32,
}

impl Default for PhaseTicks {
    fn default() -> Self {
        // Short enough that the demo shows a whole session in under a minute.
        PhaseTicks { idle: 8, waiting: 3, charging: 30, complete: 5 }
    }
}

/// Everything [`run`] needs; built by the CLI (`hlbridge simulate goe`) and the demo.
#[derive(Debug)]
pub struct GoeSimOptions {
    /// Broker to publish to; None = no MQTT side (HTTP only).
    pub broker: Option<crate::mqtt::MqttSettings>,
    /// 6-digit serial, e.g. "012345"; appears in the default topic prefix and in `sse`.
    pub serial: String,
    /// Full topic prefix incl. trailing slash; None = `"go-eCharger/<serial>/"`. (The pre-054.6 form
    /// is `"/go-eCharger/<serial>/"`, custom `mtp` prefixes replace it entirely.)
    pub topic_prefix: Option<String>,
    /// `mcr`: MQTT read-only. When true the charger ignores `<key>/set` (no write, no /result).
    pub read_only: bool,
    /// Listener for the HTTP API v2 (`/api/status`, `/api/set`); None = no HTTP.
    pub http: Option<tokio::net::TcpListener>,
    /// Mimic 60.x CORE/PRO: `/api/status?filter=` naming a key the device lacks returns HTTP 400
    /// (with the JSON body of the keys it has).
    pub http_400_on_unknown_filter: bool,
    /// Simulated-time tick (real charger: 1 s). Tests use e.g. 50 ms. `rbt` and the energy
    /// counters advance by exactly this much per tick.
    pub tick: Duration,
    /// How many ticks each session phase lasts.
    pub phase_ticks: PhaseTicks,
    /// RNG seed for noise, so runs are reproducible.
    pub seed: u64,
    /// When to connect to the bridge's broker (in-process simulators: once the bridge listens).
    pub wait_for_bridge: crate::simulate::WaitForBridge,
}

impl Default for GoeSimOptions {
    fn default() -> Self {
        GoeSimOptions {
            broker: None,
            serial: "012345".to_owned(),
            topic_prefix: None,
            read_only: false,
            http: None,
            http_400_on_unknown_filter: false,
            tick: Duration::from_secs(1),
            phase_ticks: PhaseTicks::default(),
            seed: 1,
            wait_for_bridge: Default::default(),
        }
    }
}

impl GoeSimOptions {
    /// The topic prefix in effect: the configured one, else the post-054.6 default.
    pub(crate) fn effective_prefix(&self) -> String {
        self.topic_prefix.clone().unwrap_or_else(|| format!("go-eCharger/{}/", self.serial))
    }
}

/// Runs the simulated charger until `cancel` fires: the logic tick, the MQTT side (when
/// `opts.broker` is set) and the HTTP API (when `opts.http` is set).
pub async fn run(opts: GoeSimOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let prefix = opts.effective_prefix();
    if !prefix.ends_with('/') {
        // Real chargers then subscribe to a malformed filter and get dropped (go-e.md §1.2).
        tracing::warn!(prefix, "go-e topic prefix should end with '/'");
    }
    let state = Arc::new(Mutex::new(ChargerState::from_options(&opts)));
    let tracker = TaskTracker::new();
    // The MQTT tasks get their own token: they must outlive `cancel` long enough to flush.
    let mqtt_cancel = CancellationToken::new();
    let mqtt = match &opts.broker {
        Some(settings) => {
            Some(crate::simulate::connect(settings, &opts.wait_for_bridge, &tracker, mqtt_cancel.clone())?)
        }
        None => None,
    };
    if let Some(listener) = opts.http {
        let addr = listener.local_addr().ok();
        let app = http_router(HttpCtx { state: state.clone(), strict_filter: opts.http_400_on_unknown_filter });
        let shutdown = cancel.clone().cancelled_owned();
        tracing::info!(serial = %opts.serial, addr = %addr.map(|a| a.to_string()).unwrap_or_default(),
            "simulated go-e HTTP API v2 listening");
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "simulated go-e HTTP server failed");
            }
        });
    }
    tracing::info!(serial = %opts.serial, prefix = %prefix, mqtt = mqtt.is_some(), "simulated go-e charger started");

    let mut io = MqttSide::new(mqtt.clone(), prefix, state.clone());
    // Subscribed before the first ConnAck, so the client sends the filter with the connect.
    let (mut watch, mut writes) = match &mqtt {
        Some(m) => (Some(m.watch()), Some(m.subscribe(&format!("{}+/set", io.prefix), 256).await)),
        None => (None, None),
    };
    let mut interval = tokio::time::interval(opts.tick.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    if let Some(w) = &mut watch {
        io.on_connection_change(w);
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => {
                let rebooted = {
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = s.tick(&mut rng);
                    if changed.contains(&"car") {
                        tracing::debug!(car = %s.get("car").map(|v| v.to_string()).unwrap_or_default(), "simulated car state changed");
                    }
                    s.take_rebooted()
                };
                if rebooted {
                    io.publish_burst();
                } else {
                    io.publish_changes();
                }
            }
            alive = connection_changed(&mut watch) => match (&mut watch, alive) {
                (Some(w), true) => io.on_connection_change(w),
                _ => watch = None,
            },
            msg = next_write(&mut writes) => match msg {
                Some(m) => io.handle_write(&m),
                None => writes = None,
            }
        }
    }

    if let Some(m) = &mqtt {
        m.flush_and_disconnect(Duration::from_secs(1)).await;
    }
    mqtt_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("simulated go-e tasks did not stop within 5 s");
    }
    tracing::info!(serial = %opts.serial, "simulated go-e charger stopped");
    Ok(())
}

/// Normalised keys the bridge's adapter reads (go-e.md §3); the simulator must have every one.
#[cfg(test)]
const NORMALISED_KEYS: &[&str] = &[
    "car",
    "alw",
    "acu",
    "amp",
    "frc",
    "psm",
    "tma",
    "err",
    "modelStatus",
    "rbt",
    "rbc",
    "rssi",
    "nrg",
    "eto",
    "wh",
    "utc",
    "loc",
    "fhz",
    "sse",
    "fna",
    "typ",
    "fwv",
    "var",
    "oem",
    "mcr",
];

#[cfg(test)]
mod tests;

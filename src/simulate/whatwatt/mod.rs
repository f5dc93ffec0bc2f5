//! whatwatt Go simulator: a stand-in gateway that speaks the local REST API, the single-consumer
//! SSE stream and (optionally) the templated MQTT client exactly as
//! `shared/protocols/whatwatt-go.md` describes, so the adapter can be tested and demonstrated
//! without hardware.
//!
//! Meter profiles start from real reports and keep their exact field sets: `mbus` is the
//! Landis+Gyr over M-Bus of the vendor docs (single phase, reactive phases without total, ~6.7 s),
//! `p1` the Ensor DSMR meter of the docs (~1 s, phantom L2/L3 voltages, a sub-meter without reading),
//! `kmp` the Kamstrup OMNIPOWER field capture of fw 2.8.2 (three phases, T1/T2, power factor,
//! ~4.2 s). The values then move: a random walk of the load per live phase, registers integrate.
//!
//! Behaviour reproduced on purpose: `date_time` is local time with a wrong `Z` (quirk 1); kW/kWh
//! units; the report's `id` counts per meter report; on a FREE licence `/report` and `/variables`
//! answer `404 License required` while `/live` and `/system` work; a new `/live` client ends the
//! previous stream; no heartbeats; auth none, Basic (`firmware` 1.2.15) or Digest MD5-sess with
//! `qop=auth`, nonce expiry answered with `stale=true`, `nc` replay refused; a meter status other
//! than `OK` stops reports, events and MQTT. [`SimControl`] lets tests inject faults (silence,
//! kicks, HTML error pages, broken JSON, raw stream bytes, nonce expiry) and read counters.
//!
//! The SSE body is written as raw bytes rather than with `axum::response::sse`, so the framing is
//! byte-for-byte the documented `event: live` / `data: {...}` / blank line, and faults can put
//! arbitrary bytes on the wire.
//!
//! The room, by role:
//! - this file: [`WhatwattSimOptions`], [`run`] (the meter tick, the MQTT publishing and the
//!   lifecycle), [`start`] (inside the bridge) and [`run_cli`];
//! - [`config`]: the simulator keys, the command-line arguments and their validation;
//! - [`gateway`]: the pure simulated device (reports, system, SSE events);
//! - [`template`]: the MQTT client's template variables and rendering;
//! - [`server`]: the REST API, the SSE stream and the Web UI protection;
//! - [`control`]: [`SimControl`], fault injection and counters for tests;
//! - `tests.rs`: unit tests.

mod config;
mod control;
mod gateway;
mod server;
mod template;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use time::{OffsetDateTime, UtcOffset};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::mqtt::{MqttHandle, MqttSettings, QoS};

pub(crate) use config::validate;
pub use config::{CliArgs, SimAuth, SimLicence, SimMeter, WhatwattSimConfig};
use config::{check_id, default_id, default_topic};
pub use control::{Fault, SimControl};
use gateway::Gateway;
use server::{Nonces, Shared};
use template::template_text;

/// Everything [`run`] needs.
pub struct WhatwattSimOptions {
    /// Listener for REST and SSE; `None` = MQTT only.
    pub listener: Option<TcpListener>,
    /// Web UI protection.
    pub auth: SimAuth,
    /// Web UI password.
    pub password: String,
    /// Licence tier.
    pub licence: SimLicence,
    /// Meter profile.
    pub meter: SimMeter,
    /// Meter report period; the profile's when `None`.
    pub interval: Option<Duration>,
    /// Gateway id.
    pub id: String,
    /// Broker for the templated MQTT client; `None` = no MQTT.
    pub broker: Option<MqttSettings>,
    /// MQTT topic.
    pub topic: String,
    /// MQTT template text (see [`SimMqttConfig::template`]).
    pub template: String,
    /// MQTT publish period.
    pub mqtt_interval: Duration,
    /// Lifetime of a Digest nonce (the gateway's is undocumented; 5 minutes here).
    pub nonce_ttl: Duration,
    /// The gateway's time zone, for the local `date_time` fields.
    pub utc_offset: UtcOffset,
    /// RNG seed.
    pub seed: u64,
    /// Fault injection and counters.
    pub control: SimControl,
    /// Announce the gateway over mDNS ([`crate::discover::Announcement`]) while it runs; needs
    /// `listener`.
    /// When to connect to the bridge's broker (in-process simulators: once the bridge listens).
    pub wait_for_bridge: crate::simulate::WaitForBridge,
    #[cfg(feature = "mdns")]
    pub mdns: bool,
}

impl Default for WhatwattSimOptions {
    fn default() -> Self {
        WhatwattSimOptions {
            listener: None,
            auth: SimAuth::None,
            password: "whatwatt".into(),
            licence: SimLicence::Plus,
            meter: SimMeter::Kmp,
            interval: None,
            id: default_id(),
            broker: None,
            topic: default_topic(),
            template: "bridge".into(),
            mqtt_interval: Duration::from_secs(30),
            nonce_ttl: Duration::from_secs(300),
            utc_offset: UtcOffset::from_hms(2, 0, 0).unwrap_or(UtcOffset::UTC),
            seed: 1,
            control: SimControl::default(),
            wait_for_bridge: Default::default(),
            #[cfg(feature = "mdns")]
            mdns: false,
        }
    }
}

/// Runs the simulated gateway until `cancel` fires.
pub async fn run(opts: WhatwattSimOptions, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut gateway = Gateway::new(&opts);
    // The first report exists before anyone asks: nothing is served with the capture's old clock.
    gateway.tick(OffsetDateTime::now_utc());
    let interval = gateway.interval();
    let id = opts.id.clone();
    let (events, _) = broadcast::channel(64);
    let (generation, _) = watch::channel(0u64);
    let shared = Shared {
        gateway: Arc::new(Mutex::new(gateway)),
        control: opts.control.clone(),
        auth: opts.auth,
        password: opts.password.clone().into(),
        licence: opts.licence,
        realm: format!("whatwatt-{id}").into(),
        nonces: Arc::new(Mutex::new(Nonces {
            issued: HashMap::new(),
            opaque: format!("{:016x}", rand::random::<u64>()),
        })),
        nonce_ttl: opts.nonce_ttl,
        events,
        generation,
        mqtt_connected: Arc::new(Mutex::new(opts.broker.as_ref().map(|_| false))),
        cancel: cancel.clone(),
    };
    #[cfg(feature = "mdns")]
    let announcement = match (opts.mdns, opts.listener.as_ref().and_then(|l| l.local_addr().ok())) {
        (true, Some(addr)) => Some(
            crate::discover::Announcement::whatwatt_go(&id, addr)
                .map_err(|e| e.context("cannot announce over mDNS"))?,
        ),
        (true, None) => {
            tracing::warn!("simulated whatwatt: no HTTP listener, nothing to announce over mDNS");
            None
        }
        (false, _) => None,
    };
    let tracker = TaskTracker::new();
    let mqtt_cancel = CancellationToken::new();
    let mqtt = match (&opts.broker, opts.licence) {
        (Some(b), SimLicence::Plus) => {
            Some(crate::simulate::connect(b, &opts.wait_for_bridge, &tracker, mqtt_cancel.clone())?)
        }
        (Some(_), SimLicence::Free) => {
            tracing::warn!("simulated whatwatt: FREE licence, the MQTT client does not publish");
            None
        }
        (None, _) => None,
    };
    if let Some(listener) = opts.listener {
        let addr = listener.local_addr().ok();
        let app = server::router(shared.clone());
        let shutdown = cancel.clone().cancelled_owned();
        tracing::info!(addr = %addr.map(|a| a.to_string()).unwrap_or_default(), id = %id, auth = ?opts.auth, licence = ?opts.licence, meter = ?opts.meter,
            "simulated whatwatt Go listening (REST /api/v1/{{system,report,variables}}, SSE /api/v1/live)");
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "simulated whatwatt HTTP server failed");
            }
        });
    }
    let template = template_text(&opts.template).to_owned();
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish = tokio::time::interval(opts.mqtt_interval.max(Duration::from_millis(10)));
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch_conn = mqtt.as_ref().map(MqttHandle::watch);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {
                let status = shared.control.meter_status();
                if shared.control.0.silent.load(Ordering::SeqCst) || status != "OK" {
                    continue;
                }
                let event = {
                    let mut g = shared.lock();
                    g.tick(OffsetDateTime::now_utc());
                    g.live_event()
                };
                let _ = shared.events.send(Bytes::from(event));
            }
            _ = publish.tick(), if mqtt.is_some() => {
                let status = shared.control.meter_status();
                // The gateway publishes only while a meter is connected.
                if status != "OK" || shared.control.0.silent.load(Ordering::SeqCst) {
                    continue;
                }
                if let Some(m) = &mqtt {
                    let payload = shared.lock().render(&template, &status);
                    m.publish(opts.topic.clone(), payload, QoS::AtMostOnce, false);
                }
            }
            changed = async { match &mut watch_conn { Some(w) => w.changed().await.is_ok(), None => std::future::pending().await } } => {
                match (&mut watch_conn, changed) {
                    (Some(w), true) => {
                        let c = w.borrow_and_update().connected;
                        *shared.mqtt_connected.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
                    }
                    _ => watch_conn = None,
                }
            }
        }
    }
    // Like a gateway going away: the goodbye first, then the HTTP server.
    #[cfg(feature = "mdns")]
    if let Some(a) = announcement {
        a.stop().await;
    }
    if let Some(m) = &mqtt {
        m.flush_and_disconnect(Duration::from_secs(1)).await;
    }
    mqtt_cancel.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        tracing::warn!("simulated whatwatt tasks did not stop within 5 s");
    }
    tracing::info!(id = %id, "simulated whatwatt Go stopped");
    Ok(())
}

/// Starts the simulator inside the bridge process.
pub(crate) async fn start(
    name: &str,
    cfg: &WhatwattSimConfig,
    config: &crate::simulate::BridgeBroker,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let listener = super::bind(cfg.listen, &format!("simulators.{name}.listen")).await?;
    let mut opts = WhatwattSimOptions {
        listener: Some(listener),
        auth: cfg.auth,
        password: cfg.password.expose().to_owned(),
        licence: cfg.licence,
        meter: cfg.meter,
        interval: cfg.interval.map(|d| d.0),
        id: cfg.id.clone(),
        ..Default::default()
    };
    if let Some(m) = &cfg.mqtt {
        opts.broker = Some(super::broker_settings(m.broker.as_deref(), config, &format!("whatwatt-{}", cfg.id))?);
        opts.topic = m.topic.clone();
        opts.template = m.template.clone();
        opts.mqtt_interval = m.interval.0;
        opts.wait_for_bridge = config.wait_for(m.broker.as_deref());
    }
    super::spawn_named(tracker, name, run(opts, cancel));
    Ok(())
}

/// Runs the simulator from the command line until Ctrl-C.
pub async fn run_cli(args: CliArgs) -> ExitCode {
    if !check_id(&args.id) {
        eprintln!("--id: must be 12 upper-case hex digits");
        return ExitCode::from(2);
    }
    let broker = match &args.broker {
        Some(url) => match MqttSettings::from_url(url, &format!("whatwatt-{}", args.id)) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("--broker: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("--listen {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let opts = WhatwattSimOptions {
        listener: Some(listener),
        auth: args.auth,
        password: args.password,
        licence: args.licence,
        meter: args.meter,
        interval: args.interval,
        id: args.id,
        broker,
        topic: args.topic,
        template: args.template,
        mqtt_interval: args.mqtt_interval,
        #[cfg(feature = "mdns")]
        mdns: args.mdns,
        ..Default::default()
    };
    super::run_until_signal(|cancel| run(opts, cancel)).await
}

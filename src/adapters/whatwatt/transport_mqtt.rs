//! The whatwatt `mqtt` transport: reads the template payloads the gateway's own MQTT client publishes
//! to our broker, after an optional identity and licence probe over REST.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::Gateway;
use super::config::WhatwattConfig;
use super::ingest::Ingest;
use crate::adapters::log_once::LogOnce;
use crate::untrusted::clip;

/// What the identity probe found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probed {
    /// Answered (or answered with something that is not worth asking again).
    Done,
    /// The gateway could not be reached: asked again once its template messages show it is up.
    Unreachable,
}

/// How soon after an unreachable probe a template message may trigger the next one; doubled
/// after every further failure (the URL may simply be wrong while MQTT works) up to
/// [`PROBE_AGAIN_MAX`].
const PROBE_AGAIN_AFTER: Duration = Duration::from_secs(5);
const PROBE_AGAIN_MAX: Duration = Duration::from_secs(600);

pub(super) async fn run_mqtt(
    cfg: WhatwattConfig,
    gateway: Option<Gateway>,
    mut ingest: Ingest,
    cancel: CancellationToken,
) {
    let device = ingest.device().clone();
    let topic = cfg.topic.clone().unwrap_or_default();
    device.set_detail("transport", "mqtt");
    device.set_detail("topic", topic.clone());
    let mut rx = crate::adapters::ingest::subscribe(&device, &[&topic], 256).await;
    let mut logged = LogOnce::default();
    let mut probed = match &gateway {
        Some(g) => match probe(g, &mut ingest, &topic, &cancel, &mut logged).await {
            Some(p) => p,
            None => return,
        },
        None => Probed::Done,
    };
    let mut probed_at = Instant::now();
    let mut wait = PROBE_AGAIN_AFTER;
    // Registered once, not once per message (each fresh `cancelled()` locks the token twice).
    let mut cancelled = std::pin::pin!(cancel.cancelled());
    loop {
        tokio::select! {
            _ = &mut cancelled => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                ingest.mqtt_message(&msg);
                // The gateway publishes, so it is up now: ask for its identity again (the
                // messages meanwhile wait in the subscription's queue).
                if let Some(g) = gateway.as_ref().filter(|_| probed == Probed::Unreachable && probed_at.elapsed() >= wait) {
                    probed_at = Instant::now();
                    wait = (wait * 2).min(PROBE_AGAIN_MAX);
                    match probe(g, &mut ingest, &topic, &cancel, &mut logged).await {
                        Some(p) => probed = p,
                        None => break,
                    }
                }
            }
        }
    }
}

/// `GET /api/v1/system` once (a failure logged once per error text); `None` when cancelled.
async fn probe(
    g: &Gateway,
    ingest: &mut Ingest,
    topic: &str,
    cancel: &CancellationToken,
    logged: &mut LogOnce,
) -> Option<Probed> {
    let device = ingest.device().clone();
    let answer = tokio::select! {
        _ = cancel.cancelled() => return None,
        p = g.get("/api/v1/system") => p,
    };
    match answer {
        Ok(a) => match ingest.system_body(a.status, &a.content_type, &a.body) {
            Ok(info) => {
                device.set_detail("auth", g.auth_name());
                if info.licence_free() {
                    tracing::warn!(device = %device.id(),
                        "the gateway's licence is FREE: its MQTT client needs Plus and will not publish; use `transport: sse`");
                } else if info.mqtt_client.is_some_and(|(enabled, _)| !enabled) {
                    tracing::warn!(device = %device.id(),
                        "the gateway's MQTT client is disabled (Web UI: MQTT settings); nothing will arrive on {topic}");
                }
            }
            Err(e) => {
                if logged.first_of("probe", &e) {
                    tracing::warn!(device = %device.id(), error = %clip(&e), "whatwatt identity probe failed")
                }
            }
        },
        Err(e) => {
            ingest.count_transport_error(&e);
            let e = e.to_string();
            if logged.first_of("probe", &e) {
                tracing::warn!(device = %device.id(), error = %clip(&e), "whatwatt identity probe failed; asked again once the gateway publishes");
            }
            return Some(Probed::Unreachable);
        }
    }
    Some(Probed::Done)
}

//! The whatwatt `mqtt` transport: reads the template payloads the gateway's own MQTT client publishes
//! to our broker, after an optional identity and licence probe over REST.

use tokio_util::sync::CancellationToken;

use super::client::Gateway;
use super::config::WhatwattConfig;
use super::ingest::Ingest;
use crate::untrusted::clip;

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
    if let Some(g) = &gateway {
        let probe = tokio::select! {
            _ = cancel.cancelled() => return,
            p = g.get("/api/v1/system") => p,
        };
        match probe {
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
                    tracing::warn!(device = %device.id(), error = %clip(&e.to_string()), "whatwatt identity probe failed")
                }
            },
            Err(e) => {
                ingest.count_transport_error(&e);
                tracing::warn!(device = %device.id(), error = %clip(&e.to_string()), "whatwatt identity probe failed")
            }
        }
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                ingest.mqtt_message(&msg);
            }
        }
    }
}

//! The HTTP endpoint: `/metrics` (OpenMetrics or the classic text format, negotiated; contract §6),
//! `/healthz` (process alive) and `/readyz` (JSON: MQTT state and every device's availability,
//! last-seen and reason). The listener and the shutdown signal are injected, so tests bind
//! `127.0.0.1:0`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router as Axum;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Format, help, value_family};
use crate::model::{self, Value};
use crate::mqtt::MqttHandle;
use crate::router::Router;

/// What the handlers need.
#[derive(Clone)]
pub(crate) struct HttpState {
    /// Health metrics plus the device collector.
    pub registry: Arc<Registry>,
    /// Device state for `/readyz`.
    pub router: Arc<Router>,
    /// MQTT state for `/readyz`.
    pub mqtt: MqttHandle,
}

/// Serves until `cancel`.
pub(crate) async fn serve(listener: TcpListener, state: HttpState, cancel: CancellationToken) -> std::io::Result<()> {
    let app = Axum::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await
}

async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    ([(header::CONTENT_TYPE, format.content_type())], crate::metrics::render_as(&s.registry, format))
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let conn = s.mqtt.state();
    let mut devices = serde_json::Map::new();
    for d in s.router.snapshot() {
        let mut o = serde_json::json!({
            "adapter": d.adapter.as_str(),
            "kind": d.kind.as_str(),
            "availability": if d.online { "online" } else { "offline" },
            "topic": d.base,
        });
        if let Some(r) = &d.reason {
            o["reason"] = r.clone().into();
        }
        if let Some(t) = d.last_seen {
            o["last_seen"] = model::ts_string(t.into()).into();
            o["age_seconds"] = ((t.elapsed().map(|e| e.as_secs_f64()).unwrap_or(0.0) * 10.0).round() / 10.0).into();
        }
        if let Some(ts) = d.ts {
            o["reading_ts"] = model::ts_string(ts).into();
        }
        if d.identity != Default::default() {
            o["identity"] = serde_json::to_value(&d.identity).unwrap_or_default();
        }
        if !d.details.is_empty() {
            o["details"] = serde_json::to_value(&d.details).unwrap_or_default();
        }
        devices.insert(d.id, o);
    }
    let readiness = s.mqtt.readiness();
    let mut mqtt = serde_json::json!({
        "connected": conn.connected,
        "subscribed": conn.subscribed,
        "connections": conn.generation,
        "commands": readiness.commands,
    });
    if let Some(reason) = &readiness.reason {
        mqtt["reason"] = reason.clone().into();
    }
    let body = serde_json::json!({
        "status": if readiness.ready { "ready" } else { "not_ready" },
        "mqtt": mqtt,
        "devices": devices,
    });
    let code = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string())
}

/// Renders device values, `hlbridge_device_up` and `hlbridge_device_last_seen_timestamp_seconds`
/// from the router at scrape time. Offline devices drop out of the value families.
pub(crate) struct DeviceCollector(pub Arc<Router>);

impl std::fmt::Debug for DeviceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCollector")
    }
}

type Labels = Vec<(&'static str, String)>;

enum Sample {
    Gauge(Labels, f64),
    Info(Labels),
}

impl Collector for DeviceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        let mut families: std::collections::BTreeMap<Cow<'static, str>, Vec<Sample>> = Default::default();
        let mut up = Vec::new();
        let mut seen = Vec::new();
        for d in &snapshot {
            let base: Labels = vec![
                ("device", d.id.clone()),
                ("adapter", d.adapter.as_str().to_owned()),
                ("kind", d.kind.as_str().to_owned()),
            ];
            up.push((vec![("device", d.id.clone())], i64::from(d.online)));
            if let Some(t) = d.last_seen {
                seen.push((vec![("device", d.id.clone())], unix(t)));
            }
            if !d.online {
                continue;
            }
            for (q, v) in &d.values {
                let fam = q.family();
                let Some(name) = value_family(*q) else { continue };
                let mut labels = base.clone();
                if let Some((label, value)) = q.def().variant {
                    labels.push((label.name(), value.to_owned()));
                }
                if q.def().target {
                    labels.push(("target", "true".into()));
                }
                let sample = match v {
                    Value::Number(n) => Sample::Gauge(labels, model::round_to(*n, fam.decimals)),
                    Value::Bool(b) => Sample::Gauge(labels, f64::from(u8::from(*b))),
                    Value::Text(t) => {
                        labels.push(("value", t.to_string()));
                        Sample::Info(labels)
                    }
                };
                families.entry(name).or_default().push(sample);
            }
        }
        for (name, samples) in &families {
            let help = help(name).unwrap_or(name);
            let is_info = samples.iter().all(|s| matches!(s, Sample::Info(_)));
            if is_info {
                let stem = name.strip_suffix("_info").unwrap_or(name);
                let mut m = encoder.encode_descriptor(stem, help, None, MetricType::Info)?;
                for s in samples {
                    if let Sample::Info(l) = s {
                        m.encode_info(l)?;
                    }
                }
            } else {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for s in samples {
                    if let Sample::Gauge(l, v) = s {
                        m.encode_family(l)?.encode_gauge(v)?;
                    }
                }
            }
        }
        let mut m = encoder.encode_descriptor(
            "hlbridge_device_up",
            "Device online (reachable and fresh) 1, else 0",
            None,
            MetricType::Gauge,
        )?;
        for (l, v) in &up {
            m.encode_family(l)?.encode_gauge(v)?;
        }
        let mut m = encoder.encode_descriptor(
            "hlbridge_device_last_seen_timestamp_seconds",
            "Unix time of the device's last fresh message",
            None,
            MetricType::Gauge,
        )?;
        for (l, v) in &seen {
            m.encode_family(l)?.encode_gauge(v)?;
        }
        Ok(())
    }
}

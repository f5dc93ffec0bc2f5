//! Prometheus metrics (contract §6): the bridge's own health counters, registered once in a
//! per-process [`Registry`], plus a collector that renders device values straight from the router's
//! state at scrape time, so the hot path pays nothing for device gauges and stale devices simply
//! drop out of the value families.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set of per-device counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    /// The configured device id.
    pub device: String,
}

/// Label set of parse errors and rejected readings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceReasonLabel {
    /// The configured device id.
    pub device: String,
    /// A short machine-readable reason (`invalid_json`, `bad_type`, `http_status`).
    pub reason: String,
}

/// Label set of counters that exist per traffic direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `in` (from the broker) or `out` (to the broker).
    pub direction: &'static str,
}

/// The bridge's health metrics. Counters are cheap `Arc` handles; adapters clone the per-device
/// ones once at start-up.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Device messages received (MQTT publishes, HTTP responses, SSE events), per device.
    pub messages_received: Family<DeviceLabel, Counter>,
    /// MQTT publishes handed to the client.
    pub messages_published: Counter,
    /// Payloads that could not be understood, by device and reason.
    pub parse_errors: Family<DeviceReasonLabel, Counter>,
    /// Vendor keys the adapter does not know (firmware drift), per device.
    pub unknown_keys: Family<DeviceLabel, Counter>,
    /// Whether the MQTT connection is up (0/1).
    pub mqtt_connected: Gauge,
    /// Successful MQTT (re)connections.
    pub mqtt_connections: Counter,
    /// Failed MQTT connection attempts and lost connections.
    pub mqtt_connection_errors: Counter,
    /// Publishes waiting in the outbound queue.
    pub publish_queue_depth: Gauge,
    /// Publishes dropped because the outbound queue was full.
    pub publish_dropped: Counter,
    /// Incoming device messages dropped because an adapter could not keep up.
    pub ingest_dropped: Family<DeviceLabel, Counter>,
    /// Commands received on `<quantity>/set`, by device and outcome.
    pub commands: Family<DeviceReasonLabel, Counter>,
    /// Readings the counter guard rejected, by device and reason.
    pub readings_rejected: Family<DeviceReasonLabel, Counter>,
    /// MQTT messages over `max_packet_size`, dropped instead of sent or delivered.
    pub mqtt_oversized: Family<DirectionLabel, Counter>,
}

impl Metrics {
    /// Registers every health family in `registry` and returns the shared handle.
    pub fn register(registry: &mut Registry) -> Arc<Metrics> {
        let m = Metrics::default();
        registry.register("hlbridge_messages_received", "Device messages received", m.messages_received.clone());
        registry.register(
            "hlbridge_messages_published",
            "MQTT messages handed to the client",
            m.messages_published.clone(),
        );
        registry.register(
            "hlbridge_parse_errors",
            "Device payloads that could not be understood",
            m.parse_errors.clone(),
        );
        registry.register("hlbridge_unknown_keys", "Vendor keys the adapter does not know", m.unknown_keys.clone());
        registry.register("hlbridge_mqtt_connected", "MQTT connection up (1) or down (0)", m.mqtt_connected.clone());
        registry.register(
            "hlbridge_mqtt_connections",
            "Successful MQTT connections (ConnAck received)",
            m.mqtt_connections.clone(),
        );
        registry.register(
            "hlbridge_mqtt_connection_errors",
            "Failed MQTT connection attempts and lost connections",
            m.mqtt_connection_errors.clone(),
        );
        registry.register(
            "hlbridge_publish_queue_depth",
            "Publishes waiting in the outbound queue",
            m.publish_queue_depth.clone(),
        );
        registry.register(
            "hlbridge_publish_dropped",
            "Publishes dropped because the outbound queue was full",
            m.publish_dropped.clone(),
        );
        registry.register(
            "hlbridge_ingest_dropped",
            "Device messages dropped because the adapter could not keep up",
            m.ingest_dropped.clone(),
        );
        registry.register("hlbridge_commands", "Commands received on <quantity>/set", m.commands.clone());
        registry.register(
            "hlbridge_readings_rejected",
            "Readings rejected as implausible, by reason",
            m.readings_rejected.clone(),
        );
        registry.register(
            "hlbridge_mqtt_oversized",
            "MQTT messages over the packet size limit, dropped instead of sent (out) or delivered (in)",
            m.mqtt_oversized.clone(),
        );
        for direction in ["in", "out"] {
            m.mqtt_oversized(direction);
        }
        Arc::new(m)
    }

    /// The oversized-message counter of `direction` (`in` or `out`).
    pub fn mqtt_oversized(&self, direction: &'static str) -> Counter {
        self.mqtt_oversized.get_or_create(&DirectionLabel { direction }).clone()
    }

    /// A metrics set registered nowhere (tests, simulators).
    pub fn detached() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The per-device counter handles an adapter keeps for its hot path.
    pub fn device(&self, device: &str) -> DeviceCounters {
        let label = DeviceLabel { device: device.to_owned() };
        DeviceCounters {
            device: device.to_owned(),
            received: self.messages_received.get_or_create(&label).clone(),
            unknown_keys: self.unknown_keys.get_or_create(&label).clone(),
            ingest_dropped: self.ingest_dropped.get_or_create(&label).clone(),
            parse_errors: self.parse_errors.clone(),
            rejected: self.readings_rejected.clone(),
        }
    }
}

/// Counter handles for one device.
#[derive(Debug, Clone)]
pub struct DeviceCounters {
    /// Device id, for the labelled families created on first use.
    device: String,
    /// `hlbridge_messages_received_total{device}`.
    pub received: Counter,
    /// `hlbridge_unknown_keys_total{device}`.
    pub unknown_keys: Counter,
    /// `hlbridge_ingest_dropped_total{device}`.
    pub ingest_dropped: Counter,
    /// The parse-error family (labelled by reason on use).
    parse_errors: Family<DeviceReasonLabel, Counter>,
    /// The rejected-readings family (labelled by reason on use).
    rejected: Family<DeviceReasonLabel, Counter>,
}

impl DeviceCounters {
    /// Counts a parse error with `reason`.
    pub fn parse_error(&self, reason: &str) {
        self.parse_errors
            .get_or_create(&DeviceReasonLabel { device: self.device.clone(), reason: label(reason) })
            .inc();
    }

    /// Counts a reading rejected as implausible.
    pub fn rejected(&self, reason: &str) {
        self.rejected.get_or_create(&DeviceReasonLabel { device: self.device.clone(), reason: label(reason) }).inc();
    }
}

/// The most bytes of a `reason` label: reasons are short words the code spells, and a label must
/// never carry unbounded text even if one day a reason quotes input.
const MAX_REASON_LABEL: usize = 64;

fn label(reason: &str) -> String {
    crate::untrusted::truncated(reason, MAX_REASON_LABEL).unwrap_or_else(|| reason.to_owned())
}

/// Content type of the `/metrics` answer.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the registry as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
        out.push_str("# encoding failed\n# EOF\n");
    }
    out
}

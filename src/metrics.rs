//! Prometheus metrics (contract §6): the bridge's own health counters, registered once in a
//! per-process [`Registry`], plus a collector that renders device values straight from the router's
//! state at scrape time, so the hot path pays nothing for device gauges and stale devices simply
//! drop out of the value families.
//!
//! The value families follow one rule: summing a family over its labels gives something meaningful.
//! So per-phase and per-tariff variants live in families of their own (`hlbridge_phase_power_watts`,
//! `hlbridge_tariff_energy_import_kilowatt_hours`) beside the total, and free text never becomes a
//! label value (a new series per reading); it stays on MQTT.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::types::AdapterKind;
use crate::model::{Quantity, ValueKind, VariantLabel};

/// Label set of per-device counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeviceLabel {
    /// The configured device id.
    pub device: String,
}

/// Label set of parse errors and rejected readings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeviceReasonLabel {
    /// The configured device id.
    pub device: String,
    /// A short machine-readable reason (`invalid_json`, `bad_type`, `http_status`).
    pub reason: String,
}

/// Label set of counters that exist per traffic direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirectionLabel {
    /// `in` (from the broker) or `out` (to the broker).
    pub direction: &'static str,
}

/// Label set of the config-reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The bridge's health metrics. Counters are cheap `Arc` handles; adapters clone the per-device
/// ones once at start-up.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Device messages received (MQTT publishes, HTTP responses, SSE events), per device.
    pub(crate) messages_received: Family<DeviceLabel, Counter>,
    /// MQTT publishes handed to the client.
    pub messages_published: Counter,
    /// Payloads that could not be understood, by device and reason.
    pub(crate) parse_errors: Family<DeviceReasonLabel, Counter>,
    /// Vendor keys the adapter does not know (firmware drift), per device.
    pub(crate) unknown_keys: Family<DeviceLabel, Counter>,
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
    pub(crate) ingest_dropped: Family<DeviceLabel, Counter>,
    /// Commands received on `<quantity>/set`, by device and outcome.
    pub(crate) commands: Family<DeviceReasonLabel, Counter>,
    /// Readings the counter guard rejected, by device and reason.
    pub(crate) readings_rejected: Family<DeviceReasonLabel, Counter>,
    /// MQTT messages over `max_packet_size`, dropped instead of sent or delivered.
    pub(crate) mqtt_oversized: Family<DirectionLabel, Counter>,
    /// Times the MQTT connection fell behind the broker and began holding reads (`mqtt::coalesce`):
    /// says the bridge ran under a flood, and that messages waited up to 1 ms longer then.
    pub(crate) mqtt_read_holds: Counter,
    /// Config reloads (SIGHUP, `--watch`) by outcome.
    pub(crate) config_reloads: Family<ResultLabel, Counter>,
    /// Whether the last reload was applied (1) or refused (0); 1 before any reload.
    pub config_last_reload_successful: Gauge,
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
        registry.register(
            "hlbridge_mqtt_read_holds",
            "Times the MQTT connection fell behind the broker and held reads until 4 KiB or 1 ms had gathered",
            m.mqtt_read_holds.clone(),
        );
        registry.register(
            "hlbridge_config_reloads",
            "Config reloads (SIGHUP or --watch) by result: ok (applied) or error (refused, old config kept)",
            m.config_reloads.clone(),
        );
        registry.register(
            "hlbridge_config_last_reload_successful",
            "Whether the last config reload was applied (1) or refused (0); 1 before any reload",
            m.config_last_reload_successful.clone(),
        );
        for result in ["ok", "error"] {
            m.config_reloads(result);
        }
        m.config_last_reload_successful.set(1);
        Arc::new(m)
    }

    /// The config-reload counter of `result` (`ok` or `error`).
    pub(crate) fn config_reloads(&self, result: &'static str) -> Counter {
        self.config_reloads.get_or_create(&ResultLabel { result }).clone()
    }

    /// The oversized-message counter of `direction` (`in` or `out`).
    pub(crate) fn mqtt_oversized(&self, direction: &'static str) -> Counter {
        self.mqtt_oversized.get_or_create(&DirectionLabel { direction }).clone()
    }

    /// A metrics set registered nowhere (tests, simulators).
    pub fn detached() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Creates every health series of a configured device at 0, before anything happens: the
    /// per-device counters, the parse-error and rejection reasons its adapter and the counter guard
    /// can count, and both command outcomes when it accepts commands. A series that appears only
    /// with its first increment hides that increment from `rate()`/`increase()` and leaves alerts
    /// without data until then. Reasons outside the catalog still count; they just start on first use.
    pub(crate) fn start_device(&self, device: &str, adapter: AdapterKind, accepts_commands: bool) -> DeviceCounters {
        let counters = self.device(device);
        let labelled = |reason: &str| DeviceReasonLabel { device: device.to_owned(), reason: reason.to_owned() };
        let (parse_errors, rejections) = known_reasons(adapter);
        for reason in parse_errors.iter().chain(ROUTER_PARSE_ERRORS) {
            drop(self.parse_errors.get_or_create(&labelled(reason)));
        }
        for reason in rejections.iter().chain(GUARD_REJECTIONS).chain(ROUTER_REJECTIONS) {
            drop(self.readings_rejected.get_or_create(&labelled(reason)));
        }
        if accepts_commands {
            for outcome in COMMAND_OUTCOMES {
                drop(self.commands.get_or_create(&labelled(outcome)));
            }
        }
        counters
    }

    /// The per-device counter handles an adapter keeps for its hot path.
    pub(crate) fn device(&self, device: &str) -> DeviceCounters {
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

/// Outcomes of `<quantity>/set` commands (`hlbridge_commands_total{reason}`).
pub(crate) const COMMAND_OUTCOMES: &[&str] = &["ok", "error"];

/// Reasons the counter guard rejects readings with, for every device (`guard::Rejection::reason`).
const GUARD_REJECTIONS: &[&str] = &["counter_decrease", "counter_jump", "counter_not_finite", "out_of_range"];

/// Reasons the router itself counts for every device: implausible values (`readings_rejected`) and
/// device text cut to its bound (`parse_errors`).
const ROUTER_REJECTIONS: &[&str] = &["not_finite", "out_of_range"];
const ROUTER_PARSE_ERRORS: &[&str] = &["text_too_long"];

/// The parse-error and rejection reasons each adapter counts, so their series exist from start-up.
/// A unit test reads the adapters' sources and fails when one counts a reason missing here.
fn known_reasons(adapter: AdapterKind) -> (&'static [&'static str], &'static [&'static str]) {
    match adapter {
        AdapterKind::Goe => (
            &[
                "bad_array_element",
                "bad_type",
                "body_too_large",
                "http_status",
                "implausible_temperature",
                "invalid_json",
                "negative_energy",
            ],
            &[],
        ),
        AdapterKind::Whatwatt => (
            &[
                "bad_type",
                "body_too_large",
                "html_page",
                "http_status",
                "invalid_json",
                "sse_bad_line",
                "sse_kicked",
                "sse_overflow",
                "template_unresolved",
            ],
            &[],
        ),
        AdapterKind::AiOnTheEdge => (
            &["bad_number", "invalid_json", "malformed_json", "not_utf8", "unknown_connection_state"],
            &["device_negative_rate", "device_rate_too_high", "device_unreadable_digits"],
        ),
        AdapterKind::Octoprint => (
            &["bad_sensor_name", "bad_status", "bad_timestamp", "bad_type", "future_timestamp", "invalid_json"],
            &["out_of_order", "retained_event", "too_many_sensors"],
        ),
    }
}

/// Counter handles for one device.
#[derive(Debug, Clone)]
pub(crate) struct DeviceCounters {
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
    pub(crate) fn parse_error(&self, reason: &str) {
        self.parse_errors
            .get_or_create(&DeviceReasonLabel { device: self.device.clone(), reason: label(reason) })
            .inc();
    }

    /// Counts a reading rejected as implausible.
    pub(crate) fn rejected(&self, reason: &str) {
        self.rejected.get_or_create(&DeviceReasonLabel { device: self.device.clone(), reason: label(reason) }).inc();
    }
}

/// The most bytes of a `reason` label: reasons are short words the code spells, and a label must
/// never carry unbounded text even if one day a reason quotes input.
const MAX_REASON_LABEL: usize = 64;

fn label(reason: &str) -> String {
    crate::untrusted::truncated(reason, MAX_REASON_LABEL).unwrap_or_else(|| reason.to_owned())
}

/// Content type of the OpenMetrics answer.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the classic Prometheus text format, the answer when the scraper does not ask for
/// OpenMetrics (curl, older scrapers, `promtool check metrics`).
pub(crate) const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0 text (`info` families, `# EOF`).
    OpenMetrics,
    /// The classic text format 0.0.4.
    Classic,
}

impl Format {
    /// Picks the format from an `Accept` header the way exporters do: OpenMetrics when the scraper
    /// lists `application/openmetrics-text` with a weight at least that of `text/plain`, the classic
    /// format otherwise (including no header at all).
    pub(crate) fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Classic };
        let mut openmetrics_q: f32 = 0.0;
        let mut plain_q: f32 = 0.0;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics_q = openmetrics_q.max(q),
                "text/plain" => plain_q = plain_q.max(q),
                _ => {}
            }
        }
        if openmetrics_q > 0.0 && openmetrics_q >= plain_q { Format::OpenMetrics } else { Format::Classic }
    }

    /// The `Content-Type` of an answer in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Classic => CLASSIC_CONTENT_TYPE,
        }
    }
}

/// Renders the registry as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
        out.push_str("# encoding failed\n# EOF\n");
    }
    out
}

/// Renders the registry in `format`.
pub(crate) fn render_as(registry: &Registry, format: Format) -> String {
    let openmetrics = render(registry);
    match format {
        Format::OpenMetrics => openmetrics,
        Format::Classic => openmetrics_to_classic(&openmetrics),
    }
}

/// Converts prometheus-client's OpenMetrics text (the only text it encodes) to the classic format
/// 0.0.4. The samples are the same; what differs is the metadata: a counter family is named with its
/// `_total` suffix, an `info` family becomes a gauge named `<name>_info` (its samples are already
/// `<name>_info{...} 1`), `stateset` becomes a gauge and `unknown` `untyped`; `# UNIT`, `# EOF` and
/// `_created` samples have no classic form and are left out (the bridge records no exemplars).
pub(crate) fn openmetrics_to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes HELP before TYPE; the HELP's family name depends on the type.
    let mut pending_help: Option<(&str, &str)> = None;
    let mut counter_family: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, text));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            counter_family = None;
            let (classic_name, classic_kind) = match kind {
                "counter" => {
                    counter_family = Some(name);
                    (format!("{name}_total"), "counter")
                }
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_owned(), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((help_name, text)) = pending_help.take()
                && help_name == name
            {
                out.push_str("# HELP ");
                out.push_str(&classic_name);
                out.push(' ');
                out.push_str(text);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&classic_name);
            out.push(' ');
            out.push_str(classic_kind);
            out.push('\n');
        } else if line.starts_with('#') || line.is_empty() {
            // `# UNIT`, `# EOF`: no classic counterpart.
        } else {
            if let Some(family) = counter_family
                && line.strip_prefix(family).is_some_and(|rest| rest.starts_with("_created"))
            {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Text quantities whose words come from a device's closed code table (go-e `err` and
/// `modelStatus`; an unlisted code prints as `code_<n>`), so they are bounded like enums and keep
/// their info family. Every other text quantity (raw digits, error texts, file names) changes with
/// the readings and stays on MQTT only.
const BOUNDED_TEXT: &[&str] = &["charger_error", "charge_reason"];

/// The Prometheus family of `quantity`'s values, or `None` when it is free text that must not become
/// a label value. Per-phase and per-tariff variants get a family of their own beside the total,
/// named by inserting `phase_` / `tariff_` after the `hlbridge_` prefix of the row's name.
pub(crate) fn value_family(quantity: Quantity) -> Option<Cow<'static, str>> {
    let family = quantity.family();
    if family.kind == ValueKind::Text && !BOUNDED_TEXT.contains(&family.name) {
        return None;
    }
    let part = match quantity.def().variant {
        Some((VariantLabel::Phase, _)) => "phase_",
        Some((VariantLabel::Tariff, _)) => "tariff_",
        Some((VariantLabel::Sensor, _)) | None => return Some(Cow::Borrowed(family.prom_name)),
    };
    let name = match family.prom_name.strip_prefix("hlbridge_") {
        Some(rest) => format!("hlbridge_{part}{rest}"),
        None => format!("{part}{}", family.prom_name),
    };
    Some(Cow::Owned(name))
}

/// The `# HELP` text of a device value family: what the number means, its sign and its unit where the
/// name alone leaves doubt.
pub(crate) fn help(family: &str) -> Option<&'static str> {
    HELP.iter().find(|(name, _)| *name == family).map(|(_, text)| *text)
}

/// `# HELP` texts, keyed by Prometheus family name (the rows of `model::FAMILIES` plus the derived
/// phase and tariff families). Plain ASCII without backslashes or newlines: both formats print it
/// verbatim.
static HELP: &[(&str, &str)] = &[
    ("hlbridge_power_watts", "Net active power, import minus export; negative = export"),
    (
        "hlbridge_phase_power_watts",
        "Net active power of one phase (label phase), import minus export; negative = export",
    ),
    ("hlbridge_power_import_watts", "Active power drawn from the grid, non-negative"),
    ("hlbridge_power_export_watts", "Active power fed into the grid, non-negative"),
    ("hlbridge_voltage_volts", "RMS voltage of a single-phase device"),
    ("hlbridge_phase_voltage_volts", "RMS voltage of one phase against neutral (label phase; n = neutral conductor)"),
    ("hlbridge_current_amperes", "Current magnitude"),
    ("hlbridge_phase_current_amperes", "Current magnitude of one phase (label phase)"),
    ("hlbridge_power_factor_ratio", "Total power factor, ratio 0..1"),
    ("hlbridge_phase_power_factor_ratio", "Power factor of one phase (label phase), ratio 0..1"),
    ("hlbridge_frequency_hertz", "Grid frequency"),
    (
        "hlbridge_energy_import_kilowatt_hours",
        "Lifetime active energy drawn from the grid over all tariffs, in kWh (meter register)",
    ),
    (
        "hlbridge_tariff_energy_import_kilowatt_hours",
        "Lifetime active energy drawn from the grid in one tariff register (label tariff), in kWh",
    ),
    ("hlbridge_energy_export_kilowatt_hours", "Lifetime active energy fed into the grid over all tariffs, in kWh"),
    (
        "hlbridge_tariff_energy_export_kilowatt_hours",
        "Lifetime active energy fed into the grid in one tariff register (label tariff), in kWh",
    ),
    ("hlbridge_reactive_power_import_vars", "Reactive power import (inductive), non-negative"),
    ("hlbridge_reactive_power_export_vars", "Reactive power export (capacitive), non-negative"),
    ("hlbridge_apparent_power_volt_amperes", "Apparent power over all phases"),
    ("hlbridge_reactive_energy_import_kilovar_hours", "Lifetime reactive energy import register, in kvarh"),
    ("hlbridge_reactive_energy_export_kilovar_hours", "Lifetime reactive energy export register, in kvarh"),
    ("hlbridge_tariff", "Number of the tariff register the meter counts into now"),
    (
        "hlbridge_session_energy_kilowatt_hours",
        "Energy charged since the car was plugged in, in kWh; resets per session",
    ),
    ("hlbridge_charger_state_info", "Charger state; the sample with the current state in label value is 1"),
    ("hlbridge_car_connected", "Car plugged in (1) or not (0)"),
    ("hlbridge_charging_allowed", "Charger lets the car charge (1) or not (0)"),
    ("hlbridge_current_limit_amperes", "Charging current limit set on the charger (writable via current_limit/set)"),
    ("hlbridge_current_allowed_amperes", "Charging current the charger currently offers the car"),
    ("hlbridge_force_state_info", "Charger force state (neutral, off, on) in label value"),
    ("hlbridge_phase_mode_info", "Charger phase switching mode (auto, single, three) in label value"),
    ("hlbridge_print_control_info", "Last OctoPrint job command confirmed (pause, resume, cancel) in label value"),
    (
        "hlbridge_printer_connection_info",
        "Last OctoPrint connection command confirmed (connect, disconnect) in label value",
    ),
    ("hlbridge_charger_error_info", "Charger error from the go-e error table in label value"),
    ("hlbridge_charge_reason_info", "Why the charger charges or not, from the go-e status table, in label value"),
    ("hlbridge_temperature_celsius", "Temperature; label sensor names extra sensors, target=true marks a set point"),
    ("hlbridge_volume_cubic_meters", "Water or gas meter reading, lifetime register"),
    ("hlbridge_flow_rate_cubic_meters_per_hour", "Water or gas flow rate"),
    ("hlbridge_printer_state_info", "Printer state; the sample with the current state in label value is 1"),
    ("hlbridge_print_progress_percent", "Progress of the current print job, 0..100"),
    ("hlbridge_print_time_elapsed_seconds", "Time the current print job has run"),
    ("hlbridge_print_time_left_seconds", "Printer's estimate of the current print job's remaining time"),
    ("hlbridge_slicing_progress_percent", "Progress of the slicer on the printer host, 0..100"),
    ("hlbridge_rssi_dbm", "Wi-Fi signal strength at the device"),
    ("hlbridge_uptime_seconds", "Time since the device booted, as the device reports it"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FAMILIES;

    /// Every exported family name a row can produce: the row's own and, where the row has phase or
    /// tariff variants, the derived one.
    fn exported_families() -> Vec<String> {
        let mut names = Vec::new();
        for row in FAMILIES {
            for name in [row.name.to_owned(), format!("{}_l1", row.name), format!("{}_t1", row.name)] {
                if let Some(q) = Quantity::named(&name)
                    && std::ptr::eq(q.family(), row)
                    && let Some(family) = value_family(q)
                {
                    names.push(family.into_owned());
                }
            }
        }
        names
    }

    /// Reason literals counted in `source` after one of `calls` (`parse_error("bad_type"`).
    fn reasons_in(source: &str, calls: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for call in calls {
            for (at, _) in source.match_indices(call) {
                let rest = &source[at + call.len()..];
                if let Some(end) = rest.find('"') {
                    found.push(rest[..end].to_owned());
                }
            }
        }
        found
    }

    #[test]
    fn the_reason_catalog_covers_every_reason_the_adapters_count() {
        let sources: [(AdapterKind, &[&str]); 4] = [
            (AdapterKind::Goe, &[include_str!("adapters/goe/mod.rs"), include_str!("adapters/goe/mapping.rs")]),
            (
                AdapterKind::Whatwatt,
                &[
                    include_str!("adapters/whatwatt/mod.rs"),
                    include_str!("adapters/whatwatt/ingest.rs"),
                    include_str!("adapters/whatwatt/transport_http.rs"),
                    include_str!("adapters/whatwatt/transport_mqtt.rs"),
                    include_str!("adapters/whatwatt/mapping/mod.rs"),
                    include_str!("adapters/whatwatt/client.rs"),
                    include_str!("adapters/whatwatt/sse.rs"),
                ],
            ),
            (
                AdapterKind::AiOnTheEdge,
                &[
                    include_str!("adapters/ai_on_the_edge/mod.rs"),
                    include_str!("adapters/ai_on_the_edge/config.rs"),
                    include_str!("adapters/ai_on_the_edge/ingest.rs"),
                    include_str!("adapters/ai_on_the_edge/ingest/commands.rs"),
                    include_str!("adapters/ai_on_the_edge/mapping.rs"),
                ],
            ),
            (
                AdapterKind::Octoprint,
                &[
                    include_str!("adapters/octoprint/mod.rs"),
                    include_str!("adapters/octoprint/mapping/mod.rs"),
                    include_str!("adapters/octoprint/mapping/events.rs"),
                    include_str!("adapters/octoprint/mapping/progress.rs"),
                    include_str!("adapters/octoprint/mapping/temperatures.rs"),
                ],
            ),
        ];
        for (adapter, files) in sources {
            let (parse_errors, rejections) = known_reasons(adapter);
            for source in files {
                for reason in reasons_in(source, &["parse_error(\"", "Invalid(\"", "ParseError(\""]) {
                    assert!(parse_errors.contains(&reason.as_str()), "{adapter:?} counts parse error `{reason}`");
                }
                for reason in reasons_in(source, &["Rejected(\"", "rejected(\""]) {
                    assert!(rejections.contains(&reason.as_str()), "{adapter:?} rejects with `{reason}`");
                }
            }
        }
        for reason in reasons_in(include_str!("guard.rs"), &[" => \""]) {
            assert!(GUARD_REJECTIONS.contains(&reason.as_str()), "the guard rejects with `{reason}`");
        }
    }

    #[test]
    fn a_started_device_has_every_health_series_at_zero_before_anything_happens() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.start_device("garage", AdapterKind::Goe, true);
        metrics.start_device("meter", AdapterKind::Whatwatt, false);
        let text = render_as(&registry, Format::Classic);
        for series in [
            "hlbridge_messages_received_total{device=\"garage\"} 0",
            "hlbridge_unknown_keys_total{device=\"garage\"} 0",
            "hlbridge_ingest_dropped_total{device=\"garage\"} 0",
            "hlbridge_parse_errors_total{device=\"garage\",reason=\"invalid_json\"} 0",
            "hlbridge_parse_errors_total{device=\"meter\",reason=\"sse_kicked\"} 0",
            "hlbridge_readings_rejected_total{device=\"meter\",reason=\"counter_decrease\"} 0",
            "hlbridge_commands_total{device=\"garage\",reason=\"ok\"} 0",
            "hlbridge_commands_total{device=\"garage\",reason=\"error\"} 0",
        ] {
            assert!(text.lines().any(|l| l == series), "missing `{series}`:\n{text}");
        }
        assert!(!text.contains("hlbridge_commands_total{device=\"meter\""), "the meter takes no commands:\n{text}");
    }

    #[test]
    fn every_exported_family_has_a_real_help_text() {
        for name in exported_families() {
            let text = help(&name).unwrap_or_else(|| panic!("{name} has no entry in metrics::HELP"));
            assert!(text.len() > 12 && text != name, "{name}: `{text}` says nothing");
            assert!(!text.contains('\\') && !text.contains('\n'), "{name}: HELP is printed verbatim");
        }
        // Every row of the quantity table that reaches /metrics is covered, not just the phase ones.
        for row in FAMILIES.iter().filter(|r| r.kind != ValueKind::Text || BOUNDED_TEXT.contains(&r.name)) {
            assert!(help(row.prom_name).is_some(), "{} has no entry in metrics::HELP", row.prom_name);
        }
    }

    #[test]
    fn help_table_has_no_stale_entries() {
        let exported = exported_families();
        for (name, _) in HELP {
            assert!(exported.iter().any(|e| e == name), "HELP entry {name} matches no family");
        }
    }

    #[test]
    fn phases_and_tariffs_get_families_of_their_own() {
        let family = |n: &str| value_family(Quantity::known(n)).map(Cow::into_owned);
        assert_eq!(family("power").as_deref(), Some("hlbridge_power_watts"));
        assert_eq!(family("power_l1").as_deref(), Some("hlbridge_phase_power_watts"));
        assert_eq!(family("voltage_n").as_deref(), Some("hlbridge_phase_voltage_volts"));
        assert_eq!(family("current_l3").as_deref(), Some("hlbridge_phase_current_amperes"));
        assert_eq!(family("power_factor_l2").as_deref(), Some("hlbridge_phase_power_factor_ratio"));
        assert_eq!(family("energy_import").as_deref(), Some("hlbridge_energy_import_kilowatt_hours"));
        assert_eq!(family("energy_import_t2").as_deref(), Some("hlbridge_tariff_energy_import_kilowatt_hours"));
        assert_eq!(family("temperature_bed").as_deref(), Some("hlbridge_temperature_celsius"));
    }

    #[test]
    fn free_text_never_becomes_a_family_but_enums_do() {
        for text in ["reading_raw", "reading_error", "print_file"] {
            assert_eq!(value_family(Quantity::known(text)), None, "{text} stays on MQTT");
        }
        for bounded in ["charger_state", "printer_state", "force_state", "phase_mode", "charger_error", "charge_reason"]
        {
            assert!(value_family(Quantity::known(bounded)).is_some(), "{bounded} is a bounded set");
        }
    }

    #[test]
    fn accept_header_picks_openmetrics_only_when_asked() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                          q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Format::Classic);
        assert_eq!(Format::negotiate(Some("text/plain, application/openmetrics-text;q=0.5")), Format::Classic);
        assert_eq!(Format::negotiate(Some("application/openmetrics-text;q=0")), Format::Classic);
    }

    #[test]
    fn classic_format_renames_counters_and_info_and_drops_eof() {
        let openmetrics = "# HELP hlbridge_messages_received Device messages received.\n\
                           # TYPE hlbridge_messages_received counter\n\
                           hlbridge_messages_received_total{device=\"a\"} 3\n\
                           hlbridge_messages_received_created{device=\"a\"} 1.7e9\n\
                           # HELP hlbridge_charger_state Charger state.\n\
                           # TYPE hlbridge_charger_state info\n\
                           hlbridge_charger_state_info{device=\"a\",value=\"idle\"} 1\n\
                           # HELP hlbridge_power_watts Net power.\n\
                           # TYPE hlbridge_power_watts gauge\n\
                           # UNIT hlbridge_power_watts watts\n\
                           hlbridge_power_watts{device=\"a\"} -12.5\n\
                           # EOF\n";
        assert_eq!(
            openmetrics_to_classic(openmetrics),
            "# HELP hlbridge_messages_received_total Device messages received.\n\
             # TYPE hlbridge_messages_received_total counter\n\
             hlbridge_messages_received_total{device=\"a\"} 3\n\
             # HELP hlbridge_charger_state_info Charger state.\n\
             # TYPE hlbridge_charger_state_info gauge\n\
             hlbridge_charger_state_info{device=\"a\",value=\"idle\"} 1\n\
             # HELP hlbridge_power_watts Net power.\n\
             # TYPE hlbridge_power_watts gauge\n\
             hlbridge_power_watts{device=\"a\"} -12.5\n"
        );
    }
}

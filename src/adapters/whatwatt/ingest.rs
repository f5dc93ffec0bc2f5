//! Per-message handling of the whatwatt adapter ([`Ingest`]), shared by every transport: REST report
//! and system answers, SSE bytes and events, template MQTT messages. It counts and logs what it
//! cannot use, tracks the meter status and the gateway identity, and publishes readings.

use super::client::GatewayError;
use super::config::{WhatwattConfig, WhatwattError, WhatwattTransport};
use super::mapping::{self, FieldMap, Issue, Reading, SystemInfo, Txt, VolumeFrom};
use super::sse::{SseItem, SseParser};
use crate::adapters::http::REASON_BODY_TOO_LARGE;
use crate::adapters::log_once::LogOnce;
use crate::model::{Identity, Update};
use crate::mqtt::Message;
use crate::router::{DeviceHandle, Link};
use crate::untrusted::clip;

/// A poll's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// A new reading was published.
    Fresh,
    /// The same `(boot_id, report.id)` as last time: nothing new.
    Unchanged,
    /// The meter status is not `OK`; the device is offline with this reason.
    MeterNotOk(String),
}

/// Why a report answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// `404 License required`: the gateway has a FREE licence.
    #[error("/api/v1/report needs a Plus licence (the gateway answered 404 License required)")]
    LicenceRequired,
    /// Anything else (HTTP status, HTML page, bad JSON), already counted.
    #[error("{0}")]
    Bad(String),
}

/// Per-message handling shared by every transport; public so that recorded captures replay
/// through exactly the code a live gateway goes through (golden tests, benchmark).
pub struct Ingest {
    device: DeviceHandle,
    opts: mapping::Options,
    volume_from: VolumeFrom,
    fields: FieldMap,
    logged: LogOnce,
    /// Reused per message.
    issues: Vec<Issue>,
    parser: SseParser,
    /// `(boot_id, report.id)` of the last report published.
    last_report: Option<(String, u64)>,
    /// Gateway id last put into the identity.
    sys_id: Option<String>,
    /// Meter description last shown in `/readyz`.
    meter: Option<String>,
    /// The not-OK meter status the device is offline for.
    bad_status: Option<String>,
    /// `meter_status: OK` is in `/readyz` already (spares a string per message).
    status_shown: bool,
    /// The stream sent a line or event over the parser's cap since the last look: its framing is
    /// lost, so the connection is dropped and reopened (see [`Ingest::sse_overflowed`]).
    sse_overflowed: bool,
}

pub(super) fn looks_html(content_type: &str, body: &[u8]) -> bool {
    let start = body.iter().position(|b| !b.is_ascii_whitespace()).map_or(&[][..], |i| &body[i..]);
    content_type.contains("html") || start.starts_with(b"<")
}

pub(super) fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(80)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Ingest {
    /// A fresh ingest state for `device` with `cfg`'s mapping options.
    pub fn new(device: DeviceHandle, cfg: &WhatwattConfig) -> Result<Ingest, WhatwattError> {
        if let Some(t) = &cfg.template
            && let Ok(t) = mapping::fields_from_template(t)
            && !t.mixed.is_empty()
        {
            tracing::info!(device = %device.id(), fields = %t.mixed.join(", "),
                "template fields mixing text and variables cannot be read back; ignored");
        }
        let fields = if cfg.transport == WhatwattTransport::Mqtt {
            cfg.field_map().map_err(|reason| WhatwattError::Fields {
                device: device.id().to_owned(),
                key: if cfg.template.is_some() { "template" } else { "fields" },
                reason,
            })?
        } else {
            FieldMap::presets()
        };
        Ok(Ingest {
            device,
            opts: mapping::Options { phase_min_voltage: cfg.phase_min_voltage },
            volume_from: VolumeFrom::parse(&cfg.volume_from),
            fields,
            logged: LogOnce::default(),
            issues: Vec::with_capacity(8),
            parser: SseParser::new(),
            last_report: None,
            sys_id: None,
            meter: None,
            bad_status: None,
            status_shown: false,
            sse_overflowed: false,
        })
    }

    /// The device this ingest feeds.
    pub(crate) fn device(&self) -> &DeviceHandle {
        &self.device
    }

    fn report_issues(&mut self, source: &'static str) {
        if self.issues.is_empty() {
            return;
        }
        let device = self.device.clone();
        for issue in self.issues.drain(..) {
            match issue {
                Issue::Unknown(key) => {
                    device.counters().unknown_keys.inc();
                    if self.logged.first_of("unknown", &key) {
                        tracing::info!(device = %device.id(), source, key = %clip(&key),
                            "unknown whatwatt key (newer firmware or an unmapped template field); counted and ignored");
                    }
                }
                Issue::Invalid { key, reason } => {
                    device.counters().parse_error(reason);
                    if self.logged.first_of(reason, &key) {
                        tracing::warn!(device = %device.id(), source, key = %clip(&key), reason,
                            "whatwatt value not understood; skipped");
                    }
                }
            }
        }
    }

    pub(super) fn parse_error(&mut self, reason: &'static str, what: &str, detail: &str) {
        self.device.counters().parse_error(reason);
        if self.logged.first_of(reason, what) {
            tracing::warn!(device = %self.device.id(), reason, what, detail = %clip(detail), "whatwatt payload skipped (counted)");
        }
    }

    /// Takes the device offline for a meter status other than `OK` (once per status), or back.
    fn meter_status(&mut self, status: Option<&str>) -> Option<String> {
        match status {
            Some(s) if !mapping::status_ok(s) => {
                let reason = format!("meter status {s} (values are only trusted with OK)");
                if self.bad_status.as_deref() != Some(s) {
                    tracing::warn!(device = %self.device.id(), status = %clip(s), "whatwatt meter status is not OK; device offline");
                    self.bad_status = Some(s.to_owned());
                    self.device.set_detail("meter_status", s);
                }
                self.device.set_link(Link::Down(reason.clone()));
                Some(reason)
            }
            Some(s) => {
                if self.bad_status.take().is_some() {
                    tracing::info!(device = %self.device.id(), "whatwatt meter status is OK again");
                    self.status_shown = false;
                }
                if !self.status_shown {
                    self.status_shown = true;
                    self.device.set_detail("meter_status", s);
                }
                None
            }
            None => None,
        }
    }

    fn identity_from(&mut self, r: &Reading<'_>, update: &mut Update) {
        if let Some(id) = r.text(Txt::SysId)
            && self.sys_id.as_deref() != Some(id)
        {
            self.sys_id = Some(id.to_owned());
            update.identity =
                Some(Identity { vendor: Some("whatwatt".into()), serial: Some(id.to_owned()), ..Default::default() });
        }
        let meter = r.text(Txt::MeterId).or(r.text(Txt::MeterType));
        if let Some(m) = meter
            && self.meter.as_deref() != Some(m)
        {
            self.meter = Some(m.to_owned());
            let vendor = r.text(Txt::MeterVendor).map(|v| format!("{v} ")).unwrap_or_default();
            self.device.set_detail("meter", format!("{vendor}{m}"));
        }
    }

    fn publish(&mut self, r: &Reading<'_>, fresh: bool) {
        let mut update = Update { fresh, ..Default::default() };
        update.readings.reserve(24);
        self.identity_from(r, &mut update);
        mapping::to_update(r, &self.opts, &mut update);
        if fresh {
            self.device.set_link(Link::Up);
        }
        self.device.apply(update);
        self.device.flush();
    }

    fn note_volume(&mut self, seen: mapping::VolumeSeen) {
        if seen.with_reading > 1 && self.volume_from == VolumeFrom::Auto && self.logged.first_of("volume", "several") {
            tracing::info!(device = %self.device.id(), sub_meters = seen.with_reading,
                "several sub-meters report a reading; set `volume_from` to a bus number or meter id to publish one as `volume`");
            self.device.set_detail("sub_meters", format!("{} with readings; set volume_from", seen.with_reading));
        }
    }

    /// Handles one `/api/v1/report` answer (HTTP status, content type and body), as a poll would.
    pub fn report_body(&mut self, status: u16, content_type: &str, body: &[u8]) -> Result<ReportOutcome, ReportError> {
        self.device.counters().received.inc();
        if status == 404 && String::from_utf8_lossy(body).to_ascii_lowercase().contains("license required") {
            return Err(ReportError::LicenceRequired);
        }
        if !(200..300).contains(&status) {
            let html = if looks_html(content_type, body) { " (an HTML error page)" } else { "" };
            self.parse_error("http_status", &format!("report {status}"), &excerpt(body));
            return Err(ReportError::Bad(format!("/api/v1/report answered HTTP {status}{html}")));
        }
        if looks_html(content_type, body) {
            self.parse_error("html_page", "report html", &excerpt(body));
            return Err(ReportError::Bad("/api/v1/report answered with an HTML page instead of JSON".into()));
        }
        let root: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                self.parse_error("invalid_json", "report json", &e.to_string());
                return Err(ReportError::Bad(format!("/api/v1/report is not JSON: {e}")));
            }
        };
        if root.get("report").is_none_or(|r| !r.is_object()) {
            self.parse_error("bad_type", "report shape", &excerpt(body));
            return Err(ReportError::Bad("/api/v1/report has no `report` object".into()));
        }
        let mut r = Reading::default();
        let mut issues = std::mem::take(&mut self.issues);
        mapping::read_report(&root, &mut r, &mut issues);
        self.issues = issues;
        self.report_issues("report");
        let seen = mapping::read_volume(root.pointer("/report/volume"), &self.volume_from, &mut r);
        self.note_volume(seen);
        if let Some(reason) = self.meter_status(r.text(Txt::MeterStatus)) {
            return Ok(ReportOutcome::MeterNotOk(reason));
        }
        if let Some(id) = r.num(mapping::Sig::ReportId).filter(|n| *n >= 0.0) {
            let boot = r.text(Txt::BootId).unwrap_or("");
            let key_same = self.last_report.as_ref().is_some_and(|(b, i)| b == boot && *i == id as u64);
            if key_same {
                self.device.set_link(Link::Up);
                return Ok(ReportOutcome::Unchanged);
            }
            self.last_report = Some((boot.to_owned(), id as u64));
        }
        self.publish(&r, true);
        Ok(ReportOutcome::Fresh)
    }

    /// Handles one `/api/v1/system` answer; returns what it says.
    pub fn system_body(&mut self, status: u16, content_type: &str, body: &[u8]) -> Result<SystemInfo, String> {
        if !(200..300).contains(&status) {
            return Err(format!("/api/v1/system answered HTTP {status}"));
        }
        if looks_html(content_type, body) {
            self.parse_error("html_page", "system html", &excerpt(body));
            return Err("/api/v1/system answered with an HTML page (is this a whatwatt Go?)".into());
        }
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            self.parse_error("invalid_json", "system json", &e.to_string());
            format!("/api/v1/system is not JSON: {e}")
        })?;
        let info = mapping::read_system(&v);
        if let Some(l) = &info.licence {
            self.device.set_detail("licence", l.clone());
        }
        if let Some(m) = &info.meter {
            self.device.set_detail("meter", m.clone());
        }
        if let Some((enabled, connected)) = info.mqtt_client {
            self.device.set_detail(
                "gateway_mqtt_client",
                match (enabled, connected) {
                    (false, _) => "disabled",
                    (true, false) => "enabled, not connected",
                    (true, true) => "connected",
                },
            );
        }
        self.sys_id = info.identity.serial.clone();
        let mut update = Update { identity: Some(info.identity.clone()), ..Default::default() };
        if let Some(rssi) = info.rssi {
            update.push(crate::model::Quantity::known("rssi"), crate::model::Value::Number(rssi));
        }
        // Gateway facts, not a meter reading: they do not make the device fresh.
        self.device.apply(update);
        self.meter_status(info.meter_status.as_deref());
        Ok(info)
    }

    /// Starts a new SSE connection (forgets a partial event of the previous one).
    pub(crate) fn sse_reset(&mut self) {
        self.parser.reset();
        self.sse_overflowed = false;
    }

    /// Whether the stream sent a line or event over [`super::sse::MAX_LINE`] since the last call (already
    /// counted as `sse_overflow`); clears the flag.
    pub(crate) fn sse_overflowed(&mut self) -> bool {
        std::mem::take(&mut self.sse_overflowed)
    }

    /// Counts a gateway answer refused for its size (`body_too_large`); logging is the caller's.
    pub(super) fn count_transport_error(&self, e: &GatewayError) {
        if e.is_too_large() {
            self.device.counters().parse_error(REASON_BODY_TOO_LARGE);
        }
    }

    /// Feeds raw stream bytes; returns how many `live` events were published.
    pub fn sse_bytes(&mut self, chunk: &[u8]) -> usize {
        let mut parser = std::mem::take(&mut self.parser);
        let mut published = 0;
        parser.feed(chunk, &mut |item| match item {
            SseItem::Event { event, data } => {
                if self.sse_event(event, data) {
                    published += 1;
                }
            }
            SseItem::BadLine(line) => self.parse_error("sse_bad_line", "sse line", line),
            SseItem::Overflow => {
                self.sse_overflowed = true;
                self.parse_error("sse_overflow", "sse overflow", "a line or event longer than 64 KiB")
            }
        });
        self.parser = parser;
        published
    }

    /// The stream ended: a complete event still waiting for its blank line is handed over (captures
    /// and file servers often lack the final one; the gateway itself always sends it). Returns
    /// whether it published a reading.
    pub fn sse_end(&mut self) -> bool {
        let mut parser = std::mem::take(&mut self.parser);
        let mut published = false;
        parser.finish(&mut |item| {
            if let SseItem::Event { event, data } = item {
                published = self.sse_event(event, data);
            }
        });
        self.parser = parser;
        published
    }

    /// Handles one SSE event; returns whether it published a reading.
    pub(crate) fn sse_event(&mut self, event: &str, data: &str) -> bool {
        if event != "live" {
            self.device.counters().unknown_keys.inc();
            if self.logged.first_of("sse event", event) {
                tracing::info!(device = %self.device.id(), event = %clip(event), "unknown whatwatt SSE event type; ignored");
            }
            return false;
        }
        self.device.counters().received.inc();
        let v: serde_json::Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                self.parse_error("invalid_json", "sse json", &format!("{e}: {}", excerpt(data.as_bytes())));
                return false;
            }
        };
        let Some(obj) = v.as_object() else {
            self.parse_error("bad_type", "sse shape", &excerpt(data.as_bytes()));
            return false;
        };
        let mut r = Reading::default();
        let mut issues = std::mem::take(&mut self.issues);
        mapping::read_sse(obj, &mut r, &mut issues);
        self.issues = issues;
        self.report_issues("sse");
        let seen = mapping::read_volume(obj.get("Vol"), &self.volume_from, &mut r);
        self.note_volume(seen);
        if self.bad_status.is_some() {
            // The stream carries no status, but an event means the meter delivers again.
            self.meter_status(Some("OK"));
        }
        self.publish(&r, true);
        true
    }

    /// Handles one MQTT message from the gateway's template.
    pub fn mqtt_message(&mut self, msg: &Message) {
        self.device.counters().received.inc();
        let payload = &msg.payload[..];
        if payload.windows(2).any(|w| w == b"${") {
            // The gateway leaves unknown variables verbatim: a template error the user must fix.
            self.parse_error("template_unresolved", "template", &excerpt(payload));
            return;
        }
        let v: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.parse_error("invalid_json", "mqtt json", &format!("{e}: {}", excerpt(payload)));
                return;
            }
        };
        if !v.is_object() {
            self.parse_error("bad_type", "mqtt shape", &excerpt(payload));
            return;
        }
        let mut r = Reading::default();
        let mut issues = std::mem::take(&mut self.issues);
        mapping::read_payload(&v, &self.fields, &mut r, &mut issues);
        self.issues = issues;
        self.report_issues("mqtt");
        if !r.has_measurements() && self.logged.first_of("no fields", &msg.topic) {
            tracing::warn!(device = %self.device.id(), topic = %clip(&msg.topic),
                "no field of this whatwatt payload is mapped to a measurement; set `template:` (the gateway's template) or `fields:`");
        }
        if self.meter_status(r.text(Txt::MeterStatus)).is_some() {
            return;
        }
        // A retained replay says nothing about now.
        self.publish(&r, !msg.retain);
    }
}

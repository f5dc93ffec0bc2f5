//! What the simulated gateway's MQTT client publishes: its template variables (also served by
//! `/api/v1/variables`), the firmware's way of rendering a template, and the preset templates a
//! simulator entry can name (`bridge`, `docs`, `ha`).

use serde_json::Value;
use time::OffsetDateTime;

use super::gateway::{FIELDS, Gateway};

pub(super) const TEMPLATE_DOCS: &str =
    include_str!("../../../adapters/whatwatt/fixtures/docs_mqtt_template_example.tmpl");
pub(super) const TEMPLATE_HA: &str =
    include_str!("../../../adapters/whatwatt/fixtures/ha_integration_readme_template.tmpl");
pub(super) const TEMPLATE_BRIDGE: &str = include_str!("../../../adapters/whatwatt/bridge-template.tmpl");

/// Numeric template variables every gateway knows even when the meter lacks them (rendered `null`).
const NULL_VARIABLES: &[&str] = &[
    "1_8_1", "1_8_2", "2_8_1", "2_8_2", "3_8_1", "3_8_2", "4_8_1", "4_8_2", "13_7_0", "9_7_0", "3_7_0", "4_7_0",
    "21_7_0", "41_7_0", "61_7_0", "22_7_0", "42_7_0", "62_7_0", "31_7_0", "51_7_0", "71_7_0", "32_7_0", "52_7_0",
    "72_7_0",
];

pub(super) fn template_text(t: &str) -> &str {
    match t {
        "bridge" => TEMPLATE_BRIDGE,
        "docs" => TEMPLATE_DOCS,
        "ha" => TEMPLATE_HA,
        other => other,
    }
}

impl Gateway {
    /// Every template variable with its value as text; numerics without a value are `None`.
    pub(crate) fn variables(&self, status: &str) -> Vec<(&'static str, Option<String>, bool)> {
        let num = |v: Option<&Value>| v.and_then(Value::as_f64).map(fmt_number);
        let text = |p: &str| self.report.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
        let mut out: Vec<(&'static str, Option<String>, bool)> = Vec::new();
        out.push(("sys.name", Some(String::new()), false));
        out.push(("sys.id", Some(text("/system/id")), false));
        let fw = self.system.pointer("/device/firmware").and_then(Value::as_str).unwrap_or("").to_owned();
        out.push(("sys.firmware", Some(fw), false));
        out.push(("sys.date_time", Some(text("/system/date_time")), false));
        for (path, _, var) in FIELDS {
            out.push((var, num(self.report.pointer(path)), true));
        }
        for var in NULL_VARIABLES {
            if !out.iter().any(|(v, _, _)| v == var) {
                out.push((var, None, true));
            }
        }
        let alias = |out: &mut Vec<(&'static str, Option<String>, bool)>, alias: &'static str, of: &str| {
            let v = out.iter().find(|(n, _, _)| *n == of).and_then(|(_, v, _)| v.clone());
            out.push((alias, v, true));
        };
        alias(&mut out, "power.in", "1_7_0");
        alias(&mut out, "power.out", "2_7_0");
        alias(&mut out, "energy.in", "1_8_0");
        alias(&mut out, "energy.out", "2_8_0");
        out.push(("tariff", num(self.report.pointer("/report/tariff")), true));
        let ts = self
            .report
            .pointer("/report/date_time_utc")
            .and_then(Value::as_str)
            .and_then(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
            .map(|t| t.unix_timestamp().to_string());
        out.push(("timestamp", ts, true));
        out.push(("meter.date_time", Some(text("/report/date_time")), false));
        out.push(("meter.date_time_local", Some(text("/report/date_time_local")), false));
        out.push(("meter.date_time_utc", Some(text("/report/date_time_utc")), false));
        for (var, p) in [
            ("meter.id", "/meter/id"),
            ("meter.type", "/meter/logical_name"),
            ("meter.vendor", "/meter/vendor"),
            ("meter.model", "/meter/model"),
            ("meter.interface", "/meter/interface"),
            ("meter.protocol", "/meter/protocol"),
            ("meter.protocol_ver", "/meter/protocol_version"),
        ] {
            out.push((var, Some(text(p)), false));
        }
        out.push(("meter.status", Some(status.to_owned()), false));
        if let Some(Value::Array(vol)) = self.report.pointer("/report/volume") {
            for (i, e) in vol.iter().enumerate().take(4) {
                let name: &'static str =
                    ["vol[0].cumulative", "vol[1].cumulative", "vol[2].cumulative", "vol[3].cumulative"][i];
                out.push((name, num(e.get("cumulative")), true));
            }
        }
        out
    }

    /// Renders a template like the firmware: numerics plain or `null`, texts as is (empty when
    /// missing), unknown names left verbatim.
    pub(crate) fn render(&self, template: &str, status: &str) -> String {
        let vars = self.variables(status);
        let mut out = String::with_capacity(template.len() + 128);
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &after[..end];
            match vars.iter().find(|(n, _, _)| *n == name) {
                Some((_, Some(v), _)) => out.push_str(v),
                Some((_, None, true)) => out.push_str("null"),
                Some((_, None, false)) => {}
                None => out.push_str(&rest[start..start + 3 + end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// A number as the gateway prints it in templates and variables (`0.006`, `233`).
fn fmt_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 9.0e15 { format!("{}", x as i64) } else { format!("{x}") }
}

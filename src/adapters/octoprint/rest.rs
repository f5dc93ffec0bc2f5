//! OctoPrint commands over the REST API (the MQTT plugin is publish-only): [`plan`] turns a
//! command into one `POST` and the state the plugin must then report, refusing values out of range
//! and orders the printer's state does not allow; [`Rest`] sends it with `X-Api-Key`. The key is
//! a [`Secret`]: it goes into the header and nowhere else (not in URLs, errors or `/readyz`).

use std::time::Duration;

use crate::adapters::http::{self, MAX_BODY};
use crate::config::types::Secret;
use crate::model::{Quantity, Value};
use crate::untrusted::clip;

/// The commands a printer takes on `<name>/set`. Tool set points cover eight extruders (tool
/// changers such as the Prusa XL have five); the printer's OctoPrint profile decides which of them,
/// and whether the bed and the chamber, exist on this printer.
pub(crate) const COMMANDS: &[&str] = &[
    "print_control",
    "printer_connection",
    "temperature_bed_target",
    "temperature_chamber_target",
    "temperature_tool0_target",
    "temperature_tool1_target",
    "temperature_tool2_target",
    "temperature_tool3_target",
    "temperature_tool4_target",
    "temperature_tool5_target",
    "temperature_tool6_target",
    "temperature_tool7_target",
];

/// What the plugin must report for a command to count as done.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expect {
    /// `printer_state` becomes one of these words.
    State(&'static [&'static str]),
    /// The set point quantity reads this value.
    Target(Quantity, f64),
}

/// One planned REST call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Path below the base URL (`/api/job`).
    pub path: &'static str,
    /// The JSON body.
    pub body: serde_json::Value,
    /// What confirms it.
    pub expect: Expect,
    /// The value echoed in the result once confirmed.
    pub answer: serde_json::Value,
}

/// Highest set point per heater (°C): the bounds Home Assistant's OctoPrint integration uses for
/// tools, and common bed and chamber heaters.
const TOOL_MAX: f64 = 300.0;
const BED_MAX: f64 = 150.0;
const CHAMBER_MAX: f64 = 100.0;

/// The heaters the printer's current OctoPrint profile says it has (`GET /api/printerprofiles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    /// The profile's name, for refusals the user can match to OctoPrint's settings.
    pub(crate) name: String,
    /// `extruder.count`: tools `tool0` .. `tool<count-1>`.
    pub(crate) extruders: u32,
    /// `heatedBed`.
    pub(crate) heated_bed: bool,
    /// `heatedChamber`.
    pub(crate) heated_chamber: bool,
}

impl Profile {
    /// The current profile (else the default one) of a `/api/printerprofiles` answer.
    pub(crate) fn from_answer(answer: &serde_json::Value) -> Option<Profile> {
        let profiles = answer.get("profiles")?.as_object()?;
        let flag = |p: &&serde_json::Value, key: &str| p.get(key).and_then(serde_json::Value::as_bool) == Some(true);
        let p = profiles
            .values()
            .find(|p| flag(p, "current"))
            .or_else(|| profiles.values().find(|p| flag(p, "default")))?;
        let extruders = p.get("extruder").and_then(|e| e.get("count")).and_then(serde_json::Value::as_u64)?;
        let mut name = p.get("name").or_else(|| p.get("id")).and_then(|n| n.as_str()).unwrap_or("?").to_owned();
        // Device text: it ends up in a command's result on MQTT.
        crate::untrusted::bound_string(&mut name);
        Some(Profile {
            name,
            extruders: u32::try_from(extruders).unwrap_or(u32::MAX),
            heated_bed: p.get("heatedBed").and_then(serde_json::Value::as_bool).unwrap_or(true),
            heated_chamber: p.get("heatedChamber").and_then(serde_json::Value::as_bool).unwrap_or(false),
        })
    }

    /// Why the profile rules out heater `heater` (`tool1`, `bed`, `chamber`), if it does.
    fn refuses(&self, heater: &str) -> Option<String> {
        let name = &self.name;
        match heater {
            "bed" if !self.heated_bed => Some(format!("the printer profile `{name}` has no heated bed")),
            "chamber" if !self.heated_chamber => Some(format!("the printer profile `{name}` has no heated chamber")),
            t => {
                let n: u32 = t.strip_prefix("tool")?.parse().ok()?;
                (n >= self.extruders).then(|| {
                    let tools = (0..self.extruders).map(|i| format!("tool{i}")).collect::<Vec<_>>().join(", ");
                    format!("the printer profile `{name}` has {} extruder(s) ({tools})", self.extruders)
                })
            }
        }
    }
}

/// Plans command `name` = `value` given the printer's current `state` (`None`: not known yet,
/// OctoPrint then decides and answers 409 itself) and its `profile` (`None`: not readable, the
/// fixed bounds apply and OctoPrint refuses a heater the printer lacks).
pub(crate) fn plan(name: &str, value: &str, state: Option<&str>, profile: Option<&Profile>) -> Result<Plan, String> {
    let word = value.trim().to_ascii_lowercase();
    match name {
        "print_control" => {
            let (allowed, body, expect): (&[&str], _, &'static [&'static str]) = match word.as_str() {
                "pause" => (&["printing"], serde_json::json!({"command": "pause", "action": "pause"}), &["paused"]),
                "resume" => (&["paused"], serde_json::json!({"command": "pause", "action": "resume"}), &["printing"]),
                "cancel" => (
                    &["printing", "pausing", "paused"],
                    serde_json::json!({"command": "cancel"}),
                    &["cancelling", "operational"],
                ),
                _ => {
                    return Err(format!("`{}` is not a print_control value; use pause, resume or cancel", clip(value)));
                }
            };
            if let Some(s) = state
                && !allowed.contains(&s)
            {
                return Err(format!("cannot {word}: the printer is {s} (needs {})", allowed.join(" or ")));
            }
            Ok(Plan { path: "/api/job", body, expect: Expect::State(expect), answer: word.into() })
        }
        "printer_connection" => {
            let (body, expect): (_, &'static [&'static str]) = match word.as_str() {
                "connect" => (serde_json::json!({"command": "connect"}), &["operational"]),
                "disconnect" => (serde_json::json!({"command": "disconnect"}), &["offline"]),
                _ => {
                    return Err(format!(
                        "`{}` is not a printer_connection value; use connect or disconnect",
                        clip(value)
                    ));
                }
            };
            Ok(Plan { path: "/api/connection", body, expect: Expect::State(expect), answer: word.into() })
        }
        _ => {
            let Some(heater) = name.strip_prefix("temperature_").and_then(|n| n.strip_suffix("_target")) else {
                return Err(format!("`{}` is not an OctoPrint command", clip(name)));
            };
            let (path, max) = match heater {
                "bed" => ("/api/printer/bed", BED_MAX),
                "chamber" => ("/api/printer/chamber", CHAMBER_MAX),
                t if t.strip_prefix("tool").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) => {
                    ("/api/printer/tool", TOOL_MAX)
                }
                _ => return Err(format!("`{}` is not an OctoPrint heater", clip(name))),
            };
            if let Some(why) = profile.and_then(|p| p.refuses(heater)) {
                return Err(format!("cannot set {name}: {why}"));
            }
            let target: f64 = word
                .parse()
                .ok()
                .filter(|t: &f64| t.is_finite())
                .ok_or_else(|| format!("`{}` is not a temperature in °C", clip(value)))?;
            if !(0.0..=max).contains(&target) {
                return Err(format!("{target} °C is out of range for {name}: 0 to {max} °C (0 turns the heater off)"));
            }
            let body = if path == "/api/printer/tool" {
                serde_json::json!({"command": "target", "targets": {heater: target}})
            } else {
                serde_json::json!({"command": "target", "target": target})
            };
            let q = Quantity::known(name);
            Ok(Plan { path, body, expect: Expect::Target(q, target), answer: target.into() })
        }
    }
}

impl Expect {
    /// Whether `read` (the device's latest value of what this expects) confirms it.
    pub(crate) fn met(&self, read: impl Fn(Quantity) -> Option<Value>) -> bool {
        match self {
            Expect::State(words) => {
                matches!(read(Quantity::known("printer_state")), Some(Value::Text(s)) if words.contains(&s.as_ref()))
            }
            Expect::Target(q, t) => read(*q).and_then(|v| v.as_f64()).is_some_and(|v| (v - t).abs() < 0.05),
        }
    }
}

/// The REST side of one printer.
pub(crate) struct Rest {
    /// The shared LAN client.
    client: reqwest::Client,
    /// `url` without a trailing `/`.
    base: String,
    /// Sent as `X-Api-Key`, never shown.
    key: Secret,
    /// Per-request timeout.
    timeout: Duration,
}

impl Rest {
    /// A REST client for `base` with `key`.
    pub(crate) fn new(base: &str, key: Secret, timeout: Duration) -> Result<Rest, String> {
        let client =
            http::client(timeout).map_err(|e| format!("cannot build the HTTP client: {}", http::describe(&e)))?;
        Ok(Rest { client, base: base.trim_end_matches('/').to_owned(), key, timeout })
    }

    /// The printer's current profile. A refused key fails the command at once (the `POST` would
    /// be refused too, with a less telling answer); any other failure lets the caller plan with
    /// the fixed bounds.
    pub(crate) async fn profile(&self) -> Result<Profile, ProfileError> {
        let url = format!("{}/api/printerprofiles", self.base);
        let resp = self
            .client
            .get(&url)
            .header("X-Api-Key", self.key.expose())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| {
                ProfileError::Unreadable(format!("OctoPrint at {} did not answer: {}", self.base, http::describe(&e)))
            })?;
        let status = resp.status().as_u16();
        if matches!(status, 401 | 403) {
            return Err(ProfileError::KeyRefused(refusal(status, "")));
        }
        if !resp.status().is_success() {
            return Err(ProfileError::Unreadable(format!("OctoPrint answered HTTP {status} for the printer profiles")));
        }
        let body = http::read_capped(resp, MAX_BODY)
            .await
            .map_err(|e| ProfileError::Unreadable(format!("printer profiles: {e}")))?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ProfileError::Unreadable(format!("printer profiles are not JSON: {e}")))?;
        Profile::from_answer(&json)
            .ok_or_else(|| ProfileError::Unreadable("no current printer profile in OctoPrint's answer".to_owned()))
    }

    /// Sends `plan`; `Ok` when OctoPrint accepted it (2xx), `Err` with OctoPrint's reason.
    pub(crate) async fn send(&self, plan: &Plan) -> Result<(), String> {
        let url = format!("{}{}", self.base, plan.path);
        let resp = self
            .client
            .post(&url)
            .header("X-Api-Key", self.key.expose())
            .json(&plan.body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("OctoPrint at {} did not answer: {}", self.base, http::describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = http::read_capped(resp, MAX_BODY).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let reason = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        Err(refusal(status.as_u16(), &reason))
    }
}

/// Why [`Rest::profile`] has no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProfileError {
    /// OctoPrint refused the API key: the command fails with this message.
    #[error("{0}")]
    KeyRefused(String),
    /// Not readable for another reason: the command goes ahead with the fixed bounds.
    #[error("{0}")]
    Unreadable(String),
}

/// OctoPrint's answer to a refused request as a command error. `reason` is the `error` text of its
/// body (device text, clipped here).
///
/// A `POST` whose key OctoPrint does not accept is not answered 403: without a valid key OctoPrint
/// (1.8 and later, seen on 1.11.8) takes the request for a browser session's and fails its CSRF
/// check first, `400 {"error": "CSRF validation failed"}`. The bridge never uses sessions, so that
/// answer means the key.
pub(crate) fn refusal(status: u16, reason: &str) -> String {
    let csrf = reason.contains("CSRF validation failed");
    let reason = clip(reason);
    match status {
        409 => format!("OctoPrint refused it (409, the printer's state does not allow it): {reason}"),
        401 | 403 => format!("OctoPrint refused the API key (HTTP {status}); check api_key / api_key_file"),
        400 if csrf => "OctoPrint refused the API key (HTTP 400 `CSRF validation failed`: its answer to a POST \
                        without a valid key); check api_key / api_key_file"
            .to_owned(),
        s => format!("OctoPrint answered HTTP {s}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_needs_a_printing_printer_and_resume_a_paused_one() {
        let p = plan("print_control", "pause", Some("printing"), None).unwrap();
        assert_eq!(p.path, "/api/job");
        assert_eq!(p.body, serde_json::json!({"command": "pause", "action": "pause"}));
        assert_eq!(p.expect, Expect::State(&["paused"]));
        let e = plan("print_control", "resume", Some("printing"), None).unwrap_err();
        assert!(e.contains("cannot resume: the printer is printing"), "{e}");
        assert!(plan("print_control", "cancel", Some("operational"), None).is_err());
        assert!(plan("print_control", "cancel", None, None).is_ok(), "an unknown state is left to OctoPrint");
        assert!(plan("print_control", "stop", None, None).unwrap_err().contains("pause, resume or cancel"));
    }

    #[test]
    fn set_points_are_bounded_per_heater() {
        let p = plan("temperature_tool1_target", "210", None, None).unwrap();
        assert_eq!(p.body, serde_json::json!({"command": "target", "targets": {"tool1": 210.0}}));
        assert!(plan("temperature_tool0_target", "301", None, None).unwrap_err().contains("0 to 300"));
        assert!(plan("temperature_bed_target", "151", None, None).unwrap_err().contains("0 to 150"));
        assert!(plan("temperature_chamber_target", "101", None, None).unwrap_err().contains("0 to 100"));
        assert!(plan("temperature_bed_target", "-1", None, None).is_err());
        assert!(plan("temperature_bed_target", "NaN", None, None).is_err());
        assert_eq!(plan("temperature_bed_target", "0", None, None).unwrap().path, "/api/printer/bed");
    }

    fn profile(extruders: u32, bed: bool, chamber: bool) -> Profile {
        Profile { name: "Prusa MK4".into(), extruders, heated_bed: bed, heated_chamber: chamber }
    }

    #[test]
    fn the_printer_profile_rules_out_tools_and_heaters_the_printer_lacks() {
        let one = profile(1, true, false);
        assert!(plan("temperature_tool0_target", "210", None, Some(&one)).is_ok());
        let e = plan("temperature_tool1_target", "210", None, Some(&one)).unwrap_err();
        assert_eq!(e, "cannot set temperature_tool1_target: the printer profile `Prusa MK4` has 1 extruder(s) (tool0)");
        let e = plan("temperature_chamber_target", "40", None, Some(&one)).unwrap_err();
        assert!(e.contains("has no heated chamber"), "{e}");
        assert!(
            plan("temperature_bed_target", "60", None, Some(&profile(1, false, false)))
                .unwrap_err()
                .contains("no heated bed")
        );
        let five = profile(5, true, true);
        assert!(
            plan("temperature_tool4_target", "200", None, Some(&five)).is_ok(),
            "tools beyond 3 with a profile that has them"
        );
        assert!(plan("temperature_chamber_target", "40", None, Some(&five)).is_ok());
        assert!(plan("temperature_tool1_target", "210", None, None).is_ok(), "no profile: OctoPrint decides");
    }

    #[test]
    fn octoprints_csrf_answer_to_a_post_with_a_wrong_key_is_reported_as_the_key() {
        // What OctoPrint 1.11.8 answers a POST /api/connection with a wrong X-Api-Key.
        let e = refusal(400, "CSRF validation failed");
        assert!(e.starts_with("OctoPrint refused the API key (HTTP 400"), "{e}");
        assert!(e.contains("check api_key / api_key_file"), "{e}");
        assert_eq!(refusal(403, ""), "OctoPrint refused the API key (HTTP 403); check api_key / api_key_file");
        assert_eq!(
            refusal(400, "Malformed JSON body in request"),
            "OctoPrint answered HTTP 400: Malformed JSON body in request"
        );
        assert!(refusal(409, "Printer is not operational").contains("409, the printer's state does not allow it"));
    }

    #[test]
    fn the_current_profile_is_read_from_octoprints_answer() {
        let answer = serde_json::json!({"profiles": {
            "_default": {"id": "_default", "name": "Default", "default": true, "current": false,
                         "heatedBed": true, "heatedChamber": false, "extruder": {"count": 1}},
            "idex": {"id": "idex", "name": "IDEX", "default": false, "current": true,
                     "heatedBed": true, "heatedChamber": true, "extruder": {"count": 2}}}});
        assert_eq!(
            Profile::from_answer(&answer),
            Some(Profile { name: "IDEX".into(), extruders: 2, heated_bed: true, heated_chamber: true })
        );
        assert_eq!(Profile::from_answer(&serde_json::json!({"profiles": {}})), None);
        assert_eq!(Profile::from_answer(&serde_json::json!([1, 2])), None);
    }
}

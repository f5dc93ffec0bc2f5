//! The one command path every adapter shares (contract §3): what happens to a message on
//! `<prefix>/<device>/<name>/set` before an adapter sees it, as a pure state machine — message in,
//! [`Decision`] out — so it is tested alone, without a broker.
//!
//! - **Bodies**: a plain value (`16`, `on`) or a JSON object `{"value": 16, "id": "abc"}`; the `id`
//!   is echoed in the result so a caller can match answers to requests.
//! - **Allow-list** (`devices.<id>.commands: true | false | [names]`): off by default for devices
//!   that act on the physical world (charger, printer).
//! - **Rate limit** per command name (`devices.<id>.command_rate_limit`, default one per 2 s).
//! - **Retained commands never run**. In MQTT 3.1.1 a broker delivers a freshly published
//!   retained message to existing subscribers with the retain flag cleared. So the command filters
//!   travel on an MQTT 5 connection subscribed with retain-as-published (`crate::mqtt`'s command
//!   link): there the flag is set for a live retained command as for a replay, and it is refused
//!   here. Where the broker speaks MQTT 3.1.1 only (the fallback: the main connection carries the
//!   filters), only the replay at subscribe time can be recognised; what makes a retained order
//!   harmless there is that the router clears every `/set` topic it took a command from (an empty
//!   retained payload): it then runs at most once, live, and never again at a reconnect or restart.
//!   The clear happens on both paths. Empty payloads (those clears, echoed back) are ignored
//!   silently.
//! - **Exactly once**: MQTT 3.1.1 lets a broker deliver one message once per matching subscription
//!   (rumqttd does; Mosquitto does not), and while the command filters move between the two
//!   connections one command can arrive on each, so the same command can arrive twice (the gate
//!   does not care which connection a copy came from). A body with an `id`
//!   is deduplicated by that id ([`ID_WINDOW`]); without one, the same name and payload again within
//!   [`COPY_WINDOW`] is taken as a second copy. Copies arrive back to back from one packet stream,
//!   so the window only needs to cover delivery jitter; a deliberate repeat that fast would be
//!   refused by the rate limit anyway. Send an `id` to repeat a command on purpose.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How long a command id is remembered to drop second copies of the same command.
pub(crate) const ID_WINDOW: Duration = Duration::from_secs(30);
/// How close a second identical copy of a command without id must follow the first.
pub(crate) const COPY_WINDOW: Duration = Duration::from_millis(250);
/// The default `command_rate_limit`: one command per name every 2 s.
pub(crate) const DEFAULT_RATE_LIMIT: Duration = Duration::from_secs(2);
/// Recent commands remembered for duplicate detection (per device); oldest are forgotten first.
const RECENT: usize = 32;
/// Longest `id` echoed back; longer ones are refused.
pub(crate) const MAX_ID_BYTES: usize = 64;
/// Longest body a command may have.
pub(crate) const MAX_BODY_BYTES: usize = 1024;

/// `devices.<id>.commands`: which commands a device accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "true, false, or a list of command names such as [current_limit, force_state]")]
pub(crate) enum CommandsSetting {
    /// `true`: every command the adapter offers; `false`: none.
    All(bool),
    /// Only these names.
    Only(Vec<String>),
}

/// The command rules of one device, fixed at start-up (and at a reload that changes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Commands the adapter offers (`current_limit`, `read_now`, ...).
    pub offered: &'static [&'static str],
    /// Which of them the config allows: `None` = all offered ones.
    pub allowed: Option<Vec<String>>,
    /// Commands are off altogether (`commands: false`, or the adapter's default).
    pub off: bool,
    /// Minimum time between two runs of one command name (zero: no limit).
    pub rate_limit: Duration,
}

impl Policy {
    /// The policy for `setting` (None: the adapter default `default_on`).
    pub(crate) fn new(
        offered: &'static [&'static str],
        setting: Option<&CommandsSetting>,
        default_on: bool,
        rate_limit: Duration,
    ) -> Policy {
        let (off, allowed) = match setting {
            None => (!default_on, None),
            Some(CommandsSetting::All(on)) => (!on, None),
            Some(CommandsSetting::Only(list)) => (list.is_empty(), Some(list.clone())),
        };
        Policy { offered, allowed, off, rate_limit }
    }

    /// Whether any command can run (decides whether the command metrics are pre-created).
    pub(crate) fn accepts_any(&self) -> bool {
        !self.off && self.offered.iter().any(|n| self.allows(n))
    }

    fn allows(&self, name: &str) -> bool {
        self.allowed.as_ref().is_none_or(|l| l.iter().any(|a| a == name))
    }
}

/// A command handed to the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// The command name, one the adapter offers.
    pub name: &'static str,
    /// The value as plain text (`16`, `on`); empty when a JSON body had no `value`.
    pub value: String,
    /// The caller's `id`, echoed in the result.
    pub id: Option<String>,
}

/// What to do with one message on a `/set` topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing, not even a result: an empty payload (a cleared topic) or a second copy.
    Ignore(Ignored),
    /// Answer `{"ok": false, "error": ...}` on `<name>/result`.
    Refuse {
        /// The `id` of the body, when it had one.
        id: Option<String>,
        /// Why, for the caller.
        error: String,
    },
    /// Hand it to the adapter, which answers when the device has.
    Run(Command),
}

/// Why a message was ignored silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// An empty payload: the clear of a retained command (ours or anyone's), never an order.
    Empty,
    /// A second copy of a command already handled.
    Duplicate,
}

/// A parsed body.
struct Body {
    value: String,
    id: Option<String>,
}

/// Parses a plain or JSON body. `Err` carries the `id` when one could be read, and the error.
fn parse_body(payload: &[u8]) -> Result<Body, (Option<String>, String)> {
    let Ok(text) = std::str::from_utf8(payload) else {
        return Err((None, "the command is not UTF-8 text".into()));
    };
    let text = text.trim();
    if !text.starts_with('{') {
        return Ok(Body { value: text.to_owned(), id: None });
    }
    let map = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => {
            return Err((
                None,
                "a body starting with `{` must be a JSON object like {\"value\": 16, \"id\": \"a1\"}".into(),
            ));
        }
    };
    let id = match map.get("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.len() <= MAX_ID_BYTES => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err((None, format!("`id` must be a string of at most {MAX_ID_BYTES} bytes or a number"))),
    };
    if let Some(k) = map.keys().find(|k| !matches!(k.as_str(), "value" | "id")) {
        let k = crate::untrusted::clip(k);
        return Err((id, format!("unknown key `{k}` in the command body (it takes `value` and `id`)")));
    }
    let value = match map.get("value") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.trim().to_owned(),
        Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
        Some(_) => return Err((id, "`value` must be a number, a string or true/false".into())),
    };
    Ok(Body { value, id })
}

fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// Remembers recent commands to recognise second copies (bounded: [`RECENT`] entries).
#[derive(Debug, Default)]
pub(crate) struct Recent(VecDeque<(u64, Instant, Duration)>);

impl Recent {
    /// Whether `key` was seen within its window; remembers it otherwise.
    pub(crate) fn seen(&mut self, key: u64, window: Duration, now: Instant) -> bool {
        self.0.retain(|(_, at, w)| now.saturating_duration_since(*at) <= *w);
        if self.0.iter().any(|(k, _, _)| *k == key) {
            return true;
        }
        if self.0.len() >= RECENT {
            self.0.pop_front();
        }
        self.0.push_back((key, now, window));
        false
    }
}

/// The per-device state machine (see module docs).
#[derive(Debug)]
pub(crate) struct Gate {
    /// The device's rules.
    policy: Policy,
    /// When each offered command last ran, for the rate limit (bounded by the offered names).
    last_run: Vec<(&'static str, Instant)>,
    /// Recent commands, for duplicate detection.
    recent: Recent,
}

impl Gate {
    /// A gate for `policy`.
    pub(crate) fn new(policy: Policy) -> Gate {
        Gate { policy, last_run: Vec::new(), recent: Recent::default() }
    }

    /// Decides about one message on `<prefix>/<device_id>/<name>/set` arriving at `now`.
    pub(crate) fn decide(
        &mut self,
        device_id: &str,
        name: &str,
        payload: &[u8],
        retain: bool,
        now: Instant,
    ) -> Decision {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Decision::Ignore(Ignored::Empty);
        }
        if payload.len() > MAX_BODY_BYTES {
            return Decision::Refuse {
                id: None,
                error: format!("a command body of {} bytes is too long (at most {MAX_BODY_BYTES})", payload.len()),
            };
        }
        let body = parse_body(payload);
        // Second copies are dropped before anything can answer, so one command gets one result.
        let id = match &body {
            Ok(b) => b.id.as_deref(),
            Err((id, _)) => id.as_deref(),
        };
        let duplicate = match id {
            Some(id) => self.recent.seen(fingerprint(&[name.as_bytes(), b"id", id.as_bytes()]), ID_WINDOW, now),
            None => self.recent.seen(fingerprint(&[name.as_bytes(), b"body", payload]), COPY_WINDOW, now),
        };
        if duplicate {
            return Decision::Ignore(Ignored::Duplicate);
        }
        let body = match body {
            Ok(b) => b,
            Err((id, error)) => return Decision::Refuse { id, error },
        };
        let refuse = |error: String| Decision::Refuse { id: body.id.clone(), error };
        if retain {
            return refuse(
                "retained commands never run (a broker replays them at every reconnect); it was cleared, publish without the retain flag"
                    .into(),
            );
        }
        let p = &self.policy;
        let Some(name) = p.offered.iter().copied().find(|o| *o == name) else {
            let shown = crate::untrusted::clip(name);
            let known = crate::model::Quantity::lookup(name).is_some();
            let what = if known { "is read-only" } else { "is not a command" };
            return refuse(if p.offered.is_empty() {
                format!("`{shown}` {what}: device `{device_id}` takes no commands")
            } else {
                format!("`{shown}` {what} of device `{device_id}`; it takes {}", p.offered.join(", "))
            });
        };
        if p.off {
            return refuse(format!(
                "commands are off for device `{device_id}`; allow them with `commands: true` or `commands: [{name}]` under devices.{device_id}"
            ));
        }
        if !p.allows(name) {
            let list = p.allowed.as_deref().unwrap_or_default().join(", ");
            return refuse(format!("`{name}` is not in devices.{device_id}.commands ([{list}])"));
        }
        if !p.rate_limit.is_zero() {
            if let Some((_, last)) = self.last_run.iter().find(|(n, _)| *n == name) {
                let since = now.saturating_duration_since(*last);
                if since < p.rate_limit {
                    let wait = p.rate_limit - since;
                    return refuse(format!(
                        "rate limited: at most one `{name}` every {} (devices.{device_id}.command_rate_limit); retry in {:.1}s",
                        crate::config::types::format_duration(p.rate_limit),
                        wait.as_secs_f64()
                    ));
                }
            }
            self.last_run.retain(|(n, _)| *n != name);
            self.last_run.push((name, now));
        }
        Decision::Run(Command { name, value: body.value, id: body.id })
    }
}

/// Answers for device ids that do not exist under a prefix: a token bucket shared by all of them,
/// so strangers publishing to made-up ids cannot make the bridge flood the broker, and nothing is
/// stored per id.
#[derive(Debug)]
pub(crate) struct StrangerLimit {
    /// Answers left in the bucket.
    tokens: f64,
    /// When the bucket was last refilled.
    at: Instant,
    /// Second copies of the same message get no second answer.
    recent: Recent,
}

/// Answers per second to unknown device ids, and the burst allowed.
const STRANGER_RATE: f64 = 2.0;
const STRANGER_BURST: f64 = 10.0;

impl StrangerLimit {
    /// A full bucket.
    pub(crate) fn new(now: Instant) -> StrangerLimit {
        StrangerLimit { tokens: STRANGER_BURST, at: now, recent: Recent::default() }
    }

    /// Whether the message on `topic` may be answered (and its topic cleared).
    pub(crate) fn admit(&mut self, topic: &str, payload: &[u8], now: Instant) -> bool {
        if self.recent.seen(fingerprint(&[topic.as_bytes(), payload]), COPY_WINDOW, now) {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * STRANGER_RATE).min(STRANGER_BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The result body: `{"ok": true, "value": ...}` or `{"ok": false, "error": ...}`, with `"id"`
/// when the command had one.
pub(crate) fn result_body(result: &Result<serde_json::Value, String>, id: Option<&str>) -> serde_json::Value {
    let mut body = match result {
        Ok(v) => serde_json::json!({"ok": true, "value": v}),
        Err(e) => serde_json::json!({"ok": false, "error": e}),
    };
    if let Some(id) = id {
        body["id"] = serde_json::Value::from(id);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOE: &[&str] = &["current_limit", "force_state", "phase_mode"];

    fn gate(setting: Option<CommandsSetting>, default_on: bool) -> Gate {
        Gate::new(Policy::new(GOE, setting.as_ref(), default_on, DEFAULT_RATE_LIMIT))
    }

    fn error(d: Decision) -> String {
        match d {
            Decision::Refuse { error, .. } => error,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_value_runs_with_no_id() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        let d = g.decide("c", "current_limit", b" 16\n", false, Instant::now());
        assert_eq!(d, Decision::Run(Command { name: "current_limit", value: "16".into(), id: None }));
    }

    #[test]
    fn a_json_body_gives_value_and_id() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        let d = g.decide("c", "force_state", br#"{"value": "on", "id": "a1"}"#, false, Instant::now());
        assert_eq!(d, Decision::Run(Command { name: "force_state", value: "on".into(), id: Some("a1".into()) }));
        let d = g.decide("c", "current_limit", br#"{"value": 10, "id": 7}"#, false, Instant::now());
        assert_eq!(d, Decision::Run(Command { name: "current_limit", value: "10".into(), id: Some("7".into()) }));
    }

    #[test]
    fn bad_json_bodies_are_refused_with_the_id_when_readable() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        let now = Instant::now();
        assert!(error(g.decide("c", "current_limit", b"{not json", false, now)).contains("JSON object"));
        let d = g.decide("c", "current_limit", br#"{"value": 10, "id": "x", "extra": 1}"#, false, now);
        assert!(
            matches!(&d, Decision::Refuse { id: Some(i), error } if i == "x" && error.contains("`extra`")),
            "{d:?}"
        );
        assert!(error(g.decide("c", "current_limit", br#"{"value": [1]}"#, false, now)).contains("`value`"));
        let long = format!(r#"{{"value": 1, "id": "{}"}}"#, "x".repeat(65));
        assert!(error(g.decide("c", "current_limit", long.as_bytes(), false, now)).contains("`id`"));
    }

    #[test]
    fn empty_payloads_are_ignored_silently() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        assert_eq!(g.decide("c", "current_limit", b"", false, Instant::now()), Decision::Ignore(Ignored::Empty));
        assert_eq!(g.decide("c", "nonsense", b"  ", true, Instant::now()), Decision::Ignore(Ignored::Empty));
    }

    #[test]
    fn a_retained_command_is_refused_with_its_id() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        let d = g.decide("c", "current_limit", br#"{"value": 7, "id": "r"}"#, true, Instant::now());
        assert!(
            matches!(&d, Decision::Refuse { id: Some(i), error } if i == "r" && error.contains("retained")),
            "{d:?}"
        );
    }

    #[test]
    fn unknown_and_read_only_names_say_what_the_device_takes() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        let now = Instant::now();
        let e = error(g.decide("c", "power", b"1", false, now));
        assert!(e.contains("read-only") && e.contains("current_limit, force_state, phase_mode"), "{e}");
        let e = error(g.decide("c", "warp_drive", b"1", false, now));
        assert!(e.contains("is not a command"), "{e}");
        let mut meter = Gate::new(Policy::new(&[], None, true, DEFAULT_RATE_LIMIT));
        assert!(error(meter.decide("m", "power", b"1", false, now)).contains("takes no commands"));
    }

    #[test]
    fn commands_off_by_default_or_by_config_name_the_key() {
        let now = Instant::now();
        let e = error(gate(None, false).decide("charger", "current_limit", b"10", false, now));
        assert!(e.contains("commands are off") && e.contains("devices.charger"), "{e}");
        let e = error(gate(Some(CommandsSetting::All(false)), true).decide("c", "current_limit", b"10", false, now));
        assert!(e.contains("commands are off"), "{e}");
        assert!(matches!(gate(None, true).decide("c", "current_limit", b"10", false, now), Decision::Run(_)));
    }

    #[test]
    fn the_allow_list_admits_only_its_names() {
        let mut g = gate(Some(CommandsSetting::Only(vec!["current_limit".into()])), false);
        let now = Instant::now();
        assert!(matches!(g.decide("c", "current_limit", b"10", false, now), Decision::Run(_)));
        let e = error(g.decide("c", "force_state", b"on", false, now));
        assert!(e.contains("not in devices.c.commands ([current_limit])"), "{e}");
    }

    #[test]
    fn the_rate_limit_refuses_a_second_run_within_the_window_per_name() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        let t0 = Instant::now();
        assert!(matches!(g.decide("c", "current_limit", br#"{"value":10,"id":"1"}"#, false, t0), Decision::Run(_)));
        let e = error(g.decide("c", "current_limit", br#"{"value":11,"id":"2"}"#, false, t0 + Duration::from_secs(1)));
        assert!(e.contains("rate limited") && e.contains("2s") && e.contains("command_rate_limit"), "{e}");
        // Another name has its own budget.
        assert!(matches!(g.decide("c", "force_state", b"on", false, t0 + Duration::from_secs(1)), Decision::Run(_)));
        assert!(matches!(g.decide("c", "current_limit", b"12", false, t0 + Duration::from_secs(2)), Decision::Run(_)));
    }

    #[test]
    fn a_zero_rate_limit_disables_it() {
        let mut g = Gate::new(Policy::new(GOE, None, true, Duration::ZERO));
        let t0 = Instant::now();
        assert!(matches!(g.decide("c", "current_limit", b"10", false, t0), Decision::Run(_)));
        assert!(matches!(g.decide("c", "current_limit", b"11", false, t0), Decision::Run(_)));
    }

    #[test]
    fn a_second_copy_is_dropped_by_id_or_by_body_right_after() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        let t0 = Instant::now();
        let body = br#"{"value":10,"id":"once"}"#;
        assert!(matches!(g.decide("c", "current_limit", body, false, t0), Decision::Run(_)));
        assert_eq!(
            g.decide("c", "current_limit", body, false, t0 + Duration::from_secs(5)),
            Decision::Ignore(Ignored::Duplicate)
        );
        assert!(matches!(g.decide("c", "force_state", b"on", false, t0), Decision::Run(_)));
        assert_eq!(g.decide("c", "force_state", b"on", false, t0), Decision::Ignore(Ignored::Duplicate));
        // Copies of refused commands get no second answer either.
        assert!(matches!(g.decide("c", "power", b"1", true, t0), Decision::Refuse { .. }));
        assert_eq!(g.decide("c", "power", b"1", true, t0), Decision::Ignore(Ignored::Duplicate));
        // Later, the same plain body is a new command (here refused by nothing: 3 s later).
        assert!(matches!(g.decide("c", "force_state", b"on", false, t0 + Duration::from_secs(3)), Decision::Run(_)));
    }

    #[test]
    fn duplicate_memory_stays_bounded_whatever_arrives() {
        let mut g = gate(Some(CommandsSetting::All(true)), false);
        let t0 = Instant::now();
        for i in 0..10_000 {
            let _ = g.decide("c", "current_limit", format!(r#"{{"value":1,"id":"{i}"}}"#).as_bytes(), false, t0);
        }
        assert!(g.recent.0.len() <= RECENT);
    }

    #[test]
    fn strangers_get_a_burst_of_answers_then_a_trickle() {
        let t0 = Instant::now();
        let mut l = StrangerLimit::new(t0);
        let admitted = (0..100).filter(|i| l.admit(&format!("home/x{i}/power/set"), b"1", t0)).count();
        assert_eq!(admitted, STRANGER_BURST as usize);
        assert!(l.admit("home/late/power/set", b"1", t0 + Duration::from_secs(1)));
        assert!(!l.admit("home/late/power/set", b"1", t0 + Duration::from_secs(1)), "a second copy is not answered");
    }

    #[test]
    fn results_echo_the_id() {
        let ok = result_body(&Ok(serde_json::json!(16)), Some("a1"));
        assert_eq!(ok, serde_json::json!({"ok": true, "value": 16, "id": "a1"}));
        let err = result_body(&Err("no".into()), None);
        assert_eq!(err, serde_json::json!({"ok": false, "error": "no"}));
    }

    #[test]
    fn the_setting_reads_bools_and_lists() {
        let s: CommandsSetting = serde_norway::from_str("true").unwrap();
        assert_eq!(s, CommandsSetting::All(true));
        let s: CommandsSetting = serde_norway::from_str("[current_limit, force_state]").unwrap();
        assert_eq!(s, CommandsSetting::Only(vec!["current_limit".into(), "force_state".into()]));
        assert!(serde_norway::from_str::<CommandsSetting>("perhaps").is_err());
    }
}

//! `event/<Event>`: one OctoPrint event → a unified event (name from events.tsv or in snake_case,
//! payload normalised by its row's data rules), the printer_state it implies, the job quantities
//! it resets or completes and, for `FirmwareData`, the printer's identity. Retained events are
//! history, never new events.

use std::borrow::Cow;

use serde_json::{Map, Value as Json};
use time::OffsetDateTime;

use super::tables::{DataRules, LinkEffect, StateEffect, tables};
use super::{Counted, Mapper, Outcome, REPEAT_EVENT_SECS, Source, job_running, number, qs, round2};
use crate::model::{Event, Identity, Value};

/// OctoPrint's CamelCase names (events, payload keys) in snake_case: `PrintStarted` →
/// `print_started`, `EStop` → `e_stop`, `remoteAddress` → `remote_address`. Anything outside
/// `[a-z0-9_]` becomes `_`; the result is at most 64 characters.
pub(crate) fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let bytes = name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| bytes[j]);
            let next = bytes.get(i + 1).copied();
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.push(b.to_ascii_lowercase() as char);
        } else if b.is_ascii_lowercase() || b.is_ascii_digit() {
            out.push(b as char);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
        if out.len() >= 64 {
            break;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("unnamed");
    }
    out
}

impl Mapper {
    pub(super) fn event(&mut self, name: &str, obj: &Map<String, Json>, live: bool, out: &mut Outcome) {
        let t = tables();
        let row = t.event(name).copied();
        let ts = self.ts(obj, out);
        Self::set_ts(out, ts);
        let rules = row.map(|r| r.data).unwrap_or_default();
        if rules.firmware {
            // A fact about the printer, retained by design: good at start-up too.
            out.update.identity = firmware_identity(obj);
        }
        if !live {
            // A replay from the broker's store: plugins ≤ 0.8.13 retained every event, so this may
            // be months old. History, never a new event or a state change.
            if !rules.retained {
                out.problem(Counted::Rejected("retained_event"), name);
            }
            return;
        }
        let unified: Cow<'static, str> = match row.and_then(|r| r.name) {
            Some(n) => Cow::Borrowed(n),
            None => {
                if row.is_none() {
                    out.problem(Counted::Unknown, &format!("event/{name}"));
                }
                Cow::Owned(snake_case(name))
            }
        };
        if rules.repeats {
            let now = ts.unwrap_or_else(|| OffsetDateTime::now_utc().unix_timestamp());
            match self.repeated.get_mut(name) {
                Some(last) if now - *last < REPEAT_EVENT_SECS && now >= *last => return,
                Some(last) => *last = now,
                None => {
                    self.repeated.insert(name.to_owned(), now);
                }
            }
        }
        let mut data = normalise_data(obj, &self.ts_field, rules);
        match row.map(|r| r.state).unwrap_or(StateEffect::None) {
            StateEffect::None => {}
            StateEffect::Set(w, l) => self.set_state(w, l, ts, Source::Event, live, out),
            StateEffect::End => {
                if job_running(self.state) {
                    self.set_state("operational", LinkEffect::Up, ts, Source::Event, live, out);
                }
            }
            StateEffect::FromStateId => {
                let id = obj.get("state_id").and_then(Json::as_str);
                let text = obj.get("state_string").and_then(Json::as_str);
                let (w, l) = t.state(id, text);
                data.insert("state".into(), w.into());
                if id.is_some() || text.is_some() {
                    if w == "unknown" && id != Some("UNKNOWN") {
                        out.problem(Counted::Unknown, &format!("state_id {}", id.unwrap_or("-")));
                    }
                    self.set_state(w, l, ts, Source::Event, live, out);
                }
            }
        }
        let file = data.get("file").and_then(Json::as_str);
        if rules.selects
            && let Some(f) = file
        {
            out.update.push(qs().print_file, Value::Text(Cow::Owned(f.to_owned())));
        }
        if rules.starts {
            out.update.push(qs().print_progress, Value::Number(0.0));
            if self.have_elapsed {
                out.update.push(qs().print_time_elapsed, Value::Number(0.0));
            }
        }
        if rules.done {
            out.update.push(qs().print_progress, Value::Number(100.0));
            if self.have_time_left {
                out.update.push(qs().print_time_left, Value::Number(0.0));
            }
            if self.have_elapsed
                && let Some(d) = number(data.get("duration"))
            {
                // OctoPrint's printTime is `int(seconds)`: the plugin's next progress tick brings
                // the truncated number, which would be a second publish of the same rendered value.
                out.update.push(qs().print_time_elapsed, Value::Number(d.trunc()));
            }
        }
        out.update.events.push(Event { name: unified, data });
    }
}

/// `FirmwareData` `{name, data{FIRMWARE_NAME, MACHINE_TYPE, …}}` → identity.
fn firmware_identity(obj: &Map<String, Json>) -> Option<Identity> {
    let data = obj.get("data").and_then(Json::as_object);
    let text = |v: Option<&Json>| v.and_then(Json::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let firmware = text(data.and_then(|d| d.get("FIRMWARE_NAME"))).or_else(|| text(obj.get("name")));
    let model = text(data.and_then(|d| d.get("MACHINE_TYPE")));
    (firmware.is_some() || model.is_some()).then(|| Identity { firmware, model, ..Default::default() })
}

/// `sdcard` (1.x) and `printer` (2.0) name the same storage; the bridge says `printer`.
fn normalise_origin(v: Json) -> Json {
    match v.as_str() {
        Some("sdcard") => Json::String("printer".into()),
        _ => v,
    }
}

/// The event payload without the envelope, keys in snake_case, with the rules of its row applied.
pub(crate) fn normalise_data(obj: &Map<String, Json>, ts_field: &str, rules: DataRules) -> Map<String, Json> {
    let mut m = Map::new();
    for (k, v) in obj {
        if k == "_event" || k == ts_field {
            continue;
        }
        m.insert(snake_case(k), v.clone());
    }
    for key in ["origin", "storage", "target"] {
        if let Some(v) = m.remove(key) {
            m.insert(key.into(), normalise_origin(v));
        }
    }
    if rules.job {
        // 1.4+ `path` is relative to the storage; pre-1.4 `file` was an absolute host path and
        // `filename` the base name, which is what the progress topic calls the path.
        let path = m.remove("path").filter(Json::is_string);
        let filename = m.remove("filename").filter(Json::is_string);
        let legacy = m.remove("file");
        if let Some(f) = path.or(filename).or(legacy) {
            m.insert("file".into(), f);
        }
    }
    if rules.duration
        && let Some(t) = number(m.get("time"))
    {
        m.remove("time");
        m.insert("duration".into(), Json::from(round2(t)));
    }
    if rules.failure
        && m.get("reason").and_then(Json::as_str) == Some("error")
        && let Some(p) = number(m.get("progress")).filter(|p| *p <= 1.0)
    {
        m.insert("progress".into(), Json::from(round2(p * 100.0)));
    }
    m
}

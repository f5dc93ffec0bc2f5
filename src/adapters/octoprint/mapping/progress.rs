//! `progress/printing` and `progress/slicing`: the plugin's progress timer (file, percent, and
//! with `printer_data` the print times and the printer state) and the slicer's progress.

use std::borrow::Cow;

use serde_json::{Map, Value as Json};

use super::tables::{LinkEffect, tables};
use super::{Counted, Mapper, Outcome, Source, absent, number, qs};
use crate::model::Value;

impl Mapper {
    pub(super) fn progress_printing(&mut self, obj: &Map<String, Json>, live: bool, out: &mut Outcome) {
        let ts = self.ts(obj, out);
        if !newest(&mut self.progress_ts, ts, "progress/printing", out) {
            return;
        }
        Self::set_ts(out, ts);
        let path = obj.get("path").and_then(Json::as_str);
        if let Some(p) = path {
            out.update.push(qs().print_file, Value::Text(Cow::Owned(p.to_owned())));
        }
        let data = obj.get("printer_data").and_then(Json::as_object);
        let pd_progress = data.and_then(|d| d.get("progress")).and_then(Json::as_object);
        // With Print Time Genius the plugin computes `progress` from times; `completion` is the
        // file position then and disagrees (plugin PR #134).
        let genius = pd_progress.and_then(|p| p.get("printTimeLeftOrigin")).and_then(Json::as_str) == Some("genius");
        let completion = if genius { None } else { number(pd_progress.and_then(|p| p.get("completion"))) };
        let progress = completion.or_else(|| number(obj.get("progress")));
        match progress {
            Some(p) => out.update.push(qs().print_progress, Value::Number(p.clamp(0.0, 100.0))),
            None if obj.contains_key("progress") && !obj["progress"].is_null() => {
                out.problem(Counted::ParseError("bad_type"), "progress/printing")
            }
            None => {}
        }
        if let Some(p) = pd_progress {
            // A null time is OctoPrint saying "no job" (after a cancel: completion, printTime and
            // printTimeLeft all null): the value is absent, not frozen at its last reading.
            for (key, q, seen) in [
                ("printTime", qs().print_time_elapsed, &mut self.have_elapsed),
                ("printTimeLeft", qs().print_time_left, &mut self.have_time_left),
            ] {
                match p.get(key) {
                    Some(Json::Null) => out.update.push(q, absent()),
                    v => {
                        if let Some(t) = number(v).filter(|t| *t >= 0.0) {
                            *seen = true;
                            out.update.push(q, Value::Number(t));
                        }
                    }
                }
            }
        }
        if let Some(state) = data.and_then(|d| d.get("state")).and_then(Json::as_object) {
            let (w, l) = tables().state_from_printer_data(state);
            if w != "unknown" {
                self.set_state(w, l, ts, Source::PrinterData, live, out);
            }
        } else if live && path.is_some_and(|p| !p.is_empty()) && progress.is_some_and(|p| p > 0.0 && p < 100.0) {
            // The plugin's timer publishes only when the integer progress moves, which only happens
            // while a job runs.
            self.set_state("printing", LinkEffect::Up, ts, Source::Weak, live, out);
        }
    }

    pub(super) fn progress_slicing(&mut self, obj: &Map<String, Json>, out: &mut Outcome) {
        let ts = self.ts(obj, out);
        // The plugin publishes an all-empty reset at its first connect (issue #128): not a slice.
        let slicer = obj.get("slicer").and_then(Json::as_str).unwrap_or_default();
        let source = obj.get("source_path").and_then(Json::as_str).unwrap_or_default();
        if slicer.is_empty() && source.is_empty() {
            return;
        }
        if !newest(&mut self.slicing_ts, ts, "progress/slicing", out) {
            return;
        }
        Self::set_ts(out, ts);
        match number(obj.get("progress")) {
            Some(p) => out.update.push(qs().slicing_progress, Value::Number(p.clamp(0.0, 100.0))),
            None => out.problem(Counted::ParseError("bad_type"), "progress/slicing"),
        }
    }
}

/// Whether a sample stamped `ts` is not older than the last accepted one (`last`, which it then
/// becomes); an older one is counted as out of order under `what`. A late sample (queued during a
/// broker outage) must not overwrite a newer value.
fn newest(last: &mut Option<i64>, ts: Option<i64>, what: &str, out: &mut Outcome) -> bool {
    if let (Some(t), Some(prev)) = (ts, *last)
        && t < prev
    {
        out.problem(Counted::Rejected("out_of_order"), what);
        return false;
    }
    if ts.is_some() {
        *last = ts;
    }
    true
}

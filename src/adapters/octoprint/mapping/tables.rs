//! The vendor tables of the OctoPrint mapping, embedded at build time and parsed once:
//! `adapters/octoprint/events.tsv` (event → unified name, printer_state effect, data rules) and
//! `adapters/octoprint/states.tsv` (state ids, state strings and flags → printer_state word and
//! link effect). Checked at start-up: a bad row stops the boot with its file and line.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use crate::adapters::table::{self, TableError};

const EVENTS_TSV: &str = include_str!("../../../../adapters/octoprint/events.tsv");
const STATES_TSV: &str = include_str!("../../../../adapters/octoprint/states.tsv");

/// What an event or state says about whether the printer is connected to OctoPrint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkEffect {
    /// Connected (temperatures flow).
    Up,
    /// Not connected: availability goes offline with a reason.
    Down,
    /// Says nothing.
    Keep,
}

/// What a live event does to `printer_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateEffect {
    /// Nothing.
    None,
    /// Sets this word (with its link effect).
    Set(&'static str, LinkEffect),
    /// The job ended: `operational`, but only while a job was running.
    End,
    /// `PrinterStateChanged`: the word comes from the payload's `state_id`.
    FromStateId,
}

/// The data rules of an event row (see the header of events.tsv).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DataRules {
    /// name/path/origin payload: `file`, normalised origin.
    pub job: bool,
    /// `time` → `duration`.
    pub duration: bool,
    /// PrintFailed: progress fraction → percent when reason is `error`.
    pub failure: bool,
    /// The file becomes `print_file`.
    pub selects: bool,
    /// A new job: `print_progress` 0.
    pub starts: bool,
    /// A finished job: progress 100, time left 0, elapsed = duration.
    pub done: bool,
    /// M115 data → identity.
    pub firmware: bool,
    /// Retained by the plugin by design.
    pub retained: bool,
    /// Repeated by the firmware; rate-limited.
    pub repeats: bool,
}

/// One row of events.tsv.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRow {
    /// The unified name, or `None` to derive it with [`snake_case`](super::events::snake_case).
    pub name: Option<&'static str>,
    /// The printer_state effect.
    pub state: StateEffect,
    /// The data rules.
    pub data: DataRules,
}

/// The parsed data tables.
pub(crate) struct Tables {
    /// Exact event name → row (`pub(super)`: the unit tests count the rows).
    pub(super) events: HashMap<&'static str, EventRow>,
    /// `(prefix, suffix, row)` for wildcard rows such as `GcodeScript*Running`.
    patterns: Vec<(&'static str, &'static str, EventRow)>,
    state_ids: HashMap<&'static str, (&'static str, LinkEffect)>,
    prefixes: Vec<(&'static str, &'static str, LinkEffect)>,
    flags: Vec<(&'static str, &'static str, LinkEffect)>,
}

fn word(row: &table::Row, w: &'static str) -> Result<&'static str, TableError> {
    if crate::model::PRINTER_STATES.contains(&w) {
        Ok(w)
    } else {
        Err(row.error(format!("`{w}` is not a printer_state word of the contract")))
    }
}

fn link_effect(row: &table::Row, s: &str) -> Result<LinkEffect, TableError> {
    match s {
        "up" => Ok(LinkEffect::Up),
        "down" => Ok(LinkEffect::Down),
        "-" => Ok(LinkEffect::Keep),
        other => Err(row.error(format!("unknown link effect `{other}` (up, down or -)"))),
    }
}

table::parsed_once!(Tables, parse_tables);

fn parse_tables() -> Result<Tables, TableError> {
    let mut events = HashMap::new();
    let mut patterns = Vec::new();
    for row in table::rows("adapters/octoprint/events.tsv", EVENTS_TSV) {
        let [event, name, state, data] = row.cells()?;
        let state = match state {
            "-" => StateEffect::None,
            "end" => StateEffect::End,
            "state_id" => StateEffect::FromStateId,
            "offline" => StateEffect::Set(word(&row, state)?, LinkEffect::Down),
            w => StateEffect::Set(word(&row, w)?, LinkEffect::Up),
        };
        let mut rules = DataRules::default();
        for flag in data.split(',').map(str::trim).filter(|f| *f != "-") {
            let slot = match flag {
                "job" => &mut rules.job,
                "duration" => &mut rules.duration,
                "failure" => &mut rules.failure,
                "selects" => &mut rules.selects,
                "starts" => &mut rules.starts,
                "done" => &mut rules.done,
                "firmware" => &mut rules.firmware,
                "retained" => &mut rules.retained,
                "repeats" => &mut rules.repeats,
                other => return Err(row.error(format!("unknown data rule `{other}`"))),
            };
            *slot = true;
        }
        let entry = EventRow { name: (name != "*").then_some(name), state, data: rules };
        match event.split_once('*') {
            Some((prefix, suffix)) => patterns.push((prefix, suffix, entry)),
            None => {
                events.insert(event, entry);
            }
        }
    }
    let mut state_ids = HashMap::new();
    let mut prefixes = Vec::new();
    let mut flags = Vec::new();
    for row in table::rows("adapters/octoprint/states.tsv", STATES_TSV) {
        let [kind, key, w, link] = row.cells()?;
        let entry = (word(&row, w)?, link_effect(&row, link)?);
        match kind {
            "id" => {
                state_ids.insert(key, entry);
            }
            "prefix" => prefixes.push((key, entry.0, entry.1)),
            "flag" => flags.push((key, entry.0, entry.1)),
            other => return Err(row.error(format!("unknown kind `{other}` (id, prefix or flag)"))),
        }
    }
    Ok(Tables { events, patterns, state_ids, prefixes, flags })
}

impl Tables {
    /// The row of event `name` (exact, then wildcard rows), or `None` for an undocumented event.
    pub(crate) fn event(&self, name: &str) -> Option<&EventRow> {
        self.events.get(name).or_else(|| {
            self.patterns
                .iter()
                .find(|(p, s, _)| name.len() > p.len() + s.len() && name.starts_with(p) && name.ends_with(s))
                .map(|(_, _, row)| row)
        })
    }

    /// `state_id` (and `state_string` for ids not listed) → printer_state word and link effect.
    pub(crate) fn state(&self, state_id: Option<&str>, state_string: Option<&str>) -> (&'static str, LinkEffect) {
        if let Some(found) = state_id.and_then(|id| self.state_ids.get(id)) {
            return *found;
        }
        self.state_from_text(state_string)
    }

    /// Prefix match on a human state text (`Offline after error`, `Printing from SD`).
    pub(crate) fn state_from_text(&self, text: Option<&str>) -> (&'static str, LinkEffect) {
        let Some(text) = text else { return ("unknown", LinkEffect::Keep) };
        self.prefixes
            .iter()
            .find(|(p, _, _)| text.starts_with(p))
            .map(|(_, w, l)| (*w, *l))
            .unwrap_or(("unknown", LinkEffect::Keep))
    }

    /// `printer_data.state` (`{text, flags{…}}`) → word and link effect.
    pub(crate) fn state_from_printer_data(&self, state: &Map<String, Json>) -> (&'static str, LinkEffect) {
        if let Some(flags) = state.get("flags").and_then(Json::as_object) {
            for (flag, w, l) in &self.flags {
                if flags.get(*flag).and_then(Json::as_bool) == Some(true) {
                    return (w, *l);
                }
            }
        }
        self.state_from_text(state.get("text").and_then(Json::as_str))
    }
}

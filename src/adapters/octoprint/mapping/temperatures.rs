//! `temperature/<key>`: one heater's actual and target temperature, ordered by the plugin's
//! `_timestamp`, each key its own pair of quantities (bounded by [`MAX_SENSORS`]); a live sample
//! also proves the printer is connected again.

use std::borrow::Cow;

use serde_json::{Map, Value as Json};

use super::{Counted, MAX_SENSORS, Mapper, Outcome, number, qs};
use crate::model::{Quantity, Value};

impl Mapper {
    pub(super) fn temperature(&mut self, key: &str, obj: &Map<String, Json>, live: bool, out: &mut Outcome) {
        // Before plugin 0.6 the sample time was `time`; since then it is `_timestamp`.
        let ts = self.ts(obj, out).or_else(|| number(obj.get("time")).map(|t| t as i64).filter(|t| *t > 0));
        if let Some(t) = ts {
            let room = self.temp_ts.len() < MAX_SENSORS;
            match self.temp_ts.get_mut(key) {
                Some(prev) if t < *prev => {
                    out.problem(Counted::Rejected("out_of_order"), &format!("temperature/{key}"));
                    return;
                }
                Some(prev) => *prev = t,
                None if room => {
                    self.temp_ts.insert(key.to_owned(), t);
                }
                None => {}
            }
        }
        let Some((qa, qt)) = self.temp_quantities(key, out) else { return };
        // `actual`/`target` (plugin), `temperature` (OctoPrint-HomeAssistant's `soc`).
        let actual = obj.get("actual").or_else(|| obj.get("temperature"));
        let target = obj.get("target");
        for (q, v) in [(qa, actual), (qt, target)] {
            match v {
                None | Some(Json::Null) => {}
                Some(v) => match number(Some(v)) {
                    Some(n) => out.update.push(q, Value::Number(n)),
                    None => out.problem(Counted::ParseError("bad_type"), &format!("temperature/{key}")),
                },
            }
        }
        Self::set_ts(out, ts);
        // Temperatures flow only while the printer is connected: a live one newer than the
        // offline state means the printer came back (its Connected event may have been dropped
        // during a broker outage).
        if live && self.printer_down && !out.update.readings.is_empty() {
            let newer = match (ts, self.state_ts) {
                (Some(t), Some(s)) => t > s,
                _ => true,
            };
            if newer {
                self.printer_down = false;
                if self.state == Some("offline") {
                    // Connected, but in which state is not known until the next event.
                    self.state = Some("unknown");
                    self.state_from_event = false;
                    if ts.is_some() {
                        self.state_ts = ts;
                    }
                    out.update.push(qs().printer_state, Value::Text(Cow::Borrowed("unknown")));
                }
            }
        }
    }

    fn temp_quantities(&mut self, key: &str, out: &mut Outcome) -> Option<(Quantity, Quantity)> {
        if let Some(q) = self.temp_q.get(key) {
            return Some(*q);
        }
        if self.temp_q.len() >= MAX_SENSORS {
            out.problem(Counted::Rejected("too_many_sensors"), key);
            return None;
        }
        let mut name: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(32)
            .collect();
        if name.is_empty() {
            name.push('_');
        }
        let actual = Quantity::named(&format!("temperature_{name}"));
        let target = Quantity::named(&format!("temperature_{name}_target"));
        match (actual, target) {
            (Some(a), Some(t)) => {
                self.temp_q.insert(key.to_owned(), (a, t));
                Some((a, t))
            }
            _ => {
                out.problem(Counted::ParseError("bad_sensor_name"), key);
                None
            }
        }
    }
}

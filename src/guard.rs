//! The counter guard: keeps implausible readings out of `total_increasing` quantities (meter
//! readings, energy registers) of every adapter.
//!
//! A lifetime counter only rises, and only as fast as the meter can turn. Camera meters misread a
//! digit now and then, gateways restart with a garbage register, and one such reading ruins every
//! statistic built on the total (Home Assistant treats a drop as a meter reset and counts the whole
//! reading again). The router therefore passes each reading of a guarded quantity through
//! [`CounterGuard::check`] before publishing it:
//!
//! - the first reading (after start-up or an explicit reset) becomes the baseline;
//! - a reading is accepted when it is not lower than the last accepted one and rose by at most
//!   `max_rate` × the time since it (never less than [`MIN_WINDOW`] of it);
//! - otherwise it is rejected (`counter_decrease` or `counter_jump`) and remembered as a candidate
//!   level; when `confirmations` consecutive readings agree with the candidate (each not lower than
//!   the previous one and within the rate), the candidate becomes the new baseline: a replaced meter
//!   or a corrected register is accepted without manual work, a one-off misread never is;
//! - a new level stays provisional until `confirmations` further readings were accepted on it: a
//!   reading that continues the series it replaced (not lower, within the rate since) wins back at
//!   once, so a burst of identical garbage cannot hold a counter that reports rarely (go-e sends
//!   `eto` only when it changes) until enough good readings have arrived;
//! - a negative reading is never accepted, not even as the baseline (a lifetime counter starts at 0;
//!   the router already keeps values outside the quantity's plausible range out);
//! - an explicit reset (`<prefix>/<device>/<quantity>/reset`) accepts the next reading as is.
//!
//! Pure and allocation-free: the router keeps one [`CounterGuard`] per guarded value inside the
//! device lock it already holds, and only rejections (rare) cost a log line, a counter and an event.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

use crate::model::{FAMILIES, Quantity, ValueKind};

/// The shortest time span a rise is judged over: readings that arrive in quick succession (a burst,
/// a retained replay followed by a live value) may still rise by this much time's worth.
pub(crate) const MIN_WINDOW: Duration = Duration::from_secs(60);

/// Rises allowed when nothing is configured, in the quantity's unit per hour. A household water or
/// gas meter (up to G10) stays below 20 m³/h; 100 kWh/h (100 kW) is above any household connection
/// and any wallbox. Quantities not listed only get the decrease check.
pub(crate) const DEFAULT_MAX_RATES: &[(&str, f64)] =
    &[("volume", 20.0), ("energy_import", 100.0), ("energy_export", 100.0)];

/// Default number of agreeing readings before a new level is accepted.
pub(crate) const DEFAULT_CONFIRMATIONS: u8 = 3;

/// `guard:` — the counter guard of one device (keys beside `adapter:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Check readings of the device's lifetime counters (`volume`, `energy_import`, ...); set to
    /// false to publish whatever the device sends.
    pub enabled: bool,
    /// How many consecutive readings must agree on a new level (after a drop or an implausible
    /// jump) before it is accepted; the earlier ones are rejected. 2 to 100.
    #[serde(deserialize_with = "confirmations")]
    pub confirmations: u8,
    /// Highest believable rise per quantity, in the quantity's unit per hour (`volume`: m³/h,
    /// `energy_import`: kWh/h, i.e. kW). Keys are quantity names (`energy_import_t1`) or families
    /// (`energy_import`). Defaults: volume 20, energy_import 100, energy_export 100.
    #[serde(deserialize_with = "max_rates", skip_serializing_if = "BTreeMap::is_empty")]
    pub max_rate: BTreeMap<String, f64>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig { enabled: true, confirmations: DEFAULT_CONFIRMATIONS, max_rate: BTreeMap::new() }
    }
}

impl GuardConfig {
    /// Whether this is the default (so the effective config need not print it).
    pub(crate) fn is_default(&self) -> bool {
        *self == GuardConfig::default()
    }

    /// The limits for `q`, or `None` when `q` is not guarded (not a lifetime counter, or the guard
    /// is off). Resolved once per quantity, not per reading.
    pub(crate) fn limits_for(&self, q: Quantity) -> Option<Limits> {
        if !self.enabled || q.family().kind != ValueKind::TotalIncreasing {
            return None;
        }
        let family = q.family().name;
        let per_hour = self
            .max_rate
            .get(q.name())
            .or_else(|| self.max_rate.get(family))
            .copied()
            .or_else(|| DEFAULT_MAX_RATES.iter().find(|(n, _)| *n == family).map(|(_, r)| *r));
        Some(Limits { max_per_hour: per_hour, confirmations: self.confirmations.clamp(2, 100) })
    }
}

/// `confirmations:` is checked while parsing, so the error carries the key path.
fn confirmations<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    use serde::de::Error;
    let n = u64::deserialize(d)?;
    if !(2..=100).contains(&n) {
        return Err(D::Error::custom(format!("must be 2 to 100, not {n} (1 would accept every reading at once)")));
    }
    Ok(n as u8)
}

/// Names of the quantity families the guard applies to.
fn guarded_families() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().filter(|f| f.kind == ValueKind::TotalIncreasing).map(|f| f.name)
}

/// `max_rate:` keys must name a lifetime counter and values must be positive rates; checked while
/// parsing so the error carries the key path.
fn max_rates<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    use serde::de::Error;
    let map = BTreeMap::<String, f64>::deserialize(d)?;
    for (name, rate) in &map {
        let guarded = Quantity::lookup(name).is_some_and(|q| q.family().kind == ValueKind::TotalIncreasing);
        if !guarded {
            let names: Vec<&str> = guarded_families().collect();
            return Err(D::Error::custom(format!(
                "`{name}` is not a lifetime counter the guard checks (one of {}, or their `_t1`.. variants)",
                names.join(", ")
            )));
        }
        if !rate.is_finite() || *rate <= 0.0 {
            return Err(D::Error::custom(format!("max_rate of `{name}` must be a positive number per hour")));
        }
    }
    Ok(map)
}

/// The resolved limits of one guarded quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    /// Highest believable rise per hour; `None` checks only for drops.
    pub max_per_hour: Option<f64>,
    /// Agreeing readings needed before a new level is accepted.
    pub confirmations: u8,
}

/// Why a reading was rejected; the `reason` label of `hlbridge_readings_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Lower than the last accepted reading.
    Decrease,
    /// Rose faster than `max_rate` allows.
    Jump,
    /// Not a finite number.
    NotFinite,
    /// Negative: a lifetime counter never is.
    Negative,
}

impl Rejection {
    /// The metric label and event reason.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Rejection::Decrease => "counter_decrease",
            Rejection::Jump => "counter_jump",
            Rejection::NotFinite => "counter_not_finite",
            Rejection::Negative => "out_of_range",
        }
    }
}

/// What the router does with a reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verdict {
    /// The first reading after start-up or a reset: accepted as the baseline.
    Baseline,
    /// A plausible reading: publish it.
    Accept,
    /// Enough readings agreed on a new level (meter replaced, register corrected): publish it.
    NewLevel {
        /// The baseline it replaces.
        previous: f64,
    },
    /// Keep it out.
    Reject {
        /// Why.
        reason: Rejection,
        /// The last accepted reading, for the log and the event.
        accepted: f64,
        /// How many readings (this one included) agree on the rejected level so far.
        agreeing: u8,
        /// How many are needed to accept it.
        needed: u8,
    },
}

/// One point of a counter: value and when it was seen.
#[derive(Debug, Clone, Copy)]
struct Point {
    value: f64,
    /// When the router received it.
    at: Instant,
    /// The device's own timestamp of the reading, when it sent one.
    source_ts: Option<OffsetDateTime>,
    /// False for a retained replay without a source timestamp: how old it is, nobody knows.
    age_known: bool,
}

impl Point {
    /// Time from `self` to `later`: the longer of receipt time and device time, so a reading
    /// replayed from the broker's retained store does not look recent.
    fn elapsed_to(&self, at: Instant, source_ts: Option<OffsetDateTime>) -> Duration {
        let received = at.saturating_duration_since(self.at);
        let source = match (self.source_ts, source_ts) {
            (Some(a), Some(b)) if b > a => (b - a).try_into().unwrap_or(Duration::ZERO),
            _ => Duration::ZERO,
        };
        received.max(source)
    }

    /// Whether `value` can follow this point: not lower, and not faster than the limit.
    fn admits(&self, value: f64, at: Instant, source_ts: Option<OffsetDateTime>, limits: &Limits) -> Option<Rejection> {
        // Registers printed with few decimals, and float noise from gateways, must not look like drops.
        let tolerance = 1e-6 + self.value.abs() * 1e-9;
        if value < self.value - tolerance {
            return Some(Rejection::Decrease);
        }
        let per_hour = limits.max_per_hour?;
        if !self.age_known {
            return None;
        }
        let window = self.elapsed_to(at, source_ts).max(MIN_WINDOW);
        let allowed = per_hour * window.as_secs_f64() / 3600.0;
        (value - self.value > allowed + tolerance).then_some(Rejection::Jump)
    }
}

/// The guard state of one quantity of one device.
#[derive(Debug, Clone)]
pub(crate) struct CounterGuard {
    limits: Limits,
    /// The last accepted reading.
    accepted: Option<Point>,
    /// A rejected level and how many readings agree with it.
    candidate: Option<(Point, u8)>,
    /// Whether the current streak of rejections was logged (one line per streak, not per reading).
    logged: bool,
    /// While the accepted level is a provisional new level: the reading it replaced, and how many
    /// readings were accepted on the new level since.
    superseded: Option<(Point, u8)>,
}

impl CounterGuard {
    /// A guard with no baseline yet.
    pub(crate) fn new(limits: Limits) -> CounterGuard {
        CounterGuard { limits, accepted: None, candidate: None, logged: false, superseded: None }
    }

    /// Replaces the limits (config reload), keeping the state.
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Forgets the baseline: the next reading is accepted as is.
    pub(crate) fn reset(&mut self) {
        self.accepted = None;
        self.candidate = None;
        self.logged = false;
        self.superseded = None;
    }

    /// The last accepted value.
    pub(crate) fn accepted(&self) -> Option<f64> {
        self.accepted.map(|p| p.value)
    }

    /// Returns true once per streak of rejections: the caller logs the first and stays quiet after.
    pub(crate) fn first_of_streak(&mut self) -> bool {
        !std::mem::replace(&mut self.logged, true)
    }

    /// Judges `value`, received at `at` with the device's timestamp `source_ts` (if any); `live` is
    /// false for retained replays.
    pub(crate) fn check(&mut self, value: f64, at: Instant, source_ts: Option<OffsetDateTime>, live: bool) -> Verdict {
        if !value.is_finite() {
            return Verdict::Reject {
                reason: Rejection::NotFinite,
                accepted: self.accepted().unwrap_or(f64::NAN),
                agreeing: 0,
                needed: self.limits.confirmations,
            };
        }
        if value < 0.0 {
            return Verdict::Reject {
                reason: Rejection::Negative,
                accepted: self.accepted().unwrap_or(f64::NAN),
                agreeing: 0,
                needed: self.limits.confirmations,
            };
        }
        let point = Point { value, at, source_ts, age_known: live || source_ts.is_some() };
        let Some(base) = self.accepted else {
            self.accepted = Some(point);
            self.candidate = None;
            self.superseded = None;
            return Verdict::Baseline;
        };
        let Some(reason) = base.admits(value, at, source_ts, &self.limits) else {
            // Keep the higher of the two within the tolerance, so tiny wobbles cannot ratchet down.
            self.accepted = Some(if value >= base.value { point } else { Point { value: base.value, ..point } });
            self.candidate = None;
            self.logged = false;
            if let Some((_, since)) = &mut self.superseded {
                *since += 1;
                if *since >= self.limits.confirmations {
                    self.superseded = None;
                }
            }
            return Verdict::Accept;
        };
        if let Some((old, _)) = self.superseded
            && old.admits(value, at, source_ts, &self.limits).is_none()
        {
            // The provisional level was the odd one out: the old series goes on.
            self.accepted = Some(point);
            self.candidate = None;
            self.superseded = None;
            self.logged = false;
            return Verdict::NewLevel { previous: base.value };
        }
        let agreeing = match self.candidate {
            Some((c, n)) if c.admits(value, at, source_ts, &self.limits).is_none() => n.saturating_add(1),
            _ => 1,
        };
        if agreeing >= self.limits.confirmations {
            self.accepted = Some(point);
            self.candidate = None;
            self.logged = false;
            self.superseded = Some((base, 0));
            return Verdict::NewLevel { previous: base.value };
        }
        self.candidate = Some((point, agreeing));
        Verdict::Reject { reason, accepted: base.value, agreeing, needed: self.limits.confirmations }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_hour: f64) -> Limits {
        Limits { max_per_hour: Some(per_hour), confirmations: 3 }
    }

    fn mins(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    fn rejected(v: Verdict) -> Option<Rejection> {
        match v {
            Verdict::Reject { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn the_first_reading_becomes_the_baseline() {
        let mut g = CounterGuard::new(limits(20.0));
        assert_eq!(g.check(512.3, Instant::now(), None, true), Verdict::Baseline);
        assert_eq!(g.accepted(), Some(512.3));
    }

    #[test]
    fn a_plausible_rise_and_an_unchanged_reading_are_accepted() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(512.3, t0, None, true);
        assert_eq!(g.check(512.3, t0 + mins(5), None, true), Verdict::Accept);
        assert_eq!(g.check(513.0, t0 + mins(10), None, true), Verdict::Accept);
    }

    #[test]
    fn a_drop_is_rejected_and_the_last_good_value_kept() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(512.3025, t0, None, true);
        let v = g.check(512.3015, t0 + mins(5), None, true);
        assert_eq!(v, Verdict::Reject { reason: Rejection::Decrease, accepted: 512.3025, agreeing: 1, needed: 3 });
        assert_eq!(g.accepted(), Some(512.3025));
    }

    #[test]
    fn a_misread_digit_that_rises_too_fast_is_rejected_as_a_jump() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(512.3, t0, None, true);
        // 70 m³ in 5 minutes is 840 m³/h.
        assert_eq!(rejected(g.check(582.3, t0 + mins(5), None, true)), Some(Rejection::Jump));
        // The next correct reading is accepted again and the misread forgotten.
        assert_eq!(g.check(512.4, t0 + mins(10), None, true), Verdict::Accept);
        assert_eq!(rejected(g.check(582.5, t0 + mins(15), None, true)), Some(Rejection::Jump));
    }

    #[test]
    fn the_allowed_rise_grows_with_the_time_since_the_last_accepted_reading() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(100.0, t0, None, true);
        // 15 m³ after one hour is within 20 m³/h; 15 m³ after 30 minutes is not.
        let mut h = g.clone();
        assert_eq!(g.check(115.0, t0 + mins(60), None, true), Verdict::Accept);
        assert_eq!(rejected(h.check(115.0, t0 + mins(30), None, true)), Some(Rejection::Jump));
    }

    #[test]
    fn readings_close_together_are_judged_over_at_least_a_minute() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(60.0));
        g.check(10.0, t0, None, true);
        // One minute at 60/h allows 1.0, even though the readings are a millisecond apart.
        assert_eq!(g.check(10.9, t0 + Duration::from_millis(1), None, true), Verdict::Accept);
        assert_eq!(rejected(g.check(12.5, t0 + Duration::from_millis(2), None, true)), Some(Rejection::Jump));
    }

    #[test]
    fn the_device_timestamp_counts_when_a_retained_replay_is_old() {
        let t0 = Instant::now();
        let ts0 = time::macros::datetime!(2025-03-22 12:00 UTC);
        let mut g = CounterGuard::new(limits(20.0));
        // Retained replay of a reading taken three hours ago, then a live one now.
        g.check(100.0, t0, Some(ts0), false);
        let v = g.check(130.0, t0 + Duration::from_secs(1), Some(ts0 + time::Duration::hours(3)), true);
        assert_eq!(v, Verdict::Accept);
    }

    #[test]
    fn after_a_retained_replay_of_unknown_age_only_drops_are_rejected() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(100.0, t0, None, false);
        assert_eq!(g.check(400.0, t0 + Duration::from_secs(1), None, true), Verdict::Accept);
        assert_eq!(rejected(g.check(399.0, t0 + mins(5), None, true)), Some(Rejection::Decrease));
    }

    #[test]
    fn a_new_level_is_accepted_after_enough_consistent_readings() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(512.3, t0, None, true);
        // The meter was replaced: it now reads from zero.
        assert_eq!(rejected(g.check(0.01, t0 + mins(5), None, true)), Some(Rejection::Decrease));
        match g.check(0.02, t0 + mins(10), None, true) {
            Verdict::Reject { agreeing: 2, needed: 3, .. } => {}
            other => panic!("second agreeing reading must still be rejected: {other:?}"),
        }
        assert_eq!(g.check(0.03, t0 + mins(15), None, true), Verdict::NewLevel { previous: 512.3 });
        assert_eq!(g.check(0.04, t0 + mins(20), None, true), Verdict::Accept);
    }

    #[test]
    fn readings_that_disagree_with_each_other_never_become_a_new_level() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(512.3, t0, None, true);
        // Random misreads: each one starts a new candidate.
        for (i, v) in [900.0, 100.0, 950.0, 50.0, 990.0, 10.0].into_iter().enumerate() {
            let v = g.check(v, t0 + mins(5 * (i as u64 + 1)), None, true);
            assert!(matches!(v, Verdict::Reject { agreeing: 1, .. }), "{v:?}");
        }
        assert_eq!(g.accepted(), Some(512.3));
    }

    #[test]
    fn a_reset_accepts_the_next_reading_whatever_it_is() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(512.3, t0, None, true);
        g.reset();
        assert_eq!(g.check(3.0, t0 + mins(1), None, true), Verdict::Baseline);
        assert_eq!(g.accepted(), Some(3.0));
    }

    #[test]
    fn tiny_float_noise_below_the_last_value_is_not_a_drop() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(100.0));
        g.check(1234.567, t0, None, true);
        assert_eq!(g.check(1_234.566_999_999_9, t0 + mins(1), None, true), Verdict::Accept);
        // The baseline does not ratchet down with the noise.
        assert_eq!(g.accepted(), Some(1234.567));
    }

    #[test]
    fn without_a_rate_limit_only_drops_are_rejected() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(Limits { max_per_hour: None, confirmations: 3 });
        g.check(1.0, t0, None, true);
        assert_eq!(g.check(1.0e9, t0 + Duration::from_secs(1), None, true), Verdict::Accept);
        assert_eq!(rejected(g.check(5.0, t0 + Duration::from_secs(2), None, true)), Some(Rejection::Decrease));
    }

    #[test]
    fn non_finite_readings_are_rejected_without_touching_the_state() {
        let mut g = CounterGuard::new(limits(20.0));
        g.check(5.0, Instant::now(), None, true);
        assert_eq!(rejected(g.check(f64::NAN, Instant::now(), None, true)), Some(Rejection::NotFinite));
        assert_eq!(g.accepted(), Some(5.0));
    }

    #[test]
    fn a_negative_reading_never_becomes_the_baseline() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        for v in [-1.0, -5e11] {
            let verdict = g.check(v, t0, None, true);
            assert_eq!(rejected(verdict), Some(Rejection::Negative), "{v}");
            assert_eq!(g.accepted(), None);
        }
        assert_eq!(Rejection::Negative.reason(), "out_of_range");
        assert_eq!(g.check(123.45, t0 + mins(1), None, true), Verdict::Baseline);
        assert_eq!(rejected(g.check(-1.0, t0 + mins(2), None, true)), Some(Rejection::Negative));
        assert_eq!(g.accepted(), Some(123.45));
    }

    #[test]
    fn a_bogus_level_from_identical_readings_is_replaced_by_the_next_good_reading() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(100.0));
        g.check(12_345.6, t0, None, true);
        // Three identical garbage readings agree with each other and become a new level ...
        let secs = |n: u64| t0 + Duration::from_secs(n);
        assert!(rejected(g.check(9.0e8, secs(1), None, true)).is_some());
        assert!(rejected(g.check(9.0e8, secs(2), None, true)).is_some());
        assert_eq!(g.check(9.0e8, secs(3), None, true), Verdict::NewLevel { previous: 12_345.6 });
        // ... but the first good reading (a counter that reports rarely may send only one) wins back.
        assert_eq!(g.check(12_345.7, secs(28), None, true), Verdict::NewLevel { previous: 9.0e8 });
        assert_eq!(g.accepted(), Some(12_345.7));
        assert_eq!(g.check(12_345.8, secs(40), None, true), Verdict::Accept);
    }

    #[test]
    fn a_new_level_confirmed_by_further_readings_is_not_undone_by_the_old_series() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(512.3, t0, None, true);
        // Meter replaced: three agreeing readings from zero, then more on the new meter.
        for (i, v) in [0.01, 0.02, 0.03, 0.04, 0.05, 0.06].into_iter().enumerate() {
            g.check(v, t0 + mins(5 * (i as u64 + 1)), None, true);
        }
        assert_eq!(g.accepted(), Some(0.06));
        // A misread that would continue the old meter's series is just a jump now.
        assert_eq!(rejected(g.check(512.4, t0 + mins(40), None, true)), Some(Rejection::Jump));
        assert_eq!(g.accepted(), Some(0.06));
    }

    #[test]
    fn one_log_line_per_streak_of_rejections() {
        let t0 = Instant::now();
        let mut g = CounterGuard::new(limits(20.0));
        g.check(10.0, t0, None, true);
        g.check(1.0, t0 + mins(1), None, true);
        assert!(g.first_of_streak());
        g.check(2.0, t0 + mins(2), None, true);
        assert!(!g.first_of_streak());
        g.check(10.1, t0 + mins(3), None, true);
        g.check(1.0, t0 + mins(4), None, true);
        assert!(g.first_of_streak(), "an accepted reading ends the streak");
    }

    #[test]
    fn limits_come_from_the_quantity_then_its_family_then_the_defaults() {
        let mut c = GuardConfig::default();
        assert_eq!(c.limits_for(Quantity::known("volume")).unwrap().max_per_hour, Some(20.0));
        assert_eq!(c.limits_for(Quantity::known("energy_import_t1")).unwrap().max_per_hour, Some(100.0));
        c.max_rate.insert("energy_import".into(), 30.0);
        c.max_rate.insert("energy_import_t2".into(), 5.0);
        assert_eq!(c.limits_for(Quantity::known("energy_import_t1")).unwrap().max_per_hour, Some(30.0));
        assert_eq!(c.limits_for(Quantity::known("energy_import_t2")).unwrap().max_per_hour, Some(5.0));
        assert!(c.limits_for(Quantity::known("power")).is_none(), "gauges are not guarded");
        assert!(c.limits_for(Quantity::known("session_energy")).is_none(), "totals that reset are not guarded");
        c.enabled = false;
        assert!(c.limits_for(Quantity::known("volume")).is_none());
    }

    #[test]
    fn max_rate_keys_must_be_lifetime_counters_with_positive_rates() {
        let ok: GuardConfig = serde_json::from_value(serde_json::json!({"max_rate": {"volume": 5}})).unwrap();
        assert_eq!(ok.max_rate["volume"], 5.0);
        let e = serde_json::from_value::<GuardConfig>(serde_json::json!({"max_rate": {"power": 5}})).unwrap_err();
        assert!(e.to_string().contains("not a lifetime counter"), "{e}");
        let e = serde_json::from_value::<GuardConfig>(serde_json::json!({"max_rate": {"volume": -1}})).unwrap_err();
        assert!(e.to_string().contains("positive"), "{e}");
        let e = serde_json::from_value::<GuardConfig>(serde_json::json!({"confirmations": 1})).unwrap_err();
        assert!(e.to_string().contains("2 to 100"), "{e}");
    }
}

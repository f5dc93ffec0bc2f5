//! The clock, injectable: the router and the parts that decide on time (freshness, heartbeats,
//! `min_interval`) read it instead of `Instant::now()`, so their tests move time forward by a call
//! instead of sleeping.

#[cfg(test)]
use std::sync::Mutex;
#[cfg(test)]
use std::time::Duration;
use std::time::{Instant, SystemTime};

/// One reading of the clock: monotonic time for durations, wall-clock time for what is shown or
/// published (timestamps, `last_seen`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// For intervals and deadlines (never jumps).
    pub(crate) mono: Instant,
    /// For timestamps users see.
    pub(crate) wall: SystemTime,
}

/// Where time comes from.
pub(crate) trait Clock: Send + Sync {
    /// The time now.
    fn now(&self) -> Now;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Now {
        Now { mono: Instant::now(), wall: SystemTime::now() }
    }
}

/// A clock that moves only when told (tests).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct ManualClock(Mutex<Now>);

#[cfg(test)]
impl ManualClock {
    /// Starts at the real time now.
    pub(crate) fn new() -> ManualClock {
        ManualClock(Mutex::new(SystemClock.now()))
    }

    /// Moves both clocks forward by `by`.
    pub(crate) fn advance(&self, by: Duration) {
        let mut n = self.0.lock().unwrap_or_else(|e| e.into_inner());
        n.mono += by;
        n.wall += by;
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Now {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Now {
    /// This reading `by` later (tests of pure state machines step time with it).
    #[cfg(test)]
    pub(crate) fn after(self, by: Duration) -> Now {
        Now { mono: self.mono + by, wall: self.wall + by }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        let a = c.now();
        assert_eq!(c.now().mono, a.mono);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now().mono - a.mono, Duration::from_secs(90));
        assert_eq!(c.now().wall.duration_since(a.wall).unwrap(), Duration::from_secs(90));
    }
}

//! Log a problem the first time it shows, then only count it: one helper every adapter uses, so a
//! device that repeats the same fault every second does not flood the log, and a device that makes
//! up endless new keys cannot grow the memory behind it.

use std::collections::HashSet;

/// Most distinct problems remembered; past it nothing more is logged (counters still count).
const MAX_KEYS: usize = 1024;
/// Most bytes of a key kept: keys quote the device, a clipped key keeps the set small whatever the
/// device sends.
const MAX_KEY_BYTES: usize = 128;

/// The problems already logged for one device.
#[derive(Debug, Default)]
pub(crate) struct LogOnce(HashSet<String>);

impl LogOnce {
    /// Whether `key` shows for the first time (then log it); false for a repeat or once full.
    pub(crate) fn first(&mut self, key: &str) -> bool {
        if self.0.len() >= MAX_KEYS {
            return false;
        }
        let key = crate::untrusted::truncated(key, MAX_KEY_BYTES).unwrap_or_else(|| key.to_owned());
        self.0.insert(key)
    }

    /// Whether `key` was logged already.
    pub(crate) fn seen(&self, key: &str) -> bool {
        self.0.contains(key)
    }

    /// Like [`LogOnce::first`] for a problem of a kind (`unknown`, `bad_type`) about `key`.
    pub(crate) fn first_of(&mut self, kind: &str, key: &str) -> bool {
        self.first(&format!("{kind} {key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_logged_once_and_repeats_are_not() {
        let mut l = LogOnce::default();
        assert!(l.first("unknown fwv"));
        assert!(!l.first("unknown fwv"));
        assert!(l.first_of("unknown", "typ"));
        assert!(!l.first("unknown typ"), "first_of and first share the key space");
    }

    #[test]
    fn made_up_keys_cannot_grow_the_set_without_bound() {
        let mut l = LogOnce::default();
        let long = "k".repeat(100_000);
        for i in 0..5_000 {
            l.first(&format!("{i}{long}"));
        }
        assert_eq!(l.0.len(), MAX_KEYS);
        assert!(l.0.iter().all(|k| k.len() <= MAX_KEY_BYTES + 32), "keys are clipped");
        assert!(!l.first("anything new"), "full: nothing more is logged");
    }
}

//! The outage buffer: publishes that could not go out yet (broker unreachable, or unacknowledged
//! when the connection broke), kept in order within a bound.
//!
//! Pure data structure, no IO: the connection task pushes into it while disconnected and drains it
//! first after the next ConnAck. Retained publishes are coalesced to the latest payload per topic
//! (only the last retained value of a topic matters to a subscriber), non-retained ones (events,
//! command results) are all kept in order; when the bound is reached the oldest entry is dropped and
//! counted, so a long outage keeps the most recent history rather than the first minutes of it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::QoS;

/// One publish waiting for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Topic, already validated by the publisher.
    pub(crate) topic: Arc<str>,
    /// Payload bytes (shared, never copied on requeue).
    pub(crate) payload: Bytes,
    /// Delivery guarantee requested by the publisher.
    pub(crate) qos: QoS,
    /// Whether the broker should retain it.
    pub(crate) retain: bool,
}

/// What a push did, so the caller can count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Appended at the back.
    Queued,
    /// Replaced an older retained payload of the same topic in place (nothing lost: the newer value
    /// supersedes it).
    Coalesced,
    /// Appended, and the oldest entry had to be dropped to stay within the bound.
    DroppedOldest,
}

/// Bounded FIFO with per-topic coalescing of retained publishes.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Entries in publish order.
    entries: VecDeque<Pending>,
    /// Sequence number of `entries[0]`: positions stay valid while the front is popped.
    front_seq: u64,
    /// Retained topic → sequence number of its entry, for coalescing.
    retained_at: HashMap<Arc<str>, u64>,
    /// Upper bound of buffered entries (entries requeued after a broken connection may exceed it
    /// by at most the in-flight window, so nothing already handed to the broker is dropped here).
    capacity: usize,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` entries.
    pub(crate) fn new(capacity: usize) -> Outbox {
        Outbox { entries: VecDeque::new(), front_seq: 0, retained_at: HashMap::new(), capacity: capacity.max(1) }
    }

    /// Number of entries waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Buffers `p` at the back, coalescing a retained publish onto an older one of the same topic.
    pub(crate) fn push(&mut self, p: Pending) -> Pushed {
        if p.retain
            && let Some(&seq) = self.retained_at.get(&p.topic)
            && let Some(slot) = self.entries.get_mut(seq.wrapping_sub(self.front_seq) as usize)
        {
            slot.payload = p.payload;
            slot.qos = p.qos;
            return Pushed::Coalesced;
        }
        let mut outcome = Pushed::Queued;
        if self.entries.len() >= self.capacity {
            self.pop_front();
            outcome = Pushed::DroppedOldest;
        }
        let seq = self.front_seq.wrapping_add(self.entries.len() as u64);
        if p.retain {
            self.retained_at.insert(p.topic.clone(), seq);
        }
        self.entries.push_back(p);
        outcome
    }

    /// Puts publishes that were in flight when the connection broke back at the front, oldest
    /// first, so they go out again before anything published later.
    pub(crate) fn requeue_front(&mut self, unacked: Vec<Pending>) {
        for p in unacked.into_iter().rev() {
            // Not coalesced: a newer retained value of the topic, if buffered, follows it and wins.
            self.front_seq = self.front_seq.wrapping_sub(1);
            self.entries.push_front(p);
        }
    }

    /// Takes the oldest entry.
    pub(crate) fn pop_front(&mut self) -> Option<Pending> {
        let p = self.entries.pop_front()?;
        if p.retain && self.retained_at.get(&p.topic) == Some(&self.front_seq) {
            self.retained_at.remove(&p.topic);
        }
        self.front_seq = self.front_seq.wrapping_add(1);
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str, payload: &str) -> Pending {
        Pending { topic: topic.into(), payload: Bytes::from(payload.to_owned()), qos: QoS::AtLeastOnce, retain: false }
    }

    fn retained(topic: &str, payload: &str) -> Pending {
        Pending { retain: true, ..event(topic, payload) }
    }

    fn drain(o: &mut Outbox) -> Vec<(String, String)> {
        std::iter::from_fn(|| o.pop_front())
            .map(|p| (p.topic.to_string(), String::from_utf8(p.payload.to_vec()).unwrap()))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(t, p)| ((*t).to_owned(), (*p).to_owned())).collect()
    }

    #[test]
    fn events_are_kept_in_publish_order() {
        let mut o = Outbox::new(10);
        for i in 0..5 {
            assert_eq!(o.push(event("home/ev/event", &i.to_string())), Pushed::Queued);
        }
        let got = drain(&mut o);
        assert_eq!(got.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["0", "1", "2", "3", "4"]);
    }

    #[test]
    fn a_retained_topic_is_coalesced_to_its_latest_payload_at_its_first_position() {
        let mut o = Outbox::new(10);
        o.push(retained("home/ev/power", "1"));
        o.push(event("home/ev/event", "plugged"));
        assert_eq!(o.push(retained("home/ev/power", "2")), Pushed::Coalesced);
        assert_eq!(o.push(retained("home/ev/power", "3")), Pushed::Coalesced);
        assert_eq!(o.len(), 2);
        assert_eq!(drain(&mut o), pairs(&[("home/ev/power", "3"), ("home/ev/event", "plugged")]));
    }

    #[test]
    fn the_oldest_entry_is_dropped_when_the_bound_is_reached() {
        let mut o = Outbox::new(3);
        for i in 0..3 {
            o.push(event("e", &i.to_string()));
        }
        assert_eq!(o.push(event("e", "3")), Pushed::DroppedOldest);
        assert_eq!(drain(&mut o), pairs(&[("e", "1"), ("e", "2"), ("e", "3")]));
    }

    #[test]
    fn coalescing_still_works_after_the_front_was_dropped_or_popped() {
        let mut o = Outbox::new(2);
        o.push(retained("a", "1"));
        o.push(retained("b", "1"));
        o.push(retained("c", "1")); // drops a
        assert_eq!(o.push(retained("a", "2")), Pushed::DroppedOldest, "a was dropped, so it is queued anew");
        assert_eq!(o.push(retained("c", "2")), Pushed::Coalesced);
        assert_eq!(o.pop_front().map(|p| p.topic), Some("c".into()));
        assert_eq!(o.push(retained("c", "3")), Pushed::Queued, "the popped entry is no coalescing target");
        assert_eq!(drain(&mut o), pairs(&[("a", "2"), ("c", "3")]));
    }

    #[test]
    fn requeued_in_flight_publishes_go_out_first_in_their_original_order() {
        let mut o = Outbox::new(10);
        o.push(retained("later", "x"));
        o.requeue_front(vec![event("first", "1"), event("second", "2")]);
        assert_eq!(o.push(retained("later", "y")), Pushed::Coalesced, "positions stay valid after a requeue");
        assert_eq!(drain(&mut o), pairs(&[("first", "1"), ("second", "2"), ("later", "y")]));
        assert!(o.is_empty());
    }
}

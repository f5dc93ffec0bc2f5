use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::{Inline, Lane, Offer, Offered};
use crate::mqtt::Message;

/// Records what it handled; declines topics ending in `/result` (as go-e's answers to writes).
#[derive(Default, Clone)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Inline for Recorder {
    fn handle(&mut self, msg: &Message) -> bool {
        if msg.topic.ends_with("/result") {
            return false;
        }
        self.log.lock().unwrap().push(msg.topic.clone());
        true
    }

    fn end_of_burst(&mut self) {
        self.log.lock().unwrap().push("end".into());
    }
}

fn msg(topic: &str) -> Message {
    Message { topic: topic.into(), payload: Bytes::from_static(b"1"), retain: false }
}

fn lane(capacity: usize) -> (Lane<Recorder>, mpsc::Receiver<Message>, Recorder, Counter) {
    let (tx, rx) = mpsc::channel(capacity);
    let recorder = Recorder::default();
    let dropped = Counter::default();
    (Lane::new(recorder.clone(), tx, Some(dropped.clone())), rx, recorder, dropped)
}

fn topics(rx: &mut mpsc::Receiver<Message>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m.topic);
    }
    out
}

#[test]
fn a_message_is_handled_on_the_spot_while_nothing_is_queued() {
    let (lane, mut rx, recorder, _) = lane(8);
    assert_eq!(lane.offer(msg("a")), Offered::Handled { first_in_burst: true });
    assert_eq!(lane.offer(msg("b")), Offered::Handled { first_in_burst: false });
    assert_eq!(recorder.log(), ["a", "b"]);
    assert!(topics(&mut rx).is_empty(), "nothing went through the queue");
}

#[test]
fn a_message_never_overtakes_one_queued_before_it() {
    let (lane, mut rx, recorder, _) = lane(8);
    // Declined: queued for the subscriber's task.
    assert_eq!(lane.offer(msg("x/result")), Offered::Queued);
    // The handler would take this one, but the answer before it is still waiting.
    assert_eq!(lane.offer(msg("a")), Offered::Queued);
    assert_eq!(lane.queued(), 2);
    assert!(recorder.log().is_empty());
    assert_eq!(topics(&mut rx), ["x/result", "a"]);
    // Received is not done: the lane stays shut until the task says so for both.
    assert_eq!(lane.offer(msg("b")), Offered::Queued);
    lane.done();
    lane.done();
    assert_eq!(lane.offer(msg("c")), Offered::Queued, "b is still queued");
    assert_eq!(topics(&mut rx), ["b", "c"]);
    lane.done();
    lane.done();
    assert_eq!(lane.queued(), 0);
    assert_eq!(lane.offer(msg("d")), Offered::Handled { first_in_burst: true });
    assert_eq!(recorder.log(), ["d"]);
}

#[test]
fn a_full_queue_drops_the_message_and_counts_it() {
    let (lane, mut rx, recorder, dropped) = lane(2);
    assert_eq!(lane.queue(msg("a")), Offered::Queued);
    assert_eq!(lane.queue(msg("b")), Offered::Queued);
    assert_eq!(lane.queue(msg("c")), Offered::Full);
    assert_eq!(dropped.get(), 1, "the drop is counted");
    assert_eq!(lane.queued(), 2, "a dropped message is not waited for");
    assert!(recorder.log().is_empty());
    assert_eq!(topics(&mut rx), ["a", "b"]);
}

#[test]
fn the_lane_is_not_taken_while_the_subscribers_task_holds_its_state() {
    let (lane, mut rx, recorder, _) = lane(8);
    let offered = lane.with(|_| lane.offer(msg("a")));
    assert_eq!(offered, Some(Offered::Queued), "queued, not waited for");
    assert!(recorder.log().is_empty());
    assert_eq!(topics(&mut rx), ["a"]);
}

#[test]
fn a_burst_ends_once_and_only_after_what_was_queued_behind_it() {
    let (lane, mut rx, recorder, _) = lane(8);
    assert_eq!(lane.offer(msg("a")), Offered::Handled { first_in_burst: true });
    lane.end_of_burst();
    assert_eq!(recorder.log(), ["a", "end"]);
    // The next read starts a new burst.
    assert_eq!(lane.offer(msg("b")), Offered::Handled { first_in_burst: true });
    assert_eq!(lane.offer(msg("c/result")), Offered::Queued);
    lane.end_of_burst();
    assert_eq!(recorder.log(), ["a", "end", "b"], "the subscriber's task ends this burst once its queue is empty");
    assert_eq!(topics(&mut rx), ["c/result"]);
}

#[test]
fn a_stopped_subscriber_gets_nothing() {
    let (lane, rx, recorder, _) = lane(8);
    lane.close();
    assert_eq!(lane.offer(msg("a")), Offered::Closed);
    assert_eq!(lane.with(|_| ()), None);
    lane.end_of_burst();
    drop(rx);
    assert_eq!(lane.queue(msg("b")), Offered::Closed);
    assert!(lane.is_closed());
    assert!(recorder.log().is_empty());
}

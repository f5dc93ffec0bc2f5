//! The one way an adapter takes in a device's MQTT messages: a subscription with a bounded queue
//! whose overflow is counted on the device's `hlbridge_ingest_dropped_total` and logged (once when
//! it starts, then at most once a minute with the running total). Every MQTT-fed adapter (go-e,
//! whatwatt in MQTT mode, AI-on-the-edge, OctoPrint) subscribes through [`subscribe`], or through
//! [`subscribe_lane`] when its message handling needs only its own state: then a fast lane beside
//! the queue handles messages on the connection task while that keeps every guarantee of the
//! queue (see [`crate::mqtt::inline`]).
//!
//! The queue is bounded because a device (or anyone publishing on its topics) must never make the
//! bridge grow without limit or stall the shared MQTT connection: when the adapter cannot keep up,
//! new messages are dropped at the door, counted per device, and the adapter carries on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::mqtt::Message;
use crate::mqtt::inline::{Consumer, Inline, Lane, LaneRx};
use crate::router::DeviceHandle;

/// The largest `ingest_queue` a config may ask for (bounds memory: 1 M small messages).
pub(crate) const MAX_QUEUE: usize = 1_000_000;

/// How often, at most, continued drops are logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A device's incoming MQTT messages, in arrival order: those its fast lane (if any) did not take
/// on the connection task.
pub(crate) struct Inbox {
    /// The subscription's queue.
    rx: mpsc::Receiver<Message>,
    /// The fast lane beside the queue ([`subscribe_lane`]): told when a received message was
    /// handled (the next `recv`) and when the device stops (drop).
    lane: Option<Arc<dyn Consumer>>,
    /// Whether a message was received and not yet reported done to the lane.
    taken: bool,
    /// The device's `hlbridge_ingest_dropped_total`, incremented by the MQTT client on overflow.
    dropped: Counter,
    /// Device id, for the log line.
    device: String,
    /// The queue length, for the log line.
    capacity: usize,
    /// Drops already logged, and when: so the log says each new burst once, not each message.
    logged: u64,
    /// When drops were last logged.
    logged_at: Option<Instant>,
}

impl Inbox {
    fn new(
        device: &str,
        rx: mpsc::Receiver<Message>,
        lane: Option<Arc<dyn Consumer>>,
        dropped: Counter,
        capacity: usize,
    ) -> Inbox {
        Inbox { rx, lane, taken: false, dropped, device: device.to_owned(), capacity, logged: 0, logged_at: None }
    }

    /// The next message (`None` once the MQTT client is gone).
    pub(crate) async fn recv(&mut self) -> Option<Message> {
        // Asking for the next message says the last one was handled: only then may the lane take
        // messages again without overtaking it.
        if std::mem::take(&mut self.taken)
            && let Some(lane) = &self.lane
        {
            lane.done();
        }
        let msg = self.rx.recv().await;
        self.taken = msg.is_some();
        self.report_drops();
        msg
    }

    /// Whether no message is waiting (the end of a burst: time to publish the state JSON).
    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn report_drops(&mut self) {
        let total = self.dropped.get();
        if total == self.logged || self.logged_at.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        let first = self.logged == 0;
        let new = total - self.logged;
        self.logged = total;
        self.logged_at = Some(Instant::now());
        if first {
            tracing::warn!(device = %self.device, dropped = new, queue = self.capacity,
                "device messages arrive faster than the adapter handles them; dropping and counting \
                 them on hlbridge_ingest_dropped_total (raise `ingest_queue` for bursty devices)");
        } else {
            tracing::warn!(device = %self.device, dropped = new, total, queue = self.capacity,
                "still dropping device messages the adapter cannot keep up with");
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // The device stopped: its handler must not be run on its behalf any more.
        if let Some(lane) = &self.lane {
            lane.close();
        }
    }
}

/// Subscribes `filters` for `device` with the configured `ingest_queue` (else `default_capacity`)
/// and counts what a full queue drops on the device's `hlbridge_ingest_dropped_total`.
pub(crate) async fn subscribe<S: AsRef<str>>(device: &DeviceHandle, filters: &[S], default_capacity: usize) -> Inbox {
    let capacity = device.ingest_queue().unwrap_or(default_capacity).clamp(1, MAX_QUEUE);
    let refs: Vec<&str> = filters.iter().map(AsRef::as_ref).collect();
    let dropped = device.counters().ingest_dropped.clone();
    let rx = device.mqtt().subscribe_counted(&refs, capacity, Some(dropped.clone())).await;
    Inbox::new(device.id(), rx, None, dropped, capacity)
}

/// Like [`subscribe`], with a fast lane ([`crate::mqtt::inline`]): `handler` takes the device's
/// messages on the connection task while nothing is queued ahead of them; the
/// returned [`Inbox`] has the rest, which the adapter hands to the same handler through the
/// returned [`Lane`] (messages the handler declines are the adapter task's own).
pub(crate) async fn subscribe_lane<S: AsRef<str>, H: Inline>(
    device: &DeviceHandle,
    filters: &[S],
    default_capacity: usize,
    handler: H,
) -> (Inbox, Arc<Lane<H>>) {
    let capacity = device.ingest_queue().unwrap_or(default_capacity).clamp(1, MAX_QUEUE);
    let refs: Vec<&str> = filters.iter().map(AsRef::as_ref).collect();
    let dropped = device.counters().ingest_dropped.clone();
    let LaneRx { rx, lane } = device.mqtt().subscribe_lane(&refs, capacity, Some(dropped.clone()), handler).await;
    let consumer: Arc<dyn Consumer> = lane.clone();
    let inbox = Inbox::new(device.id(), rx, Some(consumer), dropped, capacity);
    (inbox, lane)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::FutureExt;

    use super::*;
    use crate::mqtt::inline::{Offer, Offered};

    /// Declines every message: each one goes through the queue.
    struct Decliner;

    impl Inline for Decliner {
        fn handle(&mut self, _: &Message) -> bool {
            false
        }

        fn end_of_burst(&mut self) {}
    }

    fn msg(topic: &str) -> Message {
        Message { topic: topic.into(), payload: Bytes::from_static(b"1"), retain: false }
    }

    #[tokio::test]
    async fn asking_for_the_next_message_reopens_the_lane_and_dropping_the_inbox_closes_it() {
        let (tx, rx) = mpsc::channel(4);
        let lane = Arc::new(Lane::new(Decliner, tx, None));
        let consumer: Arc<dyn Consumer> = lane.clone();
        let mut inbox = Inbox::new("dev", rx, Some(consumer), Counter::default(), 4);
        assert_eq!(lane.offer(msg("a")), Offered::Queued);
        assert_eq!(lane.offer(msg("b")), Offered::Queued);
        assert_eq!(inbox.recv().await.map(|m| m.topic).as_deref(), Some("a"));
        assert_eq!(lane.queued(), 2, "a is received, not yet handled");
        assert_eq!(inbox.recv().await.map(|m| m.topic).as_deref(), Some("b"));
        assert_eq!(lane.queued(), 1, "asking for b said a was handled");
        // Waiting for the next message says b was handled: the lane may be taken again.
        assert!(inbox.recv().now_or_never().is_none(), "nothing more is queued");
        assert_eq!(lane.queued(), 0);
        drop(inbox);
        assert_eq!(lane.with(|_| ()), None, "a stopped device's handler is gone");
        assert_eq!(lane.offer(msg("c")), Offered::Closed);
    }
}

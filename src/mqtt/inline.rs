//! The fast lane: a subscriber whose message handling needs nothing but its own state can have a
//! message handled on the connection task itself, in the read that brought it, instead of queued
//! for its task (one task hop, two `select!` turns and a channel round trip less per message).
//!
//! The lane is taken only when taking it cannot change what the subscriber sees, except that it
//! sees more of a flood:
//! - **order**: only while nothing the connection queued for this subscriber is still waiting or
//!   being handled ([`Lane::queued`] counts them until the subscriber's task is done with each);
//! - **a flood is handled, not dropped**: the lane is open whether or not the connection keeps up
//!   with the broker. A subscriber's handling is sequential either way, so queueing its messages
//!   while behind adds work and no capacity (on one thread the subscriber's task even shares the
//!   connection's): that rule dropped 41–87 % of a flood that the embedded broker handed over at
//!   full speed at the 4096-message device queue, with one thread or two, while the bridge had
//!   CPU to spare. Handled on the spot, the flood backs up to the broker instead: Mosquitto cannot
//!   outpace a lane (routing a message costs it ~6 µs, a lane's handling ~1.2 µs), so its drop rule
//!   for slow readers does not come into play, and the embedded broker keeps a slow reader's
//!   messages in its log (`tests/it/fast_lane.rs` floods the binary through both, on one thread and
//!   on two). What the lane declines, or finds queued ahead of it, still goes through the bounded
//!   queue, where overflow is dropped and counted;
//! - **a stopped subscriber gets nothing**: the state is taken out under its lock when the
//!   subscriber stops ([`Lane::close`]), and the queue's receiver is dropped with it;
//! - **the end of a burst is seen**: the connection calls [`Inline::end_of_burst`] once after each
//!   read in which the lane took a message (the queue's consumer does the same when its queue runs
//!   empty);
//! - **no wait on the connection task for a message**: the state's lock is only tried; when the
//!   subscriber's task holds it (a multi-thread runtime), the message is queued. The burst's end
//!   does take the lock, which the task holds only for synchronous handling, never across an await.
//!
//! A handler may decline a message ([`Inline::handle`] returns `false`, e.g. an answer to a write
//! the subscriber's task is waiting for): it is queued, and so is everything after it until the
//! task has handled it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::Message;

/// Message handling that can run on the connection task.
pub(crate) trait Inline: Send + 'static {
    /// Handles `msg` now; `false` when it needs the subscriber's task (then it is queued).
    fn handle(&mut self, msg: &Message) -> bool;
    /// Everything read in one go was dispatched: the place to publish what a burst accumulated.
    fn end_of_burst(&mut self);
}

/// A subscriber's queue with a fast lane beside it (see the module docs).
pub(crate) struct Lane<H> {
    /// The handler's state; `None` once the subscriber stopped.
    state: Mutex<Option<H>>,
    /// Messages queued for the subscriber's task and not yet handled by it: the lane is only
    /// taken at zero, so a message never overtakes one queued before it.
    queued: AtomicUsize,
    /// Set when the lane took a message in the current read; cleared by the burst's end.
    touched: AtomicBool,
    /// The subscriber's queue.
    tx: mpsc::Sender<Message>,
    /// Counts messages dropped because the queue was full (the device's
    /// `hlbridge_ingest_dropped_total`).
    dropped: Option<Counter>,
}

/// What became of an offered message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Handled on the spot: the lane wants its end of burst.
    Handled { first_in_burst: bool },
    /// Queued for the subscriber's task.
    Queued,
    /// The queue was full: dropped (and counted).
    Full,
    /// The subscriber is gone (prune it).
    Closed,
}

/// The connection's view of a lane, whatever its handler.
pub(crate) trait Offer: Send + Sync {
    /// Handles `msg` on the spot when the module docs allow it, otherwise queues it.
    fn offer(&self, msg: Message) -> Offered;
    /// Queues `msg` for the subscriber's task (when several subscribers share a message).
    fn queue(&self, msg: Message) -> Offered;
    /// The end of the read in which this lane took messages.
    fn end_of_burst(&self);
    /// Whether the subscriber is gone.
    fn is_closed(&self) -> bool;
}

impl<H: Inline> Lane<H> {
    /// A lane around `state`, queueing into `tx`.
    pub(crate) fn new(state: H, tx: mpsc::Sender<Message>, dropped: Option<Counter>) -> Lane<H> {
        Lane {
            state: Mutex::new(Some(state)),
            queued: AtomicUsize::new(0),
            touched: AtomicBool::new(false),
            tx,
            dropped,
        }
    }

    /// Runs `f` on the handler's state (the subscriber's task handling a queued message, starting
    /// a command, ...); `None` once closed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut H) -> R) -> Option<R> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.as_mut().map(f)
    }

    /// The subscriber's task is done with one queued message (handled or skipped).
    pub(crate) fn done(&self) {
        // Release: whatever handling the message did is visible to the connection that sees zero.
        let _ = self.queued.fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Whether messages are queued or being handled by the subscriber's task.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The subscriber stopped: nothing is handled on its behalf from now on.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

impl<H: Inline> Offer for Lane<H> {
    fn offer(&self, msg: Message) -> Offered {
        if self.queued.load(Ordering::Acquire) == 0
            && let Ok(mut state) = self.state.try_lock()
        {
            let Some(h) = state.as_mut() else { return Offered::Closed };
            if h.handle(&msg) {
                return Offered::Handled { first_in_burst: !self.touched.swap(true, Ordering::Relaxed) };
            }
        }
        self.queue(msg)
    }

    fn queue(&self, msg: Message) -> Offered {
        // Counted before it can be received, so the receiving task's `done` never runs ahead.
        self.queued.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(msg) {
            Ok(()) => Offered::Queued,
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        if let Some(c) = &self.dropped {
                            c.inc();
                        }
                        Offered::Full
                    }
                    mpsc::error::TrySendError::Closed(_) => Offered::Closed,
                }
            }
        }
    }

    fn end_of_burst(&self) {
        self.touched.store(false, Ordering::Relaxed);
        // With messages queued behind the lane's, the subscriber's task ends the burst when it
        // has handled them (its queue runs empty).
        if self.queued.load(Ordering::Acquire) > 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = state.as_mut() {
            h.end_of_burst();
        }
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The subscriber's task's view of its lane, whatever its handler.
pub(crate) trait Consumer: Send + Sync {
    /// See [`Lane::done`].
    fn done(&self);
    /// See [`Lane::close`].
    fn close(&self);
}

impl<H: Inline> Consumer for Lane<H> {
    fn done(&self) {
        Lane::done(self);
    }

    fn close(&self) {
        Lane::close(self);
    }
}

/// A subscriber's end of a lane: the queue and the lane, so the subscriber's task can say when it
/// is done with each queued message.
pub(crate) struct LaneRx<H> {
    /// Messages the lane could not take, in arrival order.
    pub(crate) rx: mpsc::Receiver<Message>,
    /// The lane (shared with the connection's subscription).
    pub(crate) lane: Arc<Lane<H>>,
}

#[cfg(test)]
mod tests;

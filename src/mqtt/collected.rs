//! What fast lanes publish while the connection task dispatches a read: collected here and written
//! with that read's flush, instead of queued to the connection task itself. The queue cost a send
//! and a receive per router step, and the send woke the very task that was running, which was then
//! polled a second time per input for nothing: together ~2 200 instructions per go-e `nrg` input.
//!
//! Only on a current-thread runtime (the default, `runtime.worker_threads: 1`): there no other task
//! runs between the dispatch and the write, so what the lanes published is newer than everything
//! already queued and older than everything queued after it. The connection writes it at once when
//! nothing older waits (queue and outbox empty, room in the QoS 1 window); otherwise it queues it
//! behind what waits, before anything else can run. On a multi-thread runtime another thread may
//! publish for the same device at any moment, and lanes publish through the queue as before.

use std::cell::RefCell;
use std::sync::Arc;

use super::{Outgoing, Shared};

/// The connection collecting on this thread, and what it collected.
struct Collecting {
    /// `Arc::as_ptr` of the collecting connection's `Shared`; null while none is. Compared only,
    /// never dereferenced: a handle of another connection publishes through its queue as usual.
    shared: *const Shared,
    /// What was collected, in publish order.
    publishes: Vec<Outgoing>,
}

thread_local! {
    static COLLECTING: RefCell<Collecting> =
        const { RefCell::new(Collecting { shared: std::ptr::null(), publishes: Vec::new() }) };
}

/// Collects what `shared`'s handles publish on this thread until [`Self::finish`]; dropped
/// unfinished (a panic in a handler), it stops collecting and lets go of what it held.
pub(super) struct Collector {
    /// Not `Send`: collecting is per thread.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Collector {
    /// Starts collecting for `shared`'s connection on this thread.
    pub(super) fn begin(shared: &Arc<Shared>) -> Collector {
        COLLECTING.with_borrow_mut(|c| c.shared = Arc::as_ptr(shared));
        Collector { _thread: std::marker::PhantomData }
    }

    /// How many publishes were collected so far.
    pub(super) fn len(&self) -> usize {
        COLLECTING.with_borrow(|c| c.publishes.len())
    }

    /// Stops collecting and returns what was collected, in order.
    pub(super) fn finish(self) -> Vec<Outgoing> {
        COLLECTING.with_borrow_mut(|c| std::mem::take(&mut c.publishes))
        // `Drop` clears the connection.
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        COLLECTING.with_borrow_mut(|c| {
            c.shared = std::ptr::null();
            c.publishes.clear();
        });
    }
}

/// Whether `shared`'s connection is collecting on this thread.
pub(super) fn collecting(shared: &Arc<Shared>) -> bool {
    COLLECTING.with_borrow(|c| std::ptr::eq(c.shared, Arc::as_ptr(shared)))
}

/// Takes `batch` when `shared`'s connection is collecting on this thread (`None`); otherwise
/// gives it back for the queue.
pub(super) fn offer(shared: &Arc<Shared>, batch: Vec<Outgoing>) -> Option<Vec<Outgoing>> {
    COLLECTING.with_borrow_mut(|c| {
        if std::ptr::eq(c.shared, Arc::as_ptr(shared)) {
            if c.publishes.is_empty() {
                c.publishes = batch;
            } else {
                c.publishes.extend(batch);
            }
            None
        } else {
            Some(batch)
        }
    })
}

#[cfg(test)]
mod tests;

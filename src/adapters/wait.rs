//! Waits an adapter's `select!` loop needs on optional things: a deadline that may not be set, a
//! command stream that may not exist. Both wait forever when absent, so the branch simply never
//! fires.

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Resolves at `deadline`, or never when there is none.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The next item of `rx`, or never when there is no receiver.
pub(crate) async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

//! Steering a running whatwatt simulator from tests ([`SimControl`]): fault injection (silence, meter
//! status, kicks, HTML error pages, broken JSON, raw stream bytes, nonce expiry) and the counters the
//! tests read back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A fault for the next matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503` with an HTML page (a proxy or the ESP web server's error page).
    Html503,
    /// `200` with an HTML page instead of JSON / an event stream.
    Html200,
    /// `200` JSON cut off in the middle.
    TruncatedJson,
}

/// The state behind a [`SimControl`], shared by the HTTP handlers and the tick loop.
#[derive(Default)]
pub(super) struct ControlInner {
    pub(super) silent: AtomicBool,
    pub(super) meter_status: Mutex<Option<String>>,
    pub(super) faults: Mutex<VecDeque<(String, Fault)>>,
    pub(super) inject: Mutex<Vec<Bytes>>,
    pub(super) kick: AtomicU64,
    pub(super) nonce_epoch: AtomicU64,
    pub(super) live_connections: AtomicU64,
    pub(super) unauthorized: AtomicU64,
    pub(super) stale: AtomicU64,
    pub(super) requests: Mutex<HashMap<String, u64>>,
    pub(super) last_nc: Mutex<Option<u32>>,
    pub(super) nudge: tokio::sync::Notify,
}

/// A handle tests keep to steer a running simulator and read its counters.
#[derive(Clone, Default)]
pub struct SimControl(pub(super) Arc<ControlInner>);

impl SimControl {
    /// Stops meter reports (the stream goes silent, the report id stands still).
    pub fn set_silent(&self, silent: bool) {
        self.0.silent.store(silent, Ordering::SeqCst);
    }

    /// Sets `meter.status` (e.g. `NO DATA`); `OK` or `None` restores it.
    pub fn set_meter_status(&self, status: Option<&str>) {
        *self.0.meter_status.lock().unwrap_or_else(|e| e.into_inner()) = status.map(str::to_owned);
    }

    /// The next request to `path` gets `fault` (queued in order).
    pub fn fault(&self, path: &str, fault: Fault) {
        self.0.faults.lock().unwrap_or_else(|e| e.into_inner()).push_back((path.to_owned(), fault));
    }

    /// Writes raw bytes into the current SSE stream.
    pub fn inject_sse(&self, bytes: impl Into<Bytes>) {
        self.0.inject.lock().unwrap_or_else(|e| e.into_inner()).push(bytes.into());
        self.0.nudge.notify_waiters();
    }

    /// Expires every Digest nonce issued so far: their next use gets `401` with `stale=true`.
    pub fn expire_nonces(&self) {
        self.0.nonce_epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// `/api/v1/live` streams opened so far.
    pub fn live_connections(&self) -> u64 {
        self.0.live_connections.load(Ordering::SeqCst)
    }

    /// `401` answers so far.
    pub fn unauthorized(&self) -> u64 {
        self.0.unauthorized.load(Ordering::SeqCst)
    }

    /// `401` answers with `stale=true` so far.
    pub fn stale(&self) -> u64 {
        self.0.stale.load(Ordering::SeqCst)
    }

    /// Requests that passed authentication on `path` (licence refusals included).
    pub fn requests(&self, path: &str) -> u64 {
        self.0.requests.lock().unwrap_or_else(|e| e.into_inner()).get(path).copied().unwrap_or(0)
    }

    /// The `nc` of the last accepted Digest request.
    pub fn last_nc(&self) -> Option<u32> {
        *self.0.last_nc.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut q = self.0.faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = q.iter().position(|(p, _)| p == path)?;
        q.remove(i).map(|(_, f)| f)
    }

    pub(super) fn meter_status(&self) -> String {
        self.0.meter_status.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| "OK".into())
    }
}

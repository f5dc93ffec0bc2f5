//! The simulated gateway's HTTP side: the REST API (`/api/v1/system`, `report`, `variables`), the
//! single-consumer SSE stream `/api/v1/live` written as raw bytes, and the Web UI protection (none,
//! Basic, or Digest MD5-sess with nonce expiry and `nc` replay checks).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::config::{SimAuth, SimLicence};
use super::control::{Fault, SimControl};
use super::gateway::Gateway;
use crate::adapters::whatwatt::digest;

/// The Digest verifier's nonces.
pub(super) struct Nonces {
    /// nonce → (epoch issued in, issued at, highest nc seen).
    pub(super) issued: HashMap<String, (u64, Instant, u32)>,
    pub(super) opaque: String,
}

/// Shared by the HTTP handlers and the tick loop.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) gateway: Arc<Mutex<Gateway>>,
    pub(super) control: SimControl,
    pub(super) auth: SimAuth,
    pub(super) password: Arc<str>,
    pub(super) licence: SimLicence,
    pub(super) realm: Arc<str>,
    pub(super) nonces: Arc<Mutex<Nonces>>,
    pub(super) nonce_ttl: Duration,
    /// Framed SSE events to the current stream.
    pub(super) events: broadcast::Sender<Bytes>,
    /// Bumped by each new `/live` client: older streams end.
    pub(super) generation: watch::Sender<u64>,
    /// The MQTT client's state for `/system` (None: no MQTT configured).
    pub(super) mqtt_connected: Arc<Mutex<Option<bool>>>,
    pub(super) cancel: CancellationToken,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Gateway> {
        self.gateway.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn challenge(&self, stale: bool) -> Response {
        self.control.0.unauthorized.fetch_add(1, Ordering::SeqCst);
        let value = match self.auth {
            SimAuth::Basic => format!("Basic realm=\"{}\"", self.realm),
            _ => {
                if stale {
                    self.control.0.stale.fetch_add(1, Ordering::SeqCst);
                }
                let nonce = format!("{:032x}", rand::random::<u128>());
                let epoch = self.control.0.nonce_epoch.load(Ordering::SeqCst);
                let mut n = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
                if n.issued.len() > 1000 {
                    n.issued.clear();
                }
                n.issued.insert(nonce.clone(), (epoch, Instant::now(), 0));
                // The order and unquoted tokens of the fw 2.8.2 capture.
                format!(
                    "Digest realm=\"{}\", algorithm=MD5-sess, qop=auth, nonce=\"{nonce}\", opaque=\"{}\"{}",
                    self.realm,
                    n.opaque,
                    if stale { ", stale=true" } else { "" }
                )
            }
        };
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, value)], "401 Unauthorized").into_response()
    }

    /// `None` when the request may proceed, else the `401` to answer.
    fn refuse(&self, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
        self.check_auth(headers, uri).err().map(|b| *b)
    }

    fn check_auth(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Box<Response>> {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match self.auth {
            SimAuth::None => Ok(()),
            SimAuth::Basic => match given {
                Some(g) if g == digest::basic_authorization("", &self.password) => Ok(()),
                _ => Err(Box::new(self.challenge(false))),
            },
            SimAuth::Digest => {
                let Some(g) = given else { return Err(Box::new(self.challenge(false))) };
                // The crate's parser slices by character index as if it were a byte index (see
                // `adapters/whatwatt/digest/mod.rs`): only ASCII headers reach it, anything else is
                // refused.
                if !g.is_ascii() {
                    return Err(Box::new(self.challenge(false)));
                }
                let Ok(sent) = digest_auth::AuthorizationHeader::parse(g) else {
                    return Err(Box::new(self.challenge(false)));
                };
                let path_q = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
                let md5_sess = digest::Algorithm::new(digest_auth::AlgorithmType::MD5, true);
                if !g.trim_start().get(..6).is_some_and(|s| s.eq_ignore_ascii_case("digest"))
                    || !sent.username.is_empty()
                    || sent.realm != *self.realm
                    || sent.uri != path_q
                    || sent.algorithm != md5_sess
                    || sent.qop.is_none()
                    || !g.contains("nc=")
                {
                    return Err(Box::new(self.challenge(false)));
                }
                if sent.opaque.as_deref() != Some(self.nonces.lock().unwrap_or_else(|e| e.into_inner()).opaque.as_str())
                {
                    return Err(Box::new(self.challenge(false)));
                }
                // Replicate the hash server-side (the crate's documented use) and compare.
                let mut expected = sent.clone();
                let context = digest_auth::AuthContext::new_with_method(
                    "",
                    &*self.password,
                    path_q,
                    Some(&[][..]),
                    digest_auth::HttpMethod::GET,
                );
                expected.digest(&context);
                if expected.response != sent.response {
                    return Err(Box::new(self.challenge(false)));
                }
                let (nonce, nc) = (sent.nonce.as_str(), sent.nc);
                let epoch = self.control.0.nonce_epoch.load(Ordering::SeqCst);
                let mut n = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
                let Some(entry) = n.issued.get_mut(nonce) else {
                    drop(n);
                    // Right password, unknown nonce (e.g. issued before a reboot): stale.
                    return Err(Box::new(self.challenge(true)));
                };
                if entry.0 != epoch || entry.1.elapsed() > self.nonce_ttl {
                    drop(n);
                    return Err(Box::new(self.challenge(true)));
                }
                if nc <= entry.2 {
                    drop(n);
                    // A replayed counter.
                    return Err(Box::new(self.challenge(false)));
                }
                entry.2 = nc;
                drop(n);
                *self.control.0.last_nc.lock().unwrap_or_else(|e| e.into_inner()) = Some(nc);
                Ok(())
            }
        }
    }

    fn served(&self, path: &str) {
        *self.control.0.requests.lock().unwrap_or_else(|e| e.into_inner()).entry(path.to_owned()).or_default() += 1;
    }

    fn fault_response(fault: Fault) -> Response {
        let html = "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>\n<body><h1>Service Unavailable</h1></body></html>\n";
        match fault {
            Fault::Html503 => {
                (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/html")], html).into_response()
            }
            Fault::Html200 => (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], html).into_response(),
            Fault::TruncatedJson => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                "{\"report\":{\"id\":12,\"instantaneous_power\":{\"act",
            )
                .into_response(),
        }
    }
}

fn json_response(v: &Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

fn licence_required() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "License required").into_response()
}

async fn h_system(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = s.refuse(&headers, &uri) {
        return r;
    }
    s.served("/api/v1/system");
    if let Some(f) = s.control.take_fault("/api/v1/system") {
        return Shared::fault_response(f);
    }
    let mqtt = *s.mqtt_connected.lock().unwrap_or_else(|e| e.into_inner());
    let body = s.lock().system(&s.control.meter_status(), mqtt);
    json_response(&body)
}

async fn h_report(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = s.refuse(&headers, &uri) {
        return r;
    }
    s.served("/api/v1/report");
    if s.licence == SimLicence::Free {
        return licence_required();
    }
    if let Some(f) = s.control.take_fault("/api/v1/report") {
        return Shared::fault_response(f);
    }
    let body = s.lock().report(&s.control.meter_status());
    json_response(&body)
}

async fn h_variables(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = s.refuse(&headers, &uri) {
        return r;
    }
    s.served("/api/v1/variables");
    if s.licence == SimLicence::Free {
        return licence_required();
    }
    let list: Vec<Value> = s
        .lock()
        .variables(&s.control.meter_status())
        .into_iter()
        .map(|(k, v, _)| json!({ k: v.unwrap_or_else(|| "null".into()) }))
        .collect();
    json_response(&Value::Array(list))
}

async fn h_live(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(r) = s.refuse(&headers, &uri) {
        return r;
    }
    s.served("/api/v1/live");
    if let Some(f) = s.control.take_fault("/api/v1/live") {
        return Shared::fault_response(f);
    }
    s.control.0.live_connections.fetch_add(1, Ordering::SeqCst);
    // Single consumer: this client's generation ends every older stream.
    let mut mine = 0;
    s.generation.send_modify(|g| {
        *g += 1;
        mine = *g;
    });
    let state = LiveStream {
        events: s.events.subscribe(),
        generation: s.generation.subscribe(),
        mine,
        kicks: s.control.0.kick.load(Ordering::SeqCst),
        control: s.control.clone(),
        cancel: s.cancel.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let next = st.next().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(next), st))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One open `/api/v1/live` response.
struct LiveStream {
    events: broadcast::Receiver<Bytes>,
    generation: watch::Receiver<u64>,
    mine: u64,
    kicks: u64,
    control: SimControl,
    cancel: CancellationToken,
}

impl LiveStream {
    /// The next bytes for this client, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if *self.generation.borrow() != self.mine || self.control.0.kick.load(Ordering::SeqCst) != self.kicks {
                return None;
            }
            let injected: Vec<Bytes> =
                std::mem::take(&mut *self.control.0.inject.lock().unwrap_or_else(|e| e.into_inner()));
            if !injected.is_empty() {
                let mut all = Vec::new();
                for b in injected {
                    all.extend_from_slice(&b);
                }
                return Some(Bytes::from(all));
            }
            let nudge = self.control.0.nudge.notified();
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = self.generation.changed() => {}
                _ = nudge => {}
                e = self.events.recv() => match e {
                    Ok(b) => return Some(b),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// The simulated gateway's HTTP routes over `shared`.
pub(super) fn router(shared: Shared) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/system", get(h_system))
        .route("/api/v1/report", get(h_report))
        .route("/api/v1/variables", get(h_variables))
        .route("/api/v1/live", get(h_live))
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found") })
        .with_state(shared)
}

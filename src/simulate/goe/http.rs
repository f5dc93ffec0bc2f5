//! The simulated charger's HTTP API v2: `/api/status` (with `filter=`) and `/api/set`.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value};

use super::keys::parse_filter;
use super::session::ChargerState;

/// What the HTTP handlers share.
#[derive(Clone)]
pub(super) struct HttpCtx {
    /// The device, shared with the tick loop.
    pub(super) state: Arc<Mutex<ChargerState>>,
    /// Answer 400 when a filter names a missing key (60.x CORE/PRO).
    pub(super) strict_filter: bool,
}

pub(super) fn http_router(ctx: HttpCtx) -> axum::Router {
    axum::Router::new()
        .route("/api/status", get(http_status))
        .route("/api/set", get(http_set))
        // The ESP-IDF web server's wording for unknown paths (go-e issue #287).
        .fallback(|| async { (StatusCode::NOT_FOUND, "Nothing matches the given URI") })
        .with_state(ctx)
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json"), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], body.to_string())
        .into_response()
}

pub(super) async fn http_status(State(ctx): State<HttpCtx>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let filter = query.iter().find(|(k, _)| k == "filter").map(|(_, v)| parse_filter(v));
    let refs: Option<Vec<&str>> = filter.as_ref().map(|f| f.iter().map(String::as_str).collect());
    let (body, missing) = ctx.state.lock().unwrap_or_else(|e| e.into_inner()).status(refs.as_deref());
    let status = if ctx.strict_filter && !missing.is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    json_response(status, Value::Object(body))
}

pub(super) async fn http_set(State(ctx): State<HttpCtx>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let mut body = Map::new();
    let mut all_ok = true;
    {
        let mut s = ctx.state.lock().unwrap_or_else(|e| e.into_inner());
        for (key, payload) in &query {
            let entry = match s.set_http(key, payload) {
                Ok(()) => Value::Bool(true),
                Err(text) => {
                    all_ok = false;
                    Value::String(text)
                }
            };
            body.insert(key.clone(), entry);
        }
    }
    let status = if all_ok { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    json_response(status, Value::Object(body))
}

//! The REST side of the simulated OctoPrint: the endpoints the bridge's commands use
//! (`POST /api/job`, `/api/printer/tool|bed|chamber`, `/api/connection`, `GET /api/printerprofiles`),
//! the `X-Api-Key` check,
//! and the effects of a command published like the plugin does.

use std::sync::{Arc, Mutex};

use super::printer::{PrinterSim, SimPublish};
use super::{lock_sim, send, unix_now};
use crate::mqtt::MqttHandle;

/// The REST side of the simulated OctoPrint (see [`run_with_rest`](super::run_with_rest)).
pub struct RestSim {
    /// Where the REST API listens (bound by the caller, so tests own their port).
    pub listener: tokio::net::TcpListener,
    /// The API key OctoPrint expects in `X-Api-Key`; anything else gets what OctoPrint 1.11.8
    /// answers: 400 `CSRF validation failed` on a POST, 403 on a GET.
    pub api_key: String,
    /// Accept commands (204) but never act on them: a printer that stays silent, for timeouts.
    pub silent: bool,
}

/// Shared between the tick loop and the REST handlers.
#[derive(Clone)]
pub(super) struct RestCtx {
    /// The printer both sides act on.
    pub(super) sim: Arc<Mutex<PrinterSim>>,
    /// Where the effects of a command are published.
    pub(super) mqtt: MqttHandle,
    /// The expected `X-Api-Key`.
    pub(super) api_key: Arc<str>,
    /// See [`RestSim::silent`].
    pub(super) silent: bool,
}

/// A REST answer: status and body (a command's error, or 204 with nothing).
pub(super) type RestAnswer = (axum::http::StatusCode, String);

/// Parses a REST body and checks the key like OctoPrint 1.11.8 does for a `POST`: a request
/// without a valid key is taken for a browser session's and fails the CSRF check first (400
/// `{"error": "CSRF validation failed"}`, not 403); 400 for bad JSON.
fn rest_prelude(ctx: &RestCtx, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<serde_json::Value, RestAnswer> {
    use axum::http::StatusCode;
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key != &*ctx.api_key {
        return Err((StatusCode::BAD_REQUEST, r#"{"error": "CSRF validation failed"}"#.into()));
    }
    serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, "Malformed JSON body in request".into()))
}

/// Applies one REST command to the printer and publishes its effects.
fn rest_apply(
    ctx: &RestCtx,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    act: impl FnOnce(&mut PrinterSim, &serde_json::Value, i64) -> Result<Vec<SimPublish>, RestAnswer>,
) -> RestAnswer {
    let json = match rest_prelude(ctx, headers, body) {
        Ok(j) => j,
        Err(e) => return e,
    };
    let mut sim = lock_sim(&ctx.sim);
    if ctx.silent {
        return (axum::http::StatusCode::NO_CONTENT, String::new());
    }
    match act(&mut sim, &json, unix_now()) {
        Ok(out) => {
            sim.manual = true;
            send(&ctx.mqtt, out);
            (axum::http::StatusCode::NO_CONTENT, String::new())
        }
        Err(e) => e,
    }
}

/// `GET /api/printerprofiles`: one current profile describing the simulated printer's heaters; a
/// wrong key is 403 here (a `GET` needs no CSRF token).
fn profiles(ctx: &RestCtx, headers: &axum::http::HeaderMap) -> RestAnswer {
    use axum::http::StatusCode;
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key != &*ctx.api_key {
        return (StatusCode::FORBIDDEN, "You don't have the permission to access the requested resource.".into());
    }
    let (extruders, bed, chamber) = lock_sim(&ctx.sim).heater_layout();
    let profile = serde_json::json!({
        "id": "_default", "name": "Simulated printer", "current": true, "default": true,
        "heatedBed": bed, "heatedChamber": chamber, "extruder": {"count": extruders, "sharedNozzle": false},
    });
    (StatusCode::OK, serde_json::json!({"profiles": {"_default": profile}}).to_string())
}

pub(super) fn rest_router(ctx: RestCtx) -> axum::Router {
    use axum::extract::State;
    use axum::routing::{get, post};
    let route = |f: fn(&mut PrinterSim, &serde_json::Value, i64) -> Result<Vec<SimPublish>, RestAnswer>| {
        post(move |State(ctx): State<RestCtx>, headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
            rest_apply(&ctx, &headers, &body, f)
        })
    };
    axum::Router::new()
        .route("/api/job", route(PrinterSim::rest_job))
        .route("/api/printer/tool", route(|s, j, _| s.rest_heater("tool", j)))
        .route("/api/printer/bed", route(|s, j, _| s.rest_heater("bed", j)))
        .route("/api/printer/chamber", route(|s, j, _| s.rest_heater("chamber", j)))
        .route("/api/connection", route(PrinterSim::rest_connection))
        .route(
            "/api/printerprofiles",
            get(|State(ctx): State<RestCtx>, headers: axum::http::HeaderMap| async move { profiles(&ctx, &headers) }),
        )
        .with_state(ctx)
}

//! The gateway's HTTP side: one `reqwest` client per device (no proxy: the gateway is on the LAN;
//! no `Origin` header: the gateway answers foreign origins with 404), with the authentication of
//! [`super::digest`] applied to every request, the SSE stream included.
//!
//! A request goes out with whatever credentials the shared [`AuthState`] holds (none at first, as
//! the gateway's default is no protection). A `401` hands its `WWW-Authenticate` challenges to the
//! state, which picks Digest or Basic, or a fresh nonce after `stale=true`, and the request is sent
//! once more; a second refusal is a wrong password. The lock is never held across an await.
//!
//! The client, the bounded body reader and the error describer are the adapters' shared ones
//! ([`crate::adapters::http`]): no answer is read beyond [`MAX_BODY`].

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderValue};

use super::digest::{AuthAction, AuthFailure, AuthState, new_cnonce};
use crate::adapters::http::{self, BodyError, MAX_BODY, describe};
use crate::config::types::Secret;

/// Why a request to the gateway failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    /// No answer in time.
    #[error("{path}: timed out after {secs}s")]
    Timeout {
        /// The request path.
        path: &'static str,
        /// The timeout.
        secs: f64,
    },
    /// TCP connect failed.
    #[error("{path}: cannot connect ({reason})")]
    Connect {
        /// The request path.
        path: &'static str,
        /// The underlying error.
        reason: String,
    },
    /// Authentication cannot succeed.
    #[error("{path}: {source}")]
    Auth {
        /// The request path.
        path: &'static str,
        /// Why.
        source: AuthFailure,
    },
    /// The answer's body was too large (refused or abandoned at [`MAX_BODY`]) or broke off.
    #[error("{path}: {source}")]
    Body {
        /// The request path.
        path: &'static str,
        /// Why.
        source: BodyError,
    },
    /// Anything else on the wire.
    #[error("{path}: {reason}")]
    Http {
        /// The request path.
        path: &'static str,
        /// The underlying error.
        reason: String,
    },
}

impl GatewayError {
    /// Whether the gateway's answer was refused for its size (counted as `body_too_large`).
    pub(crate) fn is_too_large(&self) -> bool {
        matches!(self, GatewayError::Body { source, .. } if source.is_too_large())
    }
}

/// One gateway, as the adapter talks to it.
pub(crate) struct Gateway {
    http: reqwest::Client,
    /// `http://host[:port]` without a trailing slash.
    base: String,
    /// Always empty on the gateway, configurable anyway.
    username: String,
    /// The Web UI password, if the gateway is protected.
    password: Option<Secret>,
    /// Shared by REST and SSE: the Digest nonce and its counter must not be used twice.
    auth: Mutex<AuthState>,
    /// Per-request timeout (REST) and time to the response headers (SSE).
    timeout: Duration,
}

/// A REST answer.
pub(crate) struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, lower-cased, empty when absent.
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

impl Gateway {
    /// A client for the gateway at `base`.
    pub(crate) fn new(
        base: &str,
        username: &str,
        password: Option<Secret>,
        timeout: Duration,
    ) -> Result<Gateway, reqwest::Error> {
        let http = http::client(timeout)?;
        Ok(Gateway {
            http,
            base: base.trim_end_matches('/').to_owned(),
            username: username.to_owned(),
            password,
            auth: Mutex::new(AuthState::default()),
            timeout,
        })
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// The scheme in use (`none`, `basic`, `digest (MD5-sess)`), for `/readyz`.
    pub(crate) fn auth_name(&self) -> &'static str {
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).name()
    }

    /// GETs `path` and reads the answer (at most [`MAX_BODY`]) within the timeout.
    pub(crate) async fn get(&self, path: &'static str) -> Result<Answer, GatewayError> {
        let resp = self.send(path, false).await?;
        let status = resp.status().as_u16();
        let content_type = http::content_type(&resp);
        let body = tokio::time::timeout(self.timeout, http::read_capped(resp, MAX_BODY))
            .await
            .map_err(|_| GatewayError::Timeout { path, secs: self.timeout.as_secs_f64() })?
            .map_err(|source| GatewayError::Body { path, source })?;
        Ok(Answer { status, content_type, body })
    }

    /// GETs a stream: the response headers must come within the timeout, the body may run forever.
    pub(crate) async fn open_stream(&self, path: &'static str) -> Result<reqwest::Response, GatewayError> {
        self.send(path, true).await
    }

    async fn send(&self, path: &'static str, stream: bool) -> Result<reqwest::Response, GatewayError> {
        let url = format!("{}{}", self.base, path);
        let password = self.password.as_ref().map(Secret::expose);
        // Up to three rounds: unauthenticated probe, credentials, and once more after a stale nonce.
        for _ in 0..3 {
            let authorization = self.lock().authorization(&self.username, password, "GET", path);
            let sent = authorization.is_some();
            let mut req = self.http.get(&url);
            if stream {
                req = req.header(header::ACCEPT, "text/event-stream").header(header::CACHE_CONTROL, "no-cache");
            } else {
                req = req.header(header::ACCEPT, "application/json").timeout(self.timeout);
            }
            if let Some(a) = authorization
                && let Ok(mut v) = HeaderValue::from_str(&a)
            {
                v.set_sensitive(true);
                req = req.header(header::AUTHORIZATION, v);
            }
            let resp = match tokio::time::timeout(self.timeout, req.send()).await {
                Err(_) => return Err(GatewayError::Timeout { path, secs: self.timeout.as_secs_f64() }),
                Ok(Err(e)) if e.is_timeout() => {
                    return Err(GatewayError::Timeout { path, secs: self.timeout.as_secs_f64() });
                }
                Ok(Err(e)) if e.is_connect() => return Err(GatewayError::Connect { path, reason: describe(&e) }),
                Ok(Err(e)) => return Err(GatewayError::Http { path, reason: describe(&e) }),
                Ok(Ok(r)) => r,
            };
            if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenges: Vec<String> = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect();
            drop(resp);
            let action =
                self.lock().unauthorized(challenges.iter().map(String::as_str), sent, password.is_some(), new_cnonce);
            match action {
                AuthAction::Retry => continue,
                AuthAction::Fail(source) => return Err(GatewayError::Auth { path, source }),
            }
        }
        Err(GatewayError::Auth {
            path,
            source: AuthFailure::Unsupported("the gateway kept answering 401 (nonces expiring at once?)".into()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
    }
}

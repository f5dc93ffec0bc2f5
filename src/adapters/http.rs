//! The adapters' shared HTTP toolkit: one way to build a `reqwest` client for a LAN device, one
//! bounded body reader, one error describer. Every HTTP read of every adapter goes through
//! [`read_capped`], so a device (or something impersonating it) that answers with an endless or
//! huge body costs at most [`MAX_BODY`] bytes of memory, never the whole answer.
//!
//! Why a cap at all: `reqwest::Response::bytes()` buffers whatever the peer sends. A go-e
//! `/api/status` of 100 MB took the bridge from 12 MB to over 200 MB resident, and a poll refetched
//! it every interval. The devices' real answers are a few KiB (a whatwatt report with several
//! M-Bus meters is ~6 KiB, a go-e full status ~20 KiB), so 512 KiB is generous and still small.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header;

/// The largest response body any adapter reads. A `Content-Length` above it is refused before
/// reading; a body without one is read chunk by chunk and abandoned as soon as it crosses it.
pub(crate) const MAX_BODY: usize = 512 * 1024;

/// The parse-error reason (`hlbridge_parse_errors_total{reason=...}`) of a body over the cap.
pub(crate) const REASON_BODY_TOO_LARGE: &str = "body_too_large";

/// Why a response body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    /// `Content-Length` announced more than the cap; nothing was read.
    #[error("answer of {declared} bytes refused (Content-Length over the {} KiB limit)", cap / 1024)]
    DeclaredTooLarge {
        /// The announced length.
        declared: u64,
        /// The cap in force.
        cap: usize,
    },
    /// The body crossed the cap while streaming in; the connection was dropped there.
    #[error("answer longer than the {} KiB limit; stopped reading", cap / 1024)]
    TooLarge {
        /// The cap in force.
        cap: usize,
    },
    /// The connection failed while the body was coming in.
    #[error("{0}")]
    Read(String),
}

impl BodyError {
    /// Whether the body was refused for its size (count it as [`REASON_BODY_TOO_LARGE`]).
    pub(crate) fn is_too_large(&self) -> bool {
        matches!(self, BodyError::DeclaredTooLarge { .. } | BodyError::TooLarge { .. })
    }
}

/// A client for a device on the LAN: no proxy (a system proxy cannot reach `192.168.x.y`), the
/// connect timeout given, and one idle connection per host (these devices have tiny TCP stacks and
/// power budgets). Callers add per-request timeouts.
pub(crate) fn client(connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().no_proxy().connect_timeout(connect_timeout).pool_max_idle_per_host(1).build()
}

/// Reads `resp`'s body, at most `cap` bytes. Checks `Content-Length` first, then reads chunk by
/// chunk and stops as soon as the total would cross `cap`; dropping the response then closes the
/// connection, so the rest is never received. Memory held: at most `cap` plus one chunk.
pub(crate) async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Bytes, BodyError> {
    let declared = resp.content_length();
    if let Some(declared) = declared
        && declared > cap as u64
    {
        return Err(BodyError::DeclaredTooLarge { declared, cap });
    }
    // The announced length (already known to fit) or a small start; grows only up to the cap.
    let mut body = BytesMut::with_capacity(declared.map_or(8 * 1024, |d| d as usize));
    while let Some(chunk) = resp.chunk().await.map_err(|e| BodyError::Read(describe(&e)))? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The lower-cased `Content-Type` of a response, empty when absent.
pub(crate) fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

/// A reqwest error with its causes (each once), never the request's headers.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one connection: reads the request head, writes `head`, then `body_chunks` chunks of
    /// 64 KiB each (stopping quietly when the client hangs up).
    async fn serve_once(head: String, body_chunks: usize) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req).await;
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..body_chunks {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        url
    }

    async fn get(url: &str) -> reqwest::Response {
        // reqwest is built without a crypto provider; the binary installs ring at start-up.
        let _ = rustls::crypto::ring::default_provider().install_default();
        client(Duration::from_secs(5)).unwrap().get(url).send().await.unwrap()
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_is_refused_before_reading() {
        let url = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 104857600\r\n\r\n".into(), 1).await;
        let e = read_capped(get(&url).await, MAX_BODY).await.unwrap_err();
        assert_eq!(e, BodyError::DeclaredTooLarge { declared: 104_857_600, cap: MAX_BODY });
        assert!(e.is_too_large());
        assert!(e.to_string().contains("512 KiB"), "{e}");
    }

    #[tokio::test]
    async fn an_undeclared_body_is_abandoned_as_soon_as_it_crosses_the_cap() {
        // Connection-delimited: no length at all, 1600 chunks = 100 MiB offered.
        let url = serve_once("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into(), 1600).await;
        let e = read_capped(get(&url).await, MAX_BODY).await.unwrap_err();
        assert_eq!(e, BodyError::TooLarge { cap: MAX_BODY });
    }

    #[tokio::test]
    async fn a_body_within_the_cap_is_read_whole() {
        let url = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 131072\r\n\r\n".into(), 2).await;
        let body = read_capped(get(&url).await, MAX_BODY).await.unwrap();
        assert_eq!(body.len(), 128 * 1024);
    }
}

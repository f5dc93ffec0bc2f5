//! The whatwatt HTTP transports of one gateway ([`Http`]): the `/api/v1/live` SSE stream with its
//! silence watchdog, backoff and poll fallback, and `/api/v1/report` polling, plus the
//! `/api/v1/system` identity probe both use.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Gateway, GatewayError};
use super::config::{WhatwattConfig, WhatwattTransport};
use super::ingest::{Ingest, ReportError, excerpt, looks_html};
use super::mapping::{self, SystemInfo};
use super::sse;
use crate::adapters::http::{self, MAX_BODY, REASON_BODY_TOO_LARGE};
use crate::adapters::log_once::LogOnce;
use crate::router::{DeviceHandle, Link};
use crate::untrusted::clip;

/// How an SSE connection ended.
enum StreamEnd {
    Cancelled,
    /// The gateway closed a working stream: another client took the slot (or it restarted).
    Closed,
    /// No event within the watchdog.
    Silent,
    /// Read error.
    Broken(String),
    /// A line or event crossed the parser's cap: the stream lost its framing (or is hostile).
    Oversized,
}

/// What to do after a transport phase.
enum Next {
    Stop,
    Sse,
    Poll { until: Option<Instant> },
}

/// The HTTP transports (SSE with fallback, polling) of one gateway.
pub(super) struct Http {
    cfg: WhatwattConfig,
    gateway: Gateway,
    ingest: Ingest,
    device: DeviceHandle,
    cancel: CancellationToken,
    /// The report is licence-gated on this gateway: never poll.
    licence_free: bool,
    last_probe: Option<Instant>,
    /// `/api/v1/system` answered once (identity, licence); until then it is retried now and then.
    identity_known: bool,
    /// The last identity probe could not reach the gateway (down, or not up yet at start-up):
    /// it is tried again at the next connection attempt rather than [`PROBE_RETRY`] later, so a
    /// gateway that comes up after the bridge shows its identity and RSSI with its first readings.
    probe_unreachable: bool,
    /// Streams the gateway closed on us.
    kicked: u64,
    /// Stream (re)connections.
    connects: u64,
    logged: LogOnce,
}

/// How often the identity / meter-status probe runs at most while streaming.
const PROBE_EVERY: Duration = Duration::from_secs(600);
/// How soon a failed identity probe is tried again (the gateway was down at start-up).
const PROBE_RETRY: Duration = Duration::from_secs(30);

impl Http {
    pub(super) fn new(cfg: WhatwattConfig, gateway: Gateway, ingest: Ingest, cancel: CancellationToken) -> Http {
        let device = ingest.device().clone();
        Http {
            cfg,
            gateway,
            ingest,
            device,
            cancel,
            licence_free: false,
            last_probe: None,
            identity_known: false,
            probe_unreachable: false,
            kicked: 0,
            connects: 0,
            logged: LogOnce::default(),
        }
    }

    pub(super) async fn run(mut self) {
        self.probe().await;
        let mut next = match self.cfg.transport {
            WhatwattTransport::Poll if self.licence_free => {
                self.log_licence();
                Next::Sse
            }
            WhatwattTransport::Poll => Next::Poll { until: None },
            _ => Next::Sse,
        };
        loop {
            next = match next {
                Next::Stop => break,
                Next::Sse => self.sse_phase().await,
                Next::Poll { until } => self.poll_phase(until).await,
            };
        }
    }

    fn log_licence(&mut self) {
        self.licence_free = true;
        self.device.set_detail("licence", "FREE");
        if self.logged.first_of("licence", "") {
            tracing::warn!(device = %self.device.id(),
                "the gateway has a FREE licence: /api/v1/report (polling) needs Plus; reading the SSE stream /api/v1/live instead");
        }
    }

    /// `GET /api/v1/system`: identity, licence, meter status. Failures are logged, not fatal.
    async fn probe(&mut self) -> Option<SystemInfo> {
        self.last_probe = Some(Instant::now());
        let answer = tokio::select! {
            _ = self.cancel.cancelled() => return None,
            a = self.gateway.get("/api/v1/system") => a,
        };
        self.probe_unreachable = answer.is_err();
        let result = match answer {
            Ok(a) => self.ingest.system_body(a.status, &a.content_type, &a.body),
            Err(e) => {
                self.ingest.count_transport_error(&e);
                Err(e.to_string())
            }
        };
        self.device.set_detail("auth", self.gateway.auth_name());
        match result {
            Ok(info) => {
                self.identity_known = true;
                if info.licence_free() {
                    self.log_licence();
                }
                Some(info)
            }
            Err(e) => {
                if self.logged.first_of("probe", &e) {
                    tracing::warn!(device = %self.device.id(), error = %clip(&e.to_string()), "whatwatt identity probe failed");
                }
                None
            }
        }
    }

    fn probe_due(&self) -> bool {
        if !self.identity_known && self.probe_unreachable {
            // Called once per connection attempt, which already backs off while the gateway is down.
            return true;
        }
        let every = if self.identity_known { PROBE_EVERY } else { PROBE_RETRY };
        self.last_probe.is_none_or(|t| t.elapsed() >= every)
    }

    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    async fn sse_phase(&mut self) -> Next {
        self.device.set_detail("transport", "sse");
        let watchdog = self.cfg.watchdog.0;
        let mut failures: u32 = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Next::Stop;
            }
            if self.probe_due() {
                self.probe().await;
            }
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return Next::Stop,
                r = self.gateway.open_stream("/api/v1/live") => r,
            };
            let since = Instant::now();
            let mut healthy = false;
            match opened {
                Err(e) => self.connect_failed(&e),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let ct = http::content_type(&resp);
                    if !ct.is_empty() && !ct.starts_with("text/event-stream") && !ct.contains("html") && status == 200 {
                        // A capture served by a plain file server; parse it anyway, say so once.
                        if self.logged.first_of("content type", &ct) {
                            tracing::info!(device = %self.device.id(), content_type = %clip(&ct),
                                "/api/v1/live is not text/event-stream; reading it as an event stream anyway");
                        }
                    }
                    if status != 200 || ct.contains("html") {
                        let body = tokio::time::timeout(self.cfg.timeout.0, http::read_capped(resp, MAX_BODY)).await;
                        let (body, oversized) = match body {
                            Ok(Ok(b)) => (b, None),
                            Ok(Err(e)) if e.is_too_large() => (Default::default(), Some(e)),
                            _ => (Default::default(), None),
                        };
                        let html = looks_html(&ct, &body);
                        let reason = format!(
                            "/api/v1/live answered HTTP {status} ({}){}",
                            if ct.is_empty() { "no content type" } else { ct.as_str() },
                            if html { " with an HTML page" } else { "" }
                        );
                        let reason = match oversized {
                            Some(e) => {
                                self.ingest.parse_error(REASON_BODY_TOO_LARGE, "live error page", &e.to_string());
                                format!("{reason}: {e}")
                            }
                            None => {
                                self.ingest.parse_error(
                                    if html { "html_page" } else { "http_status" },
                                    "live",
                                    &excerpt(&body),
                                );
                                reason
                            }
                        };
                        self.device.set_link(Link::Down(reason));
                    } else {
                        if !self.identity_known && self.probe_unreachable {
                            // The gateway came up between the probe and the stream: ask now, not
                            // when this stream ends (a stream may last for days).
                            self.probe().await;
                        }
                        self.connects += 1;
                        self.device.set_detail("sse_connects", self.connects.to_string());
                        self.ingest.sse_reset();
                        let (end, events) = self.stream(resp).await;
                        healthy = events > 0 && since.elapsed() >= watchdog;
                        match end {
                            StreamEnd::Cancelled => return Next::Stop,
                            StreamEnd::Closed => {
                                let last = self.ingest.sse_end();
                                self.closed(events + last as u64);
                            }
                            StreamEnd::Silent => self.silent().await,
                            StreamEnd::Broken(e) => {
                                if self.logged.first_of("broken", &e) {
                                    tracing::warn!(device = %self.device.id(), error = %e, "whatwatt SSE stream broke; reopening");
                                }
                            }
                            StreamEnd::Oversized => self.oversized(),
                        }
                    }
                }
            }
            failures = if healthy { 0 } else { failures.saturating_add(1) };
            let after = self.cfg.fallback.after;
            if after > 0 && failures >= after {
                if !self.licence_free {
                    tracing::warn!(device = %self.device.id(), failures,
                        retry_in = %self.cfg.fallback.retry_sse, "the whatwatt SSE stream keeps failing; polling /api/v1/report instead for a while");
                    return Next::Poll { until: Some(Instant::now() + self.cfg.fallback.retry_sse.0) };
                }
                if self.logged.first_of("no fallback", "") {
                    tracing::warn!(device = %self.device.id(),
                        "the whatwatt SSE stream keeps failing and polling needs a Plus licence (this gateway: FREE); staying on SSE");
                }
            }
            let delay = crate::mqtt::backoff_delay(
                failures.saturating_sub(1),
                self.cfg.reconnect_delay.0,
                self.cfg.reconnect_max.0,
            );
            if !self.sleep(delay).await {
                return Next::Stop;
            }
        }
    }

    fn connect_failed(&mut self, e: &GatewayError) {
        let reason = e.to_string();
        let level_error = matches!(e, GatewayError::Auth { .. });
        if self.logged.first_of("connect", &reason) {
            if level_error {
                tracing::error!(device = %self.device.id(), error = %clip(&reason), "whatwatt authentication failed");
            } else {
                tracing::warn!(device = %self.device.id(), error = %clip(&reason), "cannot open the whatwatt SSE stream; retrying with backoff");
            }
        }
        self.device.set_link(Link::Down(reason));
    }

    fn closed(&mut self, events: u64) {
        self.kicked += 1;
        self.device.counters().parse_error("sse_kicked");
        self.device.set_detail("sse_kicked", self.kicked.to_string());
        if self.logged.first_of("kicked", "") {
            tracing::warn!(device = %self.device.id(), events,
                "the whatwatt gateway closed the SSE stream: it serves one /api/v1/live stream at a time, so another client \
                 (a second bridge, Homey, the Web UI's live page) probably took it, or the gateway restarted; reopening with \
                 backoff (counted in /readyz `sse_kicked`; logged once)");
        }
    }

    fn oversized(&mut self) {
        // Logged by the parse-error path once; the reason stays in /readyz until events return.
        self.device.set_link(Link::Down(format!(
            "/api/v1/live sent a line or event longer than {} KiB (the gateway's are ~600 bytes); \
             the stream was dropped and is reopened",
            sse::MAX_LINE / 1024
        )));
    }

    async fn silent(&mut self) {
        let watchdog = self.cfg.watchdog;
        // Ask the gateway why: a meter problem shows in /api/v1/system.
        let info = self.probe().await;
        let meter_bad = info.as_ref().and_then(|i| i.meter_status.as_deref()).is_some_and(|s| !mapping::status_ok(s));
        if !meter_bad {
            self.device.set_link(Link::Down(format!("no SSE event for {watchdog}")));
        }
        if self.logged.first_of("silent", "") {
            tracing::warn!(device = %self.device.id(), %watchdog, "no whatwatt SSE event within the watchdog; reopening the stream");
        }
    }

    async fn stream(&mut self, mut resp: reqwest::Response) -> (StreamEnd, u64) {
        let watchdog = self.cfg.watchdog.0;
        let mut deadline = Instant::now() + watchdog;
        let mut events = 0u64;
        loop {
            let chunk = tokio::select! {
                _ = self.cancel.cancelled() => return (StreamEnd::Cancelled, events),
                c = tokio::time::timeout_at(deadline, resp.chunk()) => c,
            };
            match chunk {
                Err(_) => return (StreamEnd::Silent, events),
                Ok(Ok(Some(bytes))) => {
                    let n = self.ingest.sse_bytes(&bytes);
                    if self.ingest.sse_overflowed() {
                        // Dropping `resp` closes the connection: the rest of the line is never read.
                        return (StreamEnd::Oversized, events + n as u64);
                    }
                    if n > 0 {
                        events += n as u64;
                        // Only events feed the watchdog: a trickle of junk is no sign of life.
                        deadline = Instant::now() + watchdog;
                    }
                }
                Ok(Ok(None)) => return (StreamEnd::Closed, events),
                Ok(Err(e)) => return (StreamEnd::Broken(http::describe(&e)), events),
            }
        }
    }

    async fn poll_phase(&mut self, until: Option<Instant>) -> Next {
        self.device.set_detail("transport", if until.is_some() { "poll (SSE fallback)" } else { "poll" });
        let mut ticker = tokio::time::interval(self.cfg.poll_interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Next::Stop,
                _ = ticker.tick() => {}
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                tracing::info!(device = %self.device.id(), "trying the whatwatt SSE stream again");
                return Next::Sse;
            }
            let answer = tokio::select! {
                _ = self.cancel.cancelled() => return Next::Stop,
                a = self.gateway.get("/api/v1/report") => a,
            };
            let result = match answer {
                Ok(a) => self.ingest.report_body(a.status, &a.content_type, &a.body).map_err(|e| match e {
                    ReportError::LicenceRequired => None,
                    ReportError::Bad(m) => Some(m),
                }),
                Err(e) => {
                    self.ingest.count_transport_error(&e);
                    Err(Some(e.to_string()))
                }
            };
            match result {
                Ok(_) => {
                    if failing {
                        tracing::info!(device = %self.device.id(), "whatwatt report answers again");
                        failing = false;
                    }
                    if !self.identity_known && self.probe_due() {
                        self.probe().await;
                    }
                }
                Err(None) => {
                    self.log_licence();
                    return Next::Sse;
                }
                Err(Some(reason)) => {
                    if !failing {
                        tracing::warn!(device = %self.device.id(), reason = %clip(&reason), "whatwatt report poll failed; retrying every interval");
                        failing = true;
                    }
                    self.device.set_link(Link::Down(reason));
                }
            }
        }
    }
}

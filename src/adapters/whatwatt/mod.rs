//! whatwatt Go adapter (`adapter: whatwatt`, kind `energy_meter`): a Wi-Fi dongle on the smart
//! meter's customer port, read over its local REST API, its Server-Sent-Events stream, or the MQTT
//! messages its own client publishes from a user template (protocol notes:
//! `shared/protocols/whatwatt-go.md`).
//!
//! Transports (`transport:`):
//! - `sse` (default): `GET /api/v1/live`. Works on every licence. The gateway serves **one stream at
//!   a time**: a second client (another bridge, Homey, the Web UI's live page) closes ours. A stream
//!   the gateway ends is counted (`/readyz` detail `sse_kicked`, `hlbridge_parse_errors_total{reason=
//!   "sse_kicked"}`), logged once, and reopened after a backoff. A silence watchdog (`watchdog`,
//!   60 s) reopens a stream that stopped talking. After `fallback.after` failed streams in a row
//!   the adapter polls the report instead, and tries the stream again after `fallback.retry_sse`.
//! - `poll`: `GET /api/v1/report` every `interval`. The same `(system.boot_id, report.id)` twice is
//!   no new reading and is not republished as fresh. Needs a Plus licence: on FREE the gateway
//!   answers `404 License required`, which is logged once and the adapter uses SSE instead.
//! - `mqtt`: subscribes `topic` and reads the user's template payload; which field holds which
//!   template variable comes from `template:` (the template text itself), `fields:`, or the
//!   built-in presets (the bridge template, the vendor's example, the Home Assistant template).
//!
//! Authentication (none, Basic for firmware < 1.10, Digest MD5-sess for ≥ 1.10) is detected from
//! the gateway's `401` and applied to every request, the stream included ([`digest`], [`client`]).
//! Identity, licence and meter status come from `GET /api/v1/system` (works without a licence);
//! a meter status other than `OK` takes the device offline with the status as the reason.
//!
//! Why the stream is parsed here ([`sse`]) over a `reqwest` body instead of with eventsource-client
//! 0.18 (dropped from the dependencies): its parser has no size bound. A line without a line end
//! grows `incomplete_line` for as long as the gateway keeps sending, and `data:` lines are joined
//! into the event without limit, so one misbehaving gateway could take all of the bridge's memory;
//! our framer stops at [`sse::MAX_LINE`]. Its `HttpTransport` hook (0.18's
//! `ClientBuilder::build_with_transport`) would have allowed a fresh Digest `Authorization` per
//! connection over our `reqwest` client, so auth was not the blocker; the unbounded buffer is, and
//! capping it from outside would mean scanning every body chunk for line and event boundaries in
//! the transport, i.e. a second SSE framer in front of the crate's. So the adapter owns the whole connection loop: the first connection is retried
//! like any other, no proxy is used for the LAN gateway, and backoff, the silence
//! watchdog and the single-consumer detection are explicit. The parser handles chunk splits,
//! CR/LF variants and HTML written into the stream.
//!
//! Nothing the gateway sends can grow memory without bound: REST answers are read through the
//! shared capped reader ([`crate::adapters::http::read_capped`], `body_too_large`), and a stream
//! line or event over [`sse::MAX_LINE`] (`sse_overflow`) drops the connection at once, takes the
//! device offline with that reason and reopens the stream with backoff.
//!
//! Everything per message goes through [`Ingest`], public so that recorded captures replay through
//! exactly the code a live gateway goes through.
//!
//! The room, by role:
//! - this file: the registration ([`Whatwatt`]) and [`run`], which picks the transport;
//! - [`config`]: the `adapter: whatwatt` keys, validation, password, start-up errors, cadence;
//! - [`ingest`]: [`Ingest`], the per-message handling every transport shares;
//! - [`transport_http`]: the SSE stream with its poll fallback, and polling;
//! - [`transport_mqtt`]: the gateway's own MQTT client as the source;
//! - [`client`] and [`digest`]: the HTTP client and its Basic / Digest authentication;
//! - [`sse`]: the bounded SSE framer; [`mapping`]: the pure payload → quantities mapping;
//! - `tests.rs` (configuration) and `fuzz_tests.rs` (property-based fuzzing): unit tests; [`mapping`]
//!   and [`digest`] are folders keeping their own unit tests in a `tests.rs`.

pub(crate) mod client;
mod config;
pub(crate) mod digest;
#[cfg(test)]
mod fuzz_tests;
mod ingest;
pub(crate) mod mapping;
pub(crate) mod sse;
#[cfg(test)]
mod tests;
mod transport_http;
mod transport_mqtt;

crate::adapters::adapter!(
    /// The Whatwatt adapter in the registry ([`crate::adapters::Adapter`]).
    Whatwatt,
    config = WhatwattConfig,
    kind = Whatwatt,
    tables = mapping::try_tables,
    quantities = &[
        "apparent_power",
        "current_l1",
        "current_l2",
        "current_l3",
        "energy_export",
        "energy_export_t*",
        "energy_import",
        "energy_import_t*",
        "power",
        "power_export",
        "power_factor",
        "power_import",
        "power_l1",
        "power_l2",
        "power_l3",
        "reactive_energy_export",
        "reactive_energy_import",
        "reactive_power_export",
        "reactive_power_import",
        "rssi",
        "tariff",
        "uptime",
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "volume",
    ],
    commands = &[],
);

use tokio_util::sync::CancellationToken;

use crate::router::{DeviceHandle, Link};

use client::Gateway;
pub use config::{WhatwattConfig, WhatwattError, WhatwattFallback, WhatwattTransport};
use config::{cadence, resolve_password, validate};
pub use ingest::{Ingest, ReportError, ReportOutcome};
use transport_http::Http;
use transport_mqtt::run_mqtt;

/// Runs the adapter until `cancel`.
pub(crate) async fn run(cfg: WhatwattConfig, device: DeviceHandle, cancel: CancellationToken) {
    let started = async {
        let password = resolve_password(&cfg, device.id())?;
        let ingest = Ingest::new(device.clone(), &cfg)?;
        Ok::<_, WhatwattError>((password, ingest))
    };
    let (password, ingest) = match started.await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(device = %device.id(), error = %e, "whatwatt adapter cannot start");
            device.set_link(Link::Down(e.to_string()));
            cancel.cancelled().await;
            return;
        }
    };
    let gateway = match &cfg.url {
        Some(url) => match Gateway::new(url, &cfg.username, password, cfg.timeout.0) {
            Ok(g) => Some(g),
            Err(source) => {
                let e = WhatwattError::Client { device: device.id().to_owned(), source };
                tracing::error!(device = %device.id(), error = %e, "whatwatt adapter cannot start");
                device.set_link(Link::Down(e.to_string()));
                cancel.cancelled().await;
                return;
            }
        },
        None => None,
    };
    if let Some(g) = &gateway {
        device.set_detail("url", g.base().to_owned());
    }
    match (cfg.transport, gateway) {
        (WhatwattTransport::Mqtt, gateway) => run_mqtt(cfg, gateway, ingest, cancel).await,
        (_, Some(gateway)) => Http::new(cfg, gateway, ingest, cancel).run().await,
        (_, None) => {
            let e = WhatwattError::NoUrl { device: device.id().to_owned() };
            device.set_link(Link::Down(e.to_string()));
            cancel.cancelled().await;
        }
    }
}

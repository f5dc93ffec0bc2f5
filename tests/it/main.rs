//! hlbridge integration tests: one binary (`cargo test --test it`).
//!
//! - `golden`: recorded go-e captures replayed through the real adapter and router (no broker).
//! - `end_to_end`: simulator → Mosquitto → bridge → probe subscriber.
//! - `console`: the demo's live view drawn at 160×50 and 80×24, `q` on a pseudo-terminal, plain
//!   lines without one, `-v`/`-q`/`--log-level`/`--log-format json`.
//! - `compliance`: the adapter contract checked alike for every adapter of the registry (good and
//!   malformed input, availability, stop in time) and declared quantities vs. captures.
//! - `cluster`: two and three instances sharing twelve simulated devices on one Mosquitto: one
//!   owner each, commands answered once, no SSE kicks, a stopped instance, growing by reload.
//! - `config`: shipped config files, error reporting, `hlbridge check-config`.
//! - `homeassistant`: Home Assistant discovery: golden device messages per adapter (simulators),
//!   availability, controls, announcing again on Home Assistant's birth, clearing removed devices.
//! - `http_endpoints`: `/metrics`, `/healthz`, `/readyz`, staleness.
//! - `tls`: `mqtts://` against a Mosquitto TLS listener: CA file, wrong CA vs `insecure`, mutual TLS.
//! - `process`: the binary under SIGTERM (clean stop within 5 s) and with a bad config (exit 2).
//! - `mqtt_client`: user name/password against a protected Mosquitto, 200 KiB payloads both ways.
//! - `mqtt_faults`: broker restart with publishes piled up, oversized packets both ways, outage
//!   buffering, refused subscriptions in `/readyz`.
//! - `reload`: live reload under traffic (add/remove/change/unchanged), refused reloads, SIGHUP,
//!   `--watch`, `check-config --diff`.
//! - `resilience`: broker restart, shutdown, malformed payloads.
//! - `hostile_input`: oversized device texts, absurd numbers, a bogus counter level and made-up
//!   command topics against a real broker: cut, rejected, counted, one connection throughout.
//! - `fast_lane`: a charger's readings in the order sent, whether handled on the connection task or
//!   queued behind an answer to a write.
//! - `ingest_drops`: each MQTT-fed adapter flooded past its input queue counts the drops per device
//!   and keeps working.
//! - `octoprint`: OctoPrint-MQTT samples replayed to golden files, the simulated print lifecycle end
//!   to end, stale retained events, out-of-order temperatures, availability, several printers.
//! - `whatwatt`: whatwatt Go samples to golden files; SSE, poll and MQTT end to end against the
//!   simulator; Basic/Digest auth, stale nonces, restarts, kicks, fallback, licence, bad payloads.
//!
//! - `huge_bodies`: 100 MB answers and an endless SSE line from a misbehaving device server,
//!   against the `hlbridge` binary: bodies capped, counted, devices offline with the reason,
//!   peak memory bounded, recovery.
//! - `ai_on_the_edge`: camera-meter samples and historical formats to golden files; both MQTT
//!   dialects end to end against the simulated camera; error rounds, the counter guard, a stale
//!   retained last will, freshness, control topics, several number sequences.
//!
//! Every test owns its broker (Mosquitto on a free loopback port; the in-process broker when
//! Mosquitto is missing, or when `HLBRIDGE_TEST_BROKER=embedded`).

mod ai_on_the_edge;
mod cluster;
mod commands;
mod common;
mod compliance;
mod config;
mod console;
#[cfg(feature = "mdns")]
mod discover;
mod end_to_end;
mod fast_lane;
mod golden;
mod homeassistant;
mod hostile_input;
mod http_endpoints;
mod huge_bodies;
mod ingest_drops;
mod mqtt_client;
mod mqtt_faults;
mod octoprint;
mod octoprint_commands;
mod process;
mod read_holding;
mod reload;
mod resilience;
mod tls;
mod whatwatt;

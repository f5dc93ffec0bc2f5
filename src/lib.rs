//! hlbridge: one bridge between home-lab devices and MQTT.
//!
//! Module map:
//! - [`config`]: the YAML schema, loading with env overrides, validation reporting every error.
//! - [`model`]: the unified model: the quantity table (units, classes, Prometheus names), values,
//!   events, device updates.
//! - [`adapters`]: one module per device family, turning vendor dialects into updates; vendor tables
//!   are data under `adapters/<vendor>/`.
//! - [`router`]: updates → unified retained topics, state JSON, events, availability and freshness,
//!   commands on `<quantity>/set`.
//! - [`guard`]: the counter guard the router runs on every lifetime counter (drops, implausible
//!   jumps, confirmation of a new level, explicit reset).
//! - [`mqtt`]: the only code that touches rumqttc (connection loop, backoff, re-subscribe, queue, TLS).
//! - [`metrics`] and [`http`]: Prometheus health counters, `/metrics`, `/healthz`, `/readyz`.
//! - [`clock`]: the injectable clock (real, or moved by hand in tests).
//! - [`cluster`]: sharding devices over several instances (rendezvous hashing of device ids).
//! - [`reload`]: live reload's plan: which devices start, stop, restart or stay untouched.
//! - [`app`]: wiring, start-up and ordered shutdown.
//! - `simulate`: device simulators for the demo, the tests and the benchmark (feature `simulators`).
//! - [`shutdown`]: SIGINT/SIGTERM, shared by the bridge and the stand-alone simulators.
//! - [`console`]: the live terminal view of the demo (ratatui), plain lines without a terminal.
//! - [`untrusted`]: bounds for device and broker text (republished values, log lines).
//! - `broker`: the embedded broker (feature `embedded-broker`).
//! - [`surface`]: the one public surface, what the binaries and `tests/it` may reach.
//! - `discover`: `hlbridge discover`, whatwatt Go gateways on the LAN by mDNS (feature `mdns`).

// Every item is `pub(crate)` unless `surface` re-exports it; with `-D warnings` (CI) a stray `pub` or an
// unused item fails the build instead of hiding.
#![deny(unreachable_pub)]
#![warn(dead_code)]

mod adapters;
mod app;
#[cfg(feature = "embedded-broker")]
mod broker;
mod clock;
mod cluster;
mod commands;
mod config;
mod console;
#[cfg(feature = "mdns")]
mod discover;
#[cfg(test)]
mod fuzz_support;
mod guard;
mod homeassistant;
mod http;
#[cfg(test)]
mod layering_tests;
mod metrics;
mod model;
mod mqtt;
#[cfg(test)]
mod mqtt_topic_fuzz_tests;
mod reload;
mod router;
mod shutdown;
#[cfg(feature = "simulators")]
mod simulate;
pub mod surface;
mod untrusted;

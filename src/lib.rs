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
//! - [`cluster`]: sharding devices over several instances (rendezvous hashing of device ids).
//! - [`reload`]: live reload's plan: which devices start, stop, restart or stay untouched.
//! - [`app`]: wiring, start-up and ordered shutdown.
//! - [`simulate`]: device simulators for the demo, the tests and the benchmark.
//! - [`console`]: the live terminal view of the demo (ratatui), plain lines without a terminal.
//! - [`untrusted`]: bounds for device and broker text (republished values, log lines).
//! - `broker`: the embedded broker (feature `embedded-broker`).
//! - `discover`: `hlbridge discover`, whatwatt Go gateways on the LAN by mDNS (feature `mdns`).

pub mod adapters;
pub mod app;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod console;
#[cfg(feature = "mdns")]
pub mod discover;
#[cfg(test)]
mod fuzz_support;
pub mod guard;
pub mod homeassistant;
pub mod http;
pub mod metrics;
pub mod model;
pub mod mqtt;
#[cfg(test)]
mod mqtt_topic_fuzz_tests;
pub mod reload;
pub mod router;
pub mod simulate;
pub mod untrusted;

//! hlbridge: one bridge between home-lab devices and MQTT.
//!
//! Module map:
//! - [`model`]: the unified model (quantity table, values, events, updates).
//! - [`mqtt`]: the only code that touches rumqttc (connection loop, queue, subscriptions, TLS).
//! - [`metrics`]: Prometheus health counters and the OpenMetrics renderer.

pub mod config;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod simulate;

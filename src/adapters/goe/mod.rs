//! go-e Charger adapter (API v2): the MQTT transport (the charger's own client publishes one topic
//! per key under its prefix) and the HTTP transport (polling `/api/status?filter=`), both feeding the
//! pure [`mapping`]. Writes of `current_limit`, `force_state` and `phase_mode` go to `<key>/set`
//! (answered on `<key>/result`) or to `/api/set`. HTTP answers are read through the shared
//! [`crate::adapters::http`] reader: a body over its cap is refused, counted (`body_too_large`) and
//! takes the device offline with the reason until the charger answers normally again.

crate::adapters::adapter!(
    /// The Goe adapter in the registry ([`crate::adapters::Adapter`]).
    Goe,
    config = GoeConfig,
    kind = Goe,
    tables = mapping::try_tables,
    quantities = &[
        "car_connected",
        "charge_reason",
        "charger_error",
        "charger_state",
        "charging_allowed",
        "current_allowed",
        "current_l1",
        "current_l2",
        "current_l3",
        "current_limit",
        "energy_import",
        "force_state",
        "frequency",
        "phase_mode",
        "power",
        "power_factor_l1",
        "power_factor_l2",
        "power_factor_l3",
        "power_factor_n",
        "power_l1",
        "power_l2",
        "power_l3",
        "power_n",
        "rssi",
        "session_energy",
        "temperature",
        "temperature_*",
        "uptime",
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "voltage_n",
    ],
    commands = COMMANDS,
    commands_on_by_default = false,
);

mod config;
#[cfg(test)]
mod fuzz_tests;
pub(crate) mod mapping;

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapters::http::{self, MAX_BODY, REASON_BODY_TOO_LARGE};
use crate::adapters::log_once::LogOnce;
use crate::model::{Identity, Quantity, Update, Value};
use crate::mqtt::inline::Inline;
use crate::mqtt::{Message, QoS};
use crate::router::{Command, DeviceHandle, Link};
use crate::untrusted::{clip, clip_bytes};

pub use config::GoeConfig;
pub(crate) use config::{GoeTransport, cadence, validate};
pub use mapping::nrg_names;
use mapping::{KeyOutcome, Mapper};

/// The commands a charger takes on `<name>/set`.
pub(crate) const COMMANDS: &[&str] = &["current_limit", "force_state", "phase_mode"];

/// How long a charger has to answer a write on `<key>/result`.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys read over HTTP: everything the mapping knows.
const HTTP_FILTER: &str = "eto,wh,amp,acu,alw,car,frc,psm,err,modelStatus,rssi,fhz,rbt,nrg,tma,fwv,typ,sse,fna,oem";

/// Topic prefixes the charger may publish under.
pub(crate) fn topic_prefixes(cfg: &GoeConfig) -> Vec<String> {
    match (&cfg.topic_prefix, &cfg.serial) {
        (Some(p), _) => vec![p.clone()],
        // Firmware ≥ 054.6 drops the leading slash, but upgraded chargers may keep the old one.
        (None, Some(s)) => vec![format!("go-eCharger/{s}/"), format!("/go-eCharger/{s}/")],
        (None, None) => Vec::new(),
    }
}

/// Runs the adapter until `cancel`.
pub(crate) async fn run(cfg: GoeConfig, device: DeviceHandle, cancel: CancellationToken) {
    match cfg.transport {
        GoeTransport::Mqtt => run_mqtt(cfg, device, cancel).await,
        GoeTransport::Http => run_http(cfg, device, cancel).await,
    }
}

/// A write waiting for the charger's `/result`.
struct PendingWrite {
    key: &'static str,
    /// The command being answered (its name and `id`).
    cmd: Command,
    quantity: Quantity,
    value: Value,
    deadline: Instant,
}

/// Per-message handling shared by both transports, public so that recorded captures can be
/// replayed through exactly the code a live charger goes through (golden tests, benchmark).
pub struct Ingest {
    mapper: Mapper,
    logged: LogOnce,
    device: DeviceHandle,
}

impl Ingest {
    /// A fresh ingest state for `device`.
    pub fn new(device: DeviceHandle) -> Ingest {
        Ingest { mapper: Mapper::default(), logged: LogOnce::default(), device }
    }

    /// Handles one MQTT message whose topic prefix was already stripped (`key` is e.g. `nrg`).
    pub fn mqtt_message(&mut self, key: &str, msg: &Message) {
        on_message(self, key, msg);
    }

    /// Handles one `/api/status` answer (HTTP status and body), as a poll would.
    pub fn http_status_body(&mut self, status: u16, body: &[u8]) -> Result<(), String> {
        handle_status_body(self, status, body)
    }

    fn key(&mut self, key: &str, value: &serde_json::Value, live: bool, update: &mut Update) {
        // `ama`: the highest current the installer allows; bounds the Home Assistant control.
        if key == "ama"
            && let Some(amps) = value.as_u64().filter(|a| (6..=80).contains(a))
        {
            self.device.set_detail("max_current", amps.to_string());
        }
        match self.mapper.map(key, value, live, update) {
            KeyOutcome::Mapped | KeyOutcome::Ignored => {}
            KeyOutcome::Unknown => {
                self.device.counters().unknown_keys.inc();
                if self.logged.first(&format!("unknown {key}")) {
                    tracing::info!(device = %self.device.id(), key = %clip(key), "unknown go-e key (newer firmware?); counted and ignored");
                }
            }
            KeyOutcome::Invalid(reason) => {
                self.device.counters().parse_error(reason);
                if self.logged.first(&format!("{reason} {key}")) {
                    tracing::warn!(device = %self.device.id(), key = %clip(key), value = %clip(&value.to_string()), reason, "go-e value not understood; skipped");
                }
            }
        }
    }
}

async fn run_mqtt(cfg: GoeConfig, device: DeviceHandle, cancel: CancellationToken) {
    let prefixes = topic_prefixes(&cfg);
    let filters: Vec<String> = prefixes.iter().map(|p| format!("{p}#")).collect();
    device.set_detail("transport", "mqtt");
    device.set_detail("topics", filters.join(" "));
    if let Some(serial) = &cfg.serial {
        let u = Update {
            identity: Some(Identity {
                vendor: Some("go-e".into()),
                serial: Some(serial.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        device.apply(u);
    }
    let readings = Readings {
        ingest: Ingest { mapper: Mapper::default(), logged: LogOnce::default(), device: device.clone() },
        active_prefix: prefixes.first().cloned().unwrap_or_default(),
        prefixes: prefixes.clone(),
    };
    let (mut rx, lane) = super::ingest::subscribe_lane(&device, &filters, 4096, readings).await;
    let mut commands = Some(device.commands());
    let mut pending: Option<PendingWrite> = None;
    // Registered once, not once per message (each fresh `cancelled()` locks the token twice).
    let mut cancelled = std::pin::pin!(cancel.cancelled());
    loop {
        let deadline = pending.as_ref().map(|p| p.deadline);
        tokio::select! {
            _ = &mut cancelled => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match lane.with(|r| r.handle(&msg)) {
                    None => break, // stopped
                    Some(true) => {
                        if rx.is_empty() {
                            device.flush();
                        }
                    }
                    Some(false) => {
                        // An answer on `<key>/result`: this task's, it may be the one a write waits for.
                        if let Some(key) = result_key(&prefixes, &msg.topic)
                            && let Some(p) = pending.take_if(|p| p.key == key)
                        {
                            finish_write(&device, p, &msg);
                        }
                    }
                }
            }
            cmd = crate::adapters::wait::recv(&mut commands), if pending.is_none() => {
                let Some(cmd) = cmd else { commands = None; continue };
                let active_prefix = lane.with(|r| r.active_prefix.clone()).unwrap_or_default();
                pending = start_mqtt_write(&device, &active_prefix, cmd);
            }
            _ = crate::adapters::wait::sleep_until(deadline), if deadline.is_some() => {
                if let Some(p) = pending.take() {
                    device.command_value_result(&p.cmd, p.quantity, Err(format!(
                        "the charger did not answer on {}/result within {}s; MQTT writes need the charger's read-only switch (`mcr`) off",
                        p.key, WRITE_TIMEOUT.as_secs())));
                }
            }
        }
    }
}

/// The prefix `topic` arrived under and the rest of it (`<key>`, `<key>/result`, `<key>/set`).
fn split_topic<'p, 't>(prefixes: &'p [String], topic: &'t str) -> Option<(&'p String, &'t str)> {
    let prefix = prefixes.iter().find(|p| topic.starts_with(p.as_str()))?;
    Some((prefix, &topic[prefix.len()..]))
}

/// The key a `<prefix><key>/result` topic answers for.
fn result_key<'t>(prefixes: &[String], topic: &'t str) -> Option<&'t str> {
    split_topic(prefixes, topic)?.1.strip_suffix("/result")
}

/// What a charger publishes, handled by what needs nothing but this state: on the MQTT connection
/// task while its fast lane allows (see [`crate::mqtt::inline`]), else from the adapter's queue.
/// Answers to writes (`<key>/result`) are declined: the adapter task waits for them.
struct Readings {
    /// The mapping state, counters and log-once memory.
    ingest: Ingest,
    /// The prefixes the charger may publish under (both slash forms when only a serial is set).
    prefixes: Vec<String>,
    /// The prefix the charger's live messages arrive under: writes go to `<it><key>/set`.
    active_prefix: String,
}

impl Inline for Readings {
    fn handle(&mut self, msg: &Message) -> bool {
        let Some((prefix, key)) = split_topic(&self.prefixes, &msg.topic) else { return true };
        if key.ends_with("/result") {
            return false;
        }
        if key.contains('/') || key.is_empty() {
            return true; // `<key>/set` echoes of our own or other writers
        }
        if !msg.retain {
            self.active_prefix.clone_from(prefix);
        }
        on_message(&mut self.ingest, key, msg);
        true
    }

    fn end_of_burst(&mut self) {
        self.ingest.device.flush();
    }
}

fn on_message(ingest: &mut Ingest, key: &str, msg: &Message) {
    let device = ingest.device.clone();
    device.counters().received.inc();
    // The hot key as chargers send it (16 numbers or nulls, several a second) without building a
    // JSON tree; anything else (strings, short arrays, garbage) takes the general path below.
    if key == "nrg"
        && let Some(fields) = mapping::parse_nrg(&msg.payload)
            .or_else(|| serde_json::from_slice::<[Option<f64>; mapping::NRG_FIELDS]>(&msg.payload).ok())
    {
        let mut update = Update { fresh: !msg.retain, ..Default::default() };
        update.readings.reserve(mapping::NRG_FIELDS);
        ingest.mapper.nrg_fields(&fields, &mut update);
        device.apply(update);
        return;
    }
    let value: serde_json::Value = match serde_json::from_slice(&msg.payload) {
        Ok(v) => v,
        Err(e) => {
            device.counters().parse_error("invalid_json");
            if ingest.logged.first(&format!("json {key}")) {
                tracing::warn!(device = %device.id(), topic = %clip(&msg.topic), error = %e,
                    payload = %clip_bytes(&msg.payload),
                    "go-e payload is not JSON; skipped");
            }
            return;
        }
    };
    let mut update = Update { fresh: !msg.retain, ..Default::default() };
    update.readings.reserve(16);
    ingest.key(key, &value, !msg.retain, &mut update);
    // A retained replay says nothing about now: no fresh timestamp either.
    device.apply(update);
}

fn start_mqtt_write(device: &DeviceHandle, prefix: &str, cmd: Command) -> Option<PendingWrite> {
    match mapping::command_to_key(cmd.name, &cmd.value) {
        Ok((key, json, value)) => {
            device.mqtt().publish(format!("{prefix}{key}/set"), json.to_string(), QoS::AtLeastOnce, false);
            let quantity = Quantity::known(cmd.name);
            Some(PendingWrite { key, cmd, quantity, value, deadline: Instant::now() + WRITE_TIMEOUT })
        }
        Err(e) => {
            device.command_result(&cmd, Err(e));
            None
        }
    }
}

fn finish_write(device: &DeviceHandle, p: PendingWrite, msg: &Message) {
    let text = String::from_utf8_lossy(&msg.payload);
    let text = text.trim().trim_matches('"');
    if text == "success" {
        device.command_value_result(&p.cmd, p.quantity, Ok(p.value));
    } else {
        device.command_result(&p.cmd, Err(format!("charger refused: {text}")));
    }
}

async fn run_http(cfg: GoeConfig, device: DeviceHandle, cancel: CancellationToken) {
    let base = cfg.url.clone().unwrap_or_default().trim_end_matches('/').to_owned();
    device.set_detail("transport", "http");
    device.set_detail("url", base.clone());
    // The connect timeout here; the whole request (body included) gets `timeout` per call.
    let client = match http::client(cfg.timeout.0) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(device = %device.id(), error = %e, "cannot build the HTTP client");
            device.set_link(Link::Down(format!("HTTP client: {e}")));
            return;
        }
    };
    let mut commands = Some(device.commands());
    let status_url = format!("{base}/api/status?filter={HTTP_FILTER}");
    let mut ingest = Ingest { mapper: Mapper::default(), logged: LogOnce::default(), device: device.clone() };
    let mut ticker = tokio::time::interval(cfg.interval.0);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {
                match poll_status(&client, &status_url, cfg.timeout.0, &mut ingest).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!(device = %device.id(), "go-e HTTP API answers again");
                            failing = false;
                        }
                        device.set_link(Link::Up);
                    }
                    Err(reason) => {
                        if !failing {
                            tracing::warn!(device = %device.id(), url = %status_url, reason = %clip(&reason), "go-e HTTP poll failed; retrying every interval");
                            failing = true;
                        }
                        device.set_link(Link::Down(reason));
                    }
                }
            }
            cmd = crate::adapters::wait::recv(&mut commands) => {
                let Some(cmd) = cmd else { commands = None; continue };
                http_write(&client, &base, cfg.timeout.0, &device, cmd).await;
                // Show the effect soon rather than one interval later.
                ticker.reset_after(Duration::from_millis(1200));
            }
        }
    }
}

async fn poll_status(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    ingest: &mut Ingest,
) -> Result<(), String> {
    let resp = client.get(url).timeout(timeout).send().await.map_err(|e| http::describe(&e))?;
    let status = resp.status().as_u16();
    let body = match http::read_capped(resp, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            if e.is_too_large() {
                ingest.device.counters().parse_error(REASON_BODY_TOO_LARGE);
            }
            return Err(format!("/api/status: {e}"));
        }
    };
    handle_status_body(ingest, status, &body)
}

fn handle_status_body(ingest: &mut Ingest, status: u16, body: &[u8]) -> Result<(), String> {
    let device = ingest.device.clone();
    device.counters().received.inc();
    // Firmware 60.x answers HTTP 400 when the filter names a key the model lacks, with a good body.
    if !((200..300).contains(&status) || status == 400) {
        device.counters().parse_error("http_status");
        return Err(format!("HTTP {status}"));
    }
    let parsed: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            device.counters().parse_error("invalid_json");
            let start = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
            return Err(format!("HTTP {status} with a body that is not JSON: {start:?}"));
        }
    };
    let serde_json::Value::Object(map) = parsed else {
        device.counters().parse_error("bad_type");
        return Err("the status answer is not a JSON object".into());
    };
    if status == 400 && ingest.logged.first("http400") {
        tracing::info!(device = %device.id(), "charger answered HTTP 400 with data (a filtered key is missing on this model); using the data");
        device.set_detail("http_400", "some filtered keys are missing on this model");
    }
    let mut update = Update::fresh();
    update.readings.reserve(32);
    for (k, v) in &map {
        ingest.key(k, v, true, &mut update);
    }
    if let Some(id) = &mut update.identity {
        id.vendor.get_or_insert_with(|| "go-e".into());
    }
    device.apply(update);
    device.flush();
    Ok(())
}

async fn http_write(client: &reqwest::Client, base: &str, timeout: Duration, device: &DeviceHandle, cmd: Command) {
    let (key, json, value) = match mapping::command_to_key(cmd.name, &cmd.value) {
        Ok(x) => x,
        Err(e) => return device.command_result(&cmd, Err(e)),
    };
    let url = format!("{base}/api/set?{key}={json}");
    let result = async {
        let resp = client.get(&url).timeout(timeout).send().await.map_err(|e| http::describe(&e))?;
        let status = resp.status();
        let body = http::read_capped(resp, MAX_BODY).await.map_err(|e| {
            if e.is_too_large() {
                device.counters().parse_error(REASON_BODY_TOO_LARGE);
            }
            format!("/api/set: {e}")
        })?;
        let body: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| format!("HTTP {status} without a JSON answer"))?;
        match body.get(key) {
            Some(serde_json::Value::Bool(true)) => Ok(()),
            Some(serde_json::Value::String(err)) => Err(format!("charger refused: {err}")),
            _ => Err(format!("HTTP {status}: unexpected answer {body}")),
        }
    }
    .await;
    device.command_value_result(&cmd, Quantity::known(cmd.name), result.map(|()| value));
}

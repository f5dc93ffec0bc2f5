//! The MQTT half of the simulated charger: the full burst on every (re)connect, the changed keys
//! after each tick, and `<key>/set` writes answered on `<key>/result`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::session::ChargerState;
use crate::mqtt::{MqttHandle, QoS};

/// Resolves with `true` on a connection change, `false` once the client is gone (never without MQTT).
pub(super) async fn connection_changed(
    watch: &mut Option<tokio::sync::watch::Receiver<crate::mqtt::ConnectionState>>,
) -> bool {
    match watch {
        Some(w) => w.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The next `<prefix>+/set` message (never without MQTT).
pub(super) async fn next_write(
    writes: &mut Option<tokio::sync::mpsc::Receiver<crate::mqtt::Message>>,
) -> Option<crate::mqtt::Message> {
    match writes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The MQTT half of the simulator: burst on every new connection, changes per tick, `/set`.
pub(super) struct MqttSide {
    /// The broker connection; None runs the simulator HTTP-only.
    mqtt: Option<MqttHandle>,
    /// Full topic prefix incl. trailing slash.
    pub(super) prefix: String,
    /// The device, shared with the HTTP handlers.
    state: Arc<Mutex<ChargerState>>,
    /// What the broker last got per key, so each tick publishes only what changed since.
    published: HashMap<String, Value>,
    /// Connection generation the last burst went to; a new one means a (re)connect.
    generation: u64,
    /// Whether publishing makes sense now (otherwise the next burst catches up).
    connected: bool,
}

impl MqttSide {
    pub(super) fn new(mqtt: Option<MqttHandle>, prefix: String, state: Arc<Mutex<ChargerState>>) -> MqttSide {
        MqttSide { mqtt, prefix, state, published: HashMap::new(), generation: 0, connected: false }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChargerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn on_connection_change(&mut self, w: &mut tokio::sync::watch::Receiver<crate::mqtt::ConnectionState>) {
        let now = *w.borrow_and_update();
        self.connected = now.connected;
        self.lock().set_mqtt_connected(now.connected);
        if now.connected && now.generation != self.generation {
            self.generation = now.generation;
            tracing::debug!(generation = now.generation, "simulated go-e connected; publishing the full burst");
            self.publish_burst();
        }
    }

    pub(super) fn publish_burst(&mut self) {
        let Some(m) = &self.mqtt else { return };
        if !self.connected {
            return;
        }
        let snapshot = self.lock().mqtt_snapshot();
        self.published.clear();
        for (key, value) in snapshot {
            publish_value(m, &self.prefix, &key, &value);
            self.published.insert(key, value);
        }
    }

    pub(super) fn publish_changes(&mut self) {
        let Some(m) = &self.mqtt else { return };
        if !self.connected {
            return; // the burst after the next ConnAck brings the broker up to date
        }
        let snapshot = self.lock().mqtt_snapshot();
        for (key, value) in snapshot {
            if self.published.get(&key) != Some(&value) {
                publish_value(m, &self.prefix, &key, &value);
                self.published.insert(key, value);
            }
        }
    }

    pub(super) fn handle_write(&mut self, msg: &crate::mqtt::Message) {
        let Some(m) = self.mqtt.clone() else { return };
        let Some(key) = msg.topic.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_suffix("/set")) else {
            return;
        };
        if key.is_empty() || key.contains('/') {
            return;
        }
        let payload = String::from_utf8_lossy(&msg.payload);
        let (result, value) = {
            let mut s = self.lock();
            if s.mqtt_read_only() {
                tracing::debug!(key, "simulated go-e is MQTT read-only (mcr); write ignored");
                return;
            }
            let result = s.set(key, &payload);
            (result, s.get(key).cloned())
        };
        let text = match &result {
            Ok(()) => "success".to_owned(),
            Err(e) => e.clone(),
        };
        tracing::debug!(key, payload = %payload, result = %text, "simulated go-e MQTT write");
        m.publish(format!("{}{key}/result", self.prefix), text.into_bytes(), QoS::AtMostOnce, false);
        if result.is_ok()
            && ChargerState::is_mqtt_key(key)
            && let Some(v) = value
        {
            publish_value(&m, &self.prefix, key, &v);
            self.published.insert(key.to_owned(), v);
        }
    }
}

pub(super) fn publish_value(m: &MqttHandle, prefix: &str, key: &str, value: &Value) {
    let payload = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    m.publish(format!("{prefix}{key}"), payload, QoS::AtMostOnce, true);
}

//! Home Assistant MQTT discovery: keeps one retained device-based discovery message per device
//! (`<discovery_prefix>/device/<node_id>/config`) and one for the bridge itself in step with what the
//! router knows.
//!
//! A device is announced once it has produced values, with one component per quantity it produced;
//! a new quantity, firmware or identity re-announces it, debounced (a device that reports its keys one
//! topic at a time is announced once, not forty times). Everything is announced again after each MQTT
//! (re)connect and whenever Home Assistant announces itself (`<discovery_prefix>/status` = `online`).
//! A device that leaves the config (reload, or a restart: retained discovery of ours naming a device
//! that is no longer configured is found on the broker) or is set `homeassistant: false` has its
//! discovery cleared with an empty retained payload. The bridge's health values (messages received,
//! parse errors) are published on `<prefix>/bridge/messages_received|parse_errors` for its entities.

pub(crate) mod discovery;
#[cfg(test)]
pub(crate) mod rules;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::mqtt::{Message, MqttHandle, QoS};
use crate::router::Router;
use crate::untrusted::clip;
use discovery::{DeviceView, Naming};

/// How often the router's view is compared with what was announced.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// A changed announcement waits until it has been stable this long ...
const QUIET_FOR: Duration = Duration::from_secs(1);
/// ... but never longer than this (a device that adds a quantity every half second).
const AT_MOST_AFTER: Duration = Duration::from_secs(5);
/// Devices announced per pass; the next pass waits until the broker took them (3–17 KB each).
const ANNOUNCE_PER_PASS: usize = 32;
/// The bridge's health values are published at most this often.
const HEALTH_EVERY: Duration = Duration::from_secs(5);
/// The largest discovery message read back from the broker (ours are a few tens of KiB).
const MAX_READ_BACK: usize = 512 * 1024;

/// Discovery options of one configured device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceOptions {
    /// The configured `name:`.
    name: Option<String>,
}

/// The devices that should be in Home Assistant: enabled and not `homeassistant: false`.
fn wanted_devices(config: &Config) -> BTreeMap<String, DeviceOptions> {
    config
        .enabled_devices()
        .filter(|(_, d)| d.common.homeassistant)
        .map(|(id, d)| (id.clone(), DeviceOptions { name: d.common.name.clone() }))
        .collect()
}

/// State shared by the handle and the task.
struct Shared {
    /// Topic and id scheme.
    naming: Naming,
    /// Where devices, their values and specs come from.
    router: Arc<Router>,
    /// Publishes and subscriptions.
    mqtt: MqttHandle,
    /// Devices to announce, replaced on reload.
    wanted: Mutex<BTreeMap<String, DeviceOptions>>,
    /// Wakes the task after a reload, so removed devices are cleared at once.
    wake: Notify,
    /// `hlbridge_messages_received_total` and `hlbridge_parse_errors_total`, registered here alone
    /// so summing them does not render every device value.
    health: Registry,
}

/// The running discovery publisher (see module docs).
#[derive(Clone)]
pub(crate) struct HomeAssistant {
    /// State shared with the task.
    shared: Arc<Shared>,
}

impl HomeAssistant {
    /// Starts discovery for `config` (nothing when `homeassistant.enabled` is false).
    pub(crate) fn start(
        config: &Config,
        router: Arc<Router>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Option<HomeAssistant> {
        if !config.homeassistant.enabled {
            return None;
        }
        let mut health = Registry::default();
        let m = router.metrics();
        health.register("hlbridge_messages_received", "", m.messages_received.clone());
        health.register("hlbridge_parse_errors", "", m.parse_errors.clone());
        let shared = Arc::new(Shared {
            naming: Naming::new(&config.homeassistant.discovery_prefix, &config.mqtt.client_id, &config.output.prefix)
                .with_bridge_status(crate::router::Router::status_topic(
                    &config.output.prefix,
                    config.cluster.topic_instance(),
                )),
            mqtt: router.mqtt().clone(),
            router,
            wanted: Mutex::new(wanted_devices(config)),
            wake: Notify::new(),
            health,
        });
        tracker.spawn(run(shared.clone(), cancel));
        Some(HomeAssistant { shared })
    }

    /// Takes the devices of a reloaded config: removed ones (and ones set `homeassistant: false`) are
    /// cleared at once, renamed ones announced again.
    pub(crate) fn reconfigure(&self, config: &Config) {
        *self.shared.wanted.lock().unwrap_or_else(|e| e.into_inner()) = wanted_devices(config);
        self.shared.wake.notify_one();
    }
}

/// An announcement waiting to settle.
struct Pending {
    /// Signature of the newest announcement ([`signature`]).
    signature: u64,
    /// When the device first differed from what was announced.
    first: Instant,
    /// When the payload last changed.
    changed: Instant,
}

/// What the task announced, and what waits.
#[derive(Default)]
struct Announced {
    /// Device id → signature of the announcement on the broker: the 3–17 KB payload itself is
    /// built only when what it is made of changed, not every check (1 000 devices twice a second).
    published: BTreeMap<String, u64>,
    /// Device id → a newer payload waiting to settle.
    pending: BTreeMap<String, Pending>,
    /// The bridge's own message is on the broker (for this connection).
    bridge: bool,
    /// Last published health values and when.
    health: Option<((u64, u64), Instant)>,
}

async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let dp = &shared.naming.discovery_prefix;
    let mut births = shared.mqtt.subscribe(&format!("{dp}/status"), 16).await;
    // Retained discovery of ours on the broker: devices removed while the bridge was down.
    let mut ours = shared.mqtt.subscribe(&format!("{dp}/device/+/config"), 256).await;
    let mut conn = shared.mqtt.watch();
    let mut seen_generation = 0;
    let mut announced = Announced::default();
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut force = false;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {}
            _ = shared.wake.notified() => {}
            m = births.recv() => match m {
                Some(m) if m.payload.trim_ascii() == b"online" => {
                    tracing::info!("Home Assistant is online: announcing every device again");
                    force = true;
                }
                Some(_) => continue,
                None => break,
            },
            m = ours.recv() => match m {
                Some(m) => {
                    clear_if_unwanted(&shared, &m);
                    continue;
                }
                None => break,
            },
            changed = conn.changed() => {
                if changed.is_err() { break; }
                let state = *conn.borrow_and_update();
                if !(state.connected && state.generation != seen_generation) { continue; }
                seen_generation = state.generation;
                // A clean session lost whatever was queued: announce everything again.
                force = true;
            }
        }
        if !shared.mqtt.state().connected {
            continue;
        }
        if force {
            announced.published.clear();
            announced.pending.clear();
            announced.bridge = false;
            announced.health = None;
        }
        // A pass announces at most ANNOUNCE_PER_PASS devices; the rest follow once the broker took
        // those, so 1 000 devices never sit in the queue at once (~7 MB of JSON at 1 000).
        while reconcile(&shared, &mut announced, force, Instant::now()) == Pass::More {
            let flushed = shared.mqtt.flushed();
            tokio::pin!(flushed);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = &mut flushed => break,
                    // Retained announcements replayed meanwhile (1 000 after a restart) must not
                    // overflow their queue while the passes run.
                    m = ours.recv() => match m {
                        Some(m) => clear_if_unwanted(&shared, &m),
                        None => return,
                    },
                }
            }
            if !shared.mqtt.state().connected {
                break;
            }
        }
    }
}

/// Whether a [`reconcile`] pass left announcements that are due for the next one.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    Done,
    More,
}

/// Clears a retained discovery message of this bridge whose device is no longer wanted.
fn clear_if_unwanted(shared: &Shared, m: &Message) {
    if m.payload.is_empty() || m.payload.len() > MAX_READ_BACK {
        return;
    }
    let Some(id) = shared.naming.device_of_topic(&m.topic) else { return };
    if shared.wanted.lock().unwrap_or_else(|e| e.into_inner()).contains_key(id) {
        return;
    }
    // Only messages this bridge wrote: their device hangs off this bridge's own device.
    let ours = serde_json::from_slice::<serde_json::Value>(&m.payload)
        .ok()
        .and_then(|v| v.get("dev")?.get("via_device")?.as_str().map(|s| s == shared.naming.node_prefix))
        .unwrap_or(false);
    if ours {
        tracing::info!(device = %clip(id), topic = %clip(&m.topic), "clearing Home Assistant discovery of a device no longer configured");
        shared.mqtt.publish(m.topic.clone(), Vec::new(), QoS::AtLeastOnce, true);
    }
}

/// Brings the broker in step with the router: announces new and changed devices (debounced unless
/// `force`), clears removed ones, publishes the bridge's own message and health values.
fn reconcile(shared: &Shared, announced: &mut Announced, force: bool, now: Instant) -> Pass {
    let naming = &shared.naming;
    if !announced.bridge {
        let payload = discovery::bridge_config(naming).to_string();
        shared.mqtt.publish(naming.bridge_topic(), payload, QoS::AtLeastOnce, true);
        announced.bridge = true;
    }
    publish_health(shared, announced, now);

    let wanted = shared.wanted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let gone: Vec<String> = announced
        .published
        .keys()
        .chain(announced.pending.keys())
        .filter(|id| !wanted.contains_key(*id))
        .cloned()
        .collect();
    for id in gone {
        announced.pending.remove(&id);
        if announced.published.remove(&id).is_some() {
            tracing::info!(device = %id, "clearing Home Assistant discovery of a removed device");
            shared.mqtt.publish(naming.device_topic(&id), Vec::new(), QoS::AtLeastOnce, true);
        }
    }

    let specs: BTreeMap<String, _> = shared.router.specs().into_iter().map(|(s, f)| (s.id.clone(), (s, f))).collect();
    let mut announced_now = 0;
    for snap in shared.router.snapshot() {
        let (Some(options), Some((spec, freshness))) = (wanted.get(&snap.id), specs.get(&snap.id)) else { continue };
        let mut quantities: Vec<_> = snap.values.iter().map(|(q, _)| *q).collect();
        if quantities.is_empty() {
            continue;
        }
        quantities.sort_by_key(|q| q.name());
        let view = DeviceView {
            id: &snap.id,
            base: &snap.base,
            name: options.name.as_deref(),
            adapter: snap.adapter,
            identity: &snap.identity,
            freshness: *freshness,
            heartbeat: spec.heartbeat,
            commands: spec.commands,
            gas_meter: snap.details.get("meter").is_some_and(|m| m.starts_with("gas")),
            quantities: &quantities,
            max_current: snap.details.get("max_current").and_then(|a| a.parse().ok()),
        };
        let sig = signature(naming, &view);
        if announced.published.get(&snap.id) == Some(&sig) {
            announced.pending.remove(&snap.id);
            continue;
        }
        let due = force || {
            let p = announced.pending.entry(snap.id.clone()).or_insert_with(|| Pending {
                signature: sig,
                first: now,
                changed: now,
            });
            if p.signature != sig {
                p.signature = sig;
                p.changed = now;
            }
            now.duration_since(p.changed) >= QUIET_FOR || now.duration_since(p.first) >= AT_MOST_AFTER
        };
        if due {
            if announced_now == ANNOUNCE_PER_PASS {
                return Pass::More;
            }
            announced_now += 1;
            announced.pending.remove(&snap.id);
            tracing::debug!(device = %snap.id, components = quantities.len(), "announcing the device to Home Assistant");
            let payload = discovery::device_config(naming, &view).to_string();
            shared.mqtt.publish(naming.device_topic(&snap.id), payload, QoS::AtLeastOnce, true);
            announced.published.insert(snap.id.clone(), sig);
        }
    }
    Pass::Done
}

/// Publishes the totals behind the bridge's `Messages received` and `Parse errors` entities when they
/// changed, at most every [`HEALTH_EVERY`].
fn publish_health(shared: &Shared, announced: &mut Announced, now: Instant) {
    if announced.health.is_some_and(|(_, at)| now.duration_since(at) < HEALTH_EVERY) {
        return;
    }
    let text = crate::metrics::render(&shared.health);
    let sum = |family: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let totals = (sum("hlbridge_messages_received_total"), sum("hlbridge_parse_errors_total"));
    if announced.health.is_some_and(|(last, _)| last == totals) {
        announced.health = Some((totals, now));
        return;
    }
    let base = &shared.naming.bridge_base;
    shared.mqtt.publish(format!("{base}/messages_received"), totals.0.to_string(), QoS::AtLeastOnce, true);
    shared.mqtt.publish(format!("{base}/parse_errors"), totals.1.to_string(), QoS::AtLeastOnce, true);
    announced.health = Some((totals, now));
}

/// Everything a device's announcement is made of, hashed: equal signatures mean equal payloads
/// (within this process; never stored or compared across runs).
fn signature(naming: &Naming, view: &DeviceView<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    naming.device_topic(view.id).hash(&mut h);
    view.base.hash(&mut h);
    view.name.hash(&mut h);
    view.adapter.as_str().hash(&mut h);
    format!("{:?}", view.identity).hash(&mut h);
    view.freshness.hash(&mut h);
    view.heartbeat.hash(&mut h);
    view.commands.hash(&mut h);
    view.gas_meter.hash(&mut h);
    view.max_current.hash(&mut h);
    for q in view.quantities {
        q.name().hash(&mut h);
    }
    h.finish()
}

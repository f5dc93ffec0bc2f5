//! The router: turns adapter updates into unified topics (contract §3) and keeps the per-device state
//! that availability, `/readyz`, `/metrics` and the console read.
//!
//! Adapters call [`DeviceHandle::apply`] synchronously: the device's state is locked briefly (never
//! across an await), changed values are formatted and queued on the MQTT handle with `try_send`.
//! A 250 ms tick flushes values held back by `min_interval`, sends heartbeats and flips devices
//! whose readings went stale to `offline`. After every MQTT (re)connect the whole retained state is
//! published again, because a clean session loses whatever was queued or in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Now, SystemClock};
use crate::commands::{Decision, Gate, Ignored, Policy, StrangerLimit};
use crate::config::types::AdapterKind;
use crate::guard::GuardConfig;
use crate::metrics::{DeviceCounters, Metrics};
use crate::model::{self, DeviceKind, Identity, Quantity, Update, Value};
use crate::mqtt::{MqttHandle, QoS};
use crate::untrusted::{self, clip};

/// The longest `<quantity>` part of a `/set` or `/reset` topic answered on `<quantity>/result`;
/// real quantity names are a few dozen bytes, longer ones are only logged (clipped).
const MAX_ANSWERED_NAME: usize = 128;

/// Settings the router needs from the config.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// `<output.prefix>`: where `bridge/status` and `bridge/info` live.
    pub bridge_prefix: String,
    /// Publish per-quantity topics.
    pub quantity_topics: bool,
    /// Publish the state JSON.
    pub state_json: bool,
    /// QoS for values and state.
    pub qos: QoS,
}

/// What a device is, fixed at start-up.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Configured id.
    pub id: String,
    /// Adapter name.
    pub adapter: AdapterKind,
    /// Resolved topic prefix (device > route > global).
    pub prefix: String,
    /// How long without a fresh reading before the device is offline.
    pub freshness: Duration,
    /// Minimum time between publishes of one quantity.
    pub min_interval: Option<Duration>,
    /// Republish unchanged values this often while online.
    pub heartbeat: Option<Duration>,
    /// Whether `<quantity>/set` commands are accepted.
    pub commands: bool,
    /// The commands its adapter can execute (the registry's list, so the router needs no adapter
    /// knowledge); the configured allow-list picks from these.
    pub offered: &'static [&'static str],
}

mod state;

pub(crate) use state::{BRIDGE_STOPPED, Link};
use state::{Ctx, DeviceState};

/// One device inside the router.
pub(crate) struct DeviceEntry {
    /// Fixed facts.
    pub spec: DeviceSpec,
    /// Cancelled when the device is removed (reload) or the router stops: ends its reset listener.
    stop: CancellationToken,
    /// `<prefix>/<device>`.
    base: String,
    /// Per-device counters.
    pub counters: DeviceCounters,
    state: Mutex<DeviceState>,
    /// The command rules and their state (rate limit, recent commands): see [`crate::commands`].
    gate: Mutex<Gate>,
    /// Where accepted commands go; set when the adapter asks for them ([`DeviceHandle::commands`]).
    port: Mutex<Option<mpsc::Sender<Command>>>,
}

/// The router (see module docs).
pub struct Router {
    settings: RouterSettings,
    /// The devices in force. Changed only by live reload, read by the periodic tick, snapshots
    /// and republishing; never locked on the hot path (handles hold their entry).
    devices: RwLock<Vec<Arc<DeviceEntry>>>,
    /// Cancelled when the router stops: ends every device's reset listener.
    stop: CancellationToken,
    /// Whether [`Router::run`] started (devices added later start their reset listener at once).
    running: std::sync::atomic::AtomicBool,
    mqtt: MqttHandle,
    metrics: Arc<Metrics>,
    /// Started at, for `bridge/info`.
    started: SystemTime,
    /// This instance's share of a cluster: decides where `bridge/info` goes and what it says.
    /// Set by the app at start and on reload (constructors elsewhere keep the single instance).
    cluster: RwLock<crate::cluster::ClusterConfig>,
    /// Every device id configured in the cluster (owned here or by another instance): commands to a
    /// device another instance owns are left to it; only ids nobody has get a "no device" answer.
    cluster_devices: RwLock<std::collections::BTreeSet<String>>,
    /// Prefixes whose `<prefix>/+/+/set` is subscribed (one listener each, bounded by the config).
    command_prefixes: Mutex<Vec<String>>,
    /// Prefixes whose `<prefix>/+/+/reset` is subscribed (one listener each, like commands).
    reset_prefixes: Mutex<Vec<String>>,
    /// Answers to commands for device ids that do not exist: globally rate-limited.
    strangers: Mutex<StrangerLimit>,
    /// Where time comes from (the real clock; a manual one in tests).
    clock: Arc<dyn Clock>,
}

/// A cheap handle an adapter uses to report one device.
#[derive(Clone)]
pub struct DeviceHandle {
    router: Arc<Router>,
    /// The device's entry, held directly: the hot path takes no router-wide lock.
    entry: Arc<DeviceEntry>,
}

/// Snapshot of a device for `/readyz`, `/metrics` and the console.
#[derive(Debug, Clone)]
pub struct DeviceSnapshot {
    /// Device id.
    pub id: String,
    /// Adapter.
    pub adapter: AdapterKind,
    /// Kind.
    pub(crate) kind: DeviceKind,
    /// Published availability.
    pub online: bool,
    /// Why offline.
    pub reason: Option<String>,
    /// Last fresh message, wall clock.
    pub last_seen: Option<SystemTime>,
    /// Source timestamp of the latest reading.
    pub ts: Option<OffsetDateTime>,
    /// Current values.
    pub values: Vec<(Quantity, Value)>,
    /// Identity facts.
    pub identity: Identity,
    /// Adapter details.
    pub details: BTreeMap<&'static str, String>,
    /// Topic base.
    pub base: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The command rules a spec implies until [`Router::configure_commands`] sets the configured ones:
/// every command the adapter offers when `spec.commands`, none otherwise.
fn default_policy(spec: &DeviceSpec) -> Policy {
    Policy::new(
        spec.offered,
        Some(&crate::commands::CommandsSetting::All(spec.commands)),
        false,
        crate::commands::DEFAULT_RATE_LIMIT,
    )
}

/// A device's entry with fresh state.
fn new_entry(spec: DeviceSpec, metrics: &Metrics, router_stop: &CancellationToken, now: Now) -> DeviceEntry {
    DeviceEntry {
        base: format!("{}/{}", spec.prefix, spec.id),
        counters: metrics.start_device(&spec.id, spec.adapter, spec.commands),
        stop: router_stop.child_token(),
        gate: Mutex::new(Gate::new(default_policy(&spec))),
        port: Mutex::new(None),
        state: Mutex::new(DeviceState::new(now)),
        spec,
    }
}

impl Router {
    /// Creates the router for `specs`.
    pub fn new(
        settings: RouterSettings,
        specs: Vec<DeviceSpec>,
        mqtt: MqttHandle,
        metrics: Arc<Metrics>,
    ) -> Arc<Router> {
        Router::with_clock(settings, specs, mqtt, metrics, Arc::new(SystemClock))
    }

    /// Like [`Router::new`] with the clock given (tests move time by hand instead of sleeping).
    pub(crate) fn with_clock(
        settings: RouterSettings,
        specs: Vec<DeviceSpec>,
        mqtt: MqttHandle,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Router> {
        let stop = CancellationToken::new();
        let now = clock.now();
        let devices = specs.into_iter().map(|spec| Arc::new(new_entry(spec, &metrics, &stop, now))).collect();
        Arc::new(Router {
            settings,
            devices: RwLock::new(devices),
            stop,
            running: std::sync::atomic::AtomicBool::new(false),
            mqtt,
            metrics,
            started: now.wall,
            cluster: RwLock::new(crate::cluster::ClusterConfig::default()),
            cluster_devices: RwLock::new(Default::default()),
            command_prefixes: Mutex::new(Vec::new()),
            reset_prefixes: Mutex::new(Vec::new()),
            strangers: Mutex::new(StrangerLimit::new(now.mono)),
            clock,
        })
    }

    /// The devices in force (a cheap copy of the list; entries are shared).
    fn devices(&self) -> Vec<Arc<DeviceEntry>> {
        self.devices.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The ids of the devices in force.
    pub fn device_ids(&self) -> Vec<String> {
        self.devices().iter().map(|d| d.spec.id.clone()).collect()
    }

    /// Adds a device (live reload): its counters start at 0, its reset listener starts, and
    /// `bridge/info` lists it. Replaces nothing: remove a device of the same id first.
    pub fn add_device(self: &Arc<Self>, spec: DeviceSpec) -> DeviceHandle {
        let entry = Arc::new(new_entry(spec, &self.metrics, &self.stop, self.clock.now()));
        self.devices.write().unwrap_or_else(|e| e.into_inner()).push(entry.clone());
        if self.running.load(std::sync::atomic::Ordering::SeqCst) {
            self.listen_for_resets(&entry.spec.prefix);
            self.listen_for_commands(&entry.spec.prefix);
        }
        self.publish_bridge_info();
        DeviceHandle { router: self.clone(), entry }
    }

    /// Removes device `id` (live reload). With `clear_topics`, its retained topics (values, state,
    /// info, availability) are deleted with empty retained payloads, so nothing stale stays on the
    /// broker. Returns whether the device existed.
    pub fn remove_device(&self, id: &str, clear_topics: bool) -> bool {
        let removed = {
            let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
            let Some(i) = devices.iter().position(|d| d.spec.id == id) else { return false };
            devices.remove(i)
        };
        removed.stop.cancel();
        if clear_topics {
            let st = lock(&removed.state);
            let mut topics: Vec<String> = st.slots.iter().map(|s| s.topic.to_string()).collect();
            for suffix in ["state", "info", "availability"] {
                topics.push(format!("{}/{suffix}", removed.base));
            }
            drop(st);
            for t in topics {
                self.publish(t, Vec::new(), QoS::AtLeastOnce, true);
            }
        }
        self.publish_bridge_info();
        true
    }

    /// Starts the task that takes every `<prefix>/+/+/reset` (unless one runs for `prefix`): like
    /// commands, one subscription and one queue per prefix rather than per device (a per-device
    /// listener cost ~3 KB of queue, task and filter for each of 1 000 devices).
    fn listen_for_resets(self: &Arc<Self>, prefix: &str) {
        {
            let mut prefixes = lock(&self.reset_prefixes);
            if prefixes.iter().any(|p| p == prefix) {
                return;
            }
            prefixes.push(prefix.to_owned());
        }
        let router = self.clone();
        let prefix = prefix.to_owned();
        // Registered before the task runs, so the next ConnAck's SUBSCRIBEs (before `online`) have it.
        let mut resets = self.mqtt.subscribe_commands(&[&format!("{prefix}/+/+/reset")], 64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = router.stop.cancelled() => break,
                    m = resets.recv() => match m {
                        Some(m) => router.on_reset(&prefix, &m),
                        None => break,
                    },
                }
            }
        });
    }

    /// The device `id` whose topics are under `prefix` (a command or reset topic names both).
    fn device_under(&self, prefix: &str, id: &str) -> Option<Arc<DeviceEntry>> {
        self.devices().into_iter().find(|d| d.spec.id == id && d.spec.prefix == prefix)
    }

    /// Hands one message on `<prefix>/<device>/<name>/reset` to its device (none: ignored).
    fn on_reset(self: &Arc<Self>, prefix: &str, msg: &crate::mqtt::Message) {
        let Some((device_id, _)) =
            msg.topic.strip_prefix(prefix).and_then(|t| t.strip_prefix('/')).and_then(|t| t.split_once('/'))
        else {
            return;
        };
        if let Some(dev) = self.device_under(prefix, device_id) {
            self.on_guard_reset(&dev, msg);
        }
    }

    /// Starts the task that takes every `<prefix>/+/+/set` (unless one runs for `prefix`): one
    /// subscription for all devices under the prefix, so commands to ids that do not exist get an
    /// answer too, and one broker copy reaches one place.
    fn listen_for_commands(self: &Arc<Self>, prefix: &str) {
        {
            let mut prefixes = lock(&self.command_prefixes);
            if prefixes.iter().any(|p| p == prefix) {
                return;
            }
            prefixes.push(prefix.to_owned());
        }
        let router = self.clone();
        let prefix = prefix.to_owned();
        let mut sub = self.mqtt.subscribe_commands(&[&format!("{prefix}/+/+/set")], 256);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = router.stop.cancelled() => break,
                    m = sub.recv() => match m {
                        Some(m) => router.on_command(&prefix, &m),
                        None => break,
                    },
                }
            }
        });
    }

    /// Handles one message on `<prefix>/<device>/<name>/set` (see [`crate::commands`]).
    fn on_command(self: &Arc<Self>, prefix: &str, msg: &crate::mqtt::Message) {
        let Some((device_id, name)) = msg
            .topic
            .strip_prefix(prefix)
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_suffix("/set"))
            .and_then(|t| t.split_once('/'))
            .filter(|(_, name)| !name.contains('/'))
        else {
            return;
        };
        let now = self.clock.now().mono;
        let Some(dev) = self.device_under(prefix, device_id) else {
            self.answer_stranger(prefix, device_id, name, msg, now);
            return;
        };
        let handle = DeviceHandle { router: self.clone(), entry: dev.clone() };
        let decision = lock(&dev.gate).decide(device_id, name, &msg.payload, msg.retain, now);
        match decision {
            Decision::Ignore(Ignored::Empty) => return,
            Decision::Ignore(Ignored::Duplicate) => {
                tracing::debug!(device = %device_id, command = %clip(name), "second copy of a command dropped");
                self.count_command(&dev.spec.id, "duplicate");
                return;
            }
            Decision::Refuse { id, error } => handle.command_result_named(name, id.as_deref(), Err(error)),
            Decision::Run(cmd) => {
                let port = lock(&dev.port).clone();
                let sent = match port {
                    None => Err("the device's adapter is not taking commands yet (starting?)"),
                    Some(tx) => match tx.try_send(cmd.clone()) {
                        Ok(()) => Ok(()),
                        Err(mpsc::error::TrySendError::Full(_)) => Err("busy: too many commands waiting"),
                        Err(mpsc::error::TrySendError::Closed(_)) => Err("the device's adapter has stopped"),
                    },
                };
                if let Err(e) = sent {
                    handle.command_result(&cmd, Err(e.into()));
                }
            }
        }
        self.clear_command(msg);
    }

    /// Deletes a command from the broker's retained store. Every taken command is cleared (one
    /// publish), not only those flagged retained: on an MQTT 3.1.1 broker (the fallback) a live
    /// retained command arrives unflagged.
    fn clear_command(&self, msg: &crate::mqtt::Message) {
        self.publish(msg.topic.clone(), Vec::new(), QoS::AtLeastOnce, true);
    }

    /// Answers a command to a device id that does not exist under `prefix`, within a global budget.
    fn answer_stranger(&self, prefix: &str, device_id: &str, name: &str, msg: &crate::mqtt::Message, now: Instant) {
        if msg.payload.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        {
            let cluster = self.cluster.read().unwrap_or_else(|e| e.into_inner());
            if cluster.is_sharded() {
                // Another instance owns it and answers; an id nobody has is answered once, by instance 0.
                let configured = self.cluster_devices.read().unwrap_or_else(|e| e.into_inner()).contains(device_id);
                if configured || cluster.number() != 0 {
                    return;
                }
            }
        }
        let admitted = lock(&self.strangers).admit(&msg.topic, &msg.payload, now);
        if admitted {
            let plausible_id = (1..=64).contains(&device_id.len())
                && device_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
            if plausible_id && name.len() <= MAX_ANSWERED_NAME && crate::mqtt::topic::valid_topic(name) {
                let body = crate::commands::result_body(
                    &Err(format!("no device `{device_id}` under `{prefix}`: check the id and the prefix")),
                    None,
                );
                self.publish(format!("{prefix}/{device_id}/{name}/result"), body.to_string(), QoS::AtLeastOnce, false);
            }
        } else {
            tracing::debug!(topic = %clip(&msg.topic), "command to an unknown device not answered (budget spent)");
        }
        // A retained replay is cleared whatever the budget: that shrinks the broker's store.
        if admitted || msg.retain {
            self.clear_command(msg);
        }
    }

    fn count_command(&self, device: &str, outcome: &str) {
        self.metrics
            .commands
            .get_or_create(&crate::metrics::DeviceReasonLabel { device: device.to_owned(), reason: outcome.into() })
            .inc();
    }

    /// Sets the command rules of device `id` (its `commands` and `command_rate_limit` keys).
    pub(crate) fn configure_commands(&self, id: &str, policy: Policy) {
        if let Some(dev) = self.devices().into_iter().find(|d| d.spec.id == id) {
            *lock(&dev.gate) = Gate::new(policy);
        }
    }

    /// The handle for device `id`.
    pub fn handle(self: &Arc<Self>, id: &str) -> Option<DeviceHandle> {
        let entry = self.devices().into_iter().find(|d| d.spec.id == id)?;
        Some(DeviceHandle { router: self.clone(), entry })
    }

    /// The MQTT handle (adapters subscribe through it).
    pub(crate) fn mqtt(&self) -> &MqttHandle {
        &self.mqtt
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The bridge's status topic (retained `online`/`offline`, also the MQTT last will):
    /// `<prefix>/bridge/status` for a single instance (`instance` `None`), else
    /// `<prefix>/bridge/<instance>/status`. A device's availability is only to be trusted while the
    /// status of the instance that owns it is `online` (`bridge/<instance>/info` lists its devices):
    /// the one place that names the topic, for the last will, shutdown and discovery.
    pub(crate) fn status_topic(prefix: &str, instance: Option<u32>) -> String {
        match instance {
            None => format!("{prefix}/bridge/status"),
            Some(n) => format!("{prefix}/bridge/{n}/status"),
        }
    }

    /// `<prefix>/bridge/info`, or `<prefix>/bridge/<instance>/info` in a cluster.
    pub(crate) fn info_topic(prefix: &str, instance: Option<u32>) -> String {
        match instance {
            None => format!("{prefix}/bridge/info"),
            Some(n) => format!("{prefix}/bridge/{n}/info"),
        }
    }

    /// Sets this instance's place in a cluster (start-up, reload) and republishes `bridge/info`.
    pub(crate) fn set_cluster(
        &self,
        cluster: &crate::cluster::ClusterConfig,
        configured: impl IntoIterator<Item = String>,
    ) {
        *self.cluster.write().unwrap_or_else(|e| e.into_inner()) = cluster.clone();
        *self.cluster_devices.write().unwrap_or_else(|e| e.into_inner()) = configured.into_iter().collect();
        self.publish_bridge_info();
    }

    fn publish(&self, topic: impl Into<String>, payload: impl Into<Vec<u8>>, qos: QoS, retain: bool) {
        self.mqtt.publish(topic, payload, qos, retain);
    }

    /// Publishes `bridge/info`, then every device's availability, identity, values and state.
    /// Called after each MQTT (re)connect and at start-up.
    pub(crate) fn republish_all(&self) {
        self.publish_bridge_info();
        let now = self.clock.now();
        for dev in &self.devices() {
            let mut st = lock(&dev.state);
            st.republish(&self.cx(dev), now);
            self.send(&mut st);
        }
    }

    fn publish_bridge_info(&self) {
        let devices = self.devices();
        let mut adapters: Vec<&str> = devices.iter().map(|d| d.spec.adapter.as_str()).collect();
        adapters.sort_unstable();
        adapters.dedup();
        let cluster = self.cluster.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut info = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "started": model::ts_string(OffsetDateTime::from(self.started)),
            "devices": devices.iter().map(|d| serde_json::json!({
                "id": d.spec.id, "adapter": d.spec.adapter.as_str(),
                "kind": d.spec.adapter.device_kind().as_str(), "topic": d.base,
            })).collect::<Vec<_>>(),
            "adapters": adapters,
        });
        if let (Some(n), serde_json::Value::Object(m)) = (cluster.topic_instance(), &mut info) {
            m.insert("instance".into(), n.into());
            m.insert("instances".into(), cluster.instances.into());
        }
        let topic = Self::info_topic(&self.settings.bridge_prefix, cluster.topic_instance());
        self.publish(topic, info.to_string(), QoS::AtLeastOnce, true);
    }

    /// What a state step needs about `dev`.
    fn cx<'a>(&'a self, dev: &'a DeviceEntry) -> Ctx<'a> {
        Ctx { spec: &dev.spec, base: &dev.base, settings: &self.settings, counters: &dev.counters }
    }

    /// The thin layer: sends what the state machine queued, in order, while the caller still holds
    /// the device's lock (so two steps of one device never interleave their publishes).
    #[inline]
    fn send(&self, st: &mut DeviceState) {
        if !st.out.is_empty() {
            // One hand-over per step, not one per publish (an `nrg` input makes 17).
            self.mqtt.publish_batch(st.take_out());
        }
    }

    fn apply(&self, dev: &DeviceEntry, update: Update) {
        let now = self.clock.now();
        let mut st = lock(&dev.state);
        st.apply(&self.cx(dev), update, now);
        self.send(&mut st);
    }

    /// Sets the counter-guard settings of device `id` (from its `guard:` block); called at start-up.
    pub fn configure_guard(&self, id: &str, config: &GuardConfig) {
        let Some(dev) = self.devices().into_iter().find(|d| d.spec.id == id) else { return };
        lock(&dev.state).configure_guard(config);
    }

    /// Handles `<prefix>/<device>/<quantity>/reset`: the guard accepts the next reading as is.
    fn on_guard_reset(self: &Arc<Self>, dev: &Arc<DeviceEntry>, msg: &crate::mqtt::Message) {
        let Some(name) = msg
            .topic
            .strip_prefix(&dev.base)
            .and_then(|t| t.strip_prefix('/'))
            .and_then(|t| t.strip_suffix("/reset"))
            .filter(|rest| !rest.contains('/'))
        else {
            return;
        };
        let handle = DeviceHandle { router: self.clone(), entry: dev.clone() };
        if msg.retain {
            handle.command_result_named(
                name,
                None,
                Err("retained resets are ignored; publish without the retain flag".into()),
            );
            return;
        }
        let reset = Quantity::lookup(name).is_some_and(|q| handle.reset_guard(q));
        if reset {
            tracing::info!(device = %handle.id(), quantity = name, "counter guard reset: the next reading is accepted as is");
            handle.command_result_named(name, None, Ok(serde_json::Value::from("reset")));
        } else {
            handle.command_result_named(
                name,
                None,
                Err(format!("`{}` is not a guarded counter of this device", clip(name))),
            );
        }
    }

    /// Publishes the state JSON if values changed since the last one (and `min_interval` allows).
    fn flush(&self, dev: &DeviceEntry) {
        let now = self.clock.now();
        let mut st = lock(&dev.state);
        st.flush(&self.cx(dev), now);
        self.send(&mut st);
    }

    /// Periodic work: held-back values, heartbeats, staleness.
    pub(crate) fn tick(&self) {
        let now = self.clock.now();
        for dev in &self.devices() {
            let mut st = lock(&dev.state);
            st.tick(&self.cx(dev), now);
            self.send(&mut st);
        }
    }

    /// Publishes every device as offline (shutdown).
    pub(crate) fn all_offline(&self, reason: &str) {
        for dev in &self.devices() {
            let mut st = lock(&dev.state);
            st.set_online(&self.cx(dev), false, Some(reason.to_owned()));
            self.send(&mut st);
        }
    }

    /// Each device's spec with the freshness window in force (the configured one, or longer when the
    /// device announced a slower cadence); Home Assistant discovery derives `expire_after` and controls
    /// from them.
    pub(crate) fn specs(&self) -> Vec<(DeviceSpec, Duration)> {
        self.devices().iter().map(|d| (d.spec.clone(), lock(&d.state).freshness(&d.spec))).collect()
    }

    /// Snapshots every device.
    pub fn snapshot(&self) -> Vec<DeviceSnapshot> {
        self.devices()
            .iter()
            .map(|d| {
                let st = lock(&d.state);
                DeviceSnapshot {
                    id: d.spec.id.clone(),
                    adapter: d.spec.adapter,
                    kind: d.spec.adapter.device_kind(),
                    online: st.online,
                    reason: st.reason.clone(),
                    last_seen: st.last_seen.map(|(_, t)| t),
                    ts: st.ts,
                    values: st.slots.iter().map(|s| (s.quantity, s.value.clone())).collect(),
                    identity: st.identity.clone(),
                    details: st.details.clone(),
                    base: d.base.clone(),
                }
            })
            .collect()
    }

    /// Registers every device's reset and command subscriptions and starts their listeners (once;
    /// [`Router::run`] does it too). Called right after the MQTT client is spawned, before its
    /// first ConnAck is likely, so the filters go out with the first SUBSCRIBEs, before the birth
    /// message: a command sent as soon as `bridge/status` says `online` is not lost.
    pub(crate) fn listen(self: &Arc<Self>) {
        if self.running.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for dev in &self.devices() {
            self.listen_for_resets(&dev.spec.prefix);
            self.listen_for_commands(&dev.spec.prefix);
        }
    }

    /// Runs the periodic tick and the republish-on-reconnect watcher until `cancel`.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        // Watch first: a ConnAck that lands while the reset filters are subscribed must not be missed.
        let mut conn = self.mqtt.watch();
        let mut seen_generation = 0;
        // The first connection may have come up before this watcher existed.
        let initial = *conn.borrow_and_update();
        if initial.connected {
            seen_generation = initial.generation;
            self.republish_all();
        }
        self.listen();
        // A ConnAck that came before this point is no change for `changed()`: catch up on it.
        let state = *conn.borrow_and_update();
        if state.connected {
            seen_generation = state.generation;
            self.republish_all();
        }
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => self.tick(),
                changed = conn.changed() => {
                    if changed.is_err() { break; }
                    let state = *conn.borrow_and_update();
                    if state.connected && state.generation != seen_generation {
                        seen_generation = state.generation;
                        self.republish_all();
                    }
                }
            }
        }
        self.stop.cancel();
    }
}

pub(crate) use crate::commands::Command;

impl DeviceHandle {
    /// The device id.
    pub(crate) fn id(&self) -> &str {
        &self.entry().spec.id
    }

    fn entry(&self) -> &DeviceEntry {
        &self.entry
    }

    /// The device's counters.
    pub(crate) fn counters(&self) -> &DeviceCounters {
        &self.entry().counters
    }

    /// The MQTT handle.
    pub(crate) fn mqtt(&self) -> &MqttHandle {
        &self.router.mqtt
    }

    /// Routes one update: changed values are published at once; the state JSON waits for
    /// [`DeviceHandle::flush`], so a burst of messages yields one snapshot.
    pub(crate) fn apply(&self, update: Update) {
        self.router.apply(&self.entry, update);
    }

    /// Publishes the state JSON if anything changed. Adapters call it when their input queue is
    /// empty (end of a burst) or after each poll; the router's tick does it otherwise.
    pub fn flush(&self) {
        self.router.flush(&self.entry);
    }

    /// Reports the transport state; `Down` takes the device offline at once with the reason.
    pub(crate) fn set_link(&self, mut link: Link) {
        if let Link::Down(reason) = &mut link {
            // The reason may quote the device (an HTTP error body); `/readyz` shows it.
            untrusted::bound_string(reason);
        }
        let dev = self.entry();
        let now = self.router.clock.now();
        let mut st = lock(&dev.state);
        st.set_link(&self.router.cx(dev), link, now);
        self.router.send(&mut st);
    }

    /// Another configured device of the same adapter, for an adapter that feeds several configured
    /// devices from one connection (an AI-on-the-edge camera reading several meters); `None` when
    /// `id` is not configured or belongs to another adapter.
    pub(crate) fn sibling(&self, id: &str) -> Option<DeviceHandle> {
        let h = self.router.handle(id)?;
        (h.entry().spec.adapter == self.entry().spec.adapter).then_some(h)
    }

    /// Makes the freshness window at least `window` (never shorter than configured): for devices
    /// that announce a longer cadence than the config assumed.
    pub(crate) fn extend_freshness(&self, window: Duration) {
        let mut st = lock(&self.entry().state);
        if window > st.min_freshness {
            st.min_freshness = window;
        }
    }

    /// Sets the configured `ingest_queue` (the adapter's input queue length); called at start-up.
    pub(crate) fn set_ingest_queue(&self, capacity: Option<usize>) {
        lock(&self.entry().state).ingest_queue = capacity;
    }

    /// The configured `ingest_queue`, if any (adapters fall back to their own default).
    pub(crate) fn ingest_queue(&self) -> Option<usize> {
        lock(&self.entry().state).ingest_queue
    }

    /// Forgets the counter guard's baseline of `q`: the next reading is accepted as is (a replaced
    /// meter). Returns false when `q` is not a guarded quantity of this device.
    pub(crate) fn reset_guard(&self, q: Quantity) -> bool {
        lock(&self.entry().state).reset_guard(q)
    }

    /// Records an adapter fact shown in `/readyz` (e.g. `transport`, `dialect`).
    pub(crate) fn set_detail(&self, key: &'static str, value: impl Into<String>) {
        let mut v = value.into();
        untrusted::bound_string(&mut v);
        let mut st = lock(&self.entry().state);
        if st.details.get(key) != Some(&v) {
            st.details.insert(key, v);
        }
    }

    /// Whether the device is published `online` (reachable and fresh).
    pub(crate) fn is_online(&self) -> bool {
        lock(&self.entry().state).online
    }

    /// The latest value of `q`, if any.
    pub(crate) fn value(&self, q: Quantity) -> Option<Value> {
        let st = lock(&self.entry().state);
        st.slots.iter().find(|s| s.quantity == q).map(|s| s.value.clone())
    }

    /// The commands for this device that passed the shared checks (allow-list, rate limit,
    /// retained, duplicates; see [`crate::commands`]); the adapter answers each with
    /// [`DeviceHandle::command_result`]. Asking again replaces the previous receiver.
    pub(crate) fn commands(&self) -> mpsc::Receiver<Command> {
        let (tx, rx) = mpsc::channel(16);
        *lock(&self.entry().port) = Some(tx);
        rx
    }

    /// Publishes the outcome of `cmd` on `<name>/result` (with its `id`) and counts it.
    pub(crate) fn command_result(&self, cmd: &Command, result: Result<serde_json::Value, String>) {
        self.command_result_named(cmd.name, cmd.id.as_deref(), result);
    }

    /// Like [`DeviceHandle::command_result`] for a value of quantity `q` (printed with its decimals).
    pub(crate) fn command_value_result(&self, cmd: &Command, q: Quantity, result: Result<Value, String>) {
        self.command_result(cmd, result.map(|v| v.to_json(q.family().decimals)));
    }

    fn command_result_named(&self, name: &str, id: Option<&str>, result: Result<serde_json::Value, String>) {
        let dev = self.entry();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => {
                tracing::warn!(device = %dev.spec.id, command = %clip(name), error = %clip(e), "command failed");
                "error"
            }
        };
        self.router.count_command(&dev.spec.id, outcome);
        if name.len() <= MAX_ANSWERED_NAME && crate::mqtt::topic::valid_topic(name) && !name.contains('/') {
            let body = crate::commands::result_body(&result, id);
            self.router.publish(format!("{}/{name}/result", dev.base), body.to_string(), QoS::AtLeastOnce, false);
        }
    }
}

#[cfg(test)]
mod tests;

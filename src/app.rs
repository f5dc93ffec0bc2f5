//! Wiring: starts the embedded broker (if configured), the MQTT client, the router, the adapters,
//! in-process simulators, the HTTP endpoint and the console; shuts everything down in order.
//!
//! Shutdown order matters: adapters and simulators stop first, then every device is published
//! `offline`, then `bridge/status` `offline`, then the outbound queue is flushed and the client
//! disconnects cleanly (so the broker does not also fire the last will), all within 5 s.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::mqtt::{self, MqttSettings, QoS};
use crate::reload::DeviceChange;
use crate::router::{DeviceSpec, Router, RouterSettings};

/// Time allowed for a clean stop.
pub(crate) const SHUTDOWN_BUDGET: Duration = Duration::from_secs(5);
/// How long start-up waits for the adapters to register their subscriptions before connecting.
const ADAPTERS_REGISTER_BUDGET: Duration = Duration::from_secs(2);
/// How long the in-process simulators' MQTT clients wait for the broker to acknowledge the
/// bridge's subscriptions before they connect anyway.
#[cfg(feature = "simulators")]
const SIMULATORS_WAIT_BUDGET: Duration = Duration::from_secs(5);

/// Builds the broker connection settings from the config.
pub fn mqtt_settings(config: &Config) -> anyhow::Result<MqttSettings> {
    let mut s = MqttSettings::from_url(&config.mqtt.url, &config.mqtt.client_id)?;
    s.username = config.mqtt.username.clone();
    s.password = config.mqtt.password.as_ref().map(|p| p.expose().to_owned());
    s.keep_alive = config.mqtt.keep_alive.0;
    s.queue_capacity = config.mqtt.queue_capacity;
    s.backoff_max = config.mqtt.reconnect_max.0;
    s.tcp_nodelay = config.mqtt.tcp_nodelay;
    let status = Router::status_topic(&config.output.prefix, config.cluster.topic_instance());
    s.last_will = Some((status.clone(), "offline".into()));
    s.birth = Some((status, "online".into()));
    if let Some(tls) = &mut s.tls {
        let t = &config.mqtt.tls;
        tls.ca_file = t.ca_file.clone();
        tls.client_cert_file = t.client_cert_file.clone();
        tls.client_key_file = t.client_key_file.clone();
        tls.insecure = t.insecure;
        if t.insecure {
            tracing::warn!("mqtt.tls.insecure is set: the broker's certificate is NOT verified");
        }
    }
    Ok(s)
}

/// A running bridge, for tests and the binary.
pub struct Running {
    /// The router (device state).
    pub router: Arc<Router>,
    /// The MQTT handle.
    pub mqtt: mqtt::MqttHandle,
    /// Address of the HTTP endpoint, when enabled.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Stops adapters, simulators, the router tick, HTTP and the console.
    work: CancellationToken,
    /// Stops the MQTT client tasks, last.
    mqtt_cancel: CancellationToken,
    /// Adapter and simulator tasks: waited for before devices are published offline, so no
    /// late reading can publish `online` again.
    devices: TaskTracker,
    /// Every other task.
    tracker: TaskTracker,
    status_topic: String,
    /// The config in force (sections that only apply on restart keep their running values).
    config: Config,
    /// Each running adapter: its stop token and task, so reload can stop one device alone.
    adapters: BTreeMap<String, (CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The HTTP endpoint's stop token, so reload can move it to a new address.
    http_stop: Option<CancellationToken>,
    /// Health metrics plus the device collector, served again after a move.
    registry: Arc<Registry>,
    /// Cancelled when the bridge asks to be stopped from inside (`q` in the console).
    stop_requested: CancellationToken,
    /// Home Assistant discovery, when enabled: told about reloaded devices.
    homeassistant: Option<crate::homeassistant::HomeAssistant>,
}

/// Errors of a reload that was refused (the running config stays in force).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file does not load; every error is listed.
    #[error("{0}")]
    Invalid(crate::config::ConfigErrors),
    /// The new `mqtt:` settings cannot be used (bad URL, unreadable TLS files).
    #[error("mqtt: {0}")]
    Mqtt(String),
    /// The new `http.listen` address cannot be bound.
    #[error("http.listen: cannot listen on {addr}: {error}")]
    Listen {
        /// The new address.
        addr: std::net::SocketAddr,
        /// Why not (in use, no permission).
        error: std::io::Error,
    },
}

impl Running {
    /// Resolves when the bridge asks to be stopped from inside (`q` in the console); then call
    /// [`Running::shutdown`] as for a signal.
    pub(crate) async fn stop_requested(&self) {
        self.stop_requested.cancelled().await
    }

    /// Reloads from `path` (SIGHUP, `--watch`): an invalid file is refused with every error and
    /// the running config stays; otherwise [`Running::reload`]. Counts and logs the outcome.
    pub async fn reload_file(&mut self, path: &std::path::Path) -> Result<crate::reload::Plan, ReloadError> {
        let result = match crate::config::load_file(path) {
            Ok(config) => self.reload(config).await,
            Err(errors) => Err(ReloadError::Invalid(errors)),
        };
        match &result {
            Ok(_) => {}
            Err(ReloadError::Invalid(errors)) => {
                for e in &errors.0 {
                    tracing::error!("config reload refused: {e}");
                }
                tracing::error!(file = %path.display(), errors = errors.0.len(), "config reload refused; the running config stays in force");
            }
            Err(e) => {
                tracing::error!(file = %path.display(), "config reload refused: {e}; the running config stays in force")
            }
        }
        if matches!(result, Err(ReloadError::Invalid(_))) {
            self.count_reload(false);
        }
        result
    }

    fn count_reload(&self, ok: bool) {
        let m = self.router.metrics();
        m.config_reloads(if ok { "ok" } else { "error" }).inc();
        m.config_last_reload_successful.set(i64::from(ok));
    }

    /// Applies `new` live: removed devices stop and their retained topics are cleared, changed
    /// devices restart, added devices start, unchanged devices are not touched (no availability
    /// flap, counters and counter-guard state kept); a changed `mqtt:` reconnects, a changed
    /// `http.listen` moves the endpoint. Settings that cannot be used are refused before anything
    /// changes. Sections that only apply on restart keep their running values (logged).
    pub async fn reload(&mut self, new: Config) -> Result<crate::reload::Plan, ReloadError> {
        let result = self.apply(new).await;
        self.count_reload(result.is_ok());
        result
    }

    async fn apply(&mut self, new: Config) -> Result<crate::reload::Plan, ReloadError> {
        let plan = crate::reload::plan(&self.config, &new);
        // Everything that can fail comes first, so a refused reload disturbs nothing.
        let mqtt_settings = if plan.mqtt {
            let s = mqtt_settings(&new).map_err(|e| ReloadError::Mqtt(format!("{e:#}")))?;
            Some(s)
        } else {
            None
        };
        let listener = match (plan.http_listen, new.http.listen) {
            (true, Some(addr)) => {
                Some(TcpListener::bind(addr).await.map_err(|error| ReloadError::Listen { addr, error })?)
            }
            _ => None,
        };
        if let Some(s) = &mqtt_settings {
            self.mqtt.reconfigure(s).map_err(|e| ReloadError::Mqtt(e.to_string()))?;
        }
        if plan.http_listen {
            if let Some(stop) = self.http_stop.take() {
                stop.cancel();
            }
            self.http_addr = None;
            if let Some(listener) = listener {
                self.serve_http(listener);
            }
        }
        let old_config = std::mem::replace(&mut self.config, new);
        if plan.bridge_topics_moved {
            // The old status and info topics would say `online` forever: clear them. The new
            // status topic gets `online` from the reconnect's birth message.
            let prefix = &old_config.output.prefix;
            let old = old_config.cluster.topic_instance();
            self.mqtt.publish(Router::status_topic(prefix, old), Vec::new(), QoS::AtLeastOnce, true);
            self.mqtt.publish(Router::info_topic(prefix, old), Vec::new(), QoS::AtLeastOnce, true);
            self.status_topic = Router::status_topic(prefix, self.config.cluster.topic_instance());
        }
        self.router.set_cluster(&self.config.cluster, self.config.enabled_devices().map(|(id, _)| id.clone()));
        // Stop first: a changed device must be gone before its new self subscribes, and a device
        // moving to another instance is stopped here before that instance's reload starts it.
        let stopping = [DeviceChange::Removed, DeviceChange::MovedAway, DeviceChange::Changed];
        for id in stopping.into_iter().flat_map(|c| plan.ids(c)) {
            if let Some((stop, task)) = self.adapters.remove(id) {
                stop.cancel();
                if tokio::time::timeout(Duration::from_secs(3), task).await.is_err() {
                    tracing::warn!(device = %id, "adapter did not stop within 3 s; removed anyway");
                }
            }
            // A device that moves to another instance keeps its retained topics: its new owner
            // publishes over them, and clearing them could erase what the new owner already sent.
            let removed = plan.ids(DeviceChange::Removed).contains(&id);
            let changed = plan.ids(DeviceChange::Changed).contains(&id);
            let moved = changed && self.base_of(&old_config, id) != self.base_of(&self.config, id);
            self.router.remove_device(id, removed || moved);
        }
        self.mqtt.release_unused();
        let starting = [DeviceChange::Added, DeviceChange::MovedIn, DeviceChange::Changed];
        for id in starting.into_iter().flat_map(|c| plan.ids(c)) {
            self.start_device(id);
        }
        // Keep what only a restart applies, so the config in force says what really runs.
        for section in &plan.restart_needed {
            match *section {
                "output" => self.config.output = old_config.output.clone(),
                "log" => self.config.log = old_config.log.clone(),
                "runtime" => self.config.runtime = old_config.runtime.clone(),
                "simulators" => self.config.simulators = old_config.simulators.clone(),
                "mqtt.embedded" => self.config.mqtt.embedded = old_config.mqtt.embedded.clone(),
                "homeassistant" => self.config.homeassistant = old_config.homeassistant.clone(),
                "http" => {
                    let listen = self.config.http.listen;
                    self.config.http = old_config.http.clone();
                    self.config.http.listen = listen;
                }
                _ => {}
            }
            tracing::warn!(section, "config section changed; it takes effect only after a restart");
        }
        if let Some(ha) = &self.homeassistant {
            ha.reconfigure(&self.config);
        }
        tracing::info!(
            added = ?plan.ids(DeviceChange::Added),
            removed = ?plan.ids(DeviceChange::Removed),
            restarted = ?plan.ids(DeviceChange::Changed),
            moved_in = ?plan.ids(DeviceChange::MovedIn),
            moved_away = ?plan.ids(DeviceChange::MovedAway),
            unchanged = plan.ids(DeviceChange::Unchanged).len(),
            mqtt_reconnect = plan.mqtt,
            http_moved = plan.http_listen,
            "config reloaded"
        );
        Ok(plan)
    }

    fn base_of(&self, config: &Config, id: &str) -> Option<String> {
        config.device_spec(id).map(|s| format!("{}/{id}", s.prefix))
    }

    /// Adds device `id` of the config in force to the router and starts its adapter.
    fn start_device(&mut self, id: &str) {
        let owned = |d: &&crate::config::DeviceConfig| d.common.enabled && self.config.cluster.owns(id);
        let Some(d) = self.config.devices.get(id).filter(owned).cloned() else { return };
        let Some(spec) = self.config.device_spec(id) else {
            return;
        };
        let handle = self.router.add_device(spec);
        self.router.configure_guard(id, &d.common.guard);
        self.router.configure_commands(id, crate::adapters::command_policy(&d));
        // Live: the connection subscribes its filters as they are registered; readiness waits
        // for their SUBACK.
        drop(self.spawn_adapter(id, &d, handle));
    }

    /// Starts the adapter of device `id`; the receiver fires after its first step (by then its
    /// MQTT subscriptions are registered).
    fn spawn_adapter(
        &mut self,
        id: &str,
        d: &crate::config::DeviceConfig,
        handle: crate::router::DeviceHandle,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let stop = self.work.child_token();
        let spawned = crate::adapters::spawn(d, handle, &self.devices, stop.clone());
        tracing::info!(device = %id, adapter = %d.common.adapter.as_str(), "adapter started");
        self.adapters.insert(id.to_owned(), (stop, spawned.task));
        spawned.first_step
    }

    fn serve_http(&mut self, listener: TcpListener) {
        let addr = listener.local_addr().ok();
        let state = crate::http::HttpState {
            registry: self.registry.clone(),
            router: self.router.clone(),
            mqtt: self.mqtt.clone(),
        };
        let stop = self.work.child_token();
        let cancel = stop.clone();
        self.tracker.spawn(async move {
            if let Err(e) = crate::http::serve(listener, state, cancel).await {
                tracing::error!(error = %e, "HTTP endpoint failed");
            }
        });
        if let Some(a) = addr {
            tracing::info!(addr = %a, "serving /metrics /healthz /readyz");
        }
        self.http_addr = addr;
        self.http_stop = Some(stop);
    }

    /// Stops everything in order (see module docs) within [`SHUTDOWN_BUDGET`].
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
        self.work.cancel();
        self.devices.close();
        if tokio::time::timeout_at(deadline - Duration::from_secs(3), self.devices.wait()).await.is_err() {
            let late: Vec<&str> =
                self.adapters.iter().filter(|(_, (_, task))| !task.is_finished()).map(|(id, _)| id.as_str()).collect();
            tracing::warn!(late = %late.join(", "), "some adapters or simulators did not stop in time; publishing offline anyway");
        }
        self.router.all_offline(crate::router::BRIDGE_STOPPED);
        self.mqtt.publish(self.status_topic.clone(), "offline", QoS::AtLeastOnce, true);
        if self.mqtt.state().connected {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.mqtt.flush_and_disconnect(left.saturating_sub(Duration::from_millis(300))).await;
        }
        self.mqtt_cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_err() {
            tracing::warn!("some tasks did not stop within {SHUTDOWN_BUDGET:?}; exiting anyway");
        }
    }
}

/// Starts the bridge. `http_listener` overrides `http.listen` (tests pass a `127.0.0.1:0` listener).
pub async fn start(config: &Config, http_listener: Option<TcpListener>) -> anyhow::Result<Running> {
    // The vendor tables are compiled in; parsing them all now turns a bad row into a refused start
    // naming its file and line, not a failure at the first message that needs it.
    crate::adapters::check_tables().map_err(|e| anyhow::anyhow!("vendor table: {e}"))?;
    if let Some(warning) = config.idle_warning() {
        tracing::warn!("{warning}");
    }
    #[cfg(feature = "embedded-broker")]
    if let Some(e) = &config.mqtt.embedded {
        crate::broker::start(e.listen).await?;
    }
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let settings = mqtt_settings(config)?;
    let tracker = TaskTracker::new();
    let devices = TaskTracker::new();
    let work = CancellationToken::new();
    let mqtt_cancel = CancellationToken::new();
    // Held until the router registered its command filters (below): the first ConnAck subscribes
    // them before the birth says `online`.
    let (mqtt, gate) = mqtt::spawn_held(&settings, metrics.clone(), &tracker, mqtt_cancel.clone())?;

    // Only this instance's share (every device without `cluster:`): the others are not even
    // subscribed to, so a command reaches the owner alone and a gateway has one client.
    let specs: Vec<DeviceSpec> = config.owned_devices().filter_map(|(id, _)| config.device_spec(id)).collect();
    let router = Router::new(
        RouterSettings {
            bridge_prefix: config.output.prefix.clone(),
            quantity_topics: config.output.quantity_topics,
            state_json: config.output.state_json,
            qos: if config.output.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce },
        },
        specs,
        mqtt.clone(),
        metrics.clone(),
    );
    router.set_cluster(&config.cluster, config.enabled_devices().map(|(id, _)| id.clone()));
    for (id, d) in config.owned_devices() {
        router.configure_guard(id, &d.common.guard);
        router.configure_commands(id, crate::adapters::command_policy(d));
    }
    registry.register_collector(Box::new(crate::http::DeviceCollector(router.clone())));
    router.listen();
    tracker.spawn(router.clone().run(work.clone()));

    let mut running = Running {
        router: router.clone(),
        mqtt: mqtt.clone(),
        http_addr: None,
        work: work.clone(),
        mqtt_cancel,
        devices,
        tracker,
        status_topic: Router::status_topic(&config.output.prefix, config.cluster.topic_instance()),
        config: config.clone(),
        adapters: BTreeMap::new(),
        http_stop: None,
        registry: Arc::new(Registry::default()),
        stop_requested: CancellationToken::new(),
        homeassistant: None,
    };
    running.homeassistant =
        crate::homeassistant::HomeAssistant::start(config, router.clone(), &running.tracker, work.clone());
    if config.cluster.is_sharded() {
        let owned: Vec<&String> = config.owned_devices().map(|(id, _)| id).collect();
        tracing::info!(
            instance = config.cluster.number(),
            instances = config.cluster.instances,
            devices = ?owned,
            "cluster member: running only the devices this instance owns"
        );
    }
    #[cfg(feature = "simulators")]
    let bridge_listening = start_simulators(config, &running, &work).await?;
    let mut first_steps = Vec::new();
    for (id, d) in config.owned_devices() {
        if let Some(handle) = router.handle(id) {
            first_steps.push(running.spawn_adapter(id, d, handle));
        }
    }
    // Connect only once every adapter registered its subscriptions: the first ConnAck subscribes
    // them ahead of the birth, so `online` means every device is listened to (a device's first
    // messages after that are not lost to a late SUBSCRIBE). Bounded, so that an adapter that
    // misbehaves cannot hold the bridge offline.
    let registered = async {
        for step in first_steps {
            let _ = step.await;
        }
    };
    if tokio::time::timeout(ADAPTERS_REGISTER_BUDGET, registered).await.is_err() {
        tracing::warn!("some adapters took longer than {ADAPTERS_REGISTER_BUDGET:?} to start; connecting anyway");
    }
    gate.open();

    // The simulators' devices publish from the moment the bridge listens: see `start_simulators`.
    #[cfg(feature = "simulators")]
    if let Some(listening) = bridge_listening {
        let mqtt = mqtt.clone();
        running.tracker.spawn(async move {
            if tokio::time::timeout(SIMULATORS_WAIT_BUDGET, mqtt.subscriptions_acknowledged()).await.is_err() {
                tracing::warn!(
                    "the broker has not acknowledged the bridge's subscriptions after {SIMULATORS_WAIT_BUDGET:?}; \
                     the simulators connect anyway (what they publish before it does is lost)"
                );
            }
            let _ = listening.send(true);
        });
    }

    let listener = match http_listener {
        Some(l) => Some(l),
        None => match config.http.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("http.listen: cannot listen on {addr} (in use? set http.listen)"))?,
            ),
            None => None,
        },
    };
    running.registry = Arc::new(registry);
    if let Some(listener) = listener {
        running.serve_http(listener);
    }
    if config.output.console {
        let console = crate::console::ConsoleContext {
            router: router.clone(),
            mqtt: mqtt.clone(),
            broker: config.mqtt.url.clone(),
            http: running.http_addr,
            stop_requested: running.stop_requested.clone(),
        };
        running.tracker.spawn(crate::console::run(console, work.clone()));
    }
    Ok(running)
}

/// Starts the in-process simulators before the adapters, so that a device's HTTP API already
/// listens when its adapter first asks. Their MQTT clients connect only once the sender returned
/// here says the bridge listens on its broker (`None`: no simulator configured).
#[cfg(feature = "simulators")]
async fn start_simulators(
    config: &Config,
    running: &Running,
    work: &CancellationToken,
) -> anyhow::Result<Option<tokio::sync::watch::Sender<bool>>> {
    if config.simulators.is_empty() {
        return Ok(None);
    }
    let (listening_tx, listening) = tokio::sync::watch::channel(false);
    let bridge = crate::simulate::BridgeBroker {
        url: config.mqtt.url.clone(),
        username: config.mqtt.username.clone(),
        password: config.mqtt.password.as_ref().map(|p| p.expose().to_owned()),
        listening,
    };
    for (name, sim) in &config.simulators {
        crate::simulate::start(name, sim, &bridge, &running.devices, work.child_token()).await?;
    }
    Ok(Some(listening_tx))
}

/// Runs the bridge until `shutdown` resolves, then stops it cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    run_reloading(config, None, shutdown).await
}

/// Where a running bridge reloads its config from.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// The config file, read again on SIGHUP.
    pub path: std::path::PathBuf,
    /// Also reload when the file's content changes (checked every second).
    pub watch: bool,
}

/// Like [`run`], reloading the config live from `reload` on SIGHUP (and on change with `watch`).
pub async fn run_reloading(
    config: Config,
    reload: Option<ReloadSource>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut running = start(&config, None).await?;
    let mut hangups = hangup_signals();
    let mut seen = reload.as_ref().and_then(|r| std::fs::read(&r.path).ok());
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watching = reload.as_ref().is_some_and(|r| r.watch);
    tokio::pin!(shutdown);
    loop {
        let why = tokio::select! {
            _ = &mut shutdown => break,
            _ = running.stop_requested() => break,
            Some(()) = next_hangup(&mut hangups) => "SIGHUP",
            _ = poll.tick(), if watching => {
                let now = reload.as_ref().and_then(|r| std::fs::read(&r.path).ok());
                if now.is_none() || now == seen {
                    continue;
                }
                seen = now;
                "file changed"
            }
        };
        match &reload {
            Some(r) => {
                tracing::info!(file = %r.path.display(), trigger = why, "reloading the config");
                seen = std::fs::read(&r.path).ok();
                let _ = running.reload_file(&r.path).await;
            }
            None => tracing::warn!(trigger = why, "no config file to reload from (started without --config)"),
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

/// SIGHUP, where there is such a thing (handled, so it no longer kills the process).
fn hangup_signals() -> Hangups {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(s) = hangups {
        return s.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}

/// The async runtime for `worker_threads` (`runtime.worker_threads`): one thread is a
/// current-thread runtime; more is the work-stealing one.
pub fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads).enable_all().build()
    }
}

//! Wiring: starts the embedded broker (if configured), the MQTT client, the router, the adapters,
//! in-process simulators, the HTTP endpoint and the console; shuts everything down in order.
//!
//! Shutdown order matters: adapters and simulators stop first, then every device is published
//! `offline`, then `bridge/status` `offline`, then the outbound queue is flushed and the client
//! disconnects cleanly (so the broker does not also fire the last will), all within 5 s.

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
use crate::router::{DeviceSpec, Router, RouterSettings};

/// Time allowed for a clean stop.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(5);

/// Builds the broker connection settings from the config.
pub fn mqtt_settings(config: &Config) -> anyhow::Result<MqttSettings> {
    let mut s = MqttSettings::from_url(&config.mqtt.url, &config.mqtt.client_id)?;
    s.username = config.mqtt.username.clone();
    s.password = config.mqtt.password.as_ref().map(|p| p.expose().to_owned());
    s.keep_alive = config.mqtt.keep_alive.0;
    s.queue_capacity = config.mqtt.queue_capacity;
    s.backoff_max = config.mqtt.reconnect_max.0;
    s.tcp_nodelay = config.mqtt.tcp_nodelay;
    let status = Router::status_topic(&config.output.prefix);
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
    /// late reading can publish `online` again. One tracker per device and simulator, so a slow
    /// stop names the culprit.
    devices: Vec<(String, TaskTracker)>,
    /// Every other task.
    tracker: TaskTracker,
    status_topic: String,
    /// Cancelled when the bridge asks to be stopped from inside (`q` in the console).
    stop_requested: CancellationToken,
}

impl Running {
    /// Resolves when the bridge asks to be stopped from inside (`q` in the console); then call
    /// [`Running::shutdown`] as for a signal.
    pub async fn stop_requested(&self) {
        self.stop_requested.cancelled().await
    }

    /// Stops everything in order (see module docs) within [`SHUTDOWN_BUDGET`].
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_BUDGET;
        self.work.cancel();
        let devices_deadline = deadline - Duration::from_secs(3);
        for (_, tracker) in &self.devices {
            tracker.close();
        }
        for (_, tracker) in &self.devices {
            let _ = tokio::time::timeout_at(devices_deadline, tracker.wait()).await;
        }
        let late: Vec<&str> = self.devices.iter().filter(|(_, t)| !t.is_empty()).map(|(n, _)| n.as_str()).collect();
        if !late.is_empty() {
            tracing::warn!(late = %late.join(", "), "some adapters did not stop in time; publishing offline anyway");
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
    #[cfg(feature = "embedded-broker")]
    if let Some(e) = &config.mqtt.embedded {
        crate::broker::start(e.listen).await?;
    }
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let settings = mqtt_settings(config)?;
    let tracker = TaskTracker::new();
    let mut devices: Vec<(String, TaskTracker)> = Vec::new();
    let work = CancellationToken::new();
    let mqtt_cancel = CancellationToken::new();
    let mqtt = mqtt::spawn(&settings, metrics.clone(), &tracker, mqtt_cancel.clone())?;

    let specs: Vec<DeviceSpec> = config
        .enabled_devices()
        .filter_map(|(id, d)| {
            DeviceSpec::from_config(config, id, crate::adapters::cadence(d), crate::adapters::accepts_commands(d))
        })
        .collect();
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
    for (id, d) in config.enabled_devices() {
        router.configure_guard(id, &d.common.guard);
    }
    registry.register_collector(Box::new(crate::http::DeviceCollector(router.clone())));
    tracker.spawn(router.clone().run(work.clone()));

    for (id, d) in config.enabled_devices() {
        if let Some(handle) = router.handle(id) {
            let device_tasks = TaskTracker::new();
            crate::adapters::spawn(d, handle, &device_tasks, work.child_token());
            devices.push((id.to_owned(), device_tasks));
            tracing::info!(device = %id, adapter = %d.common.adapter.as_str(), "adapter started");
        }
    }

    for (name, sim) in &config.simulators {
        let sim_tasks = TaskTracker::new();
        crate::simulate::start(name, sim, config, &sim_tasks, work.child_token()).await?;
        devices.push((format!("simulator {name}"), sim_tasks));
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
    let http_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(listener) = listener {
        let state = crate::http::HttpState { registry: Arc::new(registry), router: router.clone(), mqtt: mqtt.clone() };
        let cancel = work.clone();
        tracker.spawn(async move {
            if let Err(e) = crate::http::serve(listener, state, cancel).await {
                tracing::error!(error = %e, "HTTP endpoint failed");
            }
        });
        if let Some(addr) = http_addr {
            tracing::info!(%addr, "serving /metrics /healthz /readyz");
        }
    }
    let stop_requested = CancellationToken::new();
    if config.output.console {
        let console = crate::console::ConsoleContext {
            router: router.clone(),
            mqtt: mqtt.clone(),
            broker: config.mqtt.url.clone(),
            http: http_addr,
            stop_requested: stop_requested.clone(),
        };
        tracker.spawn(crate::console::run(console, work.clone()));
    }
    Ok(Running {
        router,
        mqtt,
        http_addr,
        work,
        mqtt_cancel,
        devices,
        tracker,
        status_topic: Router::status_topic(&config.output.prefix),
        stop_requested,
    })
}

/// Runs the bridge until `shutdown` resolves (or the console's `q`), then stops it cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(&config, None).await?;
    tokio::select! {
        _ = shutdown => {}
        _ = running.stop_requested() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
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

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

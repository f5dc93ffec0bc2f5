//! The MQTT client: the only code in hlbridge that touches rumqttc.
//!
//! One task polls rumqttc's event loop and never awaits a publish (rumqtt#263); it reconnects with
//! exponential backoff and jitter, re-subscribes every registered filter after each ConnAck without a
//! session (rumqtt#250), publishes the retained birth message after each ConnAck, and dispatches
//! incoming publishes to subscribers with `try_send` (a slow adapter loses messages and counts them;
//! it never stalls the connection). A second task drains the bounded outbound queue into the client.
//! Everyone else holds a cheap [`MqttHandle`].

pub mod tls;
pub mod topic;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, LastWill, Outgoing, Packet, SubscribeFilter};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

pub use rumqttc::QoS;

/// Errors building the MQTT client from settings.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The broker URL could not be understood.
    #[error("mqtt.url `{url}`: {reason}")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS material could not be loaded.
    #[error("mqtt TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Everything needed to connect; built from `mqtt:` in the config.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Broker host name or address (for `unix://`, the socket path).
    pub host: String,
    /// Connect over a Unix domain socket (`unix:///run/mosquitto/mqtt.sock`): no TCP stack, about
    /// half the kernel CPU per publish when the broker runs on the same machine.
    pub unix: bool,
    /// Broker port.
    pub port: u16,
    /// TLS settings when the URL is `mqtts://`.
    pub tls: Option<tls::TlsSettings>,
    /// MQTT client id; must be unique on the broker.
    pub client_id: String,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password (never logged).
    pub password: Option<String>,
    /// Keep-alive interval (rumqttc panics below 1 s, so it is clamped).
    pub keep_alive: Duration,
    /// Retained last will: topic and payload (`<prefix>/bridge/status`, `offline`).
    pub last_will: Option<(String, String)>,
    /// Retained birth message published after every ConnAck (`<prefix>/bridge/status`, `online`).
    pub birth: Option<(String, String)>,
    /// Capacity of the outbound queue; publishes beyond it are dropped and counted.
    pub queue_capacity: usize,
    /// First reconnect delay; doubles per failure.
    pub backoff_initial: Duration,
    /// Upper bound of the reconnect delay.
    pub backoff_max: Duration,
    /// Largest packet accepted or sent (rumqttc's 10 KiB default is too small for device payloads).
    pub max_packet_size: usize,
    /// Unacknowledged QoS>0 publishes in flight (kept ≤ 100: rumqtt#1014).
    pub inflight: u16,
    /// Disable Nagle's algorithm: every publish leaves at once (low latency) at the price of one
    /// TCP segment per publish; with it enabled, small publishes coalesce (less CPU) but can wait
    /// for the broker's delayed ACK (up to ~40 ms).
    pub tcp_nodelay: bool,
}

impl MqttSettings {
    /// Settings for `url` (`mqtt://host:port` or `mqtts://host:port`) with the bridge's defaults.
    pub fn from_url(url: &str, client_id: &str) -> Result<MqttSettings, MqttError> {
        let bad = |reason: &str| MqttError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad("a unix socket path must be absolute: unix:///run/mosquitto/mqtt.sock"));
            }
            let mut s = MqttSettings::from_url("mqtt://localhost", client_id)?;
            s.host = path.to_owned();
            s.port = 0;
            s.unix = true;
            return Ok(s);
        }
        let (tls, rest, default_port) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r, 1883)
        } else if let Some(r) = url.strip_prefix("tcp://") {
            (false, r, 1883)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r, 8883)
        } else if let Some(r) = url.strip_prefix("ssl://") {
            (true, r, 8883)
        } else {
            return Err(bad("must start with mqtt://, mqtts:// or unix://"));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            return Err(bad("put credentials in mqtt.username / mqtt.password_file, not in the URL"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| bad("port is not a number 1-65535"))?;
                (h.trim_start_matches('[').trim_end_matches(']').to_owned(), port)
            }
            _ => (rest.trim_start_matches('[').trim_end_matches(']').to_owned(), default_port),
        };
        if host.is_empty() {
            return Err(bad("host is missing"));
        }
        Ok(MqttSettings {
            host,
            unix: false,
            port,
            tls: tls.then(tls::TlsSettings::default),
            client_id: client_id.to_owned(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(30),
            last_will: None,
            birth: None,
            queue_capacity: 10_000,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            max_packet_size: 256 * 1024,
            inflight: 100,
            tcp_nodelay: true,
        })
    }

    fn rumqttc_options(&self) -> Result<rumqttc::MqttOptions, MqttError> {
        let mut o = rumqttc::MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(1)));
        o.set_clean_session(true);
        o.set_max_packet_size(self.max_packet_size, self.max_packet_size);
        o.set_inflight(self.inflight.clamp(1, 100));
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some((topic, payload)) = &self.last_will {
            o.set_last_will(LastWill::new(topic.clone(), payload.clone(), QoS::AtLeastOnce, true));
        }
        if self.unix {
            #[cfg(unix)]
            o.set_transport(rumqttc::Transport::Unix);
        }
        if let Some(t) = &self.tls {
            let config = tls::client_config(t)?;
            o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(config))));
        }
        Ok(o)
    }
}

/// An incoming publish handed to a subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic it was published on.
    pub topic: String,
    /// The raw payload.
    pub payload: Bytes,
    /// Whether the broker delivered it from its retained store (a replay, not live data).
    pub retain: bool,
}

/// The connection as other tasks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionState {
    /// Whether a ConnAck has been received and the connection not lost since.
    pub connected: bool,
    /// Increments on every ConnAck; watchers republish their retained state when it changes.
    pub generation: u64,
}

#[doc(hidden)]
pub enum Outbound {
    Publish { topic: String, payload: Vec<u8>, qos: QoS, retain: bool },
    Flush(oneshot::Sender<()>),
}

struct Subscription {
    filter: String,
    qos: QoS,
    tx: mpsc::Sender<Message>,
    /// Counts messages dropped because the subscriber's queue was full.
    dropped: Option<prometheus_client::metrics::counter::Counter>,
}

impl Subscription {
    fn deliver(&self, msg: Message) {
        if self.tx.try_send(msg).is_err() {
            if let Some(c) = &self.dropped {
                c.inc();
            }
            tracing::debug!(filter = %self.filter, "subscriber queue full; message dropped");
        }
    }
}

/// Registered subscriptions and their index.
#[derive(Default)]
struct Subscriptions {
    /// Every subscription, re-sent after every ConnAck without a session.
    list: Vec<Subscription>,
    /// Filters indexed by level for dispatch.
    trie: topic::FilterTrie,
}

impl Subscriptions {
    fn add(&mut self, sub: Subscription) {
        self.trie.insert(&sub.filter, self.list.len());
        self.list.push(sub);
    }
}

struct Shared {
    /// Registered subscriptions.
    subscriptions: Mutex<Subscriptions>,
    /// The rumqttc client, for (un)subscribe requests from outside the poll task.
    client: AsyncClient,
    /// Outbound queue (bounded); `None` once shut down.
    outbound: mpsc::Sender<Outbound>,
    /// Connection state for watchers.
    state: watch::Sender<ConnectionState>,
    /// Set once shutdown began: the poll task stops reconnecting.
    closing: AtomicBool,
    /// Health metrics.
    metrics: Arc<Metrics>,
}

/// A cheap, cloneable handle for publishing and subscribing.
#[derive(Clone)]
pub struct MqttHandle {
    shared: Arc<Shared>,
}

impl MqttHandle {
    /// Queues a publish without waiting. Returns `false` (and counts a drop) when the queue is full.
    pub fn publish(&self, topic: impl Into<String>, payload: impl Into<Vec<u8>>, qos: QoS, retain: bool) -> bool {
        let msg = Outbound::Publish { topic: topic.into(), payload: payload.into(), qos, retain };
        match self.shared.outbound.try_send(msg) {
            Ok(()) => {
                self.shared.metrics.publish_queue_depth.inc();
                true
            }
            Err(_) => {
                self.shared.metrics.publish_dropped.inc();
                false
            }
        }
    }

    /// Registers `filter` and returns the stream of matching publishes. The subscription survives
    /// reconnects and broker restarts. When more than `capacity` messages wait, new ones are
    /// dropped (a slow consumer must never stall the connection).
    pub async fn subscribe(&self, filter: &str, capacity: usize) -> mpsc::Receiver<Message> {
        self.subscribe_many(&[filter], capacity).await
    }

    /// Like [`MqttHandle::subscribe`] for several filters feeding one stream.
    pub async fn subscribe_many(&self, filters: &[&str], capacity: usize) -> mpsc::Receiver<Message> {
        self.subscribe_counted(filters, capacity, None).await
    }

    /// Like [`MqttHandle::subscribe_many`], counting messages dropped for a full queue on `dropped`
    /// (adapters pass their device's `hlbridge_ingest_dropped_total`).
    pub async fn subscribe_counted(
        &self,
        filters: &[&str],
        capacity: usize,
        dropped: Option<prometheus_client::metrics::counter::Counter>,
    ) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let qos = QoS::AtMostOnce;
        {
            let mut subs = self.shared.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            for f in filters {
                subs.add(Subscription { filter: (*f).to_owned(), qos, tx: tx.clone(), dropped: dropped.clone() });
            }
        }
        if self.shared.state.borrow().connected {
            // If this races with a reconnect the filter is simply subscribed twice, which is harmless.
            let list: Vec<SubscribeFilter> =
                filters.iter().map(|f| SubscribeFilter::new((*f).to_owned(), qos)).collect();
            if let Err(e) = self.shared.client.subscribe_many(list).await {
                tracing::warn!(?filters, error = %e, "subscribe request failed; it is retried on reconnect");
            }
        }
        rx
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        *self.shared.state.borrow()
    }

    /// Watches connection changes (used to republish retained state after each ConnAck).
    pub fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Waits until everything queued so far has been handed to the client, then disconnects
    /// cleanly. Gives up after `timeout`.
    pub async fn flush_and_disconnect(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        let flushed = async {
            if self.shared.outbound.send(Outbound::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        };
        if tokio::time::timeout_at(deadline, flushed).await.is_err() {
            tracing::warn!("MQTT outbound queue not flushed within {timeout:?}");
        }
        self.shared.closing.store(true, Ordering::SeqCst);
        let mut state = self.watch();
        // DISCONNECT travels behind everything queued; the poll loop reports it written (and the
        // connection closed) only after the publishes before it went out on the socket.
        if tokio::time::timeout_at(deadline, self.shared.client.disconnect()).await.is_err() {
            tracing::warn!("MQTT disconnect request not accepted within {timeout:?}");
            return;
        }
        let closed = state.wait_for(|s| !s.connected);
        if tokio::time::timeout_at(deadline, closed).await.is_err() {
            tracing::warn!("MQTT connection not closed cleanly within {timeout:?}");
        }
    }
}

/// A publish captured by a [`detached`] handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Topic.
    pub topic: String,
    /// Payload as text (every unified payload is text).
    pub payload: String,
    /// QoS 1 (true) or 0.
    pub qos1: bool,
    /// Retain flag.
    pub retain: bool,
}

/// Receives what a [`detached`] handle published.
pub struct CaptureRx(mpsc::Receiver<Outbound>);

impl CaptureRx {
    /// Everything published so far.
    pub fn drain(&mut self) -> Vec<Captured> {
        let mut out = Vec::new();
        while let Ok(m) = self.0.try_recv() {
            if let Outbound::Publish { topic, payload, qos, retain } = m {
                out.push(Captured {
                    topic,
                    payload: String::from_utf8_lossy(&payload).into_owned(),
                    qos1: qos != QoS::AtMostOnce,
                    retain,
                });
            }
        }
        out
    }
}

/// A handle connected to no broker whose publishes are captured: for golden tests of the
/// adapter → router path and for the benchmark's CPU measurement without network noise.
pub fn detached(capacity: usize) -> (MqttHandle, CaptureRx) {
    let (client, _eventloop) = AsyncClient::new(rumqttc::MqttOptions::new("detached", "127.0.0.1", 1), 1);
    let (out_tx, out_rx) = mpsc::channel(capacity.max(1));
    let (state_tx, _) = watch::channel(ConnectionState { connected: false, generation: 0 });
    let shared = Arc::new(Shared {
        subscriptions: Mutex::new(Subscriptions::default()),
        client,
        outbound: out_tx,
        state: state_tx,
        closing: AtomicBool::new(false),
        metrics: Metrics::detached(),
    });
    (MqttHandle { shared }, CaptureRx(out_rx))
}

/// Starts the MQTT client tasks on `tracker`. They run until `cancel` fires or
/// [`MqttHandle::flush_and_disconnect`] was called.
pub fn spawn(
    settings: &MqttSettings,
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<MqttHandle, MqttError> {
    let options = settings.rumqttc_options()?;
    // A small rumqttc channel: our own queue in front of it is the one that buffers and counts.
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    // Small publishes must not wait for Nagle's algorithm and the peer's delayed ACK (up to 40 ms).
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(settings.tcp_nodelay);
    eventloop.set_network_options(net);
    let (out_tx, out_rx) = mpsc::channel(settings.queue_capacity.max(16));
    let (state_tx, _) = watch::channel(ConnectionState { connected: false, generation: 0 });
    let shared = Arc::new(Shared {
        subscriptions: Mutex::new(Subscriptions::default()),
        client: client.clone(),
        outbound: out_tx,
        state: state_tx,
        closing: AtomicBool::new(false),
        metrics,
    });
    tracker.spawn(publisher(shared.clone(), out_rx, cancel.clone()));
    tracker.spawn(poll_loop(shared.clone(), eventloop, settings.clone(), cancel));
    Ok(MqttHandle { shared })
}

async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outbound>, cancel: CancellationToken) {
    loop {
        let msg = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = cancel.cancelled() => None,
        };
        let Some(msg) = msg else { break };
        match msg {
            Outbound::Publish { topic, payload, qos, retain } => {
                shared.metrics.publish_queue_depth.dec();
                // Awaiting here is fine: this task never polls the event loop.
                match shared.client.publish(topic, qos, retain, payload).await {
                    Ok(()) => {
                        shared.metrics.messages_published.inc();
                    }
                    Err(e) => {
                        shared.metrics.publish_dropped.inc();
                        tracing::debug!(error = %e, "publish refused by the MQTT client");
                    }
                }
            }
            Outbound::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Delay before reconnect attempt `attempt` (0-based): exponential, capped, with ±25 % jitter so a
/// fleet of bridges does not hammer a restarted broker in lockstep.
pub fn backoff_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let base = initial.saturating_mul(1u32 << attempt.min(16)).min(max);
    let jitter = rand::rng().random_range(0.75..1.25);
    base.mul_f64(jitter)
}

async fn poll_loop(shared: Arc<Shared>, mut eventloop: EventLoop, settings: MqttSettings, cancel: CancellationToken) {
    let mut failures: u32 = 0;
    let mut logged_down = false;
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = cancel.cancelled() => {
                // Give flush_and_disconnect a moment to drive the DISCONNECT through this loop.
                if shared.closing.load(Ordering::SeqCst) {
                    let _ = tokio::time::timeout(Duration::from_millis(500), drain(&mut eventloop)).await;
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_secs(3), drain(&mut eventloop)).await;
                break;
            }
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                logged_down = false;
                on_connack(&shared, &settings, ack.session_present);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => dispatch(&shared, p),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                if shared.closing.load(Ordering::SeqCst) {
                    // Keep the socket open until the broker closes it: a broker that is still
                    // writing to us (e.g. a flood of device data) would otherwise hit a broken pipe
                    // and drop what it had not read yet, including our last publishes.
                    let _ = tokio::time::timeout(Duration::from_secs(2), until_closed(&mut eventloop)).await;
                    set_connected(&shared, false);
                    break;
                }
                set_connected(&shared, false);
            }
            Ok(_) => {}
            Err(e) => {
                set_connected(&shared, false);
                if shared.closing.load(Ordering::SeqCst) || cancel.is_cancelled() {
                    break;
                }
                shared.metrics.mqtt_connection_errors.inc();
                if !logged_down {
                    tracing::warn!(host = %settings.host, port = settings.port, error = %describe(&e),
                        "MQTT connection lost or refused; reconnecting with backoff");
                    logged_down = true;
                } else {
                    tracing::debug!(error = %describe(&e), "MQTT reconnect attempt failed");
                }
                let delay = backoff_delay(failures, settings.backoff_initial, settings.backoff_max);
                failures = failures.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => break,
                }
            }
        }
    }
    set_connected(&shared, false);
}

/// Polls until the broker closes the connection (it does after our DISCONNECT).
async fn until_closed(eventloop: &mut EventLoop) {
    while eventloop.poll().await.is_ok() {}
}

/// Lets the event loop write out what is queued (the DISCONNECT after a flush) before exiting.
async fn drain(eventloop: &mut EventLoop) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}

fn set_connected(shared: &Shared, connected: bool) {
    shared.metrics.mqtt_connected.set(i64::from(connected));
    shared.state.send_if_modified(|s| {
        let changed = s.connected != connected;
        s.connected = connected;
        changed
    });
}

fn on_connack(shared: &Shared, settings: &MqttSettings, session_present: bool) {
    shared.metrics.mqtt_connections.inc();
    tracing::info!(host = %settings.host, port = settings.port, session_present, "MQTT connected");
    if !session_present {
        let filters: Vec<SubscribeFilter> = shared
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list
            .iter()
            .map(|s| SubscribeFilter::new(s.filter.clone(), s.qos))
            .collect();
        if !filters.is_empty() {
            // try_: the poll task must never await a request (rumqtt#263).
            if let Err(e) = shared.client.try_subscribe_many(filters) {
                tracing::warn!(error = %e, "could not queue the re-subscription; retrying on next reconnect");
            }
        }
    }
    if let Some((topic, payload)) = &settings.birth {
        let _ = shared.client.try_publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone().into_bytes());
    }
    shared.state.send_modify(|s| {
        s.connected = true;
        s.generation += 1;
    });
    shared.metrics.mqtt_connected.set(1);
}

fn dispatch(shared: &Shared, p: rumqttc::Publish) {
    let subs = shared.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
    let mut first = None;
    let mut rest: Vec<usize> = Vec::new(); // allocates only when several subscribers match
    subs.trie.for_each_match(&p.topic, |i| match first {
        None => first = Some(i),
        Some(_) => rest.push(i),
    });
    let Some(first) = first else { return };
    let msg = Message { topic: p.topic, payload: p.payload, retain: p.retain };
    // The common case (one subscriber) moves the message without copying it.
    for &i in &rest {
        subs.list[i].deliver(msg.clone());
    }
    subs.list[first].deliver(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_tls() {
        let s = MqttSettings::from_url("mqtt://127.0.0.1:1884", "x").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls.is_some()), ("127.0.0.1", 1884, false));
        let s = MqttSettings::from_url("mqtts://broker.lan", "x").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls.is_some()), ("broker.lan", 8883, true));
        let s = MqttSettings::from_url("mqtt://[::1]:1883/", "x").unwrap();
        assert_eq!(s.host, "::1");
    }

    #[test]
    fn unix_socket_urls_carry_the_path() {
        let s = MqttSettings::from_url("unix:///run/mosquitto/mqtt.sock", "x").unwrap();
        assert!(s.unix && s.tls.is_none());
        assert_eq!(s.host, "/run/mosquitto/mqtt.sock");
        assert!(MqttSettings::from_url("unix://relative.sock", "x").is_err());
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let e = MqttSettings::from_url("http://x", "x").unwrap_err().to_string();
        assert!(e.contains("mqtt://"), "{e}");
        let e = MqttSettings::from_url("mqtt://u:p@x:1883", "x").unwrap_err().to_string();
        assert!(e.contains("password_file"), "{e}");
        let e = MqttSettings::from_url("mqtt://x:port", "x").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn backoff_grows_exponentially_and_stays_capped() {
        let init = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let d0 = backoff_delay(0, init, max);
        assert!(d0 >= Duration::from_millis(75) && d0 <= Duration::from_millis(125));
        let d3 = backoff_delay(3, init, max);
        assert!(d3 >= Duration::from_millis(600) && d3 <= Duration::from_millis(1000));
        for attempt in [10, 30, 1000] {
            assert!(backoff_delay(attempt, init, max) <= max.mul_f64(1.25));
        }
    }
}

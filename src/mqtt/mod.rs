//! The MQTT client: the only code in hlbridge that touches rumqttc.
//!
//! rumqttc provides the protocol state machine (`MqttState`: packet ids, in-flight window, acks,
//! pings) and the framed socket (`Network`); hlbridge drives them itself in one connection task
//! ([`connection`]) instead of through rumqttc's request channel and `EventLoop::poll`, because:
//! - re-subscription and the birth message must never depend on room in a request queue that a
//!   broker outage has filled with publishes (they are written straight to the socket after each
//!   ConnAck, and `/readyz` stays not-ready until every SUBACK came back);
//! - a burst of publishes is encoded into one buffer and flushed with one socket write, not one
//!   write per publish (rumqtt#810); QoS 0 publishes are encoded there by [`wire`] without an owned
//!   `Publish` each (rumqttc is vendored with one added accessor for that buffer: vendor/rumqttc);
//! - a publish over the packet limit is dropped and counted before it is encoded, instead of
//!   breaking the connection (and, if retained, looping forever);
//! - publishes queued during an outage, and QoS 1 publishes unacknowledged when the connection broke,
//!   are kept in order ([`outbox`]) and go out after the next ConnAck;
//! - while the connection is behind the broker, its reads are held until 4 KiB or 1 ms have
//!   gathered ([`coalesce`]): one wake-up per batch instead of per packet or two.
//!
//! Incoming publishes are dispatched to subscribers with `try_send` (a slow adapter loses messages and
//! counts them; it never stalls the connection), or, for a subscriber with a fast lane, handled on
//! the connection task itself while that changes nothing the subscriber could see ([`inline`]); on
//! a current-thread runtime what such a handler publishes is written with that read's flush instead
//! of queued ([`collected`]).
//! Everyone else holds a cheap [`MqttHandle`].
//!
//! Command and reset filters ([`MqttHandle::subscribe_commands`]) travel on a second, small
//! connection that speaks MQTT 5 ([`link`]), subscribed with retain-as-published: there a live
//! retained command keeps its retain flag and is refused. Until that link is up, and for good when
//! the broker speaks MQTT 3.1.1 only (the fallback), the main connection carries them.

mod coalesce;
mod collected;
mod connection;
pub(crate) mod inline;
mod link;
mod outbox;
pub(crate) mod tls;
pub(crate) mod topic;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use rumqttc::LastWill;
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
    /// Largest packet sent, and largest incoming payload handed to adapters (rumqttc's 10 KiB
    /// default is too small for device payloads). Bigger publishes are dropped and counted
    /// (`hlbridge_mqtt_oversized_total`), never sent: a broker would cut the connection.
    pub max_packet_size: usize,
    /// Largest incoming packet the socket reads at all. Between `max_packet_size` and this, an
    /// incoming message is read, dropped and counted; beyond it the stream cannot be resynchronised
    /// and the connection is reset (with backoff). Bounds memory per message.
    pub max_incoming_packet_size: usize,
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
            max_incoming_packet_size: 16 * 1024 * 1024,
            inflight: 100,
            tcp_nodelay: true,
        })
    }

    /// The transport (Unix socket or TLS) both connections use; `None` for plain TCP.
    fn transport(&self) -> Result<Option<rumqttc::Transport>, MqttError> {
        if let Some(t) = &self.tls {
            let config = tls::client_config(t)?;
            return Ok(Some(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))));
        }
        #[cfg(unix)]
        if self.unix {
            return Ok(Some(rumqttc::Transport::Unix));
        }
        Ok(None)
    }

    fn rumqttc_options(&self) -> Result<rumqttc::MqttOptions, MqttError> {
        let mut o = rumqttc::MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(1)));
        o.set_clean_session(true);
        // Outgoing size is checked before encoding (connection::oversized), so the codec never fails.
        o.set_max_packet_size(self.max_incoming_packet_size.max(self.max_packet_size), self.max_packet_size);
        o.set_inflight(self.inflight.clamp(1, 100));
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some((topic, payload)) = &self.last_will {
            o.set_last_will(LastWill::new(topic.clone(), payload.clone(), QoS::AtLeastOnce, true));
        }
        if let Some(t) = self.transport()? {
            o.set_transport(t);
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
    /// Whether the broker acknowledged every registered subscription, the command filters included
    /// on whichever connection carries them (without it, device data and commands silently do not
    /// arrive: `/readyz` must not say ready). In [`MqttHandle::watch`], the main connection's alone.
    pub subscribed: bool,
}

/// Whether the bridge's MQTT side is ready, and if not, why (for `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// Connected and every subscription acknowledged.
    pub ready: bool,
    /// What is wrong (`broker refused the connection: NotAuthorized`, `subscription refused by the
    /// broker: home/+/set`), or `None` when ready.
    pub reason: Option<String>,
    /// Which connection carries the command filters (`mqtt5_retain_as_published`,
    /// `mqtt311_broker_main_connection`, `main_connection_until_mqtt5_is_up`, `pending`, `none`):
    /// shows the fallback to operators.
    pub commands: &'static str,
}

/// One publish of a batch ([`MqttHandle::publish_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Full topic (shared: a device's quantity topics are built once, not per publish).
    pub topic: Arc<str>,
    /// Payload (empty + retained deletes a retained topic); a router step's payloads are slices of
    /// one allocation.
    pub payload: Bytes,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Whether the broker keeps it for later subscribers.
    pub retain: bool,
}

#[doc(hidden)]
pub(crate) enum Outbound {
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
    },
    /// Several publishes in order (one router step), handed over at once: one queue operation
    /// instead of one per publish.
    Batch(Vec<Outgoing>),
    /// Answered once everything queued before it has been written and every QoS 1 publish
    /// acknowledged by the broker (or at once while disconnected: nothing can be flushed then).
    Flush(oneshot::Sender<()>),
}

impl Outbound {
    /// How many publishes it holds (what it took of the queue's bound).
    fn publishes(&self) -> usize {
        match self {
            Outbound::Publish { .. } => 1,
            Outbound::Batch(b) => b.len(),
            Outbound::Flush(_) => 0,
        }
    }
}

/// Requests to the connection task that must not wait behind queued publishes.
enum Control {
    /// Subscribe these (already registered) filters on the live connection; the registration
    /// generation they complete.
    Subscribe(Vec<String>, u64),
    /// Forget subscribers whose receiver was dropped and unsubscribe filters nobody uses.
    Prune,
    /// Send DISCONNECT and close; answered when the connection is closed.
    Disconnect,
    /// Leave the broker cleanly and connect again with these settings (live reload).
    Reconfigure(Box<Reconfigure>),
    /// Command filters were registered: subscribe them here if this connection carries them.
    SubscribeCommands(Vec<String>),
    /// Carry the command filters (the broker speaks MQTT 3.1.1 only) or hand them back to the link.
    CarryCommands(bool),
}

/// New connection settings and the rumqttc event loop built from them.
struct Reconfigure {
    /// The settings in force from now on.
    settings: MqttSettings,
    /// Built (and its TLS material loaded) before it is handed over, so bad settings are refused
    /// while the old connection keeps running.
    eventloop: rumqttc::EventLoop,
}

struct Subscription {
    filter: String,
    /// Where matching messages go.
    route: Route,
    /// Counts messages dropped because the subscriber's queue was full (a lane counts its own).
    dropped: Option<prometheus_client::metrics::counter::Counter>,
}

/// How a subscriber takes its messages.
enum Route {
    /// Through its queue only.
    Queue(mpsc::Sender<Message>),
    /// Handled on the connection task when [`inline`] allows it, else through its queue.
    Lane(Arc<dyn inline::Offer>),
}

/// What dispatch leaves for after the subscriptions' lock: the one lane that may take a message on
/// the spot, and the message.
pub(crate) struct ForLane(pub(crate) Arc<dyn inline::Offer>, pub(crate) Message);

impl Subscription {
    /// Queues `msg`; `false` when the subscriber is gone (its receiver was dropped).
    fn deliver(&self, msg: Message) -> bool {
        let result = match &self.route {
            Route::Queue(tx) => match tx.try_send(msg) {
                Ok(()) => inline::Offered::Queued,
                Err(mpsc::error::TrySendError::Full(_)) => inline::Offered::Full,
                Err(mpsc::error::TrySendError::Closed(_)) => inline::Offered::Closed,
            },
            Route::Lane(lane) => lane.queue(msg),
        };
        self.delivered(&result)
    }

    /// Counts a full queue; `false` when the subscriber is gone.
    fn delivered(&self, result: &inline::Offered) -> bool {
        match result {
            inline::Offered::Full => {
                if let Some(c) = &self.dropped {
                    c.inc();
                }
                tracing::debug!(filter = %self.filter, "subscriber queue full; message dropped");
                true
            }
            inline::Offered::Closed => false,
            inline::Offered::Handled { .. } | inline::Offered::Queued => true,
        }
    }

    fn is_closed(&self) -> bool {
        match &self.route {
            Route::Queue(tx) => tx.is_closed(),
            Route::Lane(lane) => lane.is_closed(),
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
    /// Counts registrations (not re-adds by a prune): readiness holds off until the broker has
    /// acknowledged every generation up to this one, so a device added a moment ago is never
    /// reported as listened to before its SUBACK.
    generation: u64,
}

impl Subscriptions {
    fn add(&mut self, sub: Subscription) {
        self.trie.insert(&sub.filter, self.list.len());
        self.list.push(sub);
    }

    /// Forgets subscribers whose receiver was dropped (a stopped device) and returns the filters no
    /// live subscriber uses any more, to unsubscribe at the broker.
    fn prune_closed(&mut self) -> Vec<String> {
        if self.list.iter().all(|s| !s.is_closed()) {
            return Vec::new();
        }
        let (live, gone): (Vec<Subscription>, Vec<Subscription>) =
            std::mem::take(&mut self.list).into_iter().partition(|s| !s.is_closed());
        self.trie = topic::FilterTrie::default();
        for sub in live {
            self.add(sub);
        }
        let mut unused: Vec<String> =
            gone.into_iter().map(|s| s.filter).filter(|f| !self.list.iter().any(|s| &s.filter == f)).collect();
        unused.sort();
        unused.dedup();
        unused
    }
}

/// Why the connection is not usable, kept for `/readyz`.
#[derive(Debug, Default)]
struct Health {
    /// The last connection error (refusal code, I/O error, oversized packet), cleared on ConnAck.
    last_error: Option<String>,
    /// Filters the broker refused on the current connection (SUBACK failure, e.g. an ACL).
    refused: Vec<String>,
}

struct Shared {
    /// Registered subscriptions.
    subscriptions: Mutex<Subscriptions>,
    /// Command and reset subscriptions: on the MQTT 5 link, or on this connection as a fallback.
    commands: Mutex<Subscriptions>,
    /// Which connection carries the command filters, and how far it got (for readiness).
    route: watch::Sender<link::Route>,
    /// Requests to the command link task.
    link: mpsc::UnboundedSender<link::LinkControl>,
    /// Outbound queue (bounded): the hot path's only contact with the connection.
    outbound: mpsc::Sender<Outbound>,
    /// Publishes in `outbound` (a batch counts each of its publishes): bounds the queue by
    /// publishes, as `queue_capacity` says, whatever the batch sizes.
    queued: AtomicUsize,
    /// The bound on `queued`.
    queue_capacity: usize,
    /// Subscribe and disconnect requests, ahead of any queued publish.
    control: mpsc::UnboundedSender<Control>,
    /// Connection state for watchers.
    state: watch::Sender<ConnectionState>,
    /// The newest registration generation ([`Subscriptions::generation`]) the broker acknowledged
    /// on the current connection: `subscribed` is only reported once it caught up.
    acknowledged: AtomicU64,
    /// Why the connection is not ready, for `/readyz`.
    health: Mutex<Health>,
    /// Set once shutdown began: the connection task stops reconnecting.
    closing: AtomicBool,
    /// Health metrics.
    metrics: Arc<Metrics>,
}

impl Shared {
    fn new(
        outbound: mpsc::Sender<Outbound>,
        queue_capacity: usize,
        control: mpsc::UnboundedSender<Control>,
        link: mpsc::UnboundedSender<link::LinkControl>,
        metrics: Arc<Metrics>,
    ) -> Arc<Shared> {
        let (state, _) = watch::channel(ConnectionState { connected: false, generation: 0, subscribed: false });
        let (route, _) = watch::channel(link::Route::default());
        Arc::new(Shared {
            subscriptions: Mutex::new(Subscriptions::default()),
            commands: Mutex::new(Subscriptions::default()),
            route,
            link,
            outbound,
            queued: AtomicUsize::new(0),
            queue_capacity,
            control,
            state,
            acknowledged: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
            closing: AtomicBool::new(false),
            metrics,
        })
    }

    /// Takes room for up to `n` publishes in the queue; returns how many fit.
    fn reserve(&self, n: usize) -> usize {
        let mut queued = self.queued.load(Ordering::Relaxed);
        loop {
            let take = n.min(self.queue_capacity.saturating_sub(queued));
            if take == 0 {
                return 0;
            }
            match self.queued.compare_exchange_weak(queued, queued + take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => queued = now,
            }
        }
    }

    /// Puts `msg` (holding `n` reserved publishes) on the queue; `false` when the connection task is
    /// gone (the publishes are counted as dropped).
    fn hand_over(&self, msg: Outbound, n: usize) -> bool {
        match self.outbound.try_send(msg) {
            Ok(()) => {
                self.metrics.publish_queue_depth.inc_by(n as i64);
                true
            }
            Err(_) => {
                self.released(n);
                self.metrics.publish_dropped.inc_by(n as u64);
                false
            }
        }
    }

    /// Queues `batch` in order as one hand-over; what does not fit (its tail) is dropped and counted.
    fn queue_batch(&self, mut batch: Vec<Outgoing>) {
        let n = self.reserve(batch.len());
        if n < batch.len() {
            self.metrics.publish_dropped.inc_by((batch.len() - n) as u64);
            batch.truncate(n);
        }
        if n > 0 {
            self.hand_over(Outbound::Batch(batch), n);
        }
    }

    /// The connection task took `n` publishes off the queue.
    fn released(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Whether the broker acknowledged every subscription registered so far (a SUBSCRIBE not yet
    /// written, or written and not yet answered, keeps this false).
    fn caught_up(&self) -> bool {
        let registered = self.subscriptions().generation;
        self.acknowledged.load(Ordering::Acquire) >= registered
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn commands(&self) -> std::sync::MutexGuard<'_, Subscriptions> {
        self.commands.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registered command filters, each once, sorted.
    fn command_filters(&self) -> Vec<String> {
        let filters: std::collections::BTreeSet<String> =
            self.commands().list.iter().map(|s| s.filter.clone()).collect();
        filters.into_iter().collect()
    }

    /// Why the command filters are not in force yet (`None`: they are, or there are none), and
    /// which connection carries them.
    fn commands_readiness(&self) -> (Option<String>, &'static str) {
        // The route is read before the main connection's state: a route saying "main carries"
        // is only published after the main connection cleared its `subscribed`.
        let route = self.route.borrow().clone();
        let any = !self.commands().list.is_empty();
        (link::commands_not_ready(&route, any), link::carrier(&route, any))
    }
}

/// A cheap, cloneable handle for publishing and subscribing.
#[derive(Clone)]
pub struct MqttHandle {
    shared: Arc<Shared>,
}

impl MqttHandle {
    /// Queues a publish without waiting. Returns `false` (and counts a drop) when the queue is full.
    pub fn publish(&self, topic: impl Into<String>, payload: impl Into<Vec<u8>>, qos: QoS, retain: bool) -> bool {
        let (topic, payload) = (topic.into(), payload.into());
        // In order with what a fast lane publishes through `publish_batch` in the same step.
        if collected::collecting(&self.shared) {
            let p = Outgoing { topic: topic.into(), payload: payload.into(), qos, retain };
            return collected::offer(&self.shared, vec![p]).is_none();
        }
        if self.shared.reserve(1) == 0 {
            self.shared.metrics.publish_dropped.inc();
            return false;
        }
        let msg = Outbound::Publish { topic, payload, qos, retain };
        self.shared.hand_over(msg, 1)
    }

    /// Queues `batch` in order without waiting, as one hand-over to the connection. What does not
    /// fit in the queue (its tail) is dropped and counted, as single publishes would be.
    pub fn publish_batch(&self, batch: Vec<Outgoing>) {
        if let Some(batch) = collected::offer(&self.shared, batch) {
            self.shared.queue_batch(batch);
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

    /// Registers command or reset filters (`<prefix>/+/+/set`, `<base>/+/reset`): like
    /// [`MqttHandle::subscribe_many`], but carried by the MQTT 5 link with retain-as-published, so
    /// [`Message::retain`] is also set for a retained command published while subscribed (on an
    /// MQTT 3.1.1 broker, by the main connection: then only a replay has it).
    /// Registers at once (no await): the caller can order it before the first ConnAck.
    pub(crate) fn subscribe_commands(&self, filters: &[&str], capacity: usize) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        {
            let mut subs = self.shared.commands();
            for f in filters {
                subs.add(Subscription { filter: (*f).to_owned(), route: Route::Queue(tx.clone()), dropped: None });
            }
        }
        let owned: Vec<String> = filters.iter().map(|f| (*f).to_owned()).collect();
        let _ = self.shared.control.send(Control::SubscribeCommands(owned.clone()));
        let _ = self.shared.link.send(link::LinkControl::Subscribe(owned));
        rx
    }

    /// Like [`MqttHandle::subscribe_many`], counting messages dropped for a full queue on `dropped`
    /// (adapters pass their device's `hlbridge_ingest_dropped_total`).
    pub(crate) async fn subscribe_counted(
        &self,
        filters: &[&str],
        capacity: usize,
        dropped: Option<prometheus_client::metrics::counter::Counter>,
    ) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.register(filters, || Route::Queue(tx.clone()), dropped);
        rx
    }

    /// Adds `filters` with the route `route` makes and has the connection subscribe them.
    fn register(
        &self,
        filters: &[&str],
        route: impl Fn() -> Route,
        dropped: Option<prometheus_client::metrics::counter::Counter>,
    ) {
        let generation = {
            let mut subs = self.shared.subscriptions();
            for f in filters {
                subs.add(Subscription { filter: (*f).to_owned(), route: route(), dropped: dropped.clone() });
            }
            subs.generation += 1;
            subs.generation
        };
        // Registered first: a ConnAck after this point subscribes them with everything else. If the
        // connection is up, the connection task subscribes them now; racing a reconnect merely
        // subscribes them twice, which the broker treats as one subscription.
        let owned = filters.iter().map(|f| (*f).to_owned()).collect();
        let _ = self.shared.control.send(Control::Subscribe(owned, generation));
    }

    /// Like [`MqttHandle::subscribe_counted`], with a fast lane: while the module docs of
    /// [`inline`] allow it, `handler` takes a message on the connection task itself; everything
    /// else is queued as by `subscribe_counted`. The subscriber's task must call
    /// [`inline::Lane::done`] after each message it received and [`inline::Lane::close`] when it stops.
    pub(crate) async fn subscribe_lane<H: inline::Inline>(
        &self,
        filters: &[&str],
        capacity: usize,
        dropped: Option<prometheus_client::metrics::counter::Counter>,
        handler: H,
    ) -> inline::LaneRx<H> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lane = Arc::new(inline::Lane::new(handler, tx, dropped));
        let offer: Arc<dyn inline::Offer> = lane.clone();
        // The lane counts its own drops.
        self.register(filters, || Route::Lane(offer.clone()), None);
        inline::LaneRx { rx, lane }
    }

    /// Connects again with `settings` (live reload of `mqtt:`): the current connection is closed
    /// cleanly (no last will), queued publishes and subscriptions carry over. Settings that cannot
    /// be used (a bad URL, unreadable TLS files) are refused here and the running connection stays.
    pub(crate) fn reconfigure(&self, settings: &MqttSettings) -> Result<(), MqttError> {
        let eventloop = event_loop(settings)?;
        let _ = self
            .shared
            .control
            .send(Control::Reconfigure(Box::new(Reconfigure { settings: settings.clone(), eventloop })));
        let _ = self.shared.link.send(link::LinkControl::Reconfigure(Box::new(settings.clone())));
        Ok(())
    }

    /// Unsubscribes, at the broker too, every filter whose only subscribers have dropped their
    /// receiver (a stopped device). Happens by itself on the next message to such a filter; call
    /// this to do it at once.
    pub fn release_unused(&self) {
        let _ = self.shared.control.send(Control::Prune);
        let _ = self.shared.link.send(link::LinkControl::Prune);
    }

    /// The current connection state; `subscribed` includes the command filters.
    pub fn state(&self) -> ConnectionState {
        let (commands, _) = self.shared.commands_readiness();
        let mut state = *self.shared.state.borrow();
        state.subscribed &= commands.is_none() && self.shared.caught_up();
        state
    }

    /// Waits until the connection is up and the broker acknowledged every subscription registered
    /// so far (the command link aside). What a client that publishes only once (a device's boot
    /// topics) needs before it starts, so that its messages meet the subscriptions.
    #[cfg(feature = "simulators")]
    pub(crate) async fn subscriptions_acknowledged(&self) {
        let mut state = self.shared.state.subscribe();
        loop {
            if state.borrow_and_update().subscribed && self.shared.caught_up() {
                return;
            }
            // An acknowledgement can complete `caught_up` without a state change to wake on.
            let _ = tokio::time::timeout(Duration::from_millis(20), state.changed()).await;
        }
    }

    /// Whether the MQTT side is ready (connected, every subscription acknowledged, the command
    /// filters included), and why not.
    pub(crate) fn readiness(&self) -> Readiness {
        let (commands_reason, commands) = self.shared.commands_readiness();
        let mut state = *self.shared.state.borrow();
        state.subscribed &= self.shared.caught_up();
        let health = self.shared.health();
        let reason = if !health.refused.is_empty() {
            Some(format!("subscription refused by the broker: {}", health.refused.join(", ")))
        } else if !state.connected {
            Some(health.last_error.clone().unwrap_or_else(|| "not connected to the MQTT broker yet".into()))
        } else if !state.subscribed {
            Some("waiting for the broker to acknowledge the subscriptions".into())
        } else {
            commands_reason
        };
        Readiness { ready: reason.is_none(), reason, commands }
    }

    /// Watches connection changes (used to republish retained state after each ConnAck).
    pub(crate) fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Waits until everything queued so far has been written and every QoS 1 publish among it
    /// acknowledged by the broker (at once while disconnected). Lets a producer of many large
    /// messages (discovery for hundreds of devices) pace itself instead of filling the queue.
    pub(crate) async fn flushed(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.outbound.send(Outbound::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Waits until everything queued so far has been written and every QoS 1 publish among it
    /// acknowledged by the broker, then disconnects cleanly. Gives up after `timeout`.
    pub(crate) async fn flush_and_disconnect(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        // Commands stop first: a command taken during shutdown could not be answered.
        let mut route = self.shared.route.subscribe();
        // Refused when no link task runs (a detached handle, or it ended already): nothing to wait for.
        if self.shared.link.send(link::LinkControl::Disconnect).is_ok() {
            let link_stopped = route.wait_for(|r| matches!(r.link, link::LinkState::Stopped));
            if tokio::time::timeout_at(deadline, link_stopped).await.is_err() {
                tracing::warn!("MQTT command connection not closed within {timeout:?}");
            }
        }
        if tokio::time::timeout_at(deadline, self.flushed()).await.is_err() {
            tracing::warn!("MQTT outbound queue not flushed and acknowledged within {timeout:?}");
        }
        self.shared.closing.store(true, Ordering::SeqCst);
        let mut state = self.watch();
        let _ = self.shared.control.send(Control::Disconnect);
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
pub struct CaptureRx(mpsc::Receiver<Outbound>, Arc<Shared>);

impl CaptureRx {
    /// Everything published so far.
    pub fn drain(&mut self) -> Vec<Captured> {
        let mut out = Vec::new();
        while let Ok(m) = self.0.try_recv() {
            self.1.released(m.publishes());
            let captured = |topic, payload: &[u8], qos, retain| Captured {
                topic,
                payload: String::from_utf8_lossy(payload).into_owned(),
                qos1: qos != QoS::AtMostOnce,
                retain,
            };
            match m {
                Outbound::Publish { topic, payload, qos, retain } => out.push(captured(topic, &payload, qos, retain)),
                Outbound::Batch(batch) => {
                    out.extend(batch.into_iter().map(|p| captured(p.topic.to_string(), &p.payload, p.qos, p.retain)));
                }
                Outbound::Flush(_) => {}
            }
        }
        out
    }
}

/// A handle connected to no broker whose publishes are captured: for golden tests of the
/// adapter → router path and for the benchmark's CPU measurement without network noise.
pub fn detached(capacity: usize) -> (MqttHandle, CaptureRx) {
    let (out_tx, out_rx) = mpsc::channel(capacity.max(1));
    let (control, _) = mpsc::unbounded_channel();
    let (link, _) = mpsc::unbounded_channel();
    let shared = Shared::new(out_tx, capacity.max(1), control, link, Metrics::detached());
    (MqttHandle { shared: shared.clone() }, CaptureRx(out_rx, shared))
}

/// Starts the MQTT connection task on `tracker`. It runs until `cancel` fires or
/// [`MqttHandle::flush_and_disconnect`] was called.
pub fn spawn(
    settings: &MqttSettings,
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<MqttHandle, MqttError> {
    spawn_inner(settings, metrics, tracker, cancel, None)
}

/// Opens the connection of a client made with [`spawn_held`]; dropping it opens it too.
#[derive(Debug)]
pub(crate) struct Gate(oneshot::Sender<()>);

impl Gate {
    /// Lets the client connect.
    pub(crate) fn open(self) {
        let _ = self.0.send(());
    }
}

/// Like [`spawn`], but the client connects only once the returned [`Gate`] opens: the bridge
/// registers the router's command and reset filters first, so they reach the broker before the
/// birth message says `online` (a command sent the moment it does gets its answer).
pub(crate) fn spawn_held(
    settings: &MqttSettings,
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<(MqttHandle, Gate), MqttError> {
    let (open, gate) = oneshot::channel();
    Ok((spawn_inner(settings, metrics, tracker, cancel, Some(gate))?, Gate(open)))
}

fn spawn_inner(
    settings: &MqttSettings,
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
    gate: Option<oneshot::Receiver<()>>,
) -> Result<MqttHandle, MqttError> {
    let eventloop = event_loop(settings)?;
    let (out_tx, out_rx) = mpsc::channel(settings.queue_capacity.max(16));
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let shared = Shared::new(out_tx, settings.queue_capacity.max(16), control_tx, link_tx, metrics);
    let task = connection::Connection::new(shared.clone(), eventloop, settings.clone(), out_rx, control_rx);
    tracker.spawn(task.run(cancel.clone(), gate));
    // Idle (no connection) until a command filter is registered: simulators and probes never have one.
    let link = link::Link::new(shared.clone(), settings.clone(), link_rx);
    tracker.spawn(link.run(cancel));
    Ok(MqttHandle { shared })
}

/// rumqttc's event loop for `settings` (connects lazily, on the first poll).
fn event_loop(settings: &MqttSettings) -> Result<rumqttc::EventLoop, MqttError> {
    let options = settings.rumqttc_options()?;
    // rumqttc's own request channel stays unused (and tiny): the connection task writes requests
    // to the socket itself.
    let mut eventloop = rumqttc::EventLoop::new(options, 1);
    // Small publishes must not wait for Nagle's algorithm and the peer's delayed ACK (up to 40 ms).
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(settings.tcp_nodelay);
    eventloop.set_network_options(net);
    Ok(eventloop)
}

/// Hands an incoming publish to every matching subscriber in `subs`. `false` when a subscriber
/// turned out to be gone (then [`Subscriptions::prune_closed`] is due). A message whose only
/// subscriber has a fast lane is given back to be offered to it once the subscriptions' lock is
/// released (the lane's handler publishes, and must not run under that lock).
fn dispatch(subs: &Subscriptions, topic: String, payload: Bytes, retain: bool) -> (bool, Option<ForLane>) {
    let mut first = None;
    let mut rest: Vec<usize> = Vec::new(); // allocates only when several subscribers match
    subs.trie.for_each_match(&topic, |i| match first {
        None => first = Some(i),
        Some(_) => rest.push(i),
    });
    let Some(first) = first else { return (true, None) };
    let msg = Message { topic, payload, retain };
    let only = &subs.list[first];
    if rest.is_empty()
        && let Route::Lane(lane) = &only.route
    {
        return (true, Some(ForLane(lane.clone(), msg)));
    }
    let mut all_live = true;
    // The common case (one subscriber) moves the message without copying it.
    for &i in &rest {
        all_live &= subs.list[i].deliver(msg.clone());
    }
    (all_live & only.deliver(msg), None)
}

/// [`dispatch`] where no message is handled on the spot (commands, the MQTT 5 link): a fast
/// lane's message is queued like any other.
fn dispatch_queued(subs: &Subscriptions, topic: String, payload: Bytes, retain: bool) -> bool {
    match dispatch(subs, topic, payload, retain) {
        (live, None) => live,
        (live, Some(ForLane(lane, msg))) => live & (lane.queue(msg) != inline::Offered::Closed),
    }
}

/// Delay before reconnect attempt `attempt` (0-based): exponential, capped, with ±25 % jitter so a
/// fleet of bridges does not hammer a restarted broker in lockstep.
pub(crate) fn backoff_delay(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let base = initial.saturating_mul(1u32 << attempt.min(16)).min(max);
    let jitter = rand::rng().random_range(0.75..1.25);
    base.mul_f64(jitter)
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
    fn pruning_forgets_gone_subscribers_and_returns_only_filters_nobody_uses() {
        let mut subs = Subscriptions::default();
        let (live_tx, _live_rx) = mpsc::channel(1);
        let (gone_tx, gone_rx) = mpsc::channel(1);
        subs.add(Subscription { filter: "a/#".into(), route: Route::Queue(live_tx.clone()), dropped: None });
        subs.add(Subscription { filter: "a/#".into(), route: Route::Queue(gone_tx.clone()), dropped: None });
        subs.add(Subscription { filter: "b/+".into(), route: Route::Queue(gone_tx), dropped: None });
        assert!(subs.prune_closed().is_empty(), "nobody is gone yet");
        drop(gone_rx);
        assert_eq!(subs.prune_closed(), ["b/+"]);
        assert_eq!(subs.list.len(), 1);
        let mut hits = Vec::new();
        subs.trie.for_each_match("a/x", |i| hits.push(i));
        assert_eq!(hits, [0], "the trie points at the surviving subscriber");
        subs.trie.for_each_match("b/x", |i| hits.push(i));
        assert_eq!(hits, [0], "the pruned filter matches nothing");
    }

    /// Takes every message on the spot and remembers its topic.
    struct Taker(Arc<Mutex<Vec<String>>>);

    impl inline::Inline for Taker {
        fn handle(&mut self, msg: &Message) -> bool {
            self.0.lock().unwrap().push(msg.topic.clone());
            true
        }

        fn end_of_burst(&mut self) {}
    }

    #[test]
    fn a_message_is_left_to_a_fast_lane_only_when_that_lane_is_its_one_subscriber() {
        let mut subs = Subscriptions::default();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let (lane_tx, mut lane_rx) = mpsc::channel(4);
        let lane: Arc<dyn inline::Offer> = Arc::new(inline::Lane::new(Taker(taken.clone()), lane_tx, None));
        let (other_tx, mut other_rx) = mpsc::channel(4);
        subs.add(Subscription { filter: "dev/#".into(), route: Route::Lane(lane.clone()), dropped: None });
        subs.add(Subscription { filter: "dev/shared".into(), route: Route::Queue(other_tx), dropped: None });

        let (live, for_lane) = dispatch(&subs, "dev/own".into(), Bytes::from_static(b"1"), false);
        let Some(ForLane(offer, msg)) = for_lane else { panic!("the lane's own topic is left to the lane") };
        assert!(live);
        assert_eq!(offer.offer(msg), inline::Offered::Handled { first_in_burst: true });
        assert_eq!(*taken.lock().unwrap(), ["dev/own"]);

        // Two subscribers: both get it through their queues, nobody on the spot.
        let (live, for_lane) = dispatch(&subs, "dev/shared".into(), Bytes::from_static(b"2"), false);
        assert!(live && for_lane.is_none());
        assert_eq!(lane_rx.try_recv().map(|m| m.topic).ok().as_deref(), Some("dev/shared"));
        assert_eq!(other_rx.try_recv().map(|m| m.topic).ok().as_deref(), Some("dev/shared"));
        assert_eq!(taken.lock().unwrap().len(), 1);

        // Commands and the MQTT 5 link never handle on the spot: the lane's message is queued.
        assert!(dispatch_queued(&subs, "dev/own".into(), Bytes::from_static(b"3"), false));
        assert_eq!(lane_rx.try_recv().map(|m| m.topic).ok().as_deref(), Some("dev/own"));
        assert_eq!(taken.lock().unwrap().len(), 1);
    }

    /// A QoS 0 publish on `t` carrying `payload` (also for the sibling modules' tests).
    pub(super) fn outgoing(payload: &str) -> Outgoing {
        Outgoing {
            topic: "t".into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos: QoS::AtMostOnce,
            retain: false,
        }
    }

    #[test]
    fn a_batch_larger_than_the_room_left_in_the_queue_keeps_its_head_and_counts_its_tail() {
        let (h, mut rx) = detached(5);
        assert!(h.publish("t", "single", QoS::AtMostOnce, false));
        h.publish_batch(["a", "b", "c", "d", "e", "f"].into_iter().map(outgoing).collect());
        assert!(!h.publish("t", "no room", QoS::AtMostOnce, false));
        let got: Vec<String> = rx.drain().into_iter().map(|c| c.payload).collect();
        assert_eq!(got, ["single", "a", "b", "c", "d"], "bounded by publishes, not by batches");
        assert_eq!(h.shared.metrics.publish_dropped.get(), 3, "the batch's tail and the single one");
        h.publish_batch(vec![outgoing("later")]);
        assert_eq!(rx.drain().len(), 1, "taking publishes off the queue frees their room");
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

//! The command link: a second, small MQTT 5 connection (client id `<client_id>-cmd`) that carries
//! only the command and reset filters, subscribed with retain-as-published.
//!
//! Why a second connection: in MQTT 3.1.1 a broker forwards a retained message published while we
//! are subscribed with the retain flag cleared, so a live `mosquitto_pub -r .../set` looks like an
//! ordinary command and runs (once; the router then clears it). MQTT 5's retain-as-published keeps
//! the flag, and [`crate::commands`] refuses it. The main connection stays MQTT 3.1.1 (rumqttc's v4
//! state machine, driven by hand for batching and the outage buffer); commands are rare and small,
//! so the link uses rumqttc's v5 `EventLoop::poll` as is, in a poller task of its own so that a
//! control request never cancels a poll halfway.
//!
//! Hand-over: the main connection carries the command filters by default (subscribed with
//! everything else before the birth message, as without the link), and whenever the link is not
//! up. The link connects once a command filter is registered and the main connection is up (it
//! needs the main connection's success to judge a refusal), subscribes, and only once every SUBACK
//! arrived asks the main connection to let go (`CarryCommands(false)`): no command is lost in the
//! hand-over, and one that arrives on both connections meanwhile is a second copy for
//! [`crate::commands`]. When the link is lost, the main connection takes the filters back.
//!
//! When the broker does not take an MQTT 5 CONNECT (a refusal, a malformed or 3.1.1 CONNACK, the
//! socket closed right after CONNECT) while the main connection stays up, the main connection keeps
//! the filters (the fallback), it is logged once, and the link probes again when the main
//! connection reconnects (a restarted broker may be a newer one), after [`REPROBE_AFTER`], or on a
//! live reload. A network error (refused TCP, TLS) teaches nothing about the protocol: the link
//! retries with backoff. No last will: the bridge's availability is the main connection's business.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Filter, Packet, RetainForwardRule, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::{ConnectionState, Control, MqttError, MqttSettings, Shared};

/// Filters per SUBSCRIBE packet (as on the main connection).
const FILTERS_PER_SUBSCRIBE: usize = 64;
/// Room in rumqttc's request channel: only SUBSCRIBE, UNSUBSCRIBE and DISCONNECT go through it.
const REQUESTS: usize = 1024;
/// How long a fallback lasts before the link tries MQTT 5 again (besides at every reconnect of the
/// main connection and at a reload).
pub(super) const REPROBE_AFTER: Duration = Duration::from_secs(15 * 60);
/// How long to wait for our DISCONNECT to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// A link that lived this long counts as healthy: the backoff starts over after losing it.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// Packet ids the link cycles through (SUBSCRIBE / UNSUBSCRIBE; it never publishes): more than
/// it ever has outstanding (64 filters per SUBSCRIBE).
pub(super) const LINK_INFLIGHT: u16 = 64;
/// The suffix appended to the bridge's client id for the link.
pub(super) const CLIENT_ID_SUFFIX: &str = "-cmd";

/// The link's state as readiness sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// No command filter registered (or the main connection not up yet): no connection needed.
    #[default]
    Idle,
    /// Not connected; the text says why the last attempt failed.
    Down(String),
    /// Connected over MQTT 5; `subscribed` once every SUBACK came back.
    Up {
        /// Every command filter acknowledged on the link.
        subscribed: bool,
    },
    /// The broker does not take the link: the main connection carries the filters. The text says why.
    Fallback(String),
    /// Shut down (the bridge is stopping).
    Stopped,
}

/// Which connection carries the command filters, written by both tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// Written by the link task.
    pub(crate) link: LinkState,
    /// Written by the main connection: it has the command filters subscribed (the fallback).
    pub(crate) main_carries: bool,
    /// Command filters the broker refused on the link (an ACL), for `/readyz`.
    pub(crate) refused: Vec<String>,
}

impl Default for Route {
    /// The main connection carries the command filters until the link has them.
    fn default() -> Route {
        Route { link: LinkState::Idle, main_carries: true, refused: Vec::new() }
    }
}

/// Requests to the link task.
pub(crate) enum LinkControl {
    /// These (already registered) command filters are new.
    Subscribe(Vec<String>),
    /// Forget command subscribers whose receiver was dropped; unsubscribe what nobody uses.
    Prune,
    /// Leave the broker and probe again with these settings (live reload).
    Reconfigure(Box<MqttSettings>),
    /// Close for good (shutdown).
    Disconnect,
}

/// Why the command filters are not in force, or `None` when they are (or none is registered).
/// While the main connection carries them, its own `subscribed` says it.
pub(super) fn commands_not_ready(route: &Route, any_filter: bool) -> Option<String> {
    if !any_filter {
        return None;
    }
    if !route.refused.is_empty() {
        return Some(format!("subscription refused by the broker (command connection): {}", route.refused.join(", ")));
    }
    if route.main_carries {
        return None;
    }
    match &route.link {
        LinkState::Up { subscribed: true } => None,
        LinkState::Up { subscribed: false } => {
            Some("waiting for the broker to acknowledge the command subscriptions (MQTT 5 connection)".into())
        }
        LinkState::Idle => Some("command connection (MQTT 5) not up yet".into()),
        LinkState::Down(why) => Some(format!("command connection (MQTT 5): {why}")),
        LinkState::Fallback(_) => Some("moving the command subscriptions to the main connection".into()),
        LinkState::Stopped => Some("the command connection is closed (shutting down)".into()),
    }
}

/// Which connection carries the command filters, for `/readyz`.
pub(super) fn carrier(route: &Route, any_filter: bool) -> &'static str {
    match (&route.link, route.main_carries) {
        _ if !any_filter => "none",
        (LinkState::Up { subscribed: true }, false) => "mqtt5_retain_as_published",
        (LinkState::Fallback(_), true) => "mqtt311_broker_main_connection",
        (_, true) => "main_connection_until_mqtt5_is_up",
        _ => "pending",
    }
}

/// What a failed MQTT 5 connection attempt teaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing about the protocol (the broker was unreachable or went away): retry with backoff.
    Retry,
    /// The broker does not take the link: the main connection carries the filters. `only_311`:
    /// it said or showed it speaks MQTT 3.1.1 alone (otherwise it refused for another reason).
    Fallback {
        /// The broker does not speak MQTT 5 (versus: refused the link for another reason).
        only_311: bool,
    },
}

/// Judges a failed attempt. `main_steady`: the main connection was up before the attempt and still
/// is, on the same ConnAck (so the broker is there and takes MQTT 3.1.1).
pub(super) fn judge(e: &ConnectionError, main_steady: bool) -> Verdict {
    match e {
        ConnectionError::Io(_) | ConnectionError::Tls(_) => Verdict::Retry,
        _ if !main_steady => Verdict::Retry,
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::UnsupportedProtocolVersion | ConnectReturnCode::RefusedProtocolVersion,
        ) => Verdict::Fallback { only_311: true },
        ConnectionError::ConnectionRefused(_) => Verdict::Fallback { only_311: false },
        // Closed right after CONNECT, a CONNACK that is no MQTT 5 one, no answer in time.
        _ => Verdict::Fallback { only_311: true },
    }
}

/// SUBSCRIBE packets of the current link and their filters, until acknowledged. rumqttc assigns the
/// packet id when it writes the packet, in request order, so filters wait in `queued` until then.
#[derive(Debug, Default)]
pub(super) struct SubAcks {
    /// Filters of requested SUBSCRIBEs not written yet, in request order.
    queued: VecDeque<Vec<String>>,
    /// Filters of written SUBSCRIBEs by packet id.
    sent: HashMap<u16, Vec<String>>,
}

impl SubAcks {
    /// A SUBSCRIBE for `filters` was requested.
    pub(super) fn requested(&mut self, filters: Vec<String>) {
        self.queued.push_back(filters);
    }

    /// The oldest requested SUBSCRIBE went out as `pkid`.
    pub(super) fn written(&mut self, pkid: u16) {
        if let Some(filters) = self.queued.pop_front() {
            self.sent.insert(pkid, filters);
        }
    }

    /// SUBACK `pkid` came back; returns the filters it refused.
    pub(super) fn acked(&mut self, pkid: u16, codes: &[SubscribeReasonCode]) -> Vec<String> {
        let Some(filters) = self.sent.remove(&pkid) else { return Vec::new() };
        filters
            .into_iter()
            .zip(codes.iter().map(Some).chain(std::iter::repeat(None)))
            .filter(|(_, c)| !matches!(c, Some(SubscribeReasonCode::Success(_))))
            .map(|(f, _)| f)
            .collect()
    }

    /// Whether every requested SUBSCRIBE was acknowledged.
    pub(super) fn done(&self) -> bool {
        self.queued.is_empty() && self.sent.is_empty()
    }
}

/// The main connection's side of the hand-over (pure: it says what to send, the connection sends).
#[derive(Debug)]
pub(super) struct Carrying {
    /// Whether the main connection subscribes the command filters (now and at every ConnAck).
    subscribe: bool,
    /// Whether its incoming publishes also go to the command subscribers: stays on after letting
    /// go until the broker acknowledged the UNSUBSCRIBEs, since a command routed to this
    /// connection before the link's subscription existed may still be on its way.
    deliver: bool,
    /// UNSUBSCRIBE packet ids of a release not acknowledged yet.
    releasing: BTreeSet<u16>,
}

/// What the main connection sends for a [`Carrying::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CarryStep {
    /// Nothing changes.
    Nothing,
    /// SUBSCRIBE the command filters.
    Subscribe,
    /// UNSUBSCRIBE them (those the main connection does not use itself), then report the packet
    /// ids with [`Carrying::released`].
    Unsubscribe,
}

impl Carrying {
    /// At start the main connection carries the filters (until the link has them).
    pub(super) fn new() -> Carrying {
        Carrying { subscribe: true, deliver: true, releasing: BTreeSet::new() }
    }

    /// Whether the command filters are subscribed at a ConnAck.
    pub(super) fn subscribes(&self) -> bool {
        self.subscribe
    }

    /// Whether incoming publishes also go to the command subscribers.
    pub(super) fn delivers(&self) -> bool {
        self.deliver
    }

    /// The link asks the main connection to carry the filters (`on`) or to let go, while connected.
    pub(super) fn request(&mut self, on: bool) -> CarryStep {
        if on == self.subscribe {
            return CarryStep::Nothing;
        }
        self.subscribe = on;
        if on {
            self.releasing.clear();
            self.deliver = true;
            CarryStep::Subscribe
        } else {
            CarryStep::Unsubscribe
        }
    }

    /// The UNSUBSCRIBEs of a release went out as `pkids` (none: nothing to wait for).
    pub(super) fn released(&mut self, pkids: BTreeSet<u16>) {
        if !self.subscribe {
            self.deliver = !pkids.is_empty();
            self.releasing = pkids;
        }
    }

    /// The broker acknowledged UNSUBSCRIBE `pkid`.
    pub(super) fn unsuback(&mut self, pkid: u16) {
        if self.releasing.remove(&pkid) && self.releasing.is_empty() && !self.subscribe {
            self.deliver = false;
        }
    }

    /// The connection is gone, or a new one starts: nothing is in flight any more.
    pub(super) fn reset(&mut self) {
        self.releasing.clear();
        self.deliver = self.subscribe;
    }

    /// A request while disconnected: nothing to send, the next ConnAck follows it.
    pub(super) fn request_while_down(&mut self, on: bool) {
        self.subscribe = on;
        self.reset();
    }
}

/// The SUBSCRIBE filter options of the link: retain-as-published, and stored retained commands
/// sent at every subscribe (so they are refused and cleared, as on the main connection).
pub(super) fn filter(path: String) -> Filter {
    Filter {
        path,
        qos: QoS::AtMostOnce,
        nolocal: false,
        preserve_retain: true,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    }
}

impl MqttSettings {
    /// rumqttc v5 options for the link: same broker, transport and credentials, its own client id,
    /// clean start, no last will.
    fn link_options(&self) -> Result<MqttOptions, MqttError> {
        let mut o = MqttOptions::new(format!("{}{CLIENT_ID_SUFFIX}", self.client_id), self.host.clone(), self.port);
        o.set_keep_alive(self.keep_alive.max(Duration::from_secs(1)));
        o.set_clean_start(true);
        // rumqttc sizes its in-flight table by this limit (u16::MAX by default: 64 Ki slots, ~14 MB
        // measured). The link publishes nothing; the limit only bounds packet ids of SUBSCRIBEs.
        o.set_outgoing_inflight_upper_limit(LINK_INFLIGHT);
        // Announced in CONNECT: the broker drops bigger messages instead of sending them.
        o.set_max_packet_size(Some(u32::try_from(self.max_packet_size).unwrap_or(u32::MAX)));
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(t) = self.transport()? {
            o.set_transport(t);
        }
        Ok(o)
    }
}

/// How one connection of the link ended.
enum Session {
    /// Never got a ConnAck.
    Refused(ConnectionError),
    /// Could not even start (settings), or was up and got lost; the text says why.
    Lost(String),
    /// New settings: probe again at once.
    Reconfigured,
    /// Shutdown.
    Stop,
}

/// The link task (see module docs).
pub(super) struct Link {
    /// What the handles share (command subscriptions, route, main connection state).
    shared: Arc<Shared>,
    /// Broker settings (the link derives its own options from them).
    settings: MqttSettings,
    /// Requests from the handles.
    control: mpsc::UnboundedReceiver<LinkControl>,
    /// The main connection's state: the link connects while it is up, and probes again when it
    /// reconnects.
    main: watch::Receiver<ConnectionState>,
    /// Whether the fallback was logged for the current settings (logged once).
    logged_fallback: bool,
}

impl Link {
    pub(super) fn new(
        shared: Arc<Shared>,
        settings: MqttSettings,
        control: mpsc::UnboundedReceiver<LinkControl>,
    ) -> Link {
        let main = shared.state.subscribe();
        Link { shared, settings, control, main, logged_fallback: false }
    }

    /// Connects, serves, falls back or reconnects, until cancelled or disconnected.
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            if !self.wait_needed(&cancel).await {
                break;
            }
            let generation = self.main.borrow().generation;
            let since = Instant::now();
            let session = self.session(&cancel).await;
            if !matches!(session, Session::Stop) {
                // Commands keep flowing while the link is down or probing again.
                self.main_carries(true);
            }
            let reason = match session {
                Session::Stop => break,
                Session::Reconfigured => {
                    failures = 0;
                    continue;
                }
                Session::Lost(reason) => {
                    if since.elapsed() >= HEALTHY_AFTER {
                        failures = 0;
                    }
                    reason
                }
                Session::Refused(e) => {
                    let steady = {
                        let m = self.main.borrow();
                        m.connected && m.generation == generation
                    };
                    match judge(&e, steady) {
                        Verdict::Retry => describe(&e),
                        Verdict::Fallback { only_311 } => {
                            self.fall_back(&e, only_311);
                            failures = 0;
                            if !self.wait(REPROBE_AFTER, &cancel, Some(generation)).await {
                                break;
                            }
                            continue;
                        }
                    }
                }
            };
            if self.shared.closing.load(Ordering::SeqCst) || cancel.is_cancelled() {
                break;
            }
            tracing::debug!(error = %reason, "MQTT command connection down; reconnecting with backoff");
            self.set_link(LinkState::Down(reason));
            let delay = super::backoff_delay(failures, self.settings.backoff_initial, self.settings.backoff_max);
            failures = failures.saturating_add(1);
            if !self.wait(delay, &cancel, None).await {
                break;
            }
        }
        self.set_link(LinkState::Stopped);
    }

    /// Asks the main connection to carry the command filters (`on`) or to let go. Always sent (the
    /// main connection ignores a request that changes nothing): the route shows the main
    /// connection's state, which may still lag behind the previous request.
    fn main_carries(&self, on: bool) {
        let _ = self.shared.control.send(Control::CarryCommands(on));
    }

    fn set_link(&self, link: LinkState) {
        self.shared.route.send_if_modified(|r| {
            let changed = r.link != link;
            r.link = link;
            changed
        });
    }

    /// Hands the command filters to the main connection and says so once.
    fn fall_back(&mut self, e: &ConnectionError, only_311: bool) {
        let why = describe(e);
        if !std::mem::replace(&mut self.logged_fallback, true) {
            if only_311 {
                tracing::info!(reason = %why,
                    "broker speaks MQTT 3.1.1 only: a live retained command is detected only by its replay");
            } else {
                tracing::warn!(reason = %why,
                    "broker refused the MQTT 5 command connection: commands go over the main connection, and a live retained command is detected only by its replay");
            }
        } else {
            tracing::debug!(reason = %why, "MQTT 5 command connection still not taken by the broker");
        }
        self.set_link(LinkState::Fallback(why));
        self.shared.route.send_if_modified(|r| !std::mem::take(&mut r.refused).is_empty());
        self.main_carries(true);
    }

    /// Handles a request while not connected. `Some(false)`: stop; `Some(true)`: probe again now
    /// (new settings); `None`: keep waiting.
    fn control_while_down(&mut self, c: Option<LinkControl>) -> Option<bool> {
        match c {
            Some(LinkControl::Disconnect) | None => Some(false),
            Some(LinkControl::Reconfigure(s)) => {
                self.settings = *s;
                self.logged_fallback = false;
                Some(true)
            }
            Some(LinkControl::Prune) => {
                // While the main connection carries the filters it prunes them (and unsubscribes).
                if !self.shared.route.borrow().main_carries {
                    self.shared.commands().prune_closed();
                }
                None
            }
            // Registered already: the next ConnAck (of whichever connection carries them) subscribes it.
            Some(LinkControl::Subscribe(_)) => None,
        }
    }

    /// Waits until a command filter is registered and the main connection is up. `false`: stop.
    async fn wait_needed(&mut self, cancel: &CancellationToken) -> bool {
        loop {
            if self.shared.closing.load(Ordering::SeqCst) {
                return false;
            }
            if self.main.borrow_and_update().connected && !self.shared.commands().list.is_empty() {
                return true;
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                // New settings change nothing here: the next attempt uses them.
                c = self.control.recv() => if self.control_while_down(c) == Some(false) {
                    return false;
                },
                changed = self.main.changed() => if changed.is_err() {
                    return false;
                },
            }
        }
    }

    /// Sleeps `delay`, handling requests; with `reconnected_since: Some(generation)` (the main
    /// connection carries the filters) also ends when the main connection reconnected after
    /// `generation`, a reason to try MQTT 5 again. `false`: stop.
    async fn wait(&mut self, delay: Duration, cancel: &CancellationToken, reconnected_since: Option<u64>) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                _ = cancel.cancelled() => return false,
                c = self.control.recv() => if let Some(go) = self.control_while_down(c) {
                    return go;
                },
                changed = self.main.changed(), if reconnected_since.is_some() => {
                    if changed.is_err() {
                        return false;
                    }
                    let m = *self.main.borrow_and_update();
                    if m.connected && Some(m.generation) != reconnected_since {
                        return true;
                    }
                }
            }
        }
    }

    /// One connection: connect, subscribe every command filter, deliver, until lost or stopped.
    async fn session(&mut self, cancel: &CancellationToken) -> Session {
        let options = match self.settings.link_options() {
            Ok(o) => o,
            Err(e) => return Session::Lost(e.to_string()),
        };
        let (client, eventloop) = AsyncClient::new(options, REQUESTS);
        let (events_tx, mut events) = mpsc::channel(64);
        let _poller = AbortOnDropHandle::new(tokio::spawn(poll(eventloop, events_tx)));
        let first = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Session::Stop,
                c = self.control.recv() => match self.control_while_down(c) {
                    Some(true) => return Session::Reconfigured,
                    Some(false) => return Session::Stop,
                    None => {}
                },
                e = events.recv() => break e,
            }
        };
        match first {
            Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {}
            Some(Err(e)) => return Session::Refused(e),
            Some(Ok(other)) => return Session::Lost(format!("expected a CONNACK, got {other:?}")),
            None => return Session::Lost("the MQTT 5 event loop ended".into()),
        }
        tracing::info!(host = %self.settings.host, port = self.settings.port,
            "MQTT 5 command connection up: commands subscribed with retain-as-published");
        self.logged_fallback = false;
        let mut acks = SubAcks::default();
        self.shared.route.send_if_modified(|r| !std::mem::take(&mut r.refused).is_empty());
        if let Err(e) = self.subscribe(&client, &mut acks, self.shared.command_filters()) {
            return Session::Lost(e);
        }
        self.set_link(LinkState::Up { subscribed: false });
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Session::Stop,
                c = self.control.recv() => match c {
                    Some(LinkControl::Subscribe(filters)) => {
                        if let Err(e) = self.subscribe(&client, &mut acks, filters) {
                            return Session::Lost(e);
                        }
                        self.set_link(LinkState::Up { subscribed: false });
                    }
                    Some(LinkControl::Prune) => {
                        if let Err(e) = self.prune(&client) {
                            return Session::Lost(e);
                        }
                    }
                    Some(LinkControl::Reconfigure(s)) => {
                        self.settings = *s;
                        close(&client, &mut events).await;
                        return Session::Reconfigured;
                    }
                    Some(LinkControl::Disconnect) | None => {
                        close(&client, &mut events).await;
                        return Session::Stop;
                    }
                },
                e = events.recv() => match e {
                    Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        // Topics are UTF-8 by the protocol; a broker sending otherwise gets ignored.
                        let Ok(topic) = String::from_utf8(p.topic.to_vec()) else { continue };
                        let live = super::dispatch_queued(&self.shared.commands(), topic, p.payload, p.retain);
                        if !live && let Err(e) = self.prune(&client) {
                            return Session::Lost(e);
                        }
                    }
                    Some(Ok(Event::Outgoing(Outgoing::Subscribe(pkid)))) => acks.written(pkid),
                    Some(Ok(Event::Incoming(Packet::SubAck(ack)))) => self.on_suback(&mut acks, ack.pkid, &ack.return_codes),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Session::Lost(describe(&e)),
                    None => return Session::Lost("the MQTT 5 event loop ended".into()),
                },
            }
        }
    }

    /// Requests SUBSCRIBEs for `filters` (none: nothing to wait for).
    fn subscribe(&self, client: &AsyncClient, acks: &mut SubAcks, filters: Vec<String>) -> Result<(), String> {
        for chunk in filters.chunks(FILTERS_PER_SUBSCRIBE) {
            client
                .try_subscribe_many(chunk.iter().cloned().map(filter))
                .map_err(|e| format!("could not queue a SUBSCRIBE: {e}"))?;
            acks.requested(chunk.to_vec());
        }
        if acks.done() {
            self.subscribed();
        }
        Ok(())
    }

    fn on_suback(&self, acks: &mut SubAcks, pkid: u16, codes: &[SubscribeReasonCode]) {
        let refused = acks.acked(pkid, codes);
        if !refused.is_empty() {
            tracing::error!(filters = ?refused,
                "the broker refused command subscriptions on the MQTT 5 connection (check its ACL for this user)");
            self.shared.route.send_modify(|r| r.refused.extend(refused));
        }
        if acks.done() {
            self.subscribed();
        }
    }

    /// Every command filter is acknowledged on the link: the main connection lets go of them.
    fn subscribed(&self) {
        self.set_link(LinkState::Up { subscribed: true });
        self.main_carries(false);
    }

    /// Drops gone command subscribers and unsubscribes the filters nobody uses any more.
    fn prune(&self, client: &AsyncClient) -> Result<(), String> {
        for f in self.shared.commands().prune_closed() {
            client.try_unsubscribe(f).map_err(|e| format!("could not queue an UNSUBSCRIBE: {e}"))?;
        }
        Ok(())
    }
}

/// Polls the event loop and forwards what it yields, until the first error (the connection is then
/// gone; the link builds a new event loop for the next attempt) or the link stops listening.
async fn poll(mut eventloop: EventLoop, events: mpsc::Sender<Result<Event, ConnectionError>>) {
    loop {
        let r = eventloop.poll().await;
        let end = r.is_err();
        if events.send(r).await.is_err() || end {
            return;
        }
    }
}

/// Sends DISCONNECT and waits (briefly) until it was written.
async fn close(client: &AsyncClient, events: &mut mpsc::Receiver<Result<Event, ConnectionError>>) {
    if client.try_disconnect().is_err() {
        return;
    }
    let written = async {
        while let Some(Ok(e)) = events.recv().await {
            if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, written).await;
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("broker refused the MQTT 5 connection: {code:?}"),
        ConnectionError::MqttState(s) => format!("MQTT 5 connection: {s}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;

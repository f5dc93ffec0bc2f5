//! The connection task: connects (through rumqttc's `EventLoop::poll`, which does the TCP/TLS/Unix
//! connect and the CONNECT/CONNACK exchange), then drives rumqttc's `MqttState` and `Network` itself.
//!
//! Why not `EventLoop::poll` for the whole connection: it pulls requests from a bounded channel that
//! an outage fills with publishes (so a re-subscription queued behind them never went out), and it
//! flushes the socket after every single request. Here:
//! - after each ConnAck the SUBSCRIBE packets and the birth message are written first, straight to
//!   the socket; readiness waits for every SUBACK;
//! - publishes are taken in batches (the outage buffer first, then the queue) and written with one
//!   flush per batch, capped in count and bytes so pings and incoming traffic keep their turn;
//! - a publish over `max_packet_size` is dropped and counted before encoding (the codec would
//!   otherwise fail and the connection loop forever on a retained one);
//! - while disconnected the queue keeps draining into the [`Outbox`] (coalesced, bounded), and QoS 1
//!   publishes unacknowledged when the connection broke are put back at its front;
//! - the command filters are subscribed here until the MQTT 5 command link has them, whenever it is
//!   down, and for good when the broker speaks MQTT 3.1.1 only (`CarryCommands`, see `link`);
//!   otherwise dispatch checks one flag for them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::{
    ConnectionError, Disconnect, Event, EventLoop, Packet, PingReq, Publish, Request, StateError, Subscribe,
    SubscribeFilter, SubscribeReasonCode, Unsubscribe,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::coalesce::{Mark, ReadHolding};
use super::collected::Collector;
use super::inline::{Offer, Offered};
use super::link::{CarryStep, Carrying};
use super::outbox::{Outbox, Pending, Pushed};
use super::{Control, MqttSettings, Outbound, Outgoing, QoS, Shared, wire};

/// Publishes written before one flush at most: bounds the time a burst holds the socket.
const MAX_BATCH: usize = 256;
/// Bytes encoded before one flush at most.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// Reads handled before one flush at most while the connection is behind (see `read_on`): bounds
/// the turn when the messages publish nothing (unchanged values).
const MAX_READS_PER_TURN: usize = 32;
/// Filters per SUBSCRIBE packet (keeps each packet far below any broker's limit).
const FILTERS_PER_SUBSCRIBE: usize = 64;
/// A connection that lived this long counts as healthy: the backoff starts over after losing it.
/// A shorter one (e.g. cut by a poisoned retained message) keeps backing off.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// How long to wait for the broker to close the socket after our DISCONNECT.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How a connected session ended.
enum Ended {
    /// Lost (I/O error, broker gone, protocol error); the text says why.
    Lost(String),
    /// Closed on purpose (DISCONNECT sent, or cancelled): the task stops.
    Closed,
    /// Closed to connect again with new settings (live reload of `mqtt:`).
    Reconfigure,
}

/// How a connection attempt (or the wait before one) ended.
enum Attempt {
    /// ConnAck received.
    Up,
    /// The attempt failed; the text says why.
    Failed(String),
    /// Stopped (cancelled or disconnect requested).
    Stopped,
    /// New settings arrived: start over with them at once.
    Reconfigure,
}

/// The connection task's state (see module docs).
pub(super) struct Connection {
    /// What the handles share (subscriptions, state watch, health, metrics).
    shared: Arc<Shared>,
    /// rumqttc's connection: connect logic, protocol state and framed socket.
    eventloop: EventLoop,
    /// Limits, birth message, backoff.
    settings: MqttSettings,
    /// The hot path's bounded queue.
    outbound: mpsc::Receiver<Outbound>,
    /// Whether every sender of `outbound` is gone (the bridge is stopping).
    outbound_closed: bool,
    /// Subscribe and disconnect requests.
    control: mpsc::UnboundedReceiver<Control>,
    /// Publishes waiting for a connection, oldest first.
    outbox: Outbox,
    /// Flush requests answered once no QoS 1 publish is left unacknowledged.
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// SUBSCRIBE packet ids of this connection not yet acknowledged, with their filters.
    pending_subacks: HashMap<u16, Vec<String>>,
    /// The registration generation the SUBSCRIBEs written so far complete: acknowledged (for
    /// readiness) when the last pending SUBACK arrives.
    subscribe_covers: u64,
    /// A subscriber was found gone while dispatching: prune and unsubscribe after this read.
    prune_due: bool,
    /// New settings waiting to be applied (live reload), with the event loop built from them.
    reconfigure: Option<Box<super::Reconfigure>>,
    /// Whether an oversized incoming message was already logged (then only counted).
    logged_oversized_in: bool,
    /// Whether an oversized outgoing publish was already logged (then only counted).
    logged_oversized_out: bool,
    /// Whether this connection carries the command filters (until the link has them, whenever it
    /// is down, for good when the broker speaks MQTT 3.1.1 only) and delivers commands.
    carrying: Carrying,
    /// Fast lanes that took a message in the current read: their burst ends after it.
    lanes_in_burst: Vec<Arc<dyn Offer>>,
    /// Whether the connection runs on a current-thread runtime (the bridge's default), where the
    /// subscribers' tasks share its thread: what fast lanes publish during a read is written with
    /// its flush (see `collected`; sound only where no other task runs between the dispatch and
    /// the write), and with the flush after the reads that were ready when behind (`read_on`).
    one_thread: bool,
}

impl Connection {
    pub(super) fn new(
        shared: Arc<Shared>,
        eventloop: EventLoop,
        settings: MqttSettings,
        outbound: mpsc::Receiver<Outbound>,
        control: mpsc::UnboundedReceiver<Control>,
    ) -> Connection {
        Connection {
            outbox: Outbox::new(settings.queue_capacity),
            shared,
            eventloop,
            settings,
            outbound,
            outbound_closed: false,
            control,
            flush_waiters: Vec::new(),
            pending_subacks: HashMap::new(),
            subscribe_covers: 0,
            prune_due: false,
            reconfigure: None,
            logged_oversized_in: false,
            logged_oversized_out: false,
            // As `Route::default`: this connection carries the command filters until the link has them.
            carrying: Carrying::new(),
            lanes_in_burst: Vec::new(),
            one_thread: tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread),
        }
    }

    /// Connects, serves, reconnects with backoff, until cancelled or disconnected on purpose.
    /// With a `gate`, the first connection waits until it opens (or is dropped): the bridge
    /// registers its command filters first, so the ConnAck subscribes them before the birth.
    pub(super) async fn run(mut self, cancel: CancellationToken, mut gate: Option<oneshot::Receiver<()>>) {
        let mut failures: u32 = 0;
        let mut logged_down = false;
        loop {
            if let Some(gate) = gate.take() {
                // Held like an outage: publishes go to the outbox (retained state coalesced), so
                // the first connection sends the state as it is then, not every step towards it.
                let opened = async {
                    let _ = gate.await;
                };
                if let Attempt::Stopped = self.wait_buffering(opened, &cancel).await {
                    break;
                }
            }
            if let Some(r) = self.reconfigure.take() {
                self.apply_settings(*r);
                failures = 0;
                logged_down = false;
            }
            let reason = match self.connect(&cancel).await {
                Attempt::Stopped => break,
                Attempt::Reconfigure => continue,
                Attempt::Failed(reason) => reason,
                Attempt::Up => {
                    let since = Instant::now();
                    logged_down = false;
                    let ended = match self.start_session().await {
                        Ok(()) => self.serve(&cancel).await,
                        Err(e) => Ended::Lost(describe_state(&e, &self.settings)),
                    };
                    match ended {
                        Ended::Closed => break,
                        Ended::Reconfigure => continue,
                        Ended::Lost(reason) => {
                            self.lost();
                            if since.elapsed() >= HEALTHY_AFTER {
                                failures = 0;
                            }
                            reason
                        }
                    }
                }
            };
            if self.shared.closing.load(Ordering::SeqCst) || cancel.is_cancelled() {
                break;
            }
            self.shared.metrics.mqtt_connection_errors.inc();
            if !logged_down {
                tracing::warn!(host = %self.settings.host, port = self.settings.port, error = %reason,
                    "MQTT connection lost or refused; reconnecting with backoff");
                logged_down = true;
            } else {
                tracing::debug!(error = %reason, "MQTT reconnect attempt failed");
            }
            self.shared.health().last_error = Some(reason);
            let delay = super::backoff_delay(failures, self.settings.backoff_initial, self.settings.backoff_max);
            failures = failures.saturating_add(1);
            match self.wait_buffering(tokio::time::sleep(delay), &cancel).await {
                Attempt::Stopped => break,
                _ => continue,
            }
        }
        self.set_disconnected();
        for w in self.flush_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    /// Connects once; meanwhile keeps the queue draining into the outbox. `None` when stopped.
    async fn connect(&mut self, cancel: &CancellationToken) -> Attempt {
        let connect = self.eventloop.poll();
        tokio::pin!(connect);
        loop {
            tokio::select! {
                r = &mut connect => return match r {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Attempt::Up,
                    Ok(_) => Attempt::Failed(describe(&ConnectionError::NotConnAck(Packet::PingResp))),
                    Err(e) => Attempt::Failed(describe(&e)),
                },
                m = self.outbound.recv(), if !self.outbound_closed => buffer(&self.shared, &mut self.outbox, &mut self.outbound_closed, m),
                c = self.control.recv() => if let Some(end) = control_while_down(&self.shared, &mut self.reconfigure, &mut self.carrying, c) {
                    return end;
                },
                _ = cancel.cancelled() => return Attempt::Stopped,
            }
        }
    }

    /// Waits for `until` (the backoff delay, the gate) while buffering the queue; ends early when
    /// stopped or reconfigured.
    async fn wait_buffering(&mut self, until: impl Future<Output = ()>, cancel: &CancellationToken) -> Attempt {
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return Attempt::Up,
                m = self.outbound.recv(), if !self.outbound_closed => buffer(&self.shared, &mut self.outbox, &mut self.outbound_closed, m),
                c = self.control.recv() => if let Some(end) = control_while_down(&self.shared, &mut self.reconfigure, &mut self.carrying, c) {
                    return end;
                },
                _ = cancel.cancelled() => return Attempt::Stopped,
            }
        }
    }

    /// After a ConnAck: every registered filter and the birth message go out before any publish.
    async fn start_session(&mut self) -> Result<(), StateError> {
        let shared = self.shared.clone();
        shared.metrics.mqtt_connections.inc();
        tracing::info!(host = %self.settings.host, port = self.settings.port, "MQTT connected");
        {
            let mut health = shared.health();
            health.last_error = None;
            health.refused.clear();
        }
        self.pending_subacks.clear();
        // A hand-over decided while down needs no UNSUBACK: nothing was in flight.
        self.carrying.reset();
        // Without a session (clean session), the broker knows none of our filters.
        let mut filters: BTreeSet<String> = {
            let subs = shared.subscriptions();
            self.subscribe_covers = subs.generation;
            subs.list.iter().map(|s| s.filter.clone()).collect()
        };
        if self.carrying.subscribes() {
            filters.extend(shared.command_filters());
        }
        let filters: Vec<String> = filters.into_iter().collect();
        for chunk in filters.chunks(FILTERS_PER_SUBSCRIBE) {
            self.write_subscribe(chunk.to_vec()).await?;
        }
        if let Some((topic, payload)) = &self.settings.birth {
            let mut birth = Publish::new(topic.clone(), QoS::AtLeastOnce, payload.clone());
            birth.retain = true;
            self.write(Request::Publish(birth)).await?;
        }
        self.flush().await?;
        self.process_events();
        let subscribed = self.pending_subacks.is_empty();
        if subscribed {
            shared.acknowledged.store(self.subscribe_covers, std::sync::atomic::Ordering::Release);
        }
        shared.state.send_modify(|s| {
            s.connected = true;
            s.generation += 1;
            s.subscribed = subscribed;
        });
        shared.metrics.mqtt_connected.set(1);
        Ok(())
    }

    /// Serves a live connection until it is lost or closed.
    async fn serve(&mut self, cancel: &CancellationToken) -> Ended {
        let keep_alive = self.settings.keep_alive.max(Duration::from_secs(1));
        let mut ping = tokio::time::interval_at(Instant::now() + keep_alive, keep_alive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Registered once per connection, not once per loop turn (several per input: each fresh
        // `cancelled()` locks the token to register and again to deregister).
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        // This socket's read holding (see `coalesce`); the timer is armed only while holding.
        let mut holding = ReadHolding::default();
        let mut can_hold = true;
        let mut release = std::pin::pin!(tokio::time::sleep_until(Instant::now()));
        loop {
            let room = self.room();
            let step = tokio::select! {
                biased;
                _ = &mut cancelled => return Ended::Closed,
                c = self.control.recv() => match c {
                    Some(Control::Subscribe(filters, generation)) => {
                        self.subscribe_covers = self.subscribe_covers.max(generation);
                        self.subscribe_now(filters).await
                    }
                    Some(Control::SubscribeCommands(filters)) if self.carrying.subscribes() => {
                        self.subscribe_now(filters).await
                    }
                    Some(Control::SubscribeCommands(_)) => Ok(()),
                    Some(Control::CarryCommands(on)) => self.carry(on).await,
                    Some(Control::Prune) => self.prune().await,
                    Some(Control::Reconfigure(r)) => {
                        self.reconfigure = Some(r);
                        return self.close_for_reconfigure().await;
                    }
                    Some(Control::Disconnect) | None => return self.disconnect().await,
                },
                r = read(&mut self.eventloop) => match r {
                    Ok(()) => {
                        let (behind, collected) = if self.one_thread {
                            let collector = Collector::begin(&self.shared);
                            let behind = self.process_events();
                            match self.read_on(behind, &collector) {
                                Ok(behind) => (behind, collector.finish()),
                                Err(e) => {
                                    // Lost mid-turn: what the lanes published waits for the next
                                    // connection like anything queued.
                                    self.shared.queue_batch(collector.finish());
                                    return Ended::Lost(describe_state(&e, &self.settings));
                                }
                            }
                        } else {
                            (self.process_events(), Vec::new())
                        };
                        if can_hold && let Some(mark) = holding.after_read(behind, Instant::now) {
                            match self.set_low_water(mark) {
                                Ok(()) => {
                                    self.shared.metrics.mqtt_read_holds.inc();
                                    if let Some(at) = holding.release_at() {
                                        release.as_mut().reset(at);
                                    }
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "reads are not held on this connection");
                                    holding.reset();
                                    can_hold = false;
                                }
                            }
                        }
                        // What fast lanes published while this read was handled goes out with
                        // this turn's flush instead of one `select!` turn later.
                        let written = self.write_after_read(collected).await;
                        match written {
                            Ok(()) if std::mem::take(&mut self.prune_due) => self.prune().await,
                            other => other,
                        }
                    }
                    Err(e) => Err(e),
                },
                _ = ping.tick() => match self.write(Request::PingReq(PingReq)).await {
                    Ok(_) => self.flush().await,
                    Err(StateError::AwaitPingResp) => {
                        return Ended::Lost("the broker did not answer the keep-alive ping".into());
                    }
                    Err(e) => Err(e),
                },
                () = &mut release, if holding.holding() => match holding.at_release_time(Instant::now()) {
                    // What is waiting becomes readable at once; a socket that cannot take the
                    // mark any more would hold it for good: the connection is started over.
                    Some(mark) => self.set_low_water(mark).map_err(StateError::Io),
                    None => {
                        if let Some(at) = holding.release_at() {
                            release.as_mut().reset(at);
                        }
                        Ok(())
                    }
                },
                first = next_publish(&mut self.outbox, &mut self.outbound), if room > 0 && !self.outbound_closed => {
                    match first {
                        Some(first) => self.write_batch(first, room).await,
                        None => {
                            self.outbound_closed = true;
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = step {
                return Ended::Lost(describe_state(&e, &self.settings));
            }
            self.answer_flushes();
        }
    }

    /// After a read: writes what its fast lanes published (`collected`, see [`super::collected`])
    /// first when nothing older waits, else queues it behind what does (before any other task can
    /// run); then whatever else is ready, with one flush.
    async fn write_after_read(&mut self, collected: Vec<Outgoing>) -> Result<(), StateError> {
        if !collected.is_empty() {
            let room = self.room();
            if room > 0 && self.outbox.is_empty() && self.outbound.is_empty() {
                // Counted as waiting, so the batch's one decrement covers it like queued publishes.
                self.shared.metrics.publish_queue_depth.inc_by(collected.len() as i64);
                return self.write_batch(Ready::Collected(collected), room).await;
            }
            self.shared.queue_batch(collected);
        }
        match self.ready_now() {
            Some((first, room)) => self.write_batch(first, room).await,
            None => self.flush().await,
        }
    }

    /// The next publish to write (outbox first) and the room for its batch, when there is room and
    /// something is ready without waiting.
    fn ready_now(&mut self) -> Option<(Ready, usize)> {
        let room = self.room();
        if room == 0 || self.outbound_closed {
            return None;
        }
        let first = match self.outbox.pop_front() {
            Some(p) => Ready::Buffered(p),
            None => Ready::Queued(self.outbound.try_recv().ok()?),
        };
        Some((first, room))
    }

    /// Publishes that may be written now without overrunning the in-flight window.
    fn room(&self) -> usize {
        if self.eventloop.state.collision.is_some() {
            return 0;
        }
        usize::from(self.settings.inflight.clamp(1, 100).saturating_sub(self.eventloop.state.inflight()))
    }

    /// Writes `first` and whatever else is ready (outbox first, then the queue) with one flush.
    async fn write_batch(&mut self, first: Ready, room: usize) -> Result<(), StateError> {
        let mut written = Written { taken: 0, count: 0, bytes: 0, limit: room.min(MAX_BATCH) };
        let encoded = self.encode_batch(first, &mut written).await;
        // Once per batch, not twice per publish: two atomic operations per publish were ~1 % of
        // the bridge's instructions.
        self.shared.metrics.publish_queue_depth.dec_by(written.taken as i64);
        self.shared.metrics.messages_published.inc_by(written.count as u64);
        encoded?;
        self.flush().await?;
        self.process_events();
        Ok(())
    }

    /// Encodes `first` and whatever else is ready into the write buffer, up to the batch's caps.
    async fn encode_batch(&mut self, first: Ready, written: &mut Written) -> Result<(), StateError> {
        let mut next = Some(first);
        while let Some(ready) = next {
            match ready {
                Ready::Buffered(p) => self.write_publish(p, written).await?,
                Ready::Queued(item) => {
                    self.shared.released(item.publishes());
                    match item {
                        Outbound::Flush(done) => self.flush_waiters.push(done),
                        Outbound::Publish { topic, payload, qos, retain } => {
                            let p = Pending { topic: topic.into(), payload: payload.into(), qos, retain };
                            self.write_publish(p, written).await?;
                        }
                        Outbound::Batch(batch) => {
                            if self.encode_run(batch, written).await? {
                                break;
                            }
                        }
                    }
                }
                Ready::Collected(batch) => {
                    // Nothing else waited when it was handed over: what has been queued since goes
                    // out next turn (not looked for here: an empty queue's `try_recv` is most of
                    // what this path saves).
                    self.encode_run(batch, written).await?;
                    break;
                }
            }
            if written.full(self) {
                break;
            }
            next = match self.outbox.pop_front() {
                Some(p) => Some(Ready::Buffered(p)),
                None => self.outbound.try_recv().ok().map(Ready::Queued),
            };
        }
        Ok(())
    }

    /// Encodes a run of publishes (a router step's) up to the batch's caps; `true` when some did not
    /// fit. The outbox is empty whenever the queue is read or a read's lanes are written: what did
    /// not fit leads it now, and goes out with the next flush.
    async fn encode_run(&mut self, run: Vec<Outgoing>, written: &mut Written) -> Result<bool, StateError> {
        let mut rest = run.into_iter().map(pending);
        while let Some(p) = self.encode_qos0_run(&mut rest, written)? {
            self.write_qos1(p, written).await?;
        }
        let rest: Vec<Pending> = rest.collect();
        let left = !rest.is_empty();
        if left {
            self.outbox.requeue_front(rest);
        }
        Ok(left)
    }

    /// Encodes QoS 0 publishes of `rest` up to the caps, without an await; stops at a QoS 1 one and
    /// gives it back to be written through rumqttc's state.
    fn encode_qos0_run(
        &mut self,
        rest: &mut impl Iterator<Item = Pending>,
        written: &mut Written,
    ) -> Result<Option<Pending>, StateError> {
        while !written.full(self) {
            let Some(p) = rest.next() else { break };
            if let Some(p) = self.encode_qos0(p, written)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// Encodes one publish of a batch (no flush); one over the packet limit is dropped and counted.
    /// QoS 0 (the hot path) is encoded without an await.
    async fn write_publish(&mut self, p: Pending, written: &mut Written) -> Result<(), StateError> {
        match self.encode_qos0(p, written)? {
            None => Ok(()),
            Some(p) => self.write_qos1(p, written).await,
        }
    }

    /// Writes a QoS 1 publish through rumqttc's protocol state (packet id, in-flight window).
    async fn write_qos1(&mut self, p: Pending, written: &mut Written) -> Result<(), StateError> {
        let size = wire::publish_size(p.topic.len(), p.payload.len(), p.qos);
        let mut publish = Publish::from_bytes(&*p.topic, p.qos, p.payload);
        publish.retain = p.retain;
        self.write(Request::Publish(publish)).await?;
        written.bytes += size;
        written.count += 1;
        Ok(())
    }

    /// Drops an oversized publish (counted), encodes a QoS 0 one straight into the write buffer,
    /// and gives back any other, which goes through rumqttc's protocol state.
    fn encode_qos0(&mut self, p: Pending, written: &mut Written) -> Result<Option<Pending>, StateError> {
        written.taken += 1;
        // A topic over MQTT's 16-bit length cannot be encoded at all (rumqttc would write a
        // truncated length and corrupt the stream): dropped like an oversized packet.
        let size = wire::publish_size(p.topic.len(), p.payload.len(), p.qos);
        if size > self.settings.max_packet_size || p.topic.len() > wire::MAX_TOPIC_LEN {
            self.oversized_out(&p.topic, size);
            return Ok(None);
        }
        if p.qos != QoS::AtMostOnce {
            return Ok(Some(p));
        }
        // rumqttc's protocol state keeps nothing for QoS 0 (only an event nobody reads and the
        // time, which our fixed keep-alive interval does not use): encoded straight into the
        // socket's write buffer, in order with everything else written there.
        let Some(network) = self.eventloop.network.as_mut() else { return Err(StateError::ConnectionAborted) };
        wire::put_qos0_publish(network.write_buffer_mut(), &p.topic, &p.payload, p.retain);
        written.bytes += size;
        written.count += 1;
        Ok(None)
    }

    /// Subscribes filters registered while connected.
    async fn subscribe_now(&mut self, filters: Vec<String>) -> Result<(), StateError> {
        for chunk in filters.chunks(FILTERS_PER_SUBSCRIBE) {
            self.write_subscribe(chunk.to_vec()).await?;
        }
        if self.pending_subacks.is_empty() {
            // Nothing to wait for (no filter left to send): acknowledged as it stands.
            self.all_acknowledged();
        } else {
            self.shared.state.send_if_modified(|s| std::mem::replace(&mut s.subscribed, false));
        }
        self.flush().await?;
        self.process_events();
        Ok(())
    }

    /// Every SUBSCRIBE written on this connection has its SUBACK.
    fn all_acknowledged(&mut self) {
        self.shared.acknowledged.store(self.subscribe_covers, std::sync::atomic::Ordering::Release);
        self.shared.state.send_if_modified(|s| !std::mem::replace(&mut s.subscribed, true));
    }

    /// Takes the command filters over from the link (`on`: the broker speaks MQTT 3.1.1 only) or
    /// hands them back (the link subscribed them over MQTT 5). Only after the SUBSCRIBEs went out
    /// is the route told, so readiness never sees "main carries" with a stale `subscribed`.
    async fn carry(&mut self, on: bool) -> Result<(), StateError> {
        match self.carrying.request(on) {
            CarryStep::Nothing => {}
            CarryStep::Subscribe => self.subscribe_now(self.shared.command_filters()).await?,
            CarryStep::Unsubscribe => {
                let mine: BTreeSet<String> =
                    self.shared.subscriptions().list.iter().map(|s| s.filter.clone()).collect();
                let theirs: Vec<String> =
                    self.shared.command_filters().into_iter().filter(|f| !mine.contains(f)).collect();
                // Delivery stops at the last UNSUBACK (`Carrying::unsuback`).
                let pkids = self.unsubscribe(theirs).await?;
                self.carrying.released(pkids);
            }
        }
        self.shared.route.send_if_modified(|r| std::mem::replace(&mut r.main_carries, on) != on);
        Ok(())
    }

    /// Drops gone subscribers and unsubscribes the filters nobody uses any more.
    async fn prune(&mut self) -> Result<(), StateError> {
        let mut unused = self.shared.subscriptions().prune_closed();
        if self.carrying.subscribes() {
            unused.extend(self.shared.commands().prune_closed());
            // A filter in both lists stays while either still uses it.
            let mut live: BTreeSet<String> = self.shared.command_filters().into_iter().collect();
            live.extend(self.shared.subscriptions().list.iter().map(|s| s.filter.clone()));
            unused.retain(|f| !live.contains(f));
        }
        self.unsubscribe(unused).await.map(drop)
    }

    /// Unsubscribes `unused`; returns the packet ids of the UNSUBSCRIBEs written.
    async fn unsubscribe(&mut self, unused: Vec<String>) -> Result<BTreeSet<u16>, StateError> {
        let mut pkids = BTreeSet::new();
        if unused.is_empty() {
            return Ok(pkids);
        }
        tracing::debug!(filters = ?unused, "unsubscribing filters nobody here uses any more");
        for chunk in unused.chunks(FILTERS_PER_SUBSCRIBE) {
            let unsub = Unsubscribe { pkid: 0, topics: chunk.to_vec() };
            if let Some(pkid) = self.write(Request::Unsubscribe(unsub)).await? {
                pkids.insert(pkid);
            }
        }
        self.flush().await?;
        self.process_events();
        Ok(pkids)
    }

    async fn write_subscribe(&mut self, filters: Vec<String>) -> Result<(), StateError> {
        if filters.is_empty() {
            return Ok(());
        }
        let sub = Subscribe::new_many(filters.iter().map(|f| SubscribeFilter::new(f.clone(), QoS::AtMostOnce)));
        if let Some(pkid) = self.write(Request::Subscribe(sub)).await? {
            self.pending_subacks.insert(pkid, filters);
        }
        Ok(())
    }

    /// Runs a request through the protocol state and encodes what it yields straight into the
    /// socket's write buffer (written out by the next flush, or earlier when the buffer is full).
    /// Every packet goes through here; returns the packet id of a SUBSCRIBE or UNSUBSCRIBE, which
    /// their acknowledgements are matched by.
    async fn write(&mut self, request: Request) -> Result<Option<u16>, StateError> {
        let Some(packet) = self.eventloop.state.handle_outgoing_packet(request)? else { return Ok(None) };
        let pkid = match &packet {
            Packet::Subscribe(s) => Some(s.pkid),
            Packet::Unsubscribe(u) => Some(u.pkid),
            _ => None,
        };
        let Some(network) = self.eventloop.network.as_mut() else { return Err(StateError::ConnectionAborted) };
        network.write(packet).await?;
        Ok(pkid)
    }

    async fn flush(&mut self) -> Result<(), StateError> {
        let timeout = Duration::from_secs(self.eventloop.network_options.connection_timeout());
        let Some(network) = self.eventloop.network.as_mut() else { return Err(StateError::ConnectionAborted) };
        if network.write_buffer_mut().is_empty() {
            // Nothing to send (after most reads): no timer to arm, no clock to read.
            return Ok(());
        }
        match tokio::time::timeout(timeout, network.flush()).await {
            Ok(r) => r,
            Err(_) => Err(StateError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the broker did not take our data within the connection timeout",
            ))),
        }
    }

    /// Handles what the protocol state recorded: incoming publishes and SUBACKs; drops the rest
    /// (outgoing notifications nobody reads), so the event list never grows. Then ends the burst of
    /// every fast lane that took a message (see [`super::inline`]). Returns whether the read took
    /// its whole quota of packets (the connection is behind the socket).
    fn process_events(&mut self) -> bool {
        // A read that took as many packets as one read takes may have left more behind: then the
        // connection is not keeping up (reads are held, see `coalesce`; on one thread it reads on
        // before it writes, see `read_on`).
        let limit = self.eventloop.network.as_ref().map_or(usize::MAX, |n| n.packets_per_read());
        let incoming = self.eventloop.state.events.iter().filter(|e| matches!(e, Event::Incoming(_))).count();
        let caught_up = incoming < limit;
        while let Some(event) = self.eventloop.state.events.pop_front() {
            match event {
                Event::Incoming(Packet::Publish(p)) => self.dispatch(p),
                Event::Incoming(Packet::SubAck(ack)) => self.on_suback(ack.pkid, &ack.return_codes),
                Event::Incoming(Packet::UnsubAck(ack)) => self.carrying.unsuback(ack.pkid),
                _ => {}
            }
        }
        for lane in self.lanes_in_burst.drain(..) {
            lane.end_of_burst();
        }
        !caught_up
    }

    /// On one thread, after a read that took its whole quota: reads on what is ready without
    /// waiting, within the same collection, until a read finds less than its quota, nothing is
    /// ready, the lanes published a batch's worth or [`MAX_READS_PER_TURN`] reads were taken. What
    /// the lanes publish for those reads then goes out with one flush instead of one per read of 9
    /// packets (bridge CPU per message at a Mosquitto flood 1.7–1.9 → 1.2–1.4 µs). No other task
    /// runs in between (nothing is awaited), so the collection's order holds (see `collected`).
    /// Returns whether the turn counts as behind ([`Turn::behind`]).
    fn read_on(&mut self, behind: bool, collector: &Collector) -> Result<bool, StateError> {
        use futures_util::FutureExt as _;
        // The usual read at home-lab rates: nothing to read on. And only what one batch can write at
        // once is worth collecting: with anything older waiting, the collection is queued behind it,
        // and a turn that collected more than a batch writes would grow the queue until it drops.
        if !behind || !self.outbox.is_empty() || !self.outbound.is_empty() {
            return Ok(behind);
        }
        let mut turn = Turn::after_first_read(behind, self.room().min(MAX_BATCH));
        while turn.reads_on(collector.len()) {
            // `read` is cancel-safe (it is a `select!` branch): one that is not ready is dropped.
            match read(&mut self.eventloop).now_or_never() {
                Some(Ok(())) => {
                    let took_quota = self.process_events();
                    turn.read(took_quota);
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(turn.behind())
    }

    /// Sets the receive low-water mark of this connection's TCP socket (see `coalesce`).
    fn set_low_water(&self, mark: Mark) -> std::io::Result<()> {
        #[cfg(unix)]
        if let Some(fd) = self.eventloop.network.as_ref().and_then(|n| n.socket_fd()) {
            return super::coalesce::set_low_water(fd, mark);
        }
        Err(std::io::ErrorKind::Unsupported.into())
    }

    fn on_suback(&mut self, pkid: u16, codes: &[SubscribeReasonCode]) {
        let Some(filters) = self.pending_subacks.remove(&pkid) else { return };
        let refused: Vec<String> = filters
            .into_iter()
            .zip(codes.iter().map(Some).chain(std::iter::repeat(None)))
            .filter(|(_, c)| !matches!(c, Some(SubscribeReasonCode::Success(_))))
            .map(|(f, _)| f)
            .collect();
        if !refused.is_empty() {
            tracing::error!(filters = ?refused, "the broker refused subscriptions (check its ACL for this user)");
            self.shared.health().refused.extend(refused);
        }
        if self.pending_subacks.is_empty() {
            self.all_acknowledged();
        }
    }

    /// Hands an incoming publish to every matching subscriber (on the spot to a fast lane when its
    /// rules allow); oversized payloads are counted, not delivered.
    fn dispatch(&mut self, p: Publish) {
        if p.payload.len() > self.settings.max_packet_size {
            self.shared.metrics.mqtt_oversized("in").inc();
            if !std::mem::replace(&mut self.logged_oversized_in, true) {
                tracing::warn!(topic = %crate::untrusted::clip(&p.topic), bytes = p.payload.len(),
                    limit = self.settings.max_packet_size,
                    "incoming MQTT message over the size limit dropped (counted in hlbridge_mqtt_oversized_total; logged once)");
            }
            return;
        }
        if self.carrying.delivers() {
            // Not once the link has them: the device-data path then pays this one flag check.
            let commands = self.shared.commands();
            let mut hit = false;
            commands.trie.for_each_match(&p.topic, |_| hit = true);
            if hit && !super::dispatch_queued(&commands, p.topic.clone(), p.payload.clone(), p.retain) {
                self.prune_due = true;
            }
        }
        let (live, for_lane) = super::dispatch(&self.shared.subscriptions(), p.topic, p.payload, p.retain);
        // The subscriptions' lock is released: the lane's handler may publish and subscribe.
        let live = match for_lane {
            None => live,
            Some(super::ForLane(lane, msg)) => match lane.offer(msg) {
                Offered::Handled { first_in_burst } => {
                    if first_in_burst {
                        self.lanes_in_burst.push(lane);
                    }
                    true
                }
                Offered::Queued | Offered::Full => true,
                Offered::Closed => false,
            },
        };
        if !live {
            self.prune_due = true;
        }
    }

    fn oversized_out(&mut self, topic: &str, size: usize) {
        self.shared.metrics.mqtt_oversized("out").inc();
        if !std::mem::replace(&mut self.logged_oversized_out, true) {
            tracing::error!(topic = %crate::untrusted::clip(topic), bytes = size, limit = self.settings.max_packet_size,
                "publish over the MQTT packet limit dropped, not sent (counted in hlbridge_mqtt_oversized_total; logged once)");
        } else {
            tracing::debug!(topic = %crate::untrusted::clip(topic), bytes = size, "oversized publish dropped");
        }
    }

    /// Answers flush requests once nothing QoS 1 is left unacknowledged.
    fn answer_flushes(&mut self) {
        if !self.flush_waiters.is_empty()
            && self.eventloop.state.inflight() == 0
            && self.eventloop.state.collision.is_none()
        {
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Sends DISCONNECT and keeps reading until the broker closes the socket, so a broker still
    /// writing to us does not hit a broken pipe and drop what it had not read yet.
    async fn disconnect(&mut self) -> Ended {
        self.shared.closing.store(true, Ordering::SeqCst);
        if self.write(Request::Disconnect(Disconnect)).await.is_ok() && self.flush().await.is_ok() {
            let until_closed = async {
                while read(&mut self.eventloop).await.is_ok() {
                    self.eventloop.state.events.clear();
                }
            };
            let _ = tokio::time::timeout(CLOSE_WAIT, until_closed).await;
        }
        self.eventloop.network = None;
        self.set_disconnected();
        Ended::Closed
    }

    /// Leaves the broker cleanly (DISCONNECT: no last will) before connecting with new settings;
    /// unacknowledged publishes go back to the outbox for the new connection.
    async fn close_for_reconfigure(&mut self) -> Ended {
        tracing::info!("MQTT settings changed: reconnecting with the new ones");
        // What is in flight is acknowledged first (bounded): re-sent on the new connection, a QoS 1
        // publish (a command's result, say) would reach subscribers twice.
        let acked = async {
            while self.eventloop.state.inflight() > 0 && read(&mut self.eventloop).await.is_ok() {
                self.process_events();
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, acked).await;
        if self.write(Request::Disconnect(Disconnect)).await.is_ok() {
            let _ = self.flush().await;
        }
        self.lost();
        Ended::Reconfigure
    }

    /// Takes new settings and the event loop built from them (the old socket, if any, closes).
    fn apply_settings(&mut self, r: super::Reconfigure) {
        self.eventloop.network = None;
        self.settings = r.settings;
        self.eventloop = r.eventloop;
        self.shared.health().last_error = None;
    }

    /// After losing the connection: unacknowledged publishes go back to the outbox front.
    fn lost(&mut self) {
        let collided = self.eventloop.state.collision.take();
        self.eventloop.clean();
        let unacked: Vec<Pending> = self
            .eventloop
            .pending
            .drain(..)
            .filter_map(|r| match r {
                Request::Publish(p) => Some(p),
                _ => None,
            })
            .chain(collided)
            .map(|p| Pending { topic: p.topic.into(), payload: p.payload, qos: p.qos, retain: p.retain })
            .collect();
        self.shared.metrics.publish_queue_depth.inc_by(unacked.len() as i64);
        self.outbox.requeue_front(unacked);
        self.eventloop.state.events.clear();
        self.pending_subacks.clear();
        // Nothing more arrives on this connection: no hand-over is left to finish.
        self.carrying.reset();
        self.set_disconnected();
    }

    fn set_disconnected(&self) {
        self.shared.metrics.mqtt_connected.set(0);
        self.shared.state.send_if_modified(|s| {
            let changed = s.connected || s.subscribed;
            s.connected = false;
            s.subscribed = false;
            changed
        });
    }
}

/// What one flush has taken so far, against its caps.
struct Written {
    /// Publishes taken off the queue or outbox, or collected from a read's lanes (encoded or
    /// dropped as oversized).
    taken: usize,
    /// Publishes encoded.
    count: usize,
    /// Their bytes.
    bytes: usize,
    /// Publishes allowed before the flush: the batch cap, or less room in the QoS 1 window.
    limit: usize,
}

impl Written {
    /// Whether the flush must happen now (caps reached, or a packet id collision to wait out).
    fn full(&self, c: &Connection) -> bool {
        self.count >= self.limit || self.bytes >= MAX_BATCH_BYTES || c.eventloop.state.collision.is_some()
    }
}

/// Reads a bunch of packets into the protocol state (cancel-safe: a partly read packet stays in
/// the framed buffer).
async fn read(eventloop: &mut EventLoop) -> Result<(), StateError> {
    match eventloop.network.as_mut() {
        Some(n) => n.readb(&mut eventloop.state).await,
        None => Err(StateError::ConnectionAborted),
    }
}

/// How far one turn of a connection that is behind reads on before it writes (see
/// `Connection::read_on`): the rules alone, without I/O.
#[derive(Debug)]
struct Turn {
    /// Whether the turn's first read took its whole quota: the turn then counts as behind.
    first_took_quota: bool,
    /// Whether the latest read took its whole quota (more may be ready).
    last_took_quota: bool,
    /// Reads taken in this turn so far.
    reads: usize,
    /// Publishes one write batch takes now (the in-flight room, at most [`MAX_BATCH`]): the turn
    /// collects no more than that.
    batch: usize,
}

impl Turn {
    /// A turn whose first read took its whole quota of packets or not, written in batches of `batch`.
    fn after_first_read(took_quota: bool, batch: usize) -> Turn {
        Turn { first_took_quota: took_quota, last_took_quota: took_quota, reads: 1, batch }
    }

    /// Whether to read on, with `collected` publishes waiting for the turn's flush: only after a
    /// read that took its quota, and within [`MAX_READS_PER_TURN`] reads and one write batch of
    /// publishes, so pings and other tasks keep their turn and nothing is left to queue.
    fn reads_on(&self, collected: usize) -> bool {
        self.last_took_quota && self.reads < MAX_READS_PER_TURN && collected < self.batch
    }

    /// Another read was taken.
    fn read(&mut self, took_quota: bool) {
        self.reads += 1;
        self.last_took_quota = took_quota;
    }

    /// Whether the turn counts as behind (read holding starts on it): its first read took a quota.
    /// Not its last: that one usually ends the turn by finding less, and holding would never start.
    fn behind(&self) -> bool {
        self.first_took_quota
    }
}

/// Something to write: a publish from the outbox, or an item from the queue.
enum Ready {
    /// Buffered during an outage (or put back): older than anything in the queue.
    Buffered(Pending),
    /// Taken off the queue.
    Queued(Outbound),
    /// What a read's fast lanes published (see [`super::collected`]): never queued, counted in the
    /// queue's gauge from the moment it is handed to the batch.
    Collected(Vec<Outgoing>),
}

/// A batch's publish as the outbox keeps it (the payload is moved, not copied).
fn pending(p: super::Outgoing) -> Pending {
    Pending { topic: p.topic, payload: p.payload, qos: p.qos, retain: p.retain }
}

/// The next thing to write: the outbox (older) before the queue. `None` once the queue closed.
async fn next_publish(outbox: &mut Outbox, outbound: &mut mpsc::Receiver<Outbound>) -> Option<Ready> {
    match outbox.pop_front() {
        Some(p) => Some(Ready::Buffered(p)),
        None => outbound.recv().await.map(Ready::Queued),
    }
}

/// Handles a control request while there is no connection; `Some` ends the current wait.
fn control_while_down(
    shared: &Shared,
    reconfigure: &mut Option<Box<super::Reconfigure>>,
    carrying: &mut Carrying,
    c: Option<Control>,
) -> Option<Attempt> {
    match c {
        Some(Control::Disconnect) | None => Some(Attempt::Stopped),
        Some(Control::Prune) => {
            // Nothing to unsubscribe at the broker: the next ConnAck subscribes only live filters.
            shared.subscriptions().prune_closed();
            if carrying.subscribes() {
                shared.commands().prune_closed();
            }
            None
        }
        // Registered already; the next ConnAck subscribes it.
        Some(Control::Subscribe(..) | Control::SubscribeCommands(_)) => None,
        Some(Control::CarryCommands(on)) => {
            // The next ConnAck subscribes them (or not); `subscribed` is false while down.
            carrying.request_while_down(on);
            shared.route.send_if_modified(|r| std::mem::replace(&mut r.main_carries, on) != on);
            None
        }
        Some(Control::Reconfigure(r)) => {
            *reconfigure = Some(r);
            Some(Attempt::Reconfigure)
        }
    }
}

/// Moves one queued item into the outbox while disconnected.
fn buffer(shared: &Shared, outbox: &mut Outbox, closed: &mut bool, item: Option<Outbound>) {
    let push = |outbox: &mut Outbox, p: Pending| match outbox.push(p) {
        Pushed::Queued => {}
        Pushed::Coalesced => {
            shared.metrics.publish_queue_depth.dec();
        }
        Pushed::DroppedOldest => {
            shared.metrics.publish_queue_depth.dec();
            shared.metrics.publish_dropped.inc();
        }
    };
    if let Some(item) = &item {
        shared.released(item.publishes());
    }
    match item {
        Some(Outbound::Publish { topic, payload, qos, retain }) => {
            push(outbox, Pending { topic: topic.into(), payload: payload.into(), qos, retain });
        }
        Some(Outbound::Batch(batch)) => {
            for p in batch {
                push(outbox, pending(p));
            }
        }
        // Nothing can be flushed while disconnected: do not hold up a shutdown.
        Some(Outbound::Flush(done)) => {
            let _ = done.send(());
        }
        None => *closed = true,
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("broker refused the connection: {code:?}"),
        ConnectionError::MqttState(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn describe_state(e: &StateError, settings: &MqttSettings) -> String {
    match e {
        StateError::Deserialization(CodecError::PayloadSizeLimitExceeded(n)) => format!(
            "the broker sent a packet of {n} bytes, over mqtt.max_incoming_packet_size ({} bytes); \
             the connection was reset (a retained message this large keeps resetting it: delete it or raise the limit)",
            settings.max_incoming_packet_size
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;

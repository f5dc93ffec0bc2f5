//! One device's routing state as a pure state machine (rumqttc's `state.rs` style): each step takes
//! the input and the time ([`Now`]) and queues what must be published, as data ([`Publish`]) in
//! [`DeviceState::out`]; the router's thin layer ([`super::Router`]) sends the queue while it still
//! holds the device's lock, so the order per topic is the order of the steps. Nothing here touches
//! MQTT or reads the clock, so the tests drive it step by step without a broker or a sleep.
//! Counters and the one-line logs are the only side effects.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use time::OffsetDateTime;

use super::{DeviceSpec, RouterSettings};
use crate::clock::Now;
use crate::guard::{CounterGuard, GuardConfig, Verdict};
use crate::metrics::DeviceCounters;
use crate::model::{self, Event, Identity, Quantity, Update, Value};
use crate::mqtt::QoS;
use crate::untrusted::{self, clip};

/// `parse_errors` reason for a device text cut to [`untrusted::MAX_TEXT_BYTES`].
const TEXT_TOO_LONG: &str = "text_too_long";

/// The reason devices go offline when the bridge stops (logged at info: nothing is wrong).
pub(crate) const BRIDGE_STOPPED: &str = "bridge stopped";

/// One message to publish, decided by the state machine and sent by the router (all of one step
/// in one batch).
pub(crate) use crate::mqtt::Outgoing as Publish;

/// The device's transport as the adapter sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Link {
    /// Not known yet (start-up).
    Unknown,
    /// Reachable.
    Up,
    /// Unreachable or reporting itself unavailable, with the reason shown in `/readyz`.
    Down(String),
}

/// What a step needs to know about the device besides its state.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The device's fixed facts (id for logs, `min_interval`, `heartbeat`, freshness).
    pub(crate) spec: &'a DeviceSpec,
    /// `<prefix>/<device>`: every topic of the device starts with it.
    pub(crate) base: &'a str,
    /// Which outputs are on and their QoS.
    pub(crate) settings: &'a RouterSettings,
    /// Where parse errors and rejected readings are counted.
    pub(crate) counters: &'a DeviceCounters,
}

pub(crate) struct Slot {
    pub(crate) quantity: Quantity,
    /// Latest value.
    pub(crate) value: Value,
    /// Value last published (None: never).
    published: Option<Value>,
    /// When it was last published.
    last_pub: Option<std::time::Instant>,
    /// Changed but held back by `min_interval`.
    pending: bool,
    /// `<prefix>/<device>/<quantity>`.
    pub(crate) topic: Arc<str>,
    /// The counter guard, for lifetime counters (`volume`, `energy_import`, ...).
    pub(crate) guard: Option<CounterGuard>,
    /// The number as its topic last printed it, so the state JSON of the same step copies the
    /// text instead of printing the number again.
    text: model::NumberText,
}

/// Everything the router remembers about one device.
pub(crate) struct DeviceState {
    /// The quantities seen, in order of first appearance (the state JSON's order).
    pub(crate) slots: Vec<Slot>,
    /// The slot checked first for the next reading: the one after the last found. A device sends
    /// its readings in the same order every time, so the search over all slots (one cache line
    /// each) is mostly skipped; only a hint, always checked against the quantity.
    next_slot: usize,
    /// Source timestamp of the latest reading.
    pub(crate) ts: Option<OffsetDateTime>,
    /// Last fresh message (monotonic, for freshness) and its wall-clock time (for reports).
    pub(crate) last_seen: Option<(std::time::Instant, std::time::SystemTime)>,
    /// The transport state the adapter reported last.
    pub(crate) link: Link,
    /// What was last published on `availability`.
    pub(crate) online: bool,
    /// Why the device is offline, for `/readyz` and the one log line.
    pub(crate) reason: Option<String>,
    /// Vendor, model, serial, firmware, name: published on `info` when it changes.
    pub(crate) identity: Identity,
    /// Adapter facts for `/readyz` (transport, dialect, firmware quirks seen).
    pub(crate) details: BTreeMap<&'static str, String>,
    /// Values changed since the last state JSON.
    state_dirty: bool,
    /// When the state JSON was last published (for `min_interval`).
    last_state_pub: Option<std::time::Instant>,
    /// When unchanged values were last republished (for `heartbeat`).
    last_heartbeat: std::time::Instant,
    /// Quantities cleared (empty text) and not set since, so repeated clears publish nothing.
    cleared: Vec<Quantity>,
    /// Counter-guard settings, applied when a quantity is first seen.
    pub(crate) guard: GuardConfig,
    /// A longer freshness window the adapter learned from the device (its announced cadence).
    pub(crate) min_freshness: Duration,
    /// Newest source timestamp that counted as a live sign: a message carrying this timestamp or an
    /// older one (a device or broker replaying what it queued during an outage) does not make the
    /// device alive a second time.
    alive_ts: Option<OffsetDateTime>,
    /// Quantities whose latest reading was implausible (out of range, not finite): the first of a
    /// streak is logged, the rest only counted. Bounded by the quantities the device has.
    implausible: Vec<Quantity>,
    /// Fields (quantity or identity field names) already logged as cut to the text bound: one log
    /// line per field and run, the counter counts every cut.
    truncation_logged: Vec<&'static str>,
    /// `ingest_queue` from the device's config: how many messages may wait for its adapter.
    pub(crate) ingest_queue: Option<usize>,
    /// What the last steps decided to publish, in order; the router takes it after each step
    /// ([`DeviceState::take_out`]).
    pub(crate) out: Vec<Publish>,
    /// This step's payload bytes: each publish's payload is a slice of it (one allocation per step,
    /// not one per publish). The router lets go of it after each step, so an idle device keeps none.
    pub(crate) payloads: BytesMut,
    /// `<base>/state`, built at the first state JSON (the base is fixed for a state's life: a device
    /// whose prefix changes gets a fresh entry, as its quantity topics assume).
    state_topic: Option<Arc<str>>,
}

/// Room taken for a step's payloads at once (an `nrg` step writes ~16 numbers and a state JSON of
/// ~450 bytes).
const PAYLOAD_CHUNK: usize = 1024;
/// Room taken for a step's publishes at once (an `nrg` input makes 16, its state JSON one more).
/// 18 publishes of 56 bytes fit glibc's per-thread cache (requests up to 1 032 bytes); 20 did not,
/// and each step's list took malloc's slow path.
const OUT_ROOM: usize = 18;
/// Room taken for the scratch buffer at once (a state JSON of a dozen quantities fits).
const SCRATCH_ROOM: usize = 512;

impl DeviceState {
    /// A device nothing has been heard from yet.
    pub(crate) fn new(now: Now) -> DeviceState {
        DeviceState {
            slots: Vec::new(),
            next_slot: 0,
            ts: None,
            last_seen: None,
            link: Link::Unknown,
            online: false,
            reason: Some("no reading yet".into()),
            identity: Identity::default(),
            details: BTreeMap::new(),
            state_dirty: false,
            last_state_pub: None,
            last_heartbeat: now.mono,
            cleared: Vec::new(),
            guard: GuardConfig::default(),
            min_freshness: Duration::ZERO,
            alive_ts: None,
            implausible: Vec::new(),
            truncation_logged: Vec::new(),
            ingest_queue: None,
            out: Vec::new(),
            payloads: BytesMut::new(),
            state_topic: None,
        }
    }

    /// The freshness window in force: the configured one, or longer when the device said so.
    pub(crate) fn freshness(&self, spec: &DeviceSpec) -> Duration {
        spec.freshness.max(self.min_freshness)
    }

    #[inline]
    fn push(&mut self, topic: impl Into<Arc<str>>, payload: impl Into<Bytes>, qos: QoS, retain: bool) {
        self.push_publish(Publish { topic: topic.into(), payload: payload.into(), qos, retain });
    }

    #[inline]
    fn push_publish(&mut self, p: Publish) {
        if self.out.capacity() == 0 {
            self.out.reserve(OUT_ROOM);
        }
        self.out.push(p);
    }

    /// What this step decided to publish, handed over whole; the step's payload buffer is let go
    /// with it, so a device keeps no room between steps (with 1 000 devices the room kept by `out`,
    /// a scratch text per device and `payloads` came to ~1.5 MB; the scratch is now one per thread,
    /// see [`with_scratch`]).
    pub(crate) fn take_out(&mut self) -> Vec<Publish> {
        self.payloads = BytesMut::new();
        std::mem::take(&mut self.out)
    }

    /// Everything retained again (after a reconnect): availability, identity, values, state JSON.
    pub(crate) fn republish(&mut self, cx: &Ctx<'_>, now: Now) {
        let availability = if self.online { "online" } else { "offline" };
        self.push(format!("{}/availability", cx.base), availability, QoS::AtLeastOnce, true);
        if self.identity != Identity::default() {
            self.publish_info(cx);
        }
        for i in 0..self.slots.len() {
            self.publish_slot(cx, i, now);
        }
        if !self.slots.is_empty() && cx.settings.state_json {
            self.publish_state(cx, now);
        }
    }

    fn publish_info(&mut self, cx: &Ctx<'_>) {
        let mut info = serde_json::to_value(&self.identity).unwrap_or_default();
        if let serde_json::Value::Object(m) = &mut info {
            m.insert("adapter".into(), cx.spec.adapter.as_str().into());
            m.insert("kind".into(), cx.spec.adapter.device_kind().as_str().into());
        }
        self.push(format!("{}/info", cx.base), info.to_string(), QoS::AtLeastOnce, true);
    }

    #[inline]
    fn publish_slot(&mut self, cx: &Ctx<'_>, i: usize, now: Now) {
        let slot = &mut self.slots[i];
        slot.pending = false;
        slot.last_pub = Some(now.mono);
        if slot.published.as_ref() != Some(&slot.value) {
            slot.published = Some(slot.value.clone());
        }
        if !cx.settings.quantity_topics {
            return;
        }
        let payload = with_scratch(&mut self.payloads, |buf| {
            slot.value.write_plain(slot.quantity.family().decimals, buf);
            if let Value::Number(n) = slot.value {
                slot.text.keep(n, buf);
            }
        });
        let topic = slot.topic.clone();
        self.push_publish(Publish { topic, payload, qos: cx.settings.qos, retain: true });
    }

    fn publish_state(&mut self, cx: &Ctx<'_>, now: Now) {
        self.state_dirty = false;
        self.last_state_pub = Some(now.mono);
        let (ts, slots) = (self.ts, &self.slots);
        let payload = with_scratch(&mut self.payloads, |buf| {
            buf.push_str("{\"ts\":");
            match ts {
                Some(ts) => {
                    buf.push('"');
                    model::format_ts(ts, buf);
                    buf.push('"');
                }
                None => buf.push_str("null"),
            }
            buf.push_str(",\"values\":{");
            for (i, s) in slots.iter().enumerate() {
                if i > 0 {
                    buf.push(',');
                }
                buf.push('"');
                buf.push_str(s.quantity.name());
                buf.push_str("\":");
                match &s.value {
                    Value::Number(n) if let Some(text) = s.text.text_for(*n) => buf.push_str(text),
                    value => value.write_json(s.quantity.family().decimals, buf),
                }
            }
            buf.push_str("}}");
        });
        let topic = self.state_topic(cx.base);
        self.push(topic, payload, cx.settings.qos, true);
    }

    fn state_topic(&mut self, base: &str) -> Arc<str> {
        self.state_topic.get_or_insert_with(|| format!("{base}/state").into()).clone()
    }

    fn publish_event(&mut self, cx: &Ctx<'_>, ts: OffsetDateTime, event: &Event) {
        let mut s = String::with_capacity(128);
        s.push_str("{\"ts\":\"");
        model::format_ts(ts, &mut s);
        s.push_str("\",\"event\":");
        model::write_json_string(&event.name, &mut s);
        s.push_str(",\"data\":");
        s.push_str(&serde_json::Value::Object(event.data.clone()).to_string());
        s.push('}');
        self.push(format!("{}/event", cx.base), s, QoS::AtLeastOnce, false);
    }

    /// Publishes `availability` when it changes; an offline device keeps the newest reason.
    pub(crate) fn set_online(&mut self, cx: &Ctx<'_>, online: bool, reason: Option<String>) {
        if self.online == online {
            if !online && reason.is_some() {
                self.reason = reason;
            }
            return;
        }
        self.online = online;
        let id = &cx.spec.id;
        if online {
            tracing::info!(device = %id, "device online");
            self.reason = None;
        } else {
            let r = reason.unwrap_or_else(|| "stale".into());
            if r == BRIDGE_STOPPED {
                // Going offline because the bridge stops is the plan, not a problem.
                tracing::info!(device = %id, reason = %r, "device offline");
            } else {
                tracing::warn!(device = %id, reason = %clip(&r), "device offline");
            }
            self.reason = Some(r);
        }
        let availability = if online { "online" } else { "offline" };
        self.push(format!("{}/availability", cx.base), availability, QoS::AtLeastOnce, true);
    }

    /// The transport changed: `Down` takes the device offline at once with the reason; `Up` brings
    /// it back when its last reading is still fresh.
    pub(crate) fn set_link(&mut self, cx: &Ctx<'_>, link: Link, now: Now) {
        if self.link == link {
            return;
        }
        match &link {
            Link::Down(reason) => {
                let r = reason.clone();
                self.link = link;
                self.set_online(cx, false, Some(r));
            }
            Link::Up => {
                self.link = link;
                let freshness = self.freshness(cx.spec);
                let fresh = self.last_seen.is_some_and(|(t, _)| now.mono.saturating_duration_since(t) <= freshness);
                if fresh {
                    self.set_online(cx, true, None);
                }
            }
            Link::Unknown => self.link = link,
        }
    }

    /// Routes one update: changed values are queued at once (unless `min_interval` holds them);
    /// the state JSON waits for [`DeviceState::flush`], so a burst of messages yields one snapshot.
    pub(crate) fn apply(&mut self, cx: &Ctx<'_>, mut update: Update, now: Now) {
        self.bound_texts(cx, &mut update);
        if update.fresh
            && let Some(ts) = update.ts
        {
            update.fresh = proves_alive_again(self.alive_ts, ts);
            if update.fresh {
                self.alive_ts = Some(ts);
            }
        }
        if update.fresh {
            self.last_seen = Some((now.mono, now.wall));
        }
        // The wall clock as a timestamp only where a reading carries none (go-e): converting costs a
        // calendar computation, and most readings of the other adapters bring their own.
        let wall = || OffsetDateTime::from(now.wall);
        let ts = update.ts.or_else(|| update.fresh.then(wall));
        let mut changed = false;
        for (q, v) in update.readings {
            // An empty text means "absent" (no reading error, no file): the quantity leaves the
            // state JSON and /metrics, and its retained topic is deleted (empty retained payload).
            if matches!(&v, Value::Text(t) if t.is_empty()) {
                if let Some(i) = self.slots.iter().position(|s| s.quantity == q) {
                    let slot = self.slots.remove(i);
                    if cx.settings.quantity_topics {
                        self.push(slot.topic, Bytes::new(), cx.settings.qos, true);
                    }
                    self.cleared.push(q);
                    changed = true;
                } else if !self.cleared.contains(&q) {
                    // Once per run: the broker may still hold this topic from an earlier run.
                    self.cleared.push(q);
                    if cx.settings.quantity_topics {
                        self.push(format!("{}/{}", cx.base, q.name()), Bytes::new(), cx.settings.qos, true);
                    }
                }
                continue;
            }
            if let Value::Number(n) = v {
                if !q.plausible(n) {
                    self.reject_implausible(cx, q, n, update.fresh, ts.unwrap_or_else(wall));
                    continue;
                }
                if let Some(i) = self.implausible.iter().position(|x| *x == q) {
                    self.implausible.swap_remove(i);
                }
            }
            if let Some(c) = self.cleared.iter().position(|c| *c == q) {
                self.cleared.swap_remove(c);
            }
            let i = match self.find_slot(q) {
                Some(i) => i,
                None => {
                    self.slots.push(Slot {
                        quantity: q,
                        value: v.clone(),
                        published: None,
                        last_pub: None,
                        pending: false,
                        topic: format!("{}/{}", cx.base, q.name()).into(),
                        guard: self.guard.limits_for(q).map(CounterGuard::new),
                        text: model::NumberText::default(),
                    });
                    self.slots.len() - 1
                }
            };
            if let Value::Number(n) = &v
                && let Some(mut guard) = self.slots[i].guard.take()
            {
                let admitted =
                    self.guard_admits(cx, q, &mut guard, *n, now, update.ts, update.fresh, ts.unwrap_or_else(wall));
                self.slots[i].guard = Some(guard);
                if !admitted {
                    continue;
                }
            }
            let slot = &mut self.slots[i];
            // Kept at the precision it is published with: noise below it is no change (no
            // republish, no new state JSON), and /metrics shows what MQTT shows.
            slot.value = match v {
                Value::Number(n) => Value::Number(crate::model::round_to(n, q.family().decimals)),
                other => other,
            };
            if slot.published.as_ref() == Some(&slot.value) && !slot.pending {
                continue;
            }
            changed = true;
            let held = match (cx.spec.min_interval, slot.last_pub) {
                (Some(min), Some(last)) => now.mono.saturating_duration_since(last) < min,
                _ => false,
            };
            if held {
                slot.pending = true;
            } else {
                self.publish_slot(cx, i, now);
            }
        }
        if ts.is_some() && (changed || self.ts.is_none()) {
            self.ts = ts;
        }
        if changed {
            self.state_dirty = true;
        }
        if !cx.settings.state_json {
            self.state_dirty = false;
        }
        if let Some(id) = update.identity
            && self.identity.merge(&id)
        {
            self.publish_info(cx);
        }
        let event_ts = ts.unwrap_or_else(wall);
        for e in &update.events {
            self.publish_event(cx, event_ts, e);
        }
        if update.fresh && self.link != Link::Unknown && !matches!(self.link, Link::Down(_)) {
            self.set_online(cx, true, None);
        } else if update.fresh && self.link == Link::Unknown {
            self.link = Link::Up;
            self.set_online(cx, true, None);
        }
    }

    /// Cuts every device text of `update` (text values, identity fields, event names and data) to
    /// [`untrusted::MAX_TEXT_BYTES`], so no value can make a publish exceed the broker's packet
    /// limit; counts each cut (`parse_errors{reason="text_too_long"}`) and logs the first per field.
    fn bound_texts(&mut self, cx: &Ctx<'_>, update: &mut Update) {
        let mut cut: Vec<(&'static str, usize)> = Vec::new();
        for (q, v) in &mut update.readings {
            if let Value::Text(t) = v {
                let len = t.len();
                if untrusted::bound_text(t) {
                    cut.push((q.name(), len));
                }
            }
        }
        if let Some(id) = &mut update.identity {
            for (field, value) in [
                ("vendor", &mut id.vendor),
                ("model", &mut id.model),
                ("serial", &mut id.serial),
                ("firmware", &mut id.firmware),
                ("name", &mut id.name),
            ] {
                if let Some(v) = value {
                    let len = v.len();
                    if untrusted::bound_string(v) {
                        cut.push((field, len));
                    }
                }
            }
        }
        for e in &mut update.events {
            let len = e.name.len();
            if untrusted::bound_text(&mut e.name) {
                cut.push(("event", len));
            }
            if untrusted::bound_json_map(&mut e.data) {
                cut.push(("event_data", 0));
            }
        }
        for (field, len) in cut {
            cx.counters.parse_error(TEXT_TOO_LONG);
            if !self.truncation_logged.contains(&field) {
                self.truncation_logged.push(field);
                tracing::warn!(device = %cx.spec.id, field, bytes = len, limit = untrusted::MAX_TEXT_BYTES,
                    "device text longer than the bridge republishes; cut, marked `{}` and counted \
                     (parse_errors reason {TEXT_TOO_LONG}; logged once per field)", untrusted::TRUNCATED_MARKER);
            }
        }
    }

    /// The slot of `q`, looking first where the hint says.
    fn find_slot(&mut self, q: Quantity) -> Option<usize> {
        let hinted = self.slots.get(self.next_slot).is_some_and(|s| s.quantity == q);
        let i = if hinted { Some(self.next_slot) } else { self.slots.iter().position(|s| s.quantity == q) };
        // A new slot is pushed at the end: the hint then points past it, which `get` turns away.
        self.next_slot = i.map_or(self.slots.len() + 1, |i| i + 1);
        i
    }

    /// Keeps an implausible number (outside the quantity's plausible range, or not finite) out:
    /// counted in `readings_rejected` (`out_of_range`, `not_finite`), logged once per streak, and
    /// reported as a `reading_rejected` event when live. The last good value stays.
    fn reject_implausible(&mut self, cx: &Ctx<'_>, q: Quantity, value: f64, live: bool, ts: OffsetDateTime) {
        let reason = if value.is_finite() { "out_of_range" } else { "not_finite" };
        cx.counters.rejected(reason);
        if !self.implausible.contains(&q) {
            self.implausible.push(q);
            let (lo, hi) = q.def().range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
            tracing::warn!(device = %cx.spec.id, quantity = q.name(), value, min = lo, max = hi, reason,
                "implausible reading rejected; the last good value stays (logged once until a good reading)");
        }
        if live {
            let event =
                Event::new("reading_rejected").with("quantity", q.name()).with("value", value).with("reason", reason);
            self.publish_event(cx, ts, &event);
        }
    }

    /// Runs the counter guard on one reading; false keeps it out (counted, logged once per streak,
    /// and reported as a `reading_rejected` event). Allocates only when it rejects.
    #[allow(clippy::too_many_arguments)]
    fn guard_admits(
        &mut self,
        cx: &Ctx<'_>,
        q: Quantity,
        guard: &mut CounterGuard,
        value: f64,
        now: Now,
        source_ts: Option<OffsetDateTime>,
        live: bool,
        ts: OffsetDateTime,
    ) -> bool {
        match guard.check(value, now.mono, source_ts, live) {
            Verdict::Baseline | Verdict::Accept => true,
            Verdict::NewLevel { previous } => {
                tracing::info!(device = %cx.spec.id, quantity = q.name(), value, previous,
                    "counter guard: readings agree on a new level; accepted");
                true
            }
            Verdict::Reject { reason, accepted, agreeing, needed } => {
                cx.counters.rejected(reason.reason());
                if guard.first_of_streak() {
                    tracing::warn!(device = %cx.spec.id, quantity = q.name(), value, accepted, reason = reason.reason(),
                        "counter guard rejected a reading; it becomes the new level after {needed} agreeing readings, \
                         or publish to {}/{}/reset to accept the next one", cx.base, q.name());
                }
                if live {
                    let event = Event::new("reading_rejected")
                        .with("quantity", q.name())
                        .with("value", value)
                        .with("accepted", accepted)
                        .with("reason", reason.reason())
                        .with("agreeing", agreeing)
                        .with("needed", needed);
                    self.publish_event(cx, ts, &event);
                }
                false
            }
        }
    }

    /// Applies new counter-guard settings, keeping each guard's state.
    pub(crate) fn configure_guard(&mut self, config: &GuardConfig) {
        self.guard = config.clone();
        for slot in &mut self.slots {
            match (config.limits_for(slot.quantity), &mut slot.guard) {
                (Some(l), Some(g)) => g.set_limits(l),
                (l, g) => *g = l.map(CounterGuard::new),
            }
        }
    }

    /// Queues the state JSON if values changed since the last one (and `min_interval` allows).
    pub(crate) fn flush(&mut self, cx: &Ctx<'_>, now: Now) {
        if !self.state_dirty {
            return;
        }
        let held = match (cx.spec.min_interval, self.last_state_pub) {
            (Some(min), Some(last)) => now.mono.saturating_duration_since(last) < min,
            _ => false,
        };
        if !held {
            self.publish_state(cx, now);
        }
    }

    /// Periodic work: held-back values, heartbeats, staleness.
    pub(crate) fn tick(&mut self, cx: &Ctx<'_>, now: Now) {
        let since = |t: std::time::Instant| now.mono.saturating_duration_since(t);
        // Safety net for adapters that did not flush (and for min_interval holds).
        if self.state_dirty
            && cx.settings.state_json
            && self.last_state_pub.is_none_or(|l| since(l) >= cx.spec.min_interval.unwrap_or_default())
        {
            self.publish_state(cx, now);
        }
        if let Some(min) = cx.spec.min_interval {
            for i in 0..self.slots.len() {
                let s = &self.slots[i];
                if s.pending && s.last_pub.is_none_or(|l| since(l) >= min) {
                    self.publish_slot(cx, i, now);
                }
            }
            if self.state_dirty && cx.settings.state_json && self.last_state_pub.is_none_or(|l| since(l) >= min) {
                self.publish_state(cx, now);
            }
        }
        if let Some(hb) = cx.spec.heartbeat
            && self.online
            && since(self.last_heartbeat) >= hb
        {
            self.last_heartbeat = now.mono;
            for i in 0..self.slots.len() {
                self.publish_slot(cx, i, now);
            }
            if cx.settings.state_json && !self.slots.is_empty() {
                self.publish_state(cx, now);
            }
        }
        if self.online {
            let freshness = self.freshness(cx.spec);
            let stale = self.last_seen.is_none_or(|(t, _)| since(t) > freshness);
            if stale {
                let reason = format!("no reading for {}", crate::config::types::format_duration(freshness));
                self.set_online(cx, false, Some(reason));
            }
        }
    }

    /// Forgets the counter guard's baseline of `q`: the next reading is accepted as is (a replaced
    /// meter). Returns false when `q` is not a guarded quantity of this device.
    pub(crate) fn reset_guard(&mut self, q: Quantity) -> bool {
        if self.guard.limits_for(q).is_none() {
            return false;
        }
        if let Some(slot) = self.slots.iter_mut().find(|s| s.quantity == q)
            && let Some(g) = &mut slot.guard
        {
            g.reset();
        }
        true
    }
}

/// Whether a live message with source timestamp `ts` is a sign of life, given the newest source
/// timestamp seen (`alive`). A replay of readings handled before (a client flushing what it queued
/// during an outage) carries older timestamps than the newest one and proves nothing about now. The
/// same timestamp again does (a gateway polled again before its meter sent a new telegram answers
/// with the same reading), and so does a device clock set back by more than an hour (NTP after a
/// reboot): that is a new start, not a replay.
pub(crate) fn proves_alive_again(alive: Option<OffsetDateTime>, ts: OffsetDateTime) -> bool {
    match alive {
        None => true,
        Some(alive) => ts >= alive || alive - ts > time::Duration::hours(1),
    }
}

thread_local! {
    /// The text a step prints a payload into before it is copied into the step's payload buffer:
    /// one per thread, shared by every device stepped on it, and kept between steps (taking it
    /// afresh each step cost ~460 instructions per go-e `nrg` input; one per device would keep
    /// ~1 KiB per device).
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Scratch kept between steps up to this size; a larger one (a state JSON of many long texts) is
/// let go after use, so one such payload does not hold its room for the thread's life.
const SCRATCH_KEPT: usize = 16 * 1024;

/// Prints a payload with `print` into the thread's scratch text and returns it as a slice of
/// `payloads` (the step's one payload allocation). The scratch takes room for a whole state JSON at
/// its first use, so it does not grow by doubling from nothing.
fn with_scratch(payloads: &mut BytesMut, print: impl FnOnce(&mut String)) -> Bytes {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        if buf.capacity() == 0 {
            buf.reserve(SCRATCH_ROOM);
        }
        print(buf);
        if payloads.capacity() < buf.len() {
            payloads.reserve(buf.len().max(PAYLOAD_CHUNK));
        }
        payloads.extend_from_slice(buf.as_bytes());
        if buf.capacity() > SCRATCH_KEPT {
            *buf = String::new();
        }
        payloads.split().freeze()
    })
}

#[cfg(test)]
mod tests;

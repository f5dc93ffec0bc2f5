//! The connection's write after a read, against a minimal broker of the test's own (a loopback
//! socket that answers CONNECT with CONNACK and records every byte the connection writes), and the
//! rules of a turn that reads on while behind ([`Turn`]).

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Attempt, Connection, MAX_BATCH, MAX_READS_PER_TURN, Turn};
use crate::metrics::Metrics;
use crate::mqtt::outbox::Pending;
use crate::mqtt::{MqttHandle, MqttSettings, Outgoing, QoS, Shared};

/// A connected connection task's state, a handle on it, and the broker's end of its socket.
async fn connected() -> (Connection, MqttHandle, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mqtt://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let settings = MqttSettings::from_url(&url, "collect-test").unwrap();
    let eventloop = crate::mqtt::event_loop(&settings).unwrap();
    let (out_tx, out_rx) = mpsc::channel(1024);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (link_tx, _link_rx) = mpsc::unbounded_channel();
    let shared = Shared::new(out_tx, 1024, control_tx, link_tx, Metrics::detached());
    let mut connection = Connection::new(shared.clone(), eventloop, settings, out_rx, control_rx);
    let broker = async {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut connect = [0; 256];
        let n = socket.read(&mut connect).await.unwrap();
        assert_eq!(connect[0], 0x10, "CONNECT first ({n} bytes)");
        socket.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
        socket
    };
    let cancel = CancellationToken::new();
    let (attempt, socket) = tokio::join!(connection.connect(&cancel), broker);
    assert!(matches!(attempt, Attempt::Up), "connected");
    (connection, MqttHandle { shared }, socket)
}

fn outgoing(topic: &str, payload: &'static str) -> Outgoing {
    Outgoing {
        topic: topic.into(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: QoS::AtMostOnce,
        retain: true,
    }
}

/// Reads QoS 0 PUBLISH packets (all small here: one length byte) until `count` arrived; returns
/// their payloads in order.
async fn payloads(socket: &mut TcpStream, count: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while out.len() < count {
        let mut chunk = [0; 4096];
        let n = tokio::time::timeout_at(deadline, socket.read(&mut chunk)).await.expect("publishes arrive").unwrap();
        assert!(n > 0, "the connection stays open");
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 2 && buf.len() >= 2 + usize::from(buf[1]) {
            let packet: Vec<u8> = buf.drain(..2 + usize::from(buf[1])).collect();
            assert_eq!(packet[0] & 0xf0, 0x30, "a PUBLISH");
            let topic_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            out.push(String::from_utf8(packet[4 + topic_len..].to_vec()).unwrap());
        }
    }
    out
}

/// Writes everything that waits, as the connection's later turns would.
async fn drain(connection: &mut Connection) {
    while let Some((first, room)) = connection.ready_now() {
        connection.write_batch(first, room).await.unwrap();
    }
}

#[tokio::test]
async fn what_the_lanes_published_is_written_at_once_when_nothing_older_waits() {
    let (mut connection, handle, mut broker) = connected().await;
    connection.write_after_read(vec![outgoing("dev/power", "new")]).await.unwrap();
    assert_eq!(payloads(&mut broker, 1).await, ["new"]);
    let metrics = &handle.shared.metrics;
    assert_eq!(metrics.messages_published.get(), 1);
    assert_eq!(metrics.publish_queue_depth.get(), 0, "never queued");
    assert!(connection.ready_now().is_none(), "nothing left to write");
}

#[tokio::test]
async fn what_the_lanes_published_goes_behind_what_was_queued_before_the_read() {
    let (mut connection, handle, mut broker) = connected().await;
    handle.publish_batch(vec![outgoing("dev/power", "older")]);
    connection.write_after_read(vec![outgoing("dev/power", "newer")]).await.unwrap();
    drain(&mut connection).await;
    assert_eq!(payloads(&mut broker, 2).await, ["older", "newer"], "a retained topic's last value is the newer");
    assert_eq!(handle.shared.metrics.publish_queue_depth.get(), 0);
    assert_eq!(handle.shared.metrics.messages_published.get(), 2);
}

#[tokio::test]
async fn what_the_lanes_published_goes_behind_what_the_outbox_holds() {
    let (mut connection, handle, mut broker) = connected().await;
    let held =
        Pending { topic: "dev/power".into(), payload: Bytes::from_static(b"held"), qos: QoS::AtMostOnce, retain: true };
    connection.outbox.requeue_front(vec![held]);
    handle.shared.metrics.publish_queue_depth.inc();
    connection.write_after_read(vec![outgoing("dev/power", "newer")]).await.unwrap();
    drain(&mut connection).await;
    assert_eq!(payloads(&mut broker, 2).await, ["held", "newer"]);
    assert_eq!(handle.shared.metrics.publish_queue_depth.get(), 0);
}

#[tokio::test]
async fn what_does_not_fit_in_one_flush_leads_the_outbox_and_is_counted_as_waiting() {
    let (mut connection, handle, mut broker) = connected().await;
    // One flush takes at most the batch cap, and no more than the QoS 1 window's room.
    let cap = connection.room().min(MAX_BATCH);
    let many: Vec<Outgoing> = (0..MAX_BATCH + 3).map(|_| outgoing("dev/power", "x")).collect();
    connection.write_after_read(many).await.unwrap();
    let left = MAX_BATCH + 3 - cap;
    assert_eq!(connection.outbox.len(), left, "the flush's cap held");
    assert_eq!(handle.shared.metrics.publish_queue_depth.get(), left as i64);
    handle.publish_batch(vec![outgoing("dev/power", "later")]);
    drain(&mut connection).await;
    let got = payloads(&mut broker, MAX_BATCH + 4).await;
    assert_eq!(got.last().map(String::as_str), Some("later"), "what waited went first");
    assert_eq!(handle.shared.metrics.publish_queue_depth.get(), 0);
    assert_eq!(handle.shared.metrics.messages_published.get(), (MAX_BATCH + 4) as u64);
}

#[test]
fn a_turn_whose_first_read_found_less_than_a_quota_does_not_read_on() {
    let turn = Turn::after_first_read(false, MAX_BATCH);
    assert!(!turn.reads_on(0));
    assert!(!turn.behind(), "a read that kept up starts no holding");
}

#[test]
fn a_turn_reads_on_until_a_read_finds_less_than_its_quota() {
    let mut turn = Turn::after_first_read(true, MAX_BATCH);
    assert!(turn.reads_on(0));
    turn.read(true);
    assert!(turn.reads_on(17));
    turn.read(false);
    assert!(!turn.reads_on(17), "the socket had no more than that read took");
}

#[test]
fn a_turn_whose_last_read_found_less_than_a_quota_still_counts_as_behind() {
    let mut turn = Turn::after_first_read(true, MAX_BATCH);
    turn.read(true);
    turn.read(false);
    assert!(turn.behind(), "read holding starts on the turn's first read, not its last");
}

#[test]
fn a_turn_stops_reading_on_once_the_lanes_published_a_batch() {
    let turn = Turn::after_first_read(true, MAX_BATCH);
    assert!(turn.reads_on(MAX_BATCH - 1));
    assert!(!turn.reads_on(MAX_BATCH), "one flush carries at most a batch");
}

#[test]
fn a_turn_stops_reading_on_after_its_most_reads_even_when_nothing_was_published() {
    let mut turn = Turn::after_first_read(true, MAX_BATCH);
    let mut reads = 1;
    while turn.reads_on(0) {
        turn.read(true);
        reads += 1;
    }
    assert_eq!(reads, MAX_READS_PER_TURN, "pings and other tasks get their turn");
}

#[test]
fn a_turn_collects_no_more_than_one_write_batch_takes() {
    let turn = Turn::after_first_read(true, 100);
    assert!(turn.reads_on(99));
    assert!(!turn.reads_on(100), "what one batch cannot write would wait in the queue");
}

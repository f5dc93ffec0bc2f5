//! The saturation phase's traffic: a publisher and a consumer lean enough that the broker, not
//! the bench, sets the pace.
//!
//! "The broker's own throughput" is what the broker routes when it is the bottleneck. The bench's
//! regular clients (an [`hlbridge::surface::mqtt::MqttHandle`] each, on this process's runtime)
//! could not always keep Mosquitto busy: on some guests the raw phase ran at the publisher's pace
//! with the broker busy 0.5–0.8 of a core, and the ratio printed against it read higher than the
//! broker allows. These clients write pre-encoded packets in 64 KiB chunks and count what comes
//! back by topic alone ([`crate::wire`]), a few tens of nanoseconds per message, and both phases
//! use the same pair, so the bridge is the only difference between them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{connect_packet, packet, publish_packet, publish_parts, subscribe_packet};

/// How much the publisher writes per socket write, and the consumer reads at most.
const CHUNK: usize = 64 * 1024;

/// How long the consumer lets messages gather after a short read.
const GATHER: Duration = Duration::from_millis(1);

/// Connects as `client_id` and waits for the broker's CONNACK; `then` is sent after the CONNECT.
async fn connect(port: u16, client_id: &str, then: &[u8]) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).await.context("connecting to the broker")?;
    sock.set_nodelay(true)?;
    let mut out = Vec::new();
    connect_packet(&mut out, client_id);
    out.extend_from_slice(then);
    sock.write_all(&out).await?;
    let mut buf = Vec::with_capacity(CHUNK);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((kind, _, len)) = packet(&buf) {
            if kind >> 4 != 2 {
                bail!("{client_id}: expected CONNACK, got packet type {}", kind >> 4);
            }
            buf.drain(..len);
            return Ok((sock, buf));
        }
        read_some(&mut sock, &mut buf, deadline, client_id).await?;
    }
}

async fn read_some(sock: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant, who: &str) -> anyhow::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, sock.read_buf(buf)).await {
        Ok(Ok(0)) => bail!("{who}: the broker closed the connection"),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("{who}: no answer from the broker"),
    }
}

/// A subscriber that counts the publishes on one topic.
pub(crate) struct Consumer {
    /// Its connection, subscribed.
    sock: TcpStream,
    /// Bytes read but not yet split into packets.
    buf: Vec<u8>,
}

impl Consumer {
    /// Connects and subscribes to `filter`, and returns once the broker acknowledged it.
    pub(crate) async fn subscribe(port: u16, client_id: &str, filter: &str) -> anyhow::Result<Consumer> {
        let mut sub = Vec::new();
        subscribe_packet(&mut sub, filter);
        let (mut sock, mut buf) = connect(port, client_id, &sub).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((kind, _, len)) = packet(&buf) {
                buf.drain(..len);
                if kind >> 4 == 9 {
                    return Ok(Consumer { sock, buf });
                }
                continue;
            }
            read_some(&mut sock, &mut buf, deadline, client_id).await?;
        }
    }

    /// Counts publishes on `topic` until `expect` arrived or none came for `quiet`: how many, and
    /// when the last one arrived.
    pub(crate) async fn count(&mut self, topic: &str, expect: u64, quiet: Duration) -> (u64, Option<Instant>) {
        let (mut got, mut last) = (0u64, None);
        loop {
            let (mut at, before) = (0, got);
            while let Some((kind, body, len)) = packet(&self.buf[at..]) {
                if kind >> 4 == 3
                    && publish_parts(&self.buf[at + body.0..at + body.1]).is_some_and(|(t, _)| t == topic.as_bytes())
                {
                    got += 1;
                }
                at += len;
            }
            self.buf.drain(..at);
            if got > before {
                last = Some(Instant::now());
            }
            if got >= expect {
                return (got, last);
            }
            if self.buf.capacity() - self.buf.len() < CHUNK {
                self.buf.reserve(CHUNK);
            }
            match tokio::time::timeout(quiet, self.sock.read_buf(&mut self.buf)).await {
                // A consumer that reads as soon as anything arrives is woken for nearly every
                // packet (the broker writes them one by one), and on these VMs a wake-up costs
                // more than the broker's routing. Letting a millisecond's worth gather instead
                // takes one wake-up per millisecond; the last arrival is then late by at most that,
                // in both phases alike (under 0.2 % of a quick run's phase).
                Ok(Ok(n)) if n > 0 => {
                    if n < CHUNK / 4 {
                        tokio::time::sleep(GATHER).await;
                    }
                }
                _ => return (got, last),
            }
        }
    }
}

/// Connects as `client_id` and publishes `count` QoS 0 messages, message `i` being `make(i)`
/// (topic, payload), as fast as the broker reads them. Returns the connection, to be dropped
/// only once what it sent has been counted (a broker may drop what a closed client sent last).
pub(crate) async fn flood(
    port: u16,
    client_id: &str,
    count: u64,
    mut make: impl FnMut(u64) -> (&'static str, String),
) -> anyhow::Result<TcpStream> {
    let (mut sock, _) = connect(port, client_id, &[]).await?;
    let mut out = Vec::with_capacity(CHUNK + 1024);
    for i in 0..count {
        let (topic, payload) = make(i);
        publish_packet(&mut out, topic, payload.as_bytes(), false);
        if out.len() >= CHUNK {
            sock.write_all(&out).await?;
            out.clear();
        }
    }
    sock.write_all(&out).await?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_through_the_broker_is_counted_whole_and_only_on_the_asked_topic() {
        let port = crate::free_port().expect("a free port");
        let (_broker, _, _) = crate::start_broker(port, false).await.expect("a broker");
        let mut sink = Consumer::subscribe(port, "sat-test-sink", "sat/#").await.expect("subscribed");
        let (sock, (got, last)) = tokio::join!(
            flood(port, "sat-test-load", 20_000, |i| (if i % 2 == 0 { "sat/a" } else { "sat/b" }, i.to_string())),
            // Asks for more than will come, so the count ends by going quiet: every `sat/a`
            // arrived, and none of the `sat/b` beside them was counted.
            sink.count("sat/a", 20_000, Duration::from_secs(2)),
        );
        sock.expect("the flood was written");
        assert_eq!(got, 10_000);
        assert!(last.is_some());
    }
}

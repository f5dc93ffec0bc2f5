//! The floor: the least any MQTT bridge can spend on this machine for a go-e `nrg` input.
//!
//! A relay with no mapping, no state and no protocol library, on the same kind of runtime as the
//! bridge (tokio, current thread, epoll): it subscribes to the charger's `nrg` topic and answers
//! each input with the same 17 retained publishes the bridge makes (16 quantity topics carrying the
//! array's fields as they came, and a state payload of the bridge's size), written with one socket
//! write per read, as the bridge does. What it costs per input is the operating system's share
//! (one wake-up, one read, one write that wakes the broker) plus a minimum of user-space work;
//! `hlbridge-bench` runs it beside the bridge in the same run, so "bridge − floor" is what
//! hlbridge's own code costs on top of that, independent of how expensive system calls are on the
//! machine at hand (they differ several-fold between VMs of one class).
//!
//! Hand-written MQTT on purpose ([`crate::wire`]): a protocol library would be part of what the
//! floor is meant to exclude.

use std::io::Write as _;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::{connect_packet, packet, publish_packet, publish_parts, subscribe_packet};

/// The topic the floor relay subscribes to (the bench's one charger).
pub(crate) const INPUT: &str = "go-eCharger/000000/nrg";
/// The prefix the floor relay publishes under; `<PREFIX>/power` carries the `nrg` total power (the
/// bench's sequence number) back, as the bridge's `bench/ev0/power` does.
pub(crate) const PREFIX: &str = "floor/ev0";

/// The quantity name of each `nrg` index, from the go-e adapter's own table: the relay publishes
/// each field under the name the bridge gives it, so both write the same topic bytes.
fn field_names() -> Vec<String> {
    hlbridge::surface::adapters::goe::nrg_names().iter().map(|n| n.unwrap_or_default().to_owned()).collect()
}

/// Size of the bridge's state JSON for one `nrg` (measured: about 700 bytes with timestamps).
const STATE_BYTES: usize = 700;

/// Runs the relay against the broker on `port` until the broker closes the connection. Prints
/// `ready` on stdout once subscribed.
pub(crate) fn run(port: u16) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(relay(port))
}

async fn relay(port: u16) -> anyhow::Result<()> {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.context("connecting to the broker")?;
    sock.set_nodelay(true)?;
    let mut out = Vec::with_capacity(4096);
    connect_packet(&mut out, "hlbridge-bench-floor");
    subscribe_packet(&mut out, INPUT);
    sock.write_all(&out).await?;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut subscribed = false;
    let state = vec![b'x'; STATE_BYTES];
    let fields = field_names();
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(16 * 1024);
        }
        if sock.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        out.clear();
        let mut at = 0;
        while let Some((kind, body, next)) = packet(&buf[at..]) {
            let body = &buf[at + body.0..at + body.1];
            at += next;
            match kind >> 4 {
                9 if !subscribed => {
                    subscribed = true;
                    println!("ready");
                    std::io::stdout().flush()?;
                }
                3 => relay_one(body, &fields, &state, &mut out),
                _ => {}
            }
        }
        buf.drain(..at);
        if !out.is_empty() {
            sock.write_all(&out).await?;
        }
    }
}

/// One `nrg` publish (QoS 0 body: topic, payload) → the 17 publishes, appended to `out`.
fn relay_one(body: &[u8], fields: &[String], state: &[u8], out: &mut Vec<u8>) {
    let Some((_, payload)) = publish_parts(body) else { return };
    let inner = payload.strip_prefix(b"[").and_then(|p| p.strip_suffix(b"]")).unwrap_or(payload);
    let mut topic = String::with_capacity(32);
    for (name, value) in fields.iter().zip(inner.split(|&b| b == b',')) {
        topic.clear();
        topic.push_str(PREFIX);
        topic.push('/');
        topic.push_str(name);
        publish_packet(out, &topic, value, true);
    }
    publish_packet(out, &format!("{PREFIX}/state"), state, true);
}

/// Spawns the relay as a child process of the bench (`--floor-child PORT`) and waits until it is
/// subscribed.
pub(crate) fn spawn(port: u16) -> anyhow::Result<std::process::Child> {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--floor-child")
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("spawning the floor relay")?;
    let Some(stdout) = child.stdout.take() else { bail!("no stdout from the floor relay") };
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        bail!("the floor relay did not subscribe");
    }
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nrg_publish_becomes_sixteen_field_publishes_and_a_state_one() {
        let mut input = Vec::new();
        publish_packet(&mut input, INPUT, b"[230.1,231,232,0,1,2,3,4,5,6,7,42,0.9,0.9,0.9,0]", false);
        let (_, body, len) = packet(&input).expect("a whole packet");
        assert_eq!(len, input.len());
        let mut out = Vec::new();
        relay_one(&input[body.0..body.1], &field_names(), b"{}", &mut out);
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((kind, body, next)) = packet(&out[at..]) {
            assert_eq!(kind, 0x31);
            let (topic, payload) = publish_parts(&out[at + body.0..at + body.1]).expect("a publish body");
            seen.push((String::from_utf8_lossy(topic).into_owned(), String::from_utf8_lossy(payload).into_owned()));
            at += next;
        }
        assert_eq!(at, out.len());
        assert_eq!(seen.len(), 17);
        assert_eq!(seen[0], ("floor/ev0/voltage_l1".into(), "230.1".into()));
        assert_eq!(seen[11], ("floor/ev0/power".into(), "42".into()));
        assert_eq!(seen[16], ("floor/ev0/state".into(), "{}".into()));
    }
}

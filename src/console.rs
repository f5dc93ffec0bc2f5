//! The live terminal view (`output.console: true`, on in the demo): subscribes to the unified topics
//! and shows, per device, every quantity with its unit and how fresh it is, plus the latest events.
//! On a terminal it redraws in place twice a second; otherwise it prints each topic as it arrives.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::Quantity;
use crate::mqtt::MqttHandle;

/// Latest payload per topic.
struct Seen {
    payload: String,
    at: Instant,
}

/// Runs until `cancel`.
pub async fn run(config: Config, mqtt: MqttHandle, http: Option<SocketAddr>, cancel: CancellationToken) {
    let mut prefixes: Vec<String> = vec![config.output.prefix.clone()];
    prefixes.extend(config.routes.iter().map(|r| r.prefix.clone()));
    prefixes.extend(config.devices.values().filter_map(|d| d.common.prefix.clone()));
    prefixes.sort();
    prefixes.dedup();
    let filters: Vec<String> = prefixes.iter().map(|p| format!("{p}/#")).collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut rx = mqtt.subscribe_many(&refs, 8192).await;
    let tty = std::io::stdout().is_terminal();
    let mut topics: BTreeMap<String, Seen> = BTreeMap::new();
    let mut events: VecDeque<String> = VecDeque::new();
    let mut redraw = tokio::time::interval(Duration::from_millis(500));
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let payload = String::from_utf8_lossy(&msg.payload).into_owned();
                if msg.topic.ends_with("/event") {
                    events.push_front(format!("{}  {}", time_of_day(), payload));
                    events.truncate(8);
                }
                if !tty {
                    println!("{} {}", msg.topic, payload);
                    continue;
                }
                topics.insert(msg.topic, Seen { payload, at: Instant::now() });
            }
            _ = redraw.tick(), if tty => {
                draw(&config, &mqtt, http, &topics, &events, started);
            }
        }
    }
}

fn time_of_day() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!("{:02}:{:02}:{:02}Z", now.hour(), now.minute(), now.second())
}

fn draw(
    config: &Config,
    mqtt: &MqttHandle,
    http: Option<SocketAddr>,
    topics: &BTreeMap<String, Seen>,
    events: &VecDeque<String>,
    started: Instant,
) {
    let mut out = String::with_capacity(8192);
    out.push_str("\x1b[H\x1b[2J");
    let conn = if mqtt.state().connected { "\x1b[32mconnected\x1b[0m" } else { "\x1b[31mdisconnected\x1b[0m" };
    out.push_str(&format!(
        "\x1b[1mhlbridge\x1b[0m  broker {} ({conn})  up {}s  Ctrl-C to stop\n",
        config.mqtt.url,
        started.elapsed().as_secs()
    ));
    if let Some(a) = http {
        out.push_str(&format!("metrics http://{a}/metrics   readiness http://{a}/readyz\n"));
    }
    out.push('\n');
    let mut by_device: BTreeMap<&str, Vec<(&str, &Seen)>> = BTreeMap::new();
    for (topic, seen) in topics {
        let Some((base, leaf)) = topic.rsplit_once('/') else {
            continue;
        };
        by_device.entry(base).or_default().push((leaf, seen));
    }
    for (base, leaves) in &by_device {
        if base.ends_with("/bridge") {
            continue;
        }
        let avail = leaves.iter().find(|(l, _)| *l == "availability").map(|(_, s)| s.payload.as_str()).unwrap_or("?");
        let colour = if avail == "online" { "\x1b[32m" } else { "\x1b[31m" };
        out.push_str(&format!("\x1b[1m{base}\x1b[0m  {colour}{avail}\x1b[0m\n"));
        for (leaf, seen) in leaves {
            if matches!(*leaf, "availability" | "state" | "info" | "event" | "result") {
                continue;
            }
            let unit = Quantity::named(leaf).map(|q| q.family().unit).unwrap_or("");
            let age = seen.at.elapsed().as_secs_f32();
            let hl = if age < 1.0 { "\x1b[1;33m" } else { "" };
            out.push_str(&format!("  {leaf:<22} {hl}{:>14}\x1b[0m {unit:<5} {age:>5.1}s ago\n", seen.payload));
        }
        out.push('\n');
    }
    if !events.is_empty() {
        out.push_str("\x1b[1mevents\x1b[0m\n");
        for e in events {
            out.push_str(&format!("  {e}\n"));
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

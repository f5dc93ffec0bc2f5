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
                if let Some(device) = msg.topic.strip_suffix("/event") {
                    events.push_front(event_line(device, &payload));
                    events.truncate(6);
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

/// One short line per event: time, device, name and the first data fields, cut to fit 100 columns.
fn event_line(device: &str, payload: &str) -> String {
    let device = device.rsplit('/').next().unwrap_or(device);
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let name = v["event"].as_str().unwrap_or("?");
    let mut data = String::new();
    if let Some(map) = v["data"].as_object() {
        for (k, val) in map.iter().filter(|(_, val)| !val.is_object() && !val.is_array()) {
            let val = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            data.push_str(&format!(" {k}={val}"));
        }
    }
    let mut line = format!("{}  {device:<20} {name:<22}{data}", time_of_day());
    if line.chars().count() > 100 {
        line = line.chars().take(99).collect::<String>() + "…";
    }
    line
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
        // Two columns of `name value unit`, so six devices fit one screen.
        let cells: Vec<String> = leaves
            .iter()
            .filter(|(leaf, _)| !matches!(*leaf, "availability" | "state" | "info" | "event" | "result"))
            .map(|(leaf, seen)| {
                let unit = Quantity::lookup(leaf).map(|q| q.family().unit).unwrap_or("");
                let fresh = seen.at.elapsed() < std::time::Duration::from_secs(1);
                let (hl, end) = if fresh { ("\x1b[1;33m", "\x1b[0m") } else { ("", "") };
                let mut value: String = seen.payload.chars().take(18).collect();
                if seen.payload.chars().count() > 18 {
                    value.push('…');
                }
                format!("  {leaf:<24} {hl}{value:>19}{end} {unit:<5}")
            })
            .collect();
        for pair in cells.chunks(2) {
            out.push_str(&pair.join(" "));
            out.push('\n');
        }
        out.push('\n');
    }
    if !events.is_empty() {
        out.push_str("\x1b[1mevents\x1b[0m\n");
        for e in events {
            out.push_str(&format!("  {e}\n"));
        }
    }
    // The status lines go last: when the screen is too short, the top scrolls away, not these.
    let conn = if mqtt.state().connected { "\x1b[32mconnected\x1b[0m" } else { "\x1b[31mdisconnected\x1b[0m" };
    out.push_str(&format!(
        "\x1b[1mhlbridge\x1b[0m  broker {} ({conn})  up {}s  Ctrl-C to stop\n",
        config.mqtt.url,
        started.elapsed().as_secs()
    ));
    if let Some(a) = http {
        out.push_str(&format!("metrics http://{a}/metrics   readiness http://{a}/readyz\n"));
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

//! `hlbridge-bench`: the in-repo benchmark. It spawns Mosquitto (or uses the embedded broker when
//! Mosquitto is not installed) and the bridge as a child process, drives device traffic with
//! sequence numbers from an in-process load generator, subscribes to the unified topics, and
//! reports, as a table and as JSON:
//! - the raw one-hop broker latency (the physical floor) and the bridge path latency at a fixed rate;
//! - bridge CPU time per input message (from `/proc/<pid>/task/*/schedstat`), RSS and peak RSS;
//! - throughput and loss at saturation for a one-output mapping, and the broker's own limit (both
//!   phases driven and counted by [`saturate`]'s lean pair, so the broker sets their pace); the
//!   CPU per message of the broker (Mosquitto's process, or the embedded broker's threads) and of
//!   the whole machine in both phases, and the ceilings on the ratio they set where they saturate;
//! - start-up time to first publish, and memory with 1, 100 and 1 000 configured devices.
//!
//! Run: `cargo run --release --bin hlbridge-bench` (add `-- --quick` for a short run,
//! `-- --json FILE` to write the JSON report to a file, `-- --embedded-broker` to run against the
//! embedded broker even where Mosquitto is installed). `-- --compare-node-red DIR` instead runs the
//! Node-RED comparison (see [`node_red`]) with Node-RED 4 installed in DIR.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{self, MqttHandle, MqttSettings, QoS};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[path = "bench/floor.rs"]
mod floor;
#[path = "bench/node_red.rs"]
mod node_red;
#[path = "bench/saturate.rs"]
mod saturate;
#[path = "bench/wire.rs"]
mod wire;

struct Opts {
    quick: bool,
    json_out: Option<PathBuf>,
    child_config: Option<PathBuf>,
    /// A directory with Node-RED 4 installed: run the Node-RED comparison instead of the bench.
    compare_node_red: Option<PathBuf>,
    /// Run as the floor relay (see [`floor`]) against the broker on this port.
    floor_child: Option<u16>,
    /// Use the embedded broker (rumqttd, in this process) even where Mosquitto is installed: the
    /// same figures against the other broker the tests run with.
    embedded_broker: bool,
    /// Only replay this many `nrg` inputs in-process and print the figures: for instruction counts
    /// under `valgrind --tool=callgrind`, which are repeatable where CPU time on a shared VM is not.
    in_process_only: Option<u64>,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        quick: false,
        json_out: None,
        child_config: None,
        compare_node_red: None,
        floor_child: None,
        in_process_only: None,
        embedded_broker: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json_out = args.next().map(PathBuf::from),
            "--bridge-child" => o.child_config = args.next().map(PathBuf::from),
            "--compare-node-red" => o.compare_node_red = args.next().map(PathBuf::from),
            "--floor-child" => o.floor_child = args.next().and_then(|p| p.parse().ok()),
            "--in-process-only" => o.in_process_only = args.next().and_then(|n| n.parse().ok()),
            "--embedded-broker" => o.embedded_broker = true,
            "--help" | "-h" => {
                println!(
                    "hlbridge-bench [--quick] [--json FILE] [--embedded-broker] [--compare-node-red NODE_RED_DIR] [--in-process-only N]"
                );
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    o
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = parse_args();
    if let Some(cfg) = opts.child_config {
        // The bridge under test, in its own process so its CPU and memory can be read from /proc,
        // on the same runtime the binary uses.
        let config = hlbridge::surface::config::load_file(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let rt = hlbridge::surface::app::runtime(config.runtime.worker_threads)?;
        return rt.block_on(hlbridge::surface::app::run(config, hlbridge::surface::app::shutdown_signal()));
    }
    if let Some(port) = opts.floor_child {
        return floor::run(port);
    }
    if let Some(n) = opts.in_process_only {
        println!("{}", in_process_hot_path(n));
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(dir) = &opts.compare_node_red {
        return rt.block_on(node_red::run(dir, opts.quick, opts.json_out.as_deref()));
    }
    rt.block_on(bench(opts))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The broker for the run.
enum Broker {
    /// The broker process and its config directory (removed when the broker goes).
    Mosquitto(Child, #[allow(dead_code)] tempdir::TempDir),
    Embedded,
}

/// The embedded broker's threads in this process (rumqttd's router, its MQTT server's runtime, its
/// timer, and the thread that starts them): what it spent is told apart from the bench's own.
const EMBEDDED_BROKER_THREADS: [&str; 4] = ["router-0", "embedded", "embedded-broker", "timer"];

impl Broker {
    /// CPU time the broker spent so far (ns); for the embedded one, its threads in this process.
    fn cpu_ns(&self) -> Option<u64> {
        match self {
            Broker::Mosquitto(child, _) => Some(cpu_ns(child.id())),
            Broker::Embedded => Some(threads_cpu_ns("self", |name| EMBEDDED_BROKER_THREADS.contains(&name))),
        }
    }
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new(tag: &str) -> std::io::Result<TempDir> {
            let p = std::env::temp_dir().join(format!("hlbridge-bench-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&p)?;
            Ok(TempDir(p))
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Mosquitto(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mosquitto_path() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("broker did not listen on {port}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Starts the broker on `port`: Mosquitto unless `embedded` or it is not installed; with Mosquitto
/// also on a Unix socket (returned) in a temp dir.
async fn start_broker(port: u16, embedded: bool) -> anyhow::Result<(Broker, &'static str, Option<PathBuf>)> {
    if let Some(bin) = mosquitto_path().filter(|_| !embedded) {
        let dir = tempdir::TempDir::new("mosq")?;
        // Mosquitto started as root drops to its own user, which must be able to create the socket.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777))?;
        }
        let sock = dir.0.join("mqtt.sock");
        let conf = dir.0.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n\
                 listener {port} 127.0.0.1\nlistener 0 {}\n",
                sock.display()
            ),
        )?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning mosquitto")?;
        wait_port(port).await?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while !sock.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sock = sock.exists().then_some(sock);
        return Ok((Broker::Mosquitto(child, dir), "mosquitto", sock));
    }
    if !embedded {
        eprintln!("note: mosquitto not found, using the embedded broker (rumqttd); figures are not comparable");
    }
    hlbridge::surface::broker::start(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    Ok((Broker::Embedded, "rumqttd (embedded)", None))
}

/// A client of the bench's own (load generator or probe).
fn client(port: u16, id: &str, tracker: &TaskTracker, cancel: &CancellationToken) -> anyhow::Result<MqttHandle> {
    let mut s = MqttSettings::from_url(&format!("mqtt://127.0.0.1:{port}"), id)?;
    s.queue_capacity = 1_000_000;
    Ok(mqtt::spawn(&s, Metrics::detached(), tracker, cancel.clone())?)
}

async fn wait_connected(h: &MqttHandle) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.state().connected {
        if Instant::now() > deadline {
            bail!("bench client did not connect");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The bridge child process.
struct Bridge {
    child: Child,
    _dir: tempdir::TempDir,
}

impl Bridge {
    fn spawn(config: &str, tag: &str) -> anyhow::Result<Bridge> {
        let dir = tempdir::TempDir::new(tag)?;
        let path = dir.0.join("config.yaml");
        std::fs::write(&path, config)?;
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .arg("--bridge-child")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning the bridge")?;
        Ok(Bridge { child, _dir: dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time of every thread of the process, in nanoseconds.
    fn cpu_ns(&self) -> u64 {
        cpu_ns(self.pid())
    }

    fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.pid())
    }

    fn stop(mut self) {
        // SIGTERM through kill(1): a clean shutdown, as in production.
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cpu_ns(pid: u32) -> u64 {
    threads_cpu_ns(&pid.to_string(), |_| true)
}

/// CPU time (ns) of the threads of process `pid` (`self`: this one) whose name `pick` takes.
fn threads_cpu_ns(pid: &str, pick: impl Fn(&str) -> bool) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !pick(name.trim_end()) {
                continue;
            }
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

/// CPU time (ns) the whole machine spent busy so far, every process and the kernel (`/proc/stat`:
/// all but idle and iowait; in clock ticks, 10 ms each on these VMs, so read over whole phases).
fn machine_busy_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is counted in user already)
    let busy: u64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&h| h > 0).unwrap_or(100);
    Some(busy * (1_000_000_000 / hz))
}

/// The machine's busy CPU per delivered message and the cores it kept busy over the phase.
fn machine_share(busy0: Option<u64>, wall_s: Option<f64>, delivered: u64) -> serde_json::Value {
    cpu_per_message(busy0, machine_busy_ns(), wall_s, delivered, "busy_cores")
}

/// The broker's CPU per delivered message and its busy share of the phase's wall time (1.0 = one
/// core all the time), from its CPU counter at the phase's start.
fn broker_share(broker: &Broker, cpu0: Option<u64>, wall_s: Option<f64>, delivered: u64) -> serde_json::Value {
    cpu_per_message(cpu0, broker.cpu_ns(), wall_s, delivered, "busy_share")
}

/// CPU (ns counters `cpu0` → `cpu1`) per delivered message and, under `busy_key`, the cores it kept
/// busy over `wall_s`; null where a figure is missing.
fn cpu_per_message(
    cpu0: Option<u64>,
    cpu1: Option<u64>,
    wall_s: Option<f64>,
    delivered: u64,
    busy_key: &str,
) -> serde_json::Value {
    match (cpu0, cpu1, wall_s) {
        (Some(c0), Some(c1), Some(w)) if delivered > 0 && w > 0.0 => {
            let ns = c1.saturating_sub(c0) as f64;
            json!({"cpu_us_per_delivered_msg": ns / 1000.0 / delivered as f64, busy_key: ns / 1e9 / w})
        }
        _ => serde_json::Value::Null,
    }
}

fn memory_kib(pid: u32) -> (u64, u64) {
    (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"))
}

/// Anonymous (heap, stacks) and file-backed (code, mapped files) resident memory.
fn rss_parts_kib(pid: u32) -> (u64, u64) {
    (status_kib(pid, "RssAnon:"), status_kib(pid, "RssFile:"))
}

/// One `kB` field of `/proc/<pid>/status`; 0 when it cannot be read.
fn status_kib(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn bridge_config(port: u16, devices: usize, state_json: bool) -> String {
    bridge_config_url(&format!("mqtt://127.0.0.1:{port}"), devices, state_json)
}

fn bridge_config_url(url: &str, devices: usize, state_json: bool) -> String {
    let mut s = format!(
        "mqtt:\n  url: {url}\n  client_id: hlbridge-bench\n  queue_capacity: 200000\noutput:\n  prefix: bench\n  state_json: {state_json}\nhttp:\n  listen: null\nlog:\n  level: warn\ndevices:\n"
    );
    for i in 0..devices {
        s.push_str(&format!("  ev{i}:\n    adapter: goe\n    serial: \"{:06}\"\n    commands: false\n", i));
    }
    s
}

/// The bridge with one device of each MQTT-fed kind for the mixed-traffic phase.
fn mixed_config(port: u16) -> String {
    let mut s = bridge_config(port, 1, true);
    s.push_str(
        "  cam:\n    adapter: ai_on_the_edge\n    main_topic: benchcam\n    meter: water\n    discovery: false\n    \
         guard:\n      enabled: false\n  printer:\n    adapter: octoprint\n    base_topic: benchprint/\n",
    );
    s
}

/// An upstream (v16) camera round's `json`, whose value encodes `k` (1000 m³ + k × 0.1 l).
fn camera_round(k: u64) -> String {
    let v = 1000.0 + k as f64 * 0.0001;
    format!(
        "{{\"value\": \"{v:.4}\", \"raw\": \"{v:09.4}\", \"pre\": \"{v:.4}\", \"error\": \"no error\", \
         \"rate\": \"0.000100\", \"timestamp\": \"2026-11-22T04:00:00+0100\"}}"
    )
}

/// An `nrg` array where every one of the 16 fields changes with `seq`, and `power` (index 11)
/// equals `seq`, so the unified `power` topic carries the sequence number back.
fn nrg_payload(seq: u64) -> String {
    // Steps at each quantity's printed precision, so every field changes on every message.
    let k = (seq % 1000) as f64;
    format!(
        "[{:.2},{:.2},{:.2},{:.2},{:.3},{:.3},{:.3},{:.1},{:.1},{:.1},{:.1},{},{:.2},{:.2},{:.2},{:.2}]",
        220.0 + k * 0.01,
        221.0 + k * 0.01,
        222.0 + k * 0.01,
        1.0 + k * 0.01,
        10.0 + k * 0.001,
        11.0 + k * 0.001,
        12.0 + k * 0.001,
        2000.0 + k * 0.1,
        2100.0 + k * 0.1,
        2200.0 + k * 0.1,
        k * 0.1,
        seq,
        80.0 + k * 0.01,
        81.0 + k * 0.01,
        82.0 + k * 0.01,
        83.0 + k * 0.01
    )
}

fn percentiles(mut v: Vec<u64>) -> serde_json::Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    json!({"samples": v.len(), "p50_us": p(0.5), "p90_us": p(0.9), "p99_us": p(0.99), "max_us": *v.last().unwrap_or(&0) as f64 / 1000.0})
}

/// Publishes `count` messages at `rate` (> 0) per second, recording send times by sequence number.
/// (Saturation, as fast as the broker reads, is [`saturate::flood`]'s.)
async fn drive(
    pubr: &MqttHandle,
    count: u64,
    rate: u64,
    sent: &Arc<Vec<AtomicU64>>,
    base: Instant,
    first_seq: u64,
    mut make: impl FnMut(u64) -> Vec<(String, String)>,
) {
    let start = Instant::now();
    for i in 0..count {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate.max(1));
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let seq = first_seq + i;
        let msgs = make(seq);
        sent[(seq as usize) % sent.len()].store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        for (topic, payload) in msgs {
            while !pubr.publish(topic.clone(), payload.clone().into_bytes(), QoS::AtMostOnce, false) {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Collects latencies of messages on `topic` whose payload is a sequence number.
async fn collect(
    rx: &mut tokio::sync::mpsc::Receiver<mqtt::Message>,
    topic: &str,
    expect: u64,
    sent: &Arc<Vec<AtomicU64>>,
    base: Instant,
    quiet: Duration,
) -> (Vec<u64>, u64, Option<Instant>) {
    collect_decoded(rx, topic, expect, sent, base, quiet, |v| v as u64).await
}

/// Like [`collect`] for payloads that encode the sequence number (`decode` turns the value back).
async fn collect_decoded(
    rx: &mut tokio::sync::mpsc::Receiver<mqtt::Message>,
    topic: &str,
    expect: u64,
    sent: &Arc<Vec<AtomicU64>>,
    base: Instant,
    quiet: Duration,
    decode: impl Fn(f64) -> u64,
) -> (Vec<u64>, u64, Option<Instant>) {
    let mut lat = Vec::with_capacity(expect as usize);
    let mut got = 0;
    let mut last = None;
    while got < expect {
        match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(Some(m)) => {
                if m.topic != topic {
                    continue;
                }
                let Some(seq) = std::str::from_utf8(&m.payload).ok().and_then(|s| s.parse::<f64>().ok()) else {
                    continue;
                };
                let seq = decode(seq);
                let now = base.elapsed().as_nanos() as u64;
                let t0 = sent[(seq as usize) % sent.len()].load(Ordering::Relaxed);
                lat.push(now.saturating_sub(t0));
                got += 1;
                last = Some(Instant::now());
            }
            _ => break,
        }
    }
    (lat, got, last)
}

async fn bench(opts: Opts) -> anyhow::Result<()> {
    let port = free_port()?;
    let (broker, broker_name, unix_socket) = start_broker(port, opts.embedded_broker).await?;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let pubr = client(port, "bench-load", &tracker, &cancel)?;
    let probe = client(port, "bench-probe", &tracker, &cancel)?;
    wait_connected(&pubr).await?;
    wait_connected(&probe).await?;
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..1 << 20).map(|_| AtomicU64::new(0)).collect());
    let fixed_rate = 2000;
    let fixed_secs = if opts.quick { 2 } else { 10 };
    let fixed_count = fixed_rate * fixed_secs;
    let sat_count: u64 = if opts.quick { 100_000 } else { 300_000 };
    let mut report = serde_json::Map::new();
    report.insert("broker".into(), json!(broker_name));
    report.insert("cores".into(), json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)));
    report.insert("cpu_idle".into(), cpu_idle());

    let mut raw_rx = probe.subscribe("benchraw/#", 1 << 20).await;
    // 1. The bridge's own hot path in-process (go-e nrg → normalised → queued for publishing), with
    //    no sockets: what our code costs, apart from the per-publish socket write.
    report.insert("in_process_hot_path".into(), in_process_hot_path(if opts.quick { 20_000 } else { 200_000 }));

    // 2. Start-up time to first publish, with one device.
    let mut status_rx = probe.subscribe("bench/bridge/status", 16).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let bridge = Bridge::spawn(&bridge_config(port, 1, true), "one")?;
    let startup = loop {
        match tokio::time::timeout(Duration::from_secs(10), status_rx.recv()).await {
            Ok(Some(m)) if &m.payload[..] == b"online" && !m.retain => break t0.elapsed(),
            Ok(Some(_)) => continue,
            _ => bail!("the bridge did not publish bridge/status online"),
        }
    };
    report.insert("startup_to_first_publish_ms".into(), json!(startup.as_secs_f64() * 1000.0));
    tokio::time::sleep(Duration::from_millis(300)).await; // let its subscriptions settle

    // 3. go-e nrg with the full fan-out (16 quantities + state JSON) at the fixed rate, interleaved
    //    with raw one-hop messages (same publisher, same subscriber), so the physical floor is
    //    measured under the same conditions in the same run.
    let mut out_rx = probe.subscribe("bench/ev0/power", 1 << 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu0 = bridge.cpu_ns();
    let first = 1_000_000 % sent.len() as u64;
    let d = drive(&pubr, fixed_count, fixed_rate, &sent, base, first, |s| {
        let raw = ("benchraw/seq".to_string(), s.to_string());
        let nrg = ("go-eCharger/000000/nrg".to_string(), nrg_payload(s));
        // Alternate the order so neither path is systematically first.
        if s % 2 == 0 { vec![raw, nrg] } else { vec![nrg, raw] }
    });
    let quiet = Duration::from_secs(3);
    let (_, (lat, got, _), (raw_lat, raw_got, _)) = tokio::join!(
        d,
        collect(&mut out_rx, "bench/ev0/power", fixed_count, &sent, base, quiet),
        collect(&mut raw_rx, "benchraw/seq", fixed_count, &sent, base, quiet)
    );
    let cpu = bridge.cpu_ns() - cpu0;
    let (rss, hwm) = bridge.memory_kib();
    let raw = percentiles(raw_lat);
    report.insert(
        "raw_hop".into(),
        json!({"rate": fixed_rate, "sent": fixed_count, "received": raw_got, "latency": raw}),
    );
    let bridge_lat = percentiles(lat);
    let added = |k: &str| {
        bridge_lat.get(k).and_then(|b| b.as_f64()).zip(raw.get(k).and_then(|r| r.as_f64())).map(|(b, r)| b - r)
    };
    report.insert(
        "goe_nrg_fixed_rate".into(),
        json!({
            "rate": fixed_rate, "sent": fixed_count, "received": got,
            "outputs_per_input": 17,
            "latency": bridge_lat,
            "added_latency_p50_us": added("p50_us"),
            "added_latency_p90_us": added("p90_us"),
            "added_latency_p99_us": added("p99_us"),
            "bridge_cpu_us_per_msg": cpu as f64 / 1000.0 / fixed_count as f64,
            "rss_kib": rss, "peak_rss_kib": hwm,
        }),
    );
    bridge.stop();

    // 3a. The floor: a relay with no mapping and no protocol library answering each `nrg` with the
    //     same 17 publishes in one write (see `floor`), under the same traffic. Bridge − floor is
    //     what hlbridge's own code adds, whatever system calls cost on this machine.
    {
        let mut floor_rx = probe.subscribe(&format!("{}/power", floor::PREFIX), 1 << 20).await;
        let mut relay = floor::spawn(port)?;
        let pid = relay.id();
        let cpu0 = cpu_ns(pid);
        let first = 6_000_000 % sent.len() as u64;
        let d = drive(&pubr, fixed_count, fixed_rate, &sent, base, first, |s| {
            let raw = ("benchraw/seq".to_string(), s.to_string());
            let nrg = (floor::INPUT.to_string(), nrg_payload(s));
            if s % 2 == 0 { vec![raw, nrg] } else { vec![nrg, raw] }
        });
        let power_topic = format!("{}/power", floor::PREFIX);
        let (_, (lat, got, _), (raw_lat, _, _)) = tokio::join!(
            d,
            collect(&mut floor_rx, &power_topic, fixed_count, &sent, base, quiet),
            collect(&mut raw_rx, "benchraw/seq", fixed_count, &sent, base, quiet)
        );
        let cpu = cpu_ns(pid) - cpu0;
        let _ = relay.kill();
        let _ = relay.wait();
        let (floor_lat, floor_raw) = (percentiles(lat), percentiles(raw_lat));
        let p = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_f64());
        let floor_cpu = cpu as f64 / 1000.0 / fixed_count as f64;
        let bridge_cpu = report["goe_nrg_fixed_rate"]["bridge_cpu_us_per_msg"].as_f64().unwrap_or(0.0);
        let added = |k: &str| p(&floor_lat, k).zip(p(&floor_raw, k)).map(|(f, r)| f - r);
        report.insert(
            "floor_relay".into(),
            json!({
                "rate": fixed_rate, "sent": fixed_count, "received": got,
                "cpu_us_per_msg": floor_cpu,
                "latency": floor_lat, "raw_hop_latency": floor_raw,
                "added_latency_p50_us": added("p50_us"), "added_latency_p90_us": added("p90_us"),
                "bridge_cpu_over_floor_us": bridge_cpu - floor_cpu,
            }),
        );
    }

    // 3b. The same traffic with the bridge on the broker's Unix socket (same-host deployments).
    if let Some(sock) = &unix_socket {
        let url = format!("unix://{}", sock.display());
        let bridge = Bridge::spawn(&bridge_config_url(&url, 1, true), "unix")?;
        wait_online(&probe, "bench/bridge").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu0 = bridge.cpu_ns();
        let first = 3_000_000 % sent.len() as u64;
        let d = drive(&pubr, fixed_count, fixed_rate, &sent, base, first, |s| {
            vec![("go-eCharger/000000/nrg".to_string(), nrg_payload(s))]
        });
        let (_, (lat, got, _)) =
            tokio::join!(d, collect(&mut out_rx, "bench/ev0/power", fixed_count, &sent, base, Duration::from_secs(3)));
        let cpu = bridge.cpu_ns() - cpu0;
        report.insert(
            "goe_nrg_fixed_rate_unix_socket".into(),
            json!({
                "rate": fixed_rate, "sent": fixed_count, "received": got,
                "latency": percentiles(lat),
                "bridge_cpu_us_per_msg": cpu as f64 / 1000.0 / fixed_count as f64,
            }),
        );
        bridge.stop();
    }

    // 3c. Mixed traffic: every tick one go-e nrg, one camera-meter round and one OctoPrint
    //     temperature, each to its own device, at the fixed rate (three inputs per tick).
    {
        let bridge = Bridge::spawn(&mixed_config(port), "mixed")?;
        wait_online(&probe, "bench/bridge").await?;
        let mut cam_rx = probe.subscribe("bench/cam/volume", 1 << 20).await;
        let mut tool_rx = probe.subscribe("bench/printer/temperature_tool0", 1 << 20).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu0 = bridge.cpu_ns();
        let first = 5_000_000u64;
        let d = drive(&pubr, fixed_count, fixed_rate, &sent, base, first, |s| {
            let k = s - first;
            vec![
                ("go-eCharger/000000/nrg".to_string(), nrg_payload(s)),
                ("benchcam/main/json".to_string(), camera_round(k)),
                (
                    "benchprint/temperature/tool0".to_string(),
                    format!(
                        "{{\"_timestamp\": {}, \"actual\": {:.2}, \"target\": 215.0}}",
                        1_800_000_000 + k / 1000,
                        k as f64 * 0.01
                    ),
                ),
            ]
        });
        let quiet = Duration::from_secs(3);
        let (_, (nrg_lat, nrg_got, _), (cam_lat, cam_got, _), (tool_lat, tool_got, _)) = tokio::join!(
            d,
            collect(&mut out_rx, "bench/ev0/power", fixed_count, &sent, base, quiet),
            collect_decoded(&mut cam_rx, "bench/cam/volume", fixed_count, &sent, base, quiet, |v| {
                first + ((v - 1000.0) * 10_000.0).round() as u64
            }),
            collect_decoded(&mut tool_rx, "bench/printer/temperature_tool0", fixed_count, &sent, base, quiet, |v| {
                first + (v * 100.0).round() as u64
            }),
        );
        let cpu = bridge.cpu_ns() - cpu0;
        let (rss, hwm) = bridge.memory_kib();
        report.insert(
            "mixed_fixed_rate".into(),
            json!({
                "ticks_per_s": fixed_rate, "inputs_per_tick": 3, "ticks": fixed_count,
                "goe_nrg": {"received": nrg_got, "latency": percentiles(nrg_lat)},
                "camera_round": {"received": cam_got, "latency": percentiles(cam_lat)},
                "octoprint_temperature": {"received": tool_got, "latency": percentiles(tool_lat)},
                "bridge_cpu_us_per_input": cpu as f64 / 1000.0 / (3 * fixed_count) as f64,
                "rss_kib": rss, "peak_rss_kib": hwm,
            }),
        );
        bridge.stop();
    }

    // 4. Saturation. Broker limit first (raw topic), then the bridge with a one-output mapping
    //    (go-e `rbt` → `uptime`, state JSON off).
    //    The broker's own CPU per message in both phases says whether it is what saturates: the
    //    bridge path routes two messages through it per output (device → bridge, bridge → consumer).
    //    Both phases are driven and counted by the lean pair of [`saturate`], on topics nothing else
    //    here subscribes to (one copy per message), so the bridge is the only difference.
    let quiet = Duration::from_secs(3);
    let mut raw_sink = saturate::Consumer::subscribe(port, "bench-sat-raw", "benchsat/seq").await?;
    let (broker_cpu0, machine0) = (broker.cpu_ns(), machine_busy_ns());
    let t = Instant::now();
    let (sock, (got, last)) = tokio::join!(
        saturate::flood(port, "bench-sat-load", sat_count, |s| ("benchsat/seq", s.to_string())),
        raw_sink.count("benchsat/seq", sat_count, quiet)
    );
    drop((sock?, raw_sink));
    let raw_wall = last.map(|l| (l - t).as_secs_f64());
    let raw_rate = raw_wall.map(|w| got as f64 / w).unwrap_or(0.0);
    let broker_raw = broker_share(&broker, broker_cpu0, raw_wall, got);
    let machine_raw = machine_share(machine0, raw_wall, got);
    // Two chargers: `ev0` for the fixed-rate phase, which the probe follows, and `ev1` for the
    // saturation phase, which only the lean consumer follows.
    let bridge = Bridge::spawn(&bridge_config(port, 2, false), "sat")?;
    let mut up_rx = probe.subscribe("bench/ev0/uptime", 1 << 20).await;
    wait_online(&probe, "bench/ev0").await.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // First at the fixed rate, interleaved with raw hops: the bridge's added latency without a
    // fan-out (one input → one output), i.e. one extra broker hop plus the bridge itself.
    let first = 4_000_000u64;
    let d = drive(&pubr, fixed_count, fixed_rate, &sent, base, first, |s| {
        let raw = ("benchraw/seq".to_string(), s.to_string());
        let rbt = ("go-eCharger/000000/rbt".to_string(), (s * 1000).to_string());
        if s % 2 == 0 { vec![raw, rbt] } else { vec![rbt, raw] }
    });
    let (_, (one_lat, one_got, _), (one_raw, _, _)) = tokio::join!(
        d,
        collect(&mut up_rx, "bench/ev0/uptime", fixed_count, &sent, base, quiet),
        collect(&mut raw_rx, "benchraw/seq", fixed_count, &sent, base, quiet)
    );
    let (one, one_raw) = (percentiles(one_lat), percentiles(one_raw));
    let one_added =
        |k: &str| one.get(k).and_then(|b| b.as_f64()).zip(one_raw.get(k).and_then(|r| r.as_f64())).map(|(b, r)| b - r);
    report.insert(
        "one_output_fixed_rate".into(),
        json!({
            "rate": fixed_rate, "sent": fixed_count, "received": one_got,
            "latency": one, "raw_hop_latency": one_raw,
            "added_latency_p50_us": one_added("p50_us"), "added_latency_p99_us": one_added("p99_us"),
        }),
    );
    let mut out_sink = saturate::Consumer::subscribe(port, "bench-sat-out", "bench/ev1/uptime").await?;
    let cpu0 = bridge.cpu_ns();
    let (broker_cpu0, machine0) = (broker.cpu_ns(), machine_busy_ns());
    let t = Instant::now();
    let (sock, (got_b, last_b)) = tokio::join!(
        saturate::flood(port, "bench-sat-device", sat_count, |s| ("go-eCharger/000001/rbt", (s * 1000).to_string())),
        out_sink.count("bench/ev1/uptime", sat_count, quiet)
    );
    drop((sock?, out_sink));
    let cpu_sat = bridge.cpu_ns() - cpu0;
    let bridge_wall = last_b.map(|l| (l - t).as_secs_f64());
    let bridge_rate = bridge_wall.map(|w| got_b as f64 / w).unwrap_or(0.0);
    let broker_bridged = broker_share(&broker, broker_cpu0, bridge_wall, got_b);
    let machine_bridged = machine_share(machine0, bridge_wall, got_b);
    bridge.stop();
    // Where the broker saturates in both phases, the ratio cannot exceed its cost per raw message
    // over its cost per bridged output (two passes through it, whatever the bridge costs).
    let per = |v: &serde_json::Value| v.get("cpu_us_per_delivered_msg").and_then(serde_json::Value::as_f64);
    let broker_bound_ceiling = per(&broker_raw).zip(per(&broker_bridged)).map(|(raw, bridged)| raw / bridged);
    // The same for the whole machine (every process: broker, bridge, this bench's clients), for
    // where all its cores are busy in both phases (the embedded broker, whose routing and serving
    // run on threads of their own).
    let machine_bound_ceiling = per(&machine_raw).zip(per(&machine_bridged)).map(|(raw, bridged)| raw / bridged);
    report.insert(
        "saturation".into(),
        json!({
            "sent": sat_count,
            "broker_raw_msgs_per_s": raw_rate, "broker_raw_received": got,
            "bridge_msgs_per_s": bridge_rate, "bridge_received": got_b,
            "bridge_loss_ratio": 1.0 - got_b as f64 / sat_count as f64,
            "bridge_to_broker_ratio": if raw_rate > 0.0 { bridge_rate / raw_rate } else { 0.0 },
            "bridge_cpu_us_per_msg": cpu_sat as f64 / 1000.0 / sat_count as f64,
            "broker_alone": broker_raw, "broker_on_bridge_path": broker_bridged,
            "broker_bound_ceiling": broker_bound_ceiling,
            "machine_alone": machine_raw, "machine_on_bridge_path": machine_bridged,
            "machine_bound_ceiling": machine_bound_ceiling,
        }),
    );

    // 5. Memory with 1, 100 and 1000 configured devices (each has received one reading).
    let mut mem = serde_json::Map::new();
    for n in [1usize, 100, 1000] {
        let bridge = Bridge::spawn(&bridge_config(port, n, true), &format!("mem{n}"))?;
        wait_online(&probe, "bench/bridge").await.ok();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for i in 0..n {
            pubr.publish(format!("go-eCharger/{i:06}/nrg"), nrg_payload(i as u64).into_bytes(), QoS::AtMostOnce, false);
        }
        let mut last_rx = probe.subscribe(&format!("bench/ev{}/power", n - 1), 4).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), last_rx.recv()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, hwm) = bridge.memory_kib();
        // RSS counts the binary's resident code pages too (~9 MiB, moving by ~1 MiB with code
        // layout between builds); the anonymous part is what the bridge allocated.
        let (anon, file) = rss_parts_kib(bridge.pid());
        mem.insert(
            format!("{n}"),
            json!({"rss_kib": rss, "peak_rss_kib": hwm, "rss_anon_kib": anon, "rss_file_kib": file}),
        );
        bridge.stop();
    }
    report.insert("memory_by_devices".into(), serde_json::Value::Object(mem));
    cancel.cancel();

    print_table(&report);
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(report))?;
    println!("{text}");
    if let Some(path) = opts.json_out {
        write_json(&path, &text)?;
    }
    Ok(())
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Replays `n` nrg messages through the real adapter and router with a detached MQTT handle and
/// reports the CPU per message (the queue is drained outside the measured sections).
fn in_process_hot_path(n: u64) -> serde_json::Value {
    use hlbridge::surface::router::{DeviceSpec, Router, RouterSettings};
    let (mqtt, mut captured) = mqtt::detached(1 << 20);
    let spec = DeviceSpec {
        id: "ev".into(),
        adapter: hlbridge::surface::config::AdapterKind::Goe,
        prefix: "bench".into(),
        freshness: Duration::from_secs(60),
        min_interval: None,
        heartbeat: None,
        commands: false,
        offered: &[],
    };
    let settings =
        RouterSettings { bridge_prefix: "bench".into(), quantity_topics: true, state_json: true, qos: QoS::AtMostOnce };
    let router = Router::new(settings, vec![spec], mqtt, Metrics::detached());
    let Some(handle) = router.handle("ev") else { return json!(null) };
    let mut ingest = hlbridge::surface::adapters::goe::Ingest::new(handle.clone());
    let payloads: Vec<bytes::Bytes> = (0..1000).map(|i| bytes::Bytes::from(nrg_payload(i))).collect();
    let mut spent = 0u64;
    let mut outputs = 0usize;
    let mut i = 0;
    while i < n {
        let batch = 1000.min(n - i);
        let t0 = thread_cpu_ns();
        for j in 0..batch {
            let msg = mqtt::Message {
                topic: "go-eCharger/000000/nrg".into(),
                payload: payloads[((i + j) % 1000) as usize].clone(),
                retain: false,
            };
            ingest.mqtt_message("nrg", &msg);
            handle.flush();
        }
        spent += thread_cpu_ns() - t0;
        outputs += captured.drain().len();
        i += batch;
    }
    json!({
        "messages": n,
        "outputs_per_input": outputs as f64 / n as f64,
        "cpu_us_per_msg": spent as f64 / 1000.0 / n as f64,
    })
}

async fn wait_online(probe: &MqttHandle, base: &str) -> anyhow::Result<()> {
    let topic = if base.ends_with("/bridge") { format!("{base}/status") } else { format!("{base}/availability") };
    let mut rx = probe.subscribe(&topic, 16).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(m)) if &m.payload[..] == b"online" => return Ok(()),
            Ok(Some(_)) => {}
            _ => bail!("{topic} never became online"),
        }
    }
}

fn write_json(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// How idle CPUs wait (Linux): on a VM, whether an idle vCPU halts or first polls decides what
/// waking it per input costs, which is most of the CPU per input at a fixed rate (README,
/// Performance), so the figures are read with it.
fn cpu_idle() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    json!({
        "driver": read("/sys/devices/system/cpu/cpuidle/current_driver"),
        "governor": read("/sys/devices/system/cpu/cpuidle/current_governor"),
        "guest_halt_poll_ns": read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    })
}

fn print_table(r: &serde_json::Map<String, serde_json::Value>) {
    let g = |path: &[&str]| -> String {
        let mut v = &serde_json::Value::Object(r.clone());
        for p in path {
            v = match v.get(*p) {
                Some(x) => x,
                None => return "-".into(),
            };
        }
        match v {
            serde_json::Value::Number(n) => {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 { format!("{f}") } else { format!("{f:.2}") }
            }
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    };
    // "CPU per message / busy" of a broker (`busy_share`) or of the machine (`busy_cores`).
    let cpu_busy = |path: &[&str], busy_key: &str| -> String {
        let at = |k: &str| g(&[path, &[k]].concat());
        format!("{} / {}", at("cpu_us_per_delivered_msg"), at(busy_key))
    };
    let pair = |path: &[&str]| cpu_busy(path, "busy_share");
    let machine = |path: &[&str]| cpu_busy(path, "busy_cores");
    let rows: Vec<(&str, String)> = vec![
        ("broker", g(&["broker"])),
        (
            "CPU idle: driver / guest_halt_poll_ns",
            format!("{} / {}", g(&["cpu_idle", "driver"]), g(&["cpu_idle", "guest_halt_poll_ns"])),
        ),
        (
            "raw hop latency p50 / p99 / max (us)",
            format!(
                "{} / {} / {}",
                g(&["raw_hop", "latency", "p50_us"]),
                g(&["raw_hop", "latency", "p99_us"]),
                g(&["raw_hop", "latency", "max_us"])
            ),
        ),
        (
            "bridge path latency p50 / p99 / max (us)",
            format!(
                "{} / {} / {}",
                g(&["goe_nrg_fixed_rate", "latency", "p50_us"]),
                g(&["goe_nrg_fixed_rate", "latency", "p99_us"]),
                g(&["goe_nrg_fixed_rate", "latency", "max_us"])
            ),
        ),
        (
            "added latency p50 / p90 / p99 (us) [target 300 / 1000 / -]",
            format!(
                "{} / {} / {}",
                g(&["goe_nrg_fixed_rate", "added_latency_p50_us"]),
                g(&["goe_nrg_fixed_rate", "added_latency_p90_us"]),
                g(&["goe_nrg_fixed_rate", "added_latency_p99_us"])
            ),
        ),
        (
            "bridge CPU per go-e nrg msg, whole process (us) [target 20]",
            g(&["goe_nrg_fixed_rate", "bridge_cpu_us_per_msg"]),
        ),
        ("  of which our code in-process, no sockets (us)", g(&["in_process_hot_path", "cpu_us_per_msg"])),
        ("  outputs per nrg input", g(&["in_process_hot_path", "outputs_per_input"])),
        ("floor relay CPU per nrg msg, whole process (us)", g(&["floor_relay", "cpu_us_per_msg"])),
        ("  bridge CPU over the floor (us)", g(&["floor_relay", "bridge_cpu_over_floor_us"])),
        (
            "floor relay added latency p50 / p90 (us)",
            format!(
                "{} / {}",
                g(&["floor_relay", "added_latency_p50_us"]),
                g(&["floor_relay", "added_latency_p90_us"])
            ),
        ),
        (
            "bridge CPU per nrg msg on a Unix socket (us)",
            g(&["goe_nrg_fixed_rate_unix_socket", "bridge_cpu_us_per_msg"]),
        ),
        (
            "bridge path latency on a Unix socket p50 / p99 (us)",
            format!(
                "{} / {}",
                g(&["goe_nrg_fixed_rate_unix_socket", "latency", "p50_us"]),
                g(&["goe_nrg_fixed_rate_unix_socket", "latency", "p99_us"])
            ),
        ),
        (
            "nrg received / sent",
            format!("{} / {}", g(&["goe_nrg_fixed_rate", "received"]), g(&["goe_nrg_fixed_rate", "sent"])),
        ),
        (
            "RSS / peak RSS during nrg run (KiB)",
            format!("{} / {}", g(&["goe_nrg_fixed_rate", "rss_kib"]), g(&["goe_nrg_fixed_rate", "peak_rss_kib"])),
        ),
        (
            "mixed: CPU per input (nrg + camera round + temperature) (us)",
            g(&["mixed_fixed_rate", "bridge_cpu_us_per_input"]),
        ),
        (
            "mixed: latency p50 / p99 nrg, camera, temperature (us)",
            format!(
                "{} / {}, {} / {}, {} / {}",
                g(&["mixed_fixed_rate", "goe_nrg", "latency", "p50_us"]),
                g(&["mixed_fixed_rate", "goe_nrg", "latency", "p99_us"]),
                g(&["mixed_fixed_rate", "camera_round", "latency", "p50_us"]),
                g(&["mixed_fixed_rate", "camera_round", "latency", "p99_us"]),
                g(&["mixed_fixed_rate", "octoprint_temperature", "latency", "p50_us"]),
                g(&["mixed_fixed_rate", "octoprint_temperature", "latency", "p99_us"])
            ),
        ),
        (
            "mixed: received nrg / camera / temperature of sent",
            format!(
                "{} / {} / {} of {}",
                g(&["mixed_fixed_rate", "goe_nrg", "received"]),
                g(&["mixed_fixed_rate", "camera_round", "received"]),
                g(&["mixed_fixed_rate", "octoprint_temperature", "received"]),
                g(&["mixed_fixed_rate", "ticks"])
            ),
        ),
        (
            "one-output mapping: added latency p50 / p99 (us)",
            format!(
                "{} / {}",
                g(&["one_output_fixed_rate", "added_latency_p50_us"]),
                g(&["one_output_fixed_rate", "added_latency_p99_us"])
            ),
        ),
        ("broker raw throughput (msg/s)", g(&["saturation", "broker_raw_msgs_per_s"])),
        ("bridge one-output throughput (msg/s) [target 30000]", g(&["saturation", "bridge_msgs_per_s"])),
        ("bridge loss at saturation (ratio)", g(&["saturation", "bridge_loss_ratio"])),
        ("bridge / broker throughput ratio", g(&["saturation", "bridge_to_broker_ratio"])),
        ("  ceiling where the broker saturates (its CPU raw / bridged)", g(&["saturation", "broker_bound_ceiling"])),
        ("bridge CPU per one-output msg (us)", g(&["saturation", "bridge_cpu_us_per_msg"])),
        ("broker alone: CPU per msg (us), busy share of a core", pair(&["saturation", "broker_alone"])),
        ("broker on the bridge path: CPU per output (us), busy share", pair(&["saturation", "broker_on_bridge_path"])),
        ("  ceiling where the machine saturates (its CPU raw / bridged)", g(&["saturation", "machine_bound_ceiling"])),
        ("machine alone: CPU per msg (us), busy cores", machine(&["saturation", "machine_alone"])),
        (
            "machine on the bridge path: CPU per output (us), busy cores",
            machine(&["saturation", "machine_on_bridge_path"]),
        ),
        ("start-up to first publish (ms) [target 100]", g(&["startup_to_first_publish_ms"])),
        ("RSS, 1 device (KiB)", g(&["memory_by_devices", "1", "rss_kib"])),
        ("RSS, 100 devices (KiB) [target 15360]", g(&["memory_by_devices", "100", "rss_kib"])),
        ("RSS, 1000 devices (KiB) [target 40960]", g(&["memory_by_devices", "1000", "rss_kib"])),
        (
            "  of which anonymous (heap), 1 / 100 / 1000 devices (KiB)",
            format!(
                "{} / {} / {}",
                g(&["memory_by_devices", "1", "rss_anon_kib"]),
                g(&["memory_by_devices", "100", "rss_anon_kib"]),
                g(&["memory_by_devices", "1000", "rss_anon_kib"])
            ),
        ),
    ];
    println!("\nhlbridge benchmark");
    for (k, v) in rows {
        println!("  {k:<62} {v}");
    }
    println!();
}

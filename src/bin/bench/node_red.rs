//! `hlbridge-bench --compare-node-red DIR`: the bridge against Node-RED 4 doing the same go-e `nrg`
//! mapping (bench/node-red/flow.json), in one run, on one Mosquitto, fed the same generated traffic.
//!
//! Steps, each bounded in time:
//! 1. checks `node --version` (Node-RED 4 needs Node 18 or newer) and finds `red.js` under DIR;
//! 2. starts Mosquitto, the bridge (prefix `bench`) and Node-RED (prefix `nodered`, headless, its
//!    user directory a temporary one), and waits for Node-RED by a condition: its first output for
//!    a retained probe input;
//! 3. feeds real `nrg` samples (adapters/goe/fixtures/nrg-examples.jsonl plus edge cases) to one
//!    device each and requires both sides' outputs to match value for value, or stops with the
//!    differences;
//! 4. after one unmeasured second (JIT and caches warm), drives `nrg` at the fixed rate the main
//!    bench uses (2 000/s to one charger, 10 s or 2 s with `--quick`), interleaved with raw one-hop
//!    messages, while both subscribe to the same input topic, and reads each process's CPU time from
//!    `/proc/<pid>/task/*/schedstat`, its RSS, and its added latency on the `power` output;
//! 5. stops Node-RED and the bridge, prints both figures side by side with the ratio.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hlbridge::surface::mqtt::{self, MqttHandle, QoS};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Bridge, tempdir};

/// The flow and settings, embedded so the bench runs from any directory.
const FLOW_JSON: &str = include_str!("../../../bench/node-red/flow.json");
const SETTINGS_JS: &str = include_str!("../../../bench/node-red/settings.js");
/// Real `nrg` arrays captured from chargers (one JSON object per line, the array under `nrg`).
const NRG_EXAMPLES: &str = include_str!("../../../adapters/goe/fixtures/nrg-examples.jsonl");

/// The Node-RED output prefix (the bridge's is `bench`).
const NODE_RED_PREFIX: &str = "nodered";
/// The serial of the Node-RED readiness probe (a device the bridge does not know).
const PROBE_SERIAL: &str = "999999";
/// How long Node-RED may take to start and connect on a loaded machine.
const NODE_RED_START_TIMEOUT: Duration = Duration::from_secs(120);
/// The command that installs Node-RED into DIR, shown when DIR holds none.
const INSTALL_HINT: &str = "npm install --prefix DIR node-red@4";

/// A Node-RED process with its temporary user directory; killed when dropped.
struct NodeRed {
    /// The `node` process running `red.js`, whose CPU and memory are measured.
    child: Child,
    /// The user directory (flow, settings, Node-RED's own files, its log), removed on drop.
    dir: tempdir::TempDir,
}

impl NodeRed {
    fn spawn(red_js: &Path, broker_port: u16, devices: &str) -> anyhow::Result<NodeRed> {
        let dir = tempdir::TempDir::new("node-red")?;
        let flow = dir.0.join("flow.json");
        let settings = dir.0.join("settings.js");
        std::fs::write(&flow, FLOW_JSON)?;
        std::fs::write(&settings, SETTINGS_JS)?;
        let log = std::fs::File::create(dir.0.join("node-red.log"))?;
        let child = Command::new("node")
            .arg(red_js)
            .arg("--settings")
            .arg(&settings)
            .arg("--userDir")
            .arg(&dir.0)
            .arg(&flow)
            .env("NR_MQTT_HOST", "127.0.0.1")
            .env("NR_MQTT_PORT", broker_port.to_string())
            .env("NR_GOE_DEVICES", devices)
            .env("NR_PREFIX", NODE_RED_PREFIX)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning node {}", red_js.display()))?;
        Ok(NodeRed { child, dir })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines Node-RED logged, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.0.join("node-red.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the process has exited (it must not, before the bench stops it).
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not gone within a few seconds.
    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeRed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops the bridge child however the comparison ends (an early error included).
struct BridgeGuard(Option<Bridge>);

impl Drop for BridgeGuard {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.stop();
        }
    }
}

/// Finds `red.js` in DIR (an `npm install node-red@4` prefix, or the package directory itself).
fn find_red_js(dir: &Path) -> anyhow::Result<PathBuf> {
    let candidates = [dir.join("node_modules/node-red/red.js"), dir.join("red.js")];
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "no Node-RED under {} (looked for node_modules/node-red/red.js); install it with `{INSTALL_HINT}`",
            dir.display()
        )
    })
}

/// Checks that `node` runs and is new enough for Node-RED 4; returns its version.
fn check_node() -> anyhow::Result<String> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .context("`node --version` failed: install Node.js 18 or newer (Debian: `apt-get install nodejs npm`)")?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: u32 = version.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < 18 {
        bail!("Node-RED 4 needs Node.js 18 or newer; `node --version` says {version:?}");
    }
    Ok(version)
}

/// The inputs of the equivalence check: every captured `nrg` array, two arrays of the bench's own
/// traffic, and edge cases (numeric strings, nulls, a short array, a value outside the plausible range).
fn check_samples() -> anyhow::Result<Vec<String>> {
    let mut samples = Vec::new();
    for (n, line) in NRG_EXAMPLES.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("nrg-examples.jsonl line {}", n + 1))?;
        let nrg = v.get("nrg").with_context(|| format!("nrg-examples.jsonl line {} has no `nrg`", n + 1))?;
        samples.push(nrg.to_string());
    }
    samples.push(super::nrg_payload(0));
    samples.push(super::nrg_payload(123_457));
    samples.push(r#"["230.12", null, 231, 1.005, true, 0, "x", -512.25, 0, 0, 0, -1536.75, 99.99999, -50]"#.into());
    samples.push("[230, 231, 232, 2500, 16, 16, 16, 3680, 3690, 3700, 0, 11070, 100, 100, 100, 100]".into());
    Ok(samples)
}

/// The device id and serial of check sample `i`.
fn check_device(i: usize) -> (String, String) {
    (format!("chk{i}"), format!("9{i:05}"))
}

/// The bridge's config: `ev0` (serial 000000) for the load, one device per check sample.
fn bridge_config(port: u16, checks: usize) -> String {
    let mut s = super::bridge_config(port, 1, true);
    for i in 0..checks {
        let (id, serial) = check_device(i);
        s.push_str(&format!("  {id}:\n    adapter: goe\n    serial: \"{serial}\"\n    commands: false\n"));
    }
    s
}

/// What one side published for one device: topic suffix → payload.
type Published = BTreeMap<String, String>;

/// Feeds each check sample to its own device and compares what the two sides publish, value for
/// value (quantity topics as text, the state JSON's `values` as JSON). Returns how many inputs and
/// outputs were compared.
async fn check_equivalence(
    pubr: &MqttHandle,
    probe: &MqttHandle,
    samples: &[String],
    node_red: &mut NodeRed,
) -> anyhow::Result<(usize, usize)> {
    for (i, s) in samples.iter().enumerate() {
        let (_, serial) = check_device(i);
        pubr.publish(format!("go-eCharger/{serial}/nrg"), s.clone().into_bytes(), QoS::AtLeastOnce, false);
    }
    // Both sides publish retained, so subscribing now gets whatever they have already sent.
    let filters: Vec<String> = (0..samples.len())
        .flat_map(|i| {
            let (id, _) = check_device(i);
            [format!("bench/{id}/#"), format!("{NODE_RED_PREFIX}/{id}/#")]
        })
        .collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut rx = probe.subscribe_many(&refs, 1 << 14).await;
    // side ("bench" or "nodered") → device → topic suffix → payload
    let mut got: BTreeMap<(String, String), Published> = BTreeMap::new();
    let complete = |got: &BTreeMap<(String, String), Published>| {
        (0..samples.len()).all(|i| {
            let (id, _) = check_device(i);
            ["bench", NODE_RED_PREFIX]
                .iter()
                .all(|side| got.get(&(side.to_string(), id.clone())).is_some_and(|m| m.contains_key("state")))
        })
    };
    // The state JSON is each side's last publish for an input, so once both have sent it for every
    // device, every quantity topic is in too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !complete(&got) {
        if let Some(status) = node_red.exited() {
            bail!("Node-RED exited ({status}) during the equivalence check:\n{}", node_red.log_tail());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the equivalence check timed out: not every device got a state JSON from both sides; got {got:#?}");
        }
        match tokio::time::timeout(left.min(Duration::from_millis(500)), rx.recv()).await {
            Ok(Some(m)) => {
                let mut parts = m.topic.splitn(3, '/');
                let (Some(side), Some(dev), Some(rest)) = (parts.next(), parts.next(), parts.next()) else { continue };
                got.entry((side.to_string(), dev.to_string()))
                    .or_default()
                    .insert(rest.to_string(), String::from_utf8_lossy(&m.payload).into_owned());
            }
            Ok(None) => bail!("the probe client stopped during the equivalence check"),
            Err(_) => {}
        }
    }
    let mut problems = Vec::new();
    let mut outputs = 0;
    for (i, sample) in samples.iter().enumerate() {
        let (id, _) = check_device(i);
        let ours = &got[&("bench".to_string(), id.clone())];
        let theirs = &got[&(NODE_RED_PREFIX.to_string(), id.clone())];
        problems.extend(compare_device(&id, sample, ours, theirs));
        outputs += ours.keys().filter(|k| is_output(k)).count();
    }
    if !problems.is_empty() {
        bail!(
            "the Node-RED flow does not publish what hlbridge publishes for the same nrg input, so the comparison \
             would be unfair; fix bench/node-red/flow.json:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok((samples.len(), outputs))
}

/// The per-input outputs: quantity topics and the state JSON (not `availability`, `info`, `event`).
fn is_output(suffix: &str) -> bool {
    !matches!(suffix, "availability" | "info" | "event") && !suffix.contains('/')
}

/// Differences between the bridge's (`ours`) and Node-RED's (`theirs`) outputs for one device.
fn compare_device(id: &str, sample: &str, ours: &Published, theirs: &Published) -> Vec<String> {
    let mut problems = Vec::new();
    let keys = |m: &Published| m.keys().filter(|k| is_output(k)).cloned().collect::<Vec<_>>();
    let (our_keys, their_keys) = (keys(ours), keys(theirs));
    if our_keys != their_keys {
        problems.push(format!("{id} ({sample}): topics differ: hlbridge {our_keys:?}, Node-RED {their_keys:?}"));
    }
    for k in our_keys.iter().filter(|k| k.as_str() != "state") {
        if let (Some(a), Some(b)) = (ours.get(k), theirs.get(k))
            && a != b
        {
            problems.push(format!("{id} ({sample}): {k}: hlbridge {a:?}, Node-RED {b:?}"));
        }
    }
    let values = |m: &Published| {
        m.get("state")
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| v.get("values").cloned())
    };
    let (a, b) = (values(ours), values(theirs));
    if a.is_none() || a != b {
        problems.push(format!("{id} ({sample}): state values: hlbridge {a:?}, Node-RED {b:?}"));
    }
    let has_ts = |m: &Published| {
        m.get("state")
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .is_some_and(|v| v.get("ts").is_some_and(|t| t.is_string()))
    };
    if has_ts(ours) != has_ts(theirs) {
        problems.push(format!(
            "{id} ({sample}): state ts: hlbridge has one: {}, Node-RED: {}",
            has_ts(ours),
            has_ts(theirs)
        ));
    }
    problems
}

/// Publishes a retained probe input and waits for Node-RED's first output for it: a retained input
/// reaches the flow whenever its subscription lands, so this proves the whole path is up.
async fn wait_node_red_ready(
    pubr: &MqttHandle,
    probe: &MqttHandle,
    node_red: &mut NodeRed,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut rx = probe.subscribe(&format!("{NODE_RED_PREFIX}/probe/power"), 16).await;
    pubr.publish(format!("go-eCharger/{PROBE_SERIAL}/nrg"), super::nrg_payload(1).into_bytes(), QoS::AtLeastOnce, true);
    let deadline = t0 + NODE_RED_START_TIMEOUT;
    loop {
        if let Some(status) = node_red.exited() {
            bail!("Node-RED exited ({status}) before its first output:\n{}", node_red.log_tail());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "Node-RED gave no output within {}s of starting:\n{}",
                NODE_RED_START_TIMEOUT.as_secs(),
                node_red.log_tail()
            );
        }
        match tokio::time::timeout(left.min(Duration::from_millis(200)), rx.recv()).await {
            Ok(Some(_)) => return Ok(t0.elapsed()),
            Ok(None) => bail!("the probe client stopped while waiting for Node-RED"),
            Err(_) => {}
        }
    }
}

/// Latency samples (ns) and counts of the three series of the load phase.
#[derive(Default)]
struct Series {
    /// Raw one-hop messages (the physical floor).
    raw: Vec<u64>,
    /// The bridge's `power` output.
    bridge: Vec<u64>,
    /// Node-RED's `power` output.
    node_red: Vec<u64>,
}

/// Collects the three series until each has `expect` samples, nothing came for `quiet`, or
/// `deadline` passed (so a Node-RED that falls behind cannot keep the bench running).
async fn collect_three(
    rx: &mut tokio::sync::mpsc::Receiver<mqtt::Message>,
    expect: u64,
    sent: &Arc<Vec<AtomicU64>>,
    base: Instant,
    quiet: Duration,
    deadline: Instant,
) -> Series {
    let mut s = Series::default();
    let node_red_topic = format!("{NODE_RED_PREFIX}/ev0/power");
    let full = |s: &Series| [&s.raw, &s.bridge, &s.node_red].iter().all(|v| v.len() as u64 >= expect);
    while !full(&s) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(Some(m)) = tokio::time::timeout(quiet.min(left), rx.recv()).await else { break };
        let series = match m.topic.as_str() {
            "benchraw/seq" => &mut s.raw,
            "bench/ev0/power" => &mut s.bridge,
            t if t == node_red_topic => &mut s.node_red,
            _ => continue,
        };
        let Some(seq) = std::str::from_utf8(&m.payload).ok().and_then(|p| p.parse::<f64>().ok()) else { continue };
        let now = base.elapsed().as_nanos() as u64;
        let t0 = sent[(seq as usize) % sent.len()].load(Ordering::Relaxed);
        series.push(now.saturating_sub(t0));
    }
    s
}

/// The 1-, 5- and 15-minute load averages: how busy the (shared) machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs the comparison and prints it (and writes it to `json_out`).
pub async fn run(dir: &Path, quick: bool, json_out: Option<&Path>) -> anyhow::Result<()> {
    let node_version = check_node()?;
    let red_js = find_red_js(dir)?;
    let red_js = red_js.canonicalize().unwrap_or(red_js);
    let node_red_version = std::fs::read_to_string(red_js.with_file_name("package.json"))
        .ok()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .and_then(|p| p.get("version").and_then(|v| v.as_str()).map(str::to_string))
        .unwrap_or_default();
    let samples = check_samples()?;
    let load_before = loadavg();

    let port = super::free_port()?;
    let (_broker, broker_name, _) = super::start_broker(port, false).await?;
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let pubr = super::client(port, "bench-load", &tracker, &cancel)?;
    let probe = super::client(port, "bench-probe", &tracker, &cancel)?;
    super::wait_connected(&pubr).await?;
    super::wait_connected(&probe).await?;

    let bridge = BridgeGuard(Some(Bridge::spawn(&bridge_config(port, samples.len()), "vs-node-red")?));
    super::wait_online(&probe, "bench/bridge").await?;
    let mut devices = vec!["000000=ev0".to_string(), format!("{PROBE_SERIAL}=probe")];
    devices.extend((0..samples.len()).map(|i| {
        let (id, serial) = check_device(i);
        format!("{serial}={id}")
    }));
    let mut node_red = NodeRed::spawn(&red_js, port, &devices.join(","))?;
    let node_red_startup = wait_node_red_ready(&pubr, &probe, &mut node_red).await?;

    let (checked_inputs, checked_outputs) = check_equivalence(&pubr, &probe, &samples, &mut node_red).await?;
    println!(
        "equivalence: {checked_inputs} nrg inputs, {checked_outputs} outputs per side, identical (hlbridge vs Node-RED)"
    );

    // The load: the same nrg stream to both, raw one-hop messages interleaved for the floor.
    let rate = 2000u64;
    let count = rate * if quick { 2 } else { 10 };
    let node_red_power = format!("{NODE_RED_PREFIX}/ev0/power");
    let mut rx = probe
        .subscribe_many(&["benchraw/seq", "bench/ev0/power", &node_red_power, "benchraw/subscribed"], 1 << 20)
        .await;
    // A retained marker arrives whether it reaches the broker before or after the subscription,
    // and once it has, every filter of the same subscribe is active.
    pubr.publish("benchraw/subscribed", b"1".to_vec(), QoS::AtLeastOnce, true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(m)) if m.topic == "benchraw/subscribed" => break,
            Ok(Some(_)) => {}
            _ => bail!("the bench's own subscription was not confirmed within 10 s"),
        }
    }
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..1 << 20).map(|_| AtomicU64::new(0)).collect());
    let base = Instant::now();
    let make = |s: u64| {
        let raw = ("benchraw/seq".to_string(), s.to_string());
        let nrg = ("go-eCharger/000000/nrg".to_string(), super::nrg_payload(s));
        // Alternate the order so neither path is systematically first.
        if s.is_multiple_of(2) { vec![raw, nrg] } else { vec![nrg, raw] }
    };
    // One unmeasured second first, so Node-RED's JIT and both sides' caches are warm.
    let warm_first = 7_000_000 % sent.len() as u64;
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    let (_, warm) = tokio::join!(
        super::drive(&pubr, rate, rate, &sent, base, warm_first, make),
        collect_three(&mut rx, rate, &sent, base, Duration::from_secs(5), warm_deadline)
    );
    if warm.bridge.len() as u64 != rate || warm.node_red.len() as u64 != rate {
        bail!(
            "warm-up lost outputs: hlbridge {} and Node-RED {} of {rate}:\n{}",
            warm.bridge.len(),
            warm.node_red.len(),
            node_red.log_tail()
        );
    }
    let bridge_pid = bridge.0.as_ref().map(Bridge::pid).unwrap_or_default();
    let node_red_pid = node_red.pid();
    let first = 6_000_000 % sent.len() as u64;
    let (bridge_cpu0, node_red_cpu0) = (super::cpu_ns(bridge_pid), super::cpu_ns(node_red_pid));
    let drive = super::drive(&pubr, count, rate, &sent, base, first, make);
    // Long enough for a Node-RED that runs at a tenth of the rate to finish; never longer.
    let hard_deadline = Instant::now() + Duration::from_secs(count / rate * 10 + 30);
    let (_, series) =
        tokio::join!(drive, collect_three(&mut rx, count, &sent, base, Duration::from_secs(5), hard_deadline));
    let bridge_cpu = super::cpu_ns(bridge_pid) - bridge_cpu0;
    let node_red_cpu = super::cpu_ns(node_red_pid) - node_red_cpu0;
    let (bridge_rss, bridge_hwm) = super::memory_kib(bridge_pid);
    let (node_red_rss, node_red_hwm) = super::memory_kib(node_red_pid);
    let load_after = loadavg();
    if let Some(status) = node_red.exited() {
        bail!("Node-RED exited ({status}) during the load:\n{}", node_red.log_tail());
    }
    node_red.stop();
    drop(bridge);
    cancel.cancel();

    let (received_bridge, received_node_red) = (series.bridge.len(), series.node_red.len());
    let raw = super::percentiles(series.raw);
    let bridge_lat = super::percentiles(series.bridge);
    let node_red_lat = super::percentiles(series.node_red);
    let added = |path: &serde_json::Value, k: &str| {
        path.get(k).and_then(|b| b.as_f64()).zip(raw.get(k).and_then(|r| r.as_f64())).map(|(b, r)| b - r)
    };
    let bridge_us = bridge_cpu as f64 / 1000.0 / count as f64;
    let node_red_us = node_red_cpu as f64 / 1000.0 / count as f64;
    let ratio = if bridge_us > 0.0 { node_red_us / bridge_us } else { 0.0 };
    let report = json!({
        "broker": broker_name,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg_before": load_before, "loadavg_after": load_after,
        "node_version": node_version, "node_red_version": node_red_version,
        "node_red_startup_to_first_output_ms": node_red_startup.as_secs_f64() * 1000.0,
        "equivalence": {"inputs": checked_inputs, "outputs_per_side": checked_outputs, "identical": true},
        "rate": rate, "sent": count, "outputs_per_input": 17,
        "raw_hop_latency": raw,
        "hlbridge": {
            "received": received_bridge, "latency": bridge_lat,
            "added_latency_p50_us": added(&bridge_lat, "p50_us"), "added_latency_p99_us": added(&bridge_lat, "p99_us"),
            "cpu_us_per_input": bridge_us, "rss_kib": bridge_rss, "peak_rss_kib": bridge_hwm,
        },
        "node_red": {
            "received": received_node_red, "latency": node_red_lat,
            "added_latency_p50_us": added(&node_red_lat, "p50_us"), "added_latency_p99_us": added(&node_red_lat, "p99_us"),
            "cpu_us_per_input": node_red_us, "rss_kib": node_red_rss, "peak_rss_kib": node_red_hwm,
        },
        "cpu_ratio_node_red_to_hlbridge": ratio,
    });
    print_table(&report);
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = json_out {
        super::write_json(path, &text)?;
    }
    Ok(())
}

fn print_table(r: &serde_json::Value) {
    let g = |path: &[&str]| -> String {
        let mut v = r;
        for p in path {
            match v.get(*p) {
                Some(x) => v = x,
                None => return "-".into(),
            }
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
    let side = |label: &str, key: &str| -> Vec<(String, String)> {
        vec![
            (format!("{label} CPU per nrg input (us)"), g(&[key, "cpu_us_per_input"])),
            (
                format!("{label} added latency p50 / p99 (us)"),
                format!("{} / {}", g(&[key, "added_latency_p50_us"]), g(&[key, "added_latency_p99_us"])),
            ),
            (format!("{label} received / sent"), format!("{} / {}", g(&[key, "received"]), g(&["sent"]))),
            (
                format!("{label} RSS / peak RSS (KiB)"),
                format!("{} / {}", g(&[key, "rss_kib"]), g(&[key, "peak_rss_kib"])),
            ),
        ]
    };
    println!(
        "\nhlbridge vs Node-RED {} (node {}), go-e nrg at {} inputs/s, 17 outputs each, broker {}, {} cores",
        g(&["node_red_version"]),
        g(&["node_version"]),
        g(&["rate"]),
        g(&["broker"]),
        g(&["cores"])
    );
    let mut rows = side("Node-RED", "node_red");
    rows.extend(side("hlbridge", "hlbridge"));
    rows.push(("CPU ratio Node-RED / hlbridge [target >= 10]".into(), g(&["cpu_ratio_node_red_to_hlbridge"])));
    rows.push((
        "raw hop latency p50 / p99 (us)".into(),
        format!("{} / {}", g(&["raw_hop_latency", "p50_us"]), g(&["raw_hop_latency", "p99_us"])),
    ));
    rows.push((
        "load average before / after (shared machine)".into(),
        format!("{} / {}", g(&["loadavg_before"]), g(&["loadavg_after"])),
    ));
    for (k, v) in rows {
        println!("  {k:<50} {v}");
    }
    println!();
}

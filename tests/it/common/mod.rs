//! Shared harness: a throw-away MQTT broker per test (Mosquitto, or the in-process rumqttd when
//! Mosquitto is missing), a probe subscriber built on the crate's own client, the bridge started
//! from YAML text, the go-e simulator run in-process, and small HTTP / OpenMetrics helpers.
//!
//! Every wait is a condition with a deadline; nothing sleeps to synchronise.

use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use hlbridge::surface::app::Running;
use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{MqttHandle, MqttSettings, QoS};
use hlbridge::surface::simulate::goe::{GoeSimOptions, PhaseTicks};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long any single condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The simulator tick the end-to-end tests use (a real charger ticks once a second).
pub const SIM_TICK: Duration = Duration::from_millis(100);

/// Session phases short enough that a whole charging session takes about two seconds.
pub const SHORT_SESSION: PhaseTicks = PhaseTicks { idle: 4, waiting: 2, charging: 8, complete: 3 };

/// Once per process: the rustls crypto provider (reqwest and rumqttc are built without one) and,
/// when `RUST_LOG` is set, log output captured by the test harness.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// A unique number for client ids and temp dirs within this process.
pub fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Reads a fixture or config file, naming it when it cannot be read.
pub fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The crate root, for fixtures and shipped config files.
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("hlbridge-it-{tag}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// Writes `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Broker
// ---------------------------------------------------------------------------------------------

/// A free loopback port (bound, read, released: the caller must cope with a lost race).
pub fn free_port() -> u16 {
    let l = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().expect("local addr").port();
    assert_ne!(port, 1883, "never use the system broker's port");
    port
}

pub fn mosquitto_path() -> Option<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/sbin/mosquitto"), PathBuf::from("/usr/local/sbin/mosquitto")];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("mosquitto")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

enum Flavour {
    Mosquitto(PathBuf),
    Embedded,
}

fn flavour() -> Flavour {
    let wanted = std::env::var("HLBRIDGE_TEST_BROKER").unwrap_or_default();
    match (wanted.as_str(), mosquitto_path()) {
        ("embedded", _) => Flavour::Embedded,
        (_, Some(p)) => Flavour::Mosquitto(p),
        ("mosquitto", None) => panic!(
            "HLBRIDGE_TEST_BROKER=mosquitto, but no mosquitto binary was found in /usr/sbin, \
             /usr/local/sbin or PATH (install the `mosquitto` package)"
        ),
        (_, None) => {
            static NOTE: Once = Once::new();
            NOTE.call_once(|| eprintln!("note: mosquitto not found, using the in-process broker"));
            Flavour::Embedded
        }
    }
}

/// A child process (the bridge binary, a broker) killed and reaped when the test ends, also when
/// it panics: a failed test must not leave a process running that holds ports or talks to brokers.
pub struct Reaped(pub Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// The `hlbridge` binary run with `config`, quiet (warnings only, output discarded), as an operator
/// runs it; killed and reaped when dropped.
pub fn spawn_hlbridge(config: &Path) -> Reaped {
    Reaped(
        Command::new(env!("CARGO_BIN_EXE_hlbridge"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hlbridge"),
    )
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// One MQTT broker owned by one test, on its own loopback port (never 1883).
pub struct Broker {
    port: u16,
    mosquitto: Option<(PathBuf, TempDir)>,
    child: Option<Child>,
    /// Mosquitto keeps retained messages in its directory across restarts (a broker with
    /// `persistence true`, as most installs have): a restart replays them to re-subscribers.
    persistent: bool,
}

impl Broker {
    /// Starts Mosquitto on a free port (or the in-process broker, see module docs).
    pub async fn start() -> Broker {
        Broker::start_with(false).await
    }

    /// Starts a Mosquitto that persists retained messages across [`Broker::restart_gracefully`];
    /// `None` when only the in-process broker is available.
    pub async fn start_persistent() -> Option<Broker> {
        let b = Broker::start_with(true).await;
        b.can_restart().then_some(b)
    }

    async fn start_with(persistent: bool) -> Broker {
        init();
        match flavour() {
            Flavour::Mosquitto(bin) => {
                let mut last_err = String::new();
                for _ in 0..10 {
                    let port = free_port();
                    let mut b = Broker {
                        port,
                        mosquitto: Some((bin.clone(), TempDir::new("mosquitto"))),
                        child: None,
                        persistent,
                    };
                    match b.spawn_mosquitto().await {
                        Ok(()) => return b,
                        Err(e) => last_err = e,
                    }
                }
                panic!("mosquitto did not start on a free port after 10 tries: {last_err}");
            }
            #[cfg(feature = "embedded-broker")]
            Flavour::Embedded => {
                for _ in 0..10 {
                    let port = free_port();
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    if hlbridge::surface::broker::start(addr).await.is_ok() {
                        return Broker { port, mosquitto: None, child: None, persistent: false };
                    }
                }
                panic!("the in-process broker did not start on a free port after 10 tries");
            }
            #[cfg(not(feature = "embedded-broker"))]
            Flavour::Embedded => {
                panic!("no mosquitto installed and this build has no in-process broker (feature `embedded-broker`)")
            }
        }
    }

    async fn spawn_mosquitto(&mut self) -> Result<(), String> {
        let (bin, dir) = self.mosquitto.as_ref().expect("mosquitto broker");
        let persistence = if self.persistent {
            // Written by mosquitto's own user (it drops root): the directory is opened up below.
            format!("persistence true\npersistence_location {}/\n", dir.0.display())
        } else {
            "persistence false\n".to_owned()
        };
        // Its own log says whether *it* listens: a port taken between `free_port` and the bind (by
        // another test's broker) would otherwise pass the connect check below while this mosquitto
        // is still on its way to `Address already in use`, and the test would use a stranger's
        // broker that goes away with the other test.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Mosquitto started as root drops to its own user; it must still write its log and store here.
            let _ = std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777));
        }
        let log = dir.0.join("mosquitto.log");
        let _ = std::fs::remove_file(&log);
        let conf = dir.write(
            "mosquitto.conf",
            &format!(
                "listener {} 127.0.0.1\nallow_anonymous true\n{persistence}log_dest file {}\n{}",
                self.port,
                log.display(),
                // Quiet unless asked: no line per connection (that would change the broker's timing).
                if std::env::var_os("RUST_LOG").is_some() {
                    "log_dest stderr\n"
                } else {
                    "log_type error\nlog_type warning\nlog_type information\n"
                }
            ),
        );
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("RUST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("mosquitto exited with {status} (port {} taken?)", self.port));
            }
            // `running` is logged once every listener is bound (a failed bind exits before it).
            let running = std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" running"));
            if running && tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                // Accepting, and still our process.
                if matches!(child.try_wait(), Ok(None)) {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("mosquitto not accepting on port {}", self.port));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A broker some other part of the test runs (e.g. a TLS-enabled Mosquitto), reached on `port`.
    pub fn external(port: u16) -> Broker {
        Broker { port, mosquitto: None, child: None, persistent: false }
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Whether this broker can be stopped and restarted (Mosquitto yes, the in-process one no).
    pub fn can_restart(&self) -> bool {
        self.mosquitto.is_some()
    }

    /// Kills the broker (SIGKILL: like a crash, no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port (retained messages are gone unless persistent).
    pub async fn restart(&mut self) {
        assert!(self.can_restart(), "the in-process broker cannot restart");
        self.stop();
        self.spawn_again().await;
    }

    /// Stops the broker with SIGTERM (a persistent one saves its retained messages) and starts it
    /// again on the same port.
    pub async fn restart_gracefully(&mut self) {
        assert!(self.can_restart(), "the in-process broker cannot restart");
        if let Some(mut c) = self.child.take() {
            let term = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status().expect("kill(1)");
            assert!(term.success(), "kill -TERM mosquitto");
            let _ = c.wait();
        }
        self.spawn_again().await;
    }

    async fn spawn_again(&mut self) {
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn_mosquitto().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("mosquitto did not restart on port {}: {last}", self.port);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Settings for a test-side client of `broker` with quick reconnects.
pub fn client_settings(broker: &Broker, client_id: &str) -> MqttSettings {
    let mut s = MqttSettings::from_url(&broker.url(), client_id).expect("broker url");
    s.backoff_initial = Duration::from_millis(100);
    s.backoff_max = Duration::from_millis(500);
    s
}

// ---------------------------------------------------------------------------------------------
// Probe subscriber
// ---------------------------------------------------------------------------------------------

/// One message the probe saw.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: String,
    /// Delivered from the broker's retained store (a replay at subscribe time).
    pub retain: bool,
    /// Position in the probe's log (see [`Probe::mark`]).
    pub seq: usize,
}

impl Msg {
    /// The payload as JSON (panics with the payload when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.topic, self.payload))
    }
}

/// Subscribes `#` through the crate's own MQTT client and records everything.
pub struct Probe {
    handle: MqttHandle,
    log: Arc<Mutex<Vec<Msg>>>,
    notify: Arc<Notify>,
    cancel: CancellationToken,
}

impl Probe {
    /// Connects, subscribes `#` and returns once the subscription is known to be active.
    pub async fn start(broker: &Broker) -> Probe {
        Probe::start_filtered(broker, &["#"]).await
    }

    pub async fn start_filtered(broker: &Broker, filters: &[&str]) -> Probe {
        init();
        let id = format!("probe-{}", unique());
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let handle = hlbridge::surface::mqtt::spawn(
            &client_settings(broker, &id),
            Metrics::detached(),
            &tracker,
            cancel.clone(),
        )
        .expect("probe client");
        let ready = format!("probe-ready/{id}");
        let mut all: Vec<&str> = filters.to_vec();
        all.push(&ready);
        let mut rx = handle.subscribe_many(&all, 100_000).await;
        let log = Arc::new(Mutex::new(Vec::<Msg>::new()));
        let notify = Arc::new(Notify::new());
        let (l, n, c) = (log.clone(), notify.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = rx.recv() => m,
                    _ = c.cancelled() => None,
                };
                let Some(m) = m else { break };
                {
                    let mut log = l.lock().unwrap();
                    let seq = log.len();
                    log.push(Msg {
                        topic: m.topic,
                        payload: String::from_utf8_lossy(&m.payload).into_owned(),
                        retain: m.retain,
                        seq,
                    });
                }
                n.notify_waiters();
            }
        });
        let probe = Probe { handle, log, notify, cancel };
        // The broker handles our SUBSCRIBE before our later PUBLISH: once the marker comes back,
        // the subscription is live and every retained replay for it has been delivered.
        probe
            .wait_until("the probe connects", Instant::now() + DEADLINE, |p: &Probe| {
                p.handle.state().connected.then_some(())
            })
            .await;
        probe.publish(&ready, "1");
        probe.wait_for("the probe's readiness marker", |m| m.topic == ready).await;
        probe
    }

    /// The probe's own client, for publishing.
    pub fn handle(&self) -> &MqttHandle {
        &self.handle
    }

    /// Publishes (QoS 1, not retained).
    pub fn publish(&self, topic: &str, payload: &str) {
        assert!(self.handle.publish(topic, payload, QoS::AtLeastOnce, false));
    }

    /// Publishes retained (QoS 1).
    pub fn publish_retained(&self, topic: &str, payload: &str) {
        assert!(self.handle.publish(topic, payload, QoS::AtLeastOnce, true));
    }

    /// The number of messages seen so far; pass it to the `*_since` helpers.
    pub fn mark(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Every message on `topic` so far.
    pub fn all(&self, topic: &str) -> Vec<Msg> {
        self.log.lock().unwrap().iter().filter(|m| m.topic == topic).cloned().collect()
    }

    /// Every message seen so far, on any topic.
    pub fn everything(&self) -> Vec<Msg> {
        self.log.lock().unwrap().clone()
    }

    /// The newest payload seen on `topic` (live or retained replay).
    pub fn latest(&self, topic: &str) -> Option<String> {
        self.log.lock().unwrap().iter().rev().find(|m| m.topic == topic).map(|m| m.payload.clone())
    }

    fn describe_recent(&self) -> String {
        let log = self.log.lock().unwrap();
        let start = log.len().saturating_sub(25);
        let mut s = format!("{} messages seen; the last ones:\n", log.len());
        for m in &log[start..] {
            let p: String = m.payload.chars().take(160).collect();
            s.push_str(&format!("  #{} {} {}{}\n", m.seq, m.topic, p, if m.retain { " (retained)" } else { "" }));
        }
        s
    }

    /// Waits until `check` returns something, re-checking on every new message and every 50 ms.
    async fn wait_until<T>(&self, what: &str, deadline: Instant, check: impl Fn(&Probe) -> Option<T>) -> T {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = check(self) {
                return t;
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting until {what}\n{}", self.describe_recent());
            }
            let nap = deadline.min(Instant::now() + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(nap, notified).await;
        }
    }

    /// The first message (from the start of the log) matching `pred`.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        self.wait_for_since(0, what, pred).await
    }

    /// The first message after `mark` matching `pred`.
    pub async fn wait_for_since(&self, mark: usize, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        self.wait_for_within(mark, DEADLINE, what, pred).await
    }

    /// Like [`Probe::wait_for_since`] with a custom time limit.
    pub async fn wait_for_within(&self, mark: usize, limit: Duration, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        self.wait_until(what, Instant::now() + limit, |p: &Probe| {
            let log = p.log.lock().unwrap();
            log.iter().skip(mark).find(|m| pred(m)).cloned()
        })
        .await
    }

    /// Waits until the newest payload on `topic` satisfies `pred` and returns it.
    pub async fn wait_latest(&self, topic: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_until(
            &format!("the latest value on {topic} satisfies the condition"),
            Instant::now() + DEADLINE,
            |p: &Probe| p.latest(topic).filter(|v| pred(v)),
        )
        .await
    }

    /// Waits until the newest payload on `topic` is exactly `value`.
    pub async fn wait_value(&self, topic: &str, value: &str) -> String {
        self.wait_until(&format!("{topic} = {value}"), Instant::now() + DEADLINE, |p: &Probe| {
            p.latest(topic).filter(|v| v == value)
        })
        .await
    }

    /// Waits for the first message on `topic` after `mark` and returns it.
    pub async fn next_on(&self, mark: usize, topic: &str) -> Msg {
        self.wait_for_since(mark, &format!("a message on {topic}"), |m| m.topic == topic).await
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What the broker holds retained on `topic` right now, asked by a fresh client: `None` when
/// nothing is retained. Deterministic: the broker replays retained messages for a SUBSCRIBE
/// before it handles the same client's later PUBLISH of a marker.
pub async fn latest_retained(broker: &Broker, topic: &str) -> Option<String> {
    let p = Probe::start_filtered(broker, &[topic]).await;
    let found = p.all(topic).into_iter().filter(|m| m.retain).map(|m| m.payload).next_back();
    drop(p);
    found
}

// ---------------------------------------------------------------------------------------------
// Bridge
// ---------------------------------------------------------------------------------------------

/// A config file for a bridge on `broker` with the given `devices:` block (already indented by
/// two spaces) and optional extra top-level YAML.
pub fn bridge_yaml(broker: &Broker, devices: &str, extra: &str) -> String {
    format!(
        "mqtt:\n  url: {}\n  client_id: hlbridge-it-{}\n  reconnect_max: 1s\n\
         output:\n  prefix: home\nhttp:\n  listen: 127.0.0.1:0\n{extra}devices:\n{devices}",
        broker.url(),
        unique()
    )
}

/// Parses `yaml` like a config file.
pub fn load_config(yaml: &str) -> hlbridge::surface::config::Config {
    hlbridge::surface::config::load_str(yaml, "test.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("test config does not load:\n{e}\n---\n{yaml}"))
}

/// Starts the bridge from `yaml` with its HTTP endpoint on a fresh loopback port.
pub async fn start_bridge(yaml: &str) -> Running {
    init();
    let config = load_config(yaml);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http listener");
    hlbridge::surface::app::start(&config, Some(listener)).await.expect("bridge starts")
}

/// The bridge's HTTP base URL.
pub fn http_base(running: &Running) -> String {
    format!("http://{}", running.http_addr.expect("the bridge serves HTTP in tests"))
}

/// Waits until `check` holds, polling every 50 ms, or panics after [`DEADLINE`].
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Simulator
// ---------------------------------------------------------------------------------------------

/// A go-e simulator running in-process.
pub struct Sim {
    cancel: CancellationToken,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// `http://127.0.0.1:<port>` when the HTTP API is served.
    pub http_url: Option<String>,
}

impl Sim {
    /// Starts a simulator publishing to `broker` (if given) and serving HTTP (if `http`), with a
    /// 100 ms tick and short sessions; `tweak` adjusts the options (serial, prefix, read-only...).
    pub async fn start(broker: Option<&Broker>, http: bool, tweak: impl FnOnce(&mut GoeSimOptions)) -> Sim {
        init();
        let mut opts = GoeSimOptions { tick: SIM_TICK, phase_ticks: SHORT_SESSION, ..Default::default() };
        tweak(&mut opts);
        if let Some(b) = broker {
            opts.broker = Some(client_settings(b, &format!("go-echarger_{}", opts.serial)));
        }
        let mut http_url = None;
        if http {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind simulator http");
            http_url = Some(format!("http://{}", l.local_addr().unwrap()));
            opts.http = Some(l);
        }
        let cancel = CancellationToken::new();
        let join = tokio::spawn(hlbridge::surface::simulate::goe::run(opts, cancel.clone()));
        Sim { cancel, join: Some(join), http_url }
    }

    /// Stops the simulator (it disconnects cleanly) and waits for it.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(j) = self.join.take() {
            let r = tokio::time::timeout(DEADLINE, j)
                .await
                .expect("simulator stops in time")
                .expect("simulator task does not panic");
            r.expect("simulator ends without error");
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP and OpenMetrics
// ---------------------------------------------------------------------------------------------

/// A GET answer.
pub struct Got {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// GET `url` (plain HTTP, no proxy).
pub async fn http_get(url: &str) -> Got {
    try_http_get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET `url`, or why not: for a process that may not be listening yet (a spawned binary starting
/// up), where "connection refused" means "not yet", not a failure.
pub async fn try_http_get(url: &str) -> Result<Got, reqwest::Error> {
    init();
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().expect("http client");
    let resp = client.get(url).send().await?;
    let status = resp.status().as_u16();
    let content_type =
        resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = resp.text().await?;
    Ok(Got { status, content_type, body })
}

/// One OpenMetrics sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the sample lines of an OpenMetrics text (comments skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        out.push(Sample { name: name.to_owned(), labels, value });
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((k.trim_start_matches(',').trim().to_owned(), value));
        rest = &after[end..];
    }
    out
}

/// The samples named `name` whose labels include every pair of `labels`.
pub fn find_samples<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v)))
        .collect()
}

/// The value of the one sample `name{labels...}`, or `None`.
pub fn sample_value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found = find_samples(samples, name, labels);
    assert!(found.len() <= 1, "several samples match {name} {labels:?}: {found:?}");
    found.first().map(|s| s.value)
}

/// A device's messages received and dropped at its queue (`hlbridge_messages_received_total`,
/// `hlbridge_ingest_dropped_total`) in `samples`; 0 for a counter not there yet.
pub fn received_and_dropped(samples: &[Sample], device: &str) -> (u64, u64) {
    let of = |name| sample_value(samples, name, &[("device", device)]).unwrap_or(0.0) as u64;
    (of("hlbridge_messages_received_total"), of("hlbridge_ingest_dropped_total"))
}

/// GET `/metrics` of the bridge, parsed.
pub async fn scrape(running: &Running) -> (String, Vec<Sample>) {
    let got = http_get(&format!("{}/metrics", http_base(running))).await;
    assert_eq!(got.status, 200, "/metrics answers 200: {}", got.body);
    let samples = parse_samples(&got.body);
    (got.body, samples)
}

// ---------------------------------------------------------------------------------------------
// A broker, a probe and a bridge together
// ---------------------------------------------------------------------------------------------

/// A broker, a probe subscribed to everything and a bridge whose `home/bridge/status` is online.
pub struct Lab {
    pub broker: Broker,
    pub probe: Probe,
    pub bridge: Running,
}

impl Lab {
    /// A new broker and a bridge with `devices` (indented by two spaces) and `extra` top-level YAML.
    pub async fn start(devices: &str, extra: &str) -> Lab {
        Lab::start_on(Broker::start().await, devices, extra).await
    }

    /// Like [`Lab::start`] on an existing broker.
    pub async fn start_on(broker: Broker, devices: &str, extra: &str) -> Lab {
        let probe = Probe::start(&broker).await;
        let bridge = start_bridge(&bridge_yaml(&broker, devices, extra)).await;
        probe.wait_value("home/bridge/status", "online").await;
        Lab { broker, probe, bridge }
    }

    /// Publishes `payload` on `<base>/<quantity>/set` and returns the JSON on `.../result`.
    pub async fn command(&self, base: &str, quantity: &str, payload: &str) -> serde_json::Value {
        let mark = self.probe.mark();
        self.probe.publish(&format!("{base}/{quantity}/set"), payload);
        let result = self.probe.next_on(mark, &format!("{base}/{quantity}/result")).await;
        assert!(!result.retain, "command results are not retained");
        result.json()
    }
}

// ---------------------------------------------------------------------------------------------
// Golden files
// ---------------------------------------------------------------------------------------------

/// Compares `actual` with `<dir>/golden/<fixture>.expected.json` (or, under `HLBRIDGE_BLESS=1`,
/// writes it), showing the differing lines.
pub fn golden(dir: &Path, fixture: &str, actual: &serde_json::Value) {
    let path = dir.join("golden").join(format!("{fixture}.expected.json"));
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var("HLBRIDGE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}\nrun `HLBRIDGE_BLESS=1 cargo test --test it` to create it, then review it", path.display())
    });
    let expected: serde_json::Value = serde_json::from_str(&expected).expect("golden file is JSON");
    if &expected != actual {
        let exp = serde_json::to_string_pretty(&expected).unwrap();
        let mut diff = String::new();
        let (a, b): (Vec<&str>, Vec<&str>) = (exp.lines().collect(), text.lines().collect());
        for i in 0..a.len().max(b.len()) {
            let (x, y) = (a.get(i).copied(), b.get(i).copied());
            if x != y {
                diff.push_str(&format!("line {}:\n  - {}\n  + {}\n", i + 1, x.unwrap_or(""), y.unwrap_or("")));
                if diff.len() > 4000 {
                    break;
                }
            }
        }
        panic!(
            "{fixture}: the replay differs from {}\n{diff}\n\
             if the change is intended, re-bless with HLBRIDGE_BLESS=1 and review the diff",
            path.display()
        );
    }
}

/// `2026-11-22T03:04:05.123Z`.
pub fn assert_rfc3339_utc(s: &str) {
    let ok = s.len() == 24
        && s.ends_with('Z')
        && time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok();
    assert!(ok, "`{s}` is not an RFC 3339 UTC timestamp with milliseconds");
}

// ---------------------------------------------------------------------------------------------
// Relays between a client and the broker
// ---------------------------------------------------------------------------------------------

/// A TCP relay in front of `broker` on a fresh loopback port: every client connection is handed,
/// with the broker's address, to `serve`, which decides what passes and when. Stops accepting
/// when dropped.
pub struct Relay {
    /// The port clients connect to.
    pub port: u16,
    /// Ends the accept loop.
    stop: CancellationToken,
}

impl Relay {
    pub async fn start<F, Fut>(broker: &Broker, serve: F) -> Relay
    where
        F: Fn(tokio::net::TcpStream, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let target = broker.url().trim_start_matches("mqtt://").to_owned();
        let stop = CancellationToken::new();
        let cancel = stop.clone();
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = listener.accept() => match c { Ok((c, _)) => c, Err(_) => return },
                };
                tokio::spawn(serve(client, target.clone()));
            }
        });
        Relay { port, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A client's CONNECT packet as read off the socket.
pub struct ConnectPacket {
    /// The packet's bytes, to be passed on.
    pub bytes: Vec<u8>,
    /// Where the variable header (`00 04 MQTT`, level, flags, keep-alive) starts.
    body: usize,
}

impl ConnectPacket {
    /// Reads the whole CONNECT; `None` when the client goes away first or sends no valid one.
    pub async fn read(client: &mut tokio::net::TcpStream) -> Option<ConnectPacket> {
        use tokio::io::AsyncReadExt;
        let mut bytes = vec![client.read_u8().await.ok()?];
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = client.read_u8().await.ok()?;
            bytes.push(b);
            len |= ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
            if shift > 21 {
                return None;
            }
        }
        let body = bytes.len();
        bytes.resize(body + len, 0);
        client.read_exact(&mut bytes[body..]).await.ok()?;
        (len >= 10).then_some(ConnectPacket { bytes, body })
    }

    /// The protocol level (4: MQTT 3.1.1, 5: MQTT 5), after the fixed header and `00 04 MQTT`.
    pub fn level(&self) -> u8 {
        self.bytes[self.body + 6]
    }

    /// The client id: the payload's first field (MQTT 3.1.1 only: 5 puts properties before it).
    pub fn client_id(&self) -> String {
        let at = self.body + 10;
        let len = self.bytes.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
        self.bytes.get(at + 2..at + 2 + len).map(|id| String::from_utf8_lossy(id).into_owned()).unwrap_or_default()
    }
}

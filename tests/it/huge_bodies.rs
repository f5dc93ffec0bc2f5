//! Devices that answer with huge or endless bodies: a misbehaving HTTP server of the test's own
//! plays a whatwatt Go gateway (report, system, SSE stream) and a go-e charger (`/api/status`) and
//! answers 100 MB bodies, generated as a stream (never a buffer), first with a `Content-Length`,
//! then chunked without one; the SSE stream sends one endless line. The `hlbridge` binary runs as a
//! child process so its own memory can be read from `/proc/<pid>/status` (an in-process bridge
//! would share its peak with every other test of this binary).
//!
//! Asserted: the bridge keeps running, its peak resident memory grows by less than 50 MB, every
//! device goes offline with a reason naming the limit, `hlbridge_parse_errors_total` counts
//! `body_too_large` / `sse_overflow` per device, the failure is logged once per episode (not per
//! request), the server never gets to send a whole 100 MB answer, and every device comes back
//! online once the server answers normally again.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::{Broker, Reaped, TempDir, find_samples, http_get, manifest_dir, parse_samples, read_file, unique};

/// What one huge answer offers: 100 MB.
const HUGE: u64 = 100 * 1024 * 1024;
/// The write size of a huge answer.
const CHUNK: usize = 64 * 1024;
/// How much the bridge's peak resident memory may grow (generous: the cap is 512 KiB per read).
const MAX_GROWTH_KB: u64 = 50 * 1024;
/// Waits here may take long: the old code read every 100 MB answer whole, on a shared CPU.
const LIMIT: Duration = Duration::from_secs(60);

/// How the server answers right now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    /// Real captures, a few KiB each; the stream sends an event every 100 ms.
    Normal = 0,
    /// 100 MB bodies announced by `Content-Length`.
    HugeWithLength = 1,
    /// 100 MB bodies in chunked encoding, no length up front.
    HugeChunked = 2,
}

/// The endpoints the server plays.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Report = 0,
    System = 1,
    Live = 2,
    Status = 3,
}

/// The misbehaving device server: one listener on 127.0.0.1:0 for all four endpoints.
struct Server {
    url: String,
    mode: Arc<AtomicU8>,
    /// Huge answers finished (written whole or cut off by the client), per endpoint.
    huge_done: Arc<[AtomicU64; 4]>,
    /// The most bytes one huge answer got to write before the client hung up.
    most_written: Arc<AtomicU64>,
    cancel: CancellationToken,
}

/// The fixture answers of normal mode.
struct Normal {
    report: Value,
    system: String,
    live_event: String,
    status: String,
    /// Report ids count up so every poll is a new reading.
    report_id: AtomicU64,
}

impl Server {
    async fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind the misbehaving server");
        let url = format!("http://{}", l.local_addr().unwrap());
        let fixtures = manifest_dir().join("adapters");
        let live = read_file(&fixtures.join("whatwatt/fixtures/docs_live_sse_event.txt"));
        let normal = Arc::new(Normal {
            report: serde_json::from_str(&read_file(
                &fixtures.join("whatwatt/fixtures/docs_report_landisgyr_mbus_dlms.json"),
            ))
            .expect("report fixture is JSON"),
            system: read_file(&fixtures.join("whatwatt/fixtures/docs_system_get_fw1.10.0.json")),
            live_event: format!("{}\n\n", live.trim_end()),
            status: read_file(&fixtures.join("goe/fixtures/http-status-filtered-fw055.0-3phase.jsonl"))
                .lines()
                .next()
                .expect("a go-e status line")
                .to_owned(),
            report_id: AtomicU64::new(1),
        });
        let server = Server {
            url,
            mode: Arc::new(AtomicU8::new(Mode::Normal as u8)),
            huge_done: Arc::new(Default::default()),
            most_written: Arc::new(AtomicU64::new(0)),
            cancel: CancellationToken::new(),
        };
        let (mode, done, most, cancel) =
            (server.mode.clone(), server.huge_done.clone(), server.most_written.clone(), server.cancel.clone());
        tokio::spawn(async move {
            loop {
                let (conn, _) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    a = l.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (mode, done, most, normal, cancel) =
                    (mode.clone(), done.clone(), most.clone(), normal.clone(), cancel.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = answer(conn, &mode, &done, &most, &normal) => {}
                    }
                });
            }
        });
        server
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn huge_done(&self, e: Endpoint) -> u64 {
        self.huge_done[e as usize].load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn mode_of(m: &AtomicU8) -> Mode {
    match m.load(Ordering::SeqCst) {
        1 => Mode::HugeWithLength,
        2 => Mode::HugeChunked,
        _ => Mode::Normal,
    }
}

async fn answer(mut conn: TcpStream, mode: &AtomicU8, done: &[AtomicU64; 4], most: &AtomicU64, normal: &Normal) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let endpoint = match path {
        p if p.starts_with("/api/v1/report") => Endpoint::Report,
        p if p.starts_with("/api/v1/system") => Endpoint::System,
        p if p.starts_with("/api/v1/live") => Endpoint::Live,
        p if p.starts_with("/api/status") => Endpoint::Status,
        _ => {
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
            return;
        }
    };
    let m = mode_of(mode);
    if m == Mode::Normal {
        return answer_normally(conn, endpoint, mode, normal).await;
    }
    let written = match endpoint {
        // An event stream has no length: one endless line, whatever the mode.
        Endpoint::Live => {
            stream_huge(&mut conn, "Content-Type: text/event-stream\r\nConnection: close\r\n", b"data: ", false).await
        }
        _ if m == Mode::HugeWithLength => {
            let h = format!("Content-Type: application/json\r\nContent-Length: {HUGE}\r\nConnection: close\r\n");
            stream_huge(&mut conn, &h, b"", false).await
        }
        _ => {
            stream_huge(&mut conn, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", b"", true).await
        }
    };
    most.fetch_max(written, Ordering::SeqCst);
    done[endpoint as usize].fetch_add(1, Ordering::SeqCst);
}

/// Writes a 200 head with `headers`, then `prefix` and up to [`HUGE`] bytes of `x` (in chunked
/// encoding if asked); returns the body bytes written before the client hung up.
async fn stream_huge(conn: &mut TcpStream, headers: &str, prefix: &[u8], chunked: bool) -> u64 {
    let head = format!("HTTP/1.1 200 OK\r\n{headers}\r\n");
    if conn.write_all(head.as_bytes()).await.is_err() || conn.write_all(prefix).await.is_err() {
        return 0;
    }
    let block = vec![b'x'; CHUNK];
    let mut written = 0u64;
    while written < HUGE {
        let ok = if chunked {
            let size = format!("{CHUNK:x}\r\n");
            conn.write_all(size.as_bytes()).await.is_ok()
                && conn.write_all(&block).await.is_ok()
                && conn.write_all(b"\r\n").await.is_ok()
        } else {
            conn.write_all(&block).await.is_ok()
        };
        if !ok {
            return written;
        }
        written += CHUNK as u64;
    }
    if chunked {
        let _ = conn.write_all(b"0\r\n\r\n").await;
    }
    written
}

async fn answer_normally(mut conn: TcpStream, endpoint: Endpoint, mode: &AtomicU8, normal: &Normal) {
    let body = match endpoint {
        Endpoint::Report => {
            let mut r = normal.report.clone();
            r["report"]["id"] = normal.report_id.fetch_add(1, Ordering::SeqCst).into();
            r.to_string()
        }
        Endpoint::System => normal.system.clone(),
        Endpoint::Status => normal.status.clone(),
        Endpoint::Live => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
            if conn.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            // Events until the mode changes; then the stream ends and the bridge reconnects.
            while mode_of(mode) == Mode::Normal {
                if conn.write_all(normal.live_event.as_bytes()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return;
        }
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
}

/// The `hlbridge` binary as a child process, its stderr collected; killed on drop.
struct Bridge {
    /// Killed when the test ends.
    child: Reaped,
    log: Arc<Mutex<Vec<String>>>,
    base: String,
}

impl Bridge {
    async fn start(broker: &Broker, server: &Server, dir: &TempDir) -> Bridge {
        let url = &server.url;
        let config = dir.write(
            "hlbridge.yaml",
            &format!(
                "mqtt:\n  url: {}\n  client_id: hlbridge-huge-{}\n  reconnect_max: 1s\noutput:\n  prefix: home\n\
                 http:\n  listen: 127.0.0.1:0\ndevices:\n\
                 \x20 meter_poll:\n    adapter: whatwatt\n    url: {url}\n    transport: poll\n    interval: 500ms\n    timeout: 2s\n\
                 \x20 meter_sse:\n    adapter: whatwatt\n    url: {url}\n    watchdog: 2s\n    timeout: 2s\n    \
                 reconnect_delay: 100ms\n    reconnect_max: 500ms\n    fallback:\n      after: 0\n\
                 \x20 charger:\n    adapter: goe\n    transport: http\n    url: {url}\n    interval: 500ms\n    timeout: 2s\n",
                broker.url(),
                unique()
            ),
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_hlbridge"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,rumqttc=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hlbridge");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        // Drains stderr for the child's whole life, so a full pipe never blocks its logging.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut bridge = Bridge { child: Reaped(child), log, base: String::new() };
        let port = wait("the bridge logs its HTTP address", async || {
            assert!(bridge.child.try_wait().unwrap().is_none(), "hlbridge exited:\n{}", bridge.log_text());
            bridge.log.lock().unwrap().iter().find(|l| l.contains("serving /metrics")).and_then(|l| {
                let at = l.find("127.0.0.1:")? + "127.0.0.1:".len();
                l[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u16>().ok()
            })
        })
        .await;
        bridge.base = format!("http://127.0.0.1:{port}");
        bridge
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Log lines mentioning `device` and containing `text`.
    fn log_count(&self, device: &str, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(&format!("device={device}")) && l.contains(text)).count()
    }

    fn assert_running(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "hlbridge exited:\n{}", self.log_text());
    }

    /// `(peak, current)` resident memory in KiB, from `/proc/<pid>/status`.
    fn memory_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} in /proc status"))
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    async fn readyz(&self) -> Value {
        let got = http_get(&format!("{}/readyz", self.base)).await;
        serde_json::from_str(&got.body).unwrap_or_else(|e| panic!("readyz is JSON ({e}): {}", got.body))
    }

    async fn parse_errors(&self, device: &str, reason: &str) -> f64 {
        let got = http_get(&format!("{}/metrics", self.base)).await;
        let samples = parse_samples(&got.body);
        find_samples(&samples, "hlbridge_parse_errors_total", &[("device", device), ("reason", reason)])
            .iter()
            .map(|s| s.value)
            .sum()
    }

    /// Waits until `device` is offline with a reason containing `needle`.
    async fn offline_because(&self, device: &str, needle: &str) {
        let what = format!("{device} is offline with a reason containing `{needle}`");
        let mut last = Value::Null;
        let found = wait_or(&what, async || {
            let d = self.readyz().await["devices"][device].clone();
            let hit = d["availability"] == "offline" && d["reason"].as_str().is_some_and(|r| r.contains(needle));
            last = d;
            hit.then_some(())
        })
        .await;
        assert!(found.is_some(), "timed out waiting until {what}; last /readyz entry: {last}");
    }

    async fn online(&self, device: &str) {
        let mut last = Value::Null;
        let found = wait_or(&format!("{device} is online"), async || {
            let d = self.readyz().await["devices"][device].clone();
            let hit = d["availability"] == "online";
            last = d;
            hit.then_some(())
        })
        .await;
        assert!(found.is_some(), "timed out waiting until {device} is online; last /readyz entry: {last}");
    }
}

/// Polls `check` every 50 ms until it gives something, or `None` after [`LIMIT`].
async fn wait_or<T>(_what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(t) = check().await {
            return Some(t);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait<T>(what: &str, check: impl AsyncFnMut() -> Option<T>) -> T {
    wait_or(what, check).await.unwrap_or_else(|| panic!("timed out waiting until {what}"))
}

/// Waits until the server has finished `more` further huge answers on each endpoint in `endpoints`.
async fn huge_answers(server: &Server, endpoints: &[Endpoint], more: u64) {
    let start: Vec<u64> = endpoints.iter().map(|e| server.huge_done(*e)).collect();
    wait(&format!("{more} more huge answers on each of {endpoints:?}"), async || {
        endpoints.iter().zip(&start).all(|(e, s)| server.huge_done(*e) >= s + more).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_answering_100_mb_bodies_are_cut_off_counted_offline_and_recover_with_bounded_memory() {
    let broker = Broker::start().await;
    let server = Server::start().await;
    // Huge from the very start, so the gateway's identity probe (/api/v1/system) meets it too.
    server.set(Mode::HugeWithLength);
    let dir = TempDir::new("huge-bodies");
    let mut bridge = Bridge::start(&broker, &server, &dir).await;
    let (start_peak, start_rss) = bridge.memory_kb();

    // Phase 1: 100 MB with Content-Length (and an endless SSE line).
    huge_answers(&server, &[Endpoint::Report, Endpoint::Status, Endpoint::Live], 4).await;
    assert!(server.huge_done(Endpoint::System) >= 2, "both whatwatt devices probed /api/v1/system");
    bridge.assert_running();
    let (peak_1, _) = bridge.memory_kb();
    eprintln!(
        "hlbridge memory: start peak {start_peak} KiB (rss {start_rss}), after 100 MB answers with length peak {peak_1} KiB"
    );
    assert!(
        peak_1 < start_peak + MAX_GROWTH_KB,
        "peak resident memory grew from {start_peak} KiB to {peak_1} KiB on 100 MB answers"
    );
    bridge.offline_because("meter_poll", "Content-Length over the 512 KiB limit").await;
    bridge.offline_because("charger", "Content-Length over the 512 KiB limit").await;
    bridge.offline_because("meter_sse", "longer than 64 KiB").await;
    assert!(bridge.parse_errors("meter_poll", "body_too_large").await >= 5.0, "4 reports and the probe");
    assert!(bridge.parse_errors("meter_sse", "body_too_large").await >= 1.0, "its identity probe");
    assert!(bridge.parse_errors("meter_sse", "sse_overflow").await >= 4.0);
    assert!(bridge.parse_errors("charger", "body_too_large").await >= 4.0);

    // Back to normal answers: every device comes back.
    server.set(Mode::Normal);
    for d in ["meter_poll", "meter_sse", "charger"] {
        bridge.online(d).await;
    }

    // Phase 2: 100 MB chunked, no length up front: read up to the cap and abandoned there.
    let before = [
        bridge.parse_errors("meter_poll", "body_too_large").await,
        bridge.parse_errors("charger", "body_too_large").await,
        bridge.parse_errors("meter_sse", "sse_overflow").await,
    ];
    server.set(Mode::HugeChunked);
    huge_answers(&server, &[Endpoint::Report, Endpoint::Status, Endpoint::Live], 4).await;
    bridge.assert_running();
    let (peak_2, rss_2) = bridge.memory_kb();
    eprintln!("hlbridge memory: after 100 MB chunked answers peak {peak_2} KiB (rss {rss_2})");
    assert!(
        peak_2 < start_peak + MAX_GROWTH_KB,
        "peak resident memory grew from {start_peak} KiB to {peak_2} KiB on chunked 100 MB answers"
    );
    bridge.offline_because("meter_poll", "longer than the 512 KiB limit; stopped reading").await;
    bridge.offline_because("charger", "longer than the 512 KiB limit; stopped reading").await;
    bridge.offline_because("meter_sse", "longer than 64 KiB").await;
    assert!(bridge.parse_errors("meter_poll", "body_too_large").await >= before[0] + 4.0);
    assert!(bridge.parse_errors("charger", "body_too_large").await >= before[1] + 4.0);
    assert!(bridge.parse_errors("meter_sse", "sse_overflow").await >= before[2] + 4.0);
    let most = server.most_written.load(Ordering::SeqCst);
    assert!(most < HUGE / 2, "the bridge let one answer run to {most} bytes instead of hanging up at the cap");

    // Logged once per episode (two so far), not once per refused answer.
    assert!((1..=2).contains(&bridge.log_count("meter_poll", "poll failed")), "{}", bridge.log_text());
    assert!((1..=2).contains(&bridge.log_count("charger", "poll failed")), "{}", bridge.log_text());
    assert_eq!(bridge.log_count("meter_sse", "sse_overflow"), 1, "{}", bridge.log_text());

    server.set(Mode::Normal);
    for d in ["meter_poll", "meter_sse", "charger"] {
        bridge.online(d).await;
    }
    bridge.assert_running();
}

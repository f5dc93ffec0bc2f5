//! The live view and logging with the real demo (`config/demo.yaml`, its ports moved to free ones):
//! its screen drawn into ratatui's `TestBackend` at 160×50 and 80×24, `q` on a real pseudo-terminal
//! stopping the bridge cleanly, plain lines without a terminal, and the logging flags.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hlbridge::surface::console::draw::{self, UiState};
use hlbridge::surface::console::view::{Header, Model, View};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::common::{
    Broker, Probe, Reaped, TempDir, eventually, free_port, latest_retained, manifest_dir, read_file, start_bridge,
};

/// `config/demo.yaml` with every port moved to a free one. `mqtt_url` replaces the embedded broker
/// (`None` keeps it, on a free port: see [`demo_yaml_embedded`]); `console` sets `output.console`.
fn demo_yaml(mqtt_url: Option<&str>, console: bool) -> String {
    demo_yaml_on(mqtt_url, free_port(), console)
}

/// The demo with its embedded broker on a free port, and that port.
#[cfg(feature = "embedded-broker")]
fn demo_yaml_embedded(console: bool) -> (String, u16) {
    let port = free_port();
    (demo_yaml_on(None, port, console), port)
}

fn demo_yaml_on(mqtt_url: Option<&str>, embedded_port: u16, console: bool) -> String {
    let demo = read_file(&manifest_dir().join("config/demo.yaml"));
    let charger_http = format!("127.0.0.1:{}", free_port());
    let meter = format!("127.0.0.1:{}", free_port());
    let mut out = String::new();
    for line in demo.lines() {
        let line = match line.trim_start() {
            l if l.starts_with('#') => continue,
            l if l.starts_with("embedded:") && mqtt_url.is_some() => format!("  url: {}", mqtt_url.unwrap_or("")),
            l if l.starts_with("listen: 127.0.0.1:1884") => match mqtt_url {
                Some(_) => continue,
                None => format!("    listen: 127.0.0.1:{embedded_port}"),
            },
            l if l.starts_with("client_id:") => format!("  client_id: hlbridge-console-{}", crate::common::unique()),
            l if l.starts_with("console:") => format!("  console: {console}"),
            l if l.starts_with("listen: 127.0.0.1:9464") => "  listen: null".to_owned(),
            _ => line.replace("127.0.0.1:8089", &charger_http).replace("127.0.0.1:1891", &meter),
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert!(!out.contains(":1884") && !out.contains(":9464") && !out.contains(":8089") && !out.contains(":1891"));
    out
}

/// The demo's device ids, from the shipped file.
fn demo_ids() -> Vec<String> {
    let config = crate::common::load_config(&demo_yaml(Some("mqtt://127.0.0.1:1"), false));
    config.devices.keys().cloned().collect()
}

fn render(view: &View, ui: &mut UiState, w: u16, h: u16) -> Vec<String> {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    term.draw(|f| draw::draw(f, view, ui)).expect("draw");
    let buf = term.backend().buffer().clone();
    (0..h).map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_demo_shows_every_device_at_160x50_and_fits_80x24() {
    let broker = Broker::start().await;
    let running = start_bridge(&demo_yaml(Some(&broker.url()), false)).await;
    let ids = demo_ids();
    // Every device online with values (the water meter's first round comes at start).
    let snapshots = eventually("every demo device is online with values", async || {
        let s = running.router.snapshot();
        (s.len() == ids.len() && s.iter().all(|d| d.online && !d.values.is_empty())).then_some(s)
    })
    .await;
    let mut model = Model::default();
    model.sample(&snapshots);
    let header = Header {
        broker: broker.url(),
        connected: running.mqtt.state().connected,
        uptime: Duration::from_secs(5),
        http: None,
    };
    let view = model.view(&snapshots, header, SystemTime::now());

    let rows = render(&view, &mut UiState::default(), 160, 50);
    let screen = rows.join("\n");
    for id in &ids {
        let row = rows.iter().find(|r| r.contains(&format!(" {id} "))).unwrap_or_else(|| panic!("{id}:\n{screen}"));
        assert!(row.contains(" online "), "{id} shows it is online:\n{screen}");
    }
    assert!(rows[0].contains(&format!("{n}/{n} online", n = ids.len())), "{screen}");
    assert!(rows[49].contains("q quit") && rows[49].contains("enter expand"), "{screen}");

    let rows = render(&view, &mut UiState::default(), 80, 24);
    let screen = rows.join("\n");
    for (id, panel) in ids.iter().zip(&view.devices) {
        let at = rows.iter().position(|r| r.contains(&format!(" {id} "))).unwrap_or_else(|| panic!("{id}:\n{screen}"));
        let cells: Vec<&str> = rows[at + 1].trim_matches('│').trim().split("  ").filter(|c| !c.is_empty()).collect();
        for cell in cells {
            assert!(
                panel.values.iter().any(|(n, v)| cell.trim() == format!("{n} {v}")),
                "`{cell}` is one whole value of {id}:\n{screen}"
            );
        }
    }
    let device_rows = rows.iter().take_while(|r| !r.contains(" events ")).cloned().collect::<Vec<_>>().join("\n");
    assert!(!device_rows.contains('…'), "no device row is cut at 80 columns:\n{screen}");
    assert!(rows[23].contains("q quit"), "{screen}");
    running.shutdown().await;
}

/// Collects a child's output on a thread, for conditions with a deadline.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    fn collect(mut from: impl Read + Send + 'static) -> Output {
        let out = Output::default();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().expect("output lock").extend_from_slice(&buf[..n]);
            }
        });
        out
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("output lock")).into_owned()
    }
}

async fn exited(child: &mut Child) -> std::process::ExitStatus {
    eventually("the bridge to exit", async || child.try_wait().expect("wait")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_in_the_console_stops_the_bridge_cleanly_and_gives_the_terminal_back() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let dir = TempDir::new("console-q");
    let config = dir.write("demo.yaml", &demo_yaml(Some(&broker.url()), true));
    // `script` gives the bridge a real pseudo-terminal (80×24); its stdin is the keyboard.
    let inner = format!("stty cols 80 rows 24; exec {} --config {}", env!("CARGO_BIN_EXE_hlbridge"), config.display());
    let mut child = Reaped(
        Command::new("script")
            .args(["-qfec", &inner, "/dev/null"])
            .env("TERM", "xterm-256color")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn script(1) (util-linux) running hlbridge"),
    );
    let screen = Output::collect(child.stdout.take().expect("stdout"));
    probe.wait_value("home/bridge/status", "online").await;
    eventually("the console to draw the devices on the alternate screen", async || {
        let s = screen.text();
        (s.contains("\x1b[?1049h") && s.contains("garage_charger") && s.contains("water_meter")).then_some(())
    })
    .await;
    child.stdin.as_mut().expect("stdin").write_all(b"q").expect("press q");
    let status = exited(&mut child).await;
    assert!(status.success(), "q exits with success: {status:?}\n{}", screen.text());
    let s = screen.text();
    let entered = s.find("\x1b[?1049h").expect("alternate screen entered");
    assert!(s[entered..].contains("\x1b[?1049l"), "the terminal is given back (main screen)");
    assert!(s[entered..].contains("\x1b[?25h"), "the cursor is shown again");
    assert!(!s.contains("did not stop in time") && !s.contains("ERROR"), "a clean stop:\n{s}");
    // The same ordered shutdown as SIGINT: devices and bridge retained offline.
    assert_eq!(latest_retained(&broker, "home/bridge/status").await.as_deref(), Some("offline"));
    assert_eq!(latest_retained(&broker, "home/garage_charger/availability").await.as_deref(), Some("offline"));
}

// The demo as shipped needs the embedded broker.
#[cfg(feature = "embedded-broker")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_the_demo_prints_plain_lines_and_json_logs_with_no_error_from_start_to_stop() {
    // The demo as shipped: the embedded broker, every simulator, the console on.
    let dir = TempDir::new("console-plain");
    let (yaml, broker_port) = demo_yaml_embedded(true);
    let config = dir.write("demo.yaml", &yaml);
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_hlbridge"))
            .args(["--log-format", "json", "--log-level", "info", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hlbridge"),
    );
    let stdout = Output::collect(child.stdout.take().expect("stdout"));
    let stderr = Output::collect(child.stderr.take().expect("stderr"));
    let ids = demo_ids();
    eventually("a plain line saying each demo device is online", async || {
        let out = stdout.text();
        ids.iter().all(|id| out.lines().any(|l| l.contains(&format!("  {id} online")))).then_some(())
    })
    .await;
    // What `mosquitto_pub` does (the README suggests it): CONNECT, DISCONNECT, close. The embedded
    // broker used to log that as `ERROR ... no-connection id N is already gone`.
    connect_and_disconnect(broker_port);
    connect_and_disconnect(broker_port);
    let kill = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().expect("kill(1)");
    assert!(kill.success());
    let status = exited(&mut child).await;
    assert!(status.success(), "{status:?}");
    let out = stdout.text();
    assert!(!out.contains('\x1b'), "no terminal control sequences in plain output:\n{out}");
    let err = stderr.text();
    let mut messages = Vec::new();
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert_ne!(v["level"], "ERROR", "a normal run logs no error: {line}");
        assert!(!line.contains("did not stop in time"), "every adapter and simulator stops in time: {line}");
        assert!(!line.contains("Some("), "values, not Rust debug syntax: {line}");
        messages.push(v["message"].as_str().unwrap_or("").to_owned());
    }
    assert!(messages.iter().any(|m| m == "hlbridge starting"), "{err}");
    assert!(messages.iter().any(|m| m == "shutting down"), "{err}");
}

#[cfg(feature = "embedded-broker")]
/// A minimal MQTT 3.1.1 client session on a raw socket: CONNECT, wait for CONNACK, DISCONNECT, close.
fn connect_and_disconnect(port: u16) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the embedded broker");
    s.set_read_timeout(Some(crate::common::DEADLINE)).expect("timeout");
    let id = format!("raw-{}", crate::common::unique());
    let mut connect =
        vec![0x10, (12 + id.len()) as u8, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, id.len() as u8];
    connect.extend_from_slice(id.as_bytes());
    s.write_all(&connect).expect("CONNECT");
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "connection accepted");
    s.write_all(&[0xE0, 0]).expect("DISCONNECT");
}

/// Runs the binary on a config whose HTTP port is taken, so it logs its start and fails at once.
fn quick_failing_run(args: &[&str], rust_log: Option<&str>) -> (Option<i32>, String) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = TempDir::new("logflags");
    let config = dir.write(
        "c.yaml",
        &format!(
            "mqtt:\n  url: mqtt://127.0.0.1:{}\nlog:\n  level: warn\nhttp:\n  listen: {}\n\
             devices:\n  g:\n    adapter: goe\n    serial: \"1\"\n",
            free_port(),
            taken.local_addr().expect("addr")
        ),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hlbridge"));
    cmd.args(args).arg("--config").arg(&config).env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let out = cmd.output().expect("run hlbridge");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn log_flags_step_the_configured_level_and_rust_log_still_wins() {
    let (code, err) = quick_failing_run(&[], None);
    assert_eq!(code, Some(1));
    assert!(!err.contains("hlbridge starting"), "log.level warn hides info:\n{err}");
    assert!(err.contains("hlbridge: http.listen: cannot listen on"), "the failure is said once, plainly:\n{err}");
    let (_, err) = quick_failing_run(&["-v"], None);
    assert!(err.contains("hlbridge starting"), "-v: warn becomes info:\n{err}");
    let (_, err) = quick_failing_run(&["--log-level", "info"], None);
    assert!(err.contains("hlbridge starting"), "--log-level info:\n{err}");
    let (_, err) = quick_failing_run(&["-v"], Some("error"));
    assert!(!err.contains("hlbridge starting"), "RUST_LOG wins over -v:\n{err}");
    let (code, err) = quick_failing_run(&["-v", "--log-level", "info"], None);
    assert_eq!(code, Some(2), "-v and --log-level contradict each other:\n{err}");
}

#[test]
fn json_logs_are_one_object_per_line_and_carry_the_failure() {
    let (code, err) = quick_failing_run(&["--log-format", "json", "-v"], None);
    assert_eq!(code, Some(1));
    let lines: Vec<serde_json::Value> =
        err.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{err}"))).collect();
    assert!(lines.iter().any(|v| v["message"] == "hlbridge starting" && v["level"] == "INFO"), "{err}");
    let failure = lines.iter().find(|v| v["level"] == "ERROR").unwrap_or_else(|| panic!("an error line:\n{err}"));
    assert!(failure["error"].as_str().is_some_and(|e| e.contains("http.listen")), "{failure}");
}

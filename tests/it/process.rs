//! The `hlbridge` binary as an operator runs it: SIGTERM stops it cleanly within the contract's
//! 5 s, leaving `offline` retained for the bridge and its devices; a bad config exits before
//! connecting anywhere; `hlbridge health` probes `/healthz` for container health checks.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    Broker, Lab, Probe, Reaped, Sim, TempDir, eventually, free_port, latest_retained, manifest_dir, spawn_hlbridge,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_binary_cleanly_within_five_seconds() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let sim = Sim::start(Some(&broker), false, |_| {}).await;
    let dir = TempDir::new("sigterm");
    let config = dir.write(
        "hlbridge.yaml",
        &format!(
            "mqtt:\n  url: {}\n  client_id: hlbridge-sigterm\noutput:\n  prefix: proc\nhttp:\n  listen: null\n\
             devices:\n  garage:\n    adapter: goe\n    serial: \"012345\"\n",
            broker.url()
        ),
    );
    let mut child = spawn_hlbridge(&config);
    probe.wait_value("proc/bridge/status", "online").await;
    probe.wait_value("proc/garage/availability", "online").await;
    let sent = Instant::now();
    let kill = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill(1)");
    assert!(kill.success());
    let status = eventually("hlbridge to exit after SIGTERM", async || child.try_wait().expect("wait")).await;
    let took = sent.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}, the contract allows 5 s");
    assert_eq!(latest_retained(&broker, "proc/bridge/status").await.as_deref(), Some("offline"));
    assert_eq!(latest_retained(&broker, "proc/garage/availability").await.as_deref(), Some("offline"));
    sim.stop().await;
}

#[test]
fn a_bad_config_exits_with_status_2_before_connecting() {
    let dir = TempDir::new("badcfg");
    // Port 1 on loopback: if the binary tried to connect it would hang in backoff, not exit.
    let config = dir
        .write("bad.yaml", "mqtt:\n  url: mqtt://127.0.0.1:1\ndevices:\n  g:\n    adapter: goe\n    serail: \"1\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_hlbridge")).arg("--config").arg(&config).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:6: devices.g.serail: unknown key `serail`; did you mean `serial`?"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_image_config_starts_and_is_healthy_with_only_a_broker_url() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let port = free_port();
    // The image's own config file, as the Containerfile installs it; the listen address is moved
    // to loopback and a port of this test's (the image's 0.0.0.0:9464 is for inside a container).
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_hlbridge"))
            .arg("--config")
            .arg(manifest_dir().join("deploy/container.yaml"))
            .env("HLBRIDGE_MQTT__URL", broker.url())
            .env("HLBRIDGE_MQTT__CLIENT_ID", "hlbridge-container")
            .env("HLBRIDGE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hlbridge"),
    );
    probe.wait_value("home/bridge/status", "online").await;
    let (code, out) = eventually("`hlbridge health` says healthy", async || {
        let (code, out) = health(vec!["--url".into(), format!("http://127.0.0.1:{port}")]).await;
        (code == Some(0)).then_some((code, out))
    })
    .await;
    assert_eq!(code, Some(0), "{out}");
    let kill = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill(1)");
    assert!(kill.success());
    let status = eventually("hlbridge to exit after SIGTERM", async || child.try_wait().expect("wait")).await;
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(stderr.contains("no devices configured"), "the idle start is said loudly: {stderr}");
    assert_eq!(latest_retained(&broker, "home/bridge/status").await.as_deref(), Some("offline"));
}

/// Runs `hlbridge health <args>` off the async runtime and returns its exit code and output.
async fn health(args: Vec<String>) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_hlbridge"))
            .arg("health")
            .args(&args)
            .env_remove("HLBRIDGE_CONFIG")
            .output()
            .expect("run hlbridge health");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_subcommand_exits_0_for_a_live_bridge_and_1_otherwise() {
    let lab = Lab::start("  garage:\n    adapter: goe\n    serial: \"012345\"\n", "").await;
    let addr = lab.bridge.http_addr.expect("the bridge serves HTTP");

    let (code, out) = health(vec!["--url".into(), format!("http://{addr}")]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("/healthz: 200"), "{out}");

    // From the config: a wildcard listen address is probed on loopback.
    let dir = TempDir::new("health");
    let config = dir.write(
        "hlbridge.yaml",
        &format!(
            "mqtt:\n  url: mqtt://127.0.0.1:1\nhttp:\n  listen: 0.0.0.0:{}\n\
             devices:\n  g:\n    adapter: goe\n    serial: \"1\"\n",
            addr.port()
        ),
    );
    let (code, out) = health(vec!["--config".into(), config.display().to_string()]).await;
    assert_eq!(code, Some(0), "{out}");

    // An answer other than 200 is unhealthy.
    let (code, out) = health(vec!["--url".into(), format!("http://{addr}/nothing-here")]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("404"), "{out}");

    // A port that accepts connections but never answers (held by this test): unhealthy after the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let (code, out) = health(vec!["--url".into(), silent_url, "--timeout".into(), "300ms".into()]).await;
    assert_eq!(code, Some(1), "{out}");

    // A config that turns HTTP off has nothing to probe: unhealthy, never Docker's reserved 2.
    let off = dir.write(
        "off.yaml",
        "mqtt:\n  url: mqtt://127.0.0.1:1\nhttp:\n  listen: null\ndevices:\n  g:\n    adapter: goe\n    serial: \"1\"\n",
    );
    let (code, out) = health(vec!["--config".into(), off.display().to_string()]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("http.listen: null"), "{out}");
    drop(silent);
    lab.bridge.shutdown().await;
}

//! The MQTT client against a real Mosquitto: user name and password (refused when wrong, never
//! logged), and payloads far above rumqttc's 10 KiB default in both directions.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::{self, MqttSettings, QoS};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{self, Broker, Probe, TempDir, eventually};

/// Mosquitto that wants a user name and password.
struct AuthBroker {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for AuthBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn auth_broker() -> Option<AuthBroker> {
    common::init();
    let bin = common::mosquitto_path()?;
    let dir = TempDir::new("auth");
    let pw = dir.write("passwd", "");
    let made = Command::new("mosquitto_passwd").arg("-b").arg(&pw).arg("bridge").arg("s3cret").status().ok()?;
    assert!(made.success(), "mosquitto_passwd failed");
    for _ in 0..5 {
        let port = common::free_port();
        let conf = dir.write(
            "mosquitto.conf",
            &format!("listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n", pw.display()),
        );
        let mut child =
            Command::new(&bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
        let deadline = tokio::time::Instant::now() + common::DEADLINE;
        while tokio::time::Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(AuthBroker { child, port, _dir: dir });
            }
            if let Ok(Some(_)) = child.try_wait() {
                break; // lost a port race
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("mosquitto with a password file did not start");
}

fn client(port: u16, user: &str, password: &str) -> (mqtt::MqttHandle, Arc<Metrics>, CancellationToken) {
    let mut s = MqttSettings::from_url(&format!("mqtt://127.0.0.1:{port}"), &format!("auth-{}", common::unique()))
        .expect("settings");
    s.username = Some(user.into());
    s.password = Some(password.into());
    s.backoff_max = Duration::from_millis(300);
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let handle = mqtt::spawn(&s, metrics.clone(), &TaskTracker::new(), cancel.clone()).expect("spawn");
    (handle, metrics, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_are_sent_and_a_wrong_password_is_refused() {
    let Some(broker) = auth_broker().await else {
        eprintln!("note: mosquitto not installed; auth test skipped");
        return;
    };
    let (wrong, metrics, stop_wrong) = client(broker.port, "bridge", "nope");
    eventually("the wrong password to be refused twice", async || {
        (metrics.mqtt_connection_errors.get() >= 2).then_some(())
    })
    .await;
    assert!(!wrong.state().connected);
    stop_wrong.cancel();
    let (right, _, stop) = client(broker.port, "bridge", "s3cret");
    eventually("the right password to connect", async || right.state().connected.then_some(())).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_of_200_kib_pass_in_both_directions() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let (h, _, stop) = {
        let mut s = common::client_settings(&broker, &format!("big-{}", common::unique()));
        s.backoff_max = Duration::from_millis(300);
        let cancel = CancellationToken::new();
        let h = mqtt::spawn(&s, Metrics::detached(), &TaskTracker::new(), cancel.clone()).expect("spawn");
        (h, (), cancel)
    };
    eventually("the client to connect", async || h.state().connected.then_some(())).await;
    let mut rx = h.subscribe("big/in", 4).await;
    let big = "x".repeat(200 * 1024);
    // Incoming: a device publishing a large payload (e.g. OctoPrint metadata) must not cut the connection.
    eventually("a 200 KiB publish to arrive", async || {
        probe.publish("big/in", &big);
        tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.ok().flatten()
    })
    .await;
    // Outgoing: the same size through the bridge's client.
    assert!(h.publish("big/out", big.clone().into_bytes(), QoS::AtLeastOnce, false));
    let got = probe.wait_for("the 200 KiB publish from our client", |m| m.topic == "big/out").await;
    assert_eq!(got.payload.len(), big.len());
    assert!(h.state().connected, "the connection survives large payloads");
    stop.cancel();
}

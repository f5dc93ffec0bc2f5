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

/// A broker that accepts every connection at once (MQTT 3.1.1 only: an MQTT 5 CONNECT is refused
/// as an unsupported version) and answers a SUBSCRIBE only when the test releases it.
struct HeldSubackBroker {
    port: u16,
    /// Packet ids of SUBSCRIBEs received and not answered yet.
    subscribes: tokio::sync::mpsc::UnboundedReceiver<u16>,
    /// SUBACKs to send (packet ids).
    release: tokio::sync::mpsc::UnboundedSender<u16>,
}

impl HeldSubackBroker {
    async fn start() -> HeldSubackBroker {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (seen, subscribes) = tokio::sync::mpsc::unbounded_channel();
        let (release, mut released) = tokio::sync::mpsc::unbounded_channel::<u16>();
        tokio::spawn(async move {
            // One client at a time is all the test needs; an MQTT 5 attempt is refused and closed.
            while let Ok((sock, _)) = listener.accept().await {
                let (mut rx, mut tx) = sock.into_split();
                let mut level5 = false;
                loop {
                    tokio::select! {
                        packet = read_packet(&mut rx) => {
                            let Some((kind, body)) = packet else { break };
                            match kind >> 4 {
                                1 => {
                                    level5 = body.get(6) == Some(&5);
                                    let connack: &[u8] = if level5 { &[0x20, 3, 0, 0x84, 0] } else { &[0x20, 2, 0, 0] };
                                    let _ = tx.write_all(connack).await;
                                    if level5 {
                                        break;
                                    }
                                }
                                8 => {
                                    let _ = seen.send(u16::from_be_bytes([body[0], body[1]]));
                                }
                                12 => {
                                    let _ = tx.write_all(&[0xd0, 0]).await;
                                }
                                _ => {}
                            }
                        }
                        Some(pkid) = released.recv(), if !level5 => {
                            let [hi, lo] = pkid.to_be_bytes();
                            let _ = tx.write_all(&[0x90, 3, hi, lo, 0]).await;
                        }
                    }
                }
            }
        });

        async fn read_packet(rx: &mut tokio::net::tcp::OwnedReadHalf) -> Option<(u8, Vec<u8>)> {
            let kind = rx.read_u8().await.ok()?;
            let (mut len, mut shift) = (0usize, 0);
            loop {
                let b = rx.read_u8().await.ok()?;
                len |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0; len];
            rx.read_exact(&mut body).await.ok()?;
            Some((kind, body))
        }

        HeldSubackBroker { port, subscribes, release }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_registered_while_connected_is_not_reported_as_subscribed_before_its_suback() {
    common::init();
    let mut broker = HeldSubackBroker::start().await;
    let s = MqttSettings::from_url(&format!("mqtt://127.0.0.1:{}", broker.port), "held-suback").expect("settings");
    let cancel = CancellationToken::new();
    let handle = mqtt::spawn(&s, Arc::new(Metrics::default()), &TaskTracker::new(), cancel.clone()).expect("spawn");
    // Connected with nothing to subscribe: subscribed at once.
    eventually("connected and subscribed", async || {
        let st = handle.state();
        (st.connected && st.subscribed).then_some(())
    })
    .await;

    // Several rounds: the window between registering and the connection task writing the
    // SUBSCRIBE is short, and each round is one more chance to fall into it.
    let mut streams = Vec::new();
    for round in 0..8 {
        streams.push(handle.subscribe(&format!("held/{round}/#"), 8).await);
        // Registered, perhaps not even written yet: already not subscribed (a device added a
        // moment ago must not be reported as listened to).
        assert!(!handle.state().subscribed, "round {round}: subscribed reported before the SUBACK");
        let pkid =
            tokio::time::timeout(common::DEADLINE, broker.subscribes.recv()).await.expect("a SUBSCRIBE").unwrap();
        assert!(!handle.state().subscribed, "round {round}: subscribed reported while the broker holds the SUBACK");
        broker.release.send(pkid).unwrap();
        eventually("subscribed after the SUBACK", async || handle.state().subscribed.then_some(())).await;
    }
    cancel.cancel();
}

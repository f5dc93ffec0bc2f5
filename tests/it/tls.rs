//! `mqtts://` against a real Mosquitto TLS listener with certificates made for the test (rcgen):
//! the CA file is honoured, a wrong CA is refused unless `insecure` is set, and a client
//! certificate is presented for mutual TLS.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hlbridge::surface::metrics::Metrics;
use hlbridge::surface::mqtt::tls::TlsSettings;
use hlbridge::surface::mqtt::{self, MqttHandle, MqttSettings, QoS};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{self, Probe, TempDir, eventually};

/// A CA and a certificate it signed, as PEM.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key: String,
    client_pem: String,
    client_key: String,
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "hlbridge test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    let server_cert = server_params.signed_by(&server_key, &issuer).expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    client_params.distinguished_name.push(rcgen::DnType::CommonName, "hlbridge");
    let client_cert = client_params.signed_by(&client_key, &issuer).expect("client cert");
    Pki {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_pem: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// Mosquitto with a plain listener (for the probe) and a TLS listener.
struct TlsBroker {
    child: Child,
    plain_port: u16,
    tls_port: u16,
    dir: TempDir,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsBroker {
    /// `None` when Mosquitto is not installed (the in-process broker has no TLS listener here).
    async fn start(pki: &Pki, require_client_cert: bool) -> Option<TlsBroker> {
        common::init();
        let bin = common::mosquitto_path()?;
        let dir = TempDir::new("tls");
        let ca = dir.write("ca.pem", &pki.ca_pem);
        let cert = dir.write("server.pem", &pki.server_pem);
        let key = dir.write("server.key", &pki.server_key);
        for _attempt in 0..5 {
            let plain_port = common::free_port();
            let tls_port = common::free_port();
            let conf = dir.write(
                "mosquitto.conf",
                &format!(
                    "per_listener_settings false\nallow_anonymous true\npersistence false\n\
                     listener {plain_port} 127.0.0.1\n\
                     listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                    ca.display(),
                    cert.display(),
                    key.display(),
                    require_client_cert
                ),
            );
            let mut child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn mosquitto");
            let up = eventually_listening(plain_port, tls_port, &mut child).await;
            if up {
                return Some(TlsBroker { child, plain_port, tls_port, dir });
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("mosquitto with a TLS listener did not start");
    }

    fn path(&self, name: &str, contents: &str) -> PathBuf {
        self.dir.write(name, contents)
    }
}

async fn eventually_listening(a: u16, b: u16, child: &mut Child) -> bool {
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false; // lost a port race: retry with new ports
        }
        let ok_a = tokio::net::TcpStream::connect(("127.0.0.1", a)).await.is_ok();
        let ok_b = tokio::net::TcpStream::connect(("127.0.0.1", b)).await.is_ok();
        if ok_a && ok_b {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn tls_client(
    port: u16,
    tls: TlsSettings,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> (MqttHandle, std::sync::Arc<Metrics>) {
    let mut s = MqttSettings::from_url(&format!("mqtts://127.0.0.1:{port}"), &format!("tls-{}", common::unique()))
        .expect("settings");
    s.tls = Some(tls);
    s.backoff_max = Duration::from_millis(500);
    let metrics = std::sync::Arc::new(Metrics::default());
    (mqtt::spawn(&s, metrics.clone(), tracker, cancel.clone()).expect("spawn"), metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_the_configured_ca_file_carries_unified_topics() {
    let pki = make_pki();
    let Some(broker) = TlsBroker::start(&pki, false).await else {
        eprintln!("note: mosquitto not installed; TLS test skipped");
        return;
    };
    let ca = broker.path("ca-for-bridge.pem", &pki.ca_pem);
    let plain = crate::common::Broker::external(broker.plain_port);
    let probe = Probe::start(&plain).await;
    let yaml = format!(
        "mqtt:\n  url: mqtts://127.0.0.1:{}\n  client_id: hlbridge-tls\n  tls:\n    ca_file: {}\noutput:\n  prefix: home\nhttp:\n  listen: null\ndevices:\n  garage:\n    adapter: goe\n    serial: \"012345\"\n",
        broker.tls_port,
        ca.display()
    );
    let bridge = common::start_bridge(&yaml).await;
    probe.wait_value("home/bridge/status", "online").await;
    probe.publish("go-eCharger/012345/amp", "16");
    probe.wait_value("home/garage/current_limit", "16").await;
    // A burst: reads are held under TLS too (the mark is set on the TCP socket under it), and the
    // burst's tail still arrives (`read_holding.rs`).
    for i in 1..=1_000 {
        probe.publish("go-eCharger/012345/nrg", &crate::read_holding::nrg(i));
    }
    probe.wait_value("home/garage/power", "1000").await;
    let (_, samples) = common::scrape(&bridge).await;
    let holds = common::sample_value(&samples, "hlbridge_mqtt_read_holds_total", &[]).unwrap_or(0.0);
    assert!(holds >= 1.0, "reads held on the TLS connection ({holds} times)");
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_unless_insecure() {
    let pki = make_pki();
    let Some(broker) = TlsBroker::start(&pki, false).await else {
        eprintln!("note: mosquitto not installed; TLS test skipped");
        return;
    };
    let other = make_pki();
    let wrong_ca = broker.path("other-ca.pem", &other.ca_pem);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let (refused, metrics) =
        tls_client(broker.tls_port, TlsSettings { ca_file: Some(wrong_ca), ..Default::default() }, &tracker, &cancel);
    eventually("the handshake to be refused twice", async || (metrics.mqtt_connection_errors.get() >= 2).then_some(()))
        .await;
    assert!(!refused.state().connected, "a certificate from an unknown CA must never be accepted");
    let (insecure, _) =
        tls_client(broker.tls_port, TlsSettings { insecure: true, ..Default::default() }, &tracker, &cancel);
    eventually("the insecure client to connect", async || insecure.state().connected.then_some(())).await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = make_pki();
    let Some(broker) = TlsBroker::start(&pki, true).await else {
        eprintln!("note: mosquitto not installed; TLS test skipped");
        return;
    };
    let ca = broker.path("ca-for-client.pem", &pki.ca_pem);
    let cert = broker.path("client.pem", &pki.client_pem);
    let key = broker.path("client.key", &pki.client_key);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let (without, metrics) =
        tls_client(broker.tls_port, TlsSettings { ca_file: Some(ca.clone()), ..Default::default() }, &tracker, &cancel);
    eventually("the connection without a client certificate to fail", async || {
        (metrics.mqtt_connection_errors.get() >= 2).then_some(())
    })
    .await;
    assert!(!without.state().connected);
    let settings =
        TlsSettings { ca_file: Some(ca), client_cert_file: Some(cert), client_key_file: Some(key), insecure: false };
    let (with, _) = tls_client(broker.tls_port, settings, &tracker, &cancel);
    eventually("the client with a certificate to connect", async || with.state().connected.then_some(())).await;
    assert!(with.publish("tls/ok", "1", QoS::AtLeastOnce, false));
    cancel.cancel();
}

//! Live reload against a real broker: devices added, removed, changed and left alone while one keeps
//! publishing (nothing lost, nothing doubled, no availability flap); a refused reload; SIGHUP and
//! `--watch` on the binary.

use std::process::{Command, Stdio};

use hlbridge::surface::reload::DeviceChange;

use crate::common::{
    Broker, Lab, Probe, Reaped, TempDir, bridge_yaml, eventually, free_port, http_get, latest_retained, load_config,
    sample_value, scrape, try_http_get,
};

fn goe(id: &str, serial: &str) -> String {
    format!("  {id}:\n    adapter: goe\n    serial: \"{serial}\"\n")
}

async fn counter(lab: &Lab, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, samples) = scrape(&lab.bridge).await;
    sample_value(&samples, name, labels).unwrap_or(0.0)
}

/// A lab whose bridge runs exactly `yaml` (the reload tests keep its head, client id included).
async fn lab_with(broker: Broker, yaml: &str) -> Lab {
    let probe = Probe::start(&broker).await;
    let bridge = crate::common::start_bridge(yaml).await;
    probe.wait_value("home/bridge/status", "online").await;
    Lab { broker, probe, bridge }
}

/// Publishes `amp` on the charger's topic until the bridge republishes it as `current_limit`.
async fn make_online(lab: &Lab, id: &str, serial: &str, amp: &str) {
    let topic = format!("home/{id}/current_limit");
    eventually(&format!("{id} routes its current limit"), async || {
        lab.probe.publish(&format!("go-eCharger/{serial}/amp"), amp);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        (lab.probe.latest(&topic).as_deref() == Some(amp)).then_some(())
    })
    .await;
    lab.probe.wait_value(&format!("home/{id}/availability"), "online").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_traffic_starts_stops_and_restarts_only_what_changed() {
    let broker = Broker::start().await;
    let head = bridge_yaml(&broker, "", "");
    let before = format!("{head}{}{}{}", goe("keep", "1"), goe("drop", "2"), goe("tweak", "3"));
    let after = format!("{head}{}{}{}", goe("keep", "1"), goe("tweak", "33"), goe("fresh", "4"));
    let mut lab = lab_with(broker, &before).await;
    for (id, serial) in [("keep", "1"), ("drop", "2"), ("tweak", "3")] {
        make_online(&lab, id, serial, "10").await;
    }
    let received_before = counter(&lab, "hlbridge_messages_received_total", &[("device", "keep")]).await;
    let mark = lab.probe.mark();

    // `keep` publishes a new current limit every few milliseconds through the whole reload.
    let publisher = lab.probe.handle().clone();
    let traffic = tokio::spawn(async move {
        for amp in 11..=210 {
            publisher.publish("go-eCharger/1/amp", amp.to_string(), hlbridge::surface::mqtt::QoS::AtLeastOnce, false);
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let plan = lab.bridge.reload(load_config(&after)).await.expect("reload applies");
    traffic.await.unwrap();
    assert_eq!(plan.ids(DeviceChange::Unchanged), ["keep"]);
    assert_eq!(plan.ids(DeviceChange::Removed), ["drop"]);
    assert_eq!(plan.ids(DeviceChange::Changed), ["tweak"]);
    assert_eq!(plan.ids(DeviceChange::Added), ["fresh"]);

    let p = &lab.probe;
    let last = p
        .wait_for_since(mark, "the last current limit of keep", |m| {
            m.topic == "home/keep/current_limit" && m.payload == "210"
        })
        .await;
    let seen: Vec<u32> = p
        .all("home/keep/current_limit")
        .iter()
        .filter(|m| m.seq > mark && m.seq <= last.seq)
        .map(|m| m.payload.parse().unwrap())
        .collect();
    assert_eq!(seen, (11..=210).collect::<Vec<_>>(), "keep: every value once, in order, across the reload");
    assert!(
        p.all("home/keep/availability").iter().all(|m| m.seq <= mark || m.payload == "online"),
        "keep never flapped"
    );
    let received_after = counter(&lab, "hlbridge_messages_received_total", &[("device", "keep")]).await;
    assert!(
        received_after >= received_before + 200.0,
        "keep's counters carried on: {received_before} → {received_after}"
    );

    // Removed: its retained topics are gone from the broker.
    eventually("drop's retained topics are cleared", async || {
        (latest_retained(&lab.broker, "home/drop/availability").await.is_none()).then_some(())
    })
    .await;
    assert_eq!(latest_retained(&lab.broker, "home/drop/current_limit").await, None);
    // Changed: the new serial is followed, the old one no longer.
    make_online(&lab, "tweak", "33", "13").await;
    let m2 = p.mark();
    p.publish("go-eCharger/3/amp", "14");
    make_online(&lab, "fresh", "4", "12").await;
    assert!(
        !p.all("home/tweak/current_limit").iter().any(|m| m.seq > m2 && m.payload == "14"),
        "the old serial is not followed any more"
    );
    assert_eq!(counter(&lab, "hlbridge_config_reloads_total", &[("result", "ok")]).await, 1.0);
    assert_eq!(counter(&lab, "hlbridge_config_last_reload_successful", &[]).await, 1.0);
    let info = p.wait_latest("home/bridge/info", |i| i.contains("fresh")).await;
    assert!(!info.contains("\"drop\""), "bridge/info lists the devices in force: {info}");
    lab.bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_with_every_error_and_disturbs_nothing() {
    let broker = Broker::start().await;
    let head = bridge_yaml(&broker, "", "");
    let good = format!("{head}{}", goe("keep", "1"));
    let mut lab = lab_with(broker, &good).await;
    make_online(&lab, "keep", "1", "10").await;
    let dir = TempDir::new("badreload");
    let bad =
        dir.write("bad.yaml", &format!("{head}{}  other:\n    adapter: goe\n    serail: \"2\"\n", goe("keep", "1")));
    let mark = lab.probe.mark();
    let err = lab.bridge.reload_file(&bad).await.expect_err("refused").to_string();
    assert!(err.contains("serail"), "{err}");
    assert_eq!(counter(&lab, "hlbridge_config_reloads_total", &[("result", "error")]).await, 1.0);
    assert_eq!(counter(&lab, "hlbridge_config_last_reload_successful", &[]).await, 0.0);
    make_online(&lab, "keep", "1", "11").await;
    assert!(lab.probe.all("home/keep/availability").iter().all(|m| m.seq <= mark || m.payload == "online"));
    assert_eq!(lab.bridge.router.device_ids(), ["keep"]);
    lab.bridge.shutdown().await;
}

struct Binary {
    /// Killed when the test ends.
    child: Reaped,
    http: String,
}

fn binary_config(broker: &Broker, port: u16, devices: &str) -> String {
    format!(
        "mqtt:\n  url: {}\n  client_id: hlbridge-reload-{port}\noutput:\n  prefix: rl\nhttp:\n  listen: 127.0.0.1:{port}\ndevices:\n{devices}",
        broker.url()
    )
}

fn spawn_binary(config: &std::path::Path, port: u16, watch: bool) -> Binary {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hlbridge"));
    cmd.arg("--config").arg(config);
    if watch {
        cmd.arg("--watch");
    }
    let child =
        cmd.env("RUST_LOG", "warn").stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn hlbridge");
    Binary { child: Reaped(child), http: format!("http://127.0.0.1:{port}") }
}

async fn wait_for_device(bin: &Binary, id: &str) {
    let url = format!("{}/readyz", bin.http);
    // The binary may still be starting (not listening yet): that is "not yet", not a failure.
    eventually(&format!("/readyz lists {id}"), async || {
        let r = try_http_get(&url).await.ok()?;
        r.body.contains(&format!("\"{id}\"")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_instead_of_killing_the_process() {
    let broker = Broker::start().await;
    let port = free_port();
    let dir = TempDir::new("sighup");
    let file = dir.write("hlbridge.yaml", &binary_config(&broker, port, &goe("first", "1")));
    let mut bin = spawn_binary(&file, port, false);
    wait_for_device(&bin, "first").await;
    dir.write("hlbridge.yaml", &binary_config(&broker, port, &format!("{}{}", goe("first", "1"), goe("second", "2"))));
    let hup = Command::new("kill").arg("-HUP").arg(bin.child.id().to_string()).status().expect("kill(1)");
    assert!(hup.success());
    wait_for_device(&bin, "second").await;
    assert!(bin.child.try_wait().expect("wait").is_none(), "still running after SIGHUP");
    let metrics = http_get(&format!("{}/metrics", bin.http)).await.body;
    assert!(metrics.contains("hlbridge_config_reloads_total{result=\"ok\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_the_file_without_a_signal() {
    let broker = Broker::start().await;
    let port = free_port();
    let dir = TempDir::new("watch");
    let file = dir.write("hlbridge.yaml", &binary_config(&broker, port, &goe("first", "1")));
    let bin = spawn_binary(&file, port, true);
    wait_for_device(&bin, "first").await;
    dir.write("hlbridge.yaml", &binary_config(&broker, port, &goe("third", "3")));
    wait_for_device(&bin, "third").await;
    let body = http_get(&format!("{}/readyz", bin.http)).await.body;
    assert!(!body.contains("\"first\""), "first was removed: {body}");
}

#[test]
fn check_config_diff_prints_the_plan_without_touching_anything() {
    let dir = TempDir::new("diff");
    let head = "mqtt:\n  url: mqtt://127.0.0.1:1\ndevices:\n";
    let old = dir.write("old.yaml", &format!("{head}{}{}", goe("a", "1"), goe("b", "2")));
    let new = dir.write("new.yaml", &format!("{head}{}{}", goe("a", "1"), goe("c", "3")));
    let out = Command::new(env!("CARGO_BIN_EXE_hlbridge"))
        .args(["check-config"])
        .arg(&old)
        .arg("--diff")
        .arg(&new)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for line in ["device a: unchanged", "device b: removed", "device c: added", "mqtt: unchanged"] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_mqtt_section_reconnects_and_a_changed_listen_address_moves_http() {
    let broker = Broker::start().await;
    let head = bridge_yaml(&broker, "", "");
    let yaml = format!("{head}{}", goe("keep", "1"));
    let mut lab = lab_with(broker, &yaml).await;
    make_online(&lab, "keep", "1", "10").await;
    let port = free_port();
    let changed = yaml
        .replace("reconnect_max: 1s", "reconnect_max: 2s")
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    let plan = lab.bridge.reload(load_config(&changed)).await.expect("reload applies");
    assert!(plan.mqtt && plan.http_listen, "{plan}");
    assert_eq!(plan.ids(DeviceChange::Unchanged), ["keep"]);
    let ready = eventually("/readyz on the new address", async || {
        let r = http_get(&format!("http://127.0.0.1:{port}/readyz")).await;
        (r.status == 200).then_some(r.body)
    })
    .await;
    assert!(ready.contains("\"keep\""), "{ready}");
    eventually("a second MQTT connection", async || {
        (counter(&lab, "hlbridge_mqtt_connections_total", &[]).await >= 2.0).then_some(())
    })
    .await;
    make_online(&lab, "keep", "1", "11").await;
    lab.bridge.shutdown().await;
}

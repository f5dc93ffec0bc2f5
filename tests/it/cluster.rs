//! Scale-out: two and three in-process bridges with `cluster: {instance, instances}` on one
//! Mosquitto, against twelve simulated devices of all four kinds (3 go-e over MQTT, 3 whatwatt Go
//! over SSE, 3 AI-on-the-edge cameras, 3 OctoPrint printers). Each device runs on exactly the
//! instance the rendezvous hash names; a whatwatt gateway (one SSE client at a time) sees one
//! client; commands are answered once; an instance that stops takes only its own devices offline;
//! growing the cluster by reload moves only the devices the hash moves, stopped before restarted.

use std::collections::BTreeSet;
use std::time::Duration;

use hlbridge::surface::app::Running;
use hlbridge::surface::cluster::owner;
use hlbridge::surface::simulate::ai_on_the_edge::{AiOnTheEdgeSimOptions, CameraSpec, RoundKind};
use hlbridge::surface::simulate::octoprint::OctoprintSimOptions;
use hlbridge::surface::simulate::whatwatt::{SimControl, WhatwattSimOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{Broker, Probe, Sim, client_settings, init, load_config, unique};

const PER_KIND: usize = 3;

/// Every simulated device, stopped when dropped.
struct Fleet {
    /// Device ids, in config order.
    ids: Vec<String>,
    /// The `devices:` block for the bridges.
    devices_yaml: String,
    /// Each whatwatt gateway's id and counters (`live_connections` counts SSE streams opened).
    gateways: Vec<(String, SimControl)>,
    /// The go-e simulators (stopped cleanly at the end).
    chargers: Vec<Sim>,
    /// Stops the other simulators.
    cancel: CancellationToken,
}

impl Fleet {
    async fn start(broker: &Broker) -> Fleet {
        init();
        let cancel = CancellationToken::new();
        let mut ids = Vec::new();
        let mut yaml = String::new();
        let mut chargers = Vec::new();
        let mut gateways = Vec::new();
        for i in 0..PER_KIND {
            let serial = format!("10000{i}");
            ids.push(format!("ev{i}"));
            yaml.push_str(&format!(
                "  ev{i}:\n    adapter: goe\n    serial: \"{serial}\"\n    commands: true\n    command_rate_limit: 0s\n"
            ));
            chargers.push(Sim::start(Some(broker), false, |o| o.serial = serial.clone()).await);

            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let control = SimControl::default();
            let opts = WhatwattSimOptions {
                listener: Some(listener),
                interval: Some(Duration::from_millis(100)),
                control: control.clone(),
                seed: i as u64 + 1,
                ..Default::default()
            };
            tokio::spawn(hlbridge::surface::simulate::whatwatt::run(opts, cancel.child_token()));
            ids.push(format!("meter{i}"));
            gateways.push((format!("meter{i}"), control));
            yaml.push_str(&format!(
                "  meter{i}:\n    adapter: whatwatt\n    url: {url}\n    watchdog: 1s\n    interval: 500ms\n    \
                 timeout: 2s\n    reconnect_delay: 100ms\n    reconnect_max: 500ms\n"
            ));

            let camera = CameraSpec {
                main_topic: format!("cam{i}"),
                interval: Duration::from_millis(150),
                pattern: vec![RoundKind::Good],
                error_rate: 0.0,
                ..Default::default()
            };
            let opts = AiOnTheEdgeSimOptions {
                broker: client_settings(broker, &format!("cam{i}-{}", unique())),
                camera,
                wait_for_bridge: Default::default(),
            };
            tokio::spawn(hlbridge::surface::simulate::ai_on_the_edge::run(opts, cancel.child_token()));
            ids.push(format!("water{i}"));
            yaml.push_str(&format!(
                "  water{i}:\n    adapter: ai_on_the_edge\n    main_topic: cam{i}\n    interval: 1s\n"
            ));

            let mut opts = OctoprintSimOptions::new(client_settings(broker, &format!("octo{i}-{}", unique())));
            opts.base_topic = format!("printer{i}/");
            opts.tick = Duration::from_millis(50);
            tokio::spawn(hlbridge::surface::simulate::octoprint::run(opts, cancel.child_token()));
            ids.push(format!("printer{i}"));
            yaml.push_str(&format!("  printer{i}:\n    adapter: octoprint\n    base_topic: printer{i}/\n"));
        }
        Fleet { ids, devices_yaml: yaml, gateways, chargers, cancel }
    }

    /// The ids instance `instance` of `instances` owns.
    fn owned_by(&self, instance: u32, instances: u32) -> BTreeSet<String> {
        self.ids.iter().filter(|id| owner(id, instances) == instance).cloned().collect()
    }

    async fn stop(self) {
        self.cancel.cancel();
        for c in self.chargers {
            c.stop().await;
        }
    }
}

/// One instance's config: same devices and prefix for all, its own client id.
fn instance_yaml(broker: &Broker, fleet: &Fleet, client_id: &str, instance: u32, instances: u32) -> String {
    format!(
        "mqtt:\n  url: {}\n  client_id: {client_id}\n  reconnect_max: 1s\noutput:\n  prefix: home\n\
         http:\n  listen: null\ncluster:\n  instance: {instance}\n  instances: {instances}\ndevices:\n{}",
        broker.url(),
        fleet.devices_yaml
    )
}

async fn start_instance(yaml: &str) -> Running {
    hlbridge::surface::app::start(&load_config(yaml), None).await.expect("bridge instance starts")
}

/// The device ids listed in the retained `home/bridge/<n>/info`.
async fn listed(probe: &Probe, instance: u32, count: usize) -> BTreeSet<String> {
    let topic = format!("home/bridge/{instance}/info");
    let info = probe
        .wait_latest(&topic, |p| {
            serde_json::from_str::<serde_json::Value>(p)
                .is_ok_and(|v| v["devices"].as_array().map(Vec::len) == Some(count))
        })
        .await;
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["instance"], instance, "{v}");
    v["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_owned()).collect()
}

async fn wait_all_online(probe: &Probe, ids: &BTreeSet<String>) {
    for id in ids {
        probe.wait_value(&format!("home/{id}/availability"), "online").await;
    }
}

fn running_ids(r: &Running) -> BTreeSet<String> {
    r.router.device_ids().into_iter().collect()
}

/// Publishes a `current_limit` command for `ev` and returns every answer seen once a second,
/// later command to the same device has been answered (a duplicate of the first would come first).
async fn command_answers(probe: &Probe, ev: &str, amps: u32) -> Vec<serde_json::Value> {
    let result = format!("home/{ev}/current_limit/result");
    let mark = probe.mark();
    probe.publish(&format!("home/{ev}/current_limit/set"), &amps.to_string());
    probe.wait_for_since(mark, "the first answer", |m| m.topic == result).await;
    probe.publish(&format!("home/{ev}/current_limit/set"), &(amps + 1).to_string());
    probe.wait_for_since(mark, "the second answer", |m| m.topic == result && m.json()["value"] == amps + 1).await;
    probe.all(&result).into_iter().filter(|m| m.seq >= mark).map(|m| m.json()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_devices_answer_commands_once_and_growing_to_three_moves_only_what_the_hash_moves() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let fleet = Fleet::start(&broker).await;
    let all: BTreeSet<String> = fleet.ids.iter().cloned().collect();
    let owned2: Vec<BTreeSet<String>> = (0..2).map(|n| fleet.owned_by(n, 2)).collect();
    assert!(owned2.iter().all(|s| !s.is_empty()), "both instances own devices: {owned2:?}");

    let mut a = start_instance(&instance_yaml(&broker, &fleet, "hlb-a", 0, 2)).await;
    let mut b = start_instance(&instance_yaml(&broker, &fleet, "hlb-b", 1, 2)).await;
    probe.wait_value("home/bridge/0/status", "online").await;
    probe.wait_value("home/bridge/1/status", "online").await;
    wait_all_online(&probe, &all).await;

    // Exactly one owner per device: what each runs, what each lists, and nothing on the broker
    // from a single-instance bridge.
    assert_eq!(running_ids(&a), owned2[0]);
    assert_eq!(running_ids(&b), owned2[1]);
    let (la, lb) = (listed(&probe, 0, owned2[0].len()).await, listed(&probe, 1, owned2[1].len()).await);
    assert!(la.is_disjoint(&lb), "no device on two instances: {la:?} {lb:?}");
    assert_eq!(la.union(&lb).cloned().collect::<BTreeSet<_>>(), all, "none missing");
    assert!(probe.all("home/bridge/status").is_empty() && probe.all("home/bridge/info").is_empty());

    // Commands reach the owner alone and are answered once each.
    for i in 0..PER_KIND {
        let answers = command_answers(&probe, &format!("ev{i}"), 10).await;
        assert_eq!(answers, [json!({"ok": true, "value": 10}), json!({"ok": true, "value": 11})], "ev{i}");
    }
    // One SSE client per gateway: nobody kicked anybody.
    for (id, g) in &fleet.gateways {
        assert_eq!(g.live_connections(), 1, "{id}: one stream, from its owner");
    }

    // Grow to three: the old owners reload first (the moving devices stop), then the new one starts.
    let owned3: Vec<BTreeSet<String>> = (0..3).map(|n| fleet.owned_by(n, 3)).collect();
    let moved: BTreeSet<String> = all.iter().filter(|id| owner(id, 2) != owner(id, 3)).cloned().collect();
    assert!(!moved.is_empty() && moved == owned3[2], "rendezvous: every move is to the new instance");
    let mark = probe.mark();
    a.reload(load_config(&instance_yaml(&broker, &fleet, "hlb-a", 0, 3))).await.expect("reload a");
    b.reload(load_config(&instance_yaml(&broker, &fleet, "hlb-b", 1, 3))).await.expect("reload b");
    assert_eq!(running_ids(&a), owned3[0]);
    assert_eq!(running_ids(&b), owned3[1]);
    let c = start_instance(&instance_yaml(&broker, &fleet, "hlb-c", 2, 3)).await;
    probe.wait_value("home/bridge/2/status", "online").await;
    assert_eq!(running_ids(&c), owned3[2]);
    listed(&probe, 2, owned3[2].len()).await;
    for id in &moved {
        // The moved device comes back from its new owner with fresh values.
        probe
            .wait_for_since(mark, &format!("{id} online from its new owner"), |m| {
                m.topic == format!("home/{id}/availability") && m.payload == "online" && !m.retain
            })
            .await;
    }
    let after = probe.mark();
    for id in &all {
        let availability: Vec<String> = probe
            .all(&format!("home/{id}/availability"))
            .into_iter()
            .filter(|m| m.seq >= mark && m.seq < after)
            .map(|m| m.payload)
            .collect();
        assert!(!availability.iter().any(String::is_empty), "{id}: a moved device's topics are not cleared");
        if !moved.contains(id) {
            assert!(
                !availability.iter().any(|p| p == "offline"),
                "{id} did not move and never flapped: {availability:?}"
            );
        }
    }
    for (id, g) in &fleet.gateways {
        let want = if moved.contains(id) { 2 } else { 1 };
        assert_eq!(g.live_connections(), want, "{id}: a stream from each owner in turn, never two at once");
    }

    for r in [a, b, c] {
        r.shutdown().await;
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_instances_a_stopped_one_takes_only_its_devices_offline_and_its_return_restores_them() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let fleet = Fleet::start(&broker).await;
    let all: BTreeSet<String> = fleet.ids.iter().cloned().collect();
    let owned: Vec<BTreeSet<String>> = (0..3).map(|n| fleet.owned_by(n, 3)).collect();
    assert!(owned.iter().all(|s| !s.is_empty()), "every instance owns devices: {owned:?}");

    let yaml: Vec<String> = (0..3).map(|n| instance_yaml(&broker, &fleet, &format!("hlb-{n}"), n, 3)).collect();
    let mut instances = Vec::new();
    for y in &yaml {
        instances.push(Some(start_instance(y).await));
    }
    wait_all_online(&probe, &all).await;
    for (n, ids) in owned.iter().enumerate() {
        assert_eq!(listed(&probe, n as u32, ids.len()).await, *ids);
    }

    let mark = probe.mark();
    instances[1].take().unwrap().shutdown().await;
    probe.wait_value("home/bridge/1/status", "offline").await;
    for id in &owned[1] {
        probe.wait_value(&format!("home/{id}/availability"), "offline").await;
    }
    for id in owned[0].union(&owned[2]) {
        let flapped =
            probe.all(&format!("home/{id}/availability")).iter().any(|m| m.seq >= mark && m.payload != "online");
        assert!(!flapped, "{id} belongs to a running instance and stays online");
    }

    instances[1] = Some(start_instance(&yaml[1]).await);
    probe.wait_value("home/bridge/1/status", "online").await;
    wait_all_online(&probe, &owned[1]).await;
    for (id, g) in &fleet.gateways {
        let want = if owned[1].contains(id) { 2 } else { 1 };
        assert_eq!(g.live_connections(), want, "{id}: reconnected only by its restarted owner");
    }

    for r in instances.into_iter().flatten() {
        r.shutdown().await;
    }
    fleet.stop().await;
}

/// `hlbridge check-config FILE` with only `env` from the `HLBRIDGE_*` / `HOSTNAME` world.
fn check_config(file: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hlbridge"));
    command.arg("check-config").arg(file).env_remove("RUST_LOG").env_remove("HOSTNAME");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HLBRIDGE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().expect("run hlbridge check-config")
}

#[test]
fn the_statefulset_manifest_wires_the_pod_ordinal_and_matches_replicas_to_instances() {
    use serde::Deserialize as _;
    let path = crate::common::manifest_dir().join("deploy/kubernetes/hlbridge-cluster.yaml");
    let text = std::fs::read_to_string(&path).expect("the StatefulSet variant exists");
    let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_norway::Value::deserialize(d).expect("YAML"))
        .collect();
    let of = |kind: &str| docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("a {kind}"));
    let (set, service, budget) = (of("StatefulSet"), of("Service"), of("PodDisruptionBudget"));
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"), "the Service is headless");
    assert_eq!(set["spec"]["serviceName"], service["metadata"]["name"]);
    assert_eq!(budget["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert_eq!(budget["spec"]["selector"], set["spec"]["selector"]);
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let env: Vec<&str> = container["env"].as_sequence().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(env.contains(&"HLBRIDGE_MQTT__CLIENT_ID"), "a client id per pod: {env:?}");
    assert!(container["args"].as_sequence().unwrap().iter().any(|a| a.as_str() == Some("--watch")));

    // One ConfigMap for every pod: each pod's host name gives its instance number.
    let config = of("ConfigMap")["data"]["config.yaml"].as_str().expect("config.yaml").to_owned();
    let loaded: serde_norway::Value = serde_norway::from_str(&config).unwrap();
    let replicas = set["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(loaded["cluster"]["instances"].as_u64(), Some(replicas), "cluster.instances = replicas");
    let dir = crate::common::TempDir::new("k8s-cluster");
    let file = dir.write("config.yaml", &config);
    let url = ("HLBRIDGE_MQTT__URL", "mqtt://mosquitto:1883");
    for pod in 0..replicas {
        let host = format!("hlbridge-{pod}");
        let out = check_config(&file, &[url, ("HOSTNAME", &host), ("HLBRIDGE_MQTT__CLIENT_ID", &host)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{host}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("instance: {pod}")), "{host}: {stdout}");
    }
    let out = check_config(&file, &[url, ("HOSTNAME", "laptop")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`laptop` has none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_a_single_bridge_into_instance_zero_by_reload_moves_its_bridge_topics_and_clears_the_old_ones() {
    let broker = Broker::start().await;
    let probe = Probe::start(&broker).await;
    let devices: String = (0..6).map(|i| format!("  ev{i}:\n    adapter: goe\n    serial: \"20000{i}\"\n")).collect();
    let yaml = |cluster: &str| {
        format!(
            "mqtt:\n  url: {}\n  client_id: hlb-single\n  reconnect_max: 1s\nhttp:\n  listen: null\n{cluster}devices:\n{devices}",
            broker.url()
        )
    };
    let mut bridge = start_instance(&yaml("")).await;
    probe.wait_value("home/bridge/status", "online").await;
    assert_eq!(running_ids(&bridge).len(), 6);

    let plan = bridge.reload(load_config(&yaml("cluster:\n  instance: 0\n  instances: 2\n"))).await.expect("reload");
    assert!(plan.bridge_topics_moved, "{plan}");
    probe.wait_value("home/bridge/0/status", "online").await;
    let mine: BTreeSet<String> = (0..6).map(|i| format!("ev{i}")).filter(|id| owner(id, 2) == 0).collect();
    assert!(!mine.is_empty() && mine.len() < 6, "the hash splits these six: {mine:?}");
    assert_eq!(running_ids(&bridge), mine);
    assert_eq!(listed(&probe, 0, mine.len()).await, mine);
    for old in ["home/bridge/status", "home/bridge/info"] {
        probe.wait_for(&format!("{old} cleared"), |m| m.topic == old && m.payload.is_empty()).await;
    }
    assert_eq!(crate::common::latest_retained(&broker, "home/bridge/status").await, None, "old status cleared");
    assert_eq!(crate::common::latest_retained(&broker, "home/bridge/info").await, None, "old info cleared");

    bridge.shutdown().await;
    assert_eq!(crate::common::latest_retained(&broker, "home/bridge/0/status").await.as_deref(), Some("offline"));
}

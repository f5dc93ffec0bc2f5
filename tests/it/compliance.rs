//! The adapter contract, checked the same way for every adapter in the registry (vector's
//! `assert_source_compliance` idea): started through `adapters::spawn` like the bridge does, each
//! one is fed good and malformed input over a real broker, counts what it received and could not
//! parse, takes its device online and offline, and stops within the reload budget when cancelled.
//! Flooding (ingest drops) is the same contract, tested per adapter in `ingest_drops`.
//! A second test checks every recorded capture stays inside what each adapter declares it produces.

use std::path::Path;
use std::time::Duration;

use hlbridge::surface::config::AdapterKind;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::{Lab, eventually, load_config, manifest_dir, sample_value, scrape};

/// How one adapter is fed.
struct Case {
    /// The adapter under test.
    kind: AdapterKind,
    /// The device's YAML (indented for `devices:`), id `dut`, with a short freshness window.
    yaml: &'static str,
    /// A valid message, the unified topic it lands on, and the value shown there.
    good: (&'static str, &'static str, &'static str, &'static str),
    /// A message the adapter cannot parse.
    malformed: (&'static str, &'static str),
    /// A message that takes the device offline at once, when the adapter has one (otherwise
    /// silence past the freshness window does).
    offline: Option<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            kind: AdapterKind::Goe,
            yaml: "  dut:\n    adapter: goe\n    serial: \"424242\"\n    freshness: 700ms\n",
            good: ("go-eCharger/424242/amp", "13", "home/dut/current_limit", "13"),
            malformed: ("go-eCharger/424242/nrg", "[230, 231"),
            offline: None,
        },
        Case {
            kind: AdapterKind::Whatwatt,
            yaml: "  dut:\n    adapter: whatwatt\n    transport: mqtt\n    topic: compliance/whatwatt\n    freshness: 700ms\n",
            good: (
                "compliance/whatwatt",
                r#"{"P_In": 1.234, "P_Out": 0, "E_In": 200.934, "E_Out": 8.965, "Meter": {"DateTime": "2025-11-17T15:52:50Z"}, "Sys": {"Id": "ECC9FF5C7F14"}}"#,
                "home/dut/power_import",
                "1234",
            ),
            malformed: ("compliance/whatwatt", "{\"P_In\": "),
            offline: None,
        },
        Case {
            kind: AdapterKind::AiOnTheEdge,
            yaml: "  dut:\n    adapter: ai_on_the_edge\n    main_topic: compliancecam\n    meter: water\n    freshness: 700ms\n",
            good: ("compliancecam/uptime", "4242", "home/dut/uptime", "4242"),
            malformed: ("compliancecam/main/json", "{\"value\": "),
            offline: None,
        },
        Case {
            kind: AdapterKind::Octoprint,
            yaml: "  dut:\n    adapter: octoprint\n    base_topic: compliance/octo\n",
            good: (
                "compliance/octo/temperature/bed",
                r#"{"actual": 42.5, "target": 60.0, "_timestamp": 1800000000}"#,
                "home/dut/temperature_bed",
                "42.5",
            ),
            malformed: ("compliance/octo/temperature/bed", "{\"actual\": "),
            offline: Some(("compliance/octo/mqtt", "disconnected")),
        },
    ]
}

async fn device_counter(lab: &Lab, name: &str) -> f64 {
    let (_, samples) = scrape(&lab.bridge).await;
    crate::common::find_samples(&samples, name, &[("device", "dut")]).iter().map(|s| s.value).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_counts_input_follows_availability_and_stops_in_time() {
    // The bridge runs an unrelated device; each adapter under test is added next to it, one by one.
    let lab = Lab::start("  anchor:\n    adapter: goe\n    serial: \"999999\"\n", "").await;
    let p = &lab.probe;
    for case in cases() {
        let what = case.kind.as_str();
        let config = load_config(&crate::common::bridge_yaml(&lab.broker, case.yaml, ""));
        let d = &config.devices["dut"];
        let spec = config.device_spec("dut").expect("spec");
        let handle = lab.bridge.router.add_device(spec);
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let spawned = hlbridge::surface::adapters::spawn(d, handle, &tracker, stop.clone());
        let task = spawned.task;

        // Listening: the adapter registers its subscriptions in its first step, and the
        // connection reports `subscribed` only once the broker acknowledged them; from then on
        // one message is enough (the bridge's start-up relies on both).
        spawned.first_step.await.expect("the adapter took its first step");
        eventually(&format!("{what}: its subscriptions acknowledged"), async || {
            lab.bridge.mqtt.state().subscribed.then_some(())
        })
        .await;

        // Good input: counted, routed, and the device comes online.
        let (topic, payload, unified, value) = case.good;
        p.publish(topic, payload);
        p.wait_value(unified, value).await;
        p.wait_value("home/dut/availability", "online").await;
        assert!(device_counter(&lab, "hlbridge_messages_received_total").await >= 1.0, "{what}: received");

        // Malformed input: counted as a parse error, the adapter keeps going.
        let errors_before = device_counter(&lab, "hlbridge_parse_errors_total").await;
        p.publish(case.malformed.0, case.malformed.1);
        eventually(&format!("{what}: the malformed message is counted"), async || {
            (device_counter(&lab, "hlbridge_parse_errors_total").await > errors_before).then_some(())
        })
        .await;

        // Offline: by the adapter's own signal, or by silence past the freshness window.
        if let Some((t, m)) = case.offline {
            p.publish(t, m);
        }
        p.wait_value("home/dut/availability", "offline").await;
        let (_, samples) = scrape(&lab.bridge).await;
        assert_eq!(sample_value(&samples, "hlbridge_device_up", &[("device", "dut")]), Some(0.0), "{what}");

        // Stop: within the 3 s a reload allows each adapter.
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .unwrap_or_else(|_| panic!("{what}: the adapter did not stop within 3 s of its cancellation"))
            .expect("the adapter task does not panic");
        assert!(lab.bridge.router.remove_device("dut", true));
        lab.bridge.mqtt.release_unused();
        // Retained topics of this round are cleared before the next adapter takes the id.
        eventually(&format!("{what}: availability cleared"), async || {
            (p.latest("home/dut/availability").as_deref() == Some("")).then_some(())
        })
        .await;
    }
}

/// Every quantity in every recorded capture's golden output is one its adapter declares
/// (`Adapter::QUANTITIES`, what discovery announces): the declarations cannot fall behind the code.
#[test]
fn every_captured_quantity_is_declared_by_its_adapter() {
    for (dir, kind) in [
        ("goe", AdapterKind::Goe),
        ("whatwatt", AdapterKind::Whatwatt),
        ("ai_on_the_edge", AdapterKind::AiOnTheEdge),
        ("octoprint", AdapterKind::Octoprint),
    ] {
        let golden = manifest_dir().join("adapters").join(dir).join("fixtures/golden");
        let mut seen = 0;
        for entry in std::fs::read_dir(&golden).expect("golden dir") {
            let path = entry.expect("entry").path();
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&path).unwrap()) else {
                continue;
            };
            for name in value_names(&json) {
                seen += 1;
                assert!(
                    hlbridge::surface::adapters::declares(kind, &name),
                    "{}: `{name}` is produced but not declared by the {} adapter",
                    file(&path),
                    kind.as_str()
                );
            }
        }
        assert!(seen > 0, "{dir}: no values found in the goldens");
    }
}

fn file(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Quantity names under every `values` object (per device, or per topic `home/<dev>/<quantity>`).
fn value_names(json: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, val) in m {
                    if k == "values"
                        && let serde_json::Value::Object(per) = val
                    {
                        for (key, inner) in per {
                            match inner {
                                serde_json::Value::Object(q) => out.extend(q.keys().cloned()),
                                _ => {
                                    let leaf = key.rsplit('/').next().unwrap_or(key);
                                    if leaf != "availability" {
                                        out.push(leaf.to_owned());
                                    }
                                }
                            }
                        }
                    } else {
                        walk(val, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(json, &mut out);
    out
}

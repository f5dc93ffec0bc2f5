//! OctoPrint commands over the REST API, end to end: probe → Mosquitto → bridge → simulated
//! OctoPrint REST API (its 409s, its `X-Api-Key` check) → the plugin's MQTT report → the bridge's
//! `<name>/result`. Covers pause/resume/cancel with state refusals and confirmation, heater set
//! points with range refusals, connect/disconnect, the silent printer timing out, a device without
//! `url`/key, and the key never showing in results, `/readyz` or `check-config`.

use std::time::Duration;

use hlbridge::surface::simulate::octoprint::{OctoprintSimOptions, PhaseTicks, RestSim};
use tokio_util::sync::CancellationToken;

use crate::common::{Broker, Lab, Reaped, TempDir, client_settings, http_base, http_get, unique};

/// A key no output may ever contain.
const KEY: &str = "S3CRET-octoprint-key-4711";

/// The simulated OctoPrint with its REST API, running in-process.
struct RestPrinter {
    /// Stops it.
    cancel: CancellationToken,
}

impl RestPrinter {
    /// Binds the REST port first: the bridge's config needs the URL, and the printer must start
    /// after the bridge has subscribed (its state events are not retained).
    async fn bind() -> (tokio::net::TcpListener, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    /// A printer that connects and starts printing within a few ticks, then keeps printing (or
    /// idling, with `idle_forever`) until told otherwise. `silent`: it accepts commands but never
    /// acts on them.
    fn start(
        broker: &Broker,
        listener: tokio::net::TcpListener,
        api_key: &str,
        silent: bool,
        idle_forever: bool,
    ) -> RestPrinter {
        let mut opts = OctoprintSimOptions::new(client_settings(broker, &format!("octoprint-sim-{}", unique())));
        opts.tick = Duration::from_millis(20);
        let long = 1_000_000;
        // Off for 500 ms: the plugin drops events until its broker connection is up.
        opts.phases = PhaseTicks {
            off: 25,
            idle: if idle_forever { long } else { 1 },
            heat: 1,
            print: long,
            paused: long,
            cool: long,
        };
        let rest = RestSim { listener, api_key: api_key.to_owned(), silent };
        let cancel = CancellationToken::new();
        tokio::spawn(hlbridge::surface::simulate::octoprint::run_with_rest(opts, Some(rest), cancel.clone()));
        RestPrinter { cancel }
    }
}

impl Drop for RestPrinter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `command_rate_limit: 0s`: the rate limit is tested in `commands.rs`; here a command sent right
/// after the previous one was confirmed must not depend on how fast the printer confirmed it.
fn printer_yaml(url: &str, key: &str, timeout: &str) -> String {
    format!(
        "  printer:\n    adapter: octoprint\n    url: {url}\n    api_key: {key}\n    commands: true\n    \
         command_rate_limit: 0s\n    command_timeout: {timeout}\n"
    )
}

/// A bridge for a simulated printer with REST key `printer_key`, the bridge configured with
/// `KEY`, and `timeout` as its `command_timeout`.
async fn lab(printer_key: &str, silent: bool, idle_forever: bool, timeout: &str) -> (Lab, RestPrinter) {
    let broker = Broker::start().await;
    let (listener, url) = RestPrinter::bind().await;
    let lab = Lab::start_on(broker, &printer_yaml(&url, KEY, timeout), "").await;
    let printer = RestPrinter::start(&lab.broker, listener, printer_key, silent, idle_forever);
    (lab, printer)
}

const BASE: &str = "home/printer";

fn assert_refused(result: &serde_json::Value, contains: &str) {
    assert_eq!(result["ok"], false, "{result}");
    let e = result["error"].as_str().unwrap();
    assert!(e.contains(contains), "`{e}` should contain `{contains}`");
    assert!(!e.contains(KEY), "the key leaked into {e}");
}

fn assert_ok(result: &serde_json::Value, value: serde_json::Value) {
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["value"], value, "{result}");
}

/// Every message the probe saw, as text, must not contain the key.
fn assert_key_never_published(lab: &Lab) {
    for m in lab.probe.everything() {
        assert!(!m.payload.contains(KEY), "the key was published on {}", m.topic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_cancel_reach_octoprint_and_are_confirmed_by_the_printer_state() {
    let (lab, _printer) = lab(KEY, false, false, "5s").await;
    lab.probe.wait_value(&format!("{BASE}/printer_state"), "printing").await;

    assert_refused(&lab.command(BASE, "print_control", "resume").await, "cannot resume: the printer is printing");
    assert_refused(&lab.command(BASE, "print_control", "stop").await, "use pause, resume or cancel");

    assert_ok(&lab.command(BASE, "print_control", "pause").await, "pause".into());
    assert_eq!(lab.probe.latest(&format!("{BASE}/printer_state")).as_deref(), Some("paused"));
    // A repeat within the copy window needs an `id` (commands.rs drops second copies).
    let again = lab.command(BASE, "print_control", r#"{"value": "pause", "id": "p2"}"#).await;
    assert_refused(&again, "cannot pause: the printer is paused");

    let r = lab.command(BASE, "print_control", r#"{"value": "resume", "id": "r1"}"#).await;
    assert_ok(&r, "resume".into());
    assert_eq!(r["id"], "r1");
    assert_eq!(lab.probe.latest(&format!("{BASE}/printer_state")).as_deref(), Some("printing"));

    assert_ok(&lab.command(BASE, "print_control", "cancel").await, "cancel".into());
    lab.probe.wait_value(&format!("{BASE}/printer_state"), "operational").await;
    let again = lab.command(BASE, "print_control", r#"{"value": "cancel", "id": "c2"}"#).await;
    assert_refused(&again, "cannot cancel: the printer is operational");
    assert_key_never_published(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heater_set_points_are_bounded_sent_and_confirmed_by_the_reported_target() {
    let (lab, _printer) = lab(KEY, false, true, "5s").await;
    lab.probe.wait_value(&format!("{BASE}/printer_state"), "operational").await;

    assert_ok(&lab.command(BASE, "temperature_bed_target", "70").await, 70.0.into());
    let bed = lab.probe.latest(&format!("{BASE}/temperature_bed_target")).unwrap();
    assert_eq!(bed.parse::<f64>().unwrap(), 70.0);
    assert_ok(&lab.command(BASE, "temperature_tool0_target", "200").await, 200.0.into());
    assert_ok(&lab.command(BASE, "temperature_tool0_target", "0").await, 0.0.into());

    assert_refused(&lab.command(BASE, "temperature_tool0_target", "301").await, "0 to 300");
    assert_refused(&lab.command(BASE, "temperature_bed_target", "151").await, "0 to 150");
    assert_refused(&lab.command(BASE, "temperature_bed_target", "hot").await, "not a temperature");
    // The printer's OctoPrint profile (read from `/api/printerprofiles`) has one extruder, a bed and
    // no chamber: the bridge refuses what the printer lacks before asking OctoPrint, and says why.
    assert_refused(
        &lab.command(BASE, "temperature_chamber_target", "40").await,
        "profile `Simulated printer` has no heated chamber",
    );
    assert_refused(&lab.command(BASE, "temperature_tool1_target", "200").await, "has 1 extruder(s) (tool0)");
    assert_refused(&lab.command(BASE, "temperature_tool5_target", "200").await, "has 1 extruder(s) (tool0)");
    assert_key_never_published(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_connect_are_confirmed_by_the_printer_going_offline_and_operational() {
    let (lab, _printer) = lab(KEY, false, true, "5s").await;
    lab.probe.wait_value(&format!("{BASE}/printer_state"), "operational").await;

    assert_ok(&lab.command(BASE, "printer_connection", "disconnect").await, "disconnect".into());
    assert_eq!(lab.probe.latest(&format!("{BASE}/printer_state")).as_deref(), Some("offline"));
    // Heaters of a disconnected printer: OctoPrint's 409.
    assert_refused(&lab.command(BASE, "temperature_bed_target", "50").await, "409");
    assert_ok(&lab.command(BASE, "printer_connection", "connect").await, "connect".into());
    assert_eq!(lab.probe.latest(&format!("{BASE}/printer_state")).as_deref(), Some("operational"));
    assert_refused(&lab.command(BASE, "printer_connection", "toggle").await, "use connect or disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printer_that_accepts_but_never_reports_the_change_times_out() {
    let (lab, _printer) = lab(KEY, true, false, "300ms").await;
    lab.probe.wait_value(&format!("{BASE}/printer_state"), "printing").await;
    assert_refused(&lab.command(BASE, "print_control", "pause").await, "did not report the change within 300ms");
    assert_refused(&lab.command(BASE, "temperature_bed_target", "55").await, "did not report the change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_refused_without_showing_any_key() {
    let (lab, _printer) = lab("the-right-key", false, false, "5s").await;
    lab.probe.wait_value(&format!("{BASE}/printer_state"), "printing").await;
    // OctoPrint answers a POST with a wrong key `400 CSRF validation failed` (seen on 1.11.8).
    let r = lab.command(BASE, "print_control", "pause").await;
    assert_refused(&r, "refused the API key (HTTP 400 `CSRF validation failed`");
    assert!(!r.to_string().contains("the-right-key"));
    // A heater command stops at the profile lookup (a GET: 403), before any POST.
    let r = lab.command(BASE, "temperature_bed_target", "50").await;
    assert_refused(&r, "refused the API key (HTTP 403)");
    let readyz = http_get(&format!("{}/readyz", http_base(&lab.bridge))).await;
    assert!(readyz.body.contains("OctoPrint REST API"), "{}", readyz.body);
    assert!(!readyz.body.contains(KEY), "the key is in /readyz");
    assert_key_never_published(&lab);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_url_and_key_the_printer_takes_no_commands_and_says_so() {
    let lab = Lab::start("  printer:\n    adapter: octoprint\n    commands: true\n", "").await;
    let readyz = crate::common::eventually("/readyz names the missing url", async || {
        let r = http_get(&format!("{}/readyz", http_base(&lab.bridge))).await;
        r.body.contains("no commands: set `url`").then_some(r)
    })
    .await;
    assert!(readyz.body.contains("api_key_file"), "{}", readyz.body);
    let r = lab.command(BASE, "print_control", "pause").await;
    assert_refused(&r, "has no commands: set `url` and `api_key_file`");
}

#[test]
fn check_config_never_prints_the_api_key() {
    let dir = TempDir::new("octo-key");
    dir.write("octoprint.key", &format!("{KEY}\n"));
    let yaml = format!(
        "mqtt:\n  url: mqtt://127.0.0.1:1\ndevices:\n  a:\n    adapter: octoprint\n    url: http://octopi.local\n    \
         api_key_file: octoprint.key\n  b:\n    adapter: octoprint\n    url: http://octopi.local\n    api_key: {KEY}\n"
    );
    let good = dir.write("good.yaml", &yaml);
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_hlbridge")).arg("check-config").arg(&good).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(KEY), "check-config printed the key:\n{text}");
    // A config error next to the key must not print it either.
    let bad = dir.write("bad.yaml", &yaml.replace("http://octopi.local\n    api_key:", "octopi.local\n    api_key:"));
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_hlbridge")).arg("check-config").arg(&bad).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("devices.b.url"), "{text}");
    assert!(!text.contains(KEY), "check-config printed the key:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_never_logs_the_api_key_even_at_debug_level() {
    let broker = Broker::start().await;
    let probe = crate::common::Probe::start(&broker).await;
    let (listener, url) = RestPrinter::bind().await;
    let dir = TempDir::new("octo-log");
    dir.write("octoprint.key", &format!("{KEY}\n"));
    let config = dir.write(
        "hlbridge.yaml",
        &format!(
            "mqtt:\n  url: {}\n  client_id: hlbridge-octo-log-{}\noutput:\n  prefix: home\nhttp:\n  listen: null\n\
             devices:\n  printer:\n    adapter: octoprint\n    url: {url}\n    api_key_file: octoprint.key\n    \
             commands: true\n",
            broker.url(),
            unique()
        ),
    );
    let log_path = dir.write("stderr.log", "");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Reaped(
        std::process::Command::new(env!("CARGO_BIN_EXE_hlbridge"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hlbridge"),
    );
    probe.wait_value("home/bridge/status", "online").await;
    // A printer expecting another key: the 403 is logged as a failed command.
    let _printer = RestPrinter::start(&broker, listener, "another-key", false, false);
    probe.wait_value(&format!("{BASE}/printer_state"), "printing").await;
    let mark = probe.mark();
    probe.publish(&format!("{BASE}/print_control/set"), "pause");
    let result = probe.next_on(mark, &format!("{BASE}/print_control/result")).await.json();
    assert_refused(&result, "refused the API key");
    let kill = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(kill.success());
    crate::common::eventually("hlbridge to exit", async || child.try_wait().expect("wait")).await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("command failed"), "the failure was logged:\n{text}");
    assert!(!text.contains(KEY), "the key is in the log:\n{text}");
}

//! Shipped config files, error reporting (contract §4), `hlbridge check-config`, and the files
//! under deploy/ (container, compose, Kubernetes, systemd) checked as far as this machine can.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hlbridge::surface::config::{ConfigError, load_file, load_str};

use crate::common::{TempDir, manifest_dir};

fn shipped_configs() -> Vec<PathBuf> {
    let dir = manifest_dir().join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

fn check_config(file: &Path) -> Output {
    check_config_with_env(file, &[])
}

/// `hlbridge check-config FILE` with only `env` of the bridge's own variables set (none inherited).
fn check_config_with_env(file: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hlbridge"));
    command.arg("check-config").arg(file).env_remove("RUST_LOG");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HLBRIDGE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied()).output().expect("run hlbridge check-config")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_shipped_config_file_loads() {
    let files = shipped_configs();
    assert!(files.iter().any(|f| f.ends_with("demo.yaml")), "config/demo.yaml exists: {files:?}");
    for f in &files {
        // The demo runs the embedded broker, which a build without `embedded-broker` rejects.
        let embedded = std::fs::read_to_string(f).is_ok_and(|t| t.contains("\n  embedded:"));
        if embedded && !cfg!(feature = "embedded-broker") {
            continue;
        }
        let c = load_file(f).unwrap_or_else(|e| panic!("{}:\n{e}", f.display()));
        assert!(!c.devices.is_empty() || !c.simulators.is_empty(), "{} configures nothing", f.display());
        let out = check_config(f);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "check-config {}: {stdout}{stderr}", f.display());
    }
}

const BAD: &str = "\
mqtt:
  url: http://broker.lan
  clientid: bridge
output:
  prefix: home/
devices:
  garage:
    adapter: goe
    serial: \"012345\"
    intervall: 5s
  carport:
    adapter: goe
    transport: http
  Bad Id:
    adapter: goee
  slow:
    adapter: goe
    transport: http
    url: http://10.0.0.9
    interval: soon
";

fn find<'a>(errors: &'a [ConfigError], path: &str) -> &'a ConfigError {
    errors.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("no error for `{path}` in {errors:#?}"))
}

#[test]
fn bad_config_reports_every_error_at_once_with_paths_lines_and_suggestions() {
    let errors = load_str(BAD, "bad.yaml", Path::new(".")).expect_err("the config is bad").0;
    let all: String = errors.iter().map(|e| format!("{e}\n")).collect();

    let e = find(&errors, "mqtt.url");
    assert_eq!(e.origin.as_deref(), Some("bad.yaml:2"), "{all}");
    assert!(e.message.contains("mqtt://"), "{all}");

    let e = find(&errors, "mqtt.clientid");
    assert_eq!(e.origin.as_deref(), Some("bad.yaml:3"), "{all}");
    assert!(e.message.contains("did you mean `client_id`?"), "{all}");

    let e = find(&errors, "output.prefix");
    assert_eq!(e.origin.as_deref(), Some("bad.yaml:5"), "{all}");

    let e = find(&errors, "devices.garage.intervall");
    assert_eq!(e.origin.as_deref(), Some("bad.yaml:10"), "{all}");
    assert!(e.message.contains("did you mean `interval`?"), "{all}");

    let e = find(&errors, "devices.carport.url");
    assert!(e.message.contains("transport: http"), "{all}");
    assert!(
        e.origin.as_deref().is_some_and(|o| o.starts_with("bad.yaml:1")),
        "a missing key points at its parent: {all}"
    );

    assert!(
        errors.iter().any(|e| e.path == "devices.Bad Id"
            && e.message.contains("device ids")
            && e.origin.as_deref() == Some("bad.yaml:14")),
        "{all}"
    );
    let e = find(&errors, "devices.Bad Id.adapter");
    assert!(e.message.contains("did you mean `goe`?"), "{all}");
    assert_eq!(e.origin.as_deref(), Some("bad.yaml:15"), "{all}");

    let e = find(&errors, "devices.slow.interval");
    assert!(e.message.contains("500ms"), "the duration format is explained: {all}");
    assert_eq!(e.origin.as_deref(), Some("bad.yaml:20"), "{all}");

    // File order.
    let lines: Vec<usize> =
        errors.iter().filter_map(|e| e.origin.as_deref()?.strip_prefix("bad.yaml:")?.parse().ok()).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "sorted by line: {all}");
    assert!(errors.len() >= 8, "{all}");
}

#[test]
fn yaml_syntax_errors_name_line_and_column() {
    let errors = load_str("mqtt:\n  url: [unclosed\n", "broken.yaml", Path::new(".")).expect_err("broken YAML").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].message.contains("YAML syntax"), "{errors:?}");
    assert!(errors[0].origin.as_deref().is_some_and(|o| o.starts_with("broken.yaml:")), "{errors:?}");
}

#[test]
#[cfg(feature = "embedded-broker")]
fn check_config_accepts_the_demo_and_redacts_passwords() {
    let demo = manifest_dir().join("config/demo.yaml");
    let out = check_config(&demo);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(stdout.contains("garage_charger"), "the effective config is printed: {stdout}");

    let dir = TempDir::new("check-config");
    let file = dir.write(
        "secret.yaml",
        "mqtt:\n  url: mqtt://127.0.0.1:1884\n  username: bridge\n  password: hunter2-do-not-print\n\
         devices:\n  garage:\n    adapter: goe\n    serial: \"012345\"\n",
    );
    let out = check_config(&file);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "the password leaked:\n{stdout}{stderr}");
    assert!(stdout.contains("username: bridge"), "{stdout}");
}

#[test]
fn check_config_rejects_a_bad_file_with_every_error() {
    let dir = TempDir::new("check-config");
    let file = dir.write("bad.yaml", BAD);
    let out = check_config(&file);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "a bad config must fail: {stdout}{stderr}");
    assert_ne!(out.status.code(), Some(0));
    let name = file.display().to_string();
    for expected in [
        format!("{name}:3: mqtt.clientid: unknown key `clientid`; did you mean `client_id`?"),
        format!("{name}:10: devices.garage.intervall"),
        format!("{name}:2: mqtt.url"),
        format!("{name}:5: output.prefix"),
        "did you mean `goe`?".to_owned(),
        "devices.carport.url".to_owned(),
        "devices.slow.interval".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "missing `{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains("errors"), "{stderr}");
    assert!(!stdout.contains("OK"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// Errors a user meets first: type errors side by side, YAML syntax, a file that runs nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn several_type_errors_in_one_section_are_all_reported_with_their_lines() {
    let dir = TempDir::new("check-config");
    let file = dir.write(
        "types.yaml",
        "mqtt:\n  url: mqtt://127.0.0.1:99999\n  queue_capacity: many\n  keep_alive: fast\n  tcp_nodelay: maybe\n\
         devices:\n  g:\n    adapter: goe\n    serial: \"012345\"\n    interval: soon\n    timeout: never\n",
    );
    let out = check_config(&file);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let name = file.display().to_string();
    for expected in [
        format!("{name}:2: mqtt.url: "),
        format!("{name}:3: mqtt.queue_capacity: "),
        format!("{name}:4: mqtt.keep_alive: "),
        format!("{name}:5: mqtt.tcp_nodelay: "),
        format!("{name}:10: devices.g.interval: "),
        format!("{name}:11: devices.g.timeout: "),
    ] {
        assert!(stderr.contains(&expected), "missing `{expected}` in:\n{stderr}");
    }
    assert!(stderr.contains("has 6 errors"), "{stderr}");
}

/// The one error `check-config` reports for a broken file.
fn only_error(text: &str) -> ConfigError {
    let errors = load_str(text, "broken.yaml", Path::new(".")).expect_err("the YAML is broken").0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().expect("one error")
}

#[test]
fn an_unclosed_quote_is_reported_at_the_line_where_it_opened() {
    // libyaml itself notices only at the end of the file (line 9) or at the next quote.
    let e = only_error(
        "mqtt:\n  url: mqtt://broker.lan:1883\n  client_id: hlbridge\noutput:\n  prefix: home\n  qos: \"1\n\
         devices:\n  g:\n    adapter: goe\n",
    );
    assert_eq!(e.origin.as_deref(), Some("broken.yaml:6:8"), "{e}");
    assert!(e.message.contains("the quote \" opened at 6:8 is not closed"), "{e}");
}

#[test]
fn a_duplicate_key_is_reported_with_its_name_and_both_lines() {
    let e = only_error(
        "mqtt:\n  url: mqtt://a.lan:1883\n  client_id: hlbridge\n  keep_alive: 30s\n  url: mqtt://b.lan:1883\n\
         devices:\n  g:\n    adapter: goe\n",
    );
    assert_eq!(e.origin.as_deref(), Some("broken.yaml:5"), "{e}");
    assert!(e.message.contains("duplicate key `mqtt.url`: set at line 2 and again at line 5"), "{e}");
}

#[test]
fn a_tab_in_the_indentation_is_named_as_a_tab() {
    let e = only_error("mqtt:\n  url: mqtt://a.lan:1883\n\tclient_id: hlbridge\ndevices:\n  g:\n    adapter: goe\n");
    assert_eq!(e.origin.as_deref(), Some("broken.yaml:3:1"), "{e}");
    assert!(e.message.contains("tab character in indentation at 3:1: YAML indents with spaces"), "{e}");
}

#[test]
fn an_empty_file_fails_check_config_and_start_up_with_status_2() {
    let dir = TempDir::new("empty-config");
    let file = dir.write("empty.yaml", "");
    let out = check_config(&file);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("devices: no devices configured"), "{stderr}");
    assert!(!stdout.contains("OK"), "{stdout}");

    // Start-up refuses it before connecting anywhere (the default broker address is never tried).
    let out = Command::new(env!("CARGO_BIN_EXE_hlbridge"))
        .arg("--config")
        .arg(&file)
        .env_remove("RUST_LOG")
        .output()
        .expect("run hlbridge");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("no devices configured"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// deploy/: container, compose, Kubernetes, systemd
// ---------------------------------------------------------------------------------------------

fn deploy_yaml_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&manifest_dir().join("deploy"), &mut files);
    files.sort();
    files
}

/// Every YAML document of `file`.
fn yaml_documents(file: &Path) -> Vec<serde_norway::Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde_norway::Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
        .collect()
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = deploy_yaml_files();
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        assert!(!yaml_documents(f).is_empty(), "{} holds no document", f.display());
    }
}

#[test]
fn the_kubernetes_manifests_have_the_shape_kubernetes_needs() {
    let mut kinds = Vec::new();
    let mut config_map_config = None;
    for file in deploy_yaml_files().iter().filter(|f| f.components().any(|c| c.as_os_str() == "kubernetes")) {
        for doc in yaml_documents(file) {
            let at = file.display();
            let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{at}: a document without kind"));
            assert!(doc["apiVersion"].as_str().is_some_and(|v| !v.is_empty()), "{at}: {kind} without apiVersion");
            let name = doc["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{at}: {kind} without metadata.name"));
            kinds.push(kind.to_owned());
            if kind == "ConfigMap" {
                config_map_config = doc["data"]["config.yaml"].as_str().map(str::to_owned);
            }
            let pod = match kind {
                "Deployment" | "StatefulSet" | "DaemonSet" => &doc["spec"]["template"]["spec"],
                _ => continue,
            };
            let containers =
                pod["containers"].as_sequence().unwrap_or_else(|| panic!("{at}: {name} has no containers"));
            for c in containers {
                let image = c["image"].as_str().unwrap_or_else(|| panic!("{at}: {name}: a container without image"));
                let policy = c["imagePullPolicy"].as_str();
                assert!(
                    matches!(policy, Some("IfNotPresent" | "Always" | "Never")),
                    "{at}: {image} needs an explicit imagePullPolicy, has {policy:?}"
                );
                assert!(!image.ends_with(":latest"), "{at}: pin the image tag, not {image}");
                assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{at}: {image} liveness");
                assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{at}: {image} readiness");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{at}: {image} has no memory limit");
                let security = &c["securityContext"];
                assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true), "{at}: {image}");
                assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false), "{at}: {image}");
                assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{at}: {name}");
                let env = c["env"].as_sequence().cloned().unwrap_or_default();
                assert!(
                    env.iter().any(|e| e["name"].as_str() == Some("HLBRIDGE_MQTT__URL")),
                    "{at}: {image} takes the broker from HLBRIDGE_MQTT__URL"
                );
            }
        }
    }
    for kind in ["ConfigMap", "Deployment", "Service"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }

    // The ConfigMap's config is what the pod runs: it loads with the broker from the environment.
    let config = config_map_config.expect("the ConfigMap holds config.yaml");
    let dir = TempDir::new("k8s-config");
    let file = dir.write("config.yaml", &config);
    let out = check_config_with_env(&file, &[("HLBRIDGE_MQTT__URL", "mqtt://mosquitto:1883")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("listen: 0.0.0.0:9464"), "{stdout}");
}

#[test]
fn the_container_default_config_takes_the_broker_from_the_environment() {
    let config = manifest_dir().join("deploy/container.yaml");
    let out = check_config_with_env(
        &config,
        &[("HLBRIDGE_MQTT__URL", "mqtt://broker.lan:1883"), ("HLBRIDGE_DEVICES__PRINTER__ADAPTER", "octoprint")],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("url: mqtt://broker.lan:1883"), "{stdout}");
    assert!(stdout.contains("listen: 0.0.0.0:9464"), "reachable from outside the container: {stdout}");
    assert!(stdout.contains("printer:"), "{stdout}");

    // The bare image says what it lacks instead of connecting to a broker that is not there.
    let out = check_config_with_env(&config, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("mqtt.url: no broker given") && stderr.contains("HLBRIDGE_MQTT__URL"), "{stderr}");
    assert!(!stderr.contains("devices:"), "`devices: {{}}` is deliberate, not an error: {stderr}");

    // With only the broker given it passes, and says loudly that it has nothing to do yet.
    let out = check_config_with_env(&config, &[("HLBRIDGE_MQTT__URL", "mqtt://broker.lan:1883")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("OK (0 device(s))"), "{stdout}");
    assert!(stderr.contains("warning: no devices configured"), "{stderr}");
}

#[test]
fn the_compose_example_runs_with_its_own_device_file_and_publishes_no_broker_port() {
    let compose = &yaml_documents(&manifest_dir().join("deploy/compose.yaml"))[0];
    let services = compose["services"].as_mapping().expect("compose services");
    for (name, service) in services {
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().unwrap_or_default();
            assert!(!port.ends_with(":1883"), "{name:?} publishes {port}: clashes with a broker on the host");
        }
    }
    let bridge = &compose["services"]["hlbridge"];
    let env = |key: &str| bridge["environment"][key].as_str().unwrap_or_else(|| panic!("compose sets {key}"));
    let (url, listen) = (env("HLBRIDGE_MQTT__URL"), env("HLBRIDGE_HTTP__LISTEN"));
    // The mounted file exists (compose would otherwise mount an empty directory) and loads.
    let mount = bridge["volumes"][0].as_str().expect("a config mount");
    let source = manifest_dir().join("deploy").join(mount.split(':').next().expect("mount source"));
    let out = check_config_with_env(&source, &[("HLBRIDGE_MQTT__URL", url), ("HLBRIDGE_HTTP__LISTEN", listen)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{}: {stdout}{stderr}", source.display());
}

#[test]
fn every_path_the_containerfile_copies_exists_in_the_build_context() {
    let root = manifest_dir();
    let containerfile = std::fs::read_to_string(root.join("deploy/Containerfile")).expect("deploy/Containerfile");
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore beside the build context");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    assert!(ignored.contains(&"target"), "target/ stays out of the build context: {ignored:?}");
    let mut copies = 0;
    for line in containerfile.lines().map(str::trim) {
        let Some(args) = line.strip_prefix("COPY ") else { continue };
        if args.contains("--from=") {
            continue; // from the build stage, not the context
        }
        let parts: Vec<&str> = args.split_whitespace().filter(|a| !a.starts_with("--")).collect();
        for source in &parts[..parts.len() - 1] {
            copies += 1;
            assert!(root.join(source).exists(), "COPY {source}: not in the repository");
            let source = source.trim_start_matches("./").trim_end_matches('/');
            assert!(
                !ignored.iter().any(|i| source == *i || source.starts_with(&format!("{i}/"))),
                "COPY {source}: excluded by .dockerignore"
            );
        }
    }
    assert!(copies >= 2, "{containerfile}");
    assert!(containerfile.contains("HEALTHCHECK") && containerfile.contains("\"health\""), "{containerfile}");
    assert!(containerfile.contains("\nUSER nonroot"), "runs as non-root: {containerfile}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
        return;
    };
    assert!(probe.status.success(), "systemd-analyze --version: {probe:?}");
    // The unit names the installed binary; point it at the one just built so `verify` can check it.
    let unit =
        std::fs::read_to_string(manifest_dir().join("deploy/hlbridge.service")).expect("deploy/hlbridge.service");
    assert!(unit.contains("/usr/local/bin/hlbridge"), "{unit}");
    let dir = TempDir::new("systemd");
    let file = dir.write("hlbridge.service", &unit.replace("/usr/local/bin/hlbridge", env!("CARGO_BIN_EXE_hlbridge")));
    let out =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&file).output().expect("systemd-analyze");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    // verify exits 0 on unknown keys and bad values; they show as warnings naming the unit.
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("hlbridge.service")).collect();
    assert!(warnings.is_empty(), "{stderr}");
}

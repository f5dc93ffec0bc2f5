//! Shipped config files, error reporting (contract §4), and `hlbridge check-config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hlbridge::config::{ConfigError, load_file, load_str};

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
    Command::new(env!("CARGO_BIN_EXE_hlbridge"))
        .arg("check-config")
        .arg(file)
        .env_remove("RUST_LOG")
        .output()
        .expect("run hlbridge check-config")
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

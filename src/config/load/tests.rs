//! Tests of config loading, kept beside it so the module reads as code.
#![allow(clippy::result_large_err)] // figment::Jail's closure type, not ours

use super::*;
use crate::adapters::AdapterConfig;

/// For use inside [`with_env`], which holds the lock already.
fn load_str_unlocked(text: &str) -> Result<Config, ConfigErrors> {
    load_str(text, "test.yaml", Path::new("."))
}

/// The smallest device, for tests about other sections (a file without devices is an error).
const ONE_DEVICE: &str = "devices:\n  g:\n    adapter: goe\n    serial: \"1\"\n";

#[test]
fn commands_take_a_bool_or_a_list_of_the_adapters_commands() {
    use crate::commands::CommandsSetting;
    // The go-e boolean of earlier releases still loads, now as the common key.
    let c = load_test(&format!("{ONE_DEVICE}    commands: false\n    command_rate_limit: 500ms\n")).unwrap();
    assert_eq!(c.devices["g"].common.commands, Some(CommandsSetting::All(false)));
    assert_eq!(c.devices["g"].common.command_rate_limit.map(|d| d.0), Some(std::time::Duration::from_millis(500)));
    let c = load_test(&format!("{ONE_DEVICE}    commands: [current_limit]\n")).unwrap();
    let policy = crate::adapters::command_policy(&c.devices["g"]);
    assert!(policy.accepts_any());
    assert!(!crate::adapters::command_policy(&load_test(ONE_DEVICE).unwrap().devices["g"]).accepts_any());
    let e = load_test(&format!("{ONE_DEVICE}    commands: [current_limit, read_now]\n")).unwrap_err().to_string();
    assert!(e.contains("devices.g.commands") && e.contains("`read_now` is not a command of adapter goe"), "{e}");
}

#[test]
fn a_file_with_only_a_device_gives_the_defaults() {
    let c = load_test(ONE_DEVICE).unwrap();
    assert_eq!(c.output.prefix, "home");
    assert_eq!(c.mqtt.url, "mqtt://127.0.0.1:1883");
    assert_eq!(c.devices.len(), 1);
}

#[test]
fn an_empty_file_is_an_error_saying_there_are_no_devices() {
    for text in ["", "# nothing yet\n", "mqtt:\n  url: mqtt://b:1883\n", "devices:\n"] {
        let e = load_test(text).expect_err("a file that runs nothing is a mistake");
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].path, "devices", "{e}");
        assert!(e.0[0].message.contains("no devices configured"), "{e}");
    }
}

#[test]
fn devices_written_as_an_empty_map_start_an_idle_bridge_on_purpose() {
    let c = load_test("devices: {}\n").expect("`devices: {}` says: none yet, on purpose");
    assert!(c.devices.is_empty());
    assert!(c.idle_warning().is_some_and(|w| w.contains("no devices configured")));
}

#[test]
fn a_file_whose_devices_are_all_disabled_is_an_error() {
    let e = load_test("devices:\n  g:\n    adapter: goe\n    serial: \"1\"\n    enabled: false\n").unwrap_err();
    assert!(e.to_string().contains("every device has `enabled: false`"), "{e}");
}

#[cfg(feature = "simulators")]
#[test]
fn a_simulators_only_file_is_accepted() {
    let c = load_test("simulators:\n  c:\n    type: goe\n    serial: \"1\"\n").unwrap();
    assert!(c.devices.is_empty() && c.simulators.len() == 1);
}

#[test]
fn several_type_errors_in_one_section_are_all_reported_with_their_lines() {
    let text =
        "mqtt:\n  url: mqtt://127.0.0.1:99999\n  queue_capacity: many\n  keep_alive: fast\n  tcp_nodelay: maybe\n"
            .to_owned()
            + ONE_DEVICE;
    let e = load_test(&text).unwrap_err();
    let all = e.to_string();
    for (line, key) in [(2, "url"), (3, "queue_capacity"), (4, "keep_alive"), (5, "tcp_nodelay")] {
        let prefix = format!("test.yaml:{line}: mqtt.{key}: ");
        assert!(all.contains(&prefix), "missing `{prefix}` in {all}");
    }
    assert_eq!(e.0.len(), 4, "{all}");
    assert!(all.contains("500ms"), "the duration format is still explained: {all}");
}

#[test]
fn several_bad_keys_in_one_device_and_in_nested_sections_are_all_reported() {
    let text = "mqtt:\n  tls:\n    insecure: sometimes\n    ca_file: [a]\n    cafile: y\ndevices:\n  g:\n    \
                adapter: goe\n    serial: \"1\"\n    interval: soon\n    timeout: never\n    commands: perhaps\n    \
                enabled: nah\n";
    let e = load_test(text).unwrap_err();
    let all = e.to_string();
    for (line, path) in [
        (3, "mqtt.tls.insecure"),
        (4, "mqtt.tls.ca_file"),
        (5, "mqtt.tls.cafile"),
        (10, "devices.g.interval"),
        (11, "devices.g.timeout"),
        (12, "devices.g.commands"),
        (13, "devices.g.enabled"),
    ] {
        let prefix = format!("test.yaml:{line}: {path}: ");
        assert_eq!(all.matches(&prefix).count(), 1, "`{prefix}` once in {all}");
    }
    assert!(all.contains("did you mean `ca_file`?"), "{all}");
}

#[cfg(not(feature = "simulators"))]
#[test]
fn simulators_in_a_build_without_them_are_refused_with_the_reason() {
    let e = load_test(&format!("{ONE_DEVICE}simulators:\n  c:\n    type: goe\n    serial: \"1\"\n")).unwrap_err();
    assert!(e.to_string().contains("simulators: this hlbridge was built without simulators"), "{e}");
    load_test(&format!("{ONE_DEVICE}simulators: {{}}\n")).expect("an empty section is harmless");
}

#[cfg(feature = "simulators")]
#[test]
fn several_bad_keys_in_one_simulator_are_all_reported_with_their_paths() {
    let text = "simulators:\n  s:\n    type: goe\n    serial: \"1\"\n    tick: soon\n    read_only: nah\n    tik: 1s\n";
    let e = load_test(text).unwrap_err();
    let all = e.to_string();
    assert!(all.contains("test.yaml:5: simulators.s.tick: "), "{all}");
    assert!(all.contains("test.yaml:6: simulators.s.read_only: expected true or false, found string \"nah\""), "{all}");
    assert!(all.contains("test.yaml:7: simulators.s.tik: unknown key `tik`; did you mean `tick`?"), "{all}");
    let e = load_test("simulators:\n  s:\n    type: goee\n").unwrap_err();
    assert!(e.to_string().contains("did you mean `goe`?"), "{e}");
}

#[test]
fn an_unclosed_quote_is_reported_at_the_line_where_it_opened() {
    let text =
        "mqtt:\n  url: mqtt://b:1883\noutput:\n  prefix: home\ndevices:\n  g:\n    adapter: \"goe\n    serial: \"1\"\n";
    let e = load_test(text).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].origin.as_deref(), Some("test.yaml:7:14"), "{e}");
    assert!(e.0[0].message.contains("the quote \" opened at 7:14 is not closed"), "{e}");
}

#[test]
fn a_duplicate_key_is_reported_with_its_name_and_both_lines() {
    let text =
        "mqtt:\n  url: mqtt://a:1883\n  client_id: x\n  keep_alive: 5s\n  url: mqtt://b:1883\n".to_owned() + ONE_DEVICE;
    let e = load_test(&text).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].origin.as_deref(), Some("test.yaml:5"), "{e}");
    let m = &e.0[0].message;
    assert!(m.contains("duplicate key `mqtt.url`") && m.contains("line 2") && m.contains("line 5"), "{e}");
}

#[test]
fn a_tab_in_the_indentation_is_named_as_a_tab() {
    let text = "mqtt:\n  url: mqtt://a:1883\n\tclient_id: x\n".to_owned() + ONE_DEVICE;
    let e = load_test(&text).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].origin.as_deref(), Some("test.yaml:3:1"), "{e}");
    assert!(e.0[0].message.contains("tab character in indentation at 3:1: YAML indents with spaces"), "{e}");
}

#[test]
fn a_goe_device_loads_with_defaults() {
    let c = load_test("devices:\n  garage:\n    adapter: goe\n    serial: \"012345\"\n").unwrap();
    let d = &c.devices["garage"];
    let AdapterConfig::Goe(g) = &d.adapter else { panic!("goe") };
    assert_eq!(g.serial.as_deref(), Some("012345"));
    assert_eq!(g.transport, crate::adapters::goe::GoeTransport::Mqtt);
    assert_eq!(g.interval, super::super::Dur::secs(5));
}

#[test]
#[cfg(not(feature = "embedded-broker"))]
fn an_embedded_broker_without_the_feature_is_a_config_error() {
    let e = load_test("mqtt:\n  embedded:\n    listen: 127.0.0.1:1884\n").unwrap_err();
    assert!(e.to_string().contains("embedded-broker"), "{e}");
}

#[test]
fn every_error_is_reported_at_once_with_lines_and_suggestions() {
    let text = "mqtt:\n  url: http://nope\n  clientid: x\noutput:\n  prefix: home/\ndevices:\n  garage:\n    adapter: goe\n    serial: \"1\"\n    intervall: 5s\n  Bad Id:\n    adapter: goee\n";
    let e = load_test(text).unwrap_err();
    let all = e.to_string();
    assert!(all.contains("test.yaml:3: mqtt.clientid: unknown key `clientid`; did you mean `client_id`?"), "{all}");
    assert!(
        all.contains("test.yaml:10: devices.garage.intervall: unknown key `intervall`; did you mean `interval`?"),
        "{all}"
    );
    assert!(all.contains("test.yaml:2: mqtt.url:"), "{all}");
    assert!(all.contains("test.yaml:5: output.prefix:"), "{all}");
    assert!(all.contains("did you mean `goe`?"), "{all}");
    assert!(all.contains("device ids are"), "{all}");
    assert!(e.0.len() >= 6, "{all}");
}

#[test]
fn an_ingest_queue_of_zero_is_a_config_error_naming_the_key() {
    let e = load_test("devices:\n  p:\n    adapter: octoprint\n    ingest_queue: 0\n").unwrap_err();
    assert!(e.to_string().contains("devices.p.ingest_queue: must be 1 to 1000000 messages"), "{e}");
    let c = load_test("devices:\n  p:\n    adapter: octoprint\n    ingest_queue: 16\n").unwrap();
    assert_eq!(c.devices["p"].common.ingest_queue, Some(16));
}

#[test]
fn type_errors_name_the_key_path() {
    let e = load_test("devices:\n  g:\n    adapter: goe\n    serial: \"1\"\n    interval: soon\n").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("devices.g.interval") && s.contains("500ms"), "{s}");
    assert!(s.contains("test.yaml:5"), "{s}");
}

#[test]
fn yaml_syntax_errors_carry_line_and_column() {
    let e = load_test("mqtt:\n  url: [unclosed\n").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("YAML syntax") && s.contains("test.yaml:"), "{s}");
}

#[test]
fn http_transport_needs_a_url() {
    let e = load_test("devices:\n  g:\n    adapter: goe\n    transport: http\n").unwrap_err();
    assert!(e.to_string().contains("devices.g.url"), "{e}");
}

#[test]
fn topic_prefix_must_end_with_a_slash() {
    let e = load_test("devices:\n  g:\n    adapter: goe\n    topic_prefix: wallbox\n").unwrap_err();
    assert!(e.to_string().contains("must end with `/`"), "{e}");
}

#[test]
fn routes_need_a_condition_and_a_valid_prefix() {
    let e = load_test("routes:\n  - match: {}\n    prefix: /x\n").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("routes.0.match") && s.contains("routes.0.prefix"), "{s}");
}

#[test]
fn secrets_are_redacted_in_the_effective_config() {
    let c = load_test(&("mqtt:\n  username: u\n  password: hunter2\n".to_owned() + ONE_DEVICE)).unwrap();
    let y = c.to_redacted_yaml();
    assert!(!y.contains("hunter2") && y.contains("<redacted>"), "{y}");
}

#[test]
fn env_overrides_win_over_the_file() {
    with_env(|jail| {
        jail.set_env("HLBRIDGE_OUTPUT__PREFIX", "lab");
        jail.set_env("HLBRIDGE_DEVICES__GARAGE__INTERVAL", "10s");
        jail.set_env("HLBRIDGE_TEST_BROKER", "mosquitto"); // not a config key: ignored
        let c = load_str_unlocked("devices:\n  garage:\n    adapter: goe\n    transport: http\n    url: http://x\n")
            .unwrap();
        assert_eq!(c.output.prefix, "lab");
        let AdapterConfig::Goe(g) = &c.devices["garage"].adapter else { panic!("goe") };
        assert_eq!(g.interval, super::super::Dur::secs(10));
        Ok(())
    });
}

#[test]
fn errors_from_env_name_the_variable() {
    with_env(|jail| {
        jail.set_env("HLBRIDGE_OUTPUT__QOS", "7");
        let e = load_str_unlocked("").unwrap_err();
        assert!(e.to_string().contains("env HLBRIDGE_OUTPUT__QOS"), "{e}");
        Ok(())
    });
}

#[test]
fn password_file_is_read_and_trimmed() {
    let dir = std::env::temp_dir().join(format!("hlb-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
    let _env = ENV_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let c = load_str(&("mqtt:\n  password_file: pw\n".to_owned() + ONE_DEVICE), "t.yaml", &dir).unwrap();
    assert_eq!(c.mqtt.password.unwrap().expose(), "s3cret");
    let e = load_str("mqtt:\n  password_file: missing\n", "t.yaml", &dir).unwrap_err();
    assert!(e.to_string().contains("mqtt.password_file"), "{e}");
}

#[test]
fn locate_finds_nested_and_flow_keys() {
    let t = "a:\n  b:\n    c: 1\nroutes:\n  - match: { kind: ev_charger }\n    prefix: x\n";
    assert_eq!(locate(t, &["a", "b", "c"]), Some(3));
    assert_eq!(locate(t, &["routes", "0", "prefix"]), Some(6));
    assert_eq!(locate(t, &["routes", "0", "match", "kind"]), Some(5));
    assert_eq!(locate(t, &["a", "x"]), None);
}

#[test]
fn suggestions_only_for_near_misses() {
    assert_eq!(suggest("intervall", &["interval", "timeout"]), Some("interval"));
    assert_eq!(suggest("zzzzzz", &["interval", "timeout"]), None);
}

#[test]
fn fields_of_lists_struct_keys() {
    assert!(fields_of::<crate::adapters::goe::GoeConfig>().contains(&"topic_prefix"));
    assert!(fields_of::<DeviceCommon>().contains(&"adapter"));
}

#[test]
#[cfg(feature = "embedded-broker")]
fn embedded_broker_becomes_the_default_url() {
    let c = load_test(&("mqtt:\n  embedded:\n    listen: 127.0.0.1:1884\n".to_owned() + ONE_DEVICE)).unwrap();
    assert_eq!(c.mqtt.url, "mqtt://127.0.0.1:1884");
}

#[test]
fn the_cluster_section_defaults_to_one_instance_and_checks_its_range() {
    let c = load_test(ONE_DEVICE).unwrap();
    assert_eq!((c.cluster.number(), c.cluster.instances, c.cluster.is_sharded()), (0, 1, false));
    let c = load_test(&format!("cluster:\n  instance: 2\n  instances: 3\n{ONE_DEVICE}")).unwrap();
    assert_eq!((c.cluster.number(), c.cluster.instances), (2, 3));
    let e = load_test(&format!("cluster:\n  instance: 3\n  instances: 3\n{ONE_DEVICE}")).unwrap_err();
    assert!(e.to_string().contains("test.yaml:2: cluster.instance: is 3 but `cluster.instances` is 3"), "{e}");
    let e = load_test(&format!("cluster:\n  instances: 0\n  instanse: 1\n{ONE_DEVICE}")).unwrap_err();
    assert!(e.to_string().contains("cluster.instances: must be from 1 to 1024"), "{e}");
    assert!(e.to_string().contains("did you mean `instance`"), "{e}");
}

#[test]
fn the_instance_comes_from_the_environment_or_from_a_statefulset_pod_name() {
    with_env(|jail| {
        jail.set_env("HLBRIDGE_CLUSTER__INSTANCE", "1");
        jail.set_env("HLBRIDGE_CLUSTER__INSTANCES", "2");
        let c = load_str_unlocked(ONE_DEVICE).unwrap();
        assert_eq!((c.cluster.number(), c.cluster.instances), (1, 2));
        Ok(())
    });
    with_env(|jail| {
        jail.set_env("HOSTNAME", "hlbridge-2");
        let c = load_str_unlocked(&format!("cluster:\n  instance: auto\n  instances: 3\n{ONE_DEVICE}")).unwrap();
        assert_eq!(c.cluster.number(), 2);
        jail.set_env("HOSTNAME", "my-laptop");
        let e = load_str_unlocked(&format!("cluster:\n  instance: auto\n  instances: 3\n{ONE_DEVICE}")).unwrap_err();
        assert!(e.to_string().contains("`my-laptop` has none"), "{e}");
        jail.set_env("HLBRIDGE_CLUSTER__INSTANCE", "auto");
        jail.set_env("HOSTNAME", "hlbridge-1");
        let c = load_str_unlocked(&format!("cluster:\n  instances: 3\n{ONE_DEVICE}")).unwrap();
        assert_eq!(c.cluster.number(), 1);
        Ok(())
    });
}

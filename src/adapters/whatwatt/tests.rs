//! Unit tests of the whatwatt adapter's configuration: defaults, validation, password handling and
//! cadence.

use std::time::Duration;

use super::config::{WhatwattConfig, WhatwattTransport, cadence, resolve_password, validate};
use super::mapping::VolumeFrom;
use crate::config::types::{Dur, Secret};

fn cfg(yaml: &str) -> WhatwattConfig {
    serde_norway::from_str(yaml).unwrap()
}

fn errors(c: &WhatwattConfig) -> String {
    validate(c, "devices.m").into_iter().map(|(k, m)| format!("{k}: {m}\n")).collect()
}

#[test]
fn defaults_are_sse_with_a_one_minute_watchdog() {
    let c = cfg("url: http://whatwatt-9f8124.local\n");
    assert_eq!(c.transport, WhatwattTransport::Sse);
    assert_eq!(c.watchdog, Dur::secs(60));
    assert_eq!(c.poll_interval(), Duration::from_secs(10));
    assert_eq!(c.fallback.after, 3);
    assert_eq!(c.username, "");
    assert!(errors(&c).is_empty(), "{}", errors(&c));
    assert_eq!(cadence(&c), Duration::from_secs(20), "freshness = 3 × 20 s = the watchdog");
}

#[test]
fn http_transports_need_a_plain_base_url() {
    let e = errors(&cfg("transport: poll\n"));
    assert!(e.contains("devices.m.url"), "{e}");
    let e = errors(&cfg("url: whatwatt.local\n"));
    assert!(e.contains("http://"), "{e}");
    let e = errors(&cfg("url: http://:pw@host\n"));
    assert!(e.contains("password_file"), "{e}");
    let e = errors(&cfg("url: http://host/api/v1/report\n"));
    assert!(e.contains("base URL"), "{e}");
}

#[test]
fn mqtt_needs_a_topic_and_checks_the_template() {
    let e = errors(&cfg("transport: mqtt\n"));
    assert!(e.contains("devices.m.topic"), "{e}");
    let e = errors(&cfg("transport: mqtt\ntopic: t\ntemplate: '{\"a\": ${foo}}'\n"));
    assert!(e.contains("devices.m.template") && e.contains("foo"), "{e}");
    let e = errors(&cfg("transport: mqtt\ntopic: t\nfields:\n  x: 99_9_9\n"));
    assert!(e.contains("devices.m.fields"), "{e}");
    let ok = cfg("transport: mqtt\ntopic: energy/whatwatt/go\ntemplate: '{\"P\": ${1_7_0}}'\n");
    assert!(errors(&ok).is_empty(), "{}", errors(&ok));
    assert_eq!(cadence(&ok), Duration::from_secs(30));
}

#[test]
fn mqtt_keys_are_refused_on_http_transports() {
    let e = errors(&cfg("url: http://h\ntopic: t\n"));
    assert!(e.contains("devices.m.topic: only used with `transport: mqtt`"), "{e}");
}

#[test]
fn an_unreadable_password_file_is_a_config_error() {
    let e = errors(&cfg("url: http://h\npassword_file: /nonexistent/whatwatt.pw\n"));
    assert!(e.contains("devices.m.password_file: cannot read"), "{e}");
    let e = errors(&cfg("url: http://h\npassword: a\npassword_file: /etc/hostname\n"));
    assert!(e.contains("not both"), "{e}");
}

#[test]
fn a_password_file_is_read_and_trimmed_and_never_printed() {
    let dir = std::env::temp_dir().join(format!("hlb-ww-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("pw");
    std::fs::write(&f, "s3cret\n").unwrap();
    let mut c = cfg("url: http://h\n");
    c.password_file = Some(f);
    assert_eq!(resolve_password(&c, "m").unwrap().unwrap().expose(), "s3cret");
    c.password = Some(Secret::new("hunter2"));
    c.password_file = None;
    let printed = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[test]
fn volume_from_takes_a_bus_number_or_a_word() {
    assert_eq!(cfg("url: http://h\nvolume_from: 2\n").volume_from, "2");
    assert_eq!(cfg("url: http://h\n").volume_from, "auto");
    assert_eq!(VolumeFrom::parse(&cfg("url: http://h\nvolume_from: 2\n").volume_from), VolumeFrom::Bus(2));
}

#[test]
fn silly_durations_are_refused() {
    let e = errors(&cfg(
        "url: http://h\ninterval: 100ms\ntimeout: 0s\nwatchdog: 10ms\nreconnect_delay: 5s\nreconnect_max: 1s\nphase_min_voltage: -1\n",
    ));
    for k in ["interval", "timeout", "watchdog", "reconnect_max", "phase_min_voltage"] {
        assert!(e.contains(&format!("devices.m.{k}")), "{k}: {e}");
    }
}

#[test]
fn fallback_polling_shortens_the_sse_cadence_only_up_to_the_poll_interval() {
    let c = cfg("url: http://h\nwatchdog: 1s\ninterval: 500ms\n");
    assert_eq!(cadence(&c), Duration::from_millis(500));
}

//! Unit tests of the simulated gateway: capture field sets, the local-time quirk, rising registers,
//! the SSE framing read back by the adapter's mapping, and template rendering.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::gateway::Gateway;
use super::template::{TEMPLATE_BRIDGE, TEMPLATE_HA};
use super::{SimMeter, WhatwattSimOptions};
use crate::adapters::whatwatt::mapping;

fn gateway(meter: SimMeter) -> Gateway {
    Gateway::new(&WhatwattSimOptions { meter, ..Default::default() })
}

const T0: OffsetDateTime = time::macros::datetime!(2026-06-01 10:00:00 UTC);

#[test]
fn every_profile_keeps_its_capture_field_set_and_counts_reports() {
    for meter in [SimMeter::P1, SimMeter::Mbus, SimMeter::Kmp] {
        let mut g = gateway(meter);
        let base: Value = serde_json::from_str(meter.base_report()).unwrap();
        g.tick(T0);
        g.tick(T0 + time::Duration::seconds(5));
        let r = g.report("OK");
        assert_eq!(r.pointer("/report/id"), Some(&json!(2)));
        let keys = |v: &Value| {
            let mut out = Vec::new();
            let mut stack = vec![(String::new(), v.clone())];
            while let Some((p, v)) = stack.pop() {
                match v {
                    Value::Object(m) => stack.extend(m.into_iter().map(|(k, c)| (format!("{p}/{k}"), c))),
                    _ => out.push(p),
                }
            }
            out.sort();
            out
        };
        assert_eq!(keys(&r), keys(&base), "{meter:?} keeps the capture's fields");
    }
}

#[test]
fn the_report_reproduces_the_local_time_z_quirk() {
    let mut g = gateway(SimMeter::Kmp);
    g.tick(T0);
    let r = g.report("OK");
    assert_eq!(r.pointer("/report/date_time_utc"), Some(&json!("2026-06-01T10:00:00Z")));
    assert_eq!(r.pointer("/report/date_time"), Some(&json!("2026-06-01T12:00:00Z")), "local time, wrong Z");
    assert_eq!(r.pointer("/report/date_time_local"), Some(&json!("2026-06-01T12:00:00+02:00")));
}

#[test]
fn energy_registers_only_rise() {
    let mut g = gateway(SimMeter::Kmp);
    let mut last = 0.0;
    for i in 0..200 {
        g.tick(T0 + time::Duration::seconds(i));
        let e = g.report("OK").pointer("/report/energy/active/positive/total").and_then(Value::as_f64).unwrap();
        assert!(e >= last);
        last = e;
    }
}

#[test]
fn the_live_event_is_framed_like_the_docs_and_reads_back() {
    let mut g = gateway(SimMeter::P1);
    g.tick(T0);
    let ev = g.live_event();
    assert!(ev.starts_with("event: live\ndata: {") && ev.ends_with("}\n\n"), "{ev}");
    let data = ev.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
    let v: Value = serde_json::from_str(data).unwrap();
    assert!(v.get("P_In").is_some() && v.get("V_P2").is_some() && v.get("Vol").is_some());
    assert!(v.get("PF").is_none(), "the Ensor report has no power factor");
    let mut r = mapping::Reading::default();
    let mut issues = Vec::new();
    mapping::read_sse(v.as_object().unwrap(), &mut r, &mut issues);
    assert!(issues.is_empty(), "{issues:?}");
}

#[test]
fn templates_render_numbers_plain_and_missing_ones_as_null() {
    let mut g = gateway(SimMeter::Mbus);
    g.tick(T0);
    let out = g.render(TEMPLATE_BRIDGE, "OK");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["s"], Value::Null, "no apparent power on this meter");
    assert_eq!(v["e_in_t1"], Value::Null);
    assert_eq!(v["ts"], json!(T0.unix_timestamp()));
    assert_eq!(v["sys"], json!("A842E39F8124"));
    let ha = g.render(TEMPLATE_HA, "OK");
    let v: Value = serde_json::from_str(&ha).unwrap();
    assert_eq!(v["energy_in_t1"], json!("null"), "quoted numerics give \"null\"");
    assert_eq!(g.render("{\"x\":${foo}}", "OK"), "{\"x\":${foo}}", "unknown names stay verbatim");
}

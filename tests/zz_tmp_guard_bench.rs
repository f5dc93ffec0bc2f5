use std::time::{Duration, Instant};
use hlbridge::config::AdapterKind;
use hlbridge::metrics::Metrics;
use hlbridge::model::{Quantity, Update, Value};
use hlbridge::mqtt::{QoS, detached};
use hlbridge::router::{DeviceSpec, Router, RouterSettings};

#[test]
fn measure() {
    let n = 1_000_000u64;
    let mut g = hlbridge::guard::CounterGuard::new(hlbridge::guard::Limits { max_per_hour: Some(100.0), confirmations: 3 });
    let t0 = Instant::now();
    let base = Instant::now();
    for i in 0..n {
        std::hint::black_box(g.check(1000.0 + i as f64 * 1e-6, base + Duration::from_micros(i), None, true));
    }
    eprintln!("guard check: {:.1} ns/op", t0.elapsed().as_nanos() as f64 / n as f64);
    for q in ["power", "energy_import"] {
        let (mqtt, mut rx) = detached(100_000);
        let spec = DeviceSpec { id: "d".into(), adapter: AdapterKind::Goe, prefix: "home".into(), freshness: Duration::from_secs(60), min_interval: None, heartbeat: None, commands: false };
        let settings = RouterSettings { bridge_prefix: "home".into(), quantity_topics: true, state_json: true, qos: QoS::AtMostOnce };
        let r = Router::new(settings, vec![spec], mqtt, Metrics::detached());
        let h = r.handle("d").unwrap();
        let qq = Quantity::known(q);
        let m = 200_000u64;
        let t0 = Instant::now();
        for i in 0..m {
            let mut u = Update::fresh();
            u.push(qq, Value::Number(1000.0 + i as f64 * 1e-4));
            h.apply(u);
            if i % 1000 == 0 { rx.drain(); }
        }
        eprintln!("router apply {q}: {:.0} ns/op", t0.elapsed().as_nanos() as f64 / m as f64);
    }
}

//! `hlbridge discover` over real mDNS (cargo feature `mdns`): the whatwatt simulator announces itself
//! in one network namespace, `discover` browses from another, the two joined by a veth pair. Both
//! namespaces belong to the test and are deleted on drop; nothing runs on the host network and the
//! only addresses used are the two on the veth pair.
//!
//! Needs root and `ip` (iproute2). Without them the test prints a note and passes, unless
//! `HLBRIDGE_TEST_NETNS=required`, which turns the skip into a failure (for CI).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hlbridge::surface::config::AdapterConfig;

use crate::common::{DEADLINE, unique};

/// The simulated gateway's id (not the simulator's default, so the id is seen to travel).
const ID: &str = "C0FFEE5A1B2C";

/// How long each `hlbridge discover` listens.
const BROWSE: &str = "3s";

/// Why the test cannot run here, if it cannot.
fn unsupported() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not running as root".into());
    }
    match Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        _ => Some("`ip` (iproute2) is missing".into()),
    }
}

/// Prints why the test is skipped, or fails when `HLBRIDGE_TEST_NETNS=required`.
fn skip(why: &str) {
    assert!(
        std::env::var("HLBRIDGE_TEST_NETNS").as_deref() != Ok("required"),
        "HLBRIDGE_TEST_NETNS=required, but network namespaces are unavailable: {why}"
    );
    eprintln!("note: skipping the mDNS discovery test: {why} (it needs root and iproute2 for network namespaces)");
}

/// Runs `ip ARGS`, returning its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Two network namespaces joined by a veth pair, `10.250.X.1/24` in the first and `10.250.X.2/24`
/// in the second, with the processes started in them. Drop kills the processes and deletes both.
struct Lan {
    /// Namespace names: the gateway's, the browser's.
    ns: [String; 2],
    /// The address of each end.
    ip: [String; 2],
    /// Every namespace made so far (deleted on drop).
    made: Vec<String>,
    children: Vec<Child>,
}

impl Lan {
    /// Builds the pair, or `Err` with the reason when the first namespace cannot even be made.
    fn new() -> Result<Lan, String> {
        let n = unique();
        let pid = std::process::id();
        let x = (u64::from(pid) + n) % 250 + 1;
        let ns = [format!("hlb-it-{pid}-{n}-gw"), format!("hlb-it-{pid}-{n}-br")];
        let mut lan = Lan {
            ip: [format!("10.250.{x}.1"), format!("10.250.{x}.2")],
            ns: ns.clone(),
            made: Vec::new(),
            children: Vec::new(),
        };
        ip(&["netns", "add", &ns[0]])?;
        lan.made.push(ns[0].clone());
        let must = |args: &[&str]| ip(args).unwrap_or_else(|e| panic!("setting up the test network: {e}"));
        must(&["netns", "add", &ns[1]]);
        lan.made.push(ns[1].clone());
        // Both ends are created inside their namespaces: no interface ever exists on the host.
        must(&["link", "add", "hlbgw", "netns", &ns[0], "type", "veth", "peer", "name", "hlbbr", "netns", &ns[1]]);
        for (i, dev) in ["hlbgw", "hlbbr"].into_iter().enumerate() {
            must(&["-n", &ns[i], "addr", "add", &format!("{}/24", lan.ip[i]), "dev", dev]);
            must(&["-n", &ns[i], "link", "set", "lo", "up"]);
            must(&["-n", &ns[i], "link", "set", dev, "up"]);
        }
        // The kernel reports a new link operational (IFF_RUNNING) up to a second after it is set up,
        // and mDNS responders and browsers skip interfaces that are not, so wait for both ends.
        let deadline = Instant::now() + DEADLINE;
        for (i, dev) in ["hlbgw", "hlbbr"].into_iter().enumerate() {
            loop {
                let out = Command::new("ip").args(["-n", &ns[i], "-o", "link", "show", "dev", dev]).output();
                if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" state UP ")) {
                    break;
                }
                assert!(Instant::now() < deadline, "{dev} in {} did not come up within {DEADLINE:?}", ns[i]);
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(lan)
    }

    /// `hlbridge ARGS` run inside namespace `i`.
    fn hlbridge(&self, i: usize, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[i], env!("CARGO_BIN_EXE_hlbridge")]).args(args).stdin(Stdio::null());
        c
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.made {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: cleaning up: {e}");
            }
        }
    }
}

/// Reads `from` line by line on a thread: each line goes to the channel.
fn lines(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`, keeping every line read in `log`.
fn wait_for_line(rx: &mpsc::Receiver<String>, log: &mut Vec<String>, needle: &str, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(needle);
                log.push(line);
                if hit {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("timed out waiting until {what}; output:\n{}", log.join("\n"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the process ended before {what}; output:\n{}", log.join("\n"))
            }
        }
    }
}

/// Waits for `child` to exit within `limit`, polling; kills it and fails the test otherwise.
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One `hlbridge discover --timeout 3s` in the browser namespace: exit status, stdout, stderr.
fn discover(lan: &Lan) -> (ExitStatus, String, String) {
    let mut child = lan
        .hlbridge(1, &["discover", "--timeout", BROWSE])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hlbridge discover");
    let out = lines(child.stdout.take().expect("stdout"));
    let err = lines(child.stderr.take().expect("stderr"));
    let status = wait_exit(&mut child, DEADLINE, "hlbridge discover");
    let collect = |rx: mpsc::Receiver<String>| {
        // The pipes close with the process; the reader threads finish right after.
        let mut text = String::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
            text.push_str(&l);
            text.push('\n');
        }
        text
    };
    (status, collect(out), collect(err))
}

#[test]
fn discover_lists_a_gateway_announced_in_another_network_namespace_with_a_snippet_that_loads() {
    if let Some(why) = unsupported() {
        skip(&why);
        return;
    }
    let started = Instant::now();
    let mut lan = match Lan::new() {
        Ok(l) => l,
        Err(e) => {
            skip(&format!("cannot create a network namespace ({e})"));
            return;
        }
    };
    let gw_ip = lan.ip[0].clone();

    // The gateway: HTTP on port 80 of its own address, announced over mDNS.
    let listen = format!("{gw_ip}:80");
    let mut sim = lan
        .hlbridge(0, &["simulate", "whatwatt", "--listen", &listen, "--id", ID, "--mdns"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the whatwatt simulator");
    let sim_log = lines(sim.stderr.take().expect("stderr"));
    let sim_pid = sim.id();
    lan.children.push(sim);
    let mut log = Vec::new();
    wait_for_line(&sim_log, &mut log, "announced over mDNS", "the simulator announced itself");
    assert!(log.iter().any(|l| l.contains("whatwatt Go 5A1B2C WebUI._http._tcp.local.")), "{log:#?}");

    // The browser, from the other namespace: one browse must find the announced gateway.
    let announced = started.elapsed();
    let (status, out, err) = discover(&lan);
    assert!(status.success(), "discover exit status {status:?}\nstdout:\n{out}\nstderr:\n{err}");
    let found: Vec<&str> = out.lines().filter(|l| l.starts_with("# whatwatt Go")).collect();
    assert_eq!(
        found,
        [format!("# whatwatt Go 5A1B2C WebUI (id {ID}) at whatwatt-5A1B2C.local [{gw_ip}]")],
        "one gateway with its instance, id, host and address\nstdout:\n{out}\nstderr:\n{err}"
    );

    // The snippet, wrapped into a minimal config, is one the bridge accepts.
    let snippet = out.split_once("devices:\n").map(|(_, s)| s).unwrap_or_else(|| panic!("no snippet in\n{out}"));
    let url_of = |yaml: &str| {
        let cfg = hlbridge::surface::config::load_str(yaml, "discovered.yaml", crate::common::manifest_dir())
            .unwrap_or_else(|e| panic!("the discovered snippet does not load: {e}\n{yaml}"));
        assert_eq!(cfg.devices.keys().collect::<Vec<_>>(), ["whatwatt_5a1b2c"], "{yaml}");
        match &cfg.devices["whatwatt_5a1b2c"].adapter {
            AdapterConfig::Whatwatt(w) => w.url.clone(),
            other => panic!("not a whatwatt device: {other:?}"),
        }
    };
    let yaml = format!("devices:\n{snippet}");
    assert_eq!(url_of(&yaml).as_deref(), Some("http://whatwatt-5A1B2C.local"));
    // The commented-out alternative for networks without .local resolution is the gateway's IP.
    let by_ip = yaml.replace("    url: http://whatwatt-5A1B2C.local\n", "").replace("    # url: ", "    url: ");
    assert_eq!(url_of(&by_ip), Some(format!("http://{gw_ip}")), "{by_ip}");

    // SIGTERM: the simulator withdraws the announcement and exits cleanly.
    let kill = Command::new("kill").arg("-TERM").arg(sim_pid.to_string()).status().expect("kill(1)");
    assert!(kill.success());
    wait_for_line(&sim_log, &mut log, "mDNS announcement withdrawn", "the simulator withdrew its announcement");
    assert!(log.last().is_some_and(|l| l.contains("status=OK")), "{log:#?}");
    let sim = lan.children.last_mut().expect("the simulator");
    let status = wait_exit(sim, DEADLINE, "the simulator");
    assert!(status.success(), "simulator exit status {status:?}; output:\n{}", log.join("\n"));
    eprintln!(
        "mDNS discovery test: announced after {announced:?}, found by a {BROWSE} browse, {:?} in all",
        started.elapsed()
    );
}

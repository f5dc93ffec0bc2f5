//! `hlbridge discover` (cargo feature `mdns`): lists whatwatt Go gateways on the LAN with a config
//! snippet for each.
//!
//! The gateway announces its Web UI as `_http._tcp` on port 80 with TXT `id=<12 hex>` and
//! `type=100` (100 = whatwatt Go); that TXT pair, not the instance name, identifies it, exactly as
//! the Homey app matches it (protocol notes §7). Announcements need `services.broadcast` on (the
//! default) and some networks filter multicast, so a gateway that does not show up can still be
//! configured by IP. mDNS joins multicast on every interface: this runs only on demand, never in
//! the bridge itself.
//!
//! [`Announcement`] is the other side, the gateway's own announcement, for the simulator
//! (`hlbridge simulate whatwatt --mdns`); `tests/it/discover.rs` runs both over a veth pair between
//! two network namespaces of its own.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The DNS-SD service type gateways announce.
pub(crate) const SERVICE: &str = "_http._tcp.local.";
/// The subtype the gateway's Web UI is announced under as well (`_server`).
pub(crate) const SUBTYPE: &str = "_server._sub._http._tcp.local.";
/// TXT `type` of a whatwatt Go.
pub(crate) const WHATWATT_GO_TYPE: &str = "100";

/// The last six hex digits of a gateway id, as its mDNS names carry them (`9F8124`).
fn short_id(id: &str) -> &str {
    id.get(id.len().saturating_sub(6)..).unwrap_or(id)
}

/// The instance name a gateway announces its Web UI under, e.g. `whatwatt Go 9F8124 WebUI`.
pub(crate) fn instance_name(id: &str) -> String {
    format!("whatwatt Go {} WebUI", short_id(id))
}

/// The mDNS host name of a gateway, e.g. `whatwatt-9F8124.local.` (protocol notes §7).
pub(crate) fn host_name(id: &str) -> String {
    format!("whatwatt-{}.local.", short_id(id))
}

/// One gateway found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// TXT `id`: the gateway id (12 upper-case hex, the Wi-Fi MAC).
    pub id: String,
    /// mDNS host name without the trailing dot, e.g. `whatwatt-9F8124.local`.
    pub host: String,
    /// Addresses it answered from.
    pub addresses: Vec<IpAddr>,
    /// HTTP port (80).
    pub port: u16,
    /// The instance name, e.g. `whatwatt Go 9F8124 WebUI`.
    pub instance: String,
}

/// Builds a [`Found`] from one resolved `_http._tcp` service, or `None` when it is not a whatwatt Go.
pub(crate) fn from_service<'a>(
    instance: &str,
    host: &str,
    port: u16,
    mut addresses: Vec<IpAddr>,
    txt: impl Fn(&str) -> Option<&'a str>,
) -> Option<Found> {
    if txt("type")? != WHATWATT_GO_TYPE {
        return None;
    }
    let id = txt("id")?.trim().to_ascii_uppercase();
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    addresses.sort();
    addresses.dedup();
    Some(Found {
        id,
        host: host.trim_end_matches('.').to_owned(),
        addresses,
        port,
        instance: instance.trim_end_matches('.').split("._").next().unwrap_or(instance).to_owned(),
    })
}

/// A `devices:` entry for the gateway, ready to paste.
pub(crate) fn snippet(f: &Found) -> String {
    let suffix = &f.id[f.id.len() - 6..];
    let device = format!("whatwatt_{}", suffix.to_ascii_lowercase());
    let port = if f.port == 80 { String::new() } else { format!(":{}", f.port) };
    let ip = f.addresses.iter().find(|a| a.is_ipv4()).or(f.addresses.first());
    let mut s = format!("  {device}:\n    adapter: whatwatt\n    url: http://{}{port}\n", f.host);
    if let Some(ip) = ip {
        let ip = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
        s.push_str(&format!("    # url: http://{ip}{port}      # if .local names do not resolve here\n"));
    }
    s.push_str("    transport: sse\n    # password_file: /run/secrets/whatwatt   # when the web UI is protected\n");
    s
}

/// Browses for `timeout` and returns every gateway seen, by id.
pub async fn browse(timeout: Duration) -> anyhow::Result<Vec<Found>> {
    use mdns_sd::{ServiceDaemon, ServiceEvent};
    let daemon = ServiceDaemon::new()?;
    // Interfaces are looked at once at start and then every 5 s by default, longer than a typical
    // browse: check every second so one that comes up (or turns operational) meanwhile is used.
    daemon.set_ip_check_interval(1)?;
    let rx = daemon.browse(SERVICE)?;
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = match tokio::time::timeout_at(deadline, rx.recv_async()).await {
            Err(_) => break,
            Ok(Err(_)) => break,
            Ok(Ok(ev)) => ev,
        };
        if let ServiceEvent::ServiceResolved(info) = ev {
            let addresses: Vec<IpAddr> = info.get_addresses().iter().map(|a| a.to_ip_addr()).collect();
            if let Some(f) = from_service(info.get_fullname(), info.get_hostname(), info.get_port(), addresses, |k| {
                info.get_property_val_str(k)
            }) {
                found.entry(f.id.clone()).or_insert(f);
            }
        }
    }
    let _ = daemon.stop_browse(SERVICE);
    let _ = daemon.shutdown();
    Ok(found.into_values().collect())
}

/// A whatwatt Go's own mDNS announcement, as the simulator makes it: `_http._tcp` (and the
/// `_server` subtype) on the HTTP port, instance `whatwatt Go XXXXXX WebUI`, host
/// `whatwatt-XXXXXX.local.`, TXT `id=<12 hex>` and `type=100`. Registered when made, withdrawn
/// (goodbye packets) by [`Announcement::stop`]; dropping it only stops the responder.
pub(crate) struct Announcement {
    daemon: mdns_sd::ServiceDaemon,
    fullname: String,
    monitor: Option<tokio::task::JoinHandle<()>>,
    stopped: bool,
}

impl Announcement {
    /// Announces gateway `id` serving HTTP on `addr`. A specific address is announced on its own
    /// interface only; an unspecified one (`0.0.0.0`, `::`) on every interface with the addresses
    /// the host has. Must run inside a Tokio runtime (the daemon's events are logged from a task).
    pub(crate) fn whatwatt_go(id: &str, addr: SocketAddr) -> anyhow::Result<Announcement> {
        use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};
        let properties = [("id", id), ("type", WHATWATT_GO_TYPE)];
        let ip = addr.ip();
        let daemon = ServiceDaemon::new()?;
        let info = if ip.is_unspecified() {
            ServiceInfo::new(SUBTYPE, &instance_name(id), &host_name(id), (), addr.port(), &properties[..])?
                .enable_addr_auto()
        } else {
            // Stay off every other interface of the host.
            daemon.disable_interface(IfKind::All)?;
            daemon.enable_interface(IfKind::Addr(ip))?;
            ServiceInfo::new(SUBTYPE, &instance_name(id), &host_name(id), ip, addr.port(), &properties[..])?
        };
        let fullname = info.get_fullname().to_owned();
        let events = daemon.monitor()?;
        let name = fullname.clone();
        let monitor = tokio::spawn(async move {
            use mdns_sd::DaemonEvent;
            while let Ok(ev) = events.recv_async().await {
                match ev {
                    DaemonEvent::Announce(service, on) => {
                        tracing::info!(service = %service, on = %on, "announced over mDNS");
                    }
                    DaemonEvent::NameChange(change) => {
                        tracing::warn!(service = %name, ?change, "mDNS name conflict, renamed");
                    }
                    DaemonEvent::Error(e) => tracing::warn!(service = %name, error = %e, "mDNS responder error"),
                    _ => {}
                }
            }
        });
        daemon.register(info)?;
        Ok(Announcement { daemon, fullname, monitor: Some(monitor), stopped: false })
    }

    /// Withdraws the service (waits up to 2 s for the goodbye to go out) and stops the responder.
    pub(crate) async fn stop(mut self) {
        const LIMIT: Duration = Duration::from_secs(2);
        self.stopped = true;
        match self.daemon.unregister(&self.fullname) {
            Ok(rx) => match tokio::time::timeout(LIMIT, rx.recv_async()).await {
                Ok(Ok(status)) => tracing::info!(service = %self.fullname, ?status, "mDNS announcement withdrawn"),
                Ok(Err(_)) | Err(_) => tracing::warn!(service = %self.fullname, "mDNS unregister did not confirm"),
            },
            Err(e) => tracing::warn!(service = %self.fullname, error = %e, "mDNS unregister failed"),
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(LIMIT, rx.recv_async()).await;
        }
        if let Some(m) = self.monitor.take() {
            m.abort();
        }
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.daemon.shutdown();
        }
        if let Some(m) = self.monitor.take() {
            m.abort();
        }
    }
}

/// What `hlbridge discover` prints.
pub fn report(found: &[Found], timeout: Duration) -> String {
    if found.is_empty() {
        return format!(
            "no whatwatt Go answered on _http._tcp within {}s.\n\
             Check that the gateway is on this network and `services.broadcast` is on (the default);\n\
             some Wi-Fi networks filter multicast. You can always configure it by IP:\n\
             devices:\n  house_meter:\n    adapter: whatwatt\n    url: http://192.168.1.40\n",
            timeout.as_secs()
        );
    }
    let mut out = String::new();
    for f in found {
        let addrs: Vec<String> = f.addresses.iter().map(ToString::to_string).collect();
        out.push_str(&format!("# {} (id {}) at {} [{}]\n", f.instance, f.id, f.host, addrs.join(", ")));
    }
    out.push_str("devices:\n");
    for f in found {
        out.push_str(&snippet(f));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `avahi-browse -r` record.
    struct Avahi {
        instance: String,
        ty: String,
        host: String,
        port: u16,
        addrs: Vec<IpAddr>,
        txt: Vec<(String, String)>,
    }

    /// Parses the docs' `avahi-browse -r` output.
    fn avahi(text: &str) -> Avahi {
        let first = text.lines().next().unwrap();
        let mut cols = first.split_whitespace().skip(2);
        let words: Vec<&str> = cols.by_ref().collect();
        let ty_at = words.iter().position(|w| w.starts_with('_') || *w == "Web").unwrap();
        let instance = words[..ty_at].join(" ");
        let ty = if words.contains(&"_modbus._tcp") { "_modbus._tcp" } else { "_http._tcp" };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name).and_then(|r| r.trim().strip_prefix("= [")))
                .map(|v| v.trim_end_matches(']').to_owned())
        };
        let txt = field("txt")
            .map(|t| {
                t.split('"')
                    .filter(|p| p.contains('='))
                    .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let addrs = field("address").map(|a| vec![a.parse().unwrap()]).unwrap_or_default();
        Avahi {
            instance,
            ty: ty.to_owned(),
            host: field("hostname").unwrap(),
            port: field("port").unwrap().parse().unwrap(),
            addrs,
            txt,
        }
    }

    #[test]
    fn the_documented_announcement_is_a_whatwatt_go_with_its_id() {
        let Avahi { instance, ty, host, port, addrs, txt } =
            avahi(include_str!("../adapters/whatwatt/fixtures/docs_mdns_browse_http.txt"));
        assert_eq!(ty, "_http._tcp");
        let f =
            from_service(&instance, &host, port, addrs, |k| txt.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()))
                .expect("a whatwatt Go");
        assert_eq!(f.id, "A842E39F8124");
        assert_eq!(f.host, "whatwatt-9F8124.local");
        assert_eq!(f.port, 80);
        let s = snippet(&f);
        assert!(
            s.contains("  whatwatt_9f8124:\n    adapter: whatwatt\n    url: http://whatwatt-9F8124.local\n"),
            "{s}"
        );
        assert!(s.contains("http://192.168.99.176"), "{s}");
        let text = format!("devices:\n{s}");
        let cfg = crate::config::load_str(&text, "discovered.yaml", std::path::Path::new("."));
        assert!(cfg.is_ok(), "the snippet is a valid config: {cfg:?}");
    }

    #[test]
    fn the_simulator_announces_the_names_the_documented_gateway_uses() {
        let Avahi { instance, host, .. } =
            avahi(include_str!("../adapters/whatwatt/fixtures/docs_mdns_browse_http.txt"));
        assert_eq!(instance_name("A842E39F8124"), instance);
        assert_eq!(host_name("A842E39F8124"), format!("{host}."));
        assert_eq!(SUBTYPE.split_once("._sub.").map(|(_, ty)| ty), Some(SERVICE));
    }

    #[test]
    fn the_modbus_announcement_and_other_web_servers_are_not_gateways() {
        let Avahi { instance, host, port, addrs, txt, .. } =
            avahi(include_str!("../adapters/whatwatt/fixtures/docs_mdns_browse_modbus.txt"));
        assert!(txt.is_empty());
        assert!(from_service(&instance, &host, port, addrs, |_| None).is_none());
        let printer = from_service("OctoPrint", "octopi.local.", 80, vec![], |k| (k == "type").then_some("printer"));
        assert!(printer.is_none());
        let bad_id = from_service("x", "x.local.", 80, vec![], |k| if k == "type" { Some("100") } else { Some("xyz") });
        assert!(bad_id.is_none());
    }

    #[test]
    fn nothing_found_explains_how_to_configure_by_ip() {
        let r = report(&[], Duration::from_secs(5));
        assert!(r.contains("services.broadcast") && r.contains("url: http://"), "{r}");
    }
}

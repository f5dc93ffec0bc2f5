//! Live reload, the plan half: what differs between the running config and a new one, device by
//! device and section by section. Pure: no IO, tested alone; `app::Running::reload` carries it out
//! and `hlbridge check-config --diff OLD NEW` prints it.
//!
//! A device is *unchanged* when its whole effective configuration is: its own keys (secrets
//! compared by value, never printed), and what it inherits (topic prefix from `output`/`routes`,
//! freshness from its adapter's cadence). Unchanged devices are left running untouched.

use std::collections::BTreeSet;
use std::fmt;

use crate::config::Config;

/// What one device does on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    /// New in the config: starts.
    Added,
    /// Gone from the config (or disabled): stops; its retained topics are cleared.
    Removed,
    /// Configured differently: restarts with the new configuration.
    Changed,
    /// Same effective configuration: keeps running, untouched.
    Unchanged,
    /// Still configured, but `cluster:` now gives it to another instance: stops here and its
    /// retained topics stay (the new owner publishes over them).
    MovedAway,
    /// Configured before, but `cluster:` now gives it to this instance: starts here.
    MovedIn,
}

impl DeviceChange {
    /// The word printed by `check-config --diff` and logged.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeviceChange::Added => "added",
            DeviceChange::Removed => "removed",
            DeviceChange::Changed => "changed",
            DeviceChange::Unchanged => "unchanged",
            DeviceChange::MovedAway => "moved to another instance",
            DeviceChange::MovedIn => "moved to this instance",
        }
    }
}

/// The difference between two configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every device this instance runs under either config, in id order, with what happens to it.
    pub devices: Vec<(String, DeviceChange)>,
    /// `mqtt:` differs, or the bridge's own topics do (`cluster:` turned on or off, another instance
    /// number): the client reconnects with the new settings and last will.
    pub mqtt: bool,
    /// The bridge's own topics move (`<prefix>/bridge/status` ↔ `<prefix>/bridge/<n>/status`): the
    /// old ones are cleared.
    pub bridge_topics_moved: bool,
    /// `http.listen` differs: the endpoint moves to the new address.
    pub http_listen: bool,
    /// Sections that differ but take effect only on restart (`output` beyond device prefixes,
    /// `log`, `runtime`, `simulators`, `mqtt.embedded`): the running values are kept and a warning
    /// names them.
    pub restart_needed: Vec<&'static str>,
}

impl Plan {
    /// Ids of the devices with `change`.
    pub fn ids(&self, change: DeviceChange) -> Vec<&str> {
        self.devices.iter().filter(|(_, c)| *c == change).map(|(id, _)| id.as_str()).collect()
    }

    /// Whether applying the plan changes nothing.
    #[cfg(test)]
    pub(crate) fn is_noop(&self) -> bool {
        !self.mqtt
            && !self.http_listen
            && !self.bridge_topics_moved
            && self.devices.iter().all(|(_, c)| *c == DeviceChange::Unchanged)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, change) in &self.devices {
            writeln!(f, "device {id}: {}", change.as_str())?;
        }
        writeln!(f, "mqtt: {}", if self.mqtt { "reconnect with the new settings" } else { "unchanged" })?;
        if self.bridge_topics_moved {
            writeln!(f, "cluster: the bridge's status and info topics move (the old ones are cleared)")?;
        }
        writeln!(f, "http.listen: {}", if self.http_listen { "move to the new address" } else { "unchanged" })?;
        for section in &self.restart_needed {
            writeln!(f, "{section}: changed; takes effect only after a restart")?;
        }
        Ok(())
    }
}

/// The plan that turns `old` into `new`.
pub fn plan(old: &Config, new: &Config) -> Plan {
    crate::config::types::with_secrets_revealed(|| {
        let ids: BTreeSet<&String> = old.owned_devices().chain(new.owned_devices()).map(|(id, _)| id).collect();
        let enabled = |config: &Config, id: &str| config.devices.get(id).is_some_and(|d| d.common.enabled);
        let devices = ids
            .into_iter()
            .map(|id| {
                let change = match (fingerprint(old, id), fingerprint(new, id)) {
                    (None, Some(_)) if enabled(old, id) => DeviceChange::MovedIn,
                    (None, Some(_)) => DeviceChange::Added,
                    (Some(_), None) if enabled(new, id) => DeviceChange::MovedAway,
                    (Some(_), None) => DeviceChange::Removed,
                    (Some(a), Some(b)) if a == b => DeviceChange::Unchanged,
                    _ => DeviceChange::Changed,
                };
                (id.clone(), change)
            })
            .collect();
        let mut mqtt_old = json(&old.mqtt);
        let mut mqtt_new = json(&new.mqtt);
        let embedded_changed = mqtt_old.get("embedded") != mqtt_new.get("embedded");
        for v in [&mut mqtt_old, &mut mqtt_new] {
            if let Some(m) = v.as_object_mut() {
                m.remove("embedded");
            }
        }
        let mut restart_needed = Vec::new();
        if embedded_changed {
            restart_needed.push("mqtt.embedded");
        }
        // Device prefixes derived from `output.prefix` are part of each device's fingerprint; the
        // rest of `output` shapes the router and the bridge's own topics.
        if json(&old.output) != json(&new.output) {
            restart_needed.push("output");
        }
        if json(&old.log) != json(&new.log) {
            restart_needed.push("log");
        }
        if json(&old.runtime) != json(&new.runtime) {
            restart_needed.push("runtime");
        }
        if json(&old.simulators) != json(&new.simulators) {
            restart_needed.push("simulators");
        }
        if old.homeassistant != new.homeassistant {
            restart_needed.push("homeassistant");
        }
        let mut http_old = json(&old.http);
        let mut http_new = json(&new.http);
        let http_listen = http_old.get("listen") != http_new.get("listen");
        for v in [&mut http_old, &mut http_new] {
            if let Some(m) = v.as_object_mut() {
                m.remove("listen");
            }
        }
        if http_old != http_new {
            restart_needed.push("http");
        }
        let bridge_topics_moved = old.cluster.topic_instance() != new.cluster.topic_instance();
        Plan {
            devices,
            mqtt: mqtt_old != mqtt_new || bridge_topics_moved,
            http_listen,
            bridge_topics_moved,
            restart_needed,
        }
    })
}

/// Everything that decides how device `id` runs, or `None` when it is not enabled in `config` or
/// another instance owns it.
fn fingerprint(config: &Config, id: &str) -> Option<(serde_json::Value, String)> {
    let d = config.devices.get(id).filter(|d| d.common.enabled && config.cluster.owns(id))?;
    let spec = config.device_spec(id)?;
    Some((json(d), format!("{spec:?}")))
}

fn json(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Config {
        crate::config::load_str(yaml, "t.yaml", std::path::Path::new(".")).expect("valid config")
    }

    const BASE: &str = "mqtt:\n  url: mqtt://127.0.0.1:1884\ndevices:\n  keep:\n    adapter: goe\n    serial: \"1\"\n  drop:\n    adapter: goe\n    serial: \"2\"\n  tweak:\n    adapter: goe\n    serial: \"3\"\n";

    #[test]
    fn devices_are_added_removed_changed_or_left_alone() {
        let old = load(BASE);
        let new = load(
            &BASE
                .replace(
                    "  drop:\n    adapter: goe\n    serial: \"2\"\n",
                    "  fresh:\n    adapter: goe\n    serial: \"4\"\n",
                )
                .replace("serial: \"3\"", "serial: \"33\""),
        );
        let p = plan(&old, &new);
        assert_eq!(p.ids(DeviceChange::Added), ["fresh"]);
        assert_eq!(p.ids(DeviceChange::Removed), ["drop"]);
        assert_eq!(p.ids(DeviceChange::Changed), ["tweak"]);
        assert_eq!(p.ids(DeviceChange::Unchanged), ["keep"]);
        assert!(!p.mqtt && !p.http_listen && p.restart_needed.is_empty());
    }

    #[test]
    fn the_same_config_is_a_plan_that_changes_nothing() {
        let p = plan(&load(BASE), &load(BASE));
        assert!(p.is_noop(), "{p}");
    }

    #[test]
    fn a_changed_inherited_prefix_changes_the_device_even_though_its_own_keys_did_not() {
        let new = load(&format!("{BASE}routes:\n  - match: {{ adapter: goe }}\n    prefix: garage\n"));
        let p = plan(&load(BASE), &new);
        assert_eq!(p.ids(DeviceChange::Changed), ["drop", "keep", "tweak"]);
    }

    #[test]
    fn a_changed_secret_counts_without_ever_being_printed() {
        let old =
            load(&format!("{BASE}  meter:\n    adapter: whatwatt\n    url: http://10.0.0.9\n    password: one\n"));
        let new =
            load(&format!("{BASE}  meter:\n    adapter: whatwatt\n    url: http://10.0.0.9\n    password: two\n"));
        let p = plan(&old, &new);
        assert_eq!(p.ids(DeviceChange::Changed), ["meter"]);
        assert!(!p.to_string().contains("two"));
        assert!(!crate::config::types::with_secrets_revealed(|| false), "the reveal flag is off again");
        assert!(new.to_redacted_yaml().contains("<redacted>"));
    }

    #[test]
    fn mqtt_and_http_listen_changes_are_applied_live_and_the_rest_needs_a_restart() {
        let new = load(
            &BASE
                .replace("1884", "1885")
                .replace("devices:", "http:\n  listen: 127.0.0.1:9999\noutput:\n  state_json: false\ndevices:"),
        );
        let p = plan(&load(BASE), &new);
        assert!(p.mqtt && p.http_listen);
        assert_eq!(p.restart_needed, ["output"]);
        assert!(p.to_string().contains("output: changed; takes effect only after a restart"), "{p}");
    }

    #[test]
    fn a_disabled_device_counts_as_removed() {
        let new = load(&BASE.replace("    serial: \"2\"\n", "    serial: \"2\"\n    enabled: false\n"));
        assert_eq!(plan(&load(BASE), &new).ids(DeviceChange::Removed), ["drop"]);
    }

    /// Twelve devices, `instances` shards, seen from `instance`.
    fn cluster_config(instance: u32, instances: u32) -> Config {
        let mut yaml = format!("cluster:\n  instance: {instance}\n  instances: {instances}\n{BASE}");
        for i in 0..12 {
            yaml.push_str(&format!("  d{i}:\n    adapter: goe\n    serial: \"{}\"\n", 100 + i));
        }
        load(&yaml)
    }

    #[test]
    fn growing_the_cluster_moves_only_the_devices_the_hash_gives_to_the_new_instance() {
        let all: Vec<String> = cluster_config(0, 1).enabled_devices().map(|(id, _)| id.clone()).collect();
        for me in 0..3 {
            let p = plan(&cluster_config(me, 3), &cluster_config(me, 4));
            for id in &all {
                let (before, after) = (crate::cluster::owner(id, 3), crate::cluster::owner(id, 4));
                let want = match (before == me, after == me) {
                    (true, true) => Some(DeviceChange::Unchanged),
                    (true, false) => Some(DeviceChange::MovedAway),
                    (false, true) => Some(DeviceChange::MovedIn),
                    (false, false) => None,
                };
                let got = p.devices.iter().find(|(d, _)| d == id).map(|(_, c)| *c);
                assert_eq!(got, want, "instance {me}, device {id}: owner {before} -> {after}");
            }
            assert!(p.ids(DeviceChange::Removed).is_empty() && p.ids(DeviceChange::Added).is_empty(), "{p}");
            assert!(!p.mqtt && !p.bridge_topics_moved, "same instance number: same bridge topics");
        }
        let new_one = plan(&cluster_config(3, 4), &cluster_config(3, 4));
        assert!(new_one.is_noop());
    }

    #[test]
    fn a_device_removed_from_the_file_is_removed_not_moved_even_in_a_cluster() {
        let old = cluster_config(0, 1);
        let new = load(BASE);
        let p = plan(&old, &new);
        assert_eq!(p.ids(DeviceChange::Removed).len(), 12, "{p}");
        assert!(p.ids(DeviceChange::MovedAway).is_empty());
    }

    #[test]
    fn turning_the_cluster_on_moves_the_bridge_topics_and_reconnects() {
        let p = plan(&cluster_config(0, 1), &cluster_config(0, 2));
        assert!(p.bridge_topics_moved && p.mqtt, "{p}");
        assert!(p.to_string().contains("cluster: the bridge's status and info topics move"), "{p}");
        assert!(!p.ids(DeviceChange::MovedAway).is_empty(), "about half the devices leave instance 0: {p}");
    }
}

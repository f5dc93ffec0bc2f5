//! A configured device (`devices.<id>`): the keys every device accepts plus its adapter's own
//! ([`AdapterConfig`]). It lives beside the registry so that `config` depends on `adapters` and not
//! the other way round; `crate::config` re-exports it. These `///` docs are the user reference.

use serde::{Deserialize, Serialize};

use super::AdapterConfig;
use crate::commands::CommandsSetting;
use crate::config::types::{AdapterKind, Dur};
use crate::guard::GuardConfig;

/// Keys every device accepts, whatever its adapter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCommon {
    /// The adapter that speaks to the device.
    pub adapter: AdapterKind,
    /// Topic prefix for this device only (wins over routes and `output.prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// How long after the last reading the device counts as stale (default: 3 × its cadence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Dur>,
    /// Minimum time between two publishes of one quantity; changes in between are coalesced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval: Option<Dur>,
    /// Republish unchanged values this often, so consumers can tell "unchanged" from "gone".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Dur>,
    /// How many incoming MQTT messages may wait for the device's adapter; beyond that they are
    /// dropped and counted on `hlbridge_ingest_dropped_total{device}` (default: the adapter's own,
    /// 256 to 4096). Raise it for bursty devices whose drop counter grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_queue: Option<usize>,
    /// Set to false to keep the device in the file but not run it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A readable name for the device (Home Assistant shows it); default: the id made readable
    /// (`garage_charger` → `Garage charger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Set to false to keep the device out of Home Assistant discovery (its topics stay).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub homeassistant: bool,
    /// The counter guard for the device's lifetime counters (`volume`, `energy_import`, ...): drops
    /// and implausible jumps are rejected until enough readings agree (see `crate::guard`).
    #[serde(default, skip_serializing_if = "GuardConfig::is_default")]
    pub guard: GuardConfig,
    /// Which `<name>/set` commands the device accepts: `true`, `false` or a list such as
    /// `[current_limit, force_state]`. Unset: off for devices that act on the physical world
    /// (charger, printer), on for the others (see `crate::adapters::commands_default_on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) commands: Option<CommandsSetting>,
    /// At most one run of each command per this long (default 2s; `0s` turns the limit off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_rate_limit: Option<Dur>,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

/// One configured device: the common keys plus its adapter's own.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Keys every device has.
    pub common: DeviceCommon,
    /// The adapter-specific part.
    pub adapter: AdapterConfig,
}

impl Serialize for DeviceConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut map = match serde_json::to_value(&self.common).map_err(S::Error::custom)? {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let specific = serde_json::to_value(&self.adapter).map_err(S::Error::custom)?;
        if let serde_json::Value::Object(m) = specific {
            map.extend(m);
        }
        map.serialize(s)
    }
}

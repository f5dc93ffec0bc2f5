//! Scale-out without a coordination service: `cluster: {instance, instances}` shards the configured
//! devices over several bridges on one broker. Each device is owned by exactly one instance, chosen
//! by rendezvous (highest-random-weight) hashing of its id: every instance computes the same owner
//! from the config alone, and changing `instances` from n to n+1 moves only the ~1/(n+1) of the
//! devices whose new highest score is the new instance (and n+1 to n moves only the removed
//! instance's devices). Pure: no IO, tested alone; `Config::owned_devices` applies it.
//!
//! The hash is written out here (FNV-1a over the id, then a SplitMix64 finaliser mixed with the
//! instance number) because the owner must be the same on every machine, build and run: std's
//! `DefaultHasher` is randomly seeded and its algorithm may change between Rust releases.

use serde::{Deserialize, Serialize};

/// The most instances a cluster may have (a rendezvous lookup costs one hash per instance).
pub(crate) const MAX_INSTANCES: u32 = 1024;

/// `cluster:` — this bridge's share of the devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterConfig {
    /// This instance's number, `0` to `instances - 1`, or `auto`: the number at the end of the host
    /// name (`hlbridge-2` → 2), which is the pod ordinal in a Kubernetes StatefulSet.
    pub instance: Instance,
    /// How many instances share the devices; `1` (default) runs every device here and keeps the
    /// single-instance topics (`<prefix>/bridge/status`).
    pub instances: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { instance: Instance::Number(0), instances: 1 }
    }
}

impl ClusterConfig {
    /// Whether more than one instance shares the devices (the bridge topics then carry the number).
    pub(crate) fn is_sharded(&self) -> bool {
        self.instances > 1
    }

    /// This instance's number (`auto` is resolved while the config loads; 0 if it was not).
    pub(crate) fn number(&self) -> u32 {
        match self.instance {
            Instance::Number(n) => n,
            Instance::Auto => 0,
        }
    }

    /// Whether this instance owns device `id`.
    pub(crate) fn owns(&self, id: &str) -> bool {
        !self.is_sharded() || owner(id, self.instances) == self.number()
    }

    /// The instance part of the bridge topics: `None` for a single instance.
    pub(crate) fn topic_instance(&self) -> Option<u32> {
        self.is_sharded().then(|| self.number())
    }
}

/// `cluster.instance`: a number, or `auto` (from the host name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Instance {
    /// Given outright (`instance: 2`, `HLBRIDGE_CLUSTER__INSTANCE=2`).
    Number(u32),
    /// Taken from the trailing `-<n>` of the host name when the config loads.
    Auto,
}

impl Serialize for Instance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Instance::Number(n) => s.serialize_u32(*n),
            Instance::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Instance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a whole number (0 or more) or `auto`"))?
        {
            Raw::Number(n) => Ok(Instance::Number(n)),
            Raw::Text(t) if t == "auto" => Ok(Instance::Auto),
            // The environment delivers numbers as text when figment cannot tell.
            Raw::Text(t) => t.trim().parse().map(Instance::Number).map_err(|_| {
                serde::de::Error::custom(format!("expected a whole number (0 or more) or `auto`, found `{t}`"))
            }),
        }
    }
}

/// Why `instance: auto` could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClusterError {
    /// No host name to read the ordinal from.
    #[error("cluster.instance: `auto` needs the host name (HOSTNAME), which is not set; give the number instead")]
    NoHostname,
    /// The host name does not end in `-<number>`.
    #[error(
        "cluster.instance: `auto` reads the number at the end of the host name (a StatefulSet pod `hlbridge-2` is 2), \
         but `{hostname}` has none; give the number instead"
    )]
    NoOrdinal {
        /// The host name read.
        hostname: String,
    },
}

/// The ordinal at the end of a StatefulSet pod name: `hlbridge-2` → 2.
pub(crate) fn ordinal_from_hostname(hostname: &str) -> Result<u32, ClusterError> {
    let no_ordinal = || ClusterError::NoOrdinal { hostname: hostname.chars().take(253).collect() };
    let (_, tail) = hostname.trim().rsplit_once('-').ok_or_else(no_ordinal)?;
    if tail.is_empty() || tail.len() > 9 || !tail.bytes().all(|b| b.is_ascii_digit()) {
        return Err(no_ordinal());
    }
    tail.parse().map_err(|_| no_ordinal())
}

/// The host name as Kubernetes sets it for a pod (`HOSTNAME`), else the kernel's.
pub(crate) fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
}

/// The instance (`0..instances`) that owns device `id`: the one with the highest score.
/// `instances` of 0 or 1 is instance 0.
pub fn owner(id: &str, instances: u32) -> u32 {
    let key = fnv1a(id.as_bytes());
    (0..instances.max(1)).max_by_key(|&i| (score(key, i), std::cmp::Reverse(i))).unwrap_or(0)
}

/// Device `id`'s weight on instance `instance`: independent and uniform across instances.
fn score(key: u64, instance: u32) -> u64 {
    splitmix64(key ^ splitmix64(u64::from(instance).wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: spreads every input bit over the whole output.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("device-{i}")).collect()
    }

    #[test]
    fn ten_thousand_devices_spread_evenly_over_three_instances() {
        let mut counts = [0usize; 3];
        for id in ids(10_000) {
            counts[owner(&id, 3) as usize] += 1;
        }
        for c in counts {
            assert!((3_033..=3_633).contains(&c), "each instance gets 1/3 ± 3 %: {counts:?}");
        }
    }

    #[test]
    fn growing_from_three_to_four_instances_moves_about_a_quarter_and_only_to_the_new_one() {
        let all = ids(10_000);
        let mut moved = 0;
        for id in &all {
            let (before, after) = (owner(id, 3), owner(id, 4));
            if before != after {
                moved += 1;
                assert_eq!(after, 3, "{id} moved from {before} to an old instance ({after})");
            }
        }
        assert!((2_200..=2_800).contains(&moved), "about 1/4 of 10 000 move: {moved}");
    }

    #[test]
    fn shrinking_moves_only_the_devices_of_the_removed_instance() {
        for id in ids(5_000) {
            let (before, after) = (owner(&id, 4), owner(&id, 3));
            if before != 3 {
                assert_eq!(before, after, "{id} stayed on a remaining instance");
            }
        }
    }

    #[test]
    fn the_owner_is_the_same_on_every_run_and_machine() {
        // Fixed values: a change here means every deployed cluster would reshuffle its devices.
        let got: Vec<u32> = ["garage_charger", "house_meter", "water", "printer", "device-0", "device-9999"]
            .iter()
            .map(|id| owner(id, 5))
            .collect();
        assert_eq!(got, OWNERS_OF_FIXED_IDS_ON_FIVE);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a reference value");
    }

    /// Pinned by [`the_owner_is_the_same_on_every_run_and_machine`].
    const OWNERS_OF_FIXED_IDS_ON_FIVE: [u32; 6] = [0, 3, 0, 3, 0, 4];

    #[test]
    fn one_instance_owns_everything() {
        let c = ClusterConfig::default();
        assert!(ids(100).iter().all(|id| c.owns(id) && owner(id, 1) == 0 && owner(id, 0) == 0));
        assert_eq!(c.topic_instance(), None);
    }

    #[test]
    fn every_device_has_exactly_one_owner_among_the_instances() {
        for id in ids(1_000) {
            let owners =
                (0..3).filter(|&i| ClusterConfig { instance: Instance::Number(i), instances: 3 }.owns(&id)).count();
            assert_eq!(owners, 1, "{id}");
        }
    }

    #[test]
    fn the_ordinal_is_the_number_at_the_end_of_a_pod_name() {
        assert_eq!(ordinal_from_hostname("hlbridge-2"), Ok(2));
        assert_eq!(ordinal_from_hostname("my-bridge-set-17\n"), Ok(17));
        for bad in ["hlbridge", "hlbridge-", "hlbridge-x2", "hlbridge-99999999999", ""] {
            assert!(
                matches!(ordinal_from_hostname(bad), Err(ClusterError::NoOrdinal { .. })),
                "{bad:?} has no ordinal"
            );
        }
    }

    #[test]
    fn instance_reads_a_number_a_numeric_string_or_auto() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Instance>(v);
        assert_eq!(parse(serde_json::json!(3)).unwrap(), Instance::Number(3));
        assert_eq!(parse(serde_json::json!("4")).unwrap(), Instance::Number(4));
        assert_eq!(parse(serde_json::json!("auto")).unwrap(), Instance::Auto);
        let e = parse(serde_json::json!("two")).unwrap_err().to_string();
        assert!(e.contains("`auto`"), "{e}");
        assert!(parse(serde_json::json!(-1)).is_err());
    }
}

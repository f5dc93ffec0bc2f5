//! Loading: YAML (serde_norway behind a figment `Format`) merged with `HLBRIDGE_A__B` environment
//! overrides, then parsed section by section and device by device so that *every* error is
//! reported in one go, each with its key path, the file line when the file is at fault (or the
//! environment variable when that is), and the nearest valid key for typos.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format};
use serde::de::DeserializeOwned;

use super::types::fields_of;

#[cfg(feature = "simulators")]
use super::SimulatorConfig;
use super::{
    AdapterKind, Config, DeviceCommon, DeviceConfig, HttpConfig, LogConfig, MqttConfig, OutputConfig, RouteConfig,
};

/// Top-level keys of the file.
const SECTIONS: &[&str] =
    &["mqtt", "output", "http", "log", "runtime", "devices", "routes", "simulators", "homeassistant", "cluster"];
/// Prefix of environment overrides.
const ENV_PREFIX: &str = "HLBRIDGE_";

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`devices.garage.interval`), empty for whole-file problems.
    pub path: String,
    /// What is wrong, and how to fix it when we can tell.
    pub message: String,
    /// Where the bad value came from: `file.yaml:12` or `env HLBRIDGE_MQTT__URL`.
    pub origin: Option<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(o) = &self.origin {
            write!(f, "{o}: ")?;
        }
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Every problem found, in file order where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        writeln!(f, "the configuration has {n} error{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// figment `Format` backed by serde_norway (figment's own `yaml` feature uses the archived serde_yaml).
struct Yaml;

impl Format for Yaml {
    type Error = serde_norway::Error;
    const NAME: &'static str = "YAML";
    fn from_str<T: DeserializeOwned>(s: &str) -> Result<T, Self::Error> {
        serde_norway::from_str(s)
    }
}

/// Loads and validates `path`, applying environment overrides.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
            origin: None,
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_str(&text, &path.display().to_string(), base)
}

/// Loads and validates YAML `text` (named `name` in messages), applying environment overrides;
/// relative secret files are resolved against `base_dir`.
pub fn load_str(text: &str, name: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx { text, name, errors: Vec::new() };
    // Syntax first: serde_norway knows line and column; nothing else can be checked after one.
    if let Err(e) = serde_norway::from_str::<serde_norway::Value>(text) {
        let problem = super::syntax::explain(text, &e);
        let origin = match (problem.line, problem.column) {
            (Some(line), Some(column)) => Some(format!("{name}:{line}:{column}")),
            (Some(line), None) => Some(format!("{name}:{line}")),
            _ => Some(name.to_owned()),
        };
        return Err(ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("YAML syntax: {}", problem.message),
            origin,
        }]));
    }
    let figment = Figment::new().merge(Yaml::string(text)).merge(Env::prefixed(ENV_PREFIX).split("__").filter(|k| {
        let first = k.as_str().split("__").next().unwrap_or("").split('.').next().unwrap_or("");
        SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(first))
    }));
    let root: serde_json::Value = match figment.extract() {
        Ok(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Ok(v) => v,
        Err(e) => {
            return Err(ConfigErrors(
                e.into_iter()
                    .map(|e| ConfigError { path: e.path.join("."), message: e.kind.to_string(), origin: None })
                    .collect(),
            ));
        }
    };
    let serde_json::Value::Object(root) = root else {
        ctx.error("", "the file must be a mapping of sections (mqtt:, devices:, ...)".into());
        return Err(ConfigErrors(ctx.errors));
    };
    ctx.check_keys(&root, "", SECTIONS);

    let mut config = Config {
        mqtt: ctx.section::<MqttConfig>(&root, "mqtt").unwrap_or_default(),
        output: ctx.section::<OutputConfig>(&root, "output").unwrap_or_default(),
        http: ctx.section::<HttpConfig>(&root, "http").unwrap_or_default(),
        log: ctx.section::<LogConfig>(&root, "log").unwrap_or_default(),
        runtime: ctx.section::<super::RuntimeConfig>(&root, "runtime").unwrap_or_default(),
        homeassistant: ctx.section::<super::HomeAssistantConfig>(&root, "homeassistant").unwrap_or_default(),
        cluster: ctx.section::<crate::cluster::ClusterConfig>(&root, "cluster").unwrap_or_default(),
        ..Default::default()
    };
    if let Some(v) = root.get("mqtt").and_then(|m| m.get("tls"))
        && let serde_json::Value::Object(m) = v
    {
        ctx.check_keys(m, "mqtt.tls", fields_of::<super::TlsConfig>());
    }

    match root.get("devices") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(devices)) => {
            for (id, raw) in devices {
                if let Some(d) = ctx.device(id, raw) {
                    config.devices.insert(id.clone(), d);
                }
            }
        }
        Some(_) => {
            ctx.error("devices", "must be a mapping keyed by device id (a list cannot be overridden per key)".into())
        }
    }
    match root.get("routes") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(routes)) => {
            for (i, r) in routes.iter().enumerate() {
                let path = format!("routes.{i}");
                if let serde_json::Value::Object(m) = r {
                    ctx.check_keys(m, &path, fields_of::<RouteConfig>());
                }
                if let Some(route) = ctx.parse::<RouteConfig>(r, &path) {
                    config.routes.push(route);
                }
            }
        }
        Some(_) => ctx.error("routes", "must be a list of {match: {...}, prefix: ...}".into()),
    }
    match root.get("simulators") {
        None | Some(serde_json::Value::Null) => {}
        #[cfg(not(feature = "simulators"))]
        Some(serde_json::Value::Object(sims)) if sims.is_empty() => {}
        #[cfg(not(feature = "simulators"))]
        Some(_) => ctx.error(
            "simulators",
            "this hlbridge was built without simulators (cargo feature `simulators`); remove the section \
             or use a build with the feature"
                .into(),
        ),
        #[cfg(feature = "simulators")]
        Some(serde_json::Value::Object(sims)) => {
            for (id, raw) in sims {
                if let Some(s) = ctx.simulator(id, raw) {
                    config.simulators.insert(id.clone(), s);
                }
            }
        }
        #[cfg(feature = "simulators")]
        Some(_) => ctx.error("simulators", "must be a mapping keyed by simulator name".into()),
    }

    validate(&mut ctx, &mut config, base_dir);
    check_something_runs(&mut ctx, &root, &config);
    if ctx.errors.is_empty() {
        return Ok(config);
    }
    // File order reads best; errors from the environment or without a line go last.
    let line_of = |e: &ConfigError| {
        e.origin
            .as_deref()
            .and_then(|o| o.strip_prefix(name)?.strip_prefix(':')?.split(':').next()?.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    };
    ctx.errors.sort_by_key(line_of);
    Err(ConfigErrors(ctx.errors))
}

struct Ctx<'a> {
    text: &'a str,
    name: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn origin(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
        if segments.is_empty() {
            return None;
        }
        let env_name = format!("{ENV_PREFIX}{}", segments.join("__").to_uppercase());
        if std::env::var_os(&env_name).is_some() {
            return Some(format!("env {env_name}"));
        }
        // Try the full path, then its parents (a missing key is reported at its parent's line).
        for len in (1..=segments.len()).rev() {
            if let Some(line) = locate(self.text, &segments[..len]) {
                return Some(format!("{}:{line}", self.name));
            }
        }
        None
    }

    fn error(&mut self, path: &str, message: String) {
        // The same problem can be found twice (a nested unknown key by serde and by check_keys).
        if self.errors.iter().any(|e| e.path == path && e.message == message) {
            return;
        }
        let origin = self.origin(path);
        self.errors.push(ConfigError { path: path.to_owned(), message, origin });
    }

    fn check_keys(&mut self, map: &serde_json::Map<String, serde_json::Value>, path: &str, valid: &[&str]) {
        for key in map.keys() {
            if !valid.contains(&key.as_str()) {
                let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let msg = unknown_key_message(key, valid);
                self.error(&full, msg);
            }
        }
    }

    /// Parses `value` as `T`; `None` (with the errors reported) when anything in it is wrong.
    fn parse<T: DeserializeOwned>(&mut self, value: &serde_json::Value, path: &str) -> Option<T> {
        match self.parse_all(value, path) {
            (Some(v), true) => Some(v),
            _ => None,
        }
    }

    /// Parses `value` as `T` and reports *every* bad key in it, not only the first: serde stops at
    /// the first error, so the key at fault is taken out of the tree and the rest parsed again,
    /// until it parses. Returns what finally parsed (defaults in place of the bad keys, for the
    /// checks that follow) and whether the value was clean.
    fn parse_all<T: DeserializeOwned>(&mut self, value: &serde_json::Value, path: &str) -> (Option<T>, bool) {
        let mut value = value.clone();
        // Keys taken out so far (as paths inside `value`): a "required key missing" for one of them
        // is our doing, not the user's.
        let mut taken_out: Vec<Vec<String>> = Vec::new();
        // Every attempt takes one key out, so this bounds the loop by the size of the tree.
        for _ in 0..=count_keys(&value) {
            let error = match serde_path_to_error::deserialize::<_, T>(&value) {
                Ok(v) => return (Some(v), taken_out.is_empty()),
                Err(e) => e,
            };
            let mut inner: Vec<String> = Vec::new();
            for segment in error.path() {
                match segment {
                    serde_path_to_error::Segment::Map { key } => inner.push(key.clone()),
                    serde_path_to_error::Segment::Seq { index } => inner.push(index.to_string()),
                    // Enum variants and buffered (tagged-enum) content have no key to take out.
                    _ => break,
                }
            }
            let raw = error.into_inner().to_string();
            let msg = humanize(&raw);
            let missing = raw.strip_prefix("missing field `").map(|f| f.trim_end_matches('`').to_owned());
            if let Some(field) = &missing {
                let mut key = inner.clone();
                key.push(field.clone());
                if taken_out.contains(&key) {
                    return (None, false);
                }
            }
            let full = join_path(path, &inner);
            // Unknown keys were already reported by check_keys with a suggestion.
            if !(msg.starts_with("unknown key") && self.errors.iter().any(|x| x.path.starts_with(&full))) {
                self.error(&full, msg);
            }
            // What to take out: the unknown key itself, else the key the error is about.
            let mut target = inner;
            if let Some(rest) = raw.strip_prefix("unknown field `")
                && let Some((key, _)) = rest.split_once('`')
            {
                target.push(key.to_owned());
            }
            match take_out(&mut value, &target) {
                Some(removed) => taken_out.push(removed),
                None => return (None, false),
            }
        }
        (None, false)
    }

    fn section<T: DeserializeOwned>(
        &mut self,
        root: &serde_json::Map<String, serde_json::Value>,
        key: &str,
    ) -> Option<T> {
        let v = root.get(key)?;
        if v.is_null() {
            return None;
        }
        if let serde_json::Value::Object(m) = v {
            let valid = fields_of::<T>();
            self.check_keys(m, key, valid);
            // Parse what is left, so the valid keys beside a typo are still checked.
            let known: serde_json::Map<_, _> =
                m.iter().filter(|(k, _)| valid.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
            // What parsed, with defaults for the bad keys: every key of a section has a default
            // that passes validation, so the good keys beside a bad one are still checked.
            return self.parse_all(&serde_json::Value::Object(known), key).0;
        }
        self.parse(v, key)
    }

    /// A simulator, parsed as its `type`'s own struct: serde buffers an internally tagged enum,
    /// which loses the key path of an error and stops at the first one.
    #[cfg(feature = "simulators")]
    fn simulator(&mut self, id: &str, raw: &serde_json::Value) -> Option<SimulatorConfig> {
        /// Lends [`Ctx::parse`] to the simulators' registry for one entry's keys.
        struct Keys<'c, 'a> {
            /// Where errors go.
            ctx: &'c mut Ctx<'a>,
            /// The entry's keys without `type`.
            fields: serde_json::Value,
            /// `simulators.<id>`.
            path: &'c str,
        }
        impl crate::simulate::ParseKeys for Keys<'_, '_> {
            fn keys<T: DeserializeOwned>(&mut self) -> Option<T> {
                self.ctx.parse(&self.fields, self.path)
            }
        }
        let path = format!("simulators.{id}");
        let kind = raw.get("type").and_then(|t| t.as_str());
        let (serde_json::Value::Object(map), Some(kind)) = (raw, kind) else {
            return self.parse::<SimulatorConfig>(raw, &path);
        };
        let mut fields = map.clone();
        fields.remove("type");
        let mut keys = Keys { ctx: self, fields: serde_json::Value::Object(fields), path: &path };
        match crate::simulate::parse(kind, &mut keys) {
            Some(parsed) => parsed,
            // An unknown type: the enum names the valid ones.
            None => self.parse::<SimulatorConfig>(raw, &path),
        }
    }

    fn device(&mut self, id: &str, raw: &serde_json::Value) -> Option<DeviceConfig> {
        let path = format!("devices.{id}");
        if !valid_id(id) {
            self.error(&path, "device ids are 1-64 characters of a-z, 0-9, `_` and `-`".into());
        }
        let serde_json::Value::Object(map) = raw else {
            self.error(&path, "must be a mapping with at least `adapter:`".into());
            return None;
        };
        let Some(adapter) = map.get("adapter") else {
            self.error(&path, format!("`adapter:` is missing (one of {})", AdapterKind::NAMES.join(", ")));
            return None;
        };
        let adapter: AdapterKind = match serde_json::from_value(adapter.clone()) {
            Ok(a) => a,
            Err(_) => {
                let given = adapter.as_str().unwrap_or("?");
                let hint =
                    suggest(given, AdapterKind::NAMES).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                self.error(
                    &format!("{path}.adapter"),
                    format!("unknown adapter `{given}` (one of {}){hint}", AdapterKind::NAMES.join(", ")),
                );
                return None;
            }
        };
        let common_keys = fields_of::<DeviceCommon>();
        let specific_keys: &[&str] = crate::adapters::config_fields(adapter);
        let all: Vec<&str> = common_keys.iter().chain(specific_keys).copied().collect();
        self.check_keys(map, &path, &all);
        let mut common = serde_json::Map::new();
        let mut specific = serde_json::Map::new();
        for (k, v) in map {
            if common_keys.contains(&k.as_str()) {
                common.insert(k.clone(), v.clone());
            } else if specific_keys.contains(&k.as_str()) {
                specific.insert(k.clone(), v.clone());
            }
        }
        let common: Option<DeviceCommon> = self.parse(&serde_json::Value::Object(common), &path);
        let specific = serde_json::Value::Object(specific);
        let specific = crate::with_kind!(adapter, A => {
            use crate::adapters::Adapter as _;
            self.parse::<<A as crate::adapters::Adapter>::Config>(&specific, &path).map(A::wrap)
        });
        Some(DeviceConfig { common: common?, adapter: specific? })
    }
}

/// `path.inner...`, skipping empty parts.
fn join_path(path: &str, inner: &[String]) -> String {
    std::iter::once(path)
        .chain(inner.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// How many keys and items `value` holds, all levels.
fn count_keys(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(m) => m.values().map(|v| 1 + count_keys(v)).sum(),
        serde_json::Value::Array(a) => a.iter().map(|v| 1 + count_keys(v)).sum(),
        _ => 0,
    }
}

/// Takes the mapping key at `path` out of `value`, so the keys beside it can still be checked.
/// A path into a list takes out the key holding the list (removing an item would renumber the
/// others and misname their errors). Returns the path taken out, `None` when nothing could be.
fn take_out(value: &mut serde_json::Value, path: &[String]) -> Option<Vec<String>> {
    // The deepest prefix of `path` that ends on a mapping key reachable through mappings only.
    let mut node = &*value;
    let mut depth = 0;
    for segment in path {
        match node {
            serde_json::Value::Object(m) if m.contains_key(segment) => {
                node = &m[segment];
                depth += 1;
            }
            _ => break,
        }
    }
    if depth == 0 {
        return None;
    }
    let (parents, last) = path[..depth].split_at(depth - 1);
    let mut node = value;
    for segment in parents {
        node = node.get_mut(segment)?;
    }
    node.as_object_mut()?.remove(&last[0])?;
    Some(path[..depth].to_vec())
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_prefix(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.ends_with('/') && crate::mqtt::topic::valid_topic(p) && !p.contains("//")
}

/// Semantic checks across keys; adds to `ctx.errors`.
fn validate(ctx: &mut Ctx<'_>, config: &mut Config, base_dir: &Path) {
    if !valid_prefix(&config.output.prefix) {
        ctx.error("output.prefix", "must be a topic without wildcards and without leading or trailing `/`".into());
    }
    if !(1..=64).contains(&config.runtime.worker_threads) {
        ctx.error("runtime.worker_threads", "must be from 1 to 64".into());
    }
    validate_cluster(ctx, &mut config.cluster);
    if config.output.qos > 1 {
        ctx.error("output.qos", "must be 0 or 1".into());
    }
    if !valid_prefix(&config.homeassistant.discovery_prefix) {
        ctx.error(
            "homeassistant.discovery_prefix",
            "must be a topic without wildcards and without leading or trailing `/` (Home Assistant's default: \
             `homeassistant`)"
                .into(),
        );
    }
    if config.mqtt.url.trim().is_empty() {
        // The container image's config leaves the broker to the environment.
        ctx.error(
            "mqtt.url",
            "no broker given: set it, e.g. `url: mqtt://broker.lan:1883`, or the environment variable \
             HLBRIDGE_MQTT__URL"
                .into(),
        );
    } else if let Err(e) = crate::mqtt::MqttSettings::from_url(&config.mqtt.url, &config.mqtt.client_id) {
        let msg = e.to_string();
        ctx.error("mqtt.url", msg.split_once(": ").map(|(_, m)| m.to_owned()).unwrap_or(msg));
    }
    if config.mqtt.keep_alive.0 < std::time::Duration::from_secs(1) {
        ctx.error("mqtt.keep_alive", "must be at least 1s".into());
    }
    if config.mqtt.client_id.is_empty() {
        ctx.error("mqtt.client_id", "must not be empty".into());
    }
    if config.mqtt.password.is_some() && config.mqtt.password_file.is_some() {
        ctx.error("mqtt.password_file", "set either `password` or `password_file`, not both".into());
    }
    if let Some(file) = &config.mqtt.password_file {
        let path = base_dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(s) => config.mqtt.password = Some(super::Secret::new(s.trim_end_matches(['\n', '\r']))),
            Err(e) => ctx.error("mqtt.password_file", format!("cannot read {}: {e}", path.display())),
        }
    }
    if config.mqtt.embedded.is_some() && !cfg!(feature = "embedded-broker") {
        ctx.error("mqtt.embedded", "this build has no embedded broker (cargo feature `embedded-broker`)".into());
    }
    if let Some(embedded) = &config.mqtt.embedded {
        // The embedded broker is the default target unless the user named another one.
        let url_set_explicitly =
            locate(ctx.text, &["mqtt", "url"]).is_some() || std::env::var_os("HLBRIDGE_MQTT__URL").is_some();
        if !url_set_explicitly {
            config.mqtt.url = format!("mqtt://{}", embedded.listen);
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        if r.matches.adapter.is_none() && r.matches.kind.is_none() {
            ctx.error(&format!("routes.{i}.match"), "give at least one of `adapter` or `kind`".into());
        }
        if !valid_prefix(&r.prefix) {
            ctx.error(
                &format!("routes.{i}.prefix"),
                "must be a topic without wildcards and without leading or trailing `/`".into(),
            );
        }
    }
    for d in config.devices.values_mut() {
        crate::adapters::resolve_files(&mut d.adapter, base_dir);
    }
    let ids: Vec<String> = config.devices.keys().cloned().collect();
    for id in ids {
        let d = &config.devices[&id];
        let path = format!("devices.{id}");
        let mut errs: Vec<(String, String)> = Vec::new();
        if let Some(p) = &d.common.prefix
            && !valid_prefix(p)
        {
            errs.push((
                format!("{path}.prefix"),
                "must be a topic without wildcards and without leading or trailing `/`".into(),
            ));
        }
        for (key, v) in [
            ("freshness", d.common.freshness),
            ("min_interval", d.common.min_interval),
            ("heartbeat", d.common.heartbeat),
        ] {
            if v.is_some_and(|v| v.0.is_zero()) {
                errs.push((format!("{path}.{key}"), "must be longer than 0s (leave it out to turn it off)".into()));
            }
        }
        if d.common.ingest_queue.is_some_and(|n| !(1..=crate::adapters::ingest::MAX_QUEUE).contains(&n)) {
            errs.push((
                format!("{path}.ingest_queue"),
                format!("must be 1 to {} messages", crate::adapters::ingest::MAX_QUEUE),
            ));
        }
        if let Some(name) = &d.common.name
            && (name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control))
        {
            errs.push((format!("{path}.name"), "must be 1 to 64 characters without control characters".into()));
        }
        if let Some(crate::commands::CommandsSetting::Only(list)) = &d.common.commands {
            let offered = crate::adapters::command_names(d.common.adapter);
            for name in list.iter().filter(|n| !offered.contains(&n.as_str())) {
                let takes = if offered.is_empty() { "none".to_owned() } else { offered.join(", ") };
                errs.push((
                    format!("{path}.commands"),
                    format!("`{name}` is not a command of adapter {} (it takes: {takes})", d.common.adapter.as_str()),
                ));
            }
        }
        errs.extend(crate::adapters::validate(&d.adapter, &path));
        for (p, m) in errs {
            ctx.error(&p, m);
        }
    }
    #[cfg(feature = "simulators")]
    for (name, sim) in &config.simulators {
        for (p, m) in crate::simulate::validate(sim, &format!("simulators.{name}")) {
            ctx.error(&p, m);
        }
    }
}

/// `cluster:`: a sane instance count, `auto` resolved from the host name, the number in range.
fn validate_cluster(ctx: &mut Ctx<'_>, cluster: &mut crate::cluster::ClusterConfig) {
    use crate::cluster::{Instance, MAX_INSTANCES};
    if !(1..=MAX_INSTANCES).contains(&cluster.instances) {
        ctx.error("cluster.instances", format!("must be from 1 to {MAX_INSTANCES}"));
        return;
    }
    if cluster.instance == Instance::Auto {
        let resolved = match crate::cluster::hostname() {
            Some(h) => crate::cluster::ordinal_from_hostname(&h),
            None => Err(crate::cluster::ClusterError::NoHostname),
        };
        match resolved {
            Ok(n) => cluster.instance = Instance::Number(n),
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.strip_prefix("cluster.instance: ").unwrap_or(&msg).to_owned();
                ctx.error("cluster.instance", msg);
                return;
            }
        }
    }
    let n = cluster.number();
    if n >= cluster.instances {
        ctx.error(
            "cluster.instance",
            format!(
                "is {n} but `cluster.instances` is {}: instances are numbered 0 to {}",
                cluster.instances,
                cluster.instances - 1
            ),
        );
    }
}

/// A file that runs nothing is almost always a mistake (an empty or truncated file, devices
/// commented out, a wrong path handed to `--config`): say so instead of starting an idle bridge.
/// A simulators-only file is fine: it plays devices for another bridge. So is a file that writes
/// `devices: {}` on purpose (a container image whose devices come later, by environment or a
/// mounted file): that starts, with a warning at start-up and in `check-config`.
fn check_something_runs(ctx: &mut Ctx<'_>, root: &serde_json::Map<String, serde_json::Value>, config: &Config) {
    let entries = |key: &str| root.get(key).and_then(|v| v.as_object()).map_or(0, |m| m.len());
    let (devices, simulators) = (entries("devices"), entries("simulators"));
    let explicitly_empty = root.get("devices").is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty()));
    if devices == 0 && simulators == 0 && !explicitly_empty {
        ctx.error(
            "devices",
            "no devices configured: the bridge would have nothing to do; add at least one under `devices:` \
             (see config/example.yaml), or write `devices: {}` to start without any on purpose"
                .into(),
        );
    } else if simulators == 0
        && devices > 0
        && config.devices.len() == devices
        && config.devices.values().all(|d| !d.common.enabled)
    {
        // Only when every device parsed: a device with errors is missing from `config.devices`.
        ctx.error(
            "devices",
            "every device has `enabled: false`: the bridge would have nothing to do; enable at least one".into(),
        );
    }
}

/// The closest valid key to a misspelt one, if any is close enough to be a likely typo.
pub(crate) fn suggest<'a>(given: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (strsim::damerau_levenshtein(given, v), *v))
        .filter(|(d, v)| *d <= (v.len().max(given.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

fn unknown_key_message(key: &str, valid: &[&str]) -> String {
    match suggest(key, valid) {
        Some(s) => format!("unknown key `{key}`; did you mean `{s}`?"),
        None => format!("unknown key `{key}` (valid keys: {})", valid.join(", ")),
    }
}

/// Rewrites serde's messages into the bridge's wording.
fn humanize(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((key, tail)) = rest.split_once('`')
    {
        let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        return unknown_key_message(key, &valid);
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `")
        && let Some((given, tail)) = rest.split_once('`')
    {
        let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let hint = suggest(given, &valid).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
        return format!("unknown value `{given}` (one of {}){hint}", valid.join(", "));
    }
    // serde names Rust types; say what to write instead.
    if let Some(rest) = msg.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.rsplit_once(", expected ")
    {
        let expected = match expected {
            "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)",
            "i64" | "i32" | "i16" | "i8" => "a whole number",
            "f64" | "f32" => "a number",
            "a boolean" => "true or false",
            other => other,
        };
        return format!("expected {expected}, found {found}");
    }
    if let Some(field) = msg.strip_prefix("missing field `") {
        return format!("required key `{}` is missing", field.trim_end_matches('`'));
    }
    msg.to_owned()
}

/// Finds the 1-based line of a block-style YAML key path (`["devices", "garage", "serial"]`);
/// list indices in the path are skipped. Good enough for config files; `None` when not found.
pub(crate) fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let path: Vec<&str> = path.iter().copied().filter(|s| s.parse::<usize>().is_err()).collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = line.len() - trimmed.len();
        let mut body = trimmed;
        while let Some(rest) = body.strip_prefix("- ") {
            indent += 2;
            body = rest.trim_start();
        }
        let Some((key, _)) = body.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(['"', '\'']);
        if key.is_empty() || key.starts_with('{') {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_owned()));
        if stack.len() == path.len() && stack.iter().zip(&path).all(|((_, k), p)| k == p) {
            return Some(n + 1);
        }
        // Flow mappings on one line: `match: { kind: ev_charger }`.
        if let Some(last) = path.last()
            && stack.len() + 1 == path.len()
            && stack.iter().zip(&path).all(|((_, k), p)| k == p)
            && body.contains('{')
            && body.contains(&format!("{last}:"))
        {
            return Some(n + 1);
        }
    }
    None
}

/// Tests that read `HLBRIDGE_*` variables wait while a test sets some (figment::Jail), so a
/// variable meant for one test never leaks into another running in parallel.
#[cfg(test)]
static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Parses `text` as the loader would, with the environment left alone by other tests.
#[cfg(test)]
fn load_test(text: &str) -> Result<Config, ConfigErrors> {
    let _env = ENV_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    load_str(text, "test.yaml", Path::new("."))
}

/// Runs `f` with environment variables of its own (figment::Jail), other config tests waiting.
#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
fn with_env(f: impl FnOnce(&mut figment::Jail) -> figment::error::Result<()>) {
    let _env = ENV_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    figment::Jail::expect_with(f);
}

#[allow(dead_code)]
fn _assert_btreemap(_: BTreeMap<String, DeviceConfig>) {}

#[cfg(test)]
mod tests;

//! Builds Home Assistant device-based discovery payloads (Home Assistant 2024.12 or newer) as pure
//! data: from the quantity table in [`crate::model`] and a snapshot of what one device is and has
//! produced, one JSON object with `dev`, `o` and `cmps` (one component per quantity).
//!
//! Home Assistant drops a whole device message with an unknown top-level key, so the top level holds
//! only `dev`, `o` and `cmps`; everything else (availability too) is inside each component. Topics are
//! written out in full (no `~`), so each component reads on its own.

use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use crate::config::types::AdapterKind;
use crate::model::{Identity, Quantity, ValueKind, VariantLabel};

/// Where users find help, for the `o` (origin) block Home Assistant shows in the device info.
pub(crate) const SUPPORT_URL: &str = "https://github.com/hlbridge/hlbridge";

/// The highest `current_limit` the go-e adapter accepts on `current_limit/set` (the charger's own
/// hardware maximum on 22 kW models; 11 kW models cap lower themselves).
pub(crate) const GOE_MAX_CURRENT: u32 = 32;
/// The lowest charging current IEC 61851 allows.
pub(crate) const MIN_CHARGING_CURRENT: u32 = 6;

/// The longest `expire_after` worth announcing: beyond a day the window means "never stale".
const MAX_EXPIRE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What every discovery message of one bridge shares.
#[derive(Debug, Clone)]
pub(crate) struct Naming {
    /// `homeassistant` (the `discovery_prefix` of Home Assistant's MQTT integration).
    pub discovery_prefix: String,
    /// The bridge's own node id and the start of every device's (`hlbridge`, from the MQTT client id),
    /// so several bridges on one broker do not collide.
    pub node_prefix: String,
    /// `<output.prefix>/bridge/status`: every entity depends on it.
    pub bridge_status: String,
    /// `<output.prefix>/bridge`: where the bridge's own health values live.
    pub bridge_base: String,
}

impl Naming {
    /// Builds the naming from the MQTT client id (made topic- and id-safe) and the prefixes.
    pub(crate) fn new(discovery_prefix: &str, client_id: &str, bridge_prefix: &str) -> Naming {
        let node_prefix: String = client_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
            .collect();
        Naming {
            discovery_prefix: discovery_prefix.to_owned(),
            node_prefix: if node_prefix.is_empty() { "hlbridge".into() } else { node_prefix },
            bridge_status: format!("{bridge_prefix}/bridge/status"),
            bridge_base: format!("{bridge_prefix}/bridge"),
        }
    }

    /// Uses `topic` as the bridge's status (a cluster instance's `<prefix>/bridge/<n>/status`): a
    /// device's entities are available only while the instance that owns it is.
    pub(crate) fn with_bridge_status(mut self, topic: String) -> Naming {
        self.bridge_status = topic;
        self
    }

    /// The node id of device `id` (`hlbridge_garage_charger`).
    pub(crate) fn node_id(&self, device: &str) -> String {
        format!("{}_{device}", self.node_prefix)
    }

    /// `<discovery_prefix>/device/<node_id>/config` of device `id`.
    pub(crate) fn device_topic(&self, device: &str) -> String {
        format!("{}/device/{}/config", self.discovery_prefix, self.node_id(device))
    }

    /// The bridge's own discovery topic.
    pub(crate) fn bridge_topic(&self) -> String {
        format!("{}/device/{}/config", self.discovery_prefix, self.node_prefix)
    }

    /// The device id a discovery topic of this bridge belongs to, if it is one of ours.
    pub(crate) fn device_of_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(self.discovery_prefix.as_str())?.strip_prefix("/device/")?;
        let node = rest.strip_suffix("/config")?;
        node.strip_prefix(self.node_prefix.as_str())?.strip_prefix('_').filter(|d| !d.is_empty() && !d.contains('/'))
    }

    fn origin(&self) -> Json {
        json!({ "name": "hlbridge", "sw": env!("CARGO_PKG_VERSION"), "url": SUPPORT_URL })
    }
}

/// What discovery needs to know about one device.
#[derive(Debug, Clone)]
pub(crate) struct DeviceView<'a> {
    /// Device id (`garage_charger`).
    pub id: &'a str,
    /// `<prefix>/<device>`: state and command topics hang below it.
    pub base: &'a str,
    /// The configured `name:`, if any.
    pub name: Option<&'a str>,
    /// The adapter (default manufacturer).
    pub adapter: AdapterKind,
    /// What the device told about itself.
    pub identity: &'a Identity,
    /// The freshness window in force.
    pub freshness: Duration,
    /// How often unchanged values are republished, if at all (decides whether `expire_after` is safe).
    pub heartbeat: Option<Duration>,
    /// Whether `<quantity>/set` is accepted: writable quantities become controls.
    pub commands: bool,
    /// The meter reads gas (its `volume` is then device class `gas`, else `water`).
    pub gas_meter: bool,
    /// The quantities the device has produced, each announced once.
    pub quantities: &'a [Quantity],
    /// The highest current the charger accepts, when it told us (go-e `ama`); else the 32 A
    /// hardware maximum bounds the `current_limit` control.
    pub max_current: Option<u32>,
}

/// The id made readable: `garage_charger` → `Garage charger`.
pub(crate) fn readable(id: &str) -> String {
    let words = id.replace(['_', '-'], " ");
    let mut chars = words.trim().chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => id.to_owned(),
    }
}

/// The entity name Home Assistant shows after the device name: `Power L1`, `Energy import T1`,
/// `Temperature bed target`, `Signal strength`.
pub(crate) fn entity_name(q: Quantity) -> String {
    let def = q.def();
    let family = match def.family.name {
        "rssi" => "Signal strength".to_owned(),
        other => readable(other),
    };
    let mut name = family;
    match def.variant {
        Some((VariantLabel::Phase, v)) | Some((VariantLabel::Tariff, v)) => {
            name.push(' ');
            let tag =
                if matches!(def.variant, Some((VariantLabel::Tariff, _))) { format!("t{v}") } else { v.to_owned() };
            name.push_str(&tag.to_uppercase());
        }
        Some((VariantLabel::Sensor, v)) => {
            name.push(' ');
            name.push_str(&v.replace('_', " "));
        }
        None => {}
    }
    if def.target {
        name.push_str(" target");
    }
    name
}

/// Values that describe the device's health rather than what it measures.
fn is_diagnostic(q: Quantity) -> bool {
    matches!(q.family().name, "rssi" | "uptime")
}

fn manufacturer(adapter: AdapterKind) -> &'static str {
    match adapter {
        AdapterKind::Whatwatt => "whatwatt",
        AdapterKind::Goe => "go-e",
        AdapterKind::AiOnTheEdge => "AI-on-the-edge-device",
        AdapterKind::Octoprint => "OctoPrint",
    }
}

/// The sensor classes of `q` as announced: `(device_class, unit, state_class)`, after the fixes
/// Home Assistant's rules demand (see the README's Home Assistant section).
pub(crate) fn sensor_classes(
    q: Quantity,
    gas_meter: bool,
) -> (Option<&'static str>, Option<&'static str>, Option<&'static str>) {
    let f = q.family();
    let unit = (!f.unit.is_empty()).then_some(f.unit);
    let class = match f.name {
        "volume" if gas_meter => Some("gas"),
        _ => f.ha_device_class,
    };
    match f.kind {
        // No unit, no state class: Home Assistant refuses both on enum sensors.
        ValueKind::Enum | ValueKind::EnumSetting => (Some("enum"), None, None),
        ValueKind::Text | ValueKind::Bool => (None, None, None),
        _ => (class, unit, f.ha_state_class),
    }
}

/// One component of a device (`None` for quantities Home Assistant has no use for).
pub(crate) fn component(naming: &Naming, dev: &DeviceView<'_>, q: Quantity) -> Json {
    let f = q.family();
    let mut c = Map::new();
    let state_topic = format!("{}/{}", dev.base, q.name());
    // Writable in the model (go-e settings), or a command the adapter executes (OctoPrint's
    // heater set points are measured values that also take `/set`).
    let writable =
        dev.commands && (f.kind.is_writable() || crate::adapters::capabilities(dev.adapter).1.contains(&q.name()));
    let platform = match f.kind {
        ValueKind::Bool => "binary_sensor",
        ValueKind::Setting if writable => "number",
        ValueKind::EnumSetting if writable => "select",
        kind if writable && kind.is_numeric() => "number",
        _ => "sensor",
    };
    c.insert("p".into(), platform.into());
    c.insert("unique_id".into(), format!("{}_{}", naming.node_id(dev.id), q.name()).into());
    c.insert("name".into(), entity_name(q).into());
    c.insert("state_topic".into(), state_topic.clone().into());
    match platform {
        "binary_sensor" => {
            if f.name == "car_connected" {
                c.insert("device_class".into(), "plug".into());
            }
            c.insert("payload_on".into(), "true".into());
            c.insert("payload_off".into(), "false".into());
        }
        "number" => {
            if let Some(class) = f.ha_device_class {
                c.insert("device_class".into(), class.into());
            }
            c.insert("unit_of_measurement".into(), f.unit.into());
            let (min, max) = match q.name() {
                "current_limit" => (MIN_CHARGING_CURRENT, dev.max_current.unwrap_or(GOE_MAX_CURRENT)),
                // The bounds the OctoPrint adapter enforces (src/adapters/octoprint/rest.rs).
                "temperature_bed_target" => (0, 150),
                "temperature_chamber_target" => (0, 100),
                n if n.starts_with("temperature_tool") => (0, 300),
                _ => (0, 100),
            };
            c.insert("min".into(), min.into());
            c.insert("max".into(), max.into());
            c.insert("step".into(), 1.into());
            c.insert("mode".into(), "box".into());
            c.insert("command_topic".into(), format!("{state_topic}/set").into());
        }
        "select" => {
            c.insert("options".into(), f.words.into());
            c.insert("command_topic".into(), format!("{state_topic}/set").into());
        }
        _ => {
            let (class, unit, state_class) = sensor_classes(q, dev.gas_meter);
            if let Some(class) = class {
                c.insert("device_class".into(), class.into());
            }
            if let Some(unit) = unit {
                c.insert("unit_of_measurement".into(), unit.into());
            }
            if let Some(sc) = state_class {
                c.insert("state_class".into(), sc.into());
            }
            if class == Some("enum") {
                c.insert("options".into(), f.words.into());
            }
            if f.kind.is_numeric() {
                c.insert("suggested_display_precision".into(), f.decimals.into());
            }
        }
    }
    if is_diagnostic(q) {
        c.insert("entity_category".into(), "diagnostic".into());
    }
    // Values are republished only when they change (or on the heartbeat): without a heartbeat inside
    // the freshness window, a steady value (0 W export) would expire although the device is fresh.
    if platform != "select"
        && platform != "number"
        && dev.freshness <= MAX_EXPIRE_AFTER
        && dev.heartbeat.is_some_and(|hb| hb < dev.freshness)
    {
        let whole_seconds = dev.freshness.as_secs() + u64::from(dev.freshness.subsec_nanos() > 0);
        c.insert("expire_after".into(), whole_seconds.max(1).into());
    }
    c.insert(
        "availability".into(),
        json!([{ "topic": naming.bridge_status }, { "topic": format!("{}/availability", dev.base) }]),
    );
    c.insert("availability_mode".into(), "all".into());
    Json::Object(c)
}

/// The whole discovery message of one device.
pub(crate) fn device_config(naming: &Naming, dev: &DeviceView<'_>) -> Json {
    let mut d = Map::new();
    d.insert("identifiers".into(), json!([naming.node_id(dev.id)]));
    d.insert("name".into(), dev.name.map(str::to_owned).unwrap_or_else(|| readable(dev.id)).into());
    let id = dev.identity;
    d.insert("manufacturer".into(), id.vendor.as_deref().unwrap_or(manufacturer(dev.adapter)).into());
    for (key, value) in [("model", &id.model), ("serial_number", &id.serial), ("sw_version", &id.firmware)] {
        if let Some(v) = value {
            d.insert(key.into(), v.as_str().into());
        }
    }
    d.insert("via_device".into(), naming.node_prefix.clone().into());
    let mut cmps = Map::new();
    for &q in dev.quantities {
        cmps.insert(q.name().to_owned(), component(naming, dev, q));
    }
    json!({ "dev": d, "o": naming.origin(), "cmps": cmps })
}

/// The bridge's own discovery message: connected, messages received, parse errors.
pub(crate) fn bridge_config(naming: &Naming) -> Json {
    let node = &naming.node_prefix;
    let available = json!([{ "topic": naming.bridge_status }]);
    let counter = |key: &str, name: &str| {
        json!({
            "p": "sensor",
            "unique_id": format!("{node}_{key}"),
            "name": name,
            "state_topic": format!("{}/{key}", naming.bridge_base),
            "state_class": "total_increasing",
            "entity_category": "diagnostic",
            "availability": available,
        })
    };
    let name = if node == "hlbridge" { "hlbridge".to_owned() } else { format!("hlbridge {node}") };
    json!({
        "dev": {
            "identifiers": [node],
            "name": name,
            "manufacturer": "hlbridge",
            "model": "hlbridge",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
        "o": naming.origin(),
        "cmps": {
            "connected": {
                "p": "binary_sensor",
                "unique_id": format!("{node}_connected"),
                "name": "Connected",
                "device_class": "connectivity",
                "state_topic": naming.bridge_status,
                "payload_on": "online",
                "payload_off": "offline",
                "entity_category": "diagnostic",
            },
            "messages_received": counter("messages_received", "Messages received"),
            "parse_errors": counter("parse_errors", "Parse errors"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::homeassistant::rules::{self, BINARY_SENSOR_CLASSES};
    use crate::model::FAMILIES;

    fn naming() -> Naming {
        Naming::new("homeassistant", "hlbridge", "home")
    }

    /// Every quantity of the table, with one variant of each kind the grammar allows.
    fn every_quantity() -> Vec<Quantity> {
        let mut names: Vec<String> = FAMILIES.iter().map(|f| f.name.to_owned()).collect();
        names.extend(
            ["power_l1", "voltage_n", "current_l3", "power_factor_l2", "energy_import_t1", "energy_export_t2"]
                .map(str::to_owned),
        );
        names.extend(["temperature_bed", "temperature_tool0_target"].map(str::to_owned));
        names.iter().map(|n| Quantity::known(n)).collect()
    }

    fn view<'a>(quantities: &'a [Quantity], identity: &'a Identity, commands: bool, gas: bool) -> DeviceView<'a> {
        DeviceView {
            id: "dev",
            base: "home/dev",
            name: None,
            adapter: AdapterKind::Goe,
            identity,
            freshness: Duration::from_secs(15),
            heartbeat: Some(Duration::from_secs(10)),
            commands,
            gas_meter: gas,
            quantities,
            max_current: None,
        }
    }

    #[test]
    fn every_quantity_of_the_table_is_announced_with_a_combination_home_assistant_accepts() {
        let all = every_quantity();
        let identity = Identity::default();
        for commands in [false, true] {
            for gas in [false, true] {
                let dev = view(&all, &identity, commands, gas);
                let config = device_config(&naming(), &dev);
                for (key, c) in config["cmps"].as_object().unwrap() {
                    let s = |k: &str| c.get(k).and_then(Json::as_str);
                    match s("p").unwrap() {
                        "sensor" => {
                            let result = rules::check_sensor(
                                s("device_class"),
                                s("unit_of_measurement"),
                                s("state_class"),
                                c.get("options").is_some(),
                            );
                            assert_eq!(result, Ok(()), "{key}: {c}");
                            if s("device_class") == Some("enum") {
                                let q = Quantity::known(key);
                                let options: Vec<&str> =
                                    c["options"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
                                assert_eq!(options, q.family().words, "{key}: options are the contract's words");
                            }
                        }
                        "binary_sensor" => {
                            if let Some(class) = s("device_class") {
                                assert!(BINARY_SENSOR_CLASSES.contains(&class), "{key}: {class}");
                            }
                            assert_eq!((s("payload_on"), s("payload_off")), (Some("true"), Some("false")));
                        }
                        "number" => {
                            assert!(commands, "{key}: a control without commands");
                            assert_eq!(s("command_topic"), Some(format!("home/dev/{key}/set").as_str()));
                            if let Some(class) = s("device_class") {
                                rules::check_sensor(Some(class), s("unit_of_measurement"), None, false).unwrap();
                            }
                        }
                        "select" => {
                            assert!(commands, "{key}: a control without commands");
                            assert!(c["options"].as_array().is_some_and(|o| !o.is_empty()));
                        }
                        other => panic!("{key}: unexpected platform {other}"),
                    }
                }
            }
        }
    }

    #[test]
    fn energy_registers_and_session_energy_fit_the_energy_dashboard() {
        for name in ["energy_import", "energy_export_t1", "session_energy"] {
            let (class, unit, sc) = sensor_classes(Quantity::known(name), false);
            assert_eq!((class, unit, sc), (Some("energy"), Some("kWh"), Some("total_increasing")), "{name}");
        }
        assert_eq!(sensor_classes(Quantity::known("volume"), false).0, Some("water"));
        assert_eq!(sensor_classes(Quantity::known("volume"), true).0, Some("gas"));
        let (class, unit, _) = sensor_classes(Quantity::known("reactive_energy_import"), false);
        assert_eq!((class, unit), (None, Some("kvarh")), "no device class for kvarh");
        assert_eq!(
            sensor_classes(Quantity::known("power_factor"), false),
            (Some("power_factor"), None, Some("measurement"))
        );
    }

    #[test]
    fn names_read_well_in_the_ui() {
        for (q, name) in [
            ("power_l1", "Power L1"),
            ("energy_import", "Energy import"),
            ("energy_import_t2", "Energy import T2"),
            ("voltage_n", "Voltage N"),
            ("temperature_tool0_target", "Temperature tool0 target"),
            ("rssi", "Signal strength"),
            ("print_time_left", "Print time left"),
        ] {
            assert_eq!(entity_name(Quantity::known(q)), name);
        }
        assert_eq!(readable("garage_charger"), "Garage charger");
    }

    #[test]
    fn the_current_limit_control_is_bounded_by_the_chargers_own_maximum() {
        let identity = Identity::default();
        let q = [Quantity::known("current_limit")];
        let mut v = view(&q, &identity, true, false);
        v.max_current = Some(16);
        assert_eq!(component(&naming(), &v, q[0])["max"], 16);
        v.max_current = None;
        assert_eq!(component(&naming(), &v, q[0])["max"], GOE_MAX_CURRENT);
    }

    #[test]
    fn octoprint_heater_set_points_become_bounded_number_controls_when_commands_are_on() {
        let identity = Identity::default();
        let q = [Quantity::known("temperature_bed_target"), Quantity::known("temperature_tool0_target")];
        let mut v = view(&q, &identity, true, false);
        v.adapter = AdapterKind::Octoprint;
        let bed = component(&naming(), &v, q[0]);
        assert_eq!((bed["p"].as_str(), bed["max"].as_u64()), (Some("number"), Some(150)));
        assert_eq!(bed["command_topic"], "home/dev/temperature_bed_target/set");
        assert_eq!(component(&naming(), &v, q[1])["max"], 300);
        v.commands = false;
        assert_eq!(component(&naming(), &v, q[0])["p"], "sensor");
    }

    #[test]
    fn controls_appear_only_when_commands_are_enabled() {
        let qs = [Quantity::known("current_limit"), Quantity::known("force_state"), Quantity::known("phase_mode")];
        let identity = Identity::default();
        let off = device_config(&naming(), &view(&qs, &identity, false, false));
        let on = device_config(&naming(), &view(&qs, &identity, true, false));
        for q in ["current_limit", "force_state", "phase_mode"] {
            assert_eq!(off["cmps"][q]["p"], "sensor");
            assert!(off["cmps"][q].get("command_topic").is_none());
        }
        assert_eq!(on["cmps"]["current_limit"]["p"], "number");
        assert_eq!(on["cmps"]["current_limit"]["min"], 6);
        assert_eq!(on["cmps"]["current_limit"]["max"], 32);
        assert_eq!(on["cmps"]["current_limit"]["mode"], "box");
        assert_eq!(on["cmps"]["force_state"]["p"], "select");
        assert_eq!(on["cmps"]["phase_mode"]["options"], json!(["auto", "single", "three"]));
    }

    #[test]
    fn expire_after_is_set_only_when_a_heartbeat_keeps_steady_values_alive() {
        let qs = [Quantity::known("power")];
        let identity = Identity::default();
        let mut dev = view(&qs, &identity, false, false);
        dev.freshness = Duration::from_millis(14_200);
        assert_eq!(device_config(&naming(), &dev)["cmps"]["power"]["expire_after"], 15);
        dev.heartbeat = None;
        assert!(device_config(&naming(), &dev)["cmps"]["power"].get("expire_after").is_none());
    }

    #[test]
    fn topics_of_other_bridges_are_not_ours() {
        let n = naming();
        assert_eq!(n.device_of_topic("homeassistant/device/hlbridge_garage/config"), Some("garage"));
        assert_eq!(n.device_of_topic("homeassistant/device/hlbridge/config"), None);
        assert_eq!(n.device_of_topic("homeassistant/device/other_garage/config"), None);
        assert_eq!(n.device_of_topic("homeassistant/sensor/hlbridge_garage/config"), None);
        assert_eq!(Naming::new("ha", "hl bridge/2", "home").node_prefix, "hl_bridge_2");
    }
}

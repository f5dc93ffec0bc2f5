//! Home Assistant's own rules for sensor classes, as data: which units each `device_class` accepts
//! (`DEVICE_CLASS_UNITS`) and which `state_class`es (`DEVICE_CLASS_STATE_CLASSES`). Home Assistant
//! logs an error and refuses (or marks as broken in the energy dashboard) an entity whose combination
//! breaks them, so discovery is checked against these tables by a unit test walking every quantity.
//!
//! Copied from home-assistant/core `homeassistant/components/sensor/const.py` (2025.x), with the
//! `UnitOf...` enums expanded to the strings Home Assistant compares against. Only the rows of classes
//! this bridge can announce are here; a class missing from the table counts as unknown and fails the
//! check, so a new class in `crate::model` must be added here first (from that file).

/// `DEVICE_CLASS_UNITS`: the units (`None` = no unit) each sensor device class accepts.
pub(crate) static DEVICE_CLASS_UNITS: &[(&str, &[Option<&str>])] = &[
    ("apparent_power", &[Some("mVA"), Some("VA"), Some("kVA")]),
    ("current", &[Some("A"), Some("mA")]),
    ("duration", &[Some("d"), Some("h"), Some("min"), Some("s"), Some("ms")]),
    (
        "energy",
        &[
            Some("J"),
            Some("kJ"),
            Some("MJ"),
            Some("GJ"),
            Some("mWh"),
            Some("Wh"),
            Some("kWh"),
            Some("MWh"),
            Some("GWh"),
            Some("TWh"),
            Some("cal"),
            Some("kcal"),
            Some("Mcal"),
            Some("Gcal"),
        ],
    ),
    ("enum", &[None]),
    ("frequency", &[Some("Hz"), Some("kHz"), Some("MHz"), Some("GHz")]),
    ("gas", &[Some("CCF"), Some("ft³"), Some("m³")]),
    ("power_factor", &[Some("%"), None]),
    ("power", &[Some("mW"), Some("W"), Some("kW"), Some("MW"), Some("GW"), Some("TW")]),
    ("reactive_power", &[Some("var")]),
    ("signal_strength", &[Some("dB"), Some("dBm")]),
    ("temperature", &[Some("°C"), Some("°F"), Some("K")]),
    ("voltage", &[Some("V"), Some("mV"), Some("µV"), Some("kV"), Some("MV")]),
    ("volume_flow_rate", &[Some("m³/h"), Some("ft³/min"), Some("L/min"), Some("gal/min"), Some("mL/s")]),
    ("water", &[Some("CCF"), Some("ft³"), Some("m³"), Some("gal"), Some("L")]),
];

/// `DEVICE_CLASS_STATE_CLASSES`: the state classes each sensor device class accepts (empty: none).
pub(crate) static DEVICE_CLASS_STATE_CLASSES: &[(&str, &[&str])] = &[
    ("apparent_power", &["measurement"]),
    ("current", &["measurement"]),
    ("duration", &["measurement", "total", "total_increasing"]),
    ("energy", &["total", "total_increasing"]),
    ("enum", &[]),
    ("frequency", &["measurement"]),
    ("gas", &["total", "total_increasing"]),
    ("power_factor", &["measurement"]),
    ("power", &["measurement"]),
    ("reactive_power", &["measurement"]),
    ("signal_strength", &["measurement"]),
    ("temperature", &["measurement"]),
    ("voltage", &["measurement"]),
    ("volume_flow_rate", &["measurement"]),
    ("water", &["total", "total_increasing"]),
];

/// `STATE_CLASSES`: every state class there is.
pub(crate) const STATE_CLASSES: &[&str] = &["measurement", "total", "total_increasing"];

/// Binary sensor device classes this bridge uses (`BinarySensorDeviceClass`).
pub(crate) const BINARY_SENSOR_CLASSES: &[&str] = &["connectivity", "plug", "power", "problem", "running"];

/// Why a sensor's class, unit and state class would be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RuleError {
    /// A device class missing from the copied tables.
    #[error("device_class `{0}` is not in the rule table (copy its row from Home Assistant's sensor/const.py)")]
    UnknownClass(String),
    /// The unit is not one the class accepts.
    #[error("device_class `{class}` does not accept unit {unit:?}")]
    Unit {
        /// The device class.
        class: String,
        /// The unit (`None`: no unit).
        unit: Option<String>,
    },
    /// The state class is not one the class accepts.
    #[error("device_class `{class}` does not accept state_class `{state_class}`")]
    StateClass {
        /// The device class.
        class: String,
        /// The state class.
        state_class: String,
    },
    /// Not a state class at all.
    #[error("`{0}` is not a state_class")]
    UnknownStateClass(String),
    /// An `enum` sensor without options, or options on a sensor that is not an `enum`.
    #[error("{0}")]
    Options(&'static str),
}

/// Checks a sensor's `device_class`, `unit_of_measurement`, `state_class` and whether it has
/// `options`, as Home Assistant's sensor platform does.
pub(crate) fn check_sensor(
    device_class: Option<&str>,
    unit: Option<&str>,
    state_class: Option<&str>,
    has_options: bool,
) -> Result<(), RuleError> {
    if let Some(sc) = state_class
        && !STATE_CLASSES.contains(&sc)
    {
        return Err(RuleError::UnknownStateClass(sc.to_owned()));
    }
    if has_options && device_class != Some("enum") {
        return Err(RuleError::Options("`options` is only for device_class `enum`"));
    }
    let Some(class) = device_class else { return Ok(()) };
    let units = DEVICE_CLASS_UNITS
        .iter()
        .find(|(c, _)| *c == class)
        .map(|(_, u)| *u)
        .ok_or_else(|| RuleError::UnknownClass(class.to_owned()))?;
    if !units.contains(&unit) {
        return Err(RuleError::Unit { class: class.to_owned(), unit: unit.map(str::to_owned) });
    }
    let state_classes = DEVICE_CLASS_STATE_CLASSES
        .iter()
        .find(|(c, _)| *c == class)
        .map(|(_, s)| *s)
        .ok_or_else(|| RuleError::UnknownClass(class.to_owned()))?;
    if let Some(sc) = state_class
        && !state_classes.contains(&sc)
    {
        return Err(RuleError::StateClass { class: class.to_owned(), state_class: sc.to_owned() });
    }
    if class == "enum" && !has_options {
        return Err(RuleError::Options("device_class `enum` needs `options`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_accept_what_home_assistant_accepts() {
        assert_eq!(check_sensor(Some("power"), Some("W"), Some("measurement"), false), Ok(()));
        assert_eq!(check_sensor(Some("energy"), Some("kWh"), Some("total_increasing"), false), Ok(()));
        assert_eq!(check_sensor(Some("power_factor"), None, Some("measurement"), false), Ok(()));
        assert_eq!(check_sensor(Some("enum"), None, None, true), Ok(()));
        assert_eq!(check_sensor(None, Some("%"), Some("measurement"), false), Ok(()));
    }

    #[test]
    fn the_rules_refuse_what_home_assistant_refuses() {
        assert!(matches!(
            check_sensor(Some("energy"), Some("kWh"), Some("measurement"), false),
            Err(RuleError::StateClass { .. })
        ));
        assert!(matches!(
            check_sensor(Some("power_factor"), Some(""), Some("measurement"), false),
            Err(RuleError::Unit { .. })
        ));
        assert!(matches!(check_sensor(Some("apparent_power"), Some("W"), None, false), Err(RuleError::Unit { .. })));
        assert!(matches!(
            check_sensor(Some("enum"), None, Some("measurement"), true),
            Err(RuleError::StateClass { .. })
        ));
        assert!(matches!(check_sensor(Some("enum"), Some("A"), None, true), Err(RuleError::Unit { .. })));
        assert!(matches!(check_sensor(Some("enum"), None, None, false), Err(RuleError::Options(_))));
        assert!(matches!(check_sensor(None, None, None, true), Err(RuleError::Options(_))));
        assert!(matches!(
            check_sensor(Some("reactive_energy"), Some("kvarh"), None, false),
            Err(RuleError::UnknownClass(_))
        ));
        assert!(matches!(check_sensor(None, None, Some("sum"), false), Err(RuleError::UnknownStateClass(_))));
    }
}

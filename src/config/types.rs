//! Small value types used across the configuration: durations written `500ms`/`5s`/`2m`/`1h`,
//! secrets that never print, the adapter names. A leaf: it imports nothing of the crate but the
//! model's words (itself a leaf), so every module may use it without a cycle.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `500ms`, `5s`, `2m`, `1h` (or a bare number of seconds).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// `n` seconds.
    pub(crate) const fn secs(n: u64) -> Dur {
        Dur(Duration::from_secs(n))
    }
}

impl std::str::FromStr for Dur {
    type Err = String;

    /// `500ms`, `5s`, `1.5s`, `2m`, `1h`, `10` (seconds); the error says what to write instead.
    fn from_str(s: &str) -> Result<Dur, String> {
        parse_duration(s).map(Dur)
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// Parses `500ms`, `5s`, `1.5s`, `2m`, `1h`, `10` (seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (write e.g. 500ms, 5s, 2m, 1h)"))?;
    let factor = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!("unknown duration unit `{other}` in `{s}` (use ms, s, m or h)"));
        }
    };
    let secs = n * factor;
    if !secs.is_finite() || !(0.0..=1.0e9).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Prints a duration the way it is written in the config.
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 500ms, 5s, 2m or 1h")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dur, E> {
                u64::try_from(v)
                    .map(|v| Dur(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dur, E> {
                parse_duration(&v.to_string()).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

/// A secret (password): deserialises from a string, prints and serialises as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub(crate) fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself; call only where it is handed to a client, never for logging.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Numbers are accepted too: an env override such as HLBRIDGE_MQTT__PASSWORD=1234 arrives as one.
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::String(s) => Ok(Secret(s)),
            serde_json::Value::Number(n) => Ok(Secret(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Secret(b.to_string())),
            _ => Err(serde::de::Error::custom("expected a password string")),
        }
    }
}

thread_local! {
    /// Set only inside [`with_secrets_revealed`]: secrets then serialise as themselves.
    static REVEAL_SECRETS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with secrets serialising as their values instead of `<redacted>`: for comparing two
/// configs in memory (a changed password must count as a change on reload). Never print what `f`
/// produces.
pub(crate) fn with_secrets_revealed<T>(f: impl FnOnce() -> T) -> T {
    REVEAL_SECRETS.with(|r| r.set(true));
    let out = f();
    REVEAL_SECRETS.with(|r| r.set(false));
    out
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if REVEAL_SECRETS.with(std::cell::Cell::get) {
            return s.serialize_str(&self.0);
        }
        s.serialize_str("<redacted>")
    }
}

/// A string that may also be written as a number (`serial: 012345` loses nothing when quoted, but
/// an unquoted `serial: 12345` or an env override must still work).
pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!("expected a string, found {other}"))),
    }
}

/// Which adapter a device uses (contract §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// whatwatt Go smart-meter gateway.
    Whatwatt,
    /// go-e Charger.
    Goe,
    /// AI-on-the-edge-device camera meter.
    AiOnTheEdge,
    /// OctoPrint through the OctoPrint-MQTT plugin.
    Octoprint,
}

impl AdapterKind {
    /// Every adapter (the registry walks it: table checks, the compliance test).
    pub(crate) const ALL: [AdapterKind; 4] =
        [AdapterKind::Whatwatt, AdapterKind::Goe, AdapterKind::AiOnTheEdge, AdapterKind::Octoprint];

    /// Every adapter name, for suggestions.
    pub(crate) const NAMES: &'static [&'static str] = &["whatwatt", "goe", "ai_on_the_edge", "octoprint"];

    /// The device kind the adapter produces.
    pub(crate) fn device_kind(self) -> crate::model::DeviceKind {
        use crate::model::DeviceKind;
        match self {
            AdapterKind::Whatwatt => DeviceKind::EnergyMeter,
            AdapterKind::Goe => DeviceKind::EvCharger,
            AdapterKind::AiOnTheEdge => DeviceKind::UtilityMeter,
            AdapterKind::Octoprint => DeviceKind::Printer,
        }
    }

    /// The adapter's config name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdapterKind::Whatwatt => "whatwatt",
            AdapterKind::Goe => "goe",
            AdapterKind::AiOnTheEdge => "ai_on_the_edge",
            AdapterKind::Octoprint => "octoprint",
        }
    }
}

/// The field names of a derived `Deserialize` struct (serde passes them to `deserialize_struct`).
pub(crate) fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Grab(Option<&'static [&'static str]>);
    impl<'de> de::Deserializer<'de> for &mut Grab {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _v: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("grabbed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut g = Grab(None);
    let _ = T::deserialize(&mut g);
    g.0.unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_documented_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
    }

    #[test]
    fn bad_durations_explain_the_format() {
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").unwrap_err().contains("500ms"));
    }

    #[test]
    fn durations_print_as_written() {
        for s in ["500ms", "5s", "2m", "1h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }
}

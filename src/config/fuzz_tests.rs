//! Property-based fuzzing of the config loader (README "Fuzzing"): random YAML-ish text and the
//! shipped configs (`config/*.yaml`), mutated, never panic, and every error says something.

use std::path::Path;

use proptest::prelude::*;

use super::load_str;
use crate::fuzz_support::{hostile, mutated};

const CONFIGS: &[&[u8]] = &[include_bytes!("../../config/example.yaml"), include_bytes!("../../config/demo.yaml")];

/// Text built from YAML's own punctuation, so random input reaches past the first syntax check.
fn yamlish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("\n".to_owned()),
            Just("  ".to_owned()),
            Just(": ".to_owned()),
            Just("- ".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(", ".to_owned()),
            Just("&a ".to_owned()),
            Just("*a".to_owned()),
            Just("<<: *a\n".to_owned()),
            Just("!!binary ".to_owned()),
            Just("'".to_owned()),
            Just("\"".to_owned()),
            Just("|\n".to_owned()),
            proptest::sample::select(vec![
                "mqtt",
                "url",
                "devices",
                "adapter",
                "goe",
                "whatwatt",
                "octoprint",
                "ai_on_the_edge",
                "interval",
                "5s",
                "1e400",
                "-1",
                "routes",
                "match",
                "prefix",
                "output",
                "http",
                "listen",
                "true",
                "null",
                "~",
            ])
            .prop_map(str::to_owned),
            "[a-z_0-9]{1,8}",
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat())
}

fn load(text: &str) -> Result<(), TestCaseError> {
    if let Err(errors) = load_str(text, "fuzz.yaml", Path::new("/nonexistent-hlbridge-fuzz")) {
        prop_assert!(!errors.0.is_empty(), "a failed load names at least one error");
        for e in &errors.0 {
            prop_assert!(!e.message.trim().is_empty(), "an error without a message: {e:?}");
        }
        prop_assert!(!errors.to_string().trim().is_empty());
    }
    Ok(())
}

proptest! {
    #[test]
    fn mutated_real_configs_never_panic_and_every_error_has_a_message(text in hostile(CONFIGS)) {
        load(&String::from_utf8_lossy(&text))?;
    }

    #[test]
    fn yaml_ish_text_never_panics_and_every_error_has_a_message(text in yamlish()) {
        load(&text)?;
    }

    #[test]
    fn a_real_config_spliced_with_yaml_ish_text_never_panics(config in mutated(CONFIGS), tail in yamlish()) {
        let mut text = String::from_utf8_lossy(&config).into_owned();
        text.push_str(&tail);
        load(&text)?;
    }
}

/// Unmutated: the shipped configs load as they do today.
#[test]
fn the_shipped_configs_load_unmutated() {
    // The demo (the second) runs an embedded broker and simulators: a build without them refuses it.
    let shipped = if cfg!(all(feature = "embedded-broker", feature = "simulators")) { CONFIGS } else { &CONFIGS[..1] };
    for c in shipped {
        let text = std::str::from_utf8(c).expect("UTF-8");
        let loaded = load_str(text, "config.yaml", Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }
}

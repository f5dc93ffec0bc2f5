//! MQTT topic-filter matching (`+` and `#` wildcards), pure and allocation-free.

/// Whether `topic` matches the subscription `filter` (MQTT 3.1.1 §4.7).
pub fn matches(filter: &str, topic: &str) -> bool {
    // Wildcards must not match topics starting with '$' (broker-internal topics).
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `filter` is a syntactically valid subscription filter.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return false;
        }
        if level.contains('+') && *level != "+" {
            return false;
        }
    }
    true
}

/// Whether `topic` is a valid topic name to publish to (no wildcards, not empty).
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_every_level_below_and_the_parent() {
        assert!(matches("go-eCharger/012345/#", "go-eCharger/012345/nrg"));
        assert!(matches("go-eCharger/012345/#", "go-eCharger/012345/amp/result"));
        assert!(matches("a/#", "a"));
        assert!(!matches("go-eCharger/012345/#", "go-eCharger/999999/nrg"));
    }

    #[test]
    fn plus_matches_exactly_one_level() {
        assert!(matches("home/+/power/set", "home/garage/power/set"));
        assert!(!matches("home/+/set", "home/garage/power/set"));
    }

    #[test]
    fn leading_slash_is_its_own_empty_level() {
        assert!(matches("/go-eCharger/000001/#", "/go-eCharger/000001/car"));
        assert!(!matches("go-eCharger/000001/#", "/go-eCharger/000001/car"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
    }

    #[test]
    fn filters_are_validated() {
        assert!(valid_filter("a/+/b/#"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a/b+"));
        assert!(valid_topic("home/x/power"));
        assert!(!valid_topic("home/+/power"));
    }
}

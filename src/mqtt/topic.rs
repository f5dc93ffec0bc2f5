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
pub(crate) fn valid_filter(filter: &str) -> bool {
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
pub(crate) fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Subscription filters indexed by topic level, so dispatching a message costs a walk down the
/// topic's levels instead of a scan over every filter (1 000 devices mean 3 000+ filters).
#[derive(Debug, Default)]
pub(crate) struct FilterTrie {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// Literal next levels.
    children: std::collections::HashMap<String, Node>,
    /// The `+` branch.
    plus: Option<Box<Node>>,
    /// Entries whose filter ends with `#` at this level (matches this level and everything below).
    hash: Vec<usize>,
    /// Entries whose filter ends exactly here.
    exact: Vec<usize>,
}

impl FilterTrie {
    /// Adds `filter` with the caller's `id`.
    pub(crate) fn insert(&mut self, filter: &str, id: usize) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = match level {
                "#" => {
                    node.hash.push(id);
                    return;
                }
                "+" => node.plus.get_or_insert_with(Default::default),
                lit => node.children.entry(lit.to_owned()).or_default(),
            };
        }
        node.exact.push(id);
    }

    /// Calls `f` with the id of every filter matching `topic` (each filter once per matching path).
    pub(crate) fn for_each_match(&self, topic: &str, mut f: impl FnMut(usize)) {
        let dollar = topic.starts_with('$');
        Self::walk(&self.root, topic, true, dollar, &mut f);
    }

    fn walk(node: &Node, rest: &str, first: bool, dollar: bool, f: &mut impl FnMut(usize)) {
        // `#` matches the parent level too ("a/#" matches "a"), but not '$' topics at the root.
        if !(first && dollar) {
            node.hash.iter().for_each(|&i| f(i));
        }
        let (level, tail) = match rest.split_once('/') {
            Some((l, t)) => (l, Some(t)),
            None => (rest, None),
        };
        let mut step = |child: &Node| match tail {
            Some(t) => Self::walk(child, t, false, dollar, f),
            None => {
                child.exact.iter().for_each(|&i| f(i));
                child.hash.iter().for_each(|&i| f(i));
            }
        };
        if let Some(child) = node.children.get(level) {
            step(child);
        }
        if let Some(plus) = &node.plus
            && !(first && dollar)
        {
            step(plus);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie_matches(filters: &[&str], topic: &str) -> Vec<usize> {
        let mut t = FilterTrie::default();
        for (i, f) in filters.iter().enumerate() {
            t.insert(f, i);
        }
        let mut out = Vec::new();
        t.for_each_match(topic, |i| out.push(i));
        out.sort_unstable();
        out
    }

    #[test]
    fn the_trie_agrees_with_the_plain_matcher() {
        let filters = [
            "go-eCharger/012345/#",
            "/go-eCharger/012345/#",
            "home/+/+/set",
            "home/#",
            "#",
            "a/b",
            "a/+",
            "a/#",
            "+/+",
            "$SYS/#",
            "+",
        ];
        let topics = [
            "go-eCharger/012345/nrg",
            "/go-eCharger/012345/car",
            "home/ev/power/set",
            "home",
            "a",
            "a/b",
            "a/b/c",
            "$SYS/broker/uptime",
            "x",
            "",
            "/",
        ];
        for t in topics {
            let expected: Vec<usize> =
                filters.iter().enumerate().filter(|(_, f)| matches(f, t)).map(|(i, _)| i).collect();
            assert_eq!(trie_matches(&filters, t), expected, "topic {t:?}");
        }
    }

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

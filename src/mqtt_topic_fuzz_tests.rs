//! Property test of the subscription trie (`mqtt::topic::FilterTrie`) and the plain matcher
//! against a naive MQTT 3.1.1 §4.7 filter matcher written from the spec (README "Fuzzing"). Lives
//! outside `src/mqtt/` so that module stays untouched.

use proptest::prelude::*;

use crate::mqtt::topic::{FilterTrie, matches, valid_filter};

/// The spec, level by level: `+` is one level, `#` (last) is the parent and everything below,
/// wildcards in the first level do not match topics starting with `$`.
fn naive(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f.first(), t.first()) {
            (Some(&"#"), _) => f.len() == 1,
            (Some(&"+"), Some(_)) => go(&f[1..], &t[1..]),
            (Some(a), Some(b)) => a == b && go(&f[1..], &t[1..]),
            (None, None) => true,
            _ => false,
        }
    }
    go(&f, &t)
}

/// Levels from a small alphabet so that filters and topics actually meet.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("$SYS".to_owned()),
        Just("home".to_owned()),
        "[a-c$ ]{1,3}",
    ]
}

fn topic() -> impl Strategy<Value = String> {
    proptest::collection::vec(level(), 1..6).prop_map(|l| l.join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    let lvl = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (proptest::collection::vec(lvl, 1..6), any::<bool>())
        .prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".to_owned());
            }
            l.join("/")
        })
        .prop_filter("a subscription filter is never empty", |f| valid_filter(f))
}

proptest! {
    #[test]
    fn the_filter_trie_and_the_matcher_agree_with_the_naive_spec_matcher(
        filters in proptest::collection::vec(filter(), 1..12),
        topics in proptest::collection::vec(topic(), 1..12),
    ) {
        let mut trie = FilterTrie::default();
        for (i, f) in filters.iter().enumerate() {
            prop_assert!(valid_filter(f), "{f:?}");
            trie.insert(f, i);
        }
        for t in &topics {
            let expected: Vec<usize> = filters.iter().enumerate().filter(|(_, f)| naive(f, t)).map(|(i, _)| i).collect();
            let mut got = Vec::new();
            trie.for_each_match(t, |i| got.push(i));
            got.sort_unstable();
            prop_assert_eq!(&got, &expected, "trie, topic {:?}", t);
            let plain: Vec<usize> = filters.iter().enumerate().filter(|(_, f)| matches(f, t)).map(|(i, _)| i).collect();
            prop_assert_eq!(&plain, &expected, "matches(), topic {:?}", t);
        }
    }

    #[test]
    fn arbitrary_topic_names_never_panic_the_trie(filters in proptest::collection::vec(filter(), 0..8), topic in any::<String>()) {
        let mut trie = FilterTrie::default();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i);
        }
        let mut n = 0;
        trie.for_each_match(&topic, |_| n += 1);
        prop_assert!(n <= filters.len(), "each filter matches at most once");
    }
}

//! The module layering, checked: which top-level module names which (`crate::<module>` in code
//! outside tests) must form no cycle. Leaves such as `config::types` (the words every layer shares)
//! count as their own node, so `adapters` may use `config::types` while `config` lists the adapters.
//! A new import that closes a loop fails here, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its non-test code names.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin" && n != "tests") {
                    stack.push(path);
                }
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let skip = ["main.rs", "lib.rs", "surface.rs"].contains(&rel.as_str())
                || !name.ends_with(".rs")
                || name == "tests.rs"
                || name.contains("tests")
                || name.contains("fuzz");
            if skip {
                continue;
            }
            let top = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&path).expect("read source");
            let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    let target = if word == "config" && rest.starts_with("config::types") {
                        "config::types".into()
                    } else {
                        word
                    };
                    let own = target == top || (top == "config" && target == "config::types");
                    if !own && !target.is_empty() {
                        out.entry(top.clone()).or_default().insert(target);
                    }
                }
            }
        }
    }
    out
}

/// A path `from` → … → `to` through `edges`, if any.
fn path(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_owned()]];
    while let Some(p) = stack.pop() {
        let last = p.last().expect("non-empty").clone();
        if last == to && p.len() > 1 {
            return Some(p);
        }
        for next in edges.get(&last).into_iter().flatten() {
            if seen.insert(next.clone()) {
                let mut q = p.clone();
                q.push(next.clone());
                stack.push(q);
            }
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other_directly_or_around_a_loop() {
    let edges = edges();
    assert!(edges.contains_key("router") && edges.contains_key("adapters"), "the scan found the modules: {edges:?}");
    let loops: Vec<String> = edges.keys().filter_map(|m| path(&edges, m, m)).map(|p| p.join(" -> ")).collect();
    assert!(loops.is_empty(), "import cycles between modules:\n{}", loops.join("\n"));
}

#[test]
fn the_scan_sees_a_loop_when_there_is_one() {
    let mut edges = edges();
    edges.entry("model".into()).or_default().insert("router".into());
    assert!(path(&edges, "model", "model").is_some(), "router uses model, so model -> router closes a loop");
}

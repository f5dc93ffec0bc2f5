//! YAML syntax errors, pointed at the line that is wrong and said in words a user can act on.
//!
//! libyaml (inside serde_norway) reports where it *noticed* the problem, which is often far from
//! the mistake: an unclosed quote is noticed at the end of the file, a duplicate key at the start
//! of its mapping, a tab as "a character that cannot start any token". This module turns those
//! reports back into the line the user has to edit.

/// A YAML syntax problem: where it is (`line`, `column`, 1-based, when known) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxProblem {
    /// 1-based line of the mistake, when it can be told.
    pub line: Option<usize>,
    /// 1-based column of the mistake, when it can be told.
    pub column: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Explains `error`, raised by serde_norway while parsing `text`.
pub(crate) fn explain(text: &str, error: &serde_norway::Error) -> SyntaxProblem {
    let raw = error.to_string();
    let (line, column) = error.location().map(|l| (l.line(), l.column())).unzip();

    // A tab in the indentation: libyaml says "cannot start any token" or "violates indentation".
    if let Some((tab_line, tab_column)) = tab_near(text, line, column) {
        return SyntaxProblem {
            line: Some(tab_line),
            column: Some(tab_column),
            message: format!(
                "tab character in indentation at {tab_line}:{tab_column}: YAML indents with spaces; \
                 replace the tab with spaces"
            ),
        };
    }

    // Duplicate keys: the parser points at the start of the mapping; name the key and both lines.
    if let Some(key) = duplicate_key_name(&raw) {
        if let Some(dup) = find_duplicate_key(text, &key) {
            return SyntaxProblem {
                line: Some(dup.second_line),
                column: None,
                message: format!(
                    "duplicate key `{}`: set at line {} and again at line {}; a mapping holds each key once, \
                     keep one of them",
                    dup.path, dup.first_line, dup.second_line
                ),
            };
        }
        return SyntaxProblem {
            line,
            column,
            message: format!("duplicate key `{key}` in one mapping; keep one of them"),
        };
    }

    let problem = raw.split(" at line ").next().unwrap_or(&raw).to_owned();
    let context = context_mark(&raw);
    // A quote left open swallows the lines after it and pairs up with the next quote, so libyaml
    // complains later, about something else ("did not find expected key", a quoted scalar that
    // starts at an innocent quote, the end of the file): the first line that ends inside a quote
    // before the complaint is the culprit.
    let last_line = line.max(context.as_ref().map(|(_, l, _)| *l)).unwrap_or(usize::MAX);
    if let Some((open_line, open_column)) = first_unclosed_quote(text, last_line)
        && let Some(q) = char_at(text, open_line, open_column)
    {
        return SyntaxProblem {
            line: Some(open_line),
            column: Some(open_column),
            message: format!(
                "the quote {q} opened at {open_line}:{open_column} is not closed on its line; add the closing {q}"
            ),
        };
    }
    // A bracket opened and never closed: libyaml notices further down and names where the
    // construct began in its context ("while parsing a flow sequence at line 2 column 8").
    if let Some((construct, open_line, open_column)) = context {
        let what = match (construct.as_str(), char_at(text, open_line, open_column)) {
            ("while parsing a flow sequence", Some('[')) => {
                Some(format!("the `[` opened at {open_line}:{open_column} is never closed; add the closing `]`"))
            }
            ("while parsing a flow mapping", Some('{')) => {
                Some(format!("the `{{` opened at {open_line}:{open_column} is never closed; add the closing `}}`"))
            }
            _ => None,
        };
        if let Some(what) = what {
            return SyntaxProblem { line: Some(open_line), column: Some(open_column), message: what };
        }
    }
    SyntaxProblem { line, column, message: problem }
}

/// The first tab in the indentation of the error's line or any line before it (a tab later in the
/// file cannot have caused an error reported here), or the tab right at the error's position.
fn tab_near(text: &str, line: Option<usize>, column: Option<usize>) -> Option<(usize, usize)> {
    let last_line = line.unwrap_or(usize::MAX);
    for (n, l) in text.lines().enumerate().take(last_line) {
        let indent_len = l.len() - l.trim_start_matches([' ', '\t']).len();
        if let Some(pos) = l[..indent_len].find('\t') {
            return Some((n + 1, pos + 1));
        }
    }
    let (line, column) = (line?, column?);
    (char_at(text, line, column) == Some('\t')).then_some((line, column))
}

/// The first line, up to `last_line`, that ends inside a quoted value: (line, column of its
/// opening quote). A quote only opens a quoted value at the start of one (`key: "...`,
/// `[ '...`); an apostrophe inside a plain value (`don't`) is just a character.
fn first_unclosed_quote(text: &str, last_line: usize) -> Option<(usize, usize)> {
    for (n, line) in text.lines().enumerate().take(last_line) {
        let mut open: Option<(char, usize)> = None;
        let mut previous = ' ';
        let mut chars = line.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            match open {
                None if c == '#' && previous.is_whitespace() => break,
                None if matches!(c, '"' | '\'') && matches!(previous, ' ' | '\t' | ':' | '[' | '{' | ',' | '-') => {
                    open = Some((c, i + 1));
                }
                Some(('"', _)) if c == '\\' => {
                    chars.next();
                }
                Some(('\'', _)) if c == '\'' && chars.peek().is_some_and(|(_, next)| *next == '\'') => {
                    chars.next();
                }
                Some((q, _)) if c == q => open = None,
                _ => {}
            }
            previous = c;
        }
        if let Some((_, column)) = open {
            return Some((n + 1, column));
        }
    }
    None
}

/// The character at a 1-based line and column.
fn char_at(text: &str, line: usize, column: usize) -> Option<char> {
    text.lines().nth(line.checked_sub(1)?)?.chars().nth(column.checked_sub(1)?)
}

/// `construct`, line and column from libyaml's `..., while scanning X at line L column C`
/// (libyaml's marks are 0-based; serde_norway prints them 1-based).
fn context_mark(raw: &str) -> Option<(String, usize, usize)> {
    let (_, context) = raw.split_once(", while ")?;
    let (construct, mark) = context.rsplit_once(" at line ")?;
    let (line, column) = mark.split_once(" column ")?;
    let column = column.trim_end().trim_end_matches(|c: char| !c.is_ascii_digit());
    Some((format!("while {construct}"), line.trim().parse().ok()?, column.parse().ok()?))
}

/// The key named in serde_norway's `duplicate entry with key "url"`.
fn duplicate_key_name(raw: &str) -> Option<String> {
    let (_, rest) = raw.split_once("duplicate entry with key ")?;
    let key = rest.split(" at line ").next().unwrap_or(rest).trim();
    Some(key.trim_matches(['"', '`']).to_owned())
}

/// A key set twice in one mapping.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DuplicateKey {
    /// Dotted path of the key (`mqtt.url`; list items as their index).
    pub path: String,
    /// Line of the first occurrence.
    pub first_line: usize,
    /// Line of the second occurrence.
    pub second_line: usize,
}

/// Finds the first `key` written twice in one block mapping of `text`. Follows indentation like a
/// reader would: `- ` starts a new list item (a new mapping), block scalars (`|`, `>`) are skipped.
pub(crate) fn find_duplicate_key(text: &str, key: &str) -> Option<DuplicateKey> {
    use std::collections::HashMap;
    /// One open level: a key or a list item.
    struct Level {
        /// Column of the key or of the item's `-`.
        indent: usize,
        /// Identity in `seen` (list items get a unique one, so two items never share keys).
        id: String,
        /// How it shows in the dotted path.
        shown: String,
    }
    let mut stack: Vec<Level> = Vec::new();
    // Full identity path of every key seen -> its line.
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Items seen per list, for their index in the path.
    let mut items: HashMap<String, usize> = HashMap::new();
    let mut unique = 0usize;
    let mut block_scalar_indent: Option<usize> = None;
    let identity = |stack: &[Level]| stack.iter().map(|l| l.id.as_str()).collect::<Vec<_>>().join("\u{1}");
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        let mut indent = line.len() - trimmed.len();
        if let Some(parent) = block_scalar_indent {
            if trimmed.is_empty() || indent > parent {
                continue;
            }
            block_scalar_indent = None;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with("---") {
            stack.clear();
            seen.clear();
            continue;
        }
        let mut body = trimmed;
        // `- ` (possibly nested, `- - a: 1`) opens a new item: a fresh mapping below the list.
        while let Some(rest) = body.strip_prefix('-').filter(|r| r.is_empty() || r.starts_with(' ')) {
            while stack.last().is_some_and(|l| l.indent >= indent) {
                stack.pop();
            }
            let count = items.entry(identity(&stack)).or_default();
            let shown = count.to_string();
            *count += 1;
            unique += 1;
            stack.push(Level { indent, id: format!("-{unique}"), shown });
            let inner = rest.trim_start_matches(' ');
            indent += 1 + rest.len() - inner.len();
            body = inner;
        }
        let Some((this_key, value)) = split_key(body) else {
            continue;
        };
        while stack.last().is_some_and(|l| l.indent >= indent) {
            stack.pop();
        }
        let full = format!("{}\u{1}{this_key}", identity(&stack));
        if let Some(&first_line) = seen.get(&full)
            && this_key == key
        {
            let mut path: Vec<&str> = stack.iter().map(|l| l.shown.as_str()).collect();
            path.push(this_key);
            return Some(DuplicateKey { path: path.join("."), first_line, second_line: n + 1 });
        }
        seen.entry(full).or_insert(n + 1);
        let value = value.split(" #").next().unwrap_or("").trim();
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar_indent = Some(indent);
        }
        stack.push(Level { indent, id: this_key.to_owned(), shown: this_key.to_owned() });
    }
    None
}

/// Splits `key: value` (or `key:` at the end of the line); quoted keys lose their quotes.
fn split_key(body: &str) -> Option<(&str, &str)> {
    let (key, value) = if let Some(quote @ ('"' | '\'')) = body.chars().next() {
        let end = body[1..].find(quote)? + 1;
        let rest = body[end + 1..].strip_prefix(':')?;
        (&body[1..end], rest)
    } else {
        let colon = body.find(": ").or_else(|| body.strip_suffix(':').map(|k| k.len()))?;
        (body[..colon].trim_end(), &body[colon + 1..])
    };
    if key.is_empty() || key.starts_with(['{', '[', '#']) {
        return None;
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> SyntaxProblem {
        let e = serde_norway::from_str::<serde_norway::Value>(text).expect_err("the text is broken");
        explain(text, &e)
    }

    #[test]
    fn an_unclosed_quote_is_reported_where_it_opened() {
        let text = "mqtt:\n  url: mqtt://b:1883\n  client_id: hlbridge\noutput:\n  prefix: home\n  qos: \"1\n\
                    devices:\n  g:\n    adapter: goe\n";
        let p = problem(text);
        assert_eq!((p.line, p.column), (Some(6), Some(8)), "{p:?}");
        assert!(p.message.contains("not closed") && p.message.contains('"'), "{p:?}");
    }

    #[test]
    fn an_unclosed_quote_is_found_even_when_a_later_quote_pairs_with_it() {
        // libyaml pairs the open quote with the next one and complains about a quote on line 3.
        let text = "devices:\n  g:\n    adapter: \"goe\n    serial: \"1\"\n    # don't mind this\n";
        let p = problem(text);
        assert_eq!((p.line, p.column), (Some(3), Some(14)), "{p:?}");
    }

    #[test]
    fn quotes_closed_on_their_line_and_apostrophes_are_not_unclosed() {
        let text = "a: \"x \\\" y\"\nb: 'it''s'\nc: don't # it's\nd: [\"p\", 'q']\n";
        assert_eq!(first_unclosed_quote(text, usize::MAX), None);
    }

    #[test]
    fn an_unclosed_bracket_is_reported_where_it_opened() {
        let p = problem("mqtt:\n  url: [unclosed\n");
        assert_eq!(p.line, Some(2), "{p:?}");
        assert!(p.message.contains('['), "{p:?}");
    }

    #[test]
    fn a_duplicate_key_names_the_key_and_both_lines() {
        let text = "mqtt:\n  url: mqtt://a:1883\n  client_id: x\n  keep_alive: 5s\n  url: mqtt://b:1883\n";
        let p = problem(text);
        assert_eq!(p.line, Some(5), "{p:?}");
        assert!(
            p.message.contains("`mqtt.url`") && p.message.contains("line 2") && p.message.contains("line 5"),
            "{p:?}"
        );
    }

    #[test]
    fn the_same_key_in_two_list_items_is_no_duplicate() {
        let text = "routes:\n  - match: { kind: ev_charger }\n    prefix: a\n  - match: { adapter: goe }\n    prefix: b\n\
                    devices:\n  g:\n    adapter: goe\n  h:\n    adapter: goe\n    adapter: goe\n";
        let d = find_duplicate_key(text, "prefix");
        assert_eq!(d, None);
        let d = find_duplicate_key(text, "adapter").expect("h.adapter is set twice");
        assert_eq!((d.path.as_str(), d.first_line, d.second_line), ("devices.h.adapter", 10, 11));
    }

    #[test]
    fn keys_inside_block_scalars_are_not_keys() {
        let text = "data:\n  config.yaml: |\n    mqtt:\n      url: x\n    mqtt:\n  other: 1\n  other: 2\n";
        let d = find_duplicate_key(text, "other").expect("other is set twice");
        assert_eq!((d.first_line, d.second_line), (6, 7));
        assert_eq!(find_duplicate_key(text, "mqtt"), None);
    }

    #[test]
    fn a_tab_in_the_indentation_is_called_a_tab() {
        let p = problem("mqtt:\n  url: mqtt://a:1883\n\tclient_id: x\n");
        assert_eq!((p.line, p.column), (Some(3), Some(1)), "{p:?}");
        assert!(p.message.starts_with("tab character in indentation at 3:1: YAML indents with spaces"), "{p:?}");
    }
}

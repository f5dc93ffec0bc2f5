//! Bounds for text that comes from outside (device payloads, broker topics, HTTP answers): how much
//! of it the bridge republishes, logs or shows.
//!
//! Devices and anyone who can publish on the broker choose these strings. Republished at full
//! length, one oversized firmware string makes a retained `info` larger than the broker's packet
//! limit and the connection loops; logged at full length, one payload becomes a 200 KB log line.
//! The router bounds every text value, identity field, event string and `/readyz` detail with
//! [`bound_text`] at the adapter boundary (one place, not per adapter); log lines wrap untrusted
//! strings in [`clip`], which also escapes control characters so a payload cannot forge log lines.

use std::borrow::Cow;
use std::fmt;

/// The most bytes of one text value or identity field the bridge republishes. Real devices send far
/// less (file names, raw digits, error texts and firmware strings are well under 200 bytes).
pub const MAX_TEXT_BYTES: usize = 1024;

/// Appended to a value cut at [`MAX_TEXT_BYTES`], so readers see it is not the whole text.
pub const TRUNCATED_MARKER: &str = "…[truncated]";

/// The most bytes of one untrusted string a log line carries.
pub(crate) const LOG_CLIP_BYTES: usize = 160;

/// Most entries of one JSON object or array kept in event data; the rest is dropped.
pub(crate) const MAX_JSON_ENTRIES: usize = 64;

/// Deepest nesting of event data kept; deeper values become `null`.
pub(crate) const MAX_JSON_DEPTH: usize = 8;

/// The longest prefix of `s` that is at most `max` bytes and ends on a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes, marker included, or `None` when it already fits.
pub(crate) fn truncated(s: &str, max: usize) -> Option<String> {
    if s.len() <= max {
        return None;
    }
    let keep = prefix(s, max.saturating_sub(TRUNCATED_MARKER.len()));
    let mut out = String::with_capacity(keep.len() + TRUNCATED_MARKER.len());
    out.push_str(keep);
    out.push_str(TRUNCATED_MARKER);
    Some(out)
}

/// Cuts `text` to [`MAX_TEXT_BYTES`] with [`TRUNCATED_MARKER`]; returns whether it was cut.
pub(crate) fn bound_text(text: &mut Cow<'static, str>) -> bool {
    match truncated(text, MAX_TEXT_BYTES) {
        Some(t) => {
            *text = Cow::Owned(t);
            true
        }
        None => false,
    }
}

/// [`bound_text`] for an owned string.
pub(crate) fn bound_string(text: &mut String) -> bool {
    match truncated(text, MAX_TEXT_BYTES) {
        Some(t) => {
            *text = t;
            true
        }
        None => false,
    }
}

/// Bounds JSON event data: strings (and object keys) to [`MAX_TEXT_BYTES`], objects and arrays to
/// [`MAX_JSON_ENTRIES`] entries, nesting to [`MAX_JSON_DEPTH`]. Returns whether anything was cut.
#[cfg(test)]
pub(crate) fn bound_json(value: &mut serde_json::Value) -> bool {
    bound_json_at(value, 0)
}

fn bound_json_at(value: &mut serde_json::Value, depth: usize) -> bool {
    use serde_json::Value as J;
    if depth >= MAX_JSON_DEPTH && matches!(value, J::Array(_) | J::Object(_)) {
        *value = J::Null;
        return true;
    }
    match value {
        J::String(s) => bound_string(s),
        J::Array(items) => {
            let mut cut = items.len() > MAX_JSON_ENTRIES;
            items.truncate(MAX_JSON_ENTRIES);
            for v in items {
                cut |= bound_json_at(v, depth + 1);
            }
            cut
        }
        J::Object(map) => bound_json_map_at(map, depth),
        _ => false,
    }
}

/// [`bound_json`] for an object (event data).
pub(crate) fn bound_json_map(map: &mut serde_json::Map<String, serde_json::Value>) -> bool {
    bound_json_map_at(map, 0)
}

fn bound_json_map_at(map: &mut serde_json::Map<String, serde_json::Value>, depth: usize) -> bool {
    let oversized = map.len() > MAX_JSON_ENTRIES || map.keys().any(|k| k.len() > MAX_TEXT_BYTES);
    let mut cut = false;
    if oversized {
        let old = std::mem::take(map);
        for (mut k, v) in old.into_iter().take(MAX_JSON_ENTRIES) {
            bound_string(&mut k);
            map.insert(k, v);
        }
        cut = true;
    }
    for v in map.values_mut() {
        cut |= bound_json_at(v, depth + 1);
    }
    cut
}

/// An untrusted string for a log line: at most `max` bytes of it, control characters escaped, and
/// how much was left out. Formatting allocates nothing.
pub(crate) struct Clip<'a> {
    /// The full text.
    text: &'a str,
    /// Bytes of it to show.
    max: usize,
}

/// Wraps untrusted text for a log field: `tracing::warn!(topic = %clip(&msg.topic), ...)`.
pub(crate) fn clip(text: &str) -> Clip<'_> {
    Clip { text, max: LOG_CLIP_BYTES }
}

/// [`clip`] with another length.
pub(crate) fn clip_to(text: &str, max: usize) -> Clip<'_> {
    Clip { text, max }
}

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = prefix(self.text, self.max);
        for c in shown.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        let left = self.text.len() - shown.len();
        if left > 0 {
            write!(f, "…[+{left} bytes]")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Untrusted bytes (a payload) for a log line: like [`clip`], invalid UTF-8 shown as `�`.
pub(crate) fn clip_bytes(bytes: &[u8]) -> ClipBytes<'_> {
    ClipBytes(bytes)
}

/// See [`clip_bytes`].
pub(crate) struct ClipBytes<'a>(&'a [u8]);

impl fmt::Display for ClipBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A few bytes more than shown, so a character cut at the end still decodes.
        let head = String::from_utf8_lossy(&self.0[..self.0.len().min(LOG_CLIP_BYTES + 4)]);
        let shown = prefix(&head, LOG_CLIP_BYTES);
        write!(f, "{}", clip_to(shown, LOG_CLIP_BYTES))?;
        let left = self.0.len().saturating_sub(shown.len());
        if left > 0 {
            write!(f, "…[+{left} bytes]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_left_alone() {
        let mut t: Cow<'static, str> = Cow::Borrowed("Neg. Rate - Read: 123.4");
        assert!(!bound_text(&mut t));
        assert!(matches!(t, Cow::Borrowed(_)), "no allocation for text that fits");
    }

    #[test]
    fn long_text_is_cut_to_the_bound_with_a_visible_marker() {
        let mut t: Cow<'static, str> = Cow::Owned("x".repeat(100 * 1024));
        assert!(bound_text(&mut t));
        assert!(t.len() <= MAX_TEXT_BYTES, "{}", t.len());
        assert!(t.ends_with(TRUNCATED_MARKER));
        assert!(t.starts_with("xxxx"));
    }

    #[test]
    fn cutting_never_splits_a_character() {
        let s = "ä".repeat(MAX_TEXT_BYTES);
        let t = truncated(&s, MAX_TEXT_BYTES).unwrap();
        assert!(t.len() <= MAX_TEXT_BYTES);
        assert!(t.trim_end_matches(TRUNCATED_MARKER).chars().all(|c| c == 'ä'));
    }

    #[test]
    fn event_data_is_bounded_in_strings_entries_and_depth() {
        let mut deep = serde_json::json!("leaf");
        for _ in 0..50 {
            deep = serde_json::json!({ "d": deep });
        }
        let big: serde_json::Map<String, serde_json::Value> =
            (0..1000).map(|i| (format!("k{i:04}"), serde_json::json!(i))).collect();
        let mut v = serde_json::json!({
            "name": "y".repeat(200_000),
            "list": (0..1000).collect::<Vec<_>>(),
            "deep": deep,
            "big": big,
        });
        assert!(bound_json(&mut v));
        let s = v.to_string();
        assert!(s.len() < 8 * 1024, "{} bytes", s.len());
        assert_eq!(v["list"].as_array().unwrap().len(), MAX_JSON_ENTRIES);
        assert_eq!(v["big"].as_object().unwrap().len(), MAX_JSON_ENTRIES);
    }

    #[test]
    fn clip_shows_a_bounded_escaped_prefix_and_says_how_much_is_missing() {
        let s = format!("line1\nforged line{}", "z".repeat(10_000));
        let shown = clip(&s).to_string();
        assert!(shown.len() < LOG_CLIP_BYTES + 40, "{}", shown.len());
        assert!(shown.starts_with("line1\\nforged line"), "{shown}");
        assert!(shown.ends_with(&format!("…[+{} bytes]", s.len() - LOG_CLIP_BYTES)), "{shown}");
        assert_eq!(clip("short").to_string(), "short");
    }

    #[test]
    fn clip_bytes_handles_invalid_utf8_and_long_payloads() {
        let mut p = vec![0xff, b'a'];
        p.extend(std::iter::repeat_n(b'b', 5000));
        let shown = clip_bytes(&p).to_string();
        assert!(shown.starts_with("\u{fffd}a"), "{shown}");
        assert!(shown.len() < LOG_CLIP_BYTES + 40, "{}", shown.len());
        assert!(shown.contains("…[+"));
    }
}

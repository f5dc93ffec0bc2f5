//! A small Server-Sent Events parser (WHATWG "event stream interpretation") for the gateway's
//! `/api/v1/live` stream, fed with raw body chunks. Pure: no IO, so recorded captures replay
//! through it byte for byte.
//!
//! It handles what a real stream can throw at it: chunks split anywhere (even between `\r` and
//! `\n`), `\n`, `\r\n` and `\r` line ends, comments, multi-line `data:`, a UTF-8 BOM, and lines that
//! are not SSE at all (an HTML error page written into the stream is reported per line, not fatal).
//! Lines and events are capped so a misbehaving server cannot grow memory without bound: the
//! moment a line (or an event's joined data) crosses [`MAX_LINE`], the parser reports
//! [`SseItem::Overflow`] once and discards the rest of it, so even an endless line without a line
//! end is noticed at once and costs at most [`MAX_LINE`] bytes.

/// Longest line kept (the gateway's events are ~600 bytes).
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Something the parser produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseItem<'a> {
    /// A complete event: its type (`message` when none was given) and data.
    Event {
        /// The `event:` field.
        event: &'a str,
        /// The `data:` lines joined with `\n`.
        data: &'a str,
    },
    /// A line that is not `field: value` of a known field (HTML, garbage).
    BadLine(&'a str),
    /// A line, or an event's data, crossed [`MAX_LINE`]: reported once, the moment it happens;
    /// the rest of the line is discarded and the event is not dispatched.
    Overflow,
}

/// Incremental parser state; one per connection.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` of the next one belongs to it.
    after_cr: bool,
    /// Bytes of the current line beyond the cap are discarded.
    overflow: bool,
    /// The `event:` field of the event being built.
    event: String,
    /// The joined `data:` lines of the event being built (at most [`MAX_LINE`]).
    data: String,
    /// A `data:` line arrived (an empty one counts): the event is dispatched.
    has_data: bool,
    /// The event's data crossed the cap: it is dropped at its blank line, not dispatched truncated.
    data_overflow: bool,
    /// The BOM check is only for the very first bytes.
    started: bool,
}

impl SseParser {
    /// A parser for a new connection.
    pub(crate) fn new() -> SseParser {
        SseParser::default()
    }

    /// Forgets any partial line or event (a new connection).
    pub(crate) fn reset(&mut self) {
        *self = SseParser { line: std::mem::take(&mut self.line), ..Default::default() };
        self.line.clear();
    }

    /// Feeds one chunk, calling `on` for every item it completes.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], on: &mut dyn FnMut(SseItem<'_>)) {
        if !self.started && !chunk.is_empty() {
            self.started = true;
            if let Some(rest) = chunk.strip_prefix(b"\xEF\xBB\xBF".as_slice()) {
                chunk = rest;
            }
        }
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(on),
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(on);
                }
                _ => {
                    if self.line.len() < MAX_LINE {
                        self.line.push(b);
                    } else if !self.overflow {
                        // Said now, not at a line end that may never come.
                        self.overflow = true;
                        on(SseItem::Overflow);
                    }
                }
            }
        }
    }

    /// The stream ended: completes a last line and dispatches a pending event. (The WHATWG
    /// algorithm drops an event without its final blank line; the gateway always sends that line,
    /// so this only matters for captures, which should not lose their last event.)
    pub(crate) fn finish(&mut self, on: &mut dyn FnMut(SseItem<'_>)) {
        if !self.line.is_empty() || self.overflow {
            self.end_line(on);
        }
        self.after_cr = false;
        self.dispatch(on);
    }

    fn end_line(&mut self, on: &mut dyn FnMut(SseItem<'_>)) {
        if self.overflow {
            // Already reported when it crossed the cap.
            self.overflow = false;
            self.line.clear();
            return;
        }
        if self.line.is_empty() {
            self.dispatch(on);
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.field(&line, on);
        self.line = line;
        self.line.clear();
    }

    fn field(&mut self, line: &[u8], on: &mut dyn FnMut(SseItem<'_>)) {
        let text = String::from_utf8_lossy(line);
        if text.starts_with(':') {
            return; // comment
        }
        let (name, value) = match text.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match name {
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "data" => {
                if self.data_overflow {
                    return;
                }
                // The joining newline counts too: endless empty `data:` lines must not grow it.
                let joiner = usize::from(self.has_data);
                if self.data.len() + joiner + value.len() > MAX_LINE {
                    self.data_overflow = true;
                    on(SseItem::Overflow);
                    return;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // Valid SSE fields the gateway does not send; harmless.
            "id" | "retry" => {}
            _ => on(SseItem::BadLine(&text)),
        }
    }

    fn dispatch(&mut self, on: &mut dyn FnMut(SseItem<'_>)) {
        if self.has_data && !self.data_overflow {
            let event = if self.event.is_empty() { "message" } else { self.event.as_str() };
            on(SseItem::Event { event, data: &self.data });
        }
        self.event.clear();
        self.data.clear();
        self.has_data = false;
        self.data_overflow = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(p: &mut SseParser, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |item| {
                out.push(match item {
                    SseItem::Event { event, data } => format!("{event}={data}"),
                    SseItem::BadLine(l) => format!("bad:{l}"),
                    SseItem::Overflow => "overflow".into(),
                })
            });
        }
        out
    }

    #[test]
    fn the_documented_event_parses() {
        let text = include_bytes!("../../../adapters/whatwatt/fixtures/docs_live_sse_event.txt");
        let mut p = SseParser::new();
        assert!(collect(&mut p, &[text]).is_empty(), "the docs snippet ends before the blank line that ends an event");
        let out = collect(&mut p, &[b"\n"]);
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("live={\"P_In\":0.036"), "{out:?}");
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_events() {
        let text = b"event: live\r\ndata: {\"a\":1}\r\n\r\nevent: live\ndata: {\"a\":2}\n\n";
        let whole = collect(&mut SseParser::new(), &[text]);
        assert_eq!(whole, ["live={\"a\":1}", "live={\"a\":2}"]);
        for split in 1..text.len() {
            let (a, b) = text.split_at(split);
            assert_eq!(collect(&mut SseParser::new(), &[a, b]), whole, "split at {split}");
        }
    }

    #[test]
    fn bare_carriage_returns_end_lines() {
        let out = collect(&mut SseParser::new(), &[b"event: live\rdata: x\r\r"]);
        assert_eq!(out, ["live=x"]);
    }

    #[test]
    fn comments_ids_and_retries_are_quiet_and_html_is_reported() {
        let out = collect(&mut SseParser::new(), &[b": hi\nid: 3\nretry: 10\n\n<html>\n<body>oops</body>\n\n"]);
        assert_eq!(out, ["bad:<html>", "bad:<body>oops</body>"]);
    }

    #[test]
    fn multi_line_data_is_joined_and_an_event_without_type_is_a_message() {
        let out = collect(&mut SseParser::new(), &[b"data: a\ndata: b\n\n"]);
        assert_eq!(out, ["message=a\nb"]);
    }

    #[test]
    fn overlong_lines_are_dropped_not_buffered() {
        let mut p = SseParser::new();
        let long = vec![b'x'; MAX_LINE + 10];
        let out = collect(&mut p, &[b"data: ", &long, b"\n\ndata: ok\n\n"]);
        assert_eq!(out, ["overflow", "message=ok"]);
        assert!(p.line.capacity() <= MAX_LINE * 2);
    }

    #[test]
    fn an_endless_line_is_reported_once_as_soon_as_it_crosses_the_cap() {
        let mut p = SseParser::new();
        let chunk = vec![b'x'; 16 * 1024];
        let mut seen = Vec::new();
        for _ in 0..64 {
            seen.extend(collect(&mut p, &[b"data: ", &chunk]));
        }
        assert_eq!(seen, ["overflow"], "one report for 1 MiB without a line end");
        assert!(p.line.capacity() <= MAX_LINE * 2, "kept: {}", p.line.capacity());
    }

    #[test]
    fn endless_data_lines_of_one_event_stay_bounded_and_the_event_is_dropped() {
        let mut p = SseParser::new();
        let many = b"data:\n".repeat(200_000);
        let out = collect(&mut p, &[&many]);
        assert_eq!(out, ["overflow"]);
        assert!(p.data.len() <= MAX_LINE, "joined data kept: {}", p.data.len());
        assert_eq!(
            collect(&mut p, &[b"\ndata: next\n\n"]),
            ["message=next"],
            "the overflowing event is not dispatched"
        );
    }

    #[test]
    fn reset_forgets_a_partial_event() {
        let mut p = SseParser::new();
        collect(&mut p, &[b"event: live\ndata: {\"half\""]);
        p.reset();
        assert_eq!(collect(&mut p, &[b"data: new\n\n"]), ["message=new"]);
    }

    #[test]
    fn the_end_of_a_stream_hands_over_a_complete_last_event() {
        let mut p = SseParser::new();
        assert!(collect(&mut p, &[b"event: live\ndata: {\"a\":1}\n"]).is_empty());
        let mut out = Vec::new();
        p.finish(&mut |i| out.push(format!("{i:?}")));
        assert_eq!(out, ["Event { event: \"live\", data: \"{\\\"a\\\":1}\" }"]);
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: x", &mut |_| {});
        p.finish(&mut |i| out.push(format!("{i:?}")));
        assert_eq!(out.len(), 1, "even without the line end");
    }

    #[test]
    fn a_bom_at_the_start_is_skipped() {
        assert_eq!(collect(&mut SseParser::new(), &[b"\xEF\xBB\xBFdata: x\n\n"]), ["message=x"]);
    }
}

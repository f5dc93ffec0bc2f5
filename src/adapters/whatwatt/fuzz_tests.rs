//! Property-based fuzzing of the whatwatt parsing entry points (README "Fuzzing"): report bodies,
//! MQTT template payloads, the system answer and the SSE framer, with random bytes and the captures
//! under `adapters/whatwatt/fixtures/`, mutated.

use bytes::Bytes;
use proptest::prelude::*;

use super::sse::{MAX_LINE, SseItem, SseParser};
use super::{Ingest, WhatwattConfig, WhatwattTransport};
use crate::config::types::AdapterKind;
use crate::fuzz_support::{check_published, debug_len, hostile, router};
use crate::mqtt::Message;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../../adapters/whatwatt/fixtures/", $name)).as_slice()
    };
}

const REPORTS: &[&[u8]] = &[
    fixture!("docs_report_ensor_p1_dsmr.json"),
    fixture!("docs_report_landisgyr_mbus_dlms.json"),
    fixture!("gl_report_kamstrup_kmp_fw2.8.2.json"),
    fixture!("tp_report_landisgyr_mbus_2025-04-14.json"),
    fixture!("docs_system_get_fw1.10.0.json"),
];

const MQTT_PAYLOADS: &[&[u8]] = &[
    fixture!("docs_mqtt_message_example.json"),
    fixture!("ha_integration_example_mqtt_message.json"),
    fixture!("notes_mqtt_bridge_template_message.json"),
    fixture!("constructed_mqtt_ha_template_quoted.json"),
];

const SSE_STREAMS: &[&[u8]] = &[
    fixture!("docs_live_sse_event.txt"),
    fixture!("tp_live_sse_landisgyr_mbus_2025-04-14.txt"),
    fixture!("constructed_live_sse_malformed.txt"),
];

fn ingest(transport: WhatwattTransport) -> (Ingest, crate::router::DeviceHandle, crate::mqtt::CaptureRx) {
    let (_router, handle, captured) = router("meter", AdapterKind::Whatwatt);
    let cfg = WhatwattConfig { transport, ..WhatwattConfig::default() };
    let ingest = Ingest::new(handle.clone(), &cfg).expect("the default config is valid");
    (ingest, handle, captured)
}

/// Everything the framer hands over, owned, in order.
fn frame(chunks: &[&[u8]], finish: bool) -> Vec<String> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    let mut on = |item: SseItem<'_>| {
        out.push(match item {
            SseItem::Event { event, data } => format!("event {event}: {data}"),
            SseItem::BadLine(line) => format!("bad {line}"),
            SseItem::Overflow => "overflow".to_owned(),
        })
    };
    for c in chunks {
        parser.feed(c, &mut on);
    }
    if finish {
        parser.finish(&mut on);
    }
    out
}

/// Cuts `data` at the given fractions (per mille) of its length.
fn split<'a>(data: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| data.len() * usize::from(*c) / 1000).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for a in at {
        chunks.push(&data[start..a]);
        start = a;
    }
    chunks.push(&data[start..]);
    chunks
}

proptest! {
    #[test]
    fn report_bodies_through_the_router_publish_bounded_valid_payloads(
        body in hostile(REPORTS),
        content_type in prop_oneof![Just("application/json"), Just("text/html"), Just("")],
    ) {
        let (mut ingest, handle, mut captured) = ingest(WhatwattTransport::Sse);
        let _ = ingest.report_body(200, content_type, &body);
        let _ = ingest.system_body(200, content_type, &body);
        handle.flush();
        check_published(&captured.drain(), body.len())?;
    }

    #[test]
    fn mqtt_payloads_through_the_router_publish_bounded_valid_payloads(
        payloads in proptest::collection::vec(hostile(MQTT_PAYLOADS), 1..4),
    ) {
        let (mut ingest, handle, mut captured) = ingest(WhatwattTransport::Mqtt);
        let mut input = 0;
        for p in &payloads {
            input += p.len();
            ingest.mqtt_message(&Message { topic: "whatwatt/meter".into(), payload: Bytes::copy_from_slice(p), retain: false });
        }
        handle.flush();
        check_published(&captured.drain(), input)?;
    }

    #[test]
    fn sse_streams_through_the_router_publish_bounded_valid_payloads(
        stream in hostile(SSE_STREAMS),
        cuts in proptest::collection::vec(0u16..=1000, 0..6),
    ) {
        let (mut ingest, handle, mut captured) = ingest(WhatwattTransport::Sse);
        for chunk in split(&stream, &cuts) {
            ingest.sse_bytes(chunk);
        }
        ingest.sse_end();
        handle.flush();
        check_published(&captured.drain(), stream.len())?;
    }

    #[test]
    fn real_sse_streams_split_anywhere_frame_the_same_events_as_one_chunk(
        which in 0..SSE_STREAMS.len(),
        cuts in proptest::collection::vec(0u16..=1000, 1..12),
        finish in any::<bool>(),
    ) {
        let stream = SSE_STREAMS[which];
        let whole = frame(&[stream], finish);
        prop_assert_eq!(frame(&split(stream, &cuts), finish), whole);
    }

    #[test]
    fn mutated_sse_streams_split_anywhere_frame_the_same_items_as_one_chunk(
        stream in hostile(SSE_STREAMS),
        cuts in proptest::collection::vec(0u16..=1000, 1..8),
    ) {
        // The one split the framer may see differently: a BOM cut in two at the very start.
        prop_assume!(!stream.starts_with(b"\xEF"));
        let whole = frame(&[&stream], true);
        prop_assert_eq!(frame(&split(&stream, &cuts), true), whole);
    }

    #[test]
    fn the_sse_framer_never_panics_and_keeps_a_bounded_state_for_garbage(
        chunks in proptest::collection::vec(hostile(SSE_STREAMS), 1..6),
    ) {
        let mut parser = SseParser::new();
        for c in &chunks {
            parser.feed(c, &mut |_| {});
            // The current line and the event being assembled, each capped (plus Debug's escaping).
            prop_assert!(debug_len(&parser) <= 3 * 6 * MAX_LINE, "{} bytes of state", debug_len(&parser));
        }
        parser.finish(&mut |_| {});
    }
}

/// Unmutated captures: the streams frame into the events the golden replays rely on.
#[test]
fn the_unmutated_landis_gyr_stream_frames_into_live_events_only() {
    let items = frame(&[SSE_STREAMS[1]], true);
    assert!(items.len() >= 2, "{items:?}");
    assert!(items.iter().all(|i| i.starts_with("event live: {")), "{items:?}");
}

/// A stream of `data:` lines that never ends its event (no blank line) must not grow the event
/// being assembled without bound. It does today: past the 64 KiB data cap every further `data:`
/// line still appends its `\n` separator (`SseParser::field`), one byte per line, forever. Left
/// for the engineer adding the line cap in `sse.rs` (reported); run with `--ignored`.
#[test]
fn endless_data_lines_without_a_blank_line_keep_the_sse_state_bounded() {
    let mut parser = SseParser::new();
    let line = b"data:\n";
    let mut stream = Vec::with_capacity(line.len() * 20 * MAX_LINE);
    for _ in 0..20 * MAX_LINE {
        stream.extend_from_slice(line);
    }
    parser.feed(&stream, &mut |_| {});
    let held = debug_len(&parser);
    assert!(held <= 3 * 6 * MAX_LINE, "{held} bytes of state after {} bytes of input", stream.len());
}

/// Found by the properties above: a kW reading that is finite but huge became `inf` W after the
/// ×1000 and was published as `NaN` on its quantity topic.
#[test]
fn a_huge_kilowatt_reading_is_not_published_as_a_non_number() {
    let (mut ingest, handle, mut captured) = ingest(WhatwattTransport::Sse);
    let stream = b"event: live\ndata: {\"P_In\":1e306,\"P_Out\":0,\"E_In\":1}\n\n";
    ingest.sse_bytes(stream);
    handle.flush();
    let published = captured.drain();
    let checked = check_published(&published, stream.len());
    assert!(checked.is_ok(), "{checked:?}");
    assert!(published.iter().any(|c| c.topic == "home/meter/energy_import"), "the rest of the event is kept");
}

/// Found by the properties above: the largest f64 was written out as a 309-digit integer, which
/// JSON readers reject as out of range, so the whole state JSON became unreadable.
#[test]
fn the_largest_finite_reading_keeps_the_state_json_readable() {
    let (mut ingest, handle, mut captured) = ingest(WhatwattTransport::Sse);
    let stream = b"event: live\ndata: {\"PF\":1.7976931348623157e308,\"E_In\":1}\n\n";
    ingest.sse_bytes(stream);
    handle.flush();
    let published = captured.drain();
    let checked = check_published(&published, stream.len());
    assert!(checked.is_ok(), "{checked:?}");
    assert!(published.iter().any(|c| c.topic == "home/meter/state"), "{published:?}");
}

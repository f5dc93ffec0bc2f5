//! The few MQTT 3.1.1 packets the bench's hand-written clients need (the floor relay and the
//! saturation pair), encoded and split by hand.
//!
//! Hand-written on purpose: these clients are meant to cost next to nothing, so that what they
//! measure is the broker or the bridge, not a protocol library. They understand exactly what a
//! broker sends them here (CONNACK, SUBACK, QoS 0 PUBLISH).

/// Splits the first complete packet off `buf`: (first byte, body range, packet length).
pub(crate) fn packet(buf: &[u8]) -> Option<(u8, (usize, usize), usize)> {
    let kind = *buf.first()?;
    let (mut len, mut shift, mut i) = (0usize, 0u32, 1usize);
    loop {
        let b = *buf.get(i)?;
        len |= usize::from(b & 0x7f) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return None;
        }
    }
    (buf.len() >= i + len).then_some((kind, (i, i + len), i + len))
}

/// The topic and payload of a QoS 0 PUBLISH body (topic length, topic, payload).
pub(crate) fn publish_parts(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let [hi, lo, ..] = *body else { return None };
    let end = 2 + usize::from(u16::from_be_bytes([hi, lo]));
    Some((body.get(2..end)?, body.get(end..)?))
}

fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            return;
        }
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

pub(crate) fn connect_packet(out: &mut Vec<u8>, client_id: &str) {
    out.push(0x10);
    remaining_length(out, 10 + 2 + client_id.len());
    string(out, b"MQTT");
    // 3.1.1, clean session, keep-alive 600 s (longer than any phase; the embedded broker, rumqttd,
    // refuses 0).
    out.extend_from_slice(&[4, 0x02, 0x02, 0x58]);
    string(out, client_id.as_bytes());
}

pub(crate) fn subscribe_packet(out: &mut Vec<u8>, filter: &str) {
    out.push(0x82);
    remaining_length(out, 2 + 2 + filter.len() + 1);
    out.extend_from_slice(&1u16.to_be_bytes());
    string(out, filter.as_bytes());
    out.push(0);
}

/// A QoS 0 publish, retained or not.
pub(crate) fn publish_packet(out: &mut Vec<u8>, topic: &str, payload: &[u8], retain: bool) {
    out.push(if retain { 0x31 } else { 0x30 });
    remaining_length(out, 2 + topic.len() + payload.len());
    string(out, topic.as_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_packet_waits_for_more_bytes() {
        let mut p = Vec::new();
        publish_packet(&mut p, "t", &[b'x'; 300], true);
        assert!(packet(&p[..p.len() - 1]).is_none());
        assert!(packet(&p[..2]).is_none());
        assert_eq!(packet(&p).map(|x| x.2), Some(p.len()));
    }

    #[test]
    fn a_publish_says_its_topic_its_payload_and_whether_it_is_retained() {
        let mut p = Vec::new();
        publish_packet(&mut p, "a/b", b"42", false);
        let (kind, body, _) = packet(&p).expect("a whole packet");
        assert_eq!(kind, 0x30);
        assert_eq!(publish_parts(&p[body.0..body.1]), Some((&b"a/b"[..], &b"42"[..])));
    }
}

//! MQTT 3.1.1 QoS 0 PUBLISH encoding straight into the connection's write buffer: the hot path's
//! one packet kind, without building rumqttc's `Publish` (an owned `String` topic per publish) or
//! passing through its sink and codec. Everything else (QoS 1, SUBSCRIBE, PINGREQ ...) still goes
//! through rumqttc; both write into the same buffer in call order. Checked byte for byte against
//! rumqttc's encoder (tests below).

use bytes::{BufMut, BytesMut};
use rumqttc::QoS;

/// Topic names are length-prefixed with 16 bits (MQTT 3.1.1 §1.5.3).
pub(super) const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Encoded size of a PUBLISH of this topic and payload (fixed header included; QoS 1 and 2 carry a
/// packet id).
pub(super) fn publish_size(topic_len: usize, payload_len: usize, qos: QoS) -> usize {
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic_len + packet_id + payload_len;
    1 + remaining_length_len(remaining) + remaining
}

/// Appends a QoS 0 PUBLISH. The caller checked the size against its packet limit (far below the
/// protocol's 256 MiB) and the topic against [`MAX_TOPIC_LEN`].
pub(super) fn put_qos0_publish(buf: &mut BytesMut, topic: &str, payload: &[u8], retain: bool) {
    debug_assert!(topic.len() <= MAX_TOPIC_LEN);
    let remaining = 2 + topic.len() + payload.len();
    buf.reserve(1 + remaining_length_len(remaining) + remaining);
    buf.put_u8(0x30 | u8::from(retain));
    let mut rest = remaining;
    loop {
        let low = (rest % 128) as u8;
        rest /= 128;
        buf.put_u8(if rest > 0 { low | 0x80 } else { low });
        if rest == 0 {
            break;
        }
    }
    buf.put_u16(topic.len() as u16);
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(payload);
}

/// Bytes of the variable-length "remaining length" field.
fn remaining_length_len(remaining: usize) -> usize {
    match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rumqttc::{Packet, Publish};

    fn rumqttc_encoding(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
        let mut publish = Publish::new(topic, QoS::AtMostOnce, payload.to_vec());
        publish.retain = retain;
        let mut buf = BytesMut::new();
        Packet::Publish(publish).write(&mut buf, usize::MAX).unwrap();
        buf.to_vec()
    }

    fn ours(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
        let mut buf = BytesMut::new();
        put_qos0_publish(&mut buf, topic, payload, retain);
        buf.to_vec()
    }

    #[test]
    fn a_publish_is_encoded_exactly_as_rumqttc_encodes_it_at_every_length_field_boundary() {
        // Remaining length 127/128, 16 383/16 384 and 2 097 151/2 097 152 (1 to 4 length bytes).
        for remaining in [2, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152] {
            let topic = "home/ev/power";
            let payload = vec![b'7'; remaining - 2 - topic.len().min(remaining - 2)];
            let topic = &topic[..topic.len().min(remaining - 2)];
            for retain in [false, true] {
                let got = ours(topic, &payload, retain);
                assert_eq!(got, rumqttc_encoding(topic, &payload, retain), "remaining length {remaining}");
                assert_eq!(got.len(), publish_size(topic.len(), payload.len(), QoS::AtMostOnce));
            }
        }
    }

    #[test]
    fn the_size_of_a_qos1_publish_counts_its_packet_id() {
        for payload_len in [0, 120, 16_370, 16_400] {
            let mut publish = Publish::new("home/ev/event", QoS::AtLeastOnce, vec![b'x'; payload_len]);
            publish.pkid = 7;
            let mut buf = BytesMut::new();
            Packet::Publish(publish).write(&mut buf, usize::MAX).unwrap();
            assert_eq!(buf.len(), publish_size("home/ev/event".len(), payload_len, QoS::AtLeastOnce));
        }
    }

    #[test]
    fn an_empty_retained_payload_the_deletion_of_a_retained_topic_is_encoded_too() {
        assert_eq!(ours("home/ev/power", b"", true), rumqttc_encoding("home/ev/power", b"", true));
    }

    #[test]
    fn publishes_appended_one_after_another_decode_back_in_order() {
        let mut buf = BytesMut::new();
        put_qos0_publish(&mut buf, "a/b", b"1", true);
        put_qos0_publish(&mut buf, "a/c", b"22", false);
        let read = |buf: &mut BytesMut| match Packet::read(buf, 1 << 20).unwrap() {
            Packet::Publish(p) => (p.topic, p.payload.to_vec(), p.retain, p.qos),
            other => panic!("not a publish: {other:?}"),
        };
        assert_eq!(read(&mut buf), ("a/b".to_string(), b"1".to_vec(), true, QoS::AtMostOnce));
        assert_eq!(read(&mut buf), ("a/c".to_string(), b"22".to_vec(), false, QoS::AtMostOnce));
        assert!(buf.is_empty());
    }

    proptest! {
        #[test]
        fn any_topic_and_payload_encode_as_rumqttc_encodes_them(
            topic in "[a-zA-Z0-9/_ äöü+#-]{0,300}",
            payload in proptest::collection::vec(any::<u8>(), 0..20_000),
            retain in any::<bool>(),
        ) {
            prop_assert_eq!(ours(&topic, &payload, retain), rumqttc_encoding(&topic, &payload, retain));
            prop_assert_eq!(publish_size(topic.len(), payload.len(), QoS::AtMostOnce), ours(&topic, &payload, retain).len());
        }
    }
}

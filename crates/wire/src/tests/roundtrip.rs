//! Encode -> decode round trips of arbitrary methods, tables, property sets and whole frames.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::frame::{Frame, decode_frame};
use crate::method::{Method, arbitrary_methods};
use crate::properties::{BasicProperties, ContentHeader};
use crate::value::arbitrary::{short_str, table};

fn method() -> impl Strategy<Value = Method> {
    proptest::strategy::Union::new(arbitrary_methods())
}

fn properties() -> impl Strategy<Value = BasicProperties> {
    let s = || proptest::option::of(short_str());
    (
        (s(), s(), proptest::option::of(table()), any::<Option<u8>>(), any::<Option<u8>>()),
        (s(), s(), s(), s(), any::<Option<u64>>()),
        (s(), s(), s(), s()),
    )
        .prop_map(|(a, b, c)| BasicProperties {
            content_type: a.0,
            content_encoding: a.1,
            headers: a.2,
            delivery_mode: a.3,
            priority: a.4,
            correlation_id: b.0,
            reply_to: b.1,
            expiration: b.2,
            message_id: b.3,
            timestamp: b.4,
            kind: c.0,
            user_id: c.1,
            app_id: c.2,
            cluster_id: c.3,
        })
}

pub(super) fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), method()).prop_map(|(channel, method)| Frame::Method { channel, method }),
        (any::<u16>(), any::<u64>(), properties()).prop_map(|(channel, body_size, properties)| {
            Frame::Header {
                channel,
                header: Box::new(ContentHeader {
                    class_id: 60,
                    weight: 0,
                    body_size,
                    properties,
                    ..Default::default()
                }),
            }
        }),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(channel, b)| { Frame::Body { channel, payload: Bytes::from(b) } }),
        Just(Frame::Heartbeat),
    ]
}

fn round_trip(frame: &Frame) -> Frame {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf).expect("encode");
    let len = buf.len();
    let decoded = decode_frame(&mut buf, u32::MAX).expect("decode").expect("complete frame");
    assert!(buf.is_empty(), "decoder left {} of {len} bytes", buf.len());
    decoded
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn methods_round_trip(m in method(), channel in any::<u16>()) {
        let f = Frame::Method { channel, method: m };
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn frames_round_trip(f in frame()) {
        prop_assert_eq!(round_trip(&f), f);
    }

    #[test]
    fn encoding_is_stable(f in frame()) {
        // decode(encode(x)) re-encodes to the very same bytes.
        let mut first = BytesMut::new();
        f.encode(&mut first).unwrap();
        let mut second = BytesMut::new();
        round_trip(&f).encode(&mut second).unwrap();
        prop_assert_eq!(first, second);
    }
}

/// Every method in the table, with default (zero) arguments, survives a round trip: no method
/// is left out of the decoder's match.
#[test]
fn every_method_id_round_trips() {
    for info in crate::method::METHODS {
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&info.class_id.to_be_bytes());
        payload.extend_from_slice(&info.method_id.to_be_bytes());
        // Zero bytes for every argument: empty strings and tables need 1 or 4 zero bytes, bits
        // share octets, so decode a generous zero tail and re-encode to learn the true size.
        payload.extend_from_slice(&[0u8; 64]);
        let root = payload.freeze();
        let mut r = crate::read::Reader::new(&root, &root[4..]);
        let m = Method::read_args(info.class_id, info.method_id, &mut r).expect(info.name);
        assert_eq!(
            (m.class_id(), m.method_id(), m.name()),
            (info.class_id, info.method_id, info.name)
        );
        let f = Frame::Method { channel: 1, method: m };
        assert_eq!(round_trip(&f), f, "{}", info.name);
    }
}

#[test]
fn bits_pack_into_shared_octets() {
    // queue.declare: ticket, queue "q", then passive..nowait as five bits in one octet.
    let m = crate::method::QueueDeclare {
        queue: "q".into(),
        durable: true,
        auto_delete: true,
        nowait: true,
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    Method::from(m).encode(&mut buf).unwrap();
    assert_eq!(&buf[..], b"\x00\x32\x00\x0a\x00\x00\x01q\x1a\x00\x00\x00\x00");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The priority read without decoding is the decoded one.
    #[test]
    fn priority_is_read_without_decoding(props in properties()) {
        let mut buf = BytesMut::new();
        props.encode(&mut buf).unwrap();
        prop_assert_eq!(BasicProperties::priority_of(&buf), props.priority);
        // Cut short: never a panic.
        for n in 0..buf.len() {
            let _ = BasicProperties::priority_of(&buf[..n]);
        }
    }

    /// Relaying a decoded header's raw property bytes gives the same frames as re-encoding
    /// its properties.
    #[test]
    fn raw_properties_relay_equals_reencoding(props in properties(), body in proptest::collection::vec(any::<u8>(), 0..10_000)) {
        let m = Method::from(crate::method::BasicDeliver { delivery_tag: 7, ..Default::default() });
        let mut a = BytesMut::new();
        crate::frame::encode_content(&mut a, 1, &m, &props, &body, 4096).unwrap();
        let mut wire = a.clone();
        let _method = decode_frame(&mut wire, u32::MAX).unwrap().unwrap();
        let Some(Frame::Header { header, .. }) = decode_frame(&mut wire, u32::MAX).unwrap() else {
            panic!("header frame")
        };
        let body = Bytes::from(body);
        let mut b = BytesMut::new();
        crate::frame::encode_content_raw(&mut b, 1, &m, &header.raw_properties, &body, 4096).unwrap();
        prop_assert_eq!(&a, &b);
        // A sink that keeps body parts by reference writes the same bytes, and copies none.
        let mut refs = RefSink::default();
        crate::frame::encode_content_raw(&mut refs, 1, &m, &header.raw_properties, &body, 4096).unwrap();
        prop_assert_eq!(refs.concat(), a);
        for part in &refs.parts {
            prop_assert!(part.is_empty() || body.as_ptr_range().contains(&part.as_ptr()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// basic.deliver from borrowed parts encodes exactly as the method value does.
    #[test]
    fn encode_deliver_equals_the_method(
        tag in short_str(), exchange in short_str(), key in short_str(),
        delivery_tag in any::<u64>(), redelivered in any::<bool>(),
        props in properties(), body in proptest::collection::vec(any::<u8>(), 0..9000),
    ) {
        let m = Method::from(crate::method::BasicDeliver {
            consumer_tag: tag.clone(),
            delivery_tag,
            redelivered,
            exchange: exchange.clone(),
            routing_key: key.clone(),
        });
        let mut raw = BytesMut::new();
        props.encode(&mut raw).unwrap();
        let body = Bytes::from(body);
        let mut a = BytesMut::new();
        crate::frame::encode_content_raw(&mut a, 3, &m, &raw, &body, 4096).unwrap();
        let d = crate::frame::Deliver {
            consumer_tag: &tag,
            delivery_tag,
            redelivered,
            exchange: &exchange,
            routing_key: &key,
        };
        let mut b = BytesMut::new();
        crate::frame::encode_deliver(&mut b, 3, d, &raw, &body, 4096).unwrap();
        prop_assert_eq!(a, b);
    }
}

/// A sink that keeps body parts as slices of the body (no copy) between frame bytes.
#[derive(Default)]
struct RefSink {
    buf: BytesMut,
    /// Frame bytes and body parts, in order; body parts are the odd ones.
    parts: Vec<Bytes>,
    frames: Vec<Bytes>,
}

impl crate::FrameSink for RefSink {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    fn body(&mut self, body: &Bytes, range: std::ops::Range<usize>) {
        self.frames.push(self.buf.split().freeze());
        self.parts.push(body.slice(range));
    }
}

impl RefSink {
    fn concat(&self) -> BytesMut {
        let mut all = BytesMut::new();
        for (frame, part) in self.frames.iter().zip(&self.parts) {
            all.extend_from_slice(frame);
            all.extend_from_slice(part);
        }
        all.extend_from_slice(&self.buf);
        all
    }
}

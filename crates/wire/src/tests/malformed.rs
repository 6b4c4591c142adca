//! Malformed input: typed errors with the right reply code, and never a panic.

use bytes::BytesMut;
use proptest::prelude::*;

use crate::frame::{Frame, decode_frame};
use crate::method::{BasicPublish, Method};
use crate::value::{FieldTable, FieldValue};

fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, crate::WireError> {
    decode_frame(&mut BytesMut::from(bytes), 131072)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decode_frame(&mut buf, 131072) {}
    }

    #[test]
    fn arbitrary_method_payloads_never_panic(
        class in prop_oneof![Just(10u16), Just(20), Just(30), Just(40), Just(50), Just(60), Just(85), Just(90), any::<u16>()],
        method in prop_oneof![(0u16..13).prop_map(|m| m * 10), (0u16..13).prop_map(|m| m * 10 + 1), any::<u16>()],
        args in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut payload = Vec::new();
        payload.extend_from_slice(&class.to_be_bytes());
        payload.extend_from_slice(&method.to_be_bytes());
        payload.extend_from_slice(&args);
        let mut frame = vec![1u8, 0, 1];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.push(0xCE);
        let _ = decode_one(&frame);
        frame[0] = 2;
        let _ = decode_one(&frame);
    }
}

fn method_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![1u8, 0, 1];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

#[test]
fn reply_codes_for_malformations() {
    let code = |b: &[u8]| decode_one(b).unwrap_err().reply_code();
    // bad frame end
    assert_eq!(code(b"\x08\x00\x00\x00\x00\x00\x00\xAB"), 501);
    // unknown frame type
    assert_eq!(code(b"\x09\x00\x00\x00\x00\x00\x00\xCE"), 501);
    // heartbeat on a channel
    assert_eq!(code(b"\x08\x00\x05\x00\x00\x00\x00\xCE"), 501);
    // unknown method
    assert_eq!(code(&method_frame(b"\x00\x3c\x00\x09")), 540);
    // truncated arguments (queue.declare with nothing after the ids)
    assert_eq!(code(&method_frame(b"\x00\x32\x00\x0a")), 502);
    // trailing bytes after channel.close-ok
    assert_eq!(code(&method_frame(b"\x00\x14\x00\x29\x00")), 502);
    // short string that overruns the payload
    assert_eq!(code(&method_frame(b"\x00\x14\x00\x0a\x09ab")), 502);
    // invalid UTF-8 in a short string
    assert_eq!(code(&method_frame(b"\x00\x14\x00\x0a\x02\xff\xfe")), 502);
}

#[test]
fn unknown_field_type_letter_is_a_syntax_error() {
    // connection.start-ok whose client-properties table holds key "k" of type 'Z'.
    let mut p = b"\x00\x0a\x00\x0b".to_vec();
    p.extend_from_slice(&[0, 0, 0, 3, 1, b'k', b'Z']);
    p.extend_from_slice(b"\x05PLAIN\x00\x00\x00\x00\x05en_US");
    let err = decode_one(&method_frame(&p)).unwrap_err();
    assert_eq!(err.reply_code(), 502);
    assert_eq!(err.to_string(), "unknown field type 'Z' in field table");
}

#[test]
fn table_length_overrunning_its_frame_is_an_error() {
    let mut p = b"\x00\x0a\x00\x0b".to_vec();
    p.extend_from_slice(&[0, 0, 1, 0, 1, b'k', b't', 1]);
    assert_eq!(decode_one(&method_frame(&p)).unwrap_err().reply_code(), 502);
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    // 10,000 nested arrays: refused by the depth limit instead of exhausting the stack.
    let depth = 10_000;
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    let mut table = vec![1u8, b'k'];
    table.extend_from_slice(&inner);
    let mut p = b"\x00\x0a\x00\x0b".to_vec();
    p.extend_from_slice(&(table.len() as u32).to_be_bytes());
    p.extend_from_slice(&table);
    p.extend_from_slice(b"\x05PLAIN\x00\x00\x00\x00\x05en_US");
    let mut buf = BytesMut::from(&method_frame(&p)[..]);
    assert_eq!(decode_frame(&mut buf, u32::MAX).unwrap_err().reply_code(), 502);
}

#[test]
fn encoding_a_long_short_string_fails_cleanly() {
    let m =
        Method::from(BasicPublish { routing_key: "x".repeat(256).into(), ..Default::default() });
    let mut buf = BytesMut::from(&b"keep"[..]);
    let err = Frame::Method { channel: 1, method: m }.encode(&mut buf).unwrap_err();
    assert_eq!(err.to_string(), "short string of 256 bytes exceeds 255");
    assert_eq!(&buf[..], b"keep", "a failed encode leaves the buffer as it was");
    let mut t = FieldTable::new();
    t.insert("k", FieldValue::Void);
    assert_eq!(t.get("k"), Some(&FieldValue::Void));
}

//! Streaming: a byte stream cut at every position decodes to the same frames; frame-max is
//! enforced from the header alone.

use bytes::BytesMut;
use proptest::prelude::*;

use super::roundtrip::frame;
use crate::error::WireError;
use crate::frame::{Frame, decode_frame};

fn decode_all(buf: &mut BytesMut) -> Vec<Frame> {
    let mut out = Vec::new();
    while let Some(f) = decode_frame(buf, u32::MAX).expect("valid stream") {
        out.push(f);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn stream_cut_anywhere_decodes_the_same(frames in proptest::collection::vec(frame(), 1..5)) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = decode_all(&mut buf);
            buf.extend_from_slice(&wire[cut..]);
            got.extend(decode_all(&mut buf));
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&got, &frames);
        }
    }
}

#[test]
fn oversized_frame_is_refused_from_its_header() {
    // A header that claims 4 GiB: refused at once, nothing reserved or awaited.
    let mut buf = BytesMut::from(&b"\x01\x00\x01\xff\xff\xff\xff"[..]);
    let err = decode_frame(&mut buf, 131072).unwrap_err();
    assert!(matches!(err, WireError::FrameTooLarge { max: 131072, .. }));
    assert_eq!(err.reply_code(), 501);
    assert_eq!(err.to_string(), "frame of 4294967303 bytes exceeds negotiated frame-max 131072");
    assert!(buf.capacity() < 1024);
}

#[test]
fn frame_at_frame_max_and_rabbitmqs_fudge_is_accepted() {
    let mut buf = BytesMut::new();
    Frame::Body { channel: 1, payload: vec![7u8; 4088].into() }.encode(&mut buf).unwrap();
    assert_eq!(buf.len(), 4096);
    assert!(decode_frame(&mut buf.clone(), 4096).unwrap().is_some());
    // As RabbitMQ: a payload of frame-max itself (frame-max + 8 bytes in all) is taken...
    let mut buf = BytesMut::new();
    Frame::Body { channel: 1, payload: vec![7u8; 4096].into() }.encode(&mut buf).unwrap();
    assert_eq!(buf.len(), 4104);
    assert!(decode_frame(&mut buf.clone(), 4096).unwrap().is_some());
    // ...one byte more is not.
    assert!(decode_frame(&mut buf, 4095).is_err());
}

#[test]
fn incomplete_input_asks_for_more() {
    let mut buf = BytesMut::from(&b"\x08\x00"[..]);
    assert!(decode_frame(&mut buf, 4096).unwrap().is_none());
    let mut buf = BytesMut::from(&b"\x03\x00\x01\x00\x00\x00\x05abc"[..]);
    assert!(decode_frame(&mut buf, 4096).unwrap().is_none());
    assert!(buf.capacity() >= 13);
}

#[test]
fn body_payload_shares_the_read_buffer() {
    let mut buf = BytesMut::new();
    Frame::Body { channel: 3, payload: vec![1u8; 100].into() }.encode(&mut buf).unwrap();
    let base = buf.as_ptr() as usize;
    let Some(Frame::Body { payload, .. }) = decode_frame(&mut buf, 4096).unwrap() else {
        panic!("body frame expected")
    };
    assert_eq!(payload.as_ptr() as usize, base + 7, "body was copied");
}

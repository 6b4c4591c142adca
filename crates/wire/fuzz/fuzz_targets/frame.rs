//! Arbitrary bytes through `decode_frame`, frame after frame, with a round-trip oracle: every
//! frame that decodes must encode, the encoding must decode again (under the same frame-max, to
//! a single frame that uses all of it), and re-encoding that must give the same bytes.
//! Encoded bytes are compared, not values: a float field may hold NaN.
//!
//! `crates/wire/src/tests/fuzz_corpus.rs` replays the committed corpus with the same oracle on
//! stable Rust; keep the two in step.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_wire::frame::decode_frame;

const FRAME_MAX: u32 = 131072;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let frame = match decode_frame(&mut buf, FRAME_MAX) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        let consumed = before - buf.len();
        let mut first = BytesMut::new();
        frame.encode(&mut first).expect("a decoded frame encodes");
        assert!(
            first.len() <= consumed,
            "re-encoding grew the frame from {consumed} to {} bytes",
            first.len()
        );
        let mut again = first.clone();
        let decoded = decode_frame(&mut again, FRAME_MAX)
            .expect("a re-encoded frame decodes")
            .expect("a re-encoded frame is complete");
        assert!(again.is_empty(), "{} bytes left after the frame", again.len());
        let mut second = BytesMut::new();
        decoded.encode(&mut second).expect("the frame encodes again");
        assert_eq!(first, second, "encoding is not stable for {frame:?}");
    }
});

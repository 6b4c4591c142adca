//! Replays the committed fuzz corpus (`crates/wire/fuzz/corpus/frame/`) on stable Rust with the
//! oracle of the `frame` fuzz target (`crates/wire/fuzz/fuzz_targets/frame.rs`; keep the two in
//! step): decode frame after frame; every decoded frame encodes, no larger than it came in, the
//! encoding decodes again to one whole frame, and re-encoding that gives the same bytes. Encoded
//! bytes are compared rather than values, since a float field may hold NaN.

use std::path::Path;

use bytes::BytesMut;

use crate::frame::decode_frame;

const FRAME_MAX: u32 = 131072;

/// The fuzz target's oracle; panics on a violation. Returns how many frames decoded.
fn oracle(data: &[u8]) -> usize {
    let mut buf = BytesMut::from(data);
    let mut frames = 0;
    loop {
        let before = buf.len();
        let frame = match decode_frame(&mut buf, FRAME_MAX) {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(_) => break,
        };
        frames += 1;
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
    frames
}

#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/frame");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mut frames = 0;
    for path in &entries {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| oracle(&data));
        match outcome {
            Ok(n) => frames += n,
            Err(_) => panic!("corpus input {} fails the oracle", path.display()),
        }
    }
    assert!(entries.len() >= 10, "only {} corpus files in {}", entries.len(), dir.display());
    assert!(frames >= 10, "the corpus decoded to only {frames} frames");
}

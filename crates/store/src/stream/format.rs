//! A stream's files and their bytes, the one place their layout is written down.
//!
//! ```text
//! streams/0000000042/                       stream (durable queue) 42
//!   00000000000000000000.seg                segment whose first record is offset 0
//!   00000000000000000000.sidx               its sparse index
//!   00000000000001048576.seg                the next segment, from offset 1048576
//! ```
//!
//! A segment starts with the magic `WRNSTR01`, then records framed as every store file's
//! (`[u32 length][u32 CRC-32][payload]`, see `record`), each payload
//! `[u64 offset][u64 chunk][u64 timestamp]` followed by the message as a message segment holds
//! it ([`crate::message`]: its id is the offset). `chunk` is the offset of the first record
//! written with it in one batch (RabbitMQ's chunk: `x-stream-offset: last` starts there);
//! `timestamp` is when that batch was written, in milliseconds since the Unix epoch.
//!
//! A sparse index starts with `WRNSIX01`, then fixed 24-byte points `[u64 offset][u64 byte
//! position][u64 timestamp]`, one at the first record of the segment and then one every
//! [`POINT_EVERY`] bytes or so. It only saves reading: recovery checks it against the segment
//! and scans the segment after its last good point.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::QueueId;
use crate::message::Message;
use crate::record::RECORD_HEADER;

/// The streams directory.
pub const STREAMS: &str = "streams";
/// First bytes of a stream segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"WRNSTR01";
/// First bytes of a stream segment's sparse index.
pub const INDEX_MAGIC: &[u8; 8] = b"WRNSIX01";
/// Bytes of an index point.
pub const POINT_LEN: usize = 24;
/// Bytes of a stream record's payload before the message.
pub const HEAD_LEN: usize = 24;
/// A new index point is taken once this many bytes were written since the last one: a read
/// from any offset scans at most this much before its record.
pub const POINT_EVERY: u64 = 256 * 1024;

/// Stream `id`'s directory.
pub fn dir(data: &Path, id: QueueId) -> PathBuf {
    data.join(STREAMS).join(format!("{id:010}"))
}

/// The segment of `dir` that starts at offset `first`.
pub fn segment(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// The sparse index of that segment.
pub fn index(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.sidx"))
}

/// A place in a segment that reads can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Offset of the record there.
    pub offset: u64,
    /// Byte position of its header in the segment.
    pub pos: u64,
    /// Its timestamp (ms).
    pub ts: u64,
}

impl Point {
    /// The point's bytes in an index file.
    pub fn encode(&self) -> [u8; POINT_LEN] {
        let mut out = [0u8; POINT_LEN];
        out[..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..16].copy_from_slice(&self.pos.to_be_bytes());
        out[16..].copy_from_slice(&self.ts.to_be_bytes());
        out
    }

    /// The points of an index file's bytes (after the magic); a cut-short last one is left out.
    pub fn decode_all(data: &[u8]) -> Vec<Point> {
        data.chunks_exact(POINT_LEN)
            .map(|c| Point { offset: be(&c[..8]), pos: be(&c[8..16]), ts: be(&c[16..]) })
            .collect()
    }
}

fn be(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Appends one framed record of `message` to `out`; returns its length.
pub fn encode(out: &mut Vec<u8>, offset: u64, chunk: u64, ts: u64, message: &Message) -> u64 {
    let mut head = bytes::BytesMut::with_capacity(64);
    message.encode_head(offset, &mut head);
    let payload_len = HEAD_LEN + head.len() + message.body.len();
    let mut fixed = [0u8; HEAD_LEN];
    fixed[..8].copy_from_slice(&offset.to_be_bytes());
    fixed[8..16].copy_from_slice(&chunk.to_be_bytes());
    fixed[16..].copy_from_slice(&ts.to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&fixed);
    crc.update(&head);
    crc.update(&message.body);
    out.extend_from_slice(&(payload_len as u32).to_be_bytes());
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(&head);
    out.extend_from_slice(&message.body);
    (RECORD_HEADER + payload_len) as u64
}

/// What a record's fixed head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The record's offset.
    pub offset: u64,
    /// The first offset of its chunk.
    pub chunk: u64,
    /// When its chunk was written (ms since the Unix epoch).
    pub ts: u64,
    /// The whole record's length, framing included.
    pub len: u64,
}

/// The record at `at` in `data`, if it is whole there and passes its CRC. `Err(n)`: `data`
/// ends before the record does (it needs `n` bytes from `at`: its length, or only its header's
/// if even that is cut); `Ok(None)`: damaged.
pub fn parse(data: &[u8], at: usize) -> Result<Option<Head>, usize> {
    let Some(h) = data.get(at..at + RECORD_HEADER) else { return Err(RECORD_HEADER) };
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if len < HEAD_LEN {
        return Ok(None);
    }
    let start = at + RECORD_HEADER;
    let Some(payload) = data.get(start..start + len) else {
        return Err(RECORD_HEADER + len);
    };
    if crc32fast::hash(payload) != crc {
        return Ok(None);
    }
    Ok(Some(Head {
        offset: be(&payload[..8]),
        chunk: be(&payload[8..16]),
        ts: be(&payload[16..24]),
        len: (RECORD_HEADER + len) as u64,
    }))
}

/// The message of a record that [`parse`] accepted at `at` of `data`.
pub fn message(data: &Bytes, at: usize, head: &Head) -> Option<Message> {
    let start = at + RECORD_HEADER + HEAD_LEN;
    let end = at + head.len as usize;
    Message::decode(&data.slice(start..end)).map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::BasicProperties;

    #[test]
    fn records_and_points_round_trip_and_damage_is_seen() {
        let m = Message::new(
            "ex".into(),
            "rk".into(),
            &BasicProperties { delivery_mode: Some(2), ..Default::default() },
            Bytes::new(),
            Bytes::from_static(b"body"),
        );
        let mut out = SEGMENT_MAGIC.to_vec();
        let len = encode(&mut out, 7, 5, 1_700_000_000_000, &m);
        assert_eq!(out.len() as u64, 8 + len);
        let data = Bytes::from(out);
        let head = parse(&data, 8).unwrap().unwrap();
        assert_eq!(head, Head { offset: 7, chunk: 5, ts: 1_700_000_000_000, len });
        assert_eq!(message(&data, 8, &head).unwrap(), m);
        assert_eq!(parse(&data[..data.len() - 1], 8), Err(len as usize), "cut short");
        assert_eq!(parse(&data[..12], 8), Err(8), "its header cut short");
        let mut bad = data.to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(parse(&bad, 8), Ok(None), "CRC");
        assert_eq!(parse(&[0u8; 40], 0), Ok(None), "zeros are no record");
        let p = Point { offset: 1, pos: 2, ts: 3 };
        let mut idx = p.encode().to_vec();
        idx.extend_from_slice(&[9, 9]);
        assert_eq!(Point::decode_all(&idx), vec![p]);
        assert!(segment(Path::new("/d"), 42).ends_with("00000000000000000042.seg"));
    }
}

//! Framing shared by every store file: an 8-byte magic (file kind and version) at the start,
//! then records of `[u32 length][u32 CRC-32 of the payload][payload]`, big-endian.
//!
//! A reader stops at the first record that is short or fails its CRC: that is the torn tail of
//! an interrupted append, and everything before it is good.

use std::io::Write;

/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 8;

/// Appends one framed record to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Writes one framed record.
pub fn write(w: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&(payload.len() as u32).to_be_bytes())?;
    w.write_all(&crc32fast::hash(payload).to_be_bytes())?;
    w.write_all(payload)
}

/// Iterates the valid records of `data` (after its magic); [`Records::valid_len`] then tells
/// where the good prefix ends.
pub struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    /// Set when a torn or corrupt record stopped the iteration.
    pub torn: bool,
}

impl<'a> Records<'a> {
    /// Records of `data` starting at `start` (just past the magic).
    pub fn new(data: &'a [u8], start: usize) -> Self {
        Records { data, pos: start, torn: false }
    }

    /// Length of the good prefix read so far (magic included).
    pub fn valid_len(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Records<'a> {
    /// (offset of the record's header in the file, payload)
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return None;
        }
        if rest.len() < RECORD_HEADER {
            self.torn = true;
            return None;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            self.torn = true;
            return None;
        };
        if crc32fast::hash(payload) != crc {
            self.torn = true;
            return None;
        }
        let at = self.pos;
        self.pos += RECORD_HEADER + len;
        Some((at, payload))
    }
}

/// Checks a record read back at a known offset: the payload if length and CRC agree.
pub fn check(data: &[u8]) -> Option<&[u8]> {
    let mut r = Records::new(data, 0);
    let (_, payload) = r.next()?;
    (r.valid_len() == data.len()).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_stops_the_reader() {
        let mut data = b"MAGIC001".to_vec();
        frame(&mut data, b"one");
        frame(&mut data, b"two");
        let good = data.len();
        frame(&mut data, b"three");
        let got: Vec<&[u8]> = Records::new(&data, 8).map(|(_, p)| p).collect();
        assert_eq!(got, vec![&b"one"[..], b"two", b"three"]);
        // Cut inside the last record: the first two survive.
        let cut = &data[..data.len() - 2];
        let mut r = Records::new(cut, 8);
        assert_eq!(r.by_ref().count(), 2);
        assert!(r.torn);
        assert_eq!(r.valid_len(), good);
        // Corrupt a payload byte of the last record: the same.
        let mut bad = data.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        let mut r = Records::new(&bad, 8);
        assert_eq!(r.by_ref().count(), 2);
        assert!(r.torn);
    }
}

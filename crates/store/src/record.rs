//! Framing shared by every store file: an 8-byte magic (file kind and version) at the start,
//! then records of `[u32 length][u32 CRC-32 of the payload][payload]`, big-endian. No record
//! has an empty payload, so a run of zeros (a hole left by a failed write) is never mistaken
//! for records.
//!
//! A reader that meets a record that is short or fails its CRC looks for the next good record
//! after it: first where the damaged record's own length says the next one starts (a record
//! torn by a failed write, with later records written at their own offsets), then byte by
//! byte. Good records after damage are kept and the damaged bytes counted as skipped; damage
//! with nothing good after it is the torn tail of an interrupted append.

/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 8;

/// Appends one framed record to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The declared payload length of the record at `at`, if its header is there.
fn declared_len(data: &[u8], at: usize) -> Option<usize> {
    let h = data.get(at..at.checked_add(RECORD_HEADER)?)?;
    Some(u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize)
}

/// The payload of a good record at `at`: whole, non-empty, CRC matching.
fn parse_at(data: &[u8], at: usize) -> Option<&[u8]> {
    let len = declared_len(data, at)?;
    if len == 0 {
        return None;
    }
    let h = &data[at..at + RECORD_HEADER];
    let crc = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let start = at + RECORD_HEADER;
    let payload = data.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Iterates the good records of `data` (after its magic), skipping damage in the middle.
/// [`Records::valid_len`] then tells where the good records end.
pub struct Records<'a> {
    data: &'a [u8],
    pos: usize,
    /// End of the last good record (or the start, before any).
    end: usize,
    /// Set when the data ends in damage with no good record after it (a torn tail).
    pub torn: bool,
    /// Bytes of damage skipped between good records.
    pub skipped: usize,
}

impl<'a> Records<'a> {
    /// Records of `data` starting at `start` (just past the magic).
    pub fn new(data: &'a [u8], start: usize) -> Self {
        Records { data, pos: start, end: start, torn: false, skipped: 0 }
    }

    /// Where the last good record read so far ends (magic included).
    pub fn valid_len(&self) -> usize {
        self.end
    }

    /// The next good record after damage at `at`, if there is one.
    fn resync(&self, at: usize) -> Option<usize> {
        if let Some(next) = declared_len(self.data, at)
            .and_then(|len| at.checked_add(RECORD_HEADER + len))
            .filter(|next| parse_at(self.data, *next).is_some())
        {
            return Some(next);
        }
        (at + 1..self.data.len()).find(|q| parse_at(self.data, *q).is_some())
    }
}

impl<'a> Iterator for Records<'a> {
    /// (offset of the record's header in the file, payload)
    type Item = (usize, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() || self.torn {
            return None;
        }
        let at = match parse_at(self.data, self.pos) {
            Some(_) => self.pos,
            None => match self.resync(self.pos) {
                Some(next) => {
                    self.skipped += next - self.pos;
                    next
                }
                None => {
                    self.torn = true;
                    return None;
                }
            },
        };
        let payload = parse_at(self.data, at)?;
        self.pos = at + RECORD_HEADER + payload.len();
        self.end = self.pos;
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
        assert_eq!(
            {
                let mut v = Vec::new();
                frame(&mut v, b"ab");
                v
            },
            [0, 0, 0, 2, 0x9e, 0x83, 0x48, 0x6d, b'a', b'b'],
            "length, CRC-32, payload, big-endian"
        );
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

    #[test]
    fn damage_in_the_middle_is_skipped_and_the_records_after_it_kept() {
        let mut data = b"MAGIC001".to_vec();
        frame(&mut data, b"one");
        let torn_at = data.len();
        frame(&mut data, b"a record torn halfway by a failed write");
        let torn_end = data.len();
        frame(&mut data, b"three");
        frame(&mut data, b"four");
        // A torn write: the second record's second half never reached the disk (zeros).
        let mut torn = data.clone();
        for b in &mut torn[torn_at + 20..torn_end] {
            *b = 0;
        }
        let mut r = Records::new(&torn, 8);
        let got: Vec<&[u8]> = r.by_ref().map(|(_, p)| p).collect();
        assert_eq!(got, vec![&b"one"[..], b"three", b"four"]);
        assert!(!r.torn);
        assert_eq!(r.skipped, torn_end - torn_at);
        assert_eq!(r.valid_len(), data.len());
        // A hole of zeros where the record's header was: found again byte by byte.
        let mut hole = data.clone();
        for b in &mut hole[torn_at..torn_end] {
            *b = 0;
        }
        let got: Vec<&[u8]> = Records::new(&hole, 8).map(|(_, p)| p).collect();
        assert_eq!(got, vec![&b"one"[..], b"three", b"four"]);
        // Zeros alone are no records: a torn tail.
        let zeros = [&b"MAGIC001"[..], &[0u8; 40]].concat();
        let mut r = Records::new(&zeros, 8);
        assert_eq!(r.by_ref().count(), 0);
        assert!(r.torn);
        assert_eq!(r.valid_len(), 8);
    }
}

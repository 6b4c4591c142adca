//! One durable queue's index and ack log as the writer keeps them: the live entries in memory,
//! the records of the current batch in buffers, and the files.
//!
//! A file that failed a write or an fsync may hold a torn record or lose pages it was thought
//! to hold, so nothing more is appended to it: the queue is marked for a rewrite, and the next
//! batch writes both files anew from the live entries (new files, fsync, rename over the old
//! ones). A new queue's files are made the same way. Appends therefore only ever follow good
//! records, and a torn record can only be the last one of a file.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::io::Io;
use crate::record;
use crate::{Location, QueueId, StoreError, paths};

/// Segment record kinds in the ack log.
pub(crate) const ACK_REMOVED: u8 = 1;
pub(crate) const ACK_DELIVERED: u8 = 2;

/// What an index entry may carry besides its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Extra {
    /// Nothing.
    #[default]
    None,
    /// A moved entry's origin: (queue, position). See [`crate::Store::enqueue_moved`].
    Origin(QueueId, u64),
    /// A delayed message's due time (milliseconds since the Unix epoch). See
    /// [`crate::Store::enqueue_due`].
    Due(u64),
}

/// A live index entry as the writer tracks it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveEntry {
    pub seq: u64,
    pub loc: Location,
    pub removed: bool,
    pub delivered: bool,
    /// The entry it was moved from, or when it is due; kept while the entry lives.
    pub extra: Extra,
}

/// An index record's payload: `[u64 position][u32 segment][u64 offset][u32 record length]`,
/// then for a moved entry `[u64 origin queue][u64 origin position]` (40 bytes in all), for a
/// delayed one `[u64 due]` (32 bytes).
pub(crate) fn index_payload(seq: u64, loc: Location, extra: Extra) -> ([u8; 40], usize) {
    let mut p = [0u8; 40];
    p[..8].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&loc.seg.to_be_bytes());
    p[12..20].copy_from_slice(&loc.offset.to_be_bytes());
    p[20..24].copy_from_slice(&loc.len.to_be_bytes());
    match extra {
        Extra::Origin(queue, at) => {
            p[24..32].copy_from_slice(&queue.to_be_bytes());
            p[32..40].copy_from_slice(&at.to_be_bytes());
            (p, 40)
        }
        Extra::Due(due) => {
            p[24..32].copy_from_slice(&due.to_be_bytes());
            (p, 32)
        }
        Extra::None => (p, 24),
    }
}

/// Decodes an index record's payload.
pub(crate) fn decode_index(p: &[u8]) -> Option<(u64, Location, Extra)> {
    let u64_at = |i: usize| p.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
    let u32_at = |i: usize| p.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
    let extra = match p.len() {
        24 => Extra::None,
        32 => Extra::Due(u64_at(24)?),
        40 => Extra::Origin(u64_at(24)?, u64_at(32)?),
        _ => return None,
    };
    let loc = Location { seg: u32_at(8)?, offset: u64_at(12)?, len: u32_at(20)? };
    Some((u64_at(0)?, loc, extra))
}

/// An ack log record's payload: `[u8 kind][u64 position]`.
pub(crate) fn ack_payload(kind: u8, seq: u64) -> [u8; 9] {
    let mut p = [kind; 9];
    p[1..].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Decodes an ack log record's payload: (kind, position).
pub(crate) fn decode_ack(p: &[u8]) -> Option<(u8, u64)> {
    let p: &[u8; 9] = p.try_into().ok()?;
    Some((p[0], u64::from_be_bytes(p[1..].try_into().ok()?)))
}

/// One durable queue's files and live entries.
pub(crate) struct QueueFiles {
    /// Open for appending; `None` until the first rewrite has made them.
    files: Option<(File, File)>,
    idx_buf: Vec<u8>,
    ack_buf: Vec<u8>,
    pub live: VecDeque<LiveEntry>,
    /// Removed entries still inside `live` (not yet popped from its front).
    pub removed: usize,
    /// Records in the index file (live or not).
    pub idx_records: u64,
    /// The first position never used: kept across rewrites (a removal mark for the position
    /// before it), so that positions are never reused and a moved entry's origin never names
    /// a later message.
    pub next_seq: u64,
    /// The index was written since its last fsync.
    idx_dirty: bool,
    /// The ack log was written since its last fsync.
    ack_dirty: bool,
    /// The files must be written anew from `live` before anything is appended.
    pub rewrite: bool,
}

impl QueueFiles {
    /// A queue with no files yet: the next batch makes them.
    pub(crate) fn new() -> Self {
        QueueFiles {
            files: None,
            idx_buf: Vec::new(),
            ack_buf: Vec::new(),
            live: VecDeque::new(),
            removed: 0,
            idx_records: 0,
            next_seq: 0,
            idx_dirty: false,
            ack_dirty: false,
            rewrite: true,
        }
    }

    /// A recovered queue's files, opened to append after their good records (or, if they
    /// cannot be opened, to be rewritten by the first batch).
    pub(crate) fn recovered(dir: &Path, queue: QueueId) -> Self {
        let mut q = QueueFiles::new();
        if let Ok(files) = open_pair(dir, queue) {
            q.files = Some(files);
            q.rewrite = false;
        }
        q
    }

    /// Whether anything waits to be written or synced.
    pub(crate) fn pending(&self) -> bool {
        self.idx_dirty
            || self.ack_dirty
            || self.rewrite
            || !self.idx_buf.is_empty()
            || !self.ack_buf.is_empty()
    }

    /// Buffers an index record and tracks the entry.
    pub(crate) fn enqueue(&mut self, seq: u64, loc: Location, extra: Extra) {
        let (payload, len) = index_payload(seq, loc, extra);
        record::frame(&mut self.idx_buf, &payload[..len]);
        self.idx_records += 1;
        self.next_seq = self.next_seq.max(seq + 1);
        self.live.push_back(LiveEntry { seq, loc, removed: false, delivered: false, extra });
    }

    /// Buffers an ack log record.
    pub(crate) fn ack(&mut self, kind: u8, seq: u64) {
        record::frame(&mut self.ack_buf, &ack_payload(kind, seq));
    }

    /// Whether the index is mostly dead records and is worth rewriting.
    pub(crate) fn wants_compaction(&self) -> bool {
        (self.live.is_empty() && self.idx_records >= 4096)
            || self.idx_records > 2 * self.live.len() as u64 + 100_000
    }

    /// Writes this batch's records (or the whole queue anew if it must be rewritten); fsyncs
    /// the index if `fsync`, and the ack log too if `acks` (confirms need only the index:
    /// removals and delivered marks are synced every 200 ms, a lost one only brings a message
    /// back). On failure the queue is marked for a rewrite.
    pub(crate) fn flush(
        &mut self,
        io: &Io,
        dir: &Path,
        queue: QueueId,
        fsync: bool,
        acks: bool,
    ) -> Result<(), StoreError> {
        let result = self.try_flush(io, dir, queue, fsync, acks);
        if result.is_err() {
            self.rewrite = true;
        }
        result
    }

    fn try_flush(
        &mut self,
        io: &Io,
        dir: &Path,
        queue: QueueId,
        fsync: bool,
        acks: bool,
    ) -> Result<(), StoreError> {
        if self.rewrite {
            self.idx_buf.clear();
            self.ack_buf.clear();
            return self.write_anew(io, dir, queue);
        }
        let Some((idx, ack)) = &self.files else {
            self.rewrite = true;
            return Ok(());
        };
        for (file, buf, dirty, path) in [
            (idx, &mut self.idx_buf, &mut self.idx_dirty, paths::index(dir, queue)),
            (ack, &mut self.ack_buf, &mut self.ack_dirty, paths::acks(dir, queue)),
        ] {
            if !buf.is_empty() {
                // The buffer is dropped even if the write fails: the rewrite has it all.
                let r = io.append(file, buf);
                buf.clear();
                *dirty = true;
                r.map_err(StoreError::io("appending to", &path))?;
            }
        }
        if fsync && self.idx_dirty {
            self.idx_dirty = false;
            io.sync(idx).map_err(StoreError::io("syncing", &paths::index(dir, queue)))?;
        }
        if acks && self.ack_dirty {
            self.ack_dirty = false;
            io.sync(ack).map_err(StoreError::io("syncing", &paths::acks(dir, queue)))?;
        }
        Ok(())
    }

    /// Writes the index (live entries) and the ack log (their delivered marks) as new files,
    /// fsync'd and renamed over the old ones, then opens them to append.
    fn write_anew(&mut self, io: &Io, dir: &Path, queue: QueueId) -> Result<(), StoreError> {
        self.live.retain(|e| !e.removed);
        self.removed = 0;
        let mut idx = paths::INDEX_MAGIC.to_vec();
        let mut ack = paths::ACKS_MAGIC.to_vec();
        for e in &self.live {
            let (payload, len) = index_payload(e.seq, e.loc, e.extra);
            record::frame(&mut idx, &payload[..len]);
            if e.delivered {
                record::frame(&mut ack, &ack_payload(ACK_DELIVERED, e.seq));
            }
        }
        // The high-water mark of positions survives the rewrite (recovery reads it back).
        if self.next_seq > 0 && self.live.back().is_none_or(|e| e.seq + 1 < self.next_seq) {
            record::frame(&mut ack, &ack_payload(ACK_REMOVED, self.next_seq - 1));
        }
        // The old files are closed first (nothing more goes to them).
        self.files = None;
        // The index goes first: the new index with the old ack log is still right (the old
        // log's removals name positions the new index no longer holds), whereas the old index
        // with a new, emptier ack log would bring removed messages back.
        for (path, data) in [(paths::index(dir, queue), &idx), (paths::acks(dir, queue), &ack)] {
            let tmp = path.with_extension("tmp");
            let written = File::create(&tmp)
                .map_err(StoreError::io("creating", &tmp))
                .and_then(|f| {
                    io.write_at(&f, data, 0).map_err(StoreError::io("writing", &tmp))?;
                    io.sync(&f).map_err(StoreError::io("syncing", &tmp))
                })
                .and_then(|()| {
                    std::fs::rename(&tmp, &path).map_err(StoreError::io("renaming over", &path))
                });
            if written.is_err() {
                // A full disk is not made fuller by a half-written copy.
                let _ = std::fs::remove_file(&tmp);
            }
            written?;
        }
        crate::sync_dir(&dir.join(paths::QUEUES))?;
        self.files = Some(open_pair(dir, queue)?);
        self.idx_records = self.live.len() as u64;
        self.idx_dirty = false;
        self.ack_dirty = false;
        self.rewrite = false;
        Ok(())
    }
}

fn open_pair(dir: &Path, queue: QueueId) -> Result<(File, File), StoreError> {
    let open = |path: &Path| {
        OpenOptions::new().append(true).open(path).map_err(StoreError::io("opening", path))
    };
    Ok((open(&paths::index(dir, queue))?, open(&paths::acks(dir, queue))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_payloads_have_their_documented_layout() {
        let loc = Location { seg: 7, offset: 0x0102, len: 0x33 };
        let (p, n) = index_payload(5, loc, Extra::None);
        assert_eq!(
            p[..n],
            [0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0x33]
        );
        assert_eq!(decode_index(&p[..n]), Some((5, loc, Extra::None)));
        assert_eq!(decode_index(&p[1..n]), None);
        let (p, n) = index_payload(5, loc, Extra::Origin(9, 0x0104));
        assert_eq!(n, 40);
        assert_eq!(p[24..], [0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 1, 4]);
        assert_eq!(decode_index(&p), Some((5, loc, Extra::Origin(9, 0x0104))));
        let (p, n) = index_payload(5, loc, Extra::Due(0x0105));
        assert_eq!((n, &p[24..32]), (32, &[0, 0, 0, 0, 0, 0, 1, 5][..]));
        assert_eq!(decode_index(&p[..n]), Some((5, loc, Extra::Due(0x0105))));
        let a = ack_payload(ACK_REMOVED, 0x0203);
        assert_eq!(a, [1, 0, 0, 0, 0, 0, 0, 2, 3]);
        assert_eq!(decode_ack(&a), Some((ACK_REMOVED, 0x0203)));
    }
}

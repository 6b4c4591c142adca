//! Streams: append-only logs of messages that readers read from any offset (RabbitMQ's stream
//! queues). Each stream has its own directory of segments ([`format`]); the writer thread
//! appends to them with everything else it writes, so a stream publish shares the batch's
//! fsync (group commit), and a record becomes readable ("committed") only once it is on disk:
//! offsets a reader has seen never come back different after a crash.
//!
//! - [`StreamLog`] is the stream's shared state: the offsets given out, committed and
//!   retained, the segments with their sparse indexes, and reads by offset or time
//!   ([`StreamLog::read`], [`StreamLog::offset_at`]), which callers run off the runtime
//!   threads (they read files).
//! - `files`: the writer's side: records buffered, written and fsync'd per batch, segments
//!   rolled at the size limit, retention (whole segments, oldest first, by size and age).
//! - `open`: recovery of a stream's directory at start-up.
//!
//! Retention deletes a segment's files while a reader may be in it: a read opens the file
//! under the segments' lock and holds it open, so a read in progress finishes on the old data;
//! the next read of a reader that was left behind starts at the new first offset.

mod files;
pub mod format;
mod open;

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::BytesMut;

pub(crate) use files::StreamFiles;
use format::Point;

use crate::message::Message;
use crate::{QueueId, StoreError};

/// RabbitMQ's default `x-stream-max-segment-size-bytes` (osiris' 500 MB).
pub const DEFAULT_SEGMENT_MAX: u64 = 500_000_000;

/// A stream's retention and segment size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// `x-max-length-bytes`: the oldest segments go while the stream is larger.
    pub max_bytes: Option<u64>,
    /// `x-max-age` in milliseconds: a segment goes once its newest record is older.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes`: a new segment is started past this size.
    pub segment_max: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig { max_bytes: None, max_age_ms: None, segment_max: DEFAULT_SEGMENT_MAX }
    }
}

/// One message read from a stream.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Its offset.
    pub offset: u64,
    /// When it was written (ms since the Unix epoch).
    pub ts: u64,
    /// The message.
    pub message: Message,
}

/// Where a reader is: the next offset it wants, and (once known) where that record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The next offset to read.
    pub next: u64,
    /// (first offset of the segment, byte position in it) of `next`'s record.
    at: Option<(u64, u64)>,
}

impl Cursor {
    /// A cursor at `offset`.
    pub fn at(offset: u64) -> Cursor {
        Cursor { next: offset, at: None }
    }
}

/// One segment as readers see it (the committed part). Its file is opened by each read (no
/// descriptor is held per segment).
#[derive(Debug)]
pub(crate) struct SegmentView {
    /// Offset of its first record (its name).
    pub first: u64,
    /// Its sparse index.
    pub points: Vec<Point>,
    /// End of its committed records.
    pub end: u64,
    /// Offset and timestamp of its last committed record.
    pub last: Option<(u64, u64)>,
}

/// What [`StreamLog::locate`] found.
enum Located {
    /// (file, segment's first offset, position, committed end, path)
    At(File, u64, u64, u64, PathBuf),
    /// The cursor is before every retained segment, which now start at this offset.
    Before(u64),
}

/// Called with the new committed offset after each batch that committed records.
pub type OnCommit = Box<dyn Fn(u64) + Send + Sync>;

/// A stream's shared state (see the module's documentation).
pub struct StreamLog {
    /// The stream's id (its queue's).
    pub id: QueueId,
    pub(crate) dir: PathBuf,
    /// Retention and segment size: the declare's, changed by policies.
    config: Mutex<StreamConfig>,
    /// The next offset to give out: appends take theirs and send their request under this
    /// lock, so the writer receives them in offset order.
    pub(crate) next: Mutex<u64>,
    /// Every offset below this is on disk and readable.
    committed: AtomicU64,
    /// The first offset retained.
    first: AtomicU64,
    /// The first offset of the last committed chunk.
    last_chunk: AtomicU64,
    pub(crate) segments: RwLock<VecDeque<SegmentView>>,
    on_commit: OnceLock<OnCommit>,
    /// Deleted: nothing more is written.
    pub(crate) dropped: AtomicBool,
}

impl std::fmt::Debug for StreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLog")
            .field("id", &self.id)
            .field("first", &self.first())
            .field("committed", &self.committed())
            .finish_non_exhaustive()
    }
}

/// Reads at least this much at a time.
const READ_MIN: usize = 64 * 1024;

impl StreamLog {
    /// The retention and segment size in force.
    pub fn config(&self) -> StreamConfig {
        *self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the retention and segment size (a policy): retention looks at it within a
    /// second, the segment size at the next roll.
    pub fn set_config(&self, config: StreamConfig) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Calls `f` with the committed offset after each batch that commits records (on the
    /// store's writer thread: keep it short). Set once.
    pub fn on_commit(&self, f: OnCommit) {
        let _ = self.on_commit.set(f);
    }

    /// Every offset below this is on disk and can be read.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The first offset still retained (the stream's start for `first`).
    pub fn first(&self) -> u64 {
        self.first.load(Ordering::Acquire)
    }

    /// The first offset of the last committed chunk (`x-stream-offset: last`).
    pub fn last_chunk(&self) -> u64 {
        self.last_chunk.load(Ordering::Acquire)
    }

    /// The next offset an append gets.
    pub fn next_offset(&self) -> u64 {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of committed records retained (segments, magic included), and their count.
    pub fn size(&self) -> (u64, usize) {
        let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
        (segs.iter().map(|s| s.end).sum(), segs.len())
    }

    /// Committed messages retained.
    pub fn len(&self) -> u64 {
        self.committed().saturating_sub(self.first())
    }

    /// Whether no committed message is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads committed records from `cursor` on, about `max_bytes` of them (at least one if
    /// there is one), and moves the cursor past them. Empty when the cursor is at the
    /// committed end. A cursor behind the retained start moves to it first. Blocking: file
    /// reads.
    pub fn read(
        &self,
        cursor: &mut Cursor,
        max_bytes: usize,
    ) -> Result<Vec<StreamRecord>, StoreError> {
        let mut out = Vec::new();
        let mut want = max_bytes.max(READ_MIN);
        loop {
            let committed = self.committed();
            let first = self.first();
            if cursor.next < first {
                *cursor = Cursor::at(first);
            }
            if cursor.next >= committed {
                return Ok(out);
            }
            let (file, seg_first, pos, end, path) = match self.locate(cursor)? {
                Located::At(file, seg_first, pos, end, path) => (file, seg_first, pos, end, path),
                Located::Before(first) => {
                    // Retention dropped the segment in between: go on from the new start.
                    *cursor = Cursor::at(first);
                    continue;
                }
            };
            if pos >= end {
                // At the end of a segment that is not the last: the next one starts here (at
                // its first offset: there is no gap between segments, but a cursor asked for
                // one that is not there never loops).
                let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
                match segs.iter().find(|s| s.first > seg_first) {
                    Some(s) => {
                        cursor.next = cursor.next.max(s.first);
                        cursor.at = Some((s.first, format::SEGMENT_MAGIC.len() as u64));
                    }
                    None => return Ok(out),
                }
                continue;
            }
            let len = want.min((end - pos) as usize);
            let mut buf = BytesMut::zeroed(len);
            file.read_exact_at(&mut buf, pos).map_err(StoreError::io("reading", &path))?;
            let data = buf.freeze();
            let mut at = 0usize;
            loop {
                match format::parse(&data, at) {
                    Ok(Some(head)) => {
                        if head.offset >= committed {
                            break;
                        }
                        if head.offset >= cursor.next {
                            let message =
                                format::message(&data, at, &head).ok_or_else(|| corrupt(&path))?;
                            out.push(StreamRecord { offset: head.offset, ts: head.ts, message });
                            cursor.next = head.offset + 1;
                        }
                        at += head.len as usize;
                    }
                    Ok(None) if at < data.len() => return Err(corrupt(&path)),
                    Ok(None) => break,
                    Err(need) => {
                        if at == 0 {
                            // One record larger than the read: read it whole.
                            want = need.max(READ_MIN);
                        }
                        break;
                    }
                }
            }
            cursor.at = Some((seg_first, pos + at as u64));
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Where to read `cursor` from: the segment file (opened here, under the segments' lock, so
    /// that retention cannot delete it first: the open file stays readable), its first offset,
    /// the byte position, the segment's committed end, and its path; or, if retention dropped
    /// every segment up to the cursor, the first offset there is now.
    fn locate(&self, cursor: &Cursor) -> Result<Located, StoreError> {
        let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
        let Some(i) = segs.partition_point(|s| s.first <= cursor.next).checked_sub(1) else {
            return Ok(Located::Before(segs.front().map_or(cursor.next, |s| s.first)));
        };
        let s = &segs[i];
        let magic = format::SEGMENT_MAGIC.len() as u64;
        let pos = match cursor.at {
            Some((f, p)) if f == s.first => p,
            _ => {
                let k = s.points.partition_point(|p| p.offset <= cursor.next);
                k.checked_sub(1).map_or(magic, |k| s.points[k].pos)
            }
        };
        let path = format::segment(&self.dir, s.first);
        let file = File::open(&path).map_err(StoreError::io("opening", &path))?;
        Ok(Located::At(file, s.first, pos, s.end, path))
    }

    /// The offset of the first committed record written at or after `ts_ms` (RabbitMQ's
    /// timestamp offsets: a chunk's time); the committed end if there is none. Blocking.
    pub fn offset_at(&self, ts_ms: u64) -> Result<u64, StoreError> {
        let start = {
            let segs = self.segments.read().unwrap_or_else(|p| p.into_inner());
            let Some(s) = segs.iter().find(|s| s.last.is_some_and(|(_, ts)| ts >= ts_ms)) else {
                return Ok(self.committed());
            };
            let k = s.points.partition_point(|p| p.ts < ts_ms);
            match k.checked_sub(1) {
                Some(k) => {
                    Cursor { next: s.points[k].offset, at: Some((s.first, s.points[k].pos)) }
                }
                None => Cursor::at(s.first),
            }
        };
        let mut cursor = start;
        loop {
            let records = self.read(&mut cursor, READ_MIN)?;
            if records.is_empty() {
                return Ok(self.committed());
            }
            if let Some(r) = records.iter().find(|r| r.ts >= ts_ms) {
                return Ok(r.offset);
            }
        }
    }

    /// Records committed: readable up to `committed` (exclusive), the last chunk starting at
    /// `last_chunk`. Called by the writer after the fsync.
    pub(crate) fn commit(&self, committed: u64, last_chunk: u64) {
        self.last_chunk.store(last_chunk, Ordering::Release);
        self.committed.store(committed, Ordering::Release);
        if let Some(f) = self.on_commit.get() {
            f(committed);
        }
    }

    pub(crate) fn set_first(&self, first: u64) {
        self.first.store(first, Ordering::Release);
    }
}

fn corrupt(path: &std::path::Path) -> StoreError {
    StoreError::Corrupt { path: path.to_path_buf(), problem: "damaged stream record".into() }
}

/// The time now, in milliseconds since the Unix epoch (what stream timestamps are).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

impl crate::Store {
    /// Opens stream `id` (recovering its directory, or creating it): its log, which the
    /// writer appends to from now on.
    pub fn open_stream(
        &self,
        id: QueueId,
        config: StreamConfig,
    ) -> Result<Arc<StreamLog>, StoreError> {
        let (log, files) = open::open(&self.dir, id, config)?;
        self.send(crate::writer::Request::OpenStream(Box::new(files)));
        Ok(log)
    }

    /// Appends `message` to the stream: its offset, and the failure epoch at the append (as
    /// [`crate::Stored::epoch`]: a confirm waits for [`crate::Store::sync`] and is a nack if
    /// the epoch moved). The record is readable once committed ([`StreamLog::on_commit`]).
    pub fn stream_append(&self, log: &StreamLog, message: Arc<Message>) -> (u64, u64) {
        let epoch = self.epoch();
        self.shared.unwritten.fetch_add(crate::reader::record_cost(&message), Ordering::Relaxed);
        let mut next = log.next.lock().unwrap_or_else(|p| p.into_inner());
        let offset = *next;
        *next += 1;
        self.send(crate::writer::Request::StreamAppend { stream: log.id, offset, message });
        (offset, epoch)
    }

    /// The stream was deleted: its files go.
    pub fn drop_stream(&self, id: QueueId) {
        self.send(crate::writer::Request::DropStream { stream: id });
    }
}

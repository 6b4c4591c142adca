//! The writer thread's side of a stream: records buffered as their appends arrive, written
//! at the end of the batch at their positions and fsync'd, and only then committed (readable,
//! and the stream's consumers told). A write or fsync that fails keeps the buffer: it is
//! written again, whole and at the same position, by the next batch, so the segment never
//! holds a hole before good records and offsets stay dense. The segment is rolled past its
//! size limit (after the old one is committed), and retention then drops the oldest
//! segments.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

use super::format::{self, POINT_EVERY, Point};
use super::open::create_segment;
use super::{StreamLog, now_ms};
use crate::StoreError;
use crate::io::Io;
use crate::message::Message;

/// Buffered records are written out within a batch in steps of this many bytes.
const WRITE_STEP: usize = 1024 * 1024;

/// Age retention is looked at this often when nothing is written.
const RETENTION_EVERY: Duration = Duration::from_secs(1);

/// A stream as the writer holds it.
pub(crate) struct StreamFiles {
    pub log: Arc<StreamLog>,
    /// The current segment, open for writing, and its sparse index.
    file: File,
    index: Option<File>,
    /// First offset of the current segment.
    seg_first: u64,
    /// End of the last record buffered.
    size: u64,
    /// Bytes from `buf_at` on that are not known to be on disk yet.
    buf: Vec<u8>,
    buf_at: u64,
    /// How much of `buf` was written to the file already (in 1 MiB steps during a batch, as
    /// the message segments are); 0 again after a failure: the whole buffer is written again.
    written: usize,
    /// A step write failed in this batch: no more steps until the flush.
    step_failed: bool,
    /// Points of the buffered records, published with them.
    points: Vec<Point>,
    since_point: u64,
    /// This batch's chunk: its first offset and timestamp.
    chunk: Option<(u64, u64)>,
    /// (offset, timestamp, chunk) of the last record buffered.
    last: Option<(u64, u64, u64)>,
    retention_checked: Instant,
    /// What the buffered records cost in memory ([`crate::reader::record_cost`]): counted in
    /// the store's write backlog until they are on disk, so that publishers are held back
    /// while a failing disk keeps them in memory.
    cost: u64,
}

fn open_append(path: &std::path::Path) -> Option<File> {
    OpenOptions::new().append(true).create(true).open(path).ok()
}

impl StreamFiles {
    /// The writer's side of `log`, whose current segment (`file`, open for writing) starts at
    /// `seg_first` and ends at `size`.
    pub(crate) fn new(
        log: Arc<StreamLog>,
        file: File,
        seg_first: u64,
        size: u64,
        since_point: u64,
    ) -> StreamFiles {
        let index = open_append(&format::index(&log.dir, seg_first));
        StreamFiles {
            log,
            file,
            index,
            seg_first,
            size,
            buf: Vec::new(),
            buf_at: size,
            written: 0,
            step_failed: false,
            points: Vec::new(),
            since_point,
            chunk: None,
            last: None,
            retention_checked: Instant::now(),
            cost: 0,
        }
    }

    /// Whether records wait to be written or synced.
    pub(crate) fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Buffers the record of `message` at `offset` (offsets arrive in order). At the start of
    /// a batch (a chunk), a segment past its size limit is committed and a new one started
    /// first: as RabbitMQ's, a chunk is never split, so even a tiny segment size costs a
    /// segment per batch, not per message.
    pub(crate) fn append(
        &mut self,
        io: &Io,
        backlog: &AtomicU64,
        offset: u64,
        message: &Message,
    ) -> Result<(), StoreError> {
        let mut result = Ok(());
        let magic = format::SEGMENT_MAGIC.len() as u64;
        let estimate = 128 + message.body.len() as u64 + message.properties.len() as u64;
        if self.chunk.is_none()
            && self.size > magic
            && self.size + estimate > self.log.config().segment_max
        {
            result = self.roll(io, backlog, offset);
        }
        self.cost += crate::reader::record_cost(message);
        let (chunk, ts) = *self.chunk.get_or_insert_with(|| (offset, now_ms()));
        let at = self.size;
        let len = format::encode(&mut self.buf, offset, chunk, ts, message);
        if self.since_point >= POINT_EVERY {
            self.points.push(Point { offset, pos: at, ts });
            self.since_point = 0;
        }
        self.since_point += len;
        self.size += len;
        self.last = Some((offset, ts, chunk));
        if !self.step_failed && self.buf.len() - self.written >= WRITE_STEP {
            // Written out as the batch goes (the kernel copies a few large writes much slower
            // than 1 MiB steps); kept until the fsync, for a rewrite after a failure.
            let path = format::segment(&self.log.dir, self.seg_first);
            let at = self.buf_at + self.written as u64;
            match io.write_at(&self.file, &self.buf[self.written..], at) {
                Ok(()) => self.written = self.buf.len(),
                Err(e) => {
                    // No more steps until the flush, which writes it all again once (not at
                    // every append of a batch on a failing disk).
                    self.written = 0;
                    self.step_failed = true;
                    return result.and(Err(StoreError::io("writing", &path)(e)));
                }
            }
        }
        result
    }

    /// Commits what is buffered, then starts a segment at `offset`. If the commit or the new
    /// segment fails, the records go on into the current segment.
    fn roll(&mut self, io: &Io, backlog: &AtomicU64, offset: u64) -> Result<(), StoreError> {
        self.flush(io, backlog)?;
        let (view, file) = create_segment(&self.log.dir, offset)?;
        self.log.segments.write().unwrap_or_else(|p| p.into_inner()).push_back(view);
        self.file = file;
        self.index = open_append(&format::index(&self.log.dir, offset));
        self.seg_first = offset;
        self.size = format::SEGMENT_MAGIC.len() as u64;
        self.buf_at = self.size;
        self.since_point = u64::MAX;
        self.retain();
        Ok(())
    }

    /// Writes the buffer at its position and fsyncs it; then the records are committed. On a
    /// failure the buffer stays, for the next batch to write again.
    pub(crate) fn flush(&mut self, io: &Io, backlog: &AtomicU64) -> Result<(), StoreError> {
        self.chunk = None;
        self.step_failed = false;
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = format::segment(&self.log.dir, self.seg_first);
        let at = self.buf_at + self.written as u64;
        if let Err(e) = io.write_at(&self.file, &self.buf[self.written..], at) {
            self.written = 0;
            return Err(StoreError::io("writing", &path)(e));
        }
        self.written = self.buf.len();
        if let Err(e) = io.sync(&self.file) {
            // The pages may be gone (Linux drops them): all of it is written again.
            self.written = 0;
            return Err(StoreError::io("syncing", &path)(e));
        }
        let Some((last, ts, chunk)) = self.last else { return Ok(()) };
        if let Some(index) = &mut self.index {
            let mut bytes = Vec::with_capacity(self.points.len() * format::POINT_LEN);
            for p in &self.points {
                bytes.extend_from_slice(&p.encode());
            }
            if let Err(e) = index.write_all(&bytes) {
                // Only a hint: recovery scans further instead.
                warn!("writing the sparse index of {}: {e}", path.display());
            }
        }
        {
            let mut segs = self.log.segments.write().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = segs.back_mut().filter(|v| v.first == self.seg_first) {
                v.end = self.size;
                v.points.append(&mut self.points);
                v.last = Some((last, ts));
            }
        }
        self.points.clear();
        self.buf.clear();
        self.written = 0;
        backlog.fetch_sub(std::mem::take(&mut self.cost), Ordering::Relaxed);
        if self.buf.capacity() > 8 * 1024 * 1024 {
            self.buf.shrink_to(1024 * 1024);
        }
        self.buf_at = self.size;
        self.log.commit(last + 1, chunk);
        let config = self.log.config();
        if config.max_age_ms.is_some() || config.max_bytes.is_some() {
            self.retain_if_due();
        }
        Ok(())
    }

    /// Age retention, looked at every [`RETENTION_EVERY`].
    pub(crate) fn retain_if_due(&mut self) {
        if self.retention_checked.elapsed() >= RETENTION_EVERY {
            self.retain();
        }
    }

    /// Drops the oldest segments (never the current one) while the stream is larger than
    /// `max_bytes`, or their newest record is older than `max_age`.
    fn retain(&mut self) {
        self.retention_checked = Instant::now();
        let config = self.log.config();
        if config.max_bytes.is_none() && config.max_age_ms.is_none() {
            return;
        }
        let now = now_ms();
        let mut dropped = Vec::new();
        {
            let mut segs = self.log.segments.write().unwrap_or_else(|p| p.into_inner());
            let mut total: u64 = segs.iter().map(|s| s.end).sum();
            while segs.len() > 1 {
                let old = &segs[0];
                let by_size = config.max_bytes.is_some_and(|m| total > m);
                let by_age = config
                    .max_age_ms
                    .is_some_and(|a| old.last.is_some_and(|(_, ts)| ts.saturating_add(a) < now));
                if !by_size && !by_age {
                    break;
                }
                total -= old.end;
                dropped.extend(segs.pop_front().map(|s| s.first));
            }
            if let Some(front) = segs.front() {
                self.log.set_first(front.first);
            }
        }
        for first in dropped {
            for path in [format::segment(&self.log.dir, first), format::index(&self.log.dir, first)]
            {
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!("removing {}: {e}", path.display());
                }
            }
        }
    }

    /// The stream was deleted: its directory goes.
    pub(crate) fn delete(self, backlog: &AtomicU64) {
        backlog.fetch_sub(self.cost, Ordering::Relaxed);
        self.log.dropped.store(true, Ordering::Release);
        if let Err(e) = std::fs::remove_dir_all(&self.log.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("removing {}: {e}", self.log.dir.display());
        }
    }
}

//! The segment being written: records gathered in a buffer and written at the offsets their
//! callers reserved.
//!
//! Writes are positioned (`pwrite` at the record's reserved offset), never plain appends: a
//! write that fails, wholly or halfway, leaves a gap or a torn record behind, and every later
//! record still lands exactly where its index entry says. Recovery checks records where the
//! index points, so the damage costs only the records that were in the failed write, whose
//! publishes were never confirmed.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::io::Io;
use crate::{StoreError, paths};

/// Past this many buffered bytes the buffer is written out within a batch.
const BUFFER_MAX: usize = 1024 * 1024;

/// The current segment.
pub(crate) struct Segment {
    /// Its number.
    pub n: u32,
    /// Opened (created) at the first write: a run that appends nothing leaves no empty file.
    file: Option<File>,
    /// Bytes not yet written, which start at file offset `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    /// The end of the last record handled (written or not).
    pub size: u64,
    /// Written since the last fsync.
    pub dirty: bool,
}

impl Segment {
    /// A new, empty segment `n` (its magic is the first thing written).
    pub(crate) fn new(n: u32) -> Self {
        let magic = paths::SEGMENT_MAGIC;
        Segment {
            n,
            file: None,
            buf: magic.to_vec(),
            buf_at: 0,
            size: magic.len() as u64,
            dirty: false,
        }
    }

    /// Buffers one record (`parts` make its bytes) that starts at `offset`; writes the buffer
    /// out when it is large.
    pub(crate) fn push(
        &mut self,
        offset: u64,
        len: u64,
        parts: &[&[u8]],
        io: &Io,
        dir: &Path,
    ) -> Result<(), StoreError> {
        debug_assert_eq!(offset, self.size, "appends arrive in reservation order");
        if self.buf.is_empty() {
            self.buf_at = offset;
        }
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.size = offset + len;
        if self.buf.len() >= BUFFER_MAX { self.write_out(io, dir) } else { Ok(()) }
    }

    /// Writes the buffer at its offset. On failure the bytes are dropped all the same: the
    /// next records go to their own offsets.
    pub(crate) fn write_out(&mut self, io: &Io, dir: &Path) -> Result<(), StoreError> {
        // Nothing, or only the magic of a segment no record went to yet (no empty files).
        if self.buf.is_empty() || self.size == paths::SEGMENT_MAGIC.len() as u64 {
            return Ok(());
        }
        let path = paths::segment(dir, self.n);
        let result = Self::open(&mut self.file, &path).and_then(|f| {
            io.write_at(f, &self.buf, self.buf_at).map_err(StoreError::io("writing", &path))
        });
        self.buf_at += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > 4 * BUFFER_MAX {
            self.buf.shrink_to(BUFFER_MAX);
        }
        self.dirty = true;
        result
    }

    fn open<'f>(file: &'f mut Option<File>, path: &Path) -> Result<&'f File, StoreError> {
        if file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(StoreError::io("creating", path))?;
            *file = Some(f);
        }
        file.as_ref().ok_or_else(|| StoreError::Corrupt {
            path: path.to_path_buf(),
            problem: "segment file vanished".into(),
        })
    }

    /// fsyncs what was written.
    pub(crate) fn sync(&mut self, io: &Io, dir: &Path) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        match &self.file {
            Some(f) => io.sync(f).map_err(StoreError::io("syncing", &paths::segment(dir, self.n))),
            None => Ok(()),
        }
    }
}

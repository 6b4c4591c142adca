//! Reading messages back from segments, for queues that keep only an index entry in memory.
//!
//! Messages appended but not yet written out by the writer thread are served from the
//! `pending` map (the writer removes them once they are in the file), so a read never races the
//! writer. Adjacent records are fetched with one positioned read: a draining consumer reads
//! ahead instead of paying one system call per message.

use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::message::Message;
use crate::{Location, StoreError, paths};

/// State the store's callers and its writer thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    /// Appended messages the writer has not written out yet, by (segment, offset).
    pub pending: Mutex<HashMap<(u32, u64), Arc<Message>>>,
    /// Open segment files for reading.
    pub files: Mutex<HashMap<u32, Arc<File>>>,
    /// The failure epoch (see the writer's "Faults").
    pub epoch: AtomicU64,
    /// Memory held by records (stored or paged out) the writer has not taken yet
    /// ([`record_cost`]).
    pub unwritten: AtomicU64,
}

/// What a message waiting for the writer costs in memory: its body and about as much again as
/// its headers, request and map entry take.
pub(crate) fn record_cost(m: &Message) -> u64 {
    m.body.len() as u64 + 256
}

impl Shared {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Shared {
            dir,
            pending: Mutex::default(),
            files: Mutex::default(),
            epoch: AtomicU64::new(0),
            unwritten: AtomicU64::new(0),
        }
    }

    /// Segment `seg` for reading; `None` if it does not exist.
    fn file(&self, seg: u32) -> Result<Option<Arc<File>>, StoreError> {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = files.get(&seg) {
            return Ok(Some(f.clone()));
        }
        let path = paths::segment(&self.dir, seg);
        match File::open(&path) {
            Ok(f) => {
                let f = Arc::new(f);
                files.insert(seg, f.clone());
                Ok(Some(f))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("opening for reading", &path)(e)),
        }
    }

    /// Forgets a deleted segment's read handle.
    pub(crate) fn forget(&self, seg: u32) {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).remove(&seg);
    }

    /// Reads the messages at `locs` (in any order), coalescing adjacent records into one
    /// read. `None` for a record that is not there (past the end of its file, or a missing
    /// file) or fails its CRC: a write that failed, whose publish was nacked. An error when
    /// the disk could not be read: nothing is known about those records.
    pub(crate) fn read_many(&self, locs: &[Location]) -> Result<Vec<Option<Message>>, StoreError> {
        let mut out: Vec<Option<Message>> = vec![None; locs.len()];
        // Records the writer has not written out yet come from memory; look them all up under
        // one lock, so that a run read from the file never reaches past what is in it.
        let mut in_file = vec![true; locs.len()];
        {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (k, loc) in locs.iter().enumerate() {
                if let Some(m) = pending.get(&(loc.seg, loc.offset)) {
                    out[k] = Some((**m).clone());
                    in_file[k] = false;
                }
            }
        }
        let mut i = 0;
        while i < locs.len() {
            if !in_file[i] {
                i += 1;
                continue;
            }
            // A run of records that follow each other in one segment.
            let mut j = i + 1;
            while j < locs.len()
                && in_file[j]
                && locs[j].seg == locs[i].seg
                && locs[j].offset == locs[j - 1].offset + u64::from(locs[j - 1].len)
                && j - i < 256
            {
                j += 1;
            }
            let start = locs[i].offset;
            let end = locs[j - 1].offset + u64::from(locs[j - 1].len);
            let mut buf = vec![0u8; (end - start) as usize];
            let Some(file) = self.file(locs[i].seg)? else {
                i = j;
                continue;
            };
            match file.read_exact_at(&mut buf, start) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    // A failed write at the end of the segment: read what is there one by one.
                    if j - i > 1 {
                        for k in i..j {
                            out[k] = self.read_many(&locs[k..=k])?.pop().flatten();
                        }
                    }
                    i = j;
                    continue;
                }
                Err(e) => {
                    return Err(
                        StoreError::io("reading", &paths::segment(&self.dir, locs[i].seg))(e),
                    );
                }
            }
            let data = Bytes::from(buf);
            for k in i..j {
                let from = (locs[k].offset - start) as usize;
                let raw = data.slice(from..from + locs[k].len as usize);
                out[k] = crate::record::check(&raw)
                    .and_then(|p| Message::decode(&raw.slice_ref(p)))
                    .map(|(_, m)| m);
            }
            i = j;
        }
        Ok(out)
    }
}

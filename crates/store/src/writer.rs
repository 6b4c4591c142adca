//! The writer thread: the only code that writes message segments, queue indexes and ack logs.
//!
//! Requests arrive in one FIFO channel from every connection. The thread takes all that is
//! waiting, writes it through buffered files, then — if anyone is waiting for durability, or
//! 200 ms have passed with unsynced data — fsyncs the files it touched once, and only then
//! runs the completions (publisher confirms, tx.commit-ok). Everything that arrived during one
//! fsync shares the next: group commit, so confirmed throughput follows the disk's bandwidth
//! rather than its fsync latency.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::message::Message;
use crate::reader::Shared;
use crate::{Location, QueueId, StoreError, paths};

/// Runs after the request it came with is durable.
pub type Done = Box<dyn FnOnce() + Send>;

/// What the writer is asked to do, in order.
pub(crate) enum Request {
    /// Write a message once at `loc` (reserved by the caller, in request order), its encoded
    /// head then its body; `enqueues` index entries will refer to it.
    Append { id: u64, head: bytes::Bytes, message: Arc<Message>, loc: Location, enqueues: u32 },
    /// Queue `queue` holds message `id` at position `seq`.
    Enqueue { queue: QueueId, seq: u64, id: u64 },
    /// One promised enqueue of message `id` will not come (its queue went away).
    Skip { id: u64 },
    /// Position `seq` of `queue` is gone (acked, rejected, purged).
    Remove { queue: QueueId, seq: u64 },
    /// Position `seq` of `queue` was delivered (it comes back redelivered after a restart).
    Delivered { queue: QueueId, seq: u64 },
    /// The queue was deleted: its files go, its messages are released.
    DropQueue { queue: QueueId },
    /// Run `Done` once everything before it is on disk.
    Sync(Done),
    /// Sync, then stop.
    Shutdown(Done),
}

/// A live index entry as the writer tracks it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveEntry {
    pub seq: u64,
    pub loc: Location,
    pub removed: bool,
    pub delivered: bool,
}

/// One durable queue's files and live entries.
pub(crate) struct QueueFiles {
    pub idx: BufWriter<File>,
    pub ack: BufWriter<File>,
    pub live: VecDeque<LiveEntry>,
    /// Removed entries still inside `live` (not yet popped from its front).
    pub removed: usize,
    /// Records in the index file (live or not).
    pub idx_records: u64,
    pub dirty: bool,
}

/// Segment record kinds in the ack log.
pub(crate) const ACK_REMOVED: u8 = 1;
pub(crate) const ACK_DELIVERED: u8 = 2;

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub dir: PathBuf,
    pub seg: u32,
    pub seg_file: BufWriter<File>,
    pub seg_size: u64,
    pub seg_dirty: bool,
    /// Live index entries per segment; a segment at zero (other than the current) is deleted.
    pub refs: HashMap<u32, u64>,
    /// Appended messages still waiting for some of their index entries.
    pub recent: HashMap<u64, (Location, u32)>,
    pub queues: HashMap<QueueId, QueueFiles>,
    pub done: Vec<Done>,
    pub last_sync: Instant,
    /// Shared with readers: pending appends and read handles.
    pub shared: Arc<Shared>,
    /// Records written in this batch, to drop from `shared.pending` once flushed.
    pub written: Vec<(u32, u64)>,
}

fn open_append(path: &Path, magic: &[u8; 8]) -> Result<BufWriter<File>, StoreError> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(StoreError::io("opening", path))?;
    if f.metadata().map_err(StoreError::io("reading metadata of", path))?.len() == 0 {
        f.write_all(magic).map_err(StoreError::io("writing", path))?;
    }
    Ok(BufWriter::with_capacity(64 * 1024, f))
}

pub(crate) fn open_queue_files(dir: &Path, queue: QueueId) -> Result<QueueFiles, StoreError> {
    Ok(QueueFiles {
        idx: open_append(&paths::index(dir, queue), paths::INDEX_MAGIC)?,
        ack: open_append(&paths::acks(dir, queue), paths::ACKS_MAGIC)?,
        live: VecDeque::new(),
        removed: 0,
        idx_records: 0,
        dirty: false,
    })
}

pub(crate) fn new_segment(dir: &Path, seg: u32) -> Result<BufWriter<File>, StoreError> {
    open_append(&paths::segment(dir, seg), paths::SEGMENT_MAGIC)
}

impl Writer {
    /// The thread's loop: batches, writes, syncs, completes.
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync_now(true);
                    return;
                }
            };
            let mut must_sync = false;
            let mut shutdown = false;
            let mut next = first;
            let mut handled = 0usize;
            while let Some(req) = next {
                match req {
                    Request::Sync(done) => {
                        self.done.push(done);
                        must_sync = true;
                    }
                    Request::Shutdown(done) => {
                        self.done.push(done);
                        must_sync = true;
                        shutdown = true;
                    }
                    other => {
                        if let Err(e) = self.handle(other) {
                            error!("store write failed: {e}");
                        }
                    }
                }
                handled += 1;
                // Bound a batch so completions are not held back indefinitely under load.
                next = if handled < 65536 { rx.try_recv().ok() } else { None };
            }
            // Every batch reaches the OS (a killed process loses nothing written); fsync when
            // someone waits for it, or every 200 ms while there is unsynced data.
            let stale = self.last_sync.elapsed() >= Duration::from_millis(200);
            self.sync_now(must_sync || (stale && self.is_dirty()));
            if shutdown {
                return;
            }
        }
    }

    fn is_dirty(&self) -> bool {
        self.seg_dirty || self.queues.values().any(|q| q.dirty)
    }

    /// Flushes buffers, fsyncs what changed (if `fsync`), then runs completions.
    fn sync_now(&mut self, fsync: bool) {
        let mut failed = false;
        if let Err(e) = self.seg_file.flush() {
            error!("flushing segment: {e}");
            failed = true;
        } else if !self.written.is_empty() {
            // In the file now: readers find them there.
            let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            for key in self.written.drain(..) {
                pending.remove(&key);
            }
        }
        if fsync && self.seg_dirty {
            if let Err(e) = self.seg_file.get_ref().sync_data() {
                error!("fsync of segment: {e}");
                failed = true;
            }
            self.seg_dirty = false;
        }
        for q in self.queues.values_mut() {
            if !q.dirty {
                continue;
            }
            let ok = q.idx.flush().is_ok() && q.ack.flush().is_ok();
            let synced = !fsync
                || (q.idx.get_ref().sync_data().is_ok() && q.ack.get_ref().sync_data().is_ok());
            if !(ok && synced) {
                error!("flushing a queue index failed");
                failed = true;
            }
            if fsync {
                q.dirty = false;
            }
        }
        if fsync {
            self.last_sync = Instant::now();
        }
        if failed {
            // Never confirm what may not be on disk: drop the completions (publishers see no
            // confirm rather than a false one).
            warn!("not confirming {} waiting publish(es) after a failed write", self.done.len());
            self.done.clear();
            return;
        }
        for done in self.done.drain(..) {
            done();
        }
    }

    fn handle(&mut self, req: Request) -> Result<(), StoreError> {
        match req {
            Request::Append { id, head, message, loc, enqueues } => {
                self.append(id, &head, &message, loc, enqueues)
            }
            Request::Enqueue { queue, seq, id } => self.enqueue(queue, seq, id),
            Request::Skip { id } => {
                self.release_recent(id);
                Ok(())
            }
            Request::Remove { queue, seq } => self.remove(queue, seq),
            Request::Delivered { queue, seq } => self.delivered(queue, seq),
            Request::DropQueue { queue } => self.drop_queue(queue),
            Request::Sync(_) | Request::Shutdown(_) => Ok(()),
        }
    }

    fn append(
        &mut self,
        id: u64,
        head: &[u8],
        message: &Message,
        loc: Location,
        enqueues: u32,
    ) -> Result<(), StoreError> {
        if loc.seg != self.seg {
            self.roll_to(loc.seg)?;
        }
        debug_assert_eq!(loc.offset, self.seg_size, "appends arrive in reservation order");
        let payload_len = head.len() + message.body.len();
        let mut crc = crc32fast::Hasher::new();
        crc.update(head);
        crc.update(&message.body);
        let path = || paths::segment(&self.dir, self.seg);
        let w = &mut self.seg_file;
        let result = w
            .write_all(&(payload_len as u32).to_be_bytes())
            .and_then(|_| w.write_all(&crc.finalize().to_be_bytes()))
            .and_then(|_| w.write_all(head))
            .and_then(|_| w.write_all(&message.body));
        result.map_err(StoreError::io("appending to", &path()))?;
        self.seg_size += u64::from(loc.len);
        self.seg_dirty = true;
        self.written.push((loc.seg, loc.offset));
        self.recent.insert(id, (loc, enqueues));
        Ok(())
    }

    /// Moves on to segment `seg`; the old one is synced, and deleted if nothing refers to it.
    fn roll_to(&mut self, seg: u32) -> Result<(), StoreError> {
        let old = self.seg;
        let old_path = paths::segment(&self.dir, old);
        self.seg_file.flush().map_err(StoreError::io("flushing", &old_path))?;
        self.seg_file.get_ref().sync_data().map_err(StoreError::io("syncing", &old_path))?;
        {
            let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            for key in self.written.drain(..) {
                pending.remove(&key);
            }
        }
        self.seg = seg;
        self.seg_file = new_segment(&self.dir, self.seg)?;
        self.seg_size = paths::SEGMENT_MAGIC.len() as u64;
        self.seg_dirty = true;
        if self.refs.get(&old).copied().unwrap_or(0) == 0
            && !self.recent.values().any(|(l, _)| l.seg == old)
        {
            self.delete_segment(old);
        }
        Ok(())
    }

    fn delete_segment(&mut self, seg: u32) {
        self.refs.remove(&seg);
        self.shared.forget(seg);
        let path = paths::segment(&self.dir, seg);
        if let Err(e) = std::fs::remove_file(&path) {
            warn!("removing {}: {e}", path.display());
        }
    }

    fn release_recent(&mut self, id: u64) -> Option<Location> {
        let entry = self.recent.get_mut(&id)?;
        let loc = entry.0;
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            self.recent.remove(&id);
            if loc.seg != self.seg && self.refs.get(&loc.seg).copied().unwrap_or(0) == 0 {
                self.delete_segment(loc.seg);
            }
        }
        Some(loc)
    }

    fn queue(&mut self, queue: QueueId) -> Result<&mut QueueFiles, StoreError> {
        if !self.queues.contains_key(&queue) {
            let files = open_queue_files(&self.dir, queue)?;
            self.queues.insert(queue, files);
        }
        self.queues.get_mut(&queue).ok_or_else(|| StoreError::Corrupt {
            path: paths::index(&self.dir, queue),
            problem: "queue files vanished".into(),
        })
    }

    fn enqueue(&mut self, queue: QueueId, seq: u64, id: u64) -> Result<(), StoreError> {
        let Some(loc) = self.recent.get(&id).map(|e| e.0) else {
            error!(queue, seq, id, "enqueue of a message the store never saw");
            return Ok(());
        };
        let dir = self.dir.clone();
        let q = self.queue(queue)?;
        let mut payload = [0u8; 24];
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        payload[8..12].copy_from_slice(&loc.seg.to_be_bytes());
        payload[12..20].copy_from_slice(&loc.offset.to_be_bytes());
        payload[20..24].copy_from_slice(&loc.len.to_be_bytes());
        crate::record::write(&mut q.idx, &payload)
            .map_err(StoreError::io("appending to", &paths::index(&dir, queue)))?;
        q.idx_records += 1;
        q.live.push_back(LiveEntry { seq, loc, removed: false, delivered: false });
        q.dirty = true;
        *self.refs.entry(loc.seg).or_insert(0) += 1;
        self.release_recent(id);
        Ok(())
    }

    fn write_ack(
        dir: &Path,
        queue: QueueId,
        q: &mut QueueFiles,
        kind: u8,
        seq: u64,
    ) -> Result<(), StoreError> {
        let mut payload = [0u8; 9];
        payload[0] = kind;
        payload[1..].copy_from_slice(&seq.to_be_bytes());
        crate::record::write(&mut q.ack, &payload)
            .map_err(StoreError::io("appending to", &paths::acks(dir, queue)))?;
        q.dirty = true;
        Ok(())
    }

    fn remove(&mut self, queue: QueueId, seq: u64) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let Some(q) = self.queues.get_mut(&queue) else {
            return Ok(());
        };
        let Ok(i) = q.live.binary_search_by_key(&seq, |e| e.seq) else {
            return Ok(());
        };
        if q.live[i].removed {
            return Ok(());
        }
        q.live[i].removed = true;
        q.removed += 1;
        let seg = q.live[i].loc.seg;
        Self::write_ack(&dir, queue, q, ACK_REMOVED, seq)?;
        while q.live.front().is_some_and(|e| e.removed) {
            q.live.pop_front();
            q.removed -= 1;
        }
        let compact = (q.live.is_empty() && q.idx_records >= 4096)
            || q.idx_records > 2 * q.live.len() as u64 + 100_000;
        if compact {
            self.compact(queue)?;
        }
        let refs = self.refs.entry(seg).or_insert(1);
        *refs = refs.saturating_sub(1);
        if *refs == 0 && seg != self.seg && !self.recent.values().any(|(l, _)| l.seg == seg) {
            self.delete_segment(seg);
        }
        Ok(())
    }

    fn delivered(&mut self, queue: QueueId, seq: u64) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let Some(q) = self.queues.get_mut(&queue) else {
            return Ok(());
        };
        let Ok(i) = q.live.binary_search_by_key(&seq, |e| e.seq) else {
            return Ok(());
        };
        if q.live[i].delivered || q.live[i].removed {
            return Ok(());
        }
        q.live[i].delivered = true;
        Self::write_ack(&dir, queue, q, ACK_DELIVERED, seq)
    }

    /// Rewrites a queue's index with only its live entries and starts an empty ack log
    /// (delivered marks of live entries written again). New files are synced and renamed over
    /// the old ones; a crash in between leaves the old pair, which is still valid.
    fn compact(&mut self, queue: QueueId) -> Result<(), StoreError> {
        let Some(q) = self.queues.get_mut(&queue) else {
            return Ok(());
        };
        let idx_path = paths::index(&self.dir, queue);
        let ack_path = paths::acks(&self.dir, queue);
        let mut idx = paths::INDEX_MAGIC.to_vec();
        let mut ack = paths::ACKS_MAGIC.to_vec();
        let mut live = 0u64;
        for e in q.live.iter().filter(|e| !e.removed) {
            let mut p = [0u8; 24];
            p[..8].copy_from_slice(&e.seq.to_be_bytes());
            p[8..12].copy_from_slice(&e.loc.seg.to_be_bytes());
            p[12..20].copy_from_slice(&e.loc.offset.to_be_bytes());
            p[20..24].copy_from_slice(&e.loc.len.to_be_bytes());
            crate::record::frame(&mut idx, &p);
            if e.delivered {
                let mut a = [ACK_DELIVERED; 9];
                a[1..].copy_from_slice(&e.seq.to_be_bytes());
                crate::record::frame(&mut ack, &a);
            }
            live += 1;
        }
        q.idx.flush().map_err(StoreError::io("flushing", &idx_path))?;
        q.ack.flush().map_err(StoreError::io("flushing", &ack_path))?;
        // The index goes first: the new index with the old ack log is still right (the old
        // log's removals name positions the new index no longer holds), whereas the old index
        // with a new, emptier ack log would bring removed messages back.
        for (path, data) in [(&idx_path, &idx), (&ack_path, &ack)] {
            let tmp = path.with_extension("tmp");
            let mut f = File::create(&tmp).map_err(StoreError::io("creating", &tmp))?;
            f.write_all(data).map_err(StoreError::io("writing", &tmp))?;
            f.sync_all().map_err(StoreError::io("syncing", &tmp))?;
            std::fs::rename(&tmp, path).map_err(StoreError::io("renaming over", path))?;
        }
        crate::sync_dir(&self.dir.join(paths::QUEUES))?;
        let mut files = open_queue_files(&self.dir, queue)?;
        files.live = std::mem::take(&mut q.live).into_iter().filter(|e| !e.removed).collect();
        files.idx_records = live;
        *q = files;
        Ok(())
    }

    fn drop_queue(&mut self, queue: QueueId) -> Result<(), StoreError> {
        let Some(q) = self.queues.remove(&queue) else {
            return Ok(());
        };
        for e in q.live.iter().filter(|e| !e.removed) {
            let refs = self.refs.entry(e.loc.seg).or_insert(1);
            *refs = refs.saturating_sub(1);
        }
        drop(q);
        for path in [paths::index(&self.dir, queue), paths::acks(&self.dir, queue)] {
            if let Err(e) = std::fs::remove_file(&path) {
                warn!("removing {}: {e}", path.display());
            }
        }
        let empty: Vec<u32> = self
            .refs
            .iter()
            .filter(|(seg, n)| **n == 0 && **seg != self.seg)
            .map(|(seg, _)| *seg)
            .collect();
        for seg in empty {
            if !self.recent.values().any(|(l, _)| l.seg == seg) {
                self.delete_segment(seg);
            }
        }
        Ok(())
    }
}

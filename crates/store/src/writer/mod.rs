//! The writer thread: the only code that writes message segments, queue indexes and ack logs.
//!
//! Requests arrive in one FIFO channel from every connection. The thread takes all that is
//! waiting and applies it to its in-memory state (live entries, reference counts) and to
//! per-file buffers; at the end of the batch it writes the buffers out, then — if anyone is
//! waiting for durability, or 200 ms have passed with unsynced data — fsyncs the files it
//! touched once, and only then runs the completions (publisher confirms, tx.commit-ok).
//! Everything that arrived during one fsync shares the next: group commit, so confirmed
//! throughput follows the disk's bandwidth rather than its fsync latency.
//!
//! # Faults
//! A failed write or fsync advances the store's *failure epoch* before any later completion
//! runs. A publish remembers the epoch it was appended in ([`crate::Stored::epoch`]); when its
//! completion comes, a newer epoch means that some write since may have lost it, and it is
//! nacked instead of confirmed. A later batch's success can therefore never confirm what an
//! earlier batch failed to write. Segment records are written at their reserved offsets, and a
//! queue file that failed is rewritten whole before anything more is appended to it (see
//! `segment` and `queue`), so a failure never leaves damage that recovery would mistake for the
//! end of the good data.

mod queue;
mod segment;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::io::Io;
use crate::message::Message;
use crate::reader::Shared;
use crate::{Location, QueueId, StoreError, paths};
pub(crate) use queue::{
    ACK_DELIVERED, ACK_REMOVED, Extra, LiveEntry, QueueFiles, decode_ack, decode_index,
};
pub(crate) use segment::Segment;

/// How often unsynced data (and ack logs) are fsync'd when nobody waits for it.
const SYNC_EVERY: Duration = Duration::from_millis(200);

/// Runs after the request it came with is durable — or has failed: see the module's
/// "Faults" on how the failure epoch tells the two apart.
pub type Done = Box<dyn FnOnce() + Send>;

/// What the writer is asked to do, in order.
pub(crate) enum Request {
    /// Write a message once at `loc` (reserved by the caller, in request order), its encoded
    /// head then its body; `enqueues` index entries will refer to it.
    Append { id: u64, head: bytes::Bytes, message: Arc<Message>, loc: Location, enqueues: u32 },
    /// Write a paged-out message at `loc` (see [`crate::Store::page_out`]): no index entry
    /// will name it; it keeps its segment until [`Request::Unpage`].
    Page { head: bytes::Bytes, message: Arc<Message>, loc: Location },
    /// The paged-out messages at `locs` are no longer needed.
    Unpage { locs: Vec<Location> },
    /// Queue `queue` holds message `id` at position `seq`; moved there from an origin, if
    /// `extra` names one (which is removed once this entry is on disk: see
    /// [`crate::Store::enqueue_moved`]), or due at a time.
    Enqueue { queue: QueueId, seq: u64, id: u64, extra: Extra },
    /// One promised enqueue of message `id` will not come (its queue went away).
    Skip { id: u64 },
    /// Position `seq` of `queue` is gone (acked, rejected, purged).
    Remove { queue: QueueId, seq: u64 },
    /// Position `seq` of `queue` was delivered (it comes back redelivered after a restart).
    Delivered { queue: QueueId, seq: u64 },
    /// The queue was deleted: its files go, its messages are released.
    DropQueue { queue: QueueId },
    /// A stream opened: the writer appends to it from now on.
    OpenStream(Box<crate::stream::StreamFiles>),
    /// Append `message` to stream `stream` at `offset` (offsets of one stream arrive in order).
    StreamAppend { stream: QueueId, offset: u64, message: Arc<Message> },
    /// The stream was deleted.
    DropStream { stream: QueueId },
    /// Run `Done` once everything before it is on disk.
    Sync(Done),
    /// Sync, then stop.
    Shutdown(Done),
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    pub dir: std::path::PathBuf,
    pub io: Io,
    /// The segment being written.
    pub seg: Segment,
    /// Live index entries and paged-out messages per segment; a segment at zero (other than
    /// the current) is deleted.
    pub refs: HashMap<u32, u64>,
    /// Appended messages still waiting for some of their index entries.
    /// (where, enqueues still to come, the failure epoch when it was written).
    pub recent: HashMap<u64, (Location, u32, u64)>,
    pub queues: HashMap<QueueId, QueueFiles>,
    /// Open streams.
    pub streams: HashMap<QueueId, crate::stream::StreamFiles>,
    pub done: Vec<Done>,
    pub last_sync: Instant,
    /// Shared with readers: pending appends, read handles, the failure epoch.
    pub shared: Arc<Shared>,
    /// Records written in this batch, to drop from `shared.pending` once flushed.
    pub written: Vec<(u32, u64)>,
    /// Paged-out records written but not yet fsync'd: readers keep getting them from memory
    /// (`shared.pending`) until a batch fsyncs without a failure, and for good if one fails
    /// (a transient message has no other copy).
    pub pages: Vec<(u32, u64)>,
    /// Something failed in this batch: the epoch advances before completions run.
    pub failed: bool,
    /// When the ack logs were last fsync'd (they are not on every confirm's sync).
    pub last_ack_sync: Instant,
    /// Entries moved elsewhere (dead-lettered) whose removal waits until the index entries
    /// that moved them are fsync'd: their removal is the move's commit. With the failure epoch
    /// when the copy's record was written: a move is committed only if no write failed since.
    pub moving: Vec<(QueueId, u64, u64)>,
    /// Failures not logged yet (the log is kept to a line every few seconds).
    pub unlogged: u64,
    pub last_log: Option<Instant>,
}

impl Writer {
    /// The thread's loop: batches, writes, syncs, completes.
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.sync_now(true, true);
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
                    Request::StreamAppend { stream, offset, message } => {
                        // Stream records are committed (readable) only once fsync'd; they
                        // stay in the write backlog until then.
                        must_sync = true;
                        match self.streams.get_mut(&stream) {
                            Some(s) => {
                                let backlog = &self.shared.unwritten;
                                // Its cost stays in the backlog until the stream's flush.
                                if let Err(e) = s.append(&self.io, backlog, offset, &message) {
                                    self.fail(&e);
                                }
                            }
                            None => self.taken(&message),
                        }
                    }
                    other => {
                        if let Err(e) = self.handle(other) {
                            self.fail(&e);
                        }
                    }
                }
                handled += 1;
                // Bound a batch so completions are not held back indefinitely under load.
                next = if handled < 65536 { rx.try_recv().ok() } else { None };
            }
            // Every batch reaches the OS (a killed process loses nothing written); fsync when
            // someone waits for it, or every 200 ms while there is unsynced data (or a queue
            // waits to be rewritten after a failure).
            let stale = self.last_sync.elapsed() >= SYNC_EVERY;
            self.sync_now(must_sync || (stale && self.is_dirty()), shutdown);
            if shutdown {
                return;
            }
        }
    }

    fn is_dirty(&self) -> bool {
        self.seg.dirty
            || self.queues.values().any(QueueFiles::pending)
            || self.streams.values().any(crate::stream::StreamFiles::pending)
    }

    /// Notes a failure: the batch's completions will see a new epoch. Logged at most every
    /// 5 s, with the count of failures in between.
    fn fail(&mut self, e: &StoreError) {
        self.failed = true;
        self.unlogged += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            error!(
                "store write failed ({} failure(s) since the last report): {e}; publishes \
                 waiting for it are nacked",
                self.unlogged
            );
            self.unlogged = 0;
            self.last_log = Some(Instant::now());
        }
    }

    /// Writes the batch out, fsyncs what changed (if `fsync`; ack logs only every
    /// [`SYNC_EVERY`], or if `all`), advances the failure epoch if anything failed, then runs
    /// completions.
    fn sync_now(&mut self, fsync: bool, all: bool) {
        let acks = fsync && (all || self.last_ack_sync.elapsed() >= SYNC_EVERY);
        if let Err(e) = self.seg.write_out(&self.io, &self.dir) {
            self.fail(&e);
        }
        if !self.written.is_empty() {
            // In the file now (or failed, and nacked): readers look there.
            let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            for key in self.written.drain(..) {
                pending.remove(&key);
            }
        }
        if fsync && let Err(e) = self.seg.sync(&self.io, &self.dir) {
            self.fail(&e);
        }
        // Streams first: a message dead-lettered into a stream has its source's removal
        // written only after its stream record is on disk (and not while the stream's writes
        // fail).
        if self.flush_streams(fsync) {
            self.flush_queues(fsync, acks);
        }
        if fsync {
            self.last_sync = Instant::now();
        }
        if acks {
            self.last_ack_sync = Instant::now();
        }
        if self.failed {
            // Paged-out records written since the last good fsync may be torn or gone: they
            // stay in memory until they are unpaged.
            self.pages.clear();
        } else if fsync && !self.pages.is_empty() {
            let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            for key in self.pages.drain(..) {
                pending.remove(&key);
            }
        }
        if std::mem::take(&mut self.failed) {
            // Before any completion runs: what waited for this batch is nacked.
            self.shared.epoch.fetch_add(1, Ordering::Release);
        } else if fsync && !self.moving.is_empty() {
            self.commit_moves();
        }
        for done in self.done.drain(..) {
            done();
        }
    }

    fn handle(&mut self, req: Request) -> Result<(), StoreError> {
        match req {
            Request::Append { id, head, message, loc, enqueues } => {
                let written = self.append(id, &head, &message, loc, enqueues);
                self.taken(&message);
                written
            }
            Request::Page { head, message, loc } => {
                *self.refs.entry(loc.seg).or_insert(0) += 1;
                self.pages.push((loc.seg, loc.offset));
                let written = self.write_record(&head, &message, loc);
                self.taken(&message);
                written
            }
            Request::Unpage { locs } => {
                self.unpage(&locs);
                Ok(())
            }
            Request::Enqueue { queue, seq, id, extra } => {
                let written = self.recent.get(&id).map(|e| e.2);
                self.enqueue(queue, seq, id, extra);
                if let (Extra::Origin(from, at), Some(epoch)) = (extra, written) {
                    self.moving.push((from, at, epoch));
                }
                Ok(())
            }
            Request::Skip { id } => {
                self.release_recent(id);
                Ok(())
            }
            Request::Remove { queue, seq } => {
                self.remove(queue, seq);
                Ok(())
            }
            Request::Delivered { queue, seq } => {
                self.delivered(queue, seq);
                Ok(())
            }
            Request::DropQueue { queue } => {
                self.drop_queue(queue);
                Ok(())
            }
            Request::OpenStream(files) => {
                self.streams.insert(files.log.id, *files);
                Ok(())
            }
            Request::DropStream { stream } => {
                if let Some(s) = self.streams.remove(&stream) {
                    s.delete(&self.shared.unwritten);
                }
                Ok(())
            }
            Request::Sync(_) | Request::Shutdown(_) | Request::StreamAppend { .. } => Ok(()),
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
        // Tracked first: whatever happens to the write, the enqueues that follow find it.
        self.recent.insert(id, (loc, enqueues, self.shared.epoch.load(Ordering::Acquire)));
        self.written.push((loc.seg, loc.offset));
        self.write_record(head, message, loc)
    }

    /// Buffers a message's record at its reserved place.
    fn write_record(
        &mut self,
        head: &[u8],
        message: &Message,
        loc: Location,
    ) -> Result<(), StoreError> {
        if loc.seg != self.seg.n {
            self.roll_to(loc.seg)?;
        }
        let payload_len = head.len() + message.body.len();
        let mut crc = crc32fast::Hasher::new();
        crc.update(head);
        crc.update(&message.body);
        let len_bytes = (payload_len as u32).to_be_bytes();
        let crc_bytes = crc.finalize().to_be_bytes();
        let parts: [&[u8]; 4] = [&len_bytes, &crc_bytes, head, &message.body];
        self.seg.push(loc.offset, u64::from(loc.len), &parts, &self.io, &self.dir)
    }

    /// Moves on to segment `seg`; the old one is written out and synced, and deleted if
    /// nothing refers to it.
    fn roll_to(&mut self, seg: u32) -> Result<(), StoreError> {
        let mut old = std::mem::replace(&mut self.seg, Segment::new(seg));
        let result =
            old.write_out(&self.io, &self.dir).and_then(|()| old.sync(&self.io, &self.dir));
        let old = old.n;
        if self.refs.get(&old).copied().unwrap_or(0) == 0
            && !self.recent.values().any(|(l, _, _)| l.seg == old)
        {
            self.delete_segment(old);
        }
        result
    }

    fn delete_segment(&mut self, seg: u32) {
        self.refs.remove(&seg);
        self.shared.forget(seg);
        let path = paths::segment(&self.dir, seg);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("removing {}: {e}", path.display());
        }
    }

    /// A message's record is in the segment's buffer (or failed): off the write backlog.
    fn taken(&self, message: &Message) {
        let cost = crate::reader::record_cost(message);
        self.shared.unwritten.fetch_sub(cost, Ordering::Relaxed);
    }

    /// Paged-out records no longer needed: memory and their segments are released.
    fn unpage(&mut self, locs: &[Location]) {
        let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
        for loc in locs {
            pending.remove(&(loc.seg, loc.offset));
        }
        drop(pending);
        for loc in locs {
            self.release_ref(loc.seg);
        }
    }

    /// One reference to segment `seg` is gone; it is deleted if that was its last.
    fn release_ref(&mut self, seg: u32) {
        let refs = self.refs.entry(seg).or_insert(1);
        *refs = refs.saturating_sub(1);
        if *refs == 0 && seg != self.seg.n && !self.recent.values().any(|(l, _, _)| l.seg == seg) {
            self.delete_segment(seg);
        }
    }

    fn release_recent(&mut self, id: u64) -> Option<Location> {
        let entry = self.recent.get_mut(&id)?;
        let loc = entry.0;
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            self.recent.remove(&id);
            if loc.seg != self.seg.n && self.refs.get(&loc.seg).copied().unwrap_or(0) == 0 {
                self.delete_segment(loc.seg);
            }
        }
        Some(loc)
    }

    /// Every index entry that moved a message is on disk now (the batch was fsync'd without a
    /// failure): the entries they were moved from are removed, and that removal written at
    /// once. Until it is, recovery sees the source entry still live and drops the moved
    /// copies instead (see `recover`): a move is all or nothing.
    fn commit_moves(&mut self) {
        let mut moving = std::mem::take(&mut self.moving);
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        let mut abandoned = 0;
        for (queue, seq, written) in moving.drain(..) {
            if written == epoch {
                self.remove(queue, seq);
            } else {
                // A write failed since the copy's record was written: it may be lost. The
                // move is never committed: the source keeps the message, and recovery drops
                // the copy (at-least-once after a disk failure).
                abandoned += 1;
            }
        }
        if abandoned > 0 {
            warn!("{abandoned} dead-letter move(s) not committed after a failed write");
        }
        self.moving = moving;
        // A queue whose write fails is rewritten from its live entries (without the moved
        // ones) by the next batch.
        self.flush_queues(false, false);
        if std::mem::take(&mut self.failed) {
            self.shared.epoch.fetch_add(1, Ordering::Release);
        }
    }

    /// Writes every queue's pending index and ack records (fsyncing as asked); failures are
    /// noted for the epoch.
    fn flush_queues(&mut self, fsync: bool, acks: bool) {
        let mut failures = Vec::new();
        for (id, q) in &mut self.queues {
            if q.pending()
                && let Err(e) = q.flush(&self.io, &self.dir, *id, fsync, acks)
            {
                failures.push(e);
            }
        }
        for e in &failures {
            self.fail(e);
        }
    }

    /// Writes, fsyncs and commits every stream's buffered records (if `fsync`: stream
    /// records are committed only once on disk); failures are noted for the epoch. Age
    /// retention is looked at as time passes. False if a stream still holds records it could
    /// not write.
    fn flush_streams(&mut self, fsync: bool) -> bool {
        let mut failures = Vec::new();
        let mut clean = true;
        for s in self.streams.values_mut() {
            if fsync && s.pending() {
                if let Err(e) = s.flush(&self.io, &self.shared.unwritten) {
                    failures.push(e);
                }
            } else {
                s.retain_if_due();
            }
            clean &= !s.pending();
        }
        for e in &failures {
            self.fail(e);
        }
        clean
    }

    fn enqueue(&mut self, queue: QueueId, seq: u64, id: u64, extra: Extra) {
        let Some(loc) = self.recent.get(&id).map(|e| e.0) else {
            error!(queue, seq, id, "enqueue of a message the store never saw");
            return;
        };
        self.queues.entry(queue).or_insert_with(QueueFiles::new).enqueue(seq, loc, extra);
        *self.refs.entry(loc.seg).or_insert(0) += 1;
        self.release_recent(id);
    }

    fn remove(&mut self, queue: QueueId, seq: u64) {
        let Some(q) = self.queues.get_mut(&queue) else { return };
        let Ok(i) = q.live.binary_search_by_key(&seq, |e| e.seq) else { return };
        if q.live[i].removed {
            return;
        }
        q.live[i].removed = true;
        q.removed += 1;
        let seg = q.live[i].loc.seg;
        q.ack(ACK_REMOVED, seq);
        while q.live.front().is_some_and(|e| e.removed) {
            q.live.pop_front();
            q.removed -= 1;
        }
        if q.wants_compaction() {
            q.rewrite = true;
        }
        self.release_ref(seg);
    }

    fn delivered(&mut self, queue: QueueId, seq: u64) {
        let Some(q) = self.queues.get_mut(&queue) else { return };
        let Ok(i) = q.live.binary_search_by_key(&seq, |e| e.seq) else { return };
        if q.live[i].delivered || q.live[i].removed {
            return;
        }
        q.live[i].delivered = true;
        q.ack(ACK_DELIVERED, seq);
    }

    fn drop_queue(&mut self, queue: QueueId) {
        let Some(q) = self.queues.remove(&queue) else { return };
        for e in q.live.iter().filter(|e| !e.removed) {
            let refs = self.refs.entry(e.loc.seg).or_insert(1);
            *refs = refs.saturating_sub(1);
        }
        drop(q);
        for path in [paths::index(&self.dir, queue), paths::acks(&self.dir, queue)] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!("removing {}: {e}", path.display());
            }
        }
        let empty: Vec<u32> = self
            .refs
            .iter()
            .filter(|(seg, n)| **n == 0 && **seg != self.seg.n)
            .map(|(seg, _)| *seg)
            .collect();
        for seg in empty {
            if !self.recent.values().any(|(l, _, _)| l.seg == seg) {
                self.delete_segment(seg);
            }
        }
    }
}

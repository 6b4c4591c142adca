//! warren's disk store: what makes a confirmed message survive a crash.
//!
//! Persistent messages routed to durable queues are appended once to shared, append-only
//! segment files; each durable queue appends `(position, location)` entries to its own index
//! and removals to its own ack log. A single writer thread batches every request that is
//! waiting, writes it, fsyncs once, and only then runs the completions that send publisher
//! confirms: group commit. Segments nobody needs any more are deleted. Definitions (vhosts,
//! users, durable exchanges, queues and bindings) are a snapshot rewritten atomically.
//!
//! # Layout
//! - [`paths`]: the data dir, file by file.
//! - `record`: the `[length][CRC-32][payload]` framing every file uses.
//! - [`definitions`]: the definitions snapshot.
//! - [`message`]: the stored message and its segment encoding.
//! - `writer`: the writer thread, group commit, and what a failed write does (its
//!   "Faults" section).
//! - `io`: the writer's file operations, with [`Faults`] injectable for tests.
//! - `recover`: start-up recovery: torn tails cut, damage in the middle skipped.

pub mod definitions;
mod error;
mod io;
pub mod message;
pub mod paths;
mod reader;
mod record;
mod recover;
pub mod stream;
mod writer;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;

pub use definitions::Definitions;
pub use error::StoreError;
pub use io::Faults;
pub use message::Message;
pub use recover::{RecoveredMessage, RecoveredQueue, RecoveryStats};
pub use stream::{Cursor, StreamConfig, StreamLog, StreamRecord};
pub use writer::Done;
use writer::{Request, Writer};

/// Names a durable queue's files.
pub type QueueId = u64;

/// Where a message record sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Segment number.
    pub seg: u32,
    /// Offset of the record's header in the segment.
    pub offset: u64,
    /// Record length, header included.
    pub len: u32,
}

/// Tunables (tests make segments small, or inject faults).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// A segment is closed and a new one started past this size.
    pub segment_max: u64,
    /// Faults to inject into the writer's file operations (tests).
    pub faults: Option<Arc<Faults>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { segment_max: 64 * 1024 * 1024, faults: None }
    }
}

/// What the data dir held at start.
#[derive(Debug)]
pub struct Recovery {
    /// The definitions, or `None` for a new data dir.
    pub definitions: Option<Definitions>,
    /// Each durable queue's messages, in queue order.
    pub queues: std::collections::HashMap<QueueId, RecoveredQueue>,
    /// Counts for the log.
    pub stats: RecoveryStats,
}

/// The open store. Methods only queue requests for the writer thread (no I/O on the caller's
/// thread) except [`Store::save_definitions`] and [`Store::read_many`].
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The writer's inbox and the next free place in the segments. Appends reserve their
    /// place and send their request under this one lock, so the writer receives them in
    /// the order of their offsets.
    inner: Mutex<Inner>,
    segment_max: u64,
    shared: Arc<reader::Shared>,
    next_id: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Serializes definition snapshots.
    defs: Mutex<()>,
}

#[derive(Debug)]
struct Inner {
    tx: Option<Sender<Request>>,
    seg: u32,
    offset: u64,
}

/// Where an appended message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The message id (index entries name it).
    pub id: u64,
    /// Where its record is.
    pub loc: Location,
    /// The failure epoch when it was appended: if [`Store::epoch`] has moved past it by the
    /// time its [`Store::sync`] completes, a write may have lost it, and it must not be
    /// confirmed.
    pub epoch: u64,
}

/// fsyncs a directory so that renames and new files in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("syncing directory", dir))
}

/// Deletes the directories of streams the definitions do not name (deleted while the broker
/// was stopping, or never saved).
fn remove_unknown_streams(dir: &Path, known: &HashSet<QueueId>) {
    let Ok(entries) = std::fs::read_dir(dir.join(stream::format::STREAMS)) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let id = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
        if id.is_some_and(|id| !known.contains(&id)) {
            tracing::info!("removing stream files of an unknown queue: {}", path.display());
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!("removing {}: {e}", path.display());
            }
        }
    }
}

fn check_format(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(paths::FORMAT);
    let expected = format!("warren-data-format {}\n", paths::FORMAT_VERSION);
    match std::fs::read_to_string(&path) {
        Ok(found) if found == expected => Ok(()),
        Ok(found) => Err(StoreError::Version {
            path: dir.to_path_buf(),
            found: found.trim().to_string(),
            expected: paths::FORMAT_VERSION,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let used = [definitions::FILE, paths::MESSAGES, paths::QUEUES]
                .iter()
                .any(|f| dir.join(f).exists());
            if used {
                return Err(StoreError::Version {
                    path: dir.to_path_buf(),
                    found: "no FORMAT file".into(),
                    expected: paths::FORMAT_VERSION,
                });
            }
            let mut f = std::fs::File::create(&path).map_err(StoreError::io("creating", &path))?;
            f.write_all(expected.as_bytes()).map_err(StoreError::io("writing", &path))?;
            f.sync_all().map_err(StoreError::io("syncing", &path))?;
            sync_dir(dir)
        }
        Err(e) => Err(StoreError::io("reading", &path)(e)),
    }
}

impl Store {
    /// Opens (creating if new) the data dir, recovers it, and starts the writer thread.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<(Arc<Store>, Recovery), StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io("creating", dir))?;
        check_format(dir)?;
        for sub in [paths::MESSAGES, paths::QUEUES] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(StoreError::io("creating", &p))?;
        }
        let definitions = Definitions::load(dir)?;
        let known: HashSet<QueueId> = definitions
            .iter()
            .flat_map(|d| {
                let queues = d.queues.iter().map(|q| q.id);
                queues.chain(d.exchanges.iter().filter_map(|e| e.store_id))
            })
            .collect();
        let rec = recover::recover(dir, &known)?;
        remove_unknown_streams(dir, &known);
        let shared = Arc::new(reader::Shared::new(dir.to_path_buf()));
        let writer = Writer {
            dir: dir.to_path_buf(),
            io: io::Io::new(options.faults.clone()),
            seg: writer::Segment::new(rec.next_segment),
            refs: rec.refs,
            recent: Default::default(),
            queues: rec.queues,
            streams: HashMap::new(),
            done: Vec::new(),
            last_sync: Instant::now(),
            shared: shared.clone(),
            written: Vec::new(),
            pages: Vec::new(),
            failed: false,
            last_ack_sync: Instant::now(),
            moving: Vec::new(),
            unlogged: 0,
            last_log: None,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("warren-store".into())
            .spawn(move || writer.run(rx))
            .map_err(StoreError::io("starting the writer thread for", dir))?;
        let store = Arc::new(Store {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                tx: Some(tx),
                seg: rec.next_segment,
                offset: paths::SEGMENT_MAGIC.len() as u64,
            }),
            segment_max: options.segment_max,
            shared,
            next_id: AtomicU64::new(rec.next_message_id),
            thread: Mutex::new(Some(thread)),
            defs: Mutex::new(()),
        });
        Ok((store, Recovery { definitions, queues: rec.messages, stats: rec.stats }))
    }

    /// The failure epoch: it advances whenever a write or fsync fails, before the
    /// completions that follow run (see [`Stored::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::Acquire)
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn send(&self, req: Request) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = inner.tx.as_ref() {
            // The writer only stops at shutdown; requests after that are moot.
            let _ = tx.send(req);
        }
    }

    /// Writes `message` once; `enqueues` index entries ([`Store::enqueue`] or
    /// [`Store::skip`]) must follow. The message can be read back at once from the returned
    /// location (before the writer has written it, from memory).
    pub fn append(&self, message: Arc<Message>, enqueues: u32) -> Stored {
        // Read before the request is sent: a failure of the batch that will hold it comes
        // after, and shows as a newer epoch.
        let epoch = self.epoch();
        let (id, loc) = self.reserve(message, |id, head, message, loc| Request::Append {
            id,
            head,
            message,
            loc,
            enqueues,
        });
        Stored { id, loc, epoch }
    }

    /// Pages a message out that the store does not otherwise keep (a transient message, or
    /// one in a non-durable queue, deep in a long queue): its record is written like a stored
    /// one but no index names it, so it is gone after a restart. Read it back with
    /// [`Store::read_many`], then give it up with [`Store::unpage`] (also when it is dropped
    /// unread). Until its record is fsync'd, and for good if writing it failed, the store
    /// serves it from memory: a failing disk costs memory, never the message.
    pub fn page_out(&self, message: Arc<Message>) -> Location {
        self.reserve(message, |_, head, message, loc| Request::Page { head, message, loc }).1
    }

    /// Memory held by messages (appended or paged out) the writer has not written yet: their
    /// body bytes and a fixed cost each. While it is large, publishers should slow down, or a
    /// disk slower than they are (persistent messages published without confirms, a long
    /// transient backlog) would fill memory.
    pub fn write_backlog(&self) -> u64 {
        self.shared.unwritten.load(Ordering::Relaxed)
    }

    /// The paged-out message at `loc` is no longer needed (read back, or dropped).
    pub fn unpage(&self, loc: Location) {
        self.unpage_all(vec![loc]);
    }

    /// As [`Store::unpage`], for many at once (one request: a queue reading back or purging
    /// a run of them).
    pub fn unpage_all(&self, locs: Vec<Location>) {
        if !locs.is_empty() {
            self.send(Request::Unpage { locs });
        }
    }

    /// Reserves the next place in the segments for `message`'s record, makes it readable from
    /// memory until the writer has written it, and sends the writer `request` for it, under
    /// one lock so that the writer receives records in the order of their offsets.
    fn reserve(
        &self,
        message: Arc<Message>,
        request: impl FnOnce(u64, bytes::Bytes, Arc<Message>, Location) -> Request,
    ) -> (u64, Location) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut head = BytesMut::with_capacity(64);
        message.encode_head(id, &mut head);
        let len = (record::RECORD_HEADER + head.len() + message.body.len()) as u32;
        self.shared.unwritten.fetch_add(reader::record_cost(&message), Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let magic = paths::SEGMENT_MAGIC.len() as u64;
        if inner.offset + u64::from(len) > self.segment_max && inner.offset > magic {
            inner.seg += 1;
            inner.offset = magic;
        }
        let loc = Location { seg: inner.seg, offset: inner.offset, len };
        inner.offset += u64::from(len);
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((loc.seg, loc.offset), message.clone());
        if let Some(tx) = inner.tx.as_ref() {
            let _ = tx.send(request(id, head.freeze(), message, loc));
        }
        (id, loc)
    }

    /// Reads messages back (adjacent records in one read). `None` where a record is missing
    /// or fails its CRC; an error if the disk could not be read (try again later: nothing is
    /// known lost).
    pub fn read_many(&self, locs: &[Location]) -> Result<Vec<Option<Message>>, StoreError> {
        self.shared.read_many(locs)
    }

    /// Queue `queue` holds message `id` at position `seq`. Positions of one queue must be
    /// enqueued in increasing order.
    pub fn enqueue(&self, queue: QueueId, seq: u64, id: u64) {
        self.send(Request::Enqueue { queue, seq, id, extra: writer::Extra::None });
    }

    /// As [`Store::enqueue`], for a message moved from position `from.1` of queue `from.0`
    /// (dead-lettering): the source entry is removed by the store once this entry is on disk,
    /// not by the caller. A crash before that removal is written leaves the source entry and
    /// drops every moved copy at start-up; after it, only the copies remain. A move to several
    /// queues is so all or nothing, never lost, never duplicated.
    pub fn enqueue_moved(&self, queue: QueueId, seq: u64, id: u64, from: (QueueId, u64)) {
        self.send(Request::Enqueue {
            queue,
            seq,
            id,
            extra: writer::Extra::Origin(from.0, from.1),
        });
    }

    /// As [`Store::enqueue`], for a delayed message due at `due` (milliseconds since the Unix
    /// epoch): recovery gives the time back ([`RecoveredMessage::due`]).
    pub fn enqueue_due(&self, queue: QueueId, seq: u64, id: u64, due: u64) {
        self.send(Request::Enqueue { queue, seq, id, extra: writer::Extra::Due(due) });
    }

    /// One promised enqueue of message `id` will not come.
    pub fn skip(&self, id: u64) {
        self.send(Request::Skip { id });
    }

    /// Position `seq` of `queue` is gone (acked, rejected, purged).
    pub fn remove(&self, queue: QueueId, seq: u64) {
        self.send(Request::Remove { queue, seq });
    }

    /// Position `seq` of `queue` was delivered.
    pub fn delivered(&self, queue: QueueId, seq: u64) {
        self.send(Request::Delivered { queue, seq });
    }

    /// The queue was deleted.
    pub fn drop_queue(&self, queue: QueueId) {
        self.send(Request::DropQueue { queue });
    }

    /// Runs `done` once everything requested before is on disk (fsync'd).
    pub fn sync(&self, done: Done) {
        self.send(Request::Sync(done));
    }

    /// Writes the definitions snapshot (synchronously, fsync'd).
    pub fn save_definitions(&self, defs: &Definitions) -> Result<(), StoreError> {
        self.save_definitions_with(|| defs.clone())
    }

    /// Takes the definitions snapshot with `take` and writes it, both under one lock: saves
    /// happen one at a time, each of a state taken after the previous save, so an older
    /// snapshot never overwrites a newer one.
    pub fn save_definitions_with(
        &self,
        take: impl FnOnce() -> Definitions,
    ) -> Result<(), StoreError> {
        let _guard = self.defs.lock().unwrap_or_else(|p| p.into_inner());
        take().save(&self.dir)
    }

    /// Syncs everything and stops the writer thread: waits at most 5 s for it (a dying disk
    /// can hold a write or fsync far longer), then leaves it behind; what it had written to
    /// the OS is safe, as after a `kill -9`.
    pub fn close(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        self.send(Request::Shutdown(Box::new(move || {
            let _ = done_tx.send(());
        })));
        let finished = done_rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok();
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).tx.take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take()
            && finished
        {
            let _ = t.join();
        }
        if !finished {
            tracing::warn!("the store did not finish its last sync within 5 s; stopping anyway");
        }
    }
}

#[cfg(test)]
mod tests;

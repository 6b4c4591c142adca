//! Start-up recovery: checks every segment, index and ack log, and rebuilds each durable
//! queue's messages in order with their redelivered flags.
//!
//! Damage is told apart by where it is. A torn tail (an append interrupted by a crash or power
//! loss: only unconfirmed data can be there) is cut off an index or ack log, which will be
//! appended to again. Damage in the middle of a file (a failed write the broker went on from,
//! or corruption) is skipped, every good record after it kept, and logged. Segments are never
//! appended to again, so they are not cut: an index entry is kept when a whole record with a
//! matching CRC sits exactly where it points.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use tracing::{info, warn};

use crate::record::Records;
use crate::writer::{
    ACK_DELIVERED, ACK_REMOVED, Extra, LiveEntry, QueueFiles, decode_ack, decode_index,
};
use crate::{Location, QueueId, StoreError, paths};

/// One message of a recovered queue: where it is, not what it is (queues read bodies back
/// when they deliver them).
#[derive(Debug, Clone, Copy)]
pub struct RecoveredMessage {
    /// Its position in the queue.
    pub seq: u64,
    /// Where its record is (checked: it is whole and its CRC matches).
    pub loc: Location,
    /// Whether it had been delivered (and not acknowledged) before the restart.
    pub redelivered: bool,
    /// Its `priority` property (0 without one), for priority queues.
    pub priority: u8,
    /// When a delayed message is due (milliseconds since the Unix epoch).
    pub due: Option<u64>,
}

/// A recovered durable queue.
#[derive(Debug, Clone, Default)]
pub struct RecoveredQueue {
    /// Its messages, in position order.
    pub messages: Vec<RecoveredMessage>,
    /// The first position never used in its files: new messages must continue from here, or
    /// the ack log's removals of old positions would apply to them.
    pub next_seq: u64,
}

/// What recovery found, for the log and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segment files kept.
    pub segments: usize,
    /// Queues with files.
    pub queues: usize,
    /// Messages recovered (counted once per queue holding them).
    pub messages: u64,
    /// Files whose torn tail was cut off.
    pub truncated: usize,
    /// Bytes of damage skipped in the middle of files (good records after them kept).
    pub skipped: u64,
}

/// A file's bytes and the payload ranges of its valid records (offset of each header too).
type ValidFile = (Bytes, Vec<(usize, std::ops::Range<usize>)>);

/// What to do with a file's torn tail.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Cut it off: the file is appended to again.
    Cut,
    /// Leave it: the file is only read from now on.
    Keep,
}

/// Reads a whole file: its good records, damage in the middle skipped; a torn tail is cut
/// off if `tail` says so.
fn read_valid(
    path: &Path,
    magic: &[u8; 8],
    tail: Tail,
    stats: &mut RecoveryStats,
) -> Result<Option<ValidFile>, StoreError> {
    let data = std::fs::read(path).map_err(StoreError::io("reading", path))?;
    if data.len() < 8 {
        // Created but its magic never made it to disk: nothing in it was confirmed.
        warn!("{}: shorter than its header, recreating", path.display());
        let _ = std::fs::remove_file(path);
        stats.truncated += 1;
        return Ok(None);
    }
    // A segment whose first write failed has a hole where its magic should be.
    if &data[..8] != magic && !(tail == Tail::Keep && data[..8] == [0; 8]) {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            problem: "wrong file header".into(),
        });
    }
    let mut records = Records::new(&data, 8);
    let mut found = Vec::new();
    for (at, payload) in records.by_ref() {
        let start = payload.as_ptr() as usize - data.as_ptr() as usize;
        found.push((at, start..start + payload.len()));
    }
    if records.skipped > 0 {
        warn!(
            "{}: {} damaged byte(s) in the middle skipped, the good records after them kept",
            path.display(),
            records.skipped
        );
        stats.skipped += records.skipped as u64;
    }
    if records.torn && tail == Tail::Cut {
        let keep = records.valid_len();
        warn!("{}: torn tail after byte {keep} of {} cut off", path.display(), data.len());
        let f =
            OpenOptions::new().write(true).open(path).map_err(StoreError::io("opening", path))?;
        f.set_len(keep as u64).map_err(StoreError::io("truncating", path))?;
        f.sync_all().map_err(StoreError::io("syncing", path))?;
        stats.truncated += 1;
    }
    Ok(Some((Bytes::from(data), found)))
}

/// The message id and priority of the whole record at `loc`: from the scan of its segment or,
/// where the scan did not find one there, read and checked at that offset. After damage in the
/// middle of a segment the scan resynchronises byte by byte, and a record-shaped run of bytes
/// inside a message body could carry it past a good record: the index's own offset decides.
fn record_at(
    dir: &Path,
    segments: &HashMap<u32, Vec<(u64, u32, u64, u8)>>,
    loc: Location,
) -> Option<(u64, u8)> {
    let valid = segments.get(&loc.seg)?;
    if let Ok(k) = valid.binary_search_by_key(&loc.offset, |v| v.0) {
        return (valid[k].1 == loc.len).then_some((valid[k].2, valid[k].3));
    }
    let file = std::fs::File::open(paths::segment(dir, loc.seg)).ok()?;
    let mut buf = vec![0u8; loc.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, loc.offset).ok()?;
    let payload = crate::record::check(&buf)?;
    let id = crate::message::RecordHead::id_of(payload)?;
    warn!(
        segment = loc.seg,
        offset = loc.offset,
        "a record the segment scan missed is whole where its index entry says: kept"
    );
    Some((id, crate::message::priority_in_record(payload)))
}

fn list(dir: &Path, ext: &str) -> Result<Vec<(u64, std::path::PathBuf)>, StoreError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(StoreError::io("listing", dir))?;
    for entry in entries {
        let path = entry.map_err(StoreError::io("listing", dir))?.path();
        if let Some(n) = paths::number(&path, ext) {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// State handed from recovery to the writer thread.
pub(crate) struct Recovered {
    pub next_segment: u32,
    pub next_message_id: u64,
    pub refs: HashMap<u32, u64>,
    pub queues: HashMap<QueueId, QueueFiles>,
    pub messages: HashMap<QueueId, RecoveredQueue>,
    pub stats: RecoveryStats,
}

/// A move (dead-lettering) is finished when its source entry was removed: the store removes
/// it only once every moved copy is on disk. A copy whose source entry is still live belongs
/// to a move a crash interrupted: it is dropped (its removal buffered for the writer's first
/// batch; nothing is written here) and the source keeps the message. Decided on the entries as
/// the files hold them, before any drop, so that a chain of moves (a copy moved on again)
/// unwinds to its first unfinished step.
fn undo_unfinished_moves(
    moved: &[(QueueId, u64, (QueueId, u64))],
    queues: &mut HashMap<QueueId, QueueFiles>,
    messages: &mut HashMap<QueueId, RecoveredQueue>,
    refs: &mut HashMap<u32, u64>,
    stats: &mut RecoveryStats,
) {
    let live = |queues: &HashMap<QueueId, QueueFiles>, (q, seq): (QueueId, u64)| {
        queues.get(&q).is_some_and(|f| f.live.binary_search_by_key(&seq, |e| e.seq).is_ok())
    };
    let undo: Vec<(QueueId, u64)> = moved
        .iter()
        .filter(|(_, _, from)| live(queues, *from))
        .map(|(q, seq, _)| (*q, *seq))
        .collect();
    if !undo.is_empty() {
        info!(
            "{} dead-lettered message(s) whose move a crash interrupted stay where they were",
            undo.len()
        );
    }
    for (q, seq) in undo {
        let Some(files) = queues.get_mut(&q) else { continue };
        let Ok(i) = files.live.binary_search_by_key(&seq, |e| e.seq) else { continue };
        if let Some(e) = files.live.remove(i) {
            let n = refs.entry(e.loc.seg).or_insert(1);
            *n = n.saturating_sub(1);
        }
        files.ack(ACK_REMOVED, seq);
        if let Some(m) = messages.get_mut(&q) {
            m.messages.retain(|m| m.seq != seq);
        }
        stats.messages = stats.messages.saturating_sub(1);
    }
}

/// Recovers the data dir. Queues not in `known` are orphans (deleted before a crash finished
/// removing their files) and are removed now.
pub(crate) fn recover(dir: &Path, known: &HashSet<QueueId>) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let mut stats = RecoveryStats::default();
    // Each segment is read and checked once, one at a time; what is kept is the offset, length,
    // message id and priority of every whole record, against which index entries are checked.
    let mut segments: HashMap<u32, Vec<(u64, u32, u64, u8)>> = HashMap::new();
    let mut last_segment = 0u32;
    let mut next_message_id = 1u64;
    let files = list(&dir.join(paths::MESSAGES), "seg")?;
    let total = files.len();
    let mut last_report = Instant::now();
    for (i, (n, path)) in files.into_iter().enumerate() {
        // A long recovery says how far it got, so that an operator sees it working.
        if last_report.elapsed() >= std::time::Duration::from_secs(2) {
            info!(
                "recovery: checked {i} of {total} segments in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        let seg = u32::try_from(n).map_err(|_| StoreError::Corrupt {
            path: path.clone(),
            problem: "segment number".into(),
        })?;
        last_segment = last_segment.max(seg);
        if let Some((data, records)) =
            read_valid(&path, paths::SEGMENT_MAGIC, Tail::Keep, &mut stats)?
        {
            let mut valid = Vec::with_capacity(records.len());
            for (at, range) in &records {
                let id = crate::message::RecordHead::id_of(&data[range.clone()]).unwrap_or(0);
                let priority = crate::message::priority_in_record(&data[range.clone()]);
                valid.push((*at as u64, (range.end - *at) as u32, id, priority));
            }
            segments.insert(seg, valid);
        }
    }
    let mut refs: HashMap<u32, u64> = HashMap::new();
    let mut queues = HashMap::new();
    // Live entries moved from another queue's entry: (queue, position, origin).
    let mut moved = Vec::new();
    let mut messages = HashMap::new();
    for (id, idx_path) in list(&dir.join(paths::QUEUES), "idx")? {
        if !known.contains(&id) {
            info!("removing files of deleted queue {id}");
            let _ = std::fs::remove_file(&idx_path);
            let _ = std::fs::remove_file(paths::acks(dir, id));
            continue;
        }
        let ack_path = paths::acks(dir, id);
        let mut removed = HashSet::new();
        let mut next_seq = 0u64;
        let mut delivered = HashSet::new();
        if ack_path.exists()
            && let Some((data, records)) =
                read_valid(&ack_path, paths::ACKS_MAGIC, Tail::Cut, &mut stats)?
        {
            for (_, r) in records {
                let Some((kind, seq)) = decode_ack(&data[r]) else { continue };
                next_seq = next_seq.max(seq.saturating_add(1));
                match kind {
                    ACK_REMOVED => {
                        removed.insert(seq);
                    }
                    ACK_DELIVERED => {
                        delivered.insert(seq);
                    }
                    _ => {}
                }
            }
        }
        let Some((idx, records)) =
            read_valid(&idx_path, paths::INDEX_MAGIC, Tail::Cut, &mut stats)?
        else {
            let _ = std::fs::remove_file(&ack_path);
            continue;
        };
        let mut live = VecDeque::new();
        let mut recovered = Vec::new();
        let mut idx_records = 0u64;
        for (_, r) in records {
            idx_records += 1;
            let Some((seq, loc, extra)) = decode_index(&idx[r]) else { continue };
            next_seq = next_seq.max(seq.saturating_add(1));
            if removed.contains(&seq) {
                continue;
            }
            // The message must be whole where the index says: an entry whose record was in a
            // torn tail or a failed write belonged to a publish that was never confirmed.
            let Some((message_id, priority)) = record_at(dir, &segments, loc) else { continue };
            next_message_id = next_message_id.max(message_id.saturating_add(1));
            let was_delivered = delivered.contains(&seq);
            *refs.entry(loc.seg).or_insert(0) += 1;
            if let Extra::Origin(from, at) = extra {
                moved.push((id, seq, (from, at)));
            }
            live.push_back(LiveEntry { seq, loc, removed: false, delivered: was_delivered, extra });
            recovered.push(RecoveredMessage {
                seq,
                loc,
                redelivered: was_delivered,
                priority,
                due: match extra {
                    Extra::Due(due) => Some(due),
                    _ => None,
                },
            });
        }
        stats.messages += recovered.len() as u64;
        stats.queues += 1;
        let mut files = QueueFiles::recovered(dir, id);
        files.live = live;
        files.idx_records = idx_records;
        files.next_seq = next_seq;
        queues.insert(id, files);
        messages.insert(id, RecoveredQueue { messages: recovered, next_seq });
    }
    undo_unfinished_moves(&moved, &mut queues, &mut messages, &mut refs, &mut stats);
    // Segments no queue needs any more are deleted; a new segment is started for this run.
    for seg in segments.keys() {
        if refs.get(seg).copied().unwrap_or(0) == 0 {
            let path = paths::segment(dir, *seg);
            let _ = std::fs::remove_file(&path);
        }
    }
    stats.segments = refs.len();
    info!(
        queues = stats.queues,
        messages = stats.messages,
        segments = stats.segments,
        truncated = stats.truncated,
        skipped_bytes = stats.skipped,
        "recovered the store in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Recovered { next_segment: last_segment + 1, next_message_id, refs, queues, messages, stats })
}

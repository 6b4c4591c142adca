//! Start-up recovery: checks every segment, index and ack log, truncates torn tails (an append
//! interrupted by a crash or power loss: only unconfirmed data can be there), and rebuilds
//! each durable queue's messages in order with their redelivered flags.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use tracing::{info, warn};

use crate::record::Records;
use crate::writer::{ACK_DELIVERED, ACK_REMOVED, LiveEntry, QueueFiles, open_queue_files};
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
}

/// A file's bytes and the payload ranges of its valid records (offset of each header too).
type ValidFile = (Bytes, Vec<(usize, std::ops::Range<usize>)>);

/// Reads a whole file; truncates it to its valid prefix if its tail is torn.
fn read_valid(
    path: &Path,
    magic: &[u8; 8],
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
    if &data[..8] != magic {
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
    if records.torn {
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

/// Recovers the data dir. Queues not in `known` are orphans (deleted before a crash finished
/// removing their files) and are removed now.
pub(crate) fn recover(dir: &Path, known: &HashSet<QueueId>) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let mut stats = RecoveryStats::default();
    // Each segment is read and checked once, one at a time; what is kept is the offset and
    // length of every whole record, against which index entries are checked.
    let mut segments: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
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
        if let Some((data, records)) = read_valid(&path, paths::SEGMENT_MAGIC, &mut stats)? {
            let mut valid = Vec::with_capacity(records.len());
            for (at, range) in &records {
                if let Some(id) = data.get(range.start..range.start + 8) {
                    let id = u64::from_be_bytes(id.try_into().unwrap_or([0; 8]));
                    next_message_id = next_message_id.max(id + 1);
                }
                valid.push((*at as u64, (range.end - *at) as u32));
            }
            segments.insert(seg, valid);
        }
    }
    let mut refs: HashMap<u32, u64> = HashMap::new();
    let mut queues = HashMap::new();
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
            && let Some((data, records)) = read_valid(&ack_path, paths::ACKS_MAGIC, &mut stats)?
        {
            for (_, r) in records {
                let p = &data[r];
                if p.len() != 9 {
                    continue;
                }
                let seq = u64::from_be_bytes(p[1..9].try_into().unwrap_or([0; 8]));
                next_seq = next_seq.max(seq + 1);
                match p[0] {
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
        let Some((idx, records)) = read_valid(&idx_path, paths::INDEX_MAGIC, &mut stats)? else {
            let _ = std::fs::remove_file(&ack_path);
            continue;
        };
        let mut live = VecDeque::new();
        let mut recovered = Vec::new();
        let mut idx_records = 0u64;
        for (_, r) in records {
            idx_records += 1;
            let p = &idx[r];
            if p.len() != 24 {
                continue;
            }
            let seq = u64::from_be_bytes(p[..8].try_into().unwrap_or([0; 8]));
            next_seq = next_seq.max(seq + 1);
            let loc = Location {
                seg: u32::from_be_bytes(p[8..12].try_into().unwrap_or([0; 4])),
                offset: u64::from_be_bytes(p[12..20].try_into().unwrap_or([0; 8])),
                len: u32::from_be_bytes(p[20..24].try_into().unwrap_or([0; 4])),
            };
            if removed.contains(&seq) {
                continue;
            }
            // The message must be whole where the index says: an entry whose record was in a
            // torn tail belonged to a publish that was never confirmed.
            let Some(valid) = segments.get(&loc.seg) else { continue };
            if valid.binary_search(&(loc.offset, loc.len)).is_err() {
                continue;
            }
            let was_delivered = delivered.contains(&seq);
            *refs.entry(loc.seg).or_insert(0) += 1;
            live.push_back(LiveEntry { seq, loc, removed: false, delivered: was_delivered });
            recovered.push(RecoveredMessage { seq, loc, redelivered: was_delivered });
        }
        stats.messages += recovered.len() as u64;
        stats.queues += 1;
        let mut files = open_queue_files(dir, id)?;
        files.live = live;
        files.idx_records = idx_records;
        queues.insert(id, files);
        messages.insert(id, RecoveredQueue { messages: recovered, next_seq });
    }
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
        "recovered the store in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Recovered { next_segment: last_segment + 1, next_message_id, refs, queues, messages, stats })
}

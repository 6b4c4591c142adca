//! Recovery of a stream's directory at start-up (or its creation): each segment's sparse index
//! is checked against the segment, the records after its last good point are scanned (CRC
//! checked), and a torn tail (records of a batch the crash interrupted, never committed) is
//! cut off. Offsets go on from the last record.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tracing::warn;

use super::format::{self, POINT_EVERY, Point};
use super::{SegmentView, StreamConfig, StreamFiles, StreamLog};
use crate::{QueueId, StoreError};

/// Bytes read at a time while scanning.
const BLOCK: usize = 4 * 1024 * 1024;

/// What a segment's scan found.
struct Scanned {
    points: Vec<Point>,
    /// End of the last good record.
    end: u64,
    /// (offset, timestamp, chunk) of the last good record.
    last: Option<(u64, u64, u64)>,
    /// Bytes since the last point.
    since_point: u64,
}

/// Opens (creating if new) stream `id` under the data dir `data`: its shared log, and the
/// writer's side of it.
pub(crate) fn open(
    data: &Path,
    id: QueueId,
    config: StreamConfig,
) -> Result<(Arc<StreamLog>, StreamFiles), StoreError> {
    let dir = format::dir(data, id);
    std::fs::create_dir_all(&dir).map_err(StoreError::io("creating", &dir))?;
    let mut firsts: Vec<u64> = std::fs::read_dir(&dir)
        .map_err(StoreError::io("listing", &dir))?
        .filter_map(|e| crate::paths::number(&e.ok()?.path(), "seg"))
        .collect();
    firsts.sort_unstable();
    let mut views = VecDeque::new();
    let mut last: Option<(u64, u64, u64)> = None;
    let mut since_point = u64::MAX;
    let n = firsts.len();
    for (i, first) in firsts.into_iter().enumerate() {
        let path = format::segment(&dir, first);
        let file = File::open(&path).map_err(StoreError::io("opening", &path))?;
        let len = file.metadata().map_err(StoreError::io("reading", &path))?.len();
        let mut magic = [0u8; 8];
        if len < 8 || file.read_exact_at(&mut magic, 0).is_err() || &magic != format::SEGMENT_MAGIC
        {
            if len >= 8 {
                return Err(StoreError::Corrupt {
                    path,
                    problem: "not a stream segment (bad magic)".into(),
                });
            }
            // Created, then the crash came before its magic was written.
            remove(&path);
            remove(&format::index(&dir, first));
            continue;
        }
        let points = load_points(&format::index(&dir, first));
        let scan = scan(&file, &path, len, points)?;
        if scan.end < len {
            warn!(
                "{}: cut {} bytes of a torn tail (records never committed)",
                path.display(),
                len - scan.end
            );
            let w = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(StoreError::io("opening", &path))?;
            w.set_len(scan.end).map_err(StoreError::io("truncating", &path))?;
            w.sync_all().map_err(StoreError::io("syncing", &path))?;
        }
        if scan.last.is_none() && i + 1 < n {
            // An empty segment that is not the last: nothing to keep.
            remove(&path);
            remove(&format::index(&dir, first));
            continue;
        }
        write_points(&format::index(&dir, first), &scan.points);
        if scan.last.is_some() {
            last = scan.last;
        }
        since_point = scan.since_point;
        views.push_back(SegmentView {
            first,
            points: scan.points,
            end: scan.end,
            last: scan.last.map(|(o, ts, _)| (o, ts)),
        });
    }
    let next = match (last, views.back()) {
        (Some((o, _, _)), _) => o + 1,
        (None, Some(v)) => v.first,
        (None, None) => 0,
    };
    let mut writing = None;
    if views.back().is_none_or(|v| v.last.is_some() && v.end >= config.segment_max) {
        // A new stream, or a full last segment: start one at the next offset.
        let (view, file) = create_segment(&dir, next)?;
        views.push_back(view);
        writing = Some(file);
        since_point = u64::MAX;
    }
    let current = views.back().map(|v| (v.first, v.end)).unwrap_or((next, 8));
    let writing = match writing {
        Some(f) => f,
        None => {
            let path = format::segment(&dir, current.0);
            OpenOptions::new().write(true).open(&path).map_err(StoreError::io("opening", &path))?
        }
    };
    let first = views.front().map_or(next, |v| v.first);
    let log = Arc::new(StreamLog {
        id,
        dir: dir.clone(),
        config: Mutex::new(config),
        next: Mutex::new(next),
        committed: AtomicU64::new(next),
        first: AtomicU64::new(first),
        last_chunk: AtomicU64::new(last.map_or(next, |(_, _, chunk)| chunk)),
        segments: RwLock::new(views),
        on_commit: OnceLock::new(),
        dropped: AtomicBool::new(false),
    });
    let files = StreamFiles::new(log.clone(), writing, current.0, current.1, since_point);
    Ok((log, files))
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!("removing {}: {e}", path.display());
    }
}

/// Creates an empty segment (its magic written and synced) that starts at `first`: its view,
/// and the file open for writing.
pub(crate) fn create_segment(dir: &Path, first: u64) -> Result<(SegmentView, File), StoreError> {
    let path = format::segment(dir, first);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&path)
        .map_err(StoreError::io("creating", &path))?;
    f.write_all(format::SEGMENT_MAGIC).map_err(StoreError::io("writing", &path))?;
    f.sync_all().map_err(StoreError::io("syncing", &path))?;
    write_points(&format::index(dir, first), &[]);
    crate::sync_dir(dir)?;
    Ok((SegmentView { first, points: Vec::new(), end: 8, last: None }, f))
}

/// The points of a sparse index file (none if it is missing or damaged: the segment is then
/// scanned whole).
fn load_points(path: &Path) -> Vec<Point> {
    match std::fs::read(path) {
        Ok(data) if data.starts_with(format::INDEX_MAGIC) => Point::decode_all(&data[8..]),
        _ => Vec::new(),
    }
}

/// Rewrites a sparse index whole (it is only a hint: a failure costs a longer scan later).
fn write_points(path: &Path, points: &[Point]) {
    let mut data = format::INDEX_MAGIC.to_vec();
    for p in points {
        data.extend_from_slice(&p.encode());
    }
    if let Err(e) = std::fs::write(path, &data) {
        warn!("writing {}: {e}", path.display());
    }
}

/// Whether the record at point `p` of a segment of `len` bytes is whole, passes its CRC and
/// has the point's offset.
fn record_at(file: &File, len: u64, p: Point) -> bool {
    let mut head = [0u8; 8];
    if file.read_exact_at(&mut head, p.pos).is_err() {
        return false;
    }
    let need = 8 + u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
    if need > len - p.pos {
        return false;
    }
    let mut rec = vec![0u8; need as usize];
    file.read_exact_at(&mut rec, p.pos).is_ok()
        && matches!(format::parse(&rec, 0), Ok(Some(h)) if h.offset == p.offset)
}

/// Checks a segment's points and scans its records after the last good one.
fn scan(file: &File, path: &Path, len: u64, mut points: Vec<Point>) -> Result<Scanned, StoreError> {
    let magic = format::SEGMENT_MAGIC.len() as u64;
    // Points must be in order, inside the file, and each name the record found there (a
    // damaged index is only a longer scan).
    let mut good = 0;
    while good < points.len() {
        let p = points[good];
        let ordered = p.pos >= magic
            && p.pos < len
            && (good == 0 || (p.pos > points[good - 1].pos && p.offset > points[good - 1].offset));
        if !ordered || !record_at(file, len, p) {
            break;
        }
        good += 1;
    }
    points.truncate(good);
    let mut pos = points.last().map_or(magic, |p| p.pos);
    let mut since_point = if points.is_empty() { u64::MAX } else { 0 };
    let mut last = None;
    let mut block = BLOCK;
    'scan: while pos < len {
        let n = block.min((len - pos) as usize);
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, pos).map_err(StoreError::io("reading", path))?;
        let mut at = 0usize;
        loop {
            match format::parse(&buf, at) {
                Ok(Some(h)) => {
                    let here = pos + at as u64;
                    let pointed = points.last().is_some_and(|p| p.pos == here);
                    if !pointed && since_point >= POINT_EVERY {
                        points.push(Point { offset: h.offset, pos: here, ts: h.ts });
                        since_point = 0;
                    } else if pointed {
                        since_point = 0;
                    }
                    since_point = since_point.saturating_add(h.len);
                    last = Some((h.offset, h.ts, h.chunk));
                    at += h.len as usize;
                }
                Ok(None) => {
                    pos += at as u64;
                    break 'scan;
                }
                Err(need) => {
                    if at == 0 {
                        if pos + need as u64 > len {
                            break 'scan;
                        }
                        block = need;
                    } else {
                        block = BLOCK;
                    }
                    pos += at as u64;
                    continue 'scan;
                }
            }
            if at >= buf.len() {
                pos += at as u64;
                block = BLOCK;
                continue 'scan;
            }
        }
    }
    Ok(Scanned { points, end: pos.min(len), last, since_point })
}

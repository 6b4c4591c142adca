//! Stream log tests: offsets, reads by offset and time, restarts, torn tails, segment
//! rolling and retention, and failed writes.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use warren_wire::BasicProperties;

use super::{Cursor, StreamConfig, StreamLog, format};
use crate::tests::temp_dir;
use crate::{Faults, Message, Store, StoreOptions};

fn msg(body: &str) -> Arc<Message> {
    Arc::new(Message::new(
        "".into(),
        "s".into(),
        &BasicProperties::default(),
        Bytes::new(),
        Bytes::copy_from_slice(body.as_bytes()),
    ))
}

fn sync(store: &Store) {
    let (tx, rx) = mpsc::channel();
    store.sync(Box::new(move || {
        let _ = tx.send(());
    }));
    rx.recv_timeout(Duration::from_secs(10)).expect("sync completed");
}

fn bodies(log: &StreamLog, from: u64) -> Vec<(u64, String)> {
    let mut cursor = Cursor::at(from);
    let mut out = Vec::new();
    loop {
        let got = log.read(&mut cursor, 100).expect("read");
        if got.is_empty() {
            return out;
        }
        out.extend(
            got.into_iter().map(|r| (r.offset, String::from_utf8_lossy(&r.message.body).into())),
        );
    }
}

/// Opens the store with definitions that name the streams `ids` (others are deleted at
/// start-up).
fn open(dir: &std::path::Path, ids: &[u64], opts: StoreOptions) -> Arc<Store> {
    let (store, _) = Store::open(dir, opts).unwrap();
    store.save_definitions(&crate::tests::defs(ids)).unwrap();
    store
}

/// Appends each message in a batch (a chunk) of its own: segments roll only between chunks.
fn publish_one_by_one(store: &Store, log: &StreamLog, range: std::ops::Range<u32>) {
    for i in range {
        publish(store, log, i..i + 1);
    }
}

fn publish(store: &Store, log: &StreamLog, range: std::ops::Range<u32>) {
    for i in range {
        store.stream_append(log, msg(&format!("m{i}")));
    }
    sync(store);
}

#[test]
fn offsets_are_dense_committed_after_the_fsync_and_survive_a_restart() {
    let dir = temp_dir("stream-basic");
    let store = open(&dir, &[7], StoreOptions::default());
    let log = store.open_stream(7, StreamConfig::default()).unwrap();
    let commits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = commits.clone();
    log.on_commit(Box::new(move |c| seen.lock().unwrap().push(c)));
    assert_eq!((log.first(), log.committed(), log.next_offset()), (0, 0, 0));
    for i in 0..5 {
        assert_eq!(store.stream_append(&log, msg(&format!("m{i}"))).0, i);
    }
    sync(&store);
    assert_eq!(log.committed(), 5);
    assert_eq!(*commits.lock().unwrap().last().unwrap(), 5, "told of the commit");
    let all = bodies(&log, 0);
    assert_eq!(all.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(all[3].1, "m3");
    assert_eq!(bodies(&log, 3).len(), 2, "read from the middle");
    assert_eq!(bodies(&log, 5).len(), 0, "at the end");
    assert_eq!(log.len(), 5);
    store.close();
    drop((store, log));

    let store = open(&dir, &[7], StoreOptions::default());
    let log = store.open_stream(7, StreamConfig::default()).unwrap();
    assert_eq!((log.first(), log.committed(), log.next_offset()), (0, 5, 5));
    assert_eq!(store.stream_append(&log, msg("after")).0, 5, "offsets go on");
    sync(&store);
    let all = bodies(&log, 0);
    assert_eq!(all.len(), 6);
    assert_eq!(all[5], (5, "after".to_string()));
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_tail_is_cut_and_the_offsets_after_it_reused_only_for_new_records() {
    let dir = temp_dir("stream-torn");
    let store = open(&dir, &[3], StoreOptions::default());
    let log = store.open_stream(3, StreamConfig::default()).unwrap();
    publish(&store, &log, 0..4);
    store.close();
    drop((store, log));
    // A crash in the middle of writing a fifth record.
    let seg = format::segment(&format::dir(&dir, 3), 0);
    let mut data = std::fs::read(&seg).unwrap();
    let good = data.len();
    format::encode(&mut data, 4, 4, 1, &msg("torn"));
    data.truncate(good + 20);
    std::fs::write(&seg, &data).unwrap();
    // And a damaged sparse index: only a hint.
    std::fs::write(format::index(&format::dir(&dir, 3), 0), b"WRNSIX01garbage").unwrap();
    let store = open(&dir, &[3], StoreOptions::default());
    let log = store.open_stream(3, StreamConfig::default()).unwrap();
    assert_eq!(log.committed(), 4);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, good, "cut back");
    publish(&store, &log, 4..5);
    let all = bodies(&log, 0);
    assert_eq!(all.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert_eq!(all[4].1, "m4");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segments_roll_and_retention_drops_whole_old_ones_under_a_reader() {
    let dir = temp_dir("stream-retention");
    let store = open(&dir, &[9], StoreOptions::default());
    let config = StreamConfig { max_bytes: Some(2000), max_age_ms: None, segment_max: 600 };
    let log = store.open_stream(9, config).unwrap();
    // Each record is ~70 bytes: several per segment, many segments.
    publish_one_by_one(&store, &log, 0..10);
    let mut early = Cursor::at(0);
    let first_read = log.read(&mut early, 1).unwrap();
    assert_eq!(first_read[0].offset, 0);
    for n in 1..10 {
        publish_one_by_one(&store, &log, n * 10..n * 10 + 10);
    }
    let (bytes, segments) = log.size();
    assert!(segments > 1, "rolled: {segments}");
    assert!(bytes <= 2000 + 600, "retention keeps the size near its limit: {bytes}");
    assert!(log.first() > 0, "old segments went");
    let files = std::fs::read_dir(format::dir(&dir, 9)).unwrap().count();
    assert_eq!(files, 2 * segments, "their files too");
    // Whole segments: the first retained offset starts a segment, and everything from it on
    // is there.
    let kept = bodies(&log, 0);
    assert_eq!(kept[0].0, log.first());
    assert_eq!(kept.last().unwrap().0, 99);
    assert_eq!(kept.len() as u64, 100 - log.first());
    // A reader left behind goes on from the first retained offset.
    let next = log.read(&mut early, 1).unwrap();
    assert_eq!(next[0].offset, log.first());
    // Reading by time: everything is newer than a minute ago, nothing newer than now + 1 h.
    let now = super::now_ms();
    assert_eq!(log.offset_at(now - 60_000).unwrap(), log.first());
    assert_eq!(log.offset_at(now + 3_600_000).unwrap(), 100);
    store.close();
    drop((store, log));
    // After a restart: the same retained range.
    let store = open(&dir, &[9], StoreOptions::default());
    let log = store.open_stream(9, config).unwrap();
    assert_eq!(bodies(&log, 0), kept);
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn age_retention_drops_segments_whose_newest_record_is_too_old() {
    let dir = temp_dir("stream-age");
    let (store, _) = Store::open(&dir, StoreOptions::default()).unwrap();
    let config = StreamConfig { max_bytes: None, max_age_ms: Some(300), segment_max: 400 };
    let log = store.open_stream(4, config).unwrap();
    publish_one_by_one(&store, &log, 0..20);
    let before = log.size().1;
    assert!(before > 2);
    std::thread::sleep(Duration::from_millis(1500));
    // The writer looks at age retention as time passes, with nothing written.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.size().1 > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(log.size().1, 1, "only the current segment is left");
    assert_eq!(bodies(&log, 0).first().map(|b| b.0), Some(log.first()));
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_write_commits_nothing_and_the_next_batch_writes_it_again_in_place() {
    let dir = temp_dir("stream-fault");
    let faults = Faults::new();
    let opts = StoreOptions { faults: Some(faults.clone()), ..StoreOptions::default() };
    let store = open(&dir, &[5], opts);
    let log = store.open_stream(5, StreamConfig::default()).unwrap();
    publish(&store, &log, 0..3);
    // Every write fails (torn halfway) until the disk is back.
    faults.fail_writes(0, u32::MAX, true);
    let epoch = store.epoch();
    let (offset, at) = store.stream_append(&log, msg("m3"));
    assert_eq!((offset, at), (3, epoch));
    sync(&store);
    assert!(store.epoch() > epoch, "the confirm is a nack");
    sync(&store);
    assert_eq!(log.committed(), 3, "not readable while it is not written");
    faults.fail_writes(0, 0, false);
    // fsyncs fail now: written, but still not committed.
    faults.fail_syncs(u32::MAX);
    publish(&store, &log, 4..5);
    sync(&store);
    assert_eq!(log.committed(), 3, "a failed fsync commits nothing either");
    faults.fail_syncs(0);
    publish(&store, &log, 5..6);
    let all = bodies(&log, 0);
    assert_eq!(all.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(all[3].1, "m3", "written again at its place");
    store.close();
    drop((store, log));
    let store = open(&dir, &[5], StoreOptions::default());
    let log = store.open_stream(5, StreamConfig::default()).unwrap();
    assert_eq!(bodies(&log, 0), all, "and so after a restart");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_deleted_stream_loses_its_files_and_unknown_ones_go_at_start_up() {
    let dir = temp_dir("stream-drop");
    let (store, _) = Store::open(&dir, StoreOptions::default()).unwrap();
    let a = store.open_stream(1, StreamConfig::default()).unwrap();
    let b = store.open_stream(2, StreamConfig::default()).unwrap();
    publish(&store, &a, 0..2);
    publish(&store, &b, 0..2);
    store.drop_stream(1);
    sync(&store);
    assert!(!format::dir(&dir, 1).exists());
    assert!(format::dir(&dir, 2).exists());
    store.close();
    drop((store, a, b));
    // No definitions name stream 2: it goes at start-up.
    let (store, _) = Store::open(&dir, StoreOptions::default()).unwrap();
    assert!(!format::dir(&dir, 2).exists());
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_large_segment_is_scanned_in_blocks_at_start_up_with_or_without_its_index() {
    let dir = temp_dir("stream-large");
    let store = open(&dir, &[8], StoreOptions::default());
    let log = store.open_stream(8, StreamConfig::default()).unwrap();
    let body = "x".repeat(1000);
    for _ in 0..6000 {
        store.stream_append(&log, msg(&body));
    }
    sync(&store);
    assert!(log.size().0 > 5 * 1024 * 1024, "larger than a scan block");
    store.close();
    drop((store, log));
    for lose_index in [false, true] {
        if lose_index {
            std::fs::remove_file(format::index(&format::dir(&dir, 8), 0)).unwrap();
        }
        let (store, _) = Store::open(&dir, StoreOptions::default()).unwrap();
        let log = store.open_stream(8, StreamConfig::default()).unwrap();
        assert_eq!(log.committed(), 6000, "index lost: {lose_index}");
        let mut cursor = Cursor::at(0);
        let mut seen = 0;
        loop {
            let got = log.read(&mut cursor, 300 * 1024).unwrap();
            if got.is_empty() {
                break;
            }
            for r in got {
                assert_eq!(r.offset, seen);
                seen += 1;
            }
        }
        assert_eq!(seen, 6000);
        assert_eq!(log.offset_at(0).unwrap(), 0);
        store.close();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reader_crosses_a_gap_left_by_a_damaged_segment_instead_of_looping() {
    let dir = temp_dir("stream-gap");
    let store = open(&dir, &[6], StoreOptions::default());
    let config = StreamConfig { max_bytes: None, max_age_ms: None, segment_max: 500 };
    let log = store.open_stream(6, config).unwrap();
    publish_one_by_one(&store, &log, 0..30);
    assert!(log.size().1 >= 3);
    store.close();
    drop((store, log));
    // The first segment loses its last records (damage): offsets jump to the next segment.
    let sdir = format::dir(&dir, 6);
    let first = format::segment(&sdir, 0);
    let len = std::fs::metadata(&first).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&first).unwrap();
    f.set_len(len - 30).unwrap();
    drop(f);
    let (store, _) = Store::open(&dir, StoreOptions::default()).unwrap();
    let log = store.open_stream(6, config).unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = log.clone();
    std::thread::spawn(move || {
        let _ = tx.send(bodies(&reader, 0));
    });
    let got = rx.recv_timeout(Duration::from_secs(10)).expect("the read ends");
    let offsets: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(offsets.last(), Some(&29), "read to the end");
    assert!(offsets.len() < 30, "the damaged records are gone");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn records_a_failing_disk_keeps_in_memory_count_in_the_write_backlog() {
    let dir = temp_dir("stream-backlog");
    let faults = Faults::new();
    let opts = StoreOptions { faults: Some(faults.clone()), ..StoreOptions::default() };
    let store = open(&dir, &[2], opts);
    let log = store.open_stream(2, StreamConfig::default()).unwrap();
    faults.fail_writes(0, u32::MAX, false);
    let body = "z".repeat(10_000);
    for _ in 0..100 {
        store.stream_append(&log, msg(&body));
    }
    sync(&store);
    sync(&store);
    assert!(store.write_backlog() >= 100 * 10_000, "held: {}", store.write_backlog());
    faults.fail_writes(0, 0, false);
    sync(&store);
    assert_eq!(log.committed(), 100);
    assert_eq!(store.write_backlog(), 0, "released once on disk");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_write_failing_in_the_middle_of_a_large_batch_is_written_again_from_the_batch_start() {
    let dir = temp_dir("stream-step-fault");
    let faults = Faults::new();
    let opts = StoreOptions { faults: Some(faults.clone()), ..StoreOptions::default() };
    let store = open(&dir, &[3], opts);
    let log = store.open_stream(3, StreamConfig::default()).unwrap();
    publish(&store, &log, 0..2);
    // The first 1 MiB step of the next batch fails halfway; later steps succeed.
    faults.fail_writes(0, 1, true);
    let body = "w".repeat(1000);
    for _ in 0..3000 {
        store.stream_append(&log, msg(&body));
    }
    sync(&store);
    sync(&store);
    assert_eq!(log.committed(), 3002);
    store.close();
    drop((store, log));
    let (store, _) = Store::open(&dir, StoreOptions::default()).unwrap();
    let log = store.open_stream(3, StreamConfig::default()).unwrap();
    let all = bodies(&log, 0);
    assert_eq!(all.len(), 3002, "every record whole at its place after a restart");
    assert!(all.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_chunk_is_never_split_across_segments() {
    let dir = temp_dir("stream-chunk");
    let store = open(&dir, &[12], StoreOptions::default());
    // A segment size of 1 byte: every chunk starts a segment, but a chunk of many messages
    // stays whole in one.
    let config = StreamConfig { max_bytes: None, max_age_ms: None, segment_max: 1 };
    let log = store.open_stream(12, config).unwrap();
    publish(&store, &log, 0..500);
    let (_, after_one_batch) = log.size();
    assert!(after_one_batch <= 3, "not a segment per message: {after_one_batch}");
    publish_one_by_one(&store, &log, 500..505);
    assert!(log.size().1 >= after_one_batch + 4, "a segment per chunk");
    assert_eq!(bodies(&log, 0).len(), 505);
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

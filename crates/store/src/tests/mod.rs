//! Store tests: write, reopen, and check what survives.

mod paging;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use warren_wire::BasicProperties;

use crate::definitions::QueueDef;
use crate::{Definitions, Message, Store, StoreError, StoreOptions, paths};

pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("warren-store-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn msg(body: &str) -> Arc<Message> {
    let props = BasicProperties { delivery_mode: Some(2), ..Default::default() };
    Arc::new(Message::new(
        "".into(),
        "q".into(),
        &props,
        Bytes::new(),
        Bytes::copy_from_slice(body.as_bytes()),
    ))
}

pub(crate) fn defs(ids: &[u64]) -> Definitions {
    Definitions {
        queues: ids
            .iter()
            .map(|id| QueueDef {
                vhost: "/".into(),
                name: format!("q{id}"),
                id: *id,
                auto_delete: false,
                arguments: Default::default(),
            })
            .collect(),
        ..Default::default()
    }
}

fn sync(store: &Store) {
    let (tx, rx) = mpsc::channel();
    store.sync(Box::new(move || {
        let _ = tx.send(());
    }));
    rx.recv_timeout(Duration::from_secs(10)).expect("sync completed");
}

fn open(dir: &std::path::Path, opts: StoreOptions) -> (Arc<Store>, crate::Recovery) {
    Store::open(dir, opts).expect("open")
}

fn bodies(store: &Store, rec: &crate::Recovery, q: u64) -> Vec<(String, bool)> {
    let Some(v) = rec.queues.get(&q).map(|r| &r.messages) else { return Vec::new() };
    let locs: Vec<_> = v.iter().map(|m| m.loc).collect();
    store
        .read_many(&locs)
        .expect("the disk reads")
        .into_iter()
        .zip(v)
        .map(|(m, r)| {
            (String::from_utf8_lossy(&m.expect("readable").body).into_owned(), r.redelivered)
        })
        .collect()
}

#[test]
fn messages_survive_a_reopen_in_order_with_redelivered_flags() {
    let dir = temp_dir("reopen");
    let (store, rec) = open(&dir, StoreOptions::default());
    assert!(rec.definitions.is_none());
    store.save_definitions(&defs(&[1, 2])).unwrap();
    for (seq, body) in ["a", "b", "c", "d"].iter().enumerate() {
        let id = store.append(msg(body), 2).id;
        store.enqueue(1, seq as u64, id);
        store.enqueue(2, seq as u64, id);
    }
    store.remove(1, 1);
    store.delivered(1, 2);
    sync(&store);
    assert_eq!(store.write_backlog(), 0, "appends leave the write backlog once written");
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(
        bodies(&store, &rec, 1),
        vec![("a".into(), false), ("c".into(), true), ("d".into(), false)]
    );
    assert_eq!(bodies(&store, &rec, 2).len(), 4);
    assert_eq!(rec.stats.messages, 7);
    // A message written once for two queues occupies one record.
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn drained_queues_give_their_disk_space_back() {
    let dir = temp_dir("drain");
    let (store, _) = open(&dir, StoreOptions { segment_max: 4096, ..Default::default() });
    store.save_definitions(&defs(&[1])).unwrap();
    let body = "x".repeat(1000);
    for seq in 0..200u64 {
        let id = store.append(msg(&body), 1).id;
        store.enqueue(1, seq, id);
    }
    sync(&store);
    let segs = || std::fs::read_dir(dir.join(paths::MESSAGES)).unwrap().count();
    assert!(segs() > 40, "{} segments", segs());
    for seq in 0..200u64 {
        store.remove(1, seq);
    }
    sync(&store);
    assert_eq!(segs(), 1, "only the current segment is left");
    let idx = std::fs::metadata(paths::index(&dir, 1)).unwrap().len();
    assert!(idx < 10_000, "index of {idx} bytes");
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert!(bodies(&store, &rec, 1).is_empty());
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_everything_before_it_kept() {
    let dir = temp_dir("torn");
    let (store, _) = open(&dir, StoreOptions::default());
    store.save_definitions(&defs(&[1])).unwrap();
    for seq in 0..3u64 {
        let id = store.append(msg(&format!("m{seq}")), 1).id;
        store.enqueue(1, seq, id);
    }
    sync(&store);
    store.close();
    // Cut the last segment record in half, and add garbage to the index tail.
    let seg = std::fs::read_dir(dir.join(paths::MESSAGES))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    let mut idx = std::fs::OpenOptions::new().append(true).open(paths::index(&dir, 1)).unwrap();
    std::io::Write::write_all(&mut idx, &[0, 0, 0, 24, 1, 2]).unwrap();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("m0".into(), false), ("m1".into(), false)]);
    // The index is cut (it is appended to again); the segment is only read from now on.
    assert_eq!(rec.stats.truncated, 1);
    assert_eq!(rec.stats.skipped, 0);
    // It keeps working after the repair.
    let id = store.append(msg("m3"), 1).id;
    store.enqueue(1, 3, id);
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1).len(), 3);
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unknown_format_is_refused() {
    let dir = temp_dir("format");
    std::fs::write(dir.join(paths::FORMAT), "warren-data-format 99\n").unwrap();
    let err = Store::open(&dir, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Version { .. }), "{err}");
    assert!(err.to_string().contains("warren-data-format 99"), "{err}");
    // Not rewritten.
    assert_eq!(
        std::fs::read_to_string(dir.join(paths::FORMAT)).unwrap(),
        "warren-data-format 99\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deleted_and_orphaned_queues_lose_their_files() {
    let dir = temp_dir("drop");
    let (store, _) = open(&dir, StoreOptions::default());
    store.save_definitions(&defs(&[1, 2])).unwrap();
    for q in [1, 2] {
        let id = store.append(msg("x"), 1).id;
        store.enqueue(q, 0, id);
    }
    store.drop_queue(1);
    sync(&store);
    assert!(!paths::index(&dir, 1).exists());
    store.close();
    // Queue 2 vanished from the definitions (as after a crash mid-delete): its files go too.
    store.save_definitions(&defs(&[])).unwrap();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert!(rec.queues.is_empty());
    assert!(!paths::index(&dir, 2).exists());
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn messages_read_back_before_and_after_the_writer_wrote_them() {
    let dir = temp_dir("read");
    let (store, _) = open(&dir, StoreOptions { segment_max: 512, ..Default::default() });
    store.save_definitions(&defs(&[1])).unwrap();
    let stored: Vec<_> = (0..50).map(|i| store.append(msg(&format!("m{i:03}")), 1)).collect();
    for (seq, s) in stored.iter().enumerate() {
        store.enqueue(1, seq as u64, s.id);
    }
    // At once: possibly from memory, possibly from the file.
    let locs: Vec<_> = stored.iter().map(|s| s.loc).collect();
    let first: Vec<_> =
        store.read_many(&locs).unwrap().into_iter().map(|m| m.unwrap().body).collect();
    sync(&store);
    let second: Vec<_> =
        store.read_many(&locs).unwrap().into_iter().map(|m| m.unwrap().body).collect();
    assert_eq!(first, second);
    assert_eq!(&second[49][..], b"m049");
    assert!(
        locs.iter().map(|l| l.seg).collect::<std::collections::HashSet<_>>().len() > 1,
        "several segments"
    );
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn positions_continue_after_a_drained_queue_restarts() {
    // A drained queue's ack log still names its old positions: after a restart, new messages
    // must not reuse them, or they would count as removed at the next restart.
    let dir = temp_dir("seq");
    let (store, _) = open(&dir, StoreOptions::default());
    store.save_definitions(&defs(&[1])).unwrap();
    publish(&store, 1, 0, "old");
    // The queue's files exist now: the next batch appends to them.
    sync(&store);
    for seq in 1..3u64 {
        publish(&store, 1, seq, "old");
    }
    for seq in 0..3u64 {
        store.remove(1, seq);
    }
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    let q = &rec.queues[&1];
    assert!(q.messages.is_empty());
    assert_eq!(q.next_seq, 3);
    let id = store.append(msg("new"), 1).id;
    store.enqueue(1, q.next_seq, id);
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("new".into(), false)]);
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits for a sync and tells whether `stored` may be confirmed (no failure since).
fn confirmable(store: &Store, stored: &crate::Stored) -> bool {
    sync(store);
    store.epoch() == stored.epoch
}

fn publish(store: &Store, queue: u64, seq: u64, body: &str) -> crate::Stored {
    let s = store.append(msg(body), 1);
    store.enqueue(queue, seq, s.id);
    s
}

fn faulty() -> (Arc<crate::Faults>, StoreOptions) {
    let faults = crate::Faults::new();
    (faults.clone(), StoreOptions { faults: Some(faults), ..Default::default() })
}

#[test]
fn a_failed_segment_write_is_never_confirmed_and_later_records_survive_it() {
    let dir = temp_dir("segfail");
    let (faults, opts) = faulty();
    let (store, _) = open(&dir, opts);
    store.save_definitions(&defs(&[1])).unwrap();
    let m0 = publish(&store, 1, 0, "m0");
    assert!(confirmable(&store, &m0));
    // The segment write of m1's batch fails halfway: a torn record mid-segment.
    faults.fail_writes(0, 1, true);
    let m1 = publish(&store, 1, 1, &"1".repeat(500));
    assert!(!confirmable(&store, &m1), "a lost record is never confirmed");
    // The next batch's success does not confirm m1 (its epoch is behind), but confirms m2.
    let m2 = publish(&store, 1, 2, "m2");
    assert!(confirmable(&store, &m2));
    assert!(m1.epoch < store.epoch());
    // m1 reads back as gone (not as a read error), the others as written.
    let read = store.read_many(&[m0.loc, m1.loc, m2.loc]).unwrap();
    assert_eq!(read.iter().map(Option::is_some).collect::<Vec<_>>(), [true, false, true]);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("m0".into(), false), ("m2".into(), false)]);
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_index_append_is_rewritten_and_later_entries_survive_it() {
    let dir = temp_dir("idxfail");
    let (faults, opts) = faulty();
    let (store, _) = open(&dir, opts);
    store.save_definitions(&defs(&[1])).unwrap();
    let m0 = publish(&store, 1, 0, "m0");
    assert!(confirmable(&store, &m0));
    // The batch writes the segment, then appends to the index: that append tears.
    faults.fail_writes(1, 1, true);
    let m1 = publish(&store, 1, 1, "m1");
    assert!(!confirmable(&store, &m1));
    let m2 = publish(&store, 1, 2, "m2");
    store.remove(1, 0);
    assert!(confirmable(&store, &m2));
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    // The index was written anew from the live entries: no damage, nothing cut. m1 was nacked
    // but its record was whole, so it may survive (at-least-once); m2 must.
    assert_eq!(bodies(&store, &rec, 1), vec![("m1".into(), false), ("m2".into(), false)]);
    assert_eq!((rec.stats.truncated, rec.stats.skipped), (0, 0));
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_fsync_is_never_confirmed() {
    let dir = temp_dir("syncfail");
    let (faults, opts) = faulty();
    let (store, _) = open(&dir, opts);
    store.save_definitions(&defs(&[1])).unwrap();
    faults.fail_syncs(1);
    let m0 = publish(&store, 1, 0, "m0");
    assert!(!confirmable(&store, &m0));
    let m1 = publish(&store, 1, 1, "m1");
    assert!(confirmable(&store, &m1));
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1).last(), Some(&("m1".into(), false)));
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn close_returns_while_the_disk_hangs_in_an_fsync_and_confirms_nothing() {
    let dir = temp_dir("hang");
    let (faults, opts) = faulty();
    let (store, _) = open(&dir, opts);
    store.save_definitions(&defs(&[1])).unwrap();
    faults.hang_syncs();
    let m0 = publish(&store, 1, 0, "m0");
    let (tx, rx) = mpsc::channel();
    store.sync(Box::new(move || {
        let _ = tx.send(());
    }));
    // What shutdown does (SIGTERM): it must come back although the writer is stuck.
    let closing = store.clone();
    let (closed_tx, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        closing.close();
        let _ = closed_tx.send(());
    });
    closed_rx.recv_timeout(Duration::from_secs(60)).expect("close returned");
    assert!(rx.try_recv().is_err(), "nothing was confirmed while the fsync hung");
    assert_eq!(store.epoch(), m0.epoch);
    // The disk answers again: the stuck writer finishes on its own; nothing waits for it.
    faults.release();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_failed_queue_file_creation_is_retried_and_nothing_confirmed_before() {
    let dir = temp_dir("createfail");
    let (faults, opts) = faulty();
    let (store, _) = open(&dir, opts);
    store.save_definitions(&defs(&[1])).unwrap();
    // The segment write passes; the next three writes fail: the new queue's index (batch 1),
    // then m1's segment record and the index again (batch 2).
    faults.fail_writes(1, 3, false);
    let m0 = publish(&store, 1, 0, "m0");
    assert!(!confirmable(&store, &m0));
    let m1 = publish(&store, 1, 1, "m1");
    assert!(!confirmable(&store, &m1));
    let m2 = publish(&store, 1, 2, "m2");
    assert!(confirmable(&store, &m2));
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    let got: Vec<String> = bodies(&store, &rec, 1).into_iter().map(|(b, _)| b).collect();
    assert_eq!(got, ["m0", "m2"], "m0's record was written, its index entry rewritten later");
    assert!(!dir.join(paths::QUEUES).join("0000000001.tmp").exists());
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damage_in_the_middle_of_an_index_keeps_the_entries_after_it() {
    let dir = temp_dir("middle");
    let (store, _) = open(&dir, StoreOptions::default());
    store.save_definitions(&defs(&[1])).unwrap();
    for seq in 0..3u64 {
        publish(&store, 1, seq, &format!("m{seq}"));
        // One batch each: three appends to the index file.
        sync(&store);
    }
    store.close();
    // Flip a byte inside the second index record (8-byte magic, 32-byte records).
    let path = paths::index(&dir, 1);
    let mut data = std::fs::read(&path).unwrap();
    data[8 + 32 + 12] ^= 0xFF;
    std::fs::write(&path, &data).unwrap();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("m0".into(), false), ("m2".into(), false)]);
    assert_eq!((rec.stats.truncated, rec.stats.skipped), (0, 32));
    publish(&store, 1, 3, "m3");
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1).len(), 3);
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Dead-letters position `seq` of queue `from` into `to` (each at position `at`): a new record,
/// one moved entry per destination.
fn move_to(store: &Store, from: (u64, u64), to: &[(u64, u64)], body: &str) {
    let s = store.append(msg(body), to.len() as u32);
    for (q, at) in to {
        store.enqueue_moved(*q, *at, s.id, from);
    }
}

#[test]
fn a_finished_move_leaves_only_the_copies() {
    let dir = temp_dir("moved");
    let (store, _) = open(&dir, StoreOptions::default());
    store.save_definitions(&defs(&[1, 2, 3])).unwrap();
    publish(&store, 1, 0, "m");
    publish(&store, 1, 1, "stays");
    sync(&store);
    move_to(&store, (1, 0), &[(2, 0), (3, 5)], "dead m");
    // The move commits after the sync that wrote the copies: the source's removal follows.
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("stays".into(), false)]);
    assert_eq!(bodies(&store, &rec, 2), vec![("dead m".into(), false)]);
    assert_eq!(bodies(&store, &rec, 3), vec![("dead m".into(), false)]);
    store.close();
    // And it stays so: a second restart sees the same.
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("stays".into(), false)]);
    assert_eq!(bodies(&store, &rec, 3), vec![("dead m".into(), false)]);
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupted_move_is_undone_as_a_whole_chain_included() {
    let dir = temp_dir("unmoved");
    let (faults, opts) = faulty();
    let (store, _) = open(&dir, opts);
    store.save_definitions(&defs(&[1, 2, 3])).unwrap();
    publish(&store, 1, 0, "m");
    sync(&store);
    // Every fsync fails from here: the copies are written to the files but never known to be
    // on disk, so the source's removal (the move's commit) is never written.
    faults.fail_syncs(u32::MAX);
    move_to(&store, (1, 0), &[(2, 0)], "dead m");
    // The copy is moved on again before anything committed: a chain.
    move_to(&store, (2, 0), &[(3, 0)], "dead dead m");
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("m".into(), false)], "the source keeps it");
    assert!(bodies(&store, &rec, 2).is_empty(), "no duplicate");
    assert!(bodies(&store, &rec, 3).is_empty(), "no duplicate down the chain");
    // The undo is written by the first batch: it holds after another restart.
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("m".into(), false)]);
    assert!(bodies(&store, &rec, 2).is_empty());
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_move_in_a_failed_batch_is_never_committed() {
    let dir = temp_dir("movefail");
    let (faults, opts) = faulty();
    let (store, _) = open(&dir, opts);
    store.save_definitions(&defs(&[1, 2])).unwrap();
    publish(&store, 1, 0, "m");
    sync(&store);
    // The copy's segment write tears: the copy is lost, so the move must not commit, even
    // when the next batch succeeds.
    faults.fail_writes(0, 1, true);
    move_to(&store, (1, 0), &[(2, 0)], &"dead".repeat(100));
    sync(&store);
    publish(&store, 2, 1, "later");
    sync(&store);
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("m".into(), false)], "the source keeps it");
    assert_eq!(bodies(&store, &rec, 2), vec![("later".into(), false)]);
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn positions_are_never_reused_after_a_compaction() {
    let dir = temp_dir("highwater");
    let (store, _) = open(&dir, StoreOptions::default());
    store.save_definitions(&defs(&[1])).unwrap();
    for seq in 0..5000 {
        let s = store.append(msg("x"), 1);
        store.enqueue(1, seq, s.id);
    }
    sync(&store);
    for seq in 0..5000 {
        store.remove(1, seq);
    }
    // Emptied with thousands of records: the index is rewritten empty.
    sync(&store);
    sync(&store);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert!(bodies(&store, &rec, 1).is_empty());
    assert_eq!(rec.queues.get(&1).map(|q| q.next_seq), Some(5000), "the high-water mark survives");
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_shaped_run_inside_a_damaged_body_does_not_hide_the_next_message() {
    let dir = temp_dir("resync");
    let (store, _) = open(&dir, StoreOptions::default());
    store.save_definitions(&defs(&[1])).unwrap();
    let a = publish(&store, 1, 0, &"A".repeat(200));
    let b = publish(&store, 1, 1, "b-message");
    sync(&store);
    store.close();
    // A's body is rewritten (A is now damage) to hold a well-formed record whose length runs
    // 20 bytes into B: a scan resynchronising byte by byte after A lands on it and continues
    // inside B.
    let path = paths::segment(&dir, a.loc.seg);
    let mut data = std::fs::read(&path).unwrap();
    let p = (a.loc.offset + u64::from(a.loc.len)) as usize - 200;
    let end = b.loc.offset as usize + 20;
    let len = (end - (p + 8)) as u32;
    let crc = crc32fast::hash(&data[p + 8..end]);
    data[p..p + 4].copy_from_slice(&len.to_be_bytes());
    data[p + 4..p + 8].copy_from_slice(&crc.to_be_bytes());
    // A's own length is damaged too, so the scan cannot jump over A to B.
    let at = a.loc.offset as usize;
    data[at..at + 4].copy_from_slice(&[0xff; 4]);
    std::fs::write(&path, &data).unwrap();
    let (store, rec) = open(&dir, StoreOptions::default());
    // A is lost (its record is damaged); B, whole where its index entry says, is kept.
    assert_eq!(bodies(&store, &rec, 1), vec![("b-message".into(), false)]);
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

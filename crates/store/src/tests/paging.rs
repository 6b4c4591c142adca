//! Paged-out messages (transient ones deep in long queues): read back, released, never
//! recovered, and never lost to a failing disk.

use super::*;

fn transient(body: &str) -> Arc<Message> {
    Arc::new(Message::new(
        "".into(),
        "q".into(),
        &BasicProperties::default(),
        Bytes::new(),
        Bytes::copy_from_slice(body.as_bytes()),
    ))
}

fn read_bodies(store: &Store, locs: &[crate::Location]) -> Vec<Option<String>> {
    store
        .read_many(locs)
        .expect("the disk reads")
        .into_iter()
        .map(|m| m.map(|m| String::from_utf8_lossy(&m.body).into_owned()))
        .collect()
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(paths::MESSAGES)).unwrap().count()
}

#[test]
fn paged_messages_read_back_and_give_their_segments_back_when_unpaged() {
    let dir = temp_dir("page");
    let (store, _) = open(&dir, StoreOptions { segment_max: 4096, ..Default::default() });
    let bodies: Vec<String> = (0..200).map(|i| format!("{i:04}{}", "x".repeat(996))).collect();
    let locs: Vec<_> = bodies.iter().map(|b| store.page_out(transient(b))).collect();
    // Readable at once (from memory), and after the writer wrote them (from the file).
    assert_eq!(
        read_bodies(&store, &locs[..3]),
        bodies[..3].iter().cloned().map(Some).collect::<Vec<_>>()
    );
    sync(&store);
    sync(&store);
    assert!(store.shared.pending.lock().unwrap().is_empty(), "fsync'd pages leave memory");
    assert_eq!(store.write_backlog(), 0, "everything was written");
    assert_eq!(read_bodies(&store, &locs), bodies.iter().cloned().map(Some).collect::<Vec<_>>());
    assert!(segments(&dir) > 40, "{} segments", segments(&dir));
    for loc in &locs[..100] {
        store.unpage(*loc);
    }
    sync(&store);
    assert_eq!(read_bodies(&store, &locs[100..]).iter().flatten().count(), 100);
    for loc in &locs[100..] {
        store.unpage(*loc);
    }
    sync(&store);
    assert_eq!(segments(&dir), 1, "only the current segment is left");
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pages_are_not_recovered_and_their_segments_go_at_a_restart() {
    let dir = temp_dir("pagerestart");
    let (store, _) = open(&dir, StoreOptions { segment_max: 4096, ..Default::default() });
    store.save_definitions(&defs(&[1])).unwrap();
    let kept = publish(&store, 1, 0, "stored");
    for i in 0..50 {
        store.page_out(transient(&format!("{i}{}", "p".repeat(1000))));
    }
    sync(&store);
    assert!(segments(&dir) > 10);
    store.close();
    let (store, rec) = open(&dir, StoreOptions::default());
    assert_eq!(bodies(&store, &rec, 1), vec![("stored".into(), false)]);
    assert_eq!(rec.queues[&1].messages[0].loc, kept.loc);
    // The stored message's segment and the new run's (none yet) are all that is left.
    assert_eq!(segments(&dir), 1);
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_page_whose_write_failed_is_served_from_memory() {
    let dir = temp_dir("pagefail");
    let (faults, opts) = faulty();
    let (store, _) = open(&dir, opts);
    // Its segment write tears halfway.
    faults.fail_writes(0, 1, true);
    let torn = store.page_out(transient(&"t".repeat(500)));
    sync(&store);
    // Its fsync fails.
    faults.fail_syncs(1);
    let unsynced = store.page_out(transient("u"));
    sync(&store);
    let fine = store.page_out(transient("f"));
    sync(&store);
    sync(&store);
    assert_eq!(
        read_bodies(&store, &[torn, unsynced, fine]),
        [Some("t".repeat(500)), Some("u".into()), Some("f".into())]
    );
    // The write backlog is back to nothing, failures included (else publishers would be held
    // for good).
    assert_eq!(store.write_backlog(), 0);
    // Unpaging releases the memory held for them.
    store.unpage(torn);
    store.unpage(unsynced);
    sync(&store);
    assert!(store.shared.pending.lock().unwrap().is_empty());
    store.close();
    std::fs::remove_dir_all(&dir).unwrap();
}

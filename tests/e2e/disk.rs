//! A full disk, with the disk alarm off: the data dir on a small tmpfs (mounting one needs root, as CI has; elsewhere
//! the test says it is skipped, and fails if `CI` is set). Publishers with confirms get a
//! basic.nack for what could not be written, never a hang and never an ack; the broker stops
//! on SIGTERM and starts again on the still-full disk with every confirmed message; once space
//! returns, publishing is confirmed again, and nothing confirmed is lost across a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use crate::TestBroker;
use crate::support::{channel, within};

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("warren-e2e-tmpfs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount -o remount");
        assert!(status.success(), "remounting the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Publishes one persistent message and waits for its confirm: true for an ack.
async fn publish(ch: &Channel, body: &[u8]) -> bool {
    let props = BasicProperties::default().with_delivery_mode(2);
    let confirm = within(ch.basic_publish(
        "".into(),
        "full".into(),
        BasicPublishOptions::default(),
        body,
        props,
    ))
    .await
    .expect("basic.publish");
    within(confirm).await.expect("a confirm or a nack, not a hang").is_ack()
}

fn body(n: u32) -> Vec<u8> {
    let mut b = format!("{n:06}:").into_bytes();
    b.resize(64 * 1024, b'x');
    b
}

/// Reads every message of the queue with basic.get (leaving them unacked), in order.
async fn numbers(ch: &Channel) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(m) =
        within(ch.basic_get("full".into(), BasicGetOptions::default())).await.expect("basic.get")
    {
        let n = std::str::from_utf8(&m.delivery.data[..6]).expect("ascii").parse().expect("n");
        out.push(n);
    }
    out
}

/// Every confirmed message is queued, in order, once each.
async fn assert_all_there(broker: &TestBroker, acked: &[u32]) {
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    let got = numbers(&ch).await;
    for n in acked {
        assert!(got.contains(n), "confirmed message {n} lost (recovered {got:?})");
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, once each: {got:?}");
}

fn start(dir: &Path) -> TestBroker {
    // No disk alarm: this is about what happens when writes fail (alarm.rs tests the alarm).
    TestBroker::start_in(dir.to_path_buf(), &["--disk-free-limit", "0"], &[])
}

#[tokio::test]
async fn a_full_disk_nacks_publishes_and_loses_nothing_confirmed() {
    let Some(fs) = Tmpfs::mount("3m") else {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to mount a tmpfs (root)");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let dir = fs.0.join("data");
    let mut broker = start(&dir);
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    within(ch.queue_declare("full".into(), durable, FieldTable::default())).await.expect("declare");

    // 3 MiB of disk, 64 KiB messages: the disk fills after about 45.
    let (mut acked, mut nacked) = (Vec::new(), 0);
    for n in 0..80 {
        if publish(&ch, &body(n)).await {
            acked.push(n);
        } else {
            nacked += 1;
        }
    }
    assert!(nacked >= 20, "{nacked} nacks: the disk should have filled");
    assert!(acked.len() >= 10, "{} acks before the disk filled", acked.len());
    drop(conn);

    // SIGTERM stops it on a full disk, and it starts again there with what was confirmed.
    broker.restart();
    assert_all_there(&broker, &acked).await;

    // Space returns: publishes are confirmed again, and survive a restart with the rest.
    fs.resize("64m");
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    for n in 100..110 {
        assert!(publish(&ch, &body(n)).await, "message {n} confirmed once space returned");
        acked.push(n);
    }
    drop(conn);
    broker.restart();
    assert_all_there(&broker, &acked).await;
    let status = broker.terminate();
    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A transaction whose commit the store fails (the disk is full) loses none of the messages it
/// acked: the client gets 541, and the acked messages come back to their queue.
#[tokio::test]
async fn a_commit_the_store_fails_loses_none_of_the_messages_it_acked_and_enqueues_none() {
    use lapin::options::BasicAckOptions;
    let Some(fs) = Tmpfs::mount("3m") else {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to mount a tmpfs (root)");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let broker = start(&fs.0.join("data"));
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    for q in ["full", "src", "committed"] {
        within(ch.queue_declare(q.into(), durable, FieldTable::default())).await.expect("declare");
    }
    let persistent = BasicProperties::default().with_delivery_mode(2);
    for n in 0..3u8 {
        let confirm = within(ch.basic_publish(
            "".into(),
            "src".into(),
            BasicPublishOptions::default(),
            &[n],
            persistent.clone(),
        ))
        .await
        .expect("publish");
        assert!(within(confirm).await.expect("confirm").is_ack());
    }
    // Fill the disk until the store fails a write.
    let mut n = 0;
    while publish(&ch, &body(n)).await {
        n += 1;
        assert!(n < 200, "the disk never filled");
    }
    let tx = conn.create_channel().await.expect("channel");
    tx.tx_select().await.expect("tx.select");
    let got = within(tx.basic_get("src".into(), BasicGetOptions::default()))
        .await
        .expect("get")
        .expect("a message");
    tx.basic_ack(got.delivery.delivery_tag, BasicAckOptions::default()).await.expect("ack");
    // A transient and a persistent publish: all or nothing, neither may be enqueued.
    for props in [BasicProperties::default(), persistent.clone()] {
        tx.basic_publish(
            "".into(),
            "committed".into(),
            BasicPublishOptions::default(),
            &body(1000),
            props,
        )
        .await
        .expect("publish");
    }
    let e = within(tx.tx_commit()).await.expect_err("the store failed the commit");
    assert_eq!(crate::support::code(&e), Some(541), "{e}");
    // The acked message is back: all three are in the queue.
    fs.resize("64m");
    let conn = broker.connect().await;
    let ch = conn.create_channel().await.expect("channel");
    let mut left = Vec::new();
    while let Some(m) =
        within(ch.basic_get("src".into(), BasicGetOptions::default())).await.expect("get")
    {
        left.push(m.delivery.data[0]);
    }
    left.sort_unstable();
    assert_eq!(left, [0, 1, 2], "the failed commit's ack was not applied");
    let q = within(ch.queue_declare("committed".into(), durable, FieldTable::default()))
        .await
        .expect("declare");
    assert_eq!(q.message_count(), 0, "a failed commit enqueued its publishes");
}

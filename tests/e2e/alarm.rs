//! Resource alarms, as RabbitMQ's: while the memory watermark is exceeded or free disk space
//! is below the limit, a connection that publishes gets `connection.blocked` (reason "low on
//! memory" / "low on disk") and is not read any more; consumers go on; when the alarm clears
//! it gets `connection.unblocked` and its waiting publishes go through.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Event};

use bytes::BytesMut;
use warren_wire::method::{BasicPublish, ChannelOpen};
use warren_wire::{BasicProperties as WireProperties, Method, encode_content};

use crate::TestBroker;
use crate::raw::Raw;
use crate::support::{channel, within};

/// Collects connection.blocked reasons and unblocks of a connection.
#[derive(Default)]
struct Blocks {
    reason: std::sync::Mutex<Option<String>>,
    unblocked: AtomicBool,
}

fn watch(conn: &Connection) -> Arc<Blocks> {
    let blocks = Arc::new(Blocks::default());
    let b = blocks.clone();
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                Event::ConnectionBlocked(r) => *b.reason.lock().expect("lock") = Some(r),
                Event::ConnectionUnblocked => b.unblocked.store(true, Ordering::SeqCst),
                _ => {}
            }
        }
    });
    blocks
}

async fn blocked_reason(b: &Blocks) -> String {
    within(async {
        loop {
            if let Some(r) = b.reason.lock().expect("lock").clone() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn publish(ch: &Channel, queue: &str, body: &[u8]) -> lapin::PublisherConfirm {
    within(ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    ))
    .await
    .expect("basic.publish")
}

async fn declare(ch: &Channel, name: &str) {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    within(ch.queue_declare(name.into(), durable, FieldTable::default())).await.expect("declare");
}

#[tokio::test]
async fn above_the_memory_watermark_publishers_are_blocked_and_consumers_go_on() {
    // A watermark every process exceeds: the alarm is set from the start.
    let broker = TestBroker::start_with(&["--memory-high-watermark", "1MiB"], &[]);
    let (_cconn, cch) = broker.channel().await;
    declare(&cch, "mem").await;
    let mut consumer = within(cch.basic_consume(
        "mem".into(),
        "c".into(),
        BasicConsumeOptions { no_ack: true, ..Default::default() },
        FieldTable::default(),
    ))
    .await
    .expect("basic.consume: a consumer is not blocked");

    let pconn = broker.connect().await;
    let blocks = watch(&pconn);
    let pch = pconn.create_channel().await.expect("channel");
    // The publish that meets the alarm goes through; then the connection is blocked.
    publish(&pch, "mem", b"first").await;
    assert_eq!(blocked_reason(&blocks).await, "low on memory");
    let d = within(consumer.next()).await.expect("delivery").expect("delivery");
    assert_eq!(d.data, b"first");

    // lapin holds its publishes back while blocked; a raw client shows that the broker reads
    // nothing more from a blocked connection (and blocks one without the capability too).
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("channel.open-ok") };
    raw_publish(&mut raw, "mem", b"raw-1").await;
    let d = within(consumer.next()).await.expect("delivery").expect("delivery");
    assert_eq!(d.data, b"raw-1", "the publish that meets the alarm is taken");
    raw_publish(&mut raw, "mem", b"raw-2").await;
    let more = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(more.is_err(), "a blocked connection's publish got through: {more:?}");
    // The consumer's connection still works.
    declare(&cch, "mem-2").await;
    assert!(!blocks.unblocked.load(Ordering::SeqCst));
}

/// Publishes a one-frame message on channel 1 of a raw connection.
async fn raw_publish(raw: &mut Raw, queue: &str, body: &[u8]) {
    let publish = Method::from(BasicPublish { routing_key: queue.into(), ..Default::default() });
    let mut out = BytesMut::new();
    encode_content(&mut out, 1, &publish, &WireProperties::default(), body, 131_072)
        .expect("encode");
    raw.send_bytes(&out).await;
}

#[tokio::test]
async fn below_the_disk_free_limit_publishers_wait_until_space_returns() {
    // A 64 MiB tmpfs (needs root, as CI has) with 30 MB of ballast: 34 MB free, under a 40 MB
    // limit, so the broker starts with the disk alarm set.
    let dir = std::env::temp_dir().join(format!("warren-e2e-alarm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(std::env::var_os("CI").is_none(), "CI must be able to mount a tmpfs (root)");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unmount = Unmount(dir.clone());
    let ballast = dir.join("ballast");
    std::fs::write(&ballast, vec![1u8; 30_000_000]).expect("ballast");
    let broker = TestBroker::start_in(dir.join("data"), &["--disk-free-limit", "40MB"], &[]);

    // Consumers and declares work on a full disk.
    let (_cconn, cch) = broker.channel().await;
    declare(&cch, "disk").await;

    let pconn = broker.connect().await;
    let blocks = watch(&pconn);
    let pch = channel(&pconn).await;
    let first = publish(&pch, "disk", b"first").await;
    assert_eq!(blocked_reason(&blocks).await, "low on disk");
    assert!(within(first).await.expect("confirm").is_ack(), "the first publish was taken");
    // lapin holds this one back until the connection is unblocked.
    let second = tokio::spawn(async move {
        let confirm = pch
            .basic_publish(
                "".into(),
                "disk".into(),
                BasicPublishOptions::default(),
                b"second",
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("basic.publish");
        confirm.await.expect("confirm")
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!blocks.unblocked.load(Ordering::SeqCst), "still low on disk");
    assert!(!second.is_finished());

    // Space returns: unblocked, and the waiting publish goes through and is confirmed.
    std::fs::remove_file(&ballast).expect("rm ballast");
    let confirmed = within(second).await.expect("publisher task");
    assert!(confirmed.is_ack(), "{confirmed:?}");
    assert!(blocks.unblocked.load(Ordering::SeqCst), "connection.unblocked was sent");
    let count = within(cch.queue_declare(
        "disk".into(),
        QueueDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    ))
    .await
    .expect("passive declare")
    .message_count();
    assert_eq!(count, 2);
    drop(broker);
}

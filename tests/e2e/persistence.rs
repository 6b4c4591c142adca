//! Persistence across restarts: durable definitions and persistent messages survive SIGTERM
//! and SIGKILL; transient things do not; order and redelivered flags are kept; torn tails are
//! repaired; a data dir of an unknown format is refused.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::TestBroker;

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    let confirm = ch
        .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
}

async fn drain(ch: &Channel, queue: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    while let Some(m) =
        ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("get")
    {
        out.push((String::from_utf8_lossy(&m.delivery.data).into_owned(), m.delivery.redelivered));
    }
    out
}

async fn exists(ch: &Channel, queue: &str) -> bool {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    ch.queue_declare(queue.into(), passive, FieldTable::default()).await.is_ok()
}

#[tokio::test]
async fn durable_things_and_persistent_messages_survive_a_restart() {
    let mut broker = TestBroker::start();
    {
        let (conn, ch) = broker.channel().await;
        ch.confirm_select(Default::default()).await.expect("confirm");
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(
            "logs".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("durable exchange");
        ch.exchange_declare(
            "scratch".into(),
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect("transient exchange");
        ch.queue_declare("jobs".into(), durable, FieldTable::default())
            .await
            .expect("durable queue");
        ch.queue_declare("temp".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("transient queue");
        ch.queue_bind(
            "jobs".into(),
            "logs".into(),
            "app.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
        for i in 0..5 {
            publish(&ch, "logs", "app.info", format!("p{i}").as_bytes(), persistent()).await;
        }
        publish(&ch, "logs", "app.info", b"transient", BasicProperties::default()).await;
        publish(&ch, "", "temp", b"gone", persistent()).await;
        // p0 acked; p1 delivered and left unacked when the broker stops.
        let got = ch
            .basic_get("jobs".into(), BasicGetOptions::default())
            .await
            .expect("get")
            .expect("p0");
        assert_eq!(got.delivery.data, b"p0");
        got.delivery.ack(Default::default()).await.expect("ack");
        let got = ch
            .basic_get("jobs".into(), BasicGetOptions::default())
            .await
            .expect("get")
            .expect("p1");
        assert_eq!(got.delivery.data, b"p1");
        // Let the ack reach the broker before it stops.
        ch.queue_declare("jobs".into(), durable, FieldTable::default()).await.expect("round trip");
        broker.restart();
        drop(conn);
    }
    let (_conn, ch) = broker.channel().await;
    assert!(exists(&ch, "jobs").await, "durable queue back");
    assert!(!exists(&ch, "temp").await, "transient queue gone");
    let ch = broker.channel().await.1;
    let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
    ch.exchange_declare("logs".into(), ExchangeKind::Topic, passive, FieldTable::default())
        .await
        .expect("durable exchange back");
    assert!(
        ch.exchange_declare("scratch".into(), ExchangeKind::Fanout, passive, FieldTable::default())
            .await
            .is_err(),
        "transient exchange gone"
    );
    let ch = broker.channel().await.1;
    assert_eq!(
        drain(&ch, "jobs").await,
        vec![("p1".into(), true), ("p2".into(), false), ("p3".into(), false), ("p4".into(), false)],
        "unacked persistent messages in order; the delivered one redelivered; transient gone"
    );
    // The binding came back too.
    ch.confirm_select(Default::default()).await.expect("confirm");
    publish(&ch, "logs", "app.warn", b"after", persistent()).await;
    assert_eq!(drain(&ch, "jobs").await, vec![("after".into(), false)]);
}

#[tokio::test]
async fn confirmed_messages_survive_sigkill() {
    let mut broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(Default::default()).await.expect("confirm");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("q".into(), durable, FieldTable::default()).await.expect("declare");
    for i in 0..1000 {
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            persistent(),
        )
        .await
        .expect("publish");
    }
    let returned = ch.wait_for_confirms().await.expect("all confirmed");
    assert!(returned.is_empty());
    broker.crash_and_restart();
    let (_conn, ch) = broker.channel().await;
    let got = drain(&ch, "q").await;
    assert_eq!(got.len(), 1000);
    assert!(got.iter().enumerate().all(|(i, (b, r))| *b == format!("m{i}") && !r));
}

#[tokio::test]
async fn unacked_deliveries_come_back_redelivered_after_a_crash() {
    let mut broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(Default::default()).await.expect("confirm");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("q".into(), durable, FieldTable::default()).await.expect("declare");
    for i in 0..10 {
        publish(&ch, "", "q", format!("m{i}").as_bytes(), persistent()).await;
    }
    let consumer_ch = broker.channel().await.1;
    consumer_ch.basic_qos(3, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = consumer_ch
        .basic_consume(
            "q".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut first = Vec::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("delivery")
            .expect("open")
            .expect("ok");
        first.push(d);
    }
    first[0].ack(Default::default()).await.expect("ack m0");
    // Give the ack and the delivered marks time to be written (no fsync is promised for them).
    ch.queue_declare("q".into(), durable, FieldTable::default()).await.expect("round trip");
    tokio::time::sleep(Duration::from_millis(400)).await;
    broker.crash_and_restart();
    let (_conn, ch) = broker.channel().await;
    let got = drain(&ch, "q").await;
    let names: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(names, ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]);
    // m1, m2 were delivered and not acked; acking m0 made room and m3 was delivered too.
    assert!(got[..3].iter().all(|(_, r)| *r), "delivered-unacked ones are redelivered: {got:?}");
    assert!(got[3..].iter().all(|(_, r)| !r), "{got:?}");
}

#[tokio::test]
async fn a_torn_segment_tail_is_repaired_at_start() {
    let mut broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(Default::default()).await.expect("confirm");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("q".into(), durable, FieldTable::default()).await.expect("declare");
    for i in 0..3 {
        publish(&ch, "", "q", format!("m{i}").as_bytes(), persistent()).await;
    }
    let status = broker.terminate();
    assert!(status.success());
    // Tear the last record: cut its last bytes and add garbage, as a power loss might.
    let seg = std::fs::read_dir(broker.data_dir.join("messages"))
        .expect("messages dir")
        .map(|e| e.expect("entry").path())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a segment");
    let mut data = std::fs::read(&seg).expect("read");
    data.truncate(data.len() - 3);
    data.extend_from_slice(b"\xde\xad");
    std::fs::write(&seg, &data).expect("write");
    broker.respawn_after_exit();
    let (_conn, ch) = broker.channel().await;
    assert_eq!(drain(&ch, "q").await, vec![("m0".into(), false), ("m1".into(), false)]);
}

#[tokio::test]
async fn an_unknown_data_dir_format_is_refused() {
    let dir = std::env::temp_dir().join(format!("warren-e2e-format-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("FORMAT"), "warren-data-format 999\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run warren");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("warren-data-format 999"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.join("FORMAT")).expect("read"),
        "warren-data-format 999\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_backlog_beyond_memory_is_paged_and_drains_in_order_before_and_after_restart() {
    let mut broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(Default::default()).await.expect("confirm");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    for q in ["live", "restarted"] {
        ch.queue_declare(q.into(), durable, FieldTable::default()).await.expect("declare");
    }
    // More than the queue keeps in memory (2048), so most bodies are read back from disk.
    let n = 5000;
    for i in 0..n {
        for q in ["live", "restarted"] {
            ch.basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                persistent(),
            )
            .await
            .expect("publish");
        }
    }
    assert!(ch.wait_for_confirms().await.expect("confirms").is_empty());
    let got = drain(&ch, "live").await;
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, (b, _))| *b == format!("m{i}")), "live drain in order");
    broker.restart();
    let (_conn, ch) = broker.channel().await;
    let got = drain(&ch, "restarted").await;
    assert_eq!(got.len(), n);
    assert!(
        got.iter().enumerate().all(|(i, (b, r))| *b == format!("m{i}") && !r),
        "restarted drain in order"
    );
    assert!(drain(&ch, "live").await.is_empty(), "acked messages stay gone");
}

/// Durable declares from many connections at once, then `kill -9`: every queue whose
/// declare-ok arrived is there after the restart (no older snapshot of the definitions may
/// overwrite a newer one).
#[tokio::test]
async fn concurrent_durable_declares_all_survive_a_crash() {
    const CONNS: usize = 8;
    const EACH: usize = 40;
    let mut broker = TestBroker::start();
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let conn = broker.connect().await;
        tasks.push(tokio::spawn(async move {
            let ch = conn.create_channel().await.expect("channel");
            for i in 0..EACH {
                let opts = QueueDeclareOptions { durable: true, ..Default::default() };
                ch.queue_declare(
                    format!("dq-{c}-{i}").as_str().into(),
                    opts,
                    FieldTable::default(),
                )
                .await
                .expect("declare-ok");
            }
            conn
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.expect("declaring task"));
    }
    broker.crash_and_restart();
    let conn = broker.connect().await;
    let mut missing = Vec::new();
    let mut ch = conn.create_channel().await.expect("channel");
    for c in 0..CONNS {
        for i in 0..EACH {
            let name = format!("dq-{c}-{i}");
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            if ch.queue_declare(name.as_str().into(), passive, FieldTable::default()).await.is_err()
            {
                missing.push(name);
                ch = conn.create_channel().await.expect("channel");
            }
        }
    }
    assert!(missing.is_empty(), "declared, confirmed, and lost: {missing:?}");
    drop(conns);
}

/// A durable declare whose definitions cannot be saved is refused (541) and leaves no queue
/// behind: kept in memory, it would take confirmed messages into files that the next start-up
/// deletes as an unknown queue's.
#[tokio::test]
async fn a_durable_queue_whose_definition_cannot_be_saved_is_not_declared() {
    let mut broker = TestBroker::start();
    // The snapshot is written to `definitions.new` first: a directory there makes that fail.
    let blocker = broker.data_dir.join("definitions.new");
    std::fs::create_dir(&blocker).expect("blocker");
    {
        let (_conn, ch) = broker.channel().await;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let e = ch
            .queue_declare("unsaved".into(), durable, FieldTable::default())
            .await
            .expect_err("the save failed");
        assert_eq!(crate::support::code(&e), Some(541), "{e}");
    }
    let (_conn, ch) = broker.channel().await;
    assert!(!exists(&ch, "unsaved").await, "no queue without its definition on disk");
    std::fs::remove_dir(&blocker).expect("unblock");
    broker.crash_and_restart();
    let (_conn, ch) = broker.channel().await;
    assert!(!exists(&ch, "unsaved").await);
}

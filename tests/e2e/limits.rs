//! Queue arguments RabbitMQ applications declare: length limits (`x-max-length`,
//! `x-max-length-bytes`, `x-overflow` drop-head and reject-publish), single active consumer and
//! queue expiry (`x-expires`), with RabbitMQ's refusals of bad values.

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::TestBroker;
use crate::support::{channel, code, table, text, within};

async fn declare(ch: &Channel, name: &str, args: FieldTable) {
    within(ch.queue_declare(name.into(), QueueDeclareOptions::default(), args))
        .await
        .expect("queue.declare");
}

/// Publishes with confirms; true for an ack.
async fn publish(ch: &Channel, queue: &str, body: &str) -> bool {
    let confirm = within(ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    within(confirm).await.expect("confirm").is_ack()
}

async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

#[tokio::test]
async fn max_length_drops_from_the_head() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "len", table(&[("x-max-length", AMQPValue::LongInt(3))])).await;
    for i in 1..=5 {
        assert!(publish(&ch, "len", &format!("m{i}")).await);
    }
    assert_eq!(drain(&ch, "len").await, ["m3", "m4", "m5"]);
    // By bytes: bodies of 4 bytes, at most 10 bytes ready.
    declare(&ch, "bytes", table(&[("x-max-length-bytes", AMQPValue::LongInt(10))])).await;
    for b in ["aaaa", "bbbb", "cccc", "dddd"] {
        assert!(publish(&ch, "bytes", b).await);
    }
    assert_eq!(drain(&ch, "bytes").await, ["cccc", "dddd"]);
}

#[tokio::test]
async fn reject_publish_nacks_what_would_overflow() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let args =
        table(&[("x-max-length", AMQPValue::LongInt(2)), ("x-overflow", text("reject-publish"))]);
    declare(&ch, "full", args).await;
    assert!(publish(&ch, "full", "m1").await);
    assert!(publish(&ch, "full", "m2").await);
    assert!(!publish(&ch, "full", "m3").await, "nacked: the queue is full");
    assert_eq!(drain(&ch, "full").await, ["m1", "m2"]);
    assert!(publish(&ch, "full", "m4").await, "room again");
    assert_eq!(drain(&ch, "full").await, ["m4"]);
}

#[tokio::test]
async fn bad_limit_arguments_are_refused_with_rabbitmqs_406() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    for (arg, value, detail) in [
        ("x-max-length", AMQPValue::LongInt(-1), "{value_negative,-1}"),
        ("x-max-length-bytes", text("10"), "\"expected integer, got longstr\""),
        ("x-overflow", text("drop-tail"), "invalid_overflow"),
        ("x-single-active-consumer", text("yes"), "{unacceptable_type,longstr}"),
        ("x-expires", AMQPValue::LongInt(0), "{value_zero,0}"),
    ] {
        let ch = within(conn.create_channel()).await.expect("channel");
        let err = within(ch.queue_declare(
            "bad".into(),
            QueueDeclareOptions::default(),
            table(&[(arg, value)]),
        ))
        .await
        .expect_err("refused");
        assert_eq!(code(&err), Some(406), "{arg}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("invalid arg '{arg}' for queue 'bad' in vhost '/': {detail}")),
            "{arg}: {text}"
        );
    }
}

#[tokio::test]
async fn a_single_active_consumer_gets_everything_until_it_goes() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "sac", table(&[("x-single-active-consumer", AMQPValue::Boolean(true))])).await;
    let (ca, cb) =
        (conn.create_channel().await.expect("a"), conn.create_channel().await.expect("b"));
    for c in [&ca, &cb] {
        c.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
    }
    let mut a = within(ca.basic_consume(
        "sac".into(),
        "a".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume a");
    let mut b = within(cb.basic_consume(
        "sac".into(),
        "b".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume b");
    for i in 1..=4 {
        assert!(publish(&ch, "sac", &format!("m{i}")).await);
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = within(a.next()).await.expect("delivery").expect("delivery");
        got.push(String::from_utf8_lossy(&d.data).into_owned());
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4"], "all to the first consumer");
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(300), b.next()).await;
    assert!(quiet.is_err(), "the second consumer got nothing while the first was active");
    // The active one goes: its unacked messages come back, in order, to the next in line.
    within(ca.basic_cancel("a".into(), BasicCancelOptions::default())).await.expect("cancel");
    within(ca.close(200, "bye".into())).await.expect("close");
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = within(b.next()).await.expect("delivery").expect("delivery");
        assert!(d.redelivered);
        got.push(String::from_utf8_lossy(&d.data).into_owned());
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4"]);
}

/// Whether the queue exists (a passive declare; which also refreshes its x-expires period).
async fn exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = within(conn.create_channel()).await.expect("channel");
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    within(ch.queue_declare(name.into(), passive, FieldTable::default())).await.is_ok()
}

/// Polls every `poll` (longer than the queue's period, so that the polls do not keep it alive)
/// until the queue is gone; false if it is still there after 6 polls.
async fn expires_within(conn: &lapin::Connection, name: &str, poll_ms: u64) -> bool {
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(poll_ms)).await;
        if !exists(conn, name).await {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn a_queue_unused_for_its_x_expires_period_is_deleted() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let args = || table(&[("x-expires", AMQPValue::LongInt(300))]);
    declare(&ch, "exp", args()).await;
    assert!(publish(&ch, "exp", "m").await);
    assert!(expires_within(&conn, "exp", 1000).await, "unused: deleted");

    // A consumer keeps it; once it goes, the period starts. (A longer period: the consumer
    // must be there before it ends.)
    declare(&ch, "kept", table(&[("x-expires", AMQPValue::LongInt(1500))])).await;
    let cch = within(conn.create_channel()).await.expect("channel");
    // Kept: lapin cancels a consumer whose handle is dropped.
    let _consumer = within(cch.basic_consume(
        "kept".into(),
        "c".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(exists(&conn, "kept").await, "a queue with a consumer is in use");
    within(cch.basic_cancel("c".into(), BasicCancelOptions::default())).await.expect("cancel");
    assert!(expires_within(&conn, "kept", 2500).await, "deleted once its consumer went");
}

/// Waits for the channel's consumer stream to end in a broker error; returns its text.
async fn closed_text(consumer: &mut lapin::Consumer) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(d) = consumer.next().await {
            if let Err(e) = d {
                return e.to_string();
            }
        }
        panic!("the consumer ended without an error")
    })
    .await
    .expect("the channel was closed within 10 s")
}

/// As RabbitMQ's consumer_timeout (and x-consumer-timeout per queue): a delivery left
/// unacknowledged past the timeout closes its channel with 406, and the message is requeued.
#[tokio::test]
async fn an_unacknowledged_delivery_past_the_consumer_timeout_closes_its_channel() {
    let broker = TestBroker::start_with(&["--consumer-timeout", "1000"], &[]);
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "slow", FieldTable::default()).await;
    declare(&ch, "per-queue", table(&[("x-consumer-timeout", AMQPValue::LongInt(500))])).await;
    for (queue, timeout) in [("slow", 1000), ("per-queue", 500)] {
        assert!(publish(&ch, queue, "m").await);
        let cch = within(conn.create_channel()).await.expect("channel");
        let mut consumer = within(cch.basic_consume(
            queue.into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect("consume");
        let d = within(consumer.next()).await.expect("delivery").expect("delivery");
        assert!(!d.redelivered);
        let text = closed_text(&mut consumer).await;
        assert!(
            text.contains(&format!(
                "PRECONDITION_FAILED - delivery acknowledgement on channel {} timed out. \
                 Timeout value used: {timeout} ms.",
                cch.id()
            )),
            "{queue}: {text}"
        );
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let q = within(ch.queue_declare(queue.into(), passive, FieldTable::default()))
            .await
            .expect("passive declare");
        assert_eq!(q.message_count(), 1, "{queue}: requeued");
    }
}

//! Quorum queues on a single node, as RabbitMQ's: declared durable only (406 otherwise),
//! classic-only arguments refused, `x-delivery-limit` with the `x-delivery-count` header and
//! poison messages dead-lettered (`delivery_limit`) or dropped, global qos refused (540), the
//! queue type compared on redeclare, messages kept across restarts.
//!
//! The `rabbit_` tests pass against RabbitMQ 3.10 too (`WARREN_E2E_URL=amqp://... cargo test
//! --test e2e quorum::rabbit`).

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::TestBroker;
use crate::support::{
    channel, delete_queues as delete, durable, fresh, publish_props, refused, table, text, typed,
    within,
};

fn quorum(more: &[(&str, AMQPValue)]) -> FieldTable {
    typed("quorum", more)
}

fn delivery_count(p: &BasicProperties) -> Option<i64> {
    match p.headers().as_ref()?.inner().get("x-delivery-count")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        other => panic!("x-delivery-count is {other:?}"),
    }
}

/// basic.get then nack with requeue, `n` times; the delivery counts seen.
async fn get_and_return(ch: &Channel, queue: &str, n: usize) -> Vec<Option<i64>> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions::default()))
            .await
            .expect("basic.get")
        else {
            break;
        };
        seen.push(delivery_count(&m.delivery.properties));
        let requeue = BasicNackOptions { multiple: false, requeue: true };
        within(ch.basic_nack(m.delivery.delivery_tag, requeue)).await.expect("nack");
    }
    seen
}

#[tokio::test]
async fn rabbit_declares_are_checked_as_rabbitmq_does() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "qq", quorum(&[])).await;
    within(ch.queue_declare("qq".into(), durable(), quorum(&[]))).await.expect("redeclare");
    for (options, args) in [
        (QueueDeclareOptions::default(), quorum(&[])),
        (QueueDeclareOptions { exclusive: true, ..durable() }, quorum(&[])),
        (QueueDeclareOptions { auto_delete: true, ..durable() }, quorum(&[])),
        (durable(), quorum(&[("x-max-priority", AMQPValue::LongInt(5))])),
        (durable(), quorum(&[("x-queue-mode", text("lazy"))])),
        (durable(), quorum(&[("x-dead-letter-strategy", text("bogus"))])),
    ] {
        let ch = channel(&conn).await;
        assert_eq!(refused(ch.queue_declare("qq-bad".into(), options, args)).await, 406);
    }
    // The type is compared: absent is classic, not quorum.
    for args in [FieldTable::default(), quorum(&[("x-delivery-limit", AMQPValue::LongInt(5))])] {
        let ch = channel(&conn).await;
        assert_eq!(refused(ch.queue_declare("qq".into(), durable(), args)).await, 406);
    }
    delete(&conn, &["qq"]).await;
}

#[tokio::test]
async fn rabbit_poison_messages_are_dead_lettered_at_the_delivery_limit() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "qq-dead", FieldTable::default()).await;
    let args = quorum(&[
        ("x-delivery-limit", AMQPValue::LongInt(2)),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text("qq-dead")),
    ]);
    fresh(&ch, "qq-poison", args).await;
    let headers = table(&[("k", text("v"))]);
    publish_props(&ch, "", "qq-poison", "poison", BasicProperties::default().with_headers(headers))
        .await;
    // Delivered three times (counts 0, 1, 2); the third return passes the limit of 2.
    assert_eq!(get_and_return(&ch, "qq-poison", 4).await, [Some(0), Some(1), Some(2)]);
    let mut dead = None;
    for _ in 0..100 {
        dead = within(ch.basic_get("qq-dead".into(), BasicGetOptions { no_ack: true }))
            .await
            .expect("basic.get");
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = dead.expect("dead-lettered");
    let p = &dead.delivery.properties;
    assert_eq!(delivery_count(p), None, "the count is not part of the message");
    let Some(AMQPValue::FieldArray(deaths)) = p.headers().as_ref().unwrap().inner().get("x-death")
    else {
        panic!("no x-death")
    };
    let AMQPValue::FieldTable(d) = &deaths.as_slice()[0] else { panic!("entry") };
    assert_eq!(d.inner().get("reason"), Some(&text("delivery_limit")));
    // A channel closed with the message unacknowledged counts as a return too; without a
    // dead-letter exchange the message is then dropped.
    fresh(&ch, "qq-close", quorum(&[("x-delivery-limit", AMQPValue::LongInt(1))])).await;
    publish_props(&ch, "", "qq-close", "c", BasicProperties::default()).await;
    let mut counts = Vec::new();
    for _ in 0..3 {
        let other = within(conn.create_channel()).await.expect("channel");
        let m = within(other.basic_get("qq-close".into(), BasicGetOptions::default()))
            .await
            .expect("basic.get");
        counts.push(m.map(|m| delivery_count(&m.delivery.properties)));
        within(other.close(200, "bye".into())).await.expect("close");
    }
    assert_eq!(counts, [Some(Some(0)), Some(Some(1)), None]);
    delete(&conn, &["qq-dead", "qq-poison", "qq-close"]).await;
}

#[tokio::test]
async fn rabbit_global_qos_consumers_are_refused_with_540() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "qq-qos", quorum(&[])).await;
    let other = broker.connect().await;
    let c = within(other.create_channel()).await.expect("channel");
    within(c.basic_qos(10, BasicQosOptions { global: true })).await.expect("qos");
    let consume = c.basic_consume(
        "qq-qos".into(),
        "c".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    assert_eq!(refused(consume).await, 540);
    // A per-consumer prefetch is fine.
    let c = within(conn.create_channel()).await.expect("channel");
    within(c.basic_qos(10, BasicQosOptions { global: false })).await.expect("qos");
    let consume = c.basic_consume(
        "qq-qos".into(),
        "c".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    within(consume).await.expect("consume");
    delete(&conn, &["qq-qos"]).await;
}

#[tokio::test]
async fn the_default_delivery_limit_is_rabbitmq_4s_and_messages_survive_a_restart() {
    let mut broker = TestBroker::start();
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        fresh(&ch, "qq-default", quorum(&[])).await;
        publish_props(&ch, "", "qq-default", "x", BasicProperties::default()).await;
        let counts = get_and_return(&ch, "qq-default", 30).await;
        assert_eq!(counts.len(), 21, "20 returns allowed, the 21st drops it");
        fresh(&ch, "qq-kept", quorum(&[])).await;
        let persistent = BasicProperties::default().with_delivery_mode(2);
        publish_props(&ch, "", "qq-kept", "kept", persistent).await;
    }
    broker.restart();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let m = within(ch.basic_get("qq-kept".into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .expect("kept across the restart");
    assert_eq!(m.delivery.data, b"kept");
    assert_eq!(delivery_count(&m.delivery.properties), Some(0));
}

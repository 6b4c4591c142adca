//! Message TTL, as RabbitMQ's: `x-message-ttl` per queue and the `expiration` property per
//! message (the lower wins); expired messages are never delivered and are dropped from the
//! head (a timer does it when nothing else happens), paged-out ones too; requeued messages
//! keep their deadline; with a TTL of 0 a message goes only to a consumer that takes it at once.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::TestBroker;
use crate::support::{channel, code, message_count, table, within};

async fn declare(ch: &Channel, name: &str, durable: bool, args: FieldTable) {
    let o = QueueDeclareOptions { durable, ..Default::default() };
    within(ch.queue_declare(name.into(), o, args)).await.expect("queue.declare");
}

async fn publish(ch: &Channel, queue: &str, body: &str, props: BasicProperties) {
    let c = within(ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    ))
    .await
    .expect("publish");
    assert!(within(c).await.expect("confirm").is_ack());
}

async fn get(ch: &Channel, queue: &str) -> Option<String> {
    within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
}

fn ttl(ms: i32) -> FieldTable {
    table(&[("x-message-ttl", AMQPValue::LongInt(ms))])
}

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

#[tokio::test]
async fn expired_messages_are_dropped_and_never_delivered() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    // Per queue.
    declare(&ch, "qttl", false, ttl(200)).await;
    for i in 0..3 {
        publish(&ch, "qttl", &format!("m{i}"), BasicProperties::default()).await;
    }
    assert_eq!(message_count(&ch, "qttl").await, 3);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(message_count(&ch, "qttl").await, 0, "dropped by the timer, untouched");
    // Per message, and the lower of the two wins; the one without expiration stays.
    declare(&ch, "mttl", false, ttl(60_000)).await;
    publish(&ch, "mttl", "short", expiring("100")).await;
    publish(&ch, "mttl", "long", BasicProperties::default()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&ch, "mttl").await.as_deref(), Some("long"));
    assert_eq!(get(&ch, "mttl").await, None);
}

#[tokio::test]
async fn ttl_zero_goes_only_to_a_consumer_that_takes_it_at_once() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "zero", false, ttl(0)).await;
    publish(&ch, "zero", "nobody", BasicProperties::default()).await;
    assert_eq!(message_count(&ch, "zero").await, 0, "no consumer: dropped");
    let cch = within(conn.create_channel()).await.expect("channel");
    let mut consumer = within(cch.basic_consume(
        "zero".into(),
        "c".into(),
        BasicConsumeOptions { no_ack: true, ..Default::default() },
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    publish(&ch, "zero", "taken", BasicProperties::default()).await;
    let d = within(consumer.next()).await.expect("delivery").expect("delivery");
    assert_eq!(d.data, b"taken");
}

#[tokio::test]
async fn requeued_messages_keep_their_deadline() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "requeue", false, ttl(400)).await;
    publish(&ch, "requeue", "m", BasicProperties::default()).await;
    let cch = within(conn.create_channel()).await.expect("channel");
    cch.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let m = within(cch.basic_get("requeue".into(), BasicGetOptions::default()))
        .await
        .expect("get")
        .expect("a message");
    tokio::time::sleep(Duration::from_millis(800)).await;
    m.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        message_count(&ch, "requeue").await,
        0,
        "expired while unacked: dropped once requeued"
    );
}

#[tokio::test]
async fn a_paged_out_backlog_expires_without_being_read() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "paged", true, ttl(500)).await;
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut confirms = Vec::new();
    for i in 0..3000 {
        let c = ch
            .basic_publish(
                "".into(),
                "paged".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                props.clone(),
            )
            .await
            .expect("publish");
        confirms.push(c);
    }
    for c in confirms {
        assert!(c.await.expect("confirm").is_ack());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(message_count(&ch, "paged").await, 0);
    assert_eq!(get(&ch, "paged").await, None);
}

#[tokio::test]
async fn bad_ttls_are_refused_with_rabbitmqs_406() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let err = within(ch.queue_declare("bad".into(), QueueDeclareOptions::default(), ttl(-1)))
        .await
        .expect_err("refused");
    assert_eq!(code(&err), Some(406));
    assert!(
        err.to_string().contains(
            "invalid arg 'x-message-ttl' for queue 'bad' in vhost '/': {value_negative,-1}"
        ),
        "{err}"
    );
}

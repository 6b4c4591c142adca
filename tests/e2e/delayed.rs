//! Delayed messages: `x-delayed-message` exchanges as RabbitMQ's delayed-message plugin
//! defines them (`x-delayed-type`, the `x-delay` header, released with `x-delay` negated,
//! earliest due first, mandatory publishes returned), and, beyond the plugin, persistent
//! delayed messages kept in the store: across restarts, and through `kill -9` with nothing
//! lost or duplicated. (RabbitMQ 3.10 from Debian has no delayed-message plugin, so these run
//! against warren only; the plugin's source is the reference.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::TestBroker;
use crate::support::{channel, message_count, publish_props, refused, table, text, within};

fn delayed_type(kind: &str) -> FieldTable {
    table(&[("x-delayed-type", text(kind))])
}

/// A delayed exchange `name` of routing type direct, bound to queue `name` with key `k`.
async fn setup(ch: &Channel, name: &str, durable: bool) {
    let kind = ExchangeKind::Custom("x-delayed-message".into());
    let o = ExchangeDeclareOptions { durable, ..Default::default() };
    within(ch.exchange_declare(name.into(), kind, o, delayed_type("direct")))
        .await
        .expect("exchange.declare");
    let q = QueueDeclareOptions { durable, ..Default::default() };
    within(ch.queue_declare(name.into(), q, FieldTable::default())).await.expect("queue.declare");
    let bind = ch.queue_bind(
        name.into(),
        name.into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    within(bind).await.expect("queue.bind");
}

fn delay(ms: i32, persistent: bool) -> BasicProperties {
    let p = BasicProperties::default().with_headers(table(&[("x-delay", AMQPValue::LongInt(ms))]));
    if persistent { p.with_delivery_mode(2) } else { p }
}

/// Waits (up to `limit`) until `queue` holds `n` messages.
async fn wait_for(ch: &Channel, queue: &str, n: u32, limit: Duration) -> u32 {
    let start = Instant::now();
    while message_count(ch, queue).await < n && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    message_count(ch, queue).await
}

async fn drain(ch: &Channel, queue: &str) -> Vec<(String, BasicProperties)> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        out.push((String::from_utf8_lossy(&m.delivery.data).into_owned(), m.delivery.properties));
    }
    out
}

#[tokio::test]
async fn delayed_messages_arrive_after_their_delay_earliest_first() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    setup(&ch, "later", false).await;
    publish_props(&ch, "later", "k", "late", delay(600, false)).await;
    publish_props(&ch, "later", "k", "early", delay(200, false)).await;
    // No x-delay (or not a positive one): routed at once, as its type routes it.
    publish_props(&ch, "later", "k", "now", BasicProperties::default()).await;
    publish_props(&ch, "later", "k", "zero", delay(0, false)).await;
    publish_props(&ch, "later", "other-key", "unbound", delay(100, false)).await;
    assert_eq!(message_count(&ch, "later").await, 2, "only the undelayed ones so far");
    assert_eq!(wait_for(&ch, "later", 4, Duration::from_secs(5)).await, 4);
    let got = drain(&ch, "later").await;
    let bodies: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies, ["now", "zero", "early", "late"]);
    // Released with x-delay negated (a signed int), so never delayed again.
    let header =
        |p: &BasicProperties| p.headers().as_ref().unwrap().inner().get("x-delay").cloned();
    assert_eq!(header(&got[2].1), Some(AMQPValue::LongInt(-200)));
    assert_eq!(header(&got[3].1), Some(AMQPValue::LongInt(-600)));
    assert_eq!(header(&got[1].1), Some(AMQPValue::LongInt(0)), "an undelayed one is untouched");
}

#[tokio::test]
async fn declares_are_checked_as_the_plugin_checks_them() {
    let broker = TestBroker::start();
    let kind = || ExchangeKind::Custom("x-delayed-message".into());
    // 503 is a connection error: a connection per case.
    for (args, code) in [
        (FieldTable::default(), 406),
        (table(&[("x-delayed-type", AMQPValue::LongInt(1))]), 406),
        (delayed_type("no-such-type"), 503),
    ] {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        let declare = ch.exchange_declare("bad".into(), kind(), Default::default(), args);
        assert_eq!(refused(declare).await, code);
    }
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    within(ch.exchange_declare("d".into(), kind(), Default::default(), delayed_type("topic")))
        .await
        .expect("declare");
    within(ch.exchange_declare("d".into(), kind(), Default::default(), delayed_type("topic")))
        .await
        .expect("redeclare");
    let other = ch.exchange_declare(
        "d".into(),
        ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    );
    assert_eq!(refused(other).await, 406, "another type");
}

#[tokio::test]
async fn a_mandatory_delayed_publish_is_returned_and_still_delivered() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    setup(&ch, "mand", false).await;
    let confirm = within(ch.basic_publish(
        "mand".into(),
        "k".into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"m",
        delay(100, false),
    ))
    .await
    .expect("publish");
    let confirm = within(confirm).await.expect("confirm");
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("returned, as the plugin does");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(wait_for(&ch, "mand", 1, Duration::from_secs(5)).await, 1);
}

#[tokio::test]
async fn persistent_delayed_messages_survive_a_restart_with_their_due_time() {
    let mut broker = TestBroker::start();
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        setup(&ch, "kept", true).await;
        publish_props(&ch, "kept", "k", "due-while-down", delay(300, true)).await;
        publish_props(&ch, "kept", "k", "due-after", delay(2500, true)).await;
        publish_props(&ch, "kept", "k", "transient", delay(300, false)).await;
    }
    let stopped = Instant::now();
    broker.restart();
    tokio::time::sleep(Duration::from_millis(300).saturating_sub(stopped.elapsed())).await;
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    // The one due during the restart goes out at once; the other keeps its absolute time.
    assert_eq!(wait_for(&ch, "kept", 1, Duration::from_secs(2)).await, 1);
    let first = drain(&ch, "kept").await;
    assert_eq!(first[0].0, "due-while-down");
    assert_eq!(wait_for(&ch, "kept", 1, Duration::from_secs(5)).await, 1);
    assert_eq!(drain(&ch, "kept").await[0].0, "due-after");
    // The transient one was in memory only (as a transient message in a durable queue).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(message_count(&ch, "kept").await, 0);
    // Nothing comes back after another restart.
    drop((ch, conn));
    broker.restart();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(message_count(&ch, "kept").await, 0);
}

#[tokio::test]
async fn a_kill_while_delayed_messages_fall_due_loses_and_duplicates_nothing() {
    let mut broker = TestBroker::start();
    let n = 1500;
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        setup(&ch, "crashy", true).await;
        for i in 0..n {
            // Due times spread over 1.5 s, in no particular order.
            let ms = 1 + (i * 7919 % 1500) as i32;
            publish_props(&ch, "crashy", "k", &format!("m{i}"), delay(ms, true)).await;
        }
        // Killed while some are due and moving to the queue, others still held.
        while message_count(&ch, "crashy").await < (n / 3) as u32 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    broker.crash_and_restart();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    assert_eq!(wait_for(&ch, "crashy", n as u32, Duration::from_secs(10)).await, n as u32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = drain(&ch, "crashy").await;
    let unique: BTreeSet<&String> = got.iter().map(|(b, _)| b).collect();
    assert_eq!((got.len(), unique.len()), (n, n), "each confirmed message once");
}

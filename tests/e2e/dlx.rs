//! Dead-lettering, as RabbitMQ's: `x-dead-letter-exchange` / `x-dead-letter-routing-key`,
//! the reasons `rejected`, `expired` and `maxlen`, the `x-death` history, cycles, and the move
//! of persistent messages between durable queues surviving restarts and `kill -9`.
//!
//! The tests before the persistence ones check only what a client sees and clean up after
//! themselves: they pass against RabbitMQ 3.10 too (`WARREN_E2E_URL=amqp://... cargo test
//! --test e2e dlx::rabbit`); the `x-last-death-*` headers RabbitMQ 3.10 does not write are
//! checked on warren only.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

use crate::TestBroker;
use crate::broker::external;
use crate::support::{channel, message_count, publish_props, refused, table, text, within};

async fn queue(ch: &Channel, name: &str, durable: bool, args: FieldTable) {
    let _ = within(ch.queue_delete(name.into(), QueueDeleteOptions::default())).await;
    let o = QueueDeclareOptions { durable, ..Default::default() };
    within(ch.queue_declare(name.into(), o, args)).await.expect("queue.declare");
}

/// A fanout exchange `name` bound to a fresh queue of the same name.
async fn dead_letter_queue(ch: &Channel, name: &str, durable: bool) {
    let o = ExchangeDeclareOptions { durable, ..Default::default() };
    within(ch.exchange_declare(name.into(), ExchangeKind::Fanout, o, FieldTable::default()))
        .await
        .expect("exchange.declare");
    queue(ch, name, durable, FieldTable::default()).await;
    let bind = ch.queue_bind(
        name.into(),
        name.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    within(bind).await.expect("queue.bind");
}

fn dlx(exchange: &str, key: Option<&str>, more: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = table(more);
    t.insert("x-dead-letter-exchange".into(), text(exchange));
    if let Some(k) = key {
        t.insert("x-dead-letter-routing-key".into(), text(k));
    }
    t
}

/// Waits (up to 5 s) for `queue` to hold `n` messages: dead-lettering is asynchronous.
async fn wait_count(ch: &Channel, queue: &str, n: u32) -> u32 {
    for _ in 0..100 {
        if message_count(ch, queue).await == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    message_count(ch, queue).await
}

type Got = (String, String, BasicProperties, String);

/// basic.get with no-ack: (exchange, routing key, properties, body).
async fn get(ch: &Channel, queue: &str) -> Option<Got> {
    within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .map(|m| {
            let d = m.delivery;
            let body = String::from_utf8_lossy(&d.data).into_owned();
            (d.exchange.to_string(), d.routing_key.to_string(), d.properties, body)
        })
}

/// basic.get, then basic.reject without requeue.
async fn get_and_reject(ch: &Channel, queue: &str) {
    let m = within(ch.basic_get(queue.into(), BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("a message");
    let reject = ch.basic_reject(m.delivery.delivery_tag, BasicRejectOptions { requeue: false });
    within(reject).await.expect("basic.reject");
}

fn header<'a>(p: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    p.headers().as_ref()?.inner().get(key)
}

fn str_of(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The `x-death` entries, newest first.
fn deaths(p: &BasicProperties) -> Vec<FieldTable> {
    match header(p, "x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry {other:?}"),
            })
            .collect(),
        other => panic!("x-death is {other:?}"),
    }
}

fn field(t: &FieldTable, key: &str) -> Option<String> {
    str_of(t.inner().get(key))
}

fn death_count(t: &FieldTable) -> Option<i64> {
    match t.inner().get("count")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

async fn open(broker: &TestBroker) -> (Connection, Channel) {
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    (conn, ch)
}

#[tokio::test]
async fn rabbit_rejected_messages_carry_their_death() {
    let broker = TestBroker::start();
    let (_conn, ch) = open(&broker).await;
    dead_letter_queue(&ch, "dlx-r", false).await;
    queue(&ch, "dlx-r-src", false, dlx("dlx-r", None, &[])).await;
    let headers = table(&[("h", AMQPValue::LongInt(1))]);
    let props = BasicProperties::default()
        .with_headers(headers)
        .with_expiration("60000".into())
        .with_delivery_mode(2);
    publish_props(&ch, "", "dlx-r-src", "r1", props).await;
    get_and_reject(&ch, "dlx-r-src").await;
    assert_eq!(wait_count(&ch, "dlx-r", 1).await, 1);
    let (exchange, key, p, body) = get(&ch, "dlx-r").await.expect("dead-lettered");
    assert_eq!((exchange.as_str(), key.as_str(), body.as_str()), ("dlx-r", "dlx-r-src", "r1"));
    assert_eq!(p.expiration(), &None, "the copy does not expire again");
    assert_eq!(p.delivery_mode(), &Some(2));
    assert_eq!(header(&p, "h"), Some(&AMQPValue::LongInt(1)), "its own headers are kept");
    let d = deaths(&p);
    assert_eq!(d.len(), 1);
    assert_eq!(death_count(&d[0]), Some(1));
    assert_eq!(field(&d[0], "reason").as_deref(), Some("rejected"));
    assert_eq!(field(&d[0], "queue").as_deref(), Some("dlx-r-src"));
    assert_eq!(field(&d[0], "exchange").as_deref(), Some(""));
    assert_eq!(field(&d[0], "original-expiration").as_deref(), Some("60000"));
    assert!(matches!(d[0].inner().get("time"), Some(AMQPValue::Timestamp(_))));
    let keys = d[0].inner().get("routing-keys");
    assert!(
        matches!(keys, Some(AMQPValue::FieldArray(a)) if a.as_slice() == [text("dlx-r-src")]),
        "{keys:?}"
    );
    assert_eq!(str_of(header(&p, "x-first-death-reason")).as_deref(), Some("rejected"));
    assert_eq!(str_of(header(&p, "x-first-death-queue")).as_deref(), Some("dlx-r-src"));
    assert_eq!(str_of(header(&p, "x-first-death-exchange")).as_deref(), Some(""));
    if external().is_none() {
        assert_eq!(str_of(header(&p, "x-last-death-queue")).as_deref(), Some("dlx-r-src"));
    }
    // Without a dead-letter exchange a rejected message is gone.
    queue(&ch, "dlx-r-none", false, FieldTable::default()).await;
    publish_props(&ch, "", "dlx-r-none", "x", BasicProperties::default()).await;
    get_and_reject(&ch, "dlx-r-none").await;
    assert_eq!(message_count(&ch, "dlx-r-none").await, 0);
    for q in ["dlx-r", "dlx-r-src", "dlx-r-none"] {
        let _ = ch.queue_delete(q.into(), QueueDeleteOptions::default()).await;
    }
}

#[tokio::test]
async fn rabbit_a_consumers_nack_dead_letters_in_order_and_requeue_does_not() {
    let broker = TestBroker::start();
    let (conn, ch) = open(&broker).await;
    dead_letter_queue(&ch, "dlx-n", false).await;
    queue(&ch, "dlx-n-src", false, dlx("dlx-n", None, &[])).await;
    for i in 0..5 {
        publish_props(&ch, "", "dlx-n-src", &format!("m{i}"), BasicProperties::default()).await;
    }
    let cch = within(conn.create_channel()).await.expect("channel");
    let mut consumer = within(cch.basic_consume(
        "dlx-n-src".into(),
        "c".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    let mut tags = Vec::new();
    for _ in 0..5 {
        let d = within(consumer.next()).await.expect("delivery").expect("delivery");
        tags.push(d.delivery_tag);
    }
    // The first comes back (requeue); the others are dead-lettered, in order.
    within(cch.basic_nack(tags[0], BasicNackOptions { multiple: false, requeue: true }))
        .await
        .expect("nack requeue");
    within(cch.basic_nack(tags[4], BasicNackOptions { multiple: true, requeue: false }))
        .await
        .expect("nack multiple");
    assert_eq!(wait_count(&ch, "dlx-n", 4).await, 4);
    let mut bodies = Vec::new();
    while let Some((_, _, _, body)) = get(&ch, "dlx-n").await {
        bodies.push(body);
    }
    assert_eq!(bodies, ["m1", "m2", "m3", "m4"]);
    drop(consumer);
    let _ = cch.close(200, "bye".into()).await;
    for q in ["dlx-n", "dlx-n-src"] {
        let _ = ch.queue_delete(q.into(), QueueDeleteOptions::default()).await;
    }
}

#[tokio::test]
async fn rabbit_expired_and_overflowing_messages_are_dead_lettered() {
    let broker = TestBroker::start();
    let (_conn, ch) = open(&broker).await;
    dead_letter_queue(&ch, "dlx-e", false).await;
    // Expired, with a new routing key; the per-message expiration is the one recorded.
    let ttl = [("x-message-ttl", AMQPValue::LongInt(100))];
    queue(&ch, "dlx-e-ttl", false, dlx("dlx-e", Some("newkey"), &ttl)).await;
    let expiring = BasicProperties::default().with_expiration("50".into());
    publish_props(&ch, "", "dlx-e-ttl", "t1", expiring).await;
    assert_eq!(wait_count(&ch, "dlx-e", 1).await, 1, "the TTL timer dead-letters it");
    let (_, key, p, body) = get(&ch, "dlx-e").await.expect("expired copy");
    assert_eq!((key.as_str(), body.as_str()), ("newkey", "t1"));
    let d = deaths(&p);
    assert_eq!(field(&d[0], "reason").as_deref(), Some("expired"));
    assert_eq!(field(&d[0], "original-expiration").as_deref(), Some("50"));
    let keys = d[0].inner().get("routing-keys");
    assert!(matches!(keys, Some(AMQPValue::FieldArray(a)) if a.as_slice() == [text("dlx-e-ttl")]));
    // drop-head: the oldest is pushed out.
    let max1 = [("x-max-length", AMQPValue::LongInt(1))];
    queue(&ch, "dlx-e-max", false, dlx("dlx-e", None, &max1)).await;
    for b in ["m1", "m2"] {
        publish_props(&ch, "", "dlx-e-max", b, BasicProperties::default()).await;
    }
    assert_eq!(wait_count(&ch, "dlx-e", 1).await, 1);
    let (_, _, p, body) = get(&ch, "dlx-e").await.expect("pushed out");
    assert_eq!(body, "m1");
    assert_eq!(field(&deaths(&p)[0], "reason").as_deref(), Some("maxlen"));
    // reject-publish-dlx: the refused publish is nacked and dead-lettered.
    let rpd = [("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", text("reject-publish-dlx"))];
    queue(&ch, "dlx-e-rpd", false, dlx("dlx-e", None, &rpd)).await;
    publish_props(&ch, "", "dlx-e-rpd", "p1", BasicProperties::default()).await;
    let confirm = within(ch.basic_publish(
        "".into(),
        "dlx-e-rpd".into(),
        BasicPublishOptions::default(),
        b"p2",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    assert!(within(confirm).await.expect("confirm").is_nack(), "refused: nack");
    assert_eq!(wait_count(&ch, "dlx-e", 1).await, 1);
    let (_, _, p, body) = get(&ch, "dlx-e").await.expect("refused copy");
    assert_eq!(body, "p2");
    assert_eq!(field(&deaths(&p)[0], "reason").as_deref(), Some("maxlen"));
    assert_eq!(message_count(&ch, "dlx-e-rpd").await, 1);
    for q in ["dlx-e", "dlx-e-ttl", "dlx-e-max", "dlx-e-rpd"] {
        let _ = ch.queue_delete(q.into(), QueueDeleteOptions::default()).await;
    }
}

#[tokio::test]
async fn rabbit_repeated_deaths_count_and_automatic_cycles_are_dropped() {
    let broker = TestBroker::start();
    let (_conn, ch) = open(&broker).await;
    // Two queues that dead-letter into each other on reject (a client's choice: no cycle).
    queue(&ch, "dlx-c1", false, dlx("", Some("dlx-c2"), &[])).await;
    queue(&ch, "dlx-c2", false, dlx("", Some("dlx-c1"), &[])).await;
    publish_props(&ch, "", "dlx-c1", "x", BasicProperties::default()).await;
    get_and_reject(&ch, "dlx-c1").await;
    assert_eq!(wait_count(&ch, "dlx-c2", 1).await, 1);
    get_and_reject(&ch, "dlx-c2").await;
    assert_eq!(wait_count(&ch, "dlx-c1", 1).await, 1);
    get_and_reject(&ch, "dlx-c1").await;
    assert_eq!(wait_count(&ch, "dlx-c2", 1).await, 1);
    let (_, _, p, _) = get(&ch, "dlx-c2").await.expect("third death");
    let d = deaths(&p);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((field(&d[0], "queue").as_deref(), death_count(&d[0])), (Some("dlx-c1"), Some(2)));
    assert_eq!((field(&d[1], "queue").as_deref(), death_count(&d[1])), (Some("dlx-c2"), Some(1)));
    assert_eq!(str_of(header(&p, "x-first-death-queue")).as_deref(), Some("dlx-c1"));
    // A queue whose expired messages come back to it: dropped, not looping.
    let ttl = [("x-message-ttl", AMQPValue::LongInt(50))];
    queue(&ch, "dlx-cyc", false, dlx("", None, &ttl)).await;
    publish_props(&ch, "", "dlx-cyc", "c", BasicProperties::default()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(message_count(&ch, "dlx-cyc").await, 0);
    // A missing dead-letter exchange: dropped, no error.
    queue(&ch, "dlx-gone", false, dlx("no-such-exchange", None, &[])).await;
    publish_props(&ch, "", "dlx-gone", "g", BasicProperties::default()).await;
    get_and_reject(&ch, "dlx-gone").await;
    assert_eq!(message_count(&ch, "dlx-gone").await, 0);
    for q in ["dlx-c1", "dlx-c2", "dlx-cyc", "dlx-gone"] {
        let _ = ch.queue_delete(q.into(), QueueDeleteOptions::default()).await;
    }
}

#[tokio::test]
async fn rabbit_bad_dead_letter_arguments_are_refused_with_406() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    for args in [
        table(&[("x-dead-letter-routing-key", text("k"))]),
        table(&[("x-dead-letter-exchange", AMQPValue::LongInt(5))]),
        dlx("e", None, &[("x-dead-letter-routing-key", AMQPValue::LongInt(5))]),
    ] {
        let ch = within(conn.create_channel()).await.expect("channel");
        let declare = ch.queue_declare("dlx-bad".into(), QueueDeclareOptions::default(), args);
        assert_eq!(refused(declare).await, 406);
    }
}

/// Persistent messages to a durable queue with a durable dead-letter queue.
async fn durable_pair(ch: &Channel, src: &str, dead: &str) {
    dead_letter_queue(ch, dead, true).await;
    queue(ch, src, true, dlx(dead, None, &[])).await;
}

async fn publish_persistent(ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        let p = BasicProperties::default().with_delivery_mode(2);
        publish_props(ch, "", queue, &format!("m{i}"), p).await;
    }
}

async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((_, _, _, body)) = get(ch, queue).await {
        out.push(body);
    }
    out
}

#[tokio::test]
async fn dead_lettered_persistent_messages_survive_a_restart_once() {
    let mut broker = TestBroker::start();
    let (conn, ch) = open(&broker).await;
    durable_pair(&ch, "dlx-p-src", "dlx-p").await;
    publish_persistent(&ch, "dlx-p-src", 10).await;
    for _ in 0..6 {
        get_and_reject(&ch, "dlx-p-src").await;
    }
    assert_eq!(wait_count(&ch, "dlx-p", 6).await, 6);
    drop((ch, conn));
    broker.restart();
    let (_conn, ch) = open(&broker).await;
    assert_eq!(drain(&ch, "dlx-p-src").await, ["m6", "m7", "m8", "m9"]);
    let dead = drain(&ch, "dlx-p").await;
    assert_eq!(dead, ["m0", "m1", "m2", "m3", "m4", "m5"]);
    // Nothing comes back after another restart either.
    drop(ch);
    broker.restart();
    let (_conn, ch) = open(&broker).await;
    assert_eq!(message_count(&ch, "dlx-p-src").await + message_count(&ch, "dlx-p").await, 0);
}

#[tokio::test]
async fn a_kill_during_dead_lettering_loses_and_duplicates_nothing() {
    let mut broker = TestBroker::start();
    let n = 3000;
    {
        let (_conn, ch) = open(&broker).await;
        durable_pair(&ch, "dlx-k-src", "dlx-k").await;
        publish_persistent(&ch, "dlx-k-src", n).await;
    }
    // A consumer rejects everything as fast as it comes; killed in the middle of it.
    let conn = broker.connect().await;
    let cch = within(conn.create_channel()).await.expect("channel");
    let mut consumer = within(cch.basic_consume(
        "dlx-k-src".into(),
        "c".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    let rejecter = tokio::spawn(async move {
        let mut rejected = 0;
        while let Some(Ok(d)) = consumer.next().await {
            if rejected % 4 == 0 {
                // Slow enough that the kill lands with moves both on disk and in flight.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let r = cch.basic_reject(d.delivery_tag, BasicRejectOptions { requeue: false });
            if r.await.is_err() {
                break;
            }
            rejected += 1;
        }
        rejected
    });
    let (_probe, pch) = open(&broker).await;
    while message_count(&pch, "dlx-k").await < (n / 3) as u32 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Past the store's sync period: the first moves are on disk, later ones not yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.crash_and_restart();
    let rejected = within(rejecter).await.expect("rejecter");
    drop(conn);
    let (_conn, ch) = open(&broker).await;
    let src = drain(&ch, "dlx-k-src").await;
    let dead = drain(&ch, "dlx-k").await;
    let all: BTreeSet<&String> = src.iter().chain(&dead).collect();
    assert_eq!(src.len() + dead.len(), n, "every message once: {} + {}", src.len(), dead.len());
    assert_eq!(all.len(), n, "no duplicates");
    // How many moves had committed (reached the disk) depends on the moment of the kill.
    eprintln!(
        "{rejected} rejected before the kill; after it {} dead-lettered, {} back",
        dead.len(),
        src.len()
    );
}

#[tokio::test]
async fn a_kill_while_messages_expire_into_a_dead_letter_queue_loses_and_duplicates_nothing() {
    let mut broker = TestBroker::start();
    let n = 2000;
    {
        let (_conn, ch) = open(&broker).await;
        dead_letter_queue(&ch, "dlx-t", true).await;
        let ttl = [("x-message-ttl", AMQPValue::LongInt(1000))];
        queue(&ch, "dlx-t-src", true, dlx("dlx-t", None, &ttl)).await;
        // Published in one burst (confirms awaited together), so that they expire in one.
        let mut confirms = Vec::new();
        for i in 0..n {
            let p = BasicProperties::default().with_delivery_mode(2);
            let body = format!("m{i}");
            let c = ch.basic_publish(
                "".into(),
                "dlx-t-src".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                p,
            );
            confirms.push(within(c).await.expect("publish"));
        }
        for c in confirms {
            assert!(within(c).await.expect("confirm").is_ack());
        }
        // Killed while the TTL timer moves them to the dead-letter queue.
        while message_count(&ch, "dlx-t").await == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    broker.crash_and_restart();
    let (_conn, ch) = open(&broker).await;
    // Those left in the source expire again after the restart (their TTL counts from there).
    assert_eq!(wait_count(&ch, "dlx-t", n as u32).await, n as u32);
    let dead = drain(&ch, "dlx-t").await;
    let unique: BTreeSet<&String> = dead.iter().collect();
    assert_eq!((dead.len(), unique.len()), (n, n), "each message once");
    assert_eq!(message_count(&ch, "dlx-t-src").await, 0);
}

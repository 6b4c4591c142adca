//! Publishing: properties and headers round trip byte-exact, mandatory returns, unroutable
//! drops, immediate, missing exchanges, body sizes around frame-max and above the configured
//! maximum, publisher confirms, transactions and the tx/confirm exclusion.
//!
//! Also holds the small helpers the `consume` and `acks` modules share.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer};

use crate::TestBroker;

/// How long anything that should happen may take.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How long we watch for something that should not happen.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// The reply code of a broker error (channel or connection close).
pub(crate) fn close_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// Declares a plain (non-durable) queue.
pub(crate) async fn declare(ch: &Channel, name: &str) {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("queue.declare");
}

/// Ready messages in `queue` (passive declare).
pub(crate) async fn ready(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions { passive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("passive queue.declare")
    .message_count()
}

/// Polls until `queue` holds `n` ready messages (for effects of another connection).
pub(crate) async fn wait_ready(ch: &Channel, queue: &str, n: u32) {
    tokio::time::timeout(WAIT, async {
        while ready(ch, queue).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("queue '{queue}' did not reach {n} ready messages"));
}

/// Publishes `body` to `queue` through the default exchange.
pub(crate) async fn publish(ch: &Channel, queue: &str, body: &[u8]) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .expect("basic.publish");
}

/// Publishes `m1`..`mN` to `queue`.
pub(crate) async fn publish_numbered(ch: &Channel, queue: &str, n: usize) {
    for i in 1..=n {
        publish(ch, queue, format!("m{i}").as_bytes()).await;
    }
}

/// basic.get with manual ack.
pub(crate) async fn get(ch: &Channel, queue: &str) -> Option<BasicGetMessage> {
    tokio::time::timeout(WAIT, ch.basic_get(queue.into(), BasicGetOptions::default()))
        .await
        .expect("basic.get answered")
        .expect("basic.get")
}

/// basic.get with manual ack, expecting a message.
pub(crate) async fn get_some(ch: &Channel, queue: &str) -> BasicGetMessage {
    get(ch, queue).await.expect("a message, not get-empty")
}

/// Takes every ready message out of `queue` (no-ack gets): (body, redelivered) in order.
pub(crate) async fn drain(ch: &Channel, queue: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    loop {
        let got = tokio::time::timeout(
            WAIT,
            ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .expect("basic.get answered")
        .expect("basic.get");
        match got {
            Some(m) => out.push((body(&m.delivery), m.delivery.redelivered)),
            None => return out,
        }
    }
}

/// A delivery's body as text.
pub(crate) fn body(d: &Delivery) -> String {
    String::from_utf8(d.data.clone()).expect("utf-8 body")
}

/// Starts a consumer.
pub(crate) async fn consume(ch: &Channel, queue: &str, tag: &str, no_ack: bool) -> Consumer {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions { no_ack, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

/// The consumer's next delivery.
pub(crate) async fn next(consumer: &mut Consumer) -> Delivery {
    match tokio::time::timeout(WAIT, consumer.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("consumer error: {e}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => panic!("no delivery within {WAIT:?}"),
    }
}

/// Whatever the consumer receives until it has been quiet for `QUIET`.
pub(crate) async fn quiet(consumer: &mut Consumer) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(QUIET, consumer.next()).await {
        out.push(d);
    }
    out
}

/// A consumer on a private server-named queue of `ch`: nothing is ever delivered to it, and its
/// stream reports the error that closes the channel (or the connection). Used to learn the
/// reply code after an asynchronous method (publish, ack) the broker refuses.
pub(crate) async fn watch(ch: &Channel) -> Consumer {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("watcher queue");
    consume(ch, q.name().as_str(), "watcher", false).await
}

/// The reply code of the close that ended the watcher's channel.
pub(crate) async fn closed_with(watcher: &mut Consumer) -> u16 {
    tokio::time::timeout(WAIT, async {
        while let Some(d) = watcher.next().await {
            if let Err(e) = d {
                return close_code(&e).unwrap_or_else(|| panic!("not a broker error: {e}"));
            }
        }
        panic!("watcher ended without an error")
    })
    .await
    .expect("the broker closed the channel")
}

/// The connection still works: a new channel can declare, publish and get.
pub(crate) async fn assert_usable(conn: &Connection) {
    assert!(conn.status().connected(), "connection still open");
    let ch = conn.create_channel().await.expect("a new channel");
    declare(&ch, "still-usable").await;
    publish(&ch, "still-usable", b"ping").await;
    let m = get_some(&ch, "still-usable").await;
    assert_eq!(m.delivery.data, b"ping");
    m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    ch.close(200, "bye".into()).await.expect("close");
}

fn every_header_type() -> FieldTable {
    let mut deeper = FieldTable::default();
    deeper.insert("level".into(), AMQPValue::LongLongInt(3));
    deeper.insert("empty".into(), AMQPValue::FieldTable(FieldTable::default()));
    let mut nested = FieldTable::default();
    nested.insert("text".into(), AMQPValue::LongString("ünïcödé ✓ 漢字 🐇".into()));
    nested.insert("deeper".into(), AMQPValue::FieldTable(deeper));
    nested.insert("flag".into(), AMQPValue::Boolean(false));

    let mut in_array = FieldTable::default();
    in_array.insert("k".into(), AMQPValue::ShortInt(-2));
    let array = FieldArray::from(vec![
        AMQPValue::LongString("first".into()),
        AMQPValue::LongInt(-7),
        AMQPValue::Boolean(true),
        AMQPValue::Double(0.5),
        AMQPValue::FieldTable(in_array),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::ShortShortUInt(1)])),
        AMQPValue::FieldArray(FieldArray::default()),
        AMQPValue::Void,
    ]);

    let mut h = FieldTable::default();
    h.insert(
        "string".into(),
        AMQPValue::LongString("héllo wörld — Ελληνικά, 日本語, emoji 🎉".into()),
    );
    h.insert("empty-string".into(), AMQPValue::LongString("".into()));
    h.insert("ключ-ünicode".into(), AMQPValue::LongString("value".into()));
    h.insert("true".into(), AMQPValue::Boolean(true));
    h.insert("false".into(), AMQPValue::Boolean(false));
    h.insert("i8".into(), AMQPValue::ShortShortInt(-128));
    h.insert("u8".into(), AMQPValue::ShortShortUInt(255));
    h.insert("i16".into(), AMQPValue::ShortInt(-32768));
    h.insert("u16".into(), AMQPValue::ShortUInt(65535));
    h.insert("i32".into(), AMQPValue::LongInt(i32::MIN));
    h.insert("u32".into(), AMQPValue::LongUInt(u32::MAX));
    h.insert("i64".into(), AMQPValue::LongLongInt(i64::MIN));
    h.insert("i64-max".into(), AMQPValue::LongLongInt(i64::MAX));
    h.insert("f32".into(), AMQPValue::Float(-1.25));
    h.insert("f64".into(), AMQPValue::Double(6.02214076e23));
    h.insert("decimal".into(), AMQPValue::DecimalValue(DecimalValue { scale: 3, value: 123_456 }));
    h.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    h.insert("bytes".into(), AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 0x7f, 0x80, 0xff])));
    h.insert("array".into(), AMQPValue::FieldArray(array));
    h.insert("nested".into(), AMQPValue::FieldTable(nested));
    h.insert("void".into(), AMQPValue::Void);
    h
}

fn every_property() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json; charset=utf-8".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_header_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42-ü".into())
        .with_reply_to("replies".into())
        .with_expiration("600000".into())
        .with_message_id("msg-0001".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("warren-e2e".into())
        .with_cluster_id("cluster-x".into())
}

#[tokio::test]
async fn round_trip_keeps_every_property_and_header_type() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "props").await;
    let props = every_property();
    let payload = "body with ünïcödé and \0 nul".as_bytes();
    ch.basic_publish(
        "".into(),
        "props".into(),
        BasicPublishOptions::default(),
        payload,
        props.clone(),
    )
    .await
    .expect("publish");

    let mut consumer = consume(&ch, "props", "", false).await;
    let d = next(&mut consumer).await;
    assert_eq!(d.properties, props, "properties arrive exactly as sent");
    assert_eq!(d.data, payload);
    assert_eq!(d.exchange.as_str(), "");
    assert_eq!(d.routing_key.as_str(), "props");
    assert!(!d.redelivered);
    d.ack(BasicAckOptions::default()).await.expect("ack");

    // And through basic.get as well.
    ch.basic_publish(
        "".into(),
        "props".into(),
        BasicPublishOptions::default(),
        payload,
        props.clone(),
    )
    .await
    .expect("publish");
    let d = next(&mut consumer).await;
    assert_eq!(d.properties, props);
    ch.basic_cancel(consumer.tag(), Default::default()).await.expect("cancel");
    d.ack(BasicAckOptions::default()).await.expect("ack");
    ch.basic_publish(
        "".into(),
        "props".into(),
        BasicPublishOptions::default(),
        payload,
        props.clone(),
    )
    .await
    .expect("publish");
    let m = get_some(&ch, "props").await;
    assert_eq!(m.delivery.properties, props);
    assert_eq!(m.delivery.data, payload);
}

#[tokio::test]
async fn mandatory_unroutable_is_returned_before_its_confirm() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let props = BasicProperties::default().with_message_id("lost".into()).with_priority(3);
    // Default exchange, no such queue; then a real exchange with no binding.
    for exchange in ["", "amq.direct"] {
        let confirm = ch
            .basic_publish(
                exchange.into(),
                "nowhere".into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                b"returned body",
                props.clone(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmation");
        assert!(confirm.is_ack(), "an unroutable message is still acked");
        let returned =
            confirm.take_message().expect("the basic.return arrived before the basic.ack");
        assert_eq!(returned.reply_code, 312);
        assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
        assert_eq!(returned.delivery.exchange.as_str(), exchange);
        assert_eq!(returned.delivery.routing_key.as_str(), "nowhere");
        assert_eq!(returned.delivery.properties, props);
        assert_eq!(returned.delivery.data, b"returned body");
    }
    assert!(ch.wait_for_confirms().await.expect("confirms").is_empty());
    assert_usable(&conn).await;
}

#[tokio::test]
async fn mandatory_unroutable_is_returned_without_confirms() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    ch.basic_publish(
        "".into(),
        "nowhere".into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"back to you",
        BasicProperties::default(),
    )
    .await
    .expect("publish");
    // The broker handles a channel's methods in order: once this answer is in, the return
    // (sent before it) has arrived too.
    declare(&ch, "sync").await;
    let returned = ch.wait_for_confirms().await.expect("returned messages");
    assert_eq!(returned.len(), 1, "one basic.return");
    assert_eq!(returned[0].reply_code, 312);
    assert_eq!(returned[0].delivery.data, b"back to you");
    assert!(ch.status().connected());
}

#[tokio::test]
async fn unroutable_without_mandatory_is_dropped_silently() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for exchange in ["", "amq.direct", "amq.fanout"] {
        let confirm = ch
            .basic_publish(
                exchange.into(),
                "nowhere".into(),
                BasicPublishOptions::default(),
                b"dropped",
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmation");
        assert!(confirm.is_ack(), "acked");
        assert!(confirm.take_message().is_none(), "not returned");
    }
    declare(&ch, "sync").await;
    assert!(ch.wait_for_confirms().await.expect("confirms").is_empty());
    assert!(ch.status().connected(), "channel still open");
}

#[tokio::test]
async fn immediate_publish_closes_the_connection_with_540() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let mut watcher = watch(&ch).await;
    // Publishing may or may not fail locally depending on how fast the close arrives.
    let _ = ch
        .basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions { immediate: true, ..Default::default() },
            b"now or never",
            BasicProperties::default(),
        )
        .await;
    assert_eq!(closed_with(&mut watcher).await, 540, "NOT_IMPLEMENTED");
    tokio::time::timeout(WAIT, async {
        while conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the whole connection is closed");
    // The message was not enqueued.
    let (_c2, ch2) = broker.channel().await;
    assert_eq!(ready(&ch2, "q").await, 0);
}

#[tokio::test]
async fn publish_to_a_missing_exchange_closes_the_channel_with_404() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let other = conn.create_channel().await.expect("second channel");
    let mut watcher = watch(&ch).await;
    let _ = ch
        .basic_publish(
            "no-such-exchange".into(),
            "rk".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    assert_eq!(closed_with(&mut watcher).await, 404);
    assert!(!ch.status().connected(), "channel closed");
    declare(&other, "other-still-works").await;
    assert_usable(&conn).await;
}

#[tokio::test]
async fn bodies_around_frame_max_and_large_ones_arrive_intact() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let frame_max = conn.configuration().frame_max() as usize;
    assert_eq!(frame_max, 131072, "negotiated frame-max");
    declare(&ch, "sizes").await;
    let sizes = [
        0,
        1,
        frame_max - 8,
        frame_max - 7,
        2 * (frame_max - 8),
        2 * (frame_max - 8) + 1,
        10 * 1024 * 1024,
    ];
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(n, &size)| (0..size).map(|i| ((i * 31 + n) % 251) as u8).collect())
        .collect();
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    for b in &bodies {
        let c = ch
            .basic_publish(
                "".into(),
                "sizes".into(),
                BasicPublishOptions::default(),
                b,
                BasicProperties::default().with_message_id(b.len().to_string().into()),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(c.is_ack(), "size {} acked", b.len());
    }
    let mut consumer = consume(&ch, "sizes", "", true).await;
    for b in &bodies {
        let d = next(&mut consumer).await;
        assert_eq!(
            d.properties.message_id().as_ref().map(|s| s.as_str()),
            Some(b.len().to_string().as_str())
        );
        assert_eq!(d.data.len(), b.len(), "length of the {} byte body", b.len());
        assert!(d.data == *b, "the {} byte body arrived intact", b.len());
    }
    // And basic.get of a multi-frame body.
    ch.basic_cancel(consumer.tag(), Default::default()).await.expect("cancel");
    let big = &bodies[bodies.len() - 1];
    ch.basic_publish(
        "".into(),
        "sizes".into(),
        BasicPublishOptions::default(),
        big,
        BasicProperties::default(),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
    let m = get_some(&ch, "sizes").await;
    assert!(m.delivery.data == *big, "10 MiB via basic.get intact");
}

/// Small and large bodies streamed together: large ones leave the broker from their own
/// buffers between the frames around them (vectored writes), small ones are copied.
#[tokio::test]
async fn streamed_mix_of_small_and_large_bodies_arrives_in_order_and_intact() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "mix").await;
    let sizes: Vec<usize> =
        (0..400).map(|i| if i % 3 == 0 { 10 } else { (i * 7919) % 150_000 }).collect();
    let body = |n: usize, size: usize| -> Vec<u8> {
        (0..size).map(|i| ((i + n * 13) % 253) as u8).collect()
    };
    let mut consumer = consume(&ch, "mix", "", true).await;
    for (n, &size) in sizes.iter().enumerate() {
        ch.basic_publish(
            "".into(),
            "mix".into(),
            BasicPublishOptions::default(),
            &body(n, size),
            BasicProperties::default().with_message_id(n.to_string().into()),
        )
        .await
        .expect("publish");
    }
    for (n, &size) in sizes.iter().enumerate() {
        let d = next(&mut consumer).await;
        assert_eq!(d.properties.message_id().as_ref().map(|s| s.to_string()), Some(n.to_string()));
        assert!(d.data == body(n, size), "message {n} ({size} bytes) intact");
    }
}

#[tokio::test]
async fn body_above_max_message_size_closes_the_channel_with_406() {
    let broker = TestBroker::start_with(&["--max-message-size", "1000"], &[]);
    let (conn, ch) = broker.channel().await;
    declare(&ch, "limited").await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    // Exactly the maximum is fine.
    let ok = ch
        .basic_publish(
            "".into(),
            "limited".into(),
            BasicPublishOptions::default(),
            &[7u8; 1000],
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(ok.is_ack());
    let mut watcher = watch(&ch).await;
    let _ = ch
        .basic_publish(
            "".into(),
            "limited".into(),
            BasicPublishOptions::default(),
            &[7u8; 2000],
            BasicProperties::default(),
        )
        .await;
    assert_eq!(closed_with(&mut watcher).await, 406, "PRECONDITION_FAILED");
    assert_usable(&conn).await;
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(ready(&ch2, "limited").await, 1, "only the 1000 byte message");
}

#[tokio::test]
async fn ten_thousand_publisher_confirms_are_all_acked() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "confirmed").await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    const N: usize = 10_000;
    let mut pending = Vec::with_capacity(N);
    for i in 0..N {
        pending.push(
            ch.basic_publish(
                "".into(),
                "confirmed".into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        );
    }
    let returned = tokio::time::timeout(Duration::from_secs(60), ch.wait_for_confirms())
        .await
        .expect("all confirmed in time")
        .expect("wait_for_confirms");
    assert!(returned.is_empty());
    let mut acked = 0;
    for p in pending {
        let c = tokio::time::timeout(WAIT, p)
            .await
            .expect("confirmation in time")
            .expect("confirmation");
        assert!(c.is_ack(), "{c:?}");
        acked += 1;
    }
    assert_eq!(acked, N);
    assert_eq!(ready(&ch, "confirmed").await, N as u32);
}

#[tokio::test]
async fn tx_publishes_appear_only_at_commit() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let observer = conn.create_channel().await.expect("observer");
    declare(&ch, "txq").await;
    ch.tx_select().await.expect("tx.select");
    publish_numbered(&ch, "txq", 3).await;
    // Synchronise on the publishing channel, then look from another one.
    declare(&ch, "sync").await;
    assert_eq!(ready(&observer, "txq").await, 0, "nothing before commit");
    assert!(get(&observer, "txq").await.is_none());
    ch.tx_commit().await.expect("tx.commit");
    assert_eq!(ready(&observer, "txq").await, 3, "all three after commit");
    assert_eq!(
        drain(&observer, "txq").await,
        vec![("m1".to_string(), false), ("m2".to_string(), false), ("m3".to_string(), false)]
    );
    // The channel stays transactional: the next publish waits for the next commit.
    publish(&ch, "txq", b"m4").await;
    declare(&ch, "sync").await;
    assert_eq!(ready(&observer, "txq").await, 0);
    ch.tx_commit().await.expect("tx.commit");
    assert_eq!(ready(&observer, "txq").await, 1);
}

#[tokio::test]
async fn tx_rollback_discards_publishes_and_acks() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let observer = conn.create_channel().await.expect("observer");
    declare(&ch, "txq").await;
    publish(&observer, "txq", b"held").await;
    assert_eq!(ready(&observer, "txq").await, 1);

    ch.tx_select().await.expect("tx.select");
    let held = get_some(&ch, "txq").await;
    assert_eq!(held.delivery.data, b"held");
    held.delivery.ack(BasicAckOptions::default()).await.expect("ack in tx");
    publish_numbered(&ch, "txq", 2).await;
    ch.tx_rollback().await.expect("tx.rollback");
    ch.tx_commit().await.expect("an empty commit");
    assert_eq!(ready(&observer, "txq").await, 0, "rolled-back publishes never appear");

    // The rolled-back ack was not applied: the message is still unacked on `ch`, and closing
    // the channel puts it back.
    ch.close(200, "bye".into()).await.expect("close");
    assert_eq!(drain(&observer, "txq").await, vec![("held".to_string(), true)]);
}

#[tokio::test]
async fn confirm_select_on_a_tx_channel_is_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    ch.tx_select().await.expect("tx.select");
    let err = ch.confirm_select(ConfirmSelectOptions::default()).await.expect_err("refused");
    assert_eq!(close_code(&err), Some(406), "{err}");
    assert_usable(&conn).await;
}

#[tokio::test]
async fn tx_select_on_a_confirm_channel_is_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
    let err = ch.tx_select().await.expect_err("refused");
    assert_eq!(close_code(&err), Some(406), "{err}");
    assert_usable(&conn).await;
}

#[tokio::test]
async fn user_id_of_another_user_is_refused_with_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let mut watcher = watch(&ch).await;
    let _ = ch
        .basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            b"impostor",
            BasicProperties::default().with_user_id("admin".into()),
        )
        .await;
    assert_eq!(closed_with(&mut watcher).await, 406, "PRECONDITION_FAILED");
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(ready(&ch2, "q").await, 0, "not enqueued");
}

#[tokio::test]
async fn invalid_expiration_is_refused_with_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let mut watcher = watch(&ch).await;
    let _ = ch
        .basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            b"when?",
            BasicProperties::default().with_expiration("soon".into()),
        )
        .await;
    assert_eq!(closed_with(&mut watcher).await, 406, "PRECONDITION_FAILED");
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(ready(&ch2, "q").await, 0, "not enqueued");
}

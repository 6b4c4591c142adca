//! Stream queues (`x-queue-type: stream`) over AMQP 0-9-1, as RabbitMQ's: declares and their
//! refusals, consumers at `x-stream-offset` first / last / next / a number / a timestamp / an
//! interval with the `x-stream-offset` header on each delivery, acks that give credit and
//! remove nothing, independent consumers, what streams refuse (540 / 406), publishes with
//! confirms, mandatory and transactions, delete with live consumers; then what only warren's
//! own process shows: restarts, retention by size and age, `kill -9` with dense offsets,
//! filtering, the management API.
//!
//! The `rabbit_` tests pass against RabbitMQ 3.10 too (`WARREN_E2E_URL=amqp://... cargo test
//! --test e2e streams::rabbit`), as recorded in `interop/streams/rabbitmq-3.10.8.md`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer};

use crate::TestBroker;
use crate::publish::closed_with;
use crate::support::{
    channel, delete_queues as delete, durable, fresh, publish_props, refused, table, text, typed,
    within,
};

fn stream(more: &[(&str, AMQPValue)]) -> FieldTable {
    typed("stream", more)
}

/// Publishes `bodies` one at a time, each confirmed (one chunk each, as RabbitMQ writes them).
async fn publish_all(ch: &Channel, queue: &str, bodies: &[String]) {
    for b in bodies {
        publish_props(ch, "", queue, b, BasicProperties::default()).await;
    }
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// A consumer on a new channel with a per-consumer prefetch of `prefetch`.
async fn reader(conn: &Connection, queue: &str, prefetch: u16, args: FieldTable) -> Consumer {
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.basic_qos(prefetch, BasicQosOptions::default())).await.expect("basic.qos");
    within(ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), args))
        .await
        .expect("basic.consume")
}

fn offset_arg(v: AMQPValue) -> FieldTable {
    table(&[("x-stream-offset", v)])
}

/// The `x-stream-offset` header of a delivery.
fn offset_of(d: &lapin::message::Delivery) -> i64 {
    match d.properties.headers().as_ref().and_then(|h| h.inner().get("x-stream-offset")) {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("x-stream-offset is {other:?}"),
    }
}

/// Deliveries that arrive within `quiet` of each other (up to `max`), acked as they come
/// if `ack`: (body, offset).
async fn take(c: &mut Consumer, max: usize, quiet: Duration, ack: bool) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    while out.len() < max {
        let Ok(Some(d)) = tokio::time::timeout(quiet, c.next()).await else { break };
        let d = d.expect("delivery");
        assert!(!d.redelivered, "stream deliveries are never redelivered");
        out.push((String::from_utf8_lossy(&d.data).into_owned(), offset_of(&d)));
        if ack {
            within(d.ack(BasicAckOptions::default())).await.expect("ack");
        }
    }
    out
}

fn bodies(got: &[(String, i64)]) -> Vec<String> {
    got.iter().map(|(b, _)| b.clone()).collect()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

const QUIET: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn rabbit_declares_are_checked_as_rabbitmq_does() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let args = stream(&[
        ("x-max-length-bytes", AMQPValue::LongLongInt(1_000_000)),
        ("x-max-age", text("7D")),
        ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(500_000)),
        ("x-initial-cluster-size", AMQPValue::LongLongInt(3)),
    ]);
    fresh(&ch, "st-decl", args.clone()).await;
    // The same arguments again (an int32 equals a long): fine; passive: fine.
    let mut same = args.clone();
    same.insert("x-max-length-bytes".into(), AMQPValue::LongInt(1_000_000));
    let ok = within(ch.queue_declare("st-decl".into(), durable(), same)).await.expect("redeclare");
    assert_eq!(ok.consumer_count(), 0);
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    within(ch.queue_declare("st-decl".into(), passive, FieldTable::default()))
        .await
        .expect("passive");
    let mut other_size = args.clone();
    other_size.insert("x-max-length-bytes".into(), AMQPValue::LongLongInt(2_000_000));
    let no_type = table(&[
        ("x-max-length-bytes", AMQPValue::LongLongInt(1_000_000)),
        ("x-max-age", text("7D")),
        ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(500_000)),
        ("x-initial-cluster-size", AMQPValue::LongLongInt(3)),
    ]);
    for (options, args) in [
        // Properties a stream cannot have.
        (QueueDeclareOptions::default(), stream(&[])),
        (QueueDeclareOptions { exclusive: true, ..durable() }, stream(&[])),
        (QueueDeclareOptions { auto_delete: true, ..durable() }, stream(&[])),
        // Arguments of other queue types.
        (durable(), stream(&[("x-max-length", AMQPValue::LongLongInt(10))])),
        (durable(), stream(&[("x-message-ttl", AMQPValue::LongLongInt(1000))])),
        (durable(), stream(&[("x-dead-letter-exchange", text("dlx"))])),
        (durable(), stream(&[("x-single-active-consumer", AMQPValue::Boolean(false))])),
        // Bad values.
        (durable(), stream(&[("x-max-age", text("10"))])),
        (durable(), stream(&[("x-max-age", text("1W"))])),
        (durable(), stream(&[("x-max-age", AMQPValue::LongLongInt(3600))])),
        (durable(), stream(&[("x-max-length-bytes", AMQPValue::LongLongInt(-1))])),
        (durable(), stream(&[("x-max-length-bytes", text("1000"))])),
        (durable(), stream(&[("x-initial-cluster-size", AMQPValue::LongLongInt(0))])),
        (
            durable(),
            stream(&[("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(10_000_000_000))]),
        ),
    ] {
        let ch = channel(&conn).await;
        assert_eq!(refused(ch.queue_declare("st-bad".into(), options, args)).await, 406);
    }
    // A redeclare must repeat the stream's arguments; a server-named stream is refused.
    for args in [other_size, no_type, stream(&[])] {
        let ch = channel(&conn).await;
        assert_eq!(refused(ch.queue_declare("st-decl".into(), durable(), args)).await, 406);
    }
    let ch = channel(&conn).await;
    assert_eq!(refused(ch.queue_declare("".into(), durable(), stream(&[]))).await, 406);
    let ch = channel(&conn).await;
    let missing = ch.queue_declare("st-bad".into(), passive, FieldTable::default());
    assert_eq!(refused(missing).await, 404, "nothing refused was created");
    delete(&conn, &["st-decl"]).await;
}

#[tokio::test]
async fn rabbit_consumers_start_at_the_offset_they_ask_for() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-off", stream(&[])).await;
    publish_all(&ch, "st-off", &numbered("m", 10)).await;
    let starts: Vec<(&str, FieldTable, usize)> = vec![
        ("default (next)", FieldTable::default(), 10),
        ("first", offset_arg(text("first")), 0),
        ("last", offset_arg(text("last")), 9),
        ("next", offset_arg(text("next")), 10),
        ("long 5", offset_arg(AMQPValue::LongLongInt(5)), 5),
        ("short 5", offset_arg(AMQPValue::ShortInt(5)), 5),
        ("long -1", offset_arg(AMQPValue::LongLongInt(-1)), 0),
        ("long 10", offset_arg(AMQPValue::LongLongInt(10)), 10),
        ("timestamp an hour ago", offset_arg(AMQPValue::Timestamp(now_secs() - 3600)), 0),
        ("timestamp in an hour", offset_arg(AMQPValue::Timestamp(now_secs() + 3600)), 10),
        ("interval 10m", offset_arg(text("10m")), 0),
    ];
    let mut readers = Vec::new();
    for (what, args, _) in &starts {
        readers.push((what, reader(&conn, "st-off", 100, args.clone()).await));
    }
    let mut firsts = Vec::new();
    for (what, c) in &mut readers {
        firsts.push((what.to_string(), take(c, 20, QUIET, true).await));
    }
    publish_all(&ch, "st-off", &["live".to_string()]).await;
    for ((what, before), (_, (_, c))) in firsts.iter().zip(readers.iter_mut().enumerate()) {
        let expected_first = starts.iter().find(|s| s.0 == what).unwrap().2;
        let expected: Vec<(String, i64)> =
            (expected_first..10).map(|i| (format!("m{i}"), i as i64)).collect();
        assert_eq!(before, &expected, "{what}: what was there");
        let live = take(c, 5, QUIET, true).await;
        assert_eq!(live, vec![("live".to_string(), 10)], "{what}: then the live message");
    }
    // An offset past the end waits for it.
    let mut ahead = reader(&conn, "st-off", 10, offset_arg(AMQPValue::LongLongInt(12))).await;
    assert!(take(&mut ahead, 5, Duration::from_millis(500), true).await.is_empty());
    publish_all(&ch, "st-off", &numbered("n", 3)).await;
    let got = take(&mut ahead, 5, QUIET, true).await;
    assert_eq!(got, vec![("n1".to_string(), 12), ("n2".to_string(), 13)]);
    delete(&conn, &["st-off"]).await;
}

#[tokio::test]
async fn rabbit_acks_give_credit_and_remove_nothing() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-ack", stream(&[])).await;
    publish_all(&ch, "st-ack", &numbered("m", 10)).await;
    let ch2 = within(conn.create_channel()).await.expect("channel");
    within(ch2.basic_qos(2, BasicQosOptions::default())).await.expect("qos");
    let mut c = within(ch2.basic_consume(
        "st-ack".into(),
        "c".into(),
        BasicConsumeOptions::default(),
        offset_arg(text("first")),
    ))
    .await
    .expect("consume");
    let mut tags = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let d = within(c.next()).await.expect("delivery").expect("ok");
        tags.push(d.delivery_tag);
        seen.push(String::from_utf8_lossy(&d.data).into_owned());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(700), c.next()).await.is_err(),
        "no third delivery before an ack: the prefetch holds"
    );
    // One ack, one more delivery; a multiple ack of two, two more.
    within(ch2.basic_ack(tags[1], BasicAckOptions::default())).await.expect("ack");
    let d = within(c.next()).await.expect("delivery").expect("ok");
    seen.push(String::from_utf8_lossy(&d.data).into_owned());
    within(ch2.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })).await.expect("ack");
    for _ in 0..2 {
        let d = within(c.next()).await.expect("delivery").expect("ok");
        seen.push(String::from_utf8_lossy(&d.data).into_owned());
        within(ch2.basic_ack(d.delivery_tag, BasicAckOptions::default())).await.expect("ack");
    }
    assert_eq!(seen, numbered("m", 5));
    within(ch2.close(200, "bye".into())).await.expect("close");
    // Acked or not, everything is still there for a new reader.
    let mut again = reader(&conn, "st-ack", 100, offset_arg(text("first"))).await;
    assert_eq!(bodies(&take(&mut again, 20, QUIET, true).await), numbered("m", 10));
    delete(&conn, &["st-ack"]).await;
}

#[tokio::test]
async fn rabbit_consumers_read_independently() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let other = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-many", stream(&[])).await;
    publish_all(&ch, "st-many", &numbered("m", 10)).await;
    // A stalled reader (prefetch 3, never acks) does not hold back one that acks; exclusive
    // means nothing to a stream.
    let stalled_ch = within(other.create_channel()).await.expect("channel");
    within(stalled_ch.basic_qos(3, BasicQosOptions::default())).await.expect("qos");
    let mut stalled = within(stalled_ch.basic_consume(
        "st-many".into(),
        "stalled".into(),
        BasicConsumeOptions { exclusive: true, ..Default::default() },
        offset_arg(text("first")),
    ))
    .await
    .expect("consume");
    let mut fast = reader(&conn, "st-many", 100, offset_arg(text("first"))).await;
    let mut seven = reader(&conn, "st-many", 100, offset_arg(AMQPValue::LongLongInt(7))).await;
    assert_eq!(bodies(&take(&mut fast, 20, QUIET, true).await), numbered("m", 10));
    assert_eq!(bodies(&take(&mut stalled, 20, QUIET, false).await), numbered("m", 3));
    let from_seven = take(&mut seven, 20, QUIET, true).await;
    assert_eq!(from_seven.iter().map(|x| x.1).collect::<Vec<_>>(), vec![7, 8, 9]);
    delete(&conn, &["st-many"]).await;
}

#[tokio::test]
async fn rabbit_what_streams_refuse_gets_rabbitmqs_answer() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-no", stream(&[])).await;
    fresh(&ch, "st-classic", FieldTable::default()).await;
    publish_all(&ch, "st-no", &numbered("m", 3)).await;
    let consume = |ch: Channel, q: &'static str, no_ack: bool, args: FieldTable| async move {
        ch.basic_consume(
            q.into(),
            "".into(),
            BasicConsumeOptions { no_ack, ..Default::default() },
            args,
        )
        .await
    };
    // Channel errors (406): no prefetch, x-priority, a numeric string offset, x-stream-offset
    // on a classic queue.
    let plain = within(conn.create_channel()).await.expect("channel");
    assert_eq!(refused(consume(plain, "st-no", false, FieldTable::default())).await, 406);
    for (q, args) in [
        ("st-no", table(&[("x-priority", AMQPValue::LongInt(5))])),
        ("st-no", offset_arg(text("5"))),
        ("st-classic", offset_arg(text("first"))),
    ] {
        let ch = within(conn.create_channel()).await.expect("channel");
        within(ch.basic_qos(10, BasicQosOptions::default())).await.expect("qos");
        assert_eq!(refused(consume(ch, q, false, args)).await, 406, "{q}");
    }
    assert!(conn.status().connected());
    // Connection errors (540): no-ack, global qos, basic.get, purge, nack, reject.
    let uri = broker.uri();
    {
        let c = broker_conn(&uri).await;
        let ch = within(c.create_channel()).await.expect("channel");
        within(ch.basic_qos(10, BasicQosOptions::default())).await.expect("qos");
        assert_eq!(refused(consume(ch, "st-no", true, FieldTable::default())).await, 540);
        wait_closed(&c).await;
    }
    {
        let c = broker_conn(&uri).await;
        let ch = within(c.create_channel()).await.expect("channel");
        within(ch.basic_qos(10, BasicQosOptions::default())).await.expect("qos");
        within(ch.basic_qos(20, BasicQosOptions { global: true })).await.expect("qos");
        assert_eq!(refused(consume(ch, "st-no", false, FieldTable::default())).await, 540);
        wait_closed(&c).await;
    }
    {
        let c = broker_conn(&uri).await;
        let ch = within(c.create_channel()).await.expect("channel");
        let get = ch.basic_get("st-no".into(), BasicGetOptions::default());
        assert_eq!(refused(get).await, 540);
        wait_closed(&c).await;
    }
    {
        let c = broker_conn(&uri).await;
        let ch = within(c.create_channel()).await.expect("channel");
        let purge = ch.queue_purge("st-no".into(), QueuePurgeOptions::default());
        assert_eq!(refused(purge).await, 540);
        wait_closed(&c).await;
    }
    for requeue in [true, false] {
        let c = broker_conn(&uri).await;
        let ch = within(c.create_channel()).await.expect("channel");
        within(ch.basic_qos(1, BasicQosOptions::default())).await.expect("qos");
        let mut consumer = within(ch.basic_consume(
            "st-no".into(),
            "".into(),
            BasicConsumeOptions::default(),
            offset_arg(text("first")),
        ))
        .await
        .expect("consume");
        let d = within(consumer.next()).await.expect("delivery").expect("ok");
        let _ = ch.basic_nack(d.delivery_tag, BasicNackOptions { multiple: false, requeue }).await;
        assert_eq!(closed_with(&mut consumer).await, 540, "nack requeue={requeue}");
        wait_closed(&c).await;
    }
    // Nothing of that disturbed the stream or other connections.
    let mut after = reader(&conn, "st-no", 10, offset_arg(text("first"))).await;
    assert_eq!(bodies(&take(&mut after, 10, QUIET, true).await), numbered("m", 3));
    delete(&conn, &["st-no", "st-classic"]).await;
}

async fn broker_conn(uri: &str) -> Connection {
    within(Connection::connect(uri, lapin::ConnectionProperties::default())).await.expect("connect")
}

async fn wait_closed(c: &Connection) {
    for _ in 0..100 {
        if !c.status().connected() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the broker closed the connection");
}

#[tokio::test]
async fn rabbit_publishes_are_confirmed_returned_and_committed_as_to_any_queue() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-pub", stream(&[])).await;
    // Properties come back unchanged, with the offset header added (a publisher's own
    // x-stream-offset is replaced).
    let headers = table(&[("h", text("v")), ("x-stream-offset", text("fake"))]);
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_message_id("id-1".into())
        .with_headers(headers);
    publish_props(&ch, "", "st-pub", "with-props", props).await;
    // Mandatory and unroutable: returned as from any queue.
    let confirm = within(ch.basic_publish(
        "".into(),
        "st-nowhere".into(),
        BasicPublishOptions { mandatory: true, ..Default::default() },
        b"lost",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    let confirmation = within(confirm).await.expect("confirm");
    assert!(confirmation.take_message().is_some(), "returned");
    // A transaction: the committed publish is stored, the rolled-back one is not.
    let tx = within(conn.create_channel()).await.expect("channel");
    within(tx.tx_select()).await.expect("tx.select");
    let publish = |body: &'static str| {
        tx.basic_publish(
            "".into(),
            "st-pub".into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
    };
    within(publish("rolled-back")).await.expect("publish");
    within(tx.tx_rollback()).await.expect("rollback");
    within(publish("committed")).await.expect("publish");
    within(tx.tx_commit()).await.expect("commit");
    let mut c = reader(&conn, "st-pub", 10, offset_arg(text("first"))).await;
    let d = within(c.next()).await.expect("delivery").expect("ok");
    assert_eq!(d.data, b"with-props");
    assert_eq!(d.properties.content_type().as_ref().map(|s| s.as_str()), Some("text/plain"));
    assert_eq!(d.properties.message_id().as_ref().map(|s| s.as_str()), Some("id-1"));
    let h = d.properties.headers().as_ref().expect("headers");
    assert_eq!(h.inner().get("h"), Some(&text("v")));
    assert_eq!(h.inner().get("x-stream-offset"), Some(&AMQPValue::LongLongInt(0)));
    within(d.ack(BasicAckOptions::default())).await.expect("ack");
    assert_eq!(take(&mut c, 5, QUIET, true).await, vec![("committed".to_string(), 1)]);
    delete(&conn, &["st-pub"]).await;
}

#[tokio::test]
async fn rabbit_deleting_a_stream_cancels_its_consumers_whatever_if_unused_says() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-del", stream(&[])).await;
    publish_all(&ch, "st-del", &numbered("m", 3)).await;
    let mut c = reader(&conn, "st-del", 10, offset_arg(text("first"))).await;
    assert_eq!(take(&mut c, 3, QUIET, true).await.len(), 3);
    let options = QueueDeleteOptions { if_unused: true, if_empty: true, ..Default::default() };
    let n = within(ch.queue_delete("st-del".into(), options)).await.expect("queue.delete");
    assert_eq!(n, 0, "delete-ok counts 0 for a stream");
    // The consumer was cancelled: its stream ends.
    let end = tokio::time::timeout(Duration::from_secs(5), c.next()).await.expect("cancelled");
    assert!(end.is_none(), "no more deliveries: {end:?}");
    assert!(conn.status().connected());
}

/// Reads a whole stream from its first offset: (body, offset) in order.
async fn read_all(conn: &Connection, queue: &str) -> Vec<(String, i64)> {
    let mut c = reader(conn, queue, 500, offset_arg(text("first"))).await;
    take(&mut c, usize::MAX, QUIET, true).await
}

fn assert_dense(got: &[(String, i64)]) {
    for w in got.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1, "offsets are dense and in order: {:?}", &w);
    }
}

#[tokio::test]
async fn offsets_survive_a_restart_and_keep_increasing() {
    let mut broker = TestBroker::start();
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        fresh(&ch, "st-restart", stream(&[("x-max-age", text("7D"))])).await;
        publish_all(&ch, "st-restart", &numbered("m", 10)).await;
    }
    broker.restart();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    // The declare is the same as before: it is still a stream, with its arguments.
    within(ch.queue_declare("st-restart".into(), durable(), stream(&[("x-max-age", text("7D"))])))
        .await
        .expect("redeclare after the restart");
    publish_all(&ch, "st-restart", &["after".to_string()]).await;
    let got = read_all(&conn, "st-restart").await;
    let mut expected: Vec<(String, i64)> = (0..10).map(|i| (format!("m{i}"), i)).collect();
    expected.push(("after".to_string(), 10));
    assert_eq!(got, expected);
}

#[tokio::test]
async fn retention_by_size_drops_whole_old_segments_and_offsets_go_on() {
    let mut broker = TestBroker::start();
    let args = stream(&[
        ("x-max-length-bytes", AMQPValue::LongLongInt(20_000)),
        ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(4_000)),
    ]);
    let body = "x".repeat(500);
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        fresh(&ch, "st-size", args.clone()).await;
        // A reader that starts at the beginning and stalls (prefetch 1, never acks) while
        // retention goes past it.
        let mut stalled = reader(&conn, "st-size", 1, offset_arg(text("first"))).await;
        let first = take(&mut stalled, 1, QUIET, false).await;
        assert!(first.is_empty(), "nothing yet");
        publish_all(&ch, "st-size", &vec![body.clone(); 200]).await;
        let got = read_all(&conn, "st-size").await;
        let start = got[0].1;
        assert!(start > 100, "the oldest segments went: the stream starts at {start}");
        assert_eq!(got.last().map(|g| g.1), Some(199));
        assert_dense(&got);
        // The stalled reader had offset 0 in hand; acking it, it goes on from the new start
        // (never from a deleted segment's bytes).
        let held = take(&mut stalled, 2, QUIET, true).await;
        assert_eq!(held.len(), 2);
        assert_eq!(held[0].1, 0);
        assert!(held[1].1 >= start, "{} then {}", held[0].1, held[1].1);
        assert_eq!(held[1].0, body);
    }
    broker.restart();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    publish_all(&ch, "st-size", std::slice::from_ref(&body)).await;
    let got = read_all(&conn, "st-size").await;
    assert_eq!(got.last().map(|g| g.1), Some(200), "offsets go on after the restart");
    assert_dense(&got);
}

#[tokio::test]
async fn retention_by_age_drops_segments_once_their_messages_are_too_old() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let args = stream(&[
        ("x-max-age", text("2s")),
        ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(2_000)),
    ]);
    fresh(&ch, "st-age", args).await;
    publish_all(&ch, "st-age", &vec!["y".repeat(500); 30]).await;
    assert_eq!(read_all(&conn, "st-age").await.len(), 30, "all there at first");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    publish_all(&ch, "st-age", &["fresh".to_string()]).await;
    let got = read_all(&conn, "st-age").await;
    assert!(got.len() < 10, "old segments went: {} left", got.len());
    assert_eq!(got.last(), Some(&("fresh".to_string(), 30)));
    assert_dense(&got);
}

#[tokio::test]
async fn filtered_consumers_get_the_values_they_ask_for() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-filter", stream(&[])).await;
    for (body, value) in
        [("r0", Some("red")), ("b1", Some("blue")), ("n2", None), ("r3", Some("red"))]
    {
        let headers = match value {
            Some(v) => table(&[("x-stream-filter-value", text(v))]),
            None => FieldTable::default(),
        };
        publish_props(&ch, "", "st-filter", body, BasicProperties::default().with_headers(headers))
            .await;
    }
    let red = table(&[("x-stream-offset", text("first")), ("x-stream-filter", text("red"))]);
    let mut c = reader(&conn, "st-filter", 10, red).await;
    assert_eq!(bodies(&take(&mut c, 10, QUIET, true).await), ["r0", "r3"]);
    let unfiltered = table(&[
        ("x-stream-offset", text("first")),
        ("x-stream-filter", AMQPValue::FieldArray(vec![text("blue")].into())),
        ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
    ]);
    let mut c = reader(&conn, "st-filter", 10, unfiltered).await;
    assert_eq!(bodies(&take(&mut c, 10, QUIET, true).await), ["b1", "n2"]);
}

#[tokio::test]
async fn the_management_api_shows_a_stream() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-api", stream(&[("x-max-age", text("7D"))])).await;
    publish_all(&ch, "st-api", &numbered("m", 5)).await;
    let _c = reader(&conn, "st-api", 2, offset_arg(text("first"))).await;
    let http = broker.http.expect("the management API listens");
    let q = crate::http::guest(http, "GET", "/api/queues/%2F/st-api", None).await.json();
    assert_eq!(q["type"], "stream");
    assert_eq!(q["arguments"]["x-max-age"], "7D");
    assert_eq!(q["messages"], 5);
    assert_eq!(q["messages_ready"], 5);
    assert_eq!(q["messages_unacknowledged"], 0, "as RabbitMQ: deliveries are not unacked messages");
    assert_eq!(q["consumers"], 1);
    // Getting messages through the API is basic.get: refused as on AMQP.
    let body = r#"{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}"#;
    let get = crate::http::guest(http, "POST", "/api/queues/%2F/st-api/get", Some(body)).await;
    assert_eq!(get.status, 400, "{}", get.body);
    assert!(get.body.contains("not supported by stream queues"), "{}", get.body);
}

/// Publishes numbered messages with confirms (50 in flight) until the connection dies;
/// records every confirmed number.
async fn publish_until_killed(
    ch: Channel,
    queue: &'static str,
    mut next: u64,
    confirmed: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
) {
    loop {
        let mut pending = Vec::with_capacity(50);
        for id in next..next + 50 {
            let Ok(c) = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    id.to_string().as_bytes(),
                    BasicProperties::default(),
                )
                .await
            else {
                return;
            };
            pending.push((id, c));
        }
        next += 50;
        for (id, c) in pending {
            match c.await {
                Ok(conf) if conf.is_ack() => confirmed.lock().expect("lock").push(id),
                _ => return,
            }
        }
    }
}

#[tokio::test]
async fn confirmed_stream_messages_survive_kill_9_with_dense_offsets() {
    let cycles: u64 =
        std::env::var("WARREN_CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(3);
    let mut broker = TestBroker::start();
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        fresh(&ch, "st-crash", stream(&[])).await;
    }
    let confirmed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut next_id = 0u64;
    for cycle in 0..cycles {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        let task = tokio::spawn(publish_until_killed(ch, "st-crash", next_id, confirmed.clone()));
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").subsec_nanos();
        tokio::time::sleep(Duration::from_millis(300 + u64::from(nanos % 1200))).await;
        broker.crash_and_restart();
        let _ = within(task).await;
        drop(conn);
        let conn = broker.connect().await;
        let got = read_all(&conn, "st-crash").await;
        // Offsets are dense from 0, each message once, in publish order.
        for (i, (_, offset)) in got.iter().enumerate() {
            assert_eq!(*offset, i as i64, "cycle {cycle}: dense offsets");
        }
        let ids: Vec<u64> = got.iter().map(|(b, _)| b.parse().expect("numeric body")).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "cycle {cycle}: in publish order, once each");
        let present: std::collections::HashSet<u64> = ids.iter().copied().collect();
        let confirmed = confirmed.lock().expect("lock").clone();
        let lost: Vec<&u64> = confirmed.iter().filter(|id| !present.contains(id)).collect();
        assert!(lost.is_empty(), "cycle {cycle}: {} confirmed messages lost", lost.len());
        assert!(!confirmed.is_empty(), "cycle {cycle}: something was confirmed");
        eprintln!("cycle {cycle}: {} in the stream, {} confirmed", ids.len(), confirmed.len());
        next_id = ids.last().map_or(0, |l| l + 1).max(next_id + 1_000_000);
    }
}

/// Not a `rabbit_` test: RabbitMQ 3.10.8 drops a message dead-lettered into a stream (checked
/// with pika: the stream stays empty).
#[tokio::test]
async fn a_stream_can_be_a_dead_letter_target() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-dead", stream(&[])).await;
    let args = table(&[
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text("st-dead")),
    ]);
    fresh(&ch, "st-source", args).await;
    publish_props(&ch, "", "st-source", "rejected", BasicProperties::default()).await;
    let m = within(ch.basic_get("st-source".into(), BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("a message");
    within(m.delivery.reject(lapin::options::BasicRejectOptions { requeue: false }))
        .await
        .expect("reject");
    let mut c = reader(&conn, "st-dead", 10, offset_arg(text("first"))).await;
    assert_eq!(bodies(&take(&mut c, 5, QUIET, true).await), ["rejected"]);
    delete(&conn, &["st-dead", "st-source"]).await;
}

#[tokio::test]
async fn a_policy_sets_a_streams_retention_and_wins_over_its_arguments() {
    let mut broker = TestBroker::start();
    let set_policy = |broker: &TestBroker, args: &[&str]| {
        let (ok, out, err) = crate::support::ctl(broker, &[&["set_policy"], args].concat());
        assert!(ok, "set_policy {args:?}: {out} {err}");
    };
    // RabbitMQ's stream keys are accepted (and checked); "streams" is an apply-to.
    let (ok, _, err) =
        crate::support::ctl(&broker, &["set_policy", "bad", "^st-pol", r#"{"max-age":"1W"}"#]);
    assert!(!ok && err.contains("is not a valid max age"), "{err}");
    set_policy(
        &broker,
        &[
            "--apply-to",
            "streams",
            "retain",
            "^st-pol",
            r#"{"max-length-bytes":20000,"stream-max-segment-size-bytes":4000}"#,
        ],
    );
    let body = "p".repeat(500);
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        // The argument says 1 GB: the policy's 20 kB wins, as in RabbitMQ.
        fresh(&ch, "st-pol", stream(&[("x-max-length-bytes", AMQPValue::LongLongInt(1 << 30))]))
            .await;
        publish_all(&ch, "st-pol", &vec![body.clone(); 200]).await;
        let got = read_all(&conn, "st-pol").await;
        assert!(got[0].1 > 100, "retention by the policy: starts at {}", got[0].1);
        assert_dense(&got);
        let http = broker.http.expect("the management API listens");
        let q = crate::http::guest(http, "GET", "/api/queues/%2F/st-pol", None).await.json();
        assert_eq!(q["policy"], "retain");
    }
    // Still in force after a restart.
    broker.restart();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    publish_all(&ch, "st-pol", &vec![body.clone(); 100]).await;
    let got = read_all(&conn, "st-pol").await;
    assert!(got.len() < 60, "{} messages retained", got.len());
    assert_eq!(got.last().map(|g| g.1), Some(299));
}

#[tokio::test]
async fn rabbit_a_global_qos_set_after_consuming_does_not_bound_a_stream_consumer() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fresh(&ch, "st-gqos", stream(&[])).await;
    publish_all(&ch, "st-gqos", &numbered("m", 10)).await;
    let c_ch = within(conn.create_channel()).await.expect("channel");
    within(c_ch.basic_qos(5, BasicQosOptions::default())).await.expect("qos");
    let mut c = within(c_ch.basic_consume(
        "st-gqos".into(),
        "".into(),
        BasicConsumeOptions::default(),
        offset_arg(text("first")),
    ))
    .await
    .expect("consume");
    let first = take(&mut c, 10, QUIET, false).await;
    assert_eq!(first.len(), 5, "the consumer's prefetch");
    // Accepted after consuming (as RabbitMQ), and it does not shrink the stream consumer's
    // credit: acking the five gives five more.
    within(c_ch.basic_qos(2, BasicQosOptions { global: true })).await.expect("global qos");
    within(c_ch.basic_ack(5, BasicAckOptions { multiple: true })).await.expect("ack");
    let more = take(&mut c, 10, QUIET, false).await;
    assert_eq!(bodies(&more), numbered("m", 10)[5..].to_vec());
    delete(&conn, &["st-gqos"]).await;
}

//! Consuming: consumer tags, exclusive consumers, round-robin, cancel (by the client and by
//! queue deletion), no-ack, basic.get counts and prefetch (per consumer, per channel, and the
//! unsupported prefetch-size).

use std::time::Duration;

use futures_util::StreamExt;
use lapin::Consumer;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use warren_wire::Method;
use warren_wire::method::{BasicQos, ChannelOpen};

use crate::TestBroker;
use crate::publish::{
    WAIT, assert_usable, body, close_code, consume, declare, get, next, publish, publish_numbered,
    quiet, ready,
};
use crate::raw::Raw;

#[tokio::test]
async fn server_generates_amq_ctag_consumer_tags() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let a = consume(&ch, "q", "", false).await;
    let b = consume(&ch, "q", "", false).await;
    assert!(a.tag().as_str().starts_with("amq.ctag-"), "{}", a.tag());
    assert!(b.tag().as_str().starts_with("amq.ctag-"), "{}", b.tag());
    assert_ne!(a.tag(), b.tag(), "generated tags are unique");
}

#[tokio::test]
async fn client_chosen_consumer_tags_are_kept() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let mut c = consume(&ch, "q", "my-tag ü", false).await;
    assert_eq!(c.tag().as_str(), "my-tag ü");
    publish(&ch, "q", b"hello").await;
    let d = next(&mut c).await;
    assert_eq!(d.data, b"hello");
    d.ack(BasicAckOptions::default()).await.expect("ack");
    ch.basic_cancel("my-tag ü".into(), BasicCancelOptions::default())
        .await
        .expect("cancel by the chosen tag");
}

#[tokio::test]
async fn duplicate_consumer_tag_closes_the_connection_with_530() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q1").await;
    declare(&ch, "q2").await;
    let _first = consume(&ch, "q1", "dup", false).await;
    let err = tokio::time::timeout(
        WAIT,
        ch.basic_consume(
            "q2".into(),
            "dup".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("answered")
    .expect_err("refused");
    assert_eq!(close_code(&err), Some(530), "NOT_ALLOWED: {err}");
    tokio::time::timeout(WAIT, async {
        while conn.status().connected() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a connection error: the whole connection closes");
}

#[tokio::test]
async fn exclusive_consumer_refuses_other_consumers_with_403() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let mut exclusive = ch
        .basic_consume(
            "q".into(),
            "only-me".into(),
            BasicConsumeOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("exclusive consume");

    // A second consumer, on another channel of the same connection.
    let other = conn.create_channel().await.expect("channel");
    let err = other
        .basic_consume(
            "q".into(),
            "second".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(close_code(&err), Some(403), "ACCESS_REFUSED: {err}");

    // ...and from another connection.
    let (_c2, ch2) = broker.channel().await;
    let err = ch2
        .basic_consume(
            "q".into(),
            "third".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(close_code(&err), Some(403), "ACCESS_REFUSED: {err}");

    // Only channels were closed; the exclusive consumer still gets messages.
    assert_usable(&conn).await;
    publish(&ch, "q", b"for the exclusive one").await;
    let d = next(&mut exclusive).await;
    assert_eq!(d.data, b"for the exclusive one");
    d.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn exclusive_consume_on_a_queue_with_consumers_is_refused_with_403() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let _plain = consume(&ch, "q", "plain", false).await;
    let other = conn.create_channel().await.expect("channel");
    let err = other
        .basic_consume(
            "q".into(),
            "wants-it-all".into(),
            BasicConsumeOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert_eq!(close_code(&err), Some(403), "ACCESS_REFUSED: {err}");
    assert_usable(&conn).await;
}

#[tokio::test]
async fn two_consumers_share_messages_round_robin() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "rr").await;
    let mut a = consume(&ch, "rr", "a", false).await;
    let mut b = consume(&ch, "rr", "b", false).await;
    publish_numbered(&ch, "rr", 10).await;
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..5 {
        got_a.push(body(&next(&mut a).await));
        got_b.push(body(&next(&mut b).await));
    }
    assert!(quiet(&mut a).await.is_empty(), "a gets exactly half");
    assert!(quiet(&mut b).await.is_empty(), "b gets exactly half");
    let odd: Vec<String> = (1..=10).step_by(2).map(|i| format!("m{i}")).collect();
    let even: Vec<String> = (2..=10).step_by(2).map(|i| format!("m{i}")).collect();
    assert!(
        (got_a == odd && got_b == even) || (got_a == even && got_b == odd),
        "alternating: a={got_a:?} b={got_b:?}"
    );
}

#[tokio::test]
async fn basic_cancel_stops_deliveries() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    let mut c = consume(&ch, "q", "c", true).await;
    publish(&ch, "q", b"before").await;
    assert_eq!(next(&mut c).await.data, b"before");
    ch.basic_cancel("c".into(), BasicCancelOptions::default()).await.expect("cancel");
    publish(&ch, "q", b"after").await;
    let rest = tokio::time::timeout(WAIT, StreamExt::next(&mut c)).await.expect("stream ends");
    assert!(rest.is_none(), "the cancelled consumer's stream ends");
    assert_eq!(ready(&ch, "q").await, 1, "the later message stays in the queue");
    let m = get(&ch, "q").await.expect("message");
    assert_eq!(m.delivery.data, b"after");
}

#[tokio::test]
async fn deleting_the_queue_cancels_its_consumers() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "doomed").await;
    let mut c = consume(&ch, "doomed", "c", false).await;
    publish(&ch, "doomed", b"one").await;
    let d = next(&mut c).await;
    assert_eq!(d.data, b"one");

    let deleter = conn.create_channel().await.expect("channel");
    deleter
        .queue_delete("doomed".into(), QueueDeleteOptions::default())
        .await
        .expect("queue.delete");
    // The broker sends basic.cancel: lapin ends the consumer's stream, without an error.
    let end = tokio::time::timeout(WAIT, StreamExt::next(&mut c))
        .await
        .expect("the consumer was cancelled by the broker");
    assert!(end.is_none(), "stream ended cleanly, got {end:?}");
    // The consumer's channel is still open and usable.
    assert!(ch.status().connected());
    declare(&ch, "fresh").await;
    // Acking a delivery of the deleted queue is still accepted.
    d.ack(BasicAckOptions::default()).await.expect("ack");
    declare(&ch, "fresh").await;
    assert!(ch.status().connected());
}

#[tokio::test]
async fn no_ack_consumer_receives_everything_without_acking() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 50).await;
    let mut c = consume(&ch, "q", "", true).await;
    for i in 1..=50 {
        assert_eq!(body(&next(&mut c).await), format!("m{i}"));
    }
    assert!(quiet(&mut c).await.is_empty());
    // Nothing is outstanding: closing the channel puts nothing back.
    ch.close(200, "bye".into()).await.expect("close");
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(ready(&ch2, "q").await, 0);
}

#[tokio::test]
async fn get_reports_the_messages_left_and_get_empty() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    assert!(get(&ch, "q").await.is_none(), "get-empty on an empty queue");
    publish_numbered(&ch, "q", 3).await;
    for (i, left) in [(1, 2), (2, 1), (3, 0)] {
        let m = get(&ch, "q").await.expect("get-ok");
        assert_eq!(body(&m.delivery), format!("m{i}"));
        assert_eq!(m.message_count, left, "messages left after m{i}");
        assert!(!m.delivery.redelivered);
        assert_eq!(m.delivery.routing_key.as_str(), "q");
        m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert!(get(&ch, "q").await.is_none(), "get-empty once drained");
    // no-ack get takes it for good.
    publish(&ch, "q", b"x").await;
    let m = ch
        .basic_get("q".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("get-ok");
    assert_eq!(m.message_count, 0);
    ch.close(200, "bye".into()).await.expect("close");
    let (_c2, ch2) = broker.channel().await;
    assert_eq!(ready(&ch2, "q").await, 0);
}

#[tokio::test]
async fn per_consumer_prefetch_limits_unacked_deliveries() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    const N: usize = 3;
    declare(&ch, "q").await;
    ch.basic_qos(N as u16, BasicQosOptions { global: false }).await.expect("qos");
    publish_numbered(&ch, "q", 3 * N).await;
    let mut c = consume(&ch, "q", "c", false).await;
    let mut first = Vec::new();
    for _ in 0..N {
        first.push(next(&mut c).await);
    }
    assert!(quiet(&mut c).await.is_empty(), "exactly N in flight");
    first[0].ack(BasicAckOptions::default()).await.expect("ack");
    let more = next(&mut c).await;
    assert_eq!(body(&more), format!("m{}", N + 1));
    assert!(quiet(&mut c).await.is_empty(), "one ack makes room for exactly one more");
    // Acking everything outstanding makes room for N more.
    ch.basic_ack(more.delivery_tag, BasicAckOptions { multiple: true })
        .await
        .expect("ack multiple");
    for i in N + 2..=2 * N + 1 {
        assert_eq!(body(&next(&mut c).await), format!("m{i}"));
    }
    assert!(quiet(&mut c).await.is_empty(), "again N in flight");
}

/// The next delivery to either consumer.
async fn next_of_either(a: &mut Consumer, b: &mut Consumer) -> Delivery {
    tokio::time::timeout(WAIT, async {
        tokio::select! {
            Some(Ok(d)) = a.next() => d,
            Some(Ok(d)) = b.next() => d,
            else => panic!("both consumers ended"),
        }
    })
    .await
    .expect("a delivery in time")
}

#[tokio::test]
async fn global_prefetch_is_shared_by_the_channels_consumers() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q1").await;
    declare(&ch, "q2").await;
    ch.basic_qos(3, BasicQosOptions { global: true }).await.expect("qos global");
    publish_numbered(&ch, "q1", 5).await;
    publish_numbered(&ch, "q2", 5).await;
    let mut a = consume(&ch, "q1", "a", false).await;
    let mut b = consume(&ch, "q2", "b", false).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_of_either(&mut a, &mut b).await);
    }
    assert!(quiet(&mut a).await.is_empty(), "three in flight in all");
    assert!(quiet(&mut b).await.is_empty(), "three in flight in all");
    got[0].ack(BasicAckOptions::default()).await.expect("ack");
    next_of_either(&mut a, &mut b).await;
    assert!(quiet(&mut a).await.is_empty(), "one ack, one more");
    assert!(quiet(&mut b).await.is_empty(), "one ack, one more");
}

#[tokio::test]
async fn prefetch_size_is_not_implemented_540() {
    let broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok") };
    raw.send(1, BasicQos { prefetch_size: 1024, prefetch_count: 10, global: false }).await;
    let Method::ConnectionClose(c) = raw.method().await else { panic!("connection.close") };
    assert_eq!(c.reply_code, 540, "{}", c.reply_text);
    assert!(c.reply_text.starts_with("NOT_IMPLEMENTED"), "{}", c.reply_text);
    assert_eq!((c.class_id, c.method_id), (60, 10));
    // lapin cannot send a prefetch size; a lapin client is unaffected.
    let conn = broker.connect().await;
    assert_usable(&conn).await;
}

/// A consumer that stops reading its socket: the broker stops delivering to it once its
/// output is backed up (the rest stays in the queue, not in broker memory), other clients
/// carry on, and when it reads again every message arrives, in order.
#[tokio::test]
async fn a_consumer_that_stops_reading_is_held_back_and_then_gets_everything() {
    const N: usize = 40_000;
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "stalled").await;
    ch.confirm_select(Default::default()).await.expect("confirm.select");
    let pad = vec![b'.'; 1000];
    let mut confirms = Vec::with_capacity(N);
    for i in 0..N {
        let mut b = format!("{i:08}").into_bytes();
        b.extend_from_slice(&pad);
        let c = ch
            .basic_publish(
                "".into(),
                "stalled".into(),
                Default::default(),
                &b,
                lapin::BasicProperties::default(),
            )
            .await
            .expect("publish");
        confirms.push(c);
    }
    for c in confirms {
        assert!(c.await.expect("confirm").is_ack());
    }
    assert_eq!(ready(&ch, "stalled").await, N as u32);

    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("channel.open-ok") };
    raw.send(
        1,
        warren_wire::method::BasicConsume {
            queue: "stalled".into(),
            consumer_tag: "t".into(),
            no_ack: true,
            ..Default::default()
        },
    )
    .await;
    let Method::BasicConsumeOk(_) = raw.method().await else { panic!("basic.consume-ok") };
    // Stop reading. ~40 MB of deliveries is more than the socket buffers and the broker's
    // pending output together hold, so some must stay queued while this client sleeps.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = ready(&ch, "stalled").await;
    assert!(left > 0, "the broker kept delivering to a client that does not read");
    assert_usable(&conn).await;

    let mut next = 0usize;
    while next < N {
        match raw.frame().await.expect("a frame") {
            warren_wire::Frame::Body { payload, .. } => {
                assert_eq!(&payload[..8], format!("{next:08}").as_bytes(), "in order");
                next += 1;
            }
            warren_wire::Frame::Method { method: Method::BasicDeliver(_), .. }
            | warren_wire::Frame::Header { .. }
            | warren_wire::Frame::Heartbeat => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ready(&ch, "stalled").await, 0);
}

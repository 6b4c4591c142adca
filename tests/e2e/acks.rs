//! Settling deliveries: ack (single, multiple, tag 0), nack and reject with and without
//! requeue, requeue to the original position, unknown and repeated tags, and the requeue of
//! unacked messages when a channel or connection goes away or on basic.recover.

use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRecoverOptions, BasicRejectOptions};
use warren_wire::method::{BasicGet, ChannelOpen};
use warren_wire::{Frame, Method};

use crate::TestBroker;
use crate::publish::{
    assert_usable, body, closed_with, consume, declare, drain, get_some, next, publish_numbered,
    ready, wait_ready, watch,
};
use crate::raw::Raw;

/// (body, redelivered) pairs.
fn msgs(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(b, r)| (b.to_string(), *r)).collect()
}

/// Gets `n` messages with manual ack; returns their delivery tags in order.
async fn get_tags(ch: &lapin::Channel, queue: &str, n: usize) -> Vec<u64> {
    let mut tags = Vec::new();
    for i in 1..=n {
        let m = get_some(ch, queue).await;
        assert_eq!(body(&m.delivery), format!("m{i}"));
        tags.push(m.delivery.delivery_tag);
    }
    tags
}

#[tokio::test]
async fn ack_single_settles_only_that_message() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 3).await;
    let mut c = consume(&ch, "q", "c", false).await;
    let d1 = next(&mut c).await;
    let d2 = next(&mut c).await;
    let d3 = next(&mut c).await;
    assert_eq!((body(&d1), body(&d2), body(&d3)), ("m1".into(), "m2".into(), "m3".into()));
    d2.ack(BasicAckOptions::default()).await.expect("ack m2");
    ch.close(200, "bye".into()).await.expect("close");
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(drain(&ch2, "q").await, msgs(&[("m1", true), ("m3", true)]));
}

#[tokio::test]
async fn ack_multiple_settles_everything_up_to_the_tag() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 4).await;
    let tags = get_tags(&ch, "q", 4).await;
    ch.basic_ack(tags[2], BasicAckOptions { multiple: true }).await.expect("ack multiple");
    ch.close(200, "bye".into()).await.expect("close");
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(drain(&ch2, "q").await, msgs(&[("m4", true)]));
}

#[tokio::test]
async fn ack_multiple_with_tag_zero_settles_everything_outstanding() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 4).await;
    get_tags(&ch, "q", 3).await;
    ch.basic_ack(0, BasicAckOptions { multiple: true }).await.expect("ack all");
    assert_eq!(ready(&ch, "q").await, 1);
    ch.close(200, "bye".into()).await.expect("close");
    let ch2 = conn.create_channel().await.expect("channel");
    // Only the never-delivered m4 is left; the three acked ones are gone.
    assert_eq!(drain(&ch2, "q").await, msgs(&[("m4", false)]));
}

#[tokio::test]
async fn nack_multiple_with_tag_zero_requeues_everything_outstanding() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 4).await;
    get_tags(&ch, "q", 3).await;
    ch.basic_nack(0, BasicNackOptions { multiple: true, requeue: true }).await.expect("nack all");
    assert_eq!(
        drain(&ch, "q").await,
        msgs(&[("m1", true), ("m2", true), ("m3", true), ("m4", false)])
    );
}

#[tokio::test]
async fn nack_and_reject_without_requeue_drop_messages() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 4).await;
    let tags = get_tags(&ch, "q", 4).await;
    ch.basic_reject(tags[0], BasicRejectOptions { requeue: false }).await.expect("reject m1");
    ch.basic_nack(tags[2], BasicNackOptions { multiple: true, requeue: false })
        .await
        .expect("nack m2, m3");
    assert_eq!(ready(&ch, "q").await, 0, "nothing went back");
    ch.close(200, "bye".into()).await.expect("close");
    let ch2 = conn.create_channel().await.expect("channel");
    // Only m4 was still unacked when the channel closed.
    assert_eq!(drain(&ch2, "q").await, msgs(&[("m4", true)]));
}

#[tokio::test]
async fn nack_and_reject_with_requeue_return_messages_redelivered() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 3).await;
    let tags = get_tags(&ch, "q", 3).await;
    ch.basic_reject(tags[0], BasicRejectOptions { requeue: true }).await.expect("reject m1");
    assert_eq!(ready(&ch, "q").await, 1);
    ch.basic_nack(tags[2], BasicNackOptions { multiple: true, requeue: true })
        .await
        .expect("nack m2, m3");
    assert_eq!(ready(&ch, "q").await, 3);
    assert_eq!(drain(&ch, "q").await, msgs(&[("m1", true), ("m2", true), ("m3", true)]));

    // A consumer sees the flag too.
    publish_numbered(&ch, "q", 1).await;
    let mut c = consume(&ch, "q", "c", false).await;
    let d = next(&mut c).await;
    assert!(!d.redelivered);
    d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    let again = next(&mut c).await;
    assert_eq!(body(&again), "m1");
    assert!(again.redelivered, "redelivered after a requeue");
    again.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn requeued_messages_return_to_their_original_place() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 5).await;
    let tags = get_tags(&ch, "q", 5).await;
    // Requeue m4 first, then m2: positions, not the order of the nacks, decide.
    for t in [tags[3], tags[1]] {
        ch.basic_nack(t, BasicNackOptions { multiple: false, requeue: true }).await.expect("nack");
    }
    assert_eq!(drain(&ch, "q").await, msgs(&[("m2", true), ("m4", true)]));
}

#[tokio::test]
async fn requeued_messages_go_before_later_ready_ones() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 5).await;
    let tags = get_tags(&ch, "q", 2).await;
    ch.basic_reject(tags[1], BasicRejectOptions { requeue: true }).await.expect("reject m2");
    ch.basic_nack(tags[0], BasicNackOptions { multiple: false, requeue: true })
        .await
        .expect("nack m1");
    assert_eq!(
        drain(&ch, "q").await,
        msgs(&[("m1", true), ("m2", true), ("m3", false), ("m4", false), ("m5", false)])
    );
}

#[tokio::test]
async fn unknown_delivery_tag_closes_the_channel_with_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 1).await;
    let tag = get_some(&ch, "q").await.delivery.delivery_tag;
    let mut watcher = watch(&ch).await;
    let _ = ch.basic_ack(tag + 100, BasicAckOptions::default()).await;
    assert_eq!(closed_with(&mut watcher).await, 406, "PRECONDITION_FAILED");
    assert!(!ch.status().connected());
    assert_usable(&conn).await;
    // The channel's unacked message went back when it closed.
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(drain(&ch2, "q").await, msgs(&[("m1", true)]));
}

#[tokio::test]
async fn unknown_tag_in_reject_and_nack_is_406_too() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    for which in ["reject", "nack"] {
        let ch = conn.create_channel().await.expect("channel");
        let mut watcher = watch(&ch).await;
        let _ = match which {
            "reject" => ch.basic_reject(7, BasicRejectOptions { requeue: true }).await,
            _ => ch.basic_nack(7, BasicNackOptions::default()).await,
        };
        assert_eq!(closed_with(&mut watcher).await, 406, "{which}");
    }
    assert_usable(&conn).await;
}

#[tokio::test]
async fn acking_the_same_tag_twice_closes_the_channel_with_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 2).await;
    let tag = get_some(&ch, "q").await.delivery.delivery_tag;
    let mut watcher = watch(&ch).await;
    ch.basic_ack(tag, BasicAckOptions::default()).await.expect("first ack");
    let _ = ch.basic_ack(tag, BasicAckOptions::default()).await;
    assert_eq!(closed_with(&mut watcher).await, 406, "PRECONDITION_FAILED");
    assert_usable(&conn).await;
    // The first ack stood.
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(drain(&ch2, "q").await, msgs(&[("m2", false)]));
}

#[tokio::test]
async fn acking_the_same_tag_twice_in_a_transaction_is_refused_at_once() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 1).await;
    ch.tx_select().await.expect("tx.select");
    let tag = get_some(&ch, "q").await.delivery.delivery_tag;
    let mut watcher = watch(&ch).await;
    ch.basic_ack(tag, BasicAckOptions::default()).await.expect("first ack");
    let _ = ch.basic_ack(tag, BasicAckOptions::default()).await;
    // RabbitMQ takes an acked tag off the channel at once, even in a transaction: the second
    // ack names an unknown tag and the channel closes before any commit (none is sent).
    assert_eq!(closed_with(&mut watcher).await, 406, "PRECONDITION_FAILED");
    assert_usable(&conn).await;
}

#[tokio::test]
async fn closing_a_channel_requeues_unacked_in_order() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 6).await;
    let mut c = consume(&ch, "q", "c", false).await;
    let mut ds = Vec::new();
    for _ in 0..6 {
        ds.push(next(&mut c).await);
    }
    // Settle m2 and m5; m1, m3, m4, m6 stay unacked.
    ds[1].ack(BasicAckOptions::default()).await.expect("ack m2");
    ds[4].ack(BasicAckOptions::default()).await.expect("ack m5");
    ch.close(200, "bye".into()).await.expect("close");
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(
        drain(&ch2, "q").await,
        msgs(&[("m1", true), ("m3", true), ("m4", true), ("m6", true)])
    );
}

#[tokio::test]
async fn closing_the_connection_requeues_unacked() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 4).await;
    let mut c = consume(&ch, "q", "c", false).await;
    let mut ds = Vec::new();
    for _ in 0..4 {
        ds.push(next(&mut c).await);
    }
    ds[0].ack(BasicAckOptions::default()).await.expect("ack m1");
    // Let the ack get there before the close.
    assert_eq!(ready(&ch, "q").await, 0);
    conn.close(200, "bye".into()).await.expect("close");

    let (_c2, ch2) = broker.channel().await;
    wait_ready(&ch2, "q", 3).await;
    assert_eq!(drain(&ch2, "q").await, msgs(&[("m2", true), ("m3", true), ("m4", true)]));
}

#[tokio::test]
async fn a_dropped_socket_requeues_unacked() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 3).await;

    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok") };
    for expected in ["m1", "m2"] {
        raw.send(1, BasicGet { queue: "q".into(), no_ack: false, ..Default::default() }).await;
        let Method::BasicGetOk(ok) = raw.method().await else { panic!("get-ok") };
        assert!(!ok.redelivered);
        let Some(Frame::Header { header, .. }) = raw.frame().await else {
            panic!("content header")
        };
        assert_eq!(header.body_size, 2);
        let Some(Frame::Body { payload, .. }) = raw.frame().await else { panic!("content body") };
        assert_eq!(&payload[..], expected.as_bytes());
    }
    assert_eq!(ready(&ch, "q").await, 1);
    // Gone without a word: no channel.close, no connection.close.
    drop(raw);

    wait_ready(&ch, "q", 3).await;
    assert_eq!(drain(&ch, "q").await, msgs(&[("m1", true), ("m2", true), ("m3", false)]));
}

#[tokio::test]
async fn recover_requeues_all_unacked() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q").await;
    publish_numbered(&ch, "q", 4).await;
    let tags = get_tags(&ch, "q", 3).await;
    ch.basic_ack(tags[1], BasicAckOptions::default()).await.expect("ack m2");
    ch.basic_recover(BasicRecoverOptions { requeue: true }).await.expect("basic.recover");
    assert_eq!(drain(&ch, "q").await, msgs(&[("m1", true), ("m3", true), ("m4", false)]));
    // Nothing is outstanding any more: the old tags are unknown.
    let mut watcher = watch(&ch).await;
    let _ = ch.basic_ack(tags[0], BasicAckOptions::default()).await;
    assert_eq!(closed_with(&mut watcher).await, 406);
}

/// As RabbitMQ: a publish in a transaction is routed when published and delivered at commit,
/// so an exchange deleted in between changes nothing, and the commit's acks are applied. (The
/// old behaviour refused the commit with 404 and lost the acked messages.)
#[tokio::test]
async fn a_commit_delivers_where_its_publishes_were_routed_and_applies_its_acks() {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions};
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "src").await;
    declare(&ch, "dst").await;
    publish_numbered(&ch, "src", 2).await;
    ch.exchange_declare(
        "tx-ex".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        Default::default(),
    )
    .await
    .expect("exchange.declare");
    ch.queue_bind(
        "dst".into(),
        "tx-ex".into(),
        "".into(),
        QueueBindOptions::default(),
        Default::default(),
    )
    .await
    .expect("queue.bind");
    ch.tx_select().await.expect("tx.select");
    for tag in get_tags(&ch, "src", 2).await {
        ch.basic_ack(tag, BasicAckOptions::default()).await.expect("ack");
    }
    ch.basic_publish("tx-ex".into(), "".into(), Default::default(), b"in-tx", Default::default())
        .await
        .expect("publish");
    // Another channel deletes the exchange before the commit.
    let other = conn.create_channel().await.expect("channel");
    other.exchange_delete("tx-ex".into(), Default::default()).await.expect("exchange.delete");
    ch.tx_commit().await.expect("tx.commit");
    assert_eq!(ready(&ch, "dst").await, 1, "delivered where it was routed");
    assert_eq!(ready(&ch, "src").await, 0, "the acks were applied");
    ch.close(200, "bye".into()).await.expect("close");
    let ch2 = conn.create_channel().await.expect("channel");
    assert_eq!(ready(&ch2, "src").await, 0, "acked in the commit: not requeued");
}

/// A channel closed while its persistent publishes wait for the disk, and opened again under
/// the same number at once, five times: each channel sees acks only for tags it used, and the
/// last one exactly one ack for its one publish, nothing stray. (The store's completions carry
/// the channel's generation; a completion that reached the wrong channel would ack its
/// messages early, which this test cannot see from outside: it checks the protocol, not the
/// timing.)
#[tokio::test]
async fn a_reopened_channel_number_never_gets_the_old_channels_confirms() {
    use warren_wire::BasicProperties;
    use warren_wire::method::{
        BasicPublish, ChannelClose, ChannelOpen, ConfirmSelect, QueueDeclare,
    };
    let broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 0).await;
    let persistent = BasicProperties { delivery_mode: Some(2), ..Default::default() };
    let publish = |out: &mut bytes::BytesMut, size: usize| {
        let m = BasicPublish { routing_key: "gen".into(), ..Default::default() }.into();
        let body = vec![b'g'; size];
        warren_wire::frame::encode_content(out, 1, &m, &persistent, &body, 131_072).expect("enc");
    };
    for round in 0..5 {
        raw.send(1, ChannelOpen::default()).await;
        let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok") };
        raw.send(1, ConfirmSelect::default()).await;
        let Method::ConfirmSelectOk(_) = raw.method().await else { panic!("select-ok") };
        let durable = QueueDeclare { queue: "gen".into(), durable: true, ..Default::default() };
        raw.send(1, durable).await;
        let Method::QueueDeclareOk(_) = raw.method().await else { panic!("declare-ok") };
        // Round 0 and every other: many large publishes, then close at once, so that their
        // fsync completes around the reopen. Otherwise one small publish.
        let mut out = bytes::BytesMut::new();
        let (count, size) = if round % 2 == 0 { (200u64, 64 * 1024) } else { (1, 16) };
        for _ in 0..count {
            publish(&mut out, size);
        }
        Frame::method(1, ChannelClose::default()).encode(&mut out).expect("enc");
        raw.send_bytes(&out).await;
        // Until close-ok: acks of this channel's own publishes are fine, none above `count`.
        loop {
            match raw.frame().await.expect("a frame") {
                Frame::Method { method: Method::ChannelCloseOk(_), .. } => break,
                Frame::Method { method: Method::BasicAck(a), .. } => {
                    assert!(
                        a.delivery_tag <= count,
                        "round {round}: ack {} of {count}",
                        a.delivery_tag
                    );
                }
                Frame::Method { method: Method::BasicNack(n), .. } => {
                    panic!("round {round}: nack {}", n.delivery_tag)
                }
                _ => {}
            }
        }
    }
    // A last channel under the same number: one publish, one ack for tag 1, and nothing from
    // the earlier channels' completions.
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok") };
    raw.send(1, ConfirmSelect::default()).await;
    let Method::ConfirmSelectOk(_) = raw.method().await else { panic!("select-ok") };
    let mut out = bytes::BytesMut::new();
    publish(&mut out, 16);
    raw.send_bytes(&out).await;
    let Method::BasicAck(a) = raw.method().await else { panic!("an ack") };
    assert_eq!((a.delivery_tag, a.multiple), (1, false));
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(500), raw.frame()).await;
    assert!(quiet.is_err(), "nothing more on the channel: {quiet:?}");
}

/// Commits sent back to back (the second before the first's commit-ok, as a pipelining
/// client does): each commit-ok comes, in order, and every publish of both is enqueued.
#[tokio::test]
async fn pipelined_commits_each_complete_in_order() {
    use warren_wire::BasicProperties;
    use warren_wire::method::{BasicPublish, QueueDeclare, TxCommit, TxSelect};
    let broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok") };
    let durable = QueueDeclare { queue: "txq".into(), durable: true, ..Default::default() };
    raw.send(1, durable).await;
    let Method::QueueDeclareOk(_) = raw.method().await else { panic!("declare-ok") };
    raw.send(1, TxSelect::default()).await;
    let Method::TxSelectOk(_) = raw.method().await else { panic!("select-ok") };
    let persistent = BasicProperties { delivery_mode: Some(2), ..Default::default() };
    let mut out = bytes::BytesMut::new();
    for round in 0..2u8 {
        for _ in 0..3 {
            let m = BasicPublish { routing_key: "txq".into(), ..Default::default() }.into();
            warren_wire::frame::encode_content(&mut out, 1, &m, &persistent, &[round], 131_072)
                .expect("encode");
        }
        Frame::method(1, TxCommit::default()).encode(&mut out).expect("encode");
    }
    raw.send_bytes(&out).await;
    for n in 0..2 {
        let m = raw.method().await;
        assert!(matches!(m, Method::TxCommitOk(_)), "commit-ok {n}: {m:?}");
    }
    let conn = broker.connect().await;
    let ch = crate::support::within(conn.create_channel()).await.expect("channel");
    let mut got = Vec::new();
    while let Some(m) = crate::support::within(
        ch.basic_get("txq".into(), lapin::options::BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("get")
    {
        got.push(m.delivery.data[0]);
    }
    assert_eq!(got, [0, 0, 0, 1, 1, 1], "both commits' publishes, in order");
}

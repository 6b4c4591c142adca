//! Flow control: a publisher cannot bury a queue whose consumer's connection cannot keep up
//! (it is held back by TCP back-pressure, and resumes when the consumer catches up), while a
//! consumer that merely acks slowly still lets a large backlog build, as with RabbitMQ.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use warren_wire::Method;
use warren_wire::method::{BasicConsume, ChannelOpen};

use crate::TestBroker;
use crate::publish::{assert_usable, declare, ready};
use crate::raw::Raw;

/// The queue depth from which a lagging consumer holds publishers back (warren's FLOW_HIGH).
const FLOW_HIGH: u32 = 20_000;

/// Publishes `n` messages of 1 KiB with confirms (all acked).
async fn publish_confirmed(ch: &Channel, queue: &str, n: usize) {
    ch.confirm_select(Default::default()).await.expect("confirm.select");
    let pad = vec![b'.'; 1000];
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &pad,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        confirms.push(c);
    }
    for c in confirms {
        assert!(c.await.expect("confirm").is_ack());
    }
}

/// A raw client consuming `queue` (tag `t`) that reads nothing until the test says so.
async fn raw_consumer(addr: std::net::SocketAddr, queue: &str, no_ack: bool) -> Raw {
    let mut raw = Raw::open(addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("channel.open-ok") };
    let consume = BasicConsume {
        queue: queue.into(),
        consumer_tag: "t".into(),
        no_ack,
        ..Default::default()
    };
    raw.send(1, consume).await;
    raw
}

/// Polls the ready count until it stops changing for a while; returns it.
async fn settled_depth(ch: &Channel, queue: &str) -> u32 {
    let started = Instant::now();
    let mut last = ready(ch, queue).await;
    let mut same = 0;
    while same < 5 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = ready(ch, queue).await;
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

#[tokio::test]
async fn a_publisher_is_held_back_while_the_consumer_connection_cannot_keep_up() {
    const N: usize = 60_000;
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "flow").await;

    // A consumer that does not read its socket: its connection cannot pass messages on.
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("channel.open-ok") };
    let consume = BasicConsume {
        queue: "flow".into(),
        consumer_tag: "t".into(),
        no_ack: true,
        ..Default::default()
    };
    raw.send(1, consume).await;
    let Method::BasicConsumeOk(_) = raw.method().await else { panic!("basic.consume-ok") };

    // 60 MB for it, from a publisher on another connection, without confirms.
    let (pconn, pch) = broker.channel().await;
    let publisher = tokio::spawn(async move {
        let pad = vec![b'.'; 1000];
        for i in 0..N {
            let mut b = format!("{i:08}").into_bytes();
            b.extend_from_slice(&pad);
            pch.basic_publish(
                "".into(),
                "flow".into(),
                BasicPublishOptions::default(),
                &b,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        }
        pconn
    });

    // The backlog builds up to the threshold (however slowly this machine publishes)...
    let started = Instant::now();
    while ready(&ch, "flow").await < FLOW_HIGH {
        assert!(started.elapsed() < Duration::from_secs(60), "the backlog reached the threshold");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and stops growing near it instead of taking everything.
    let depth = settled_depth(&ch, "flow").await;
    assert!(
        depth < FLOW_HIGH + 10_000,
        "the publisher was not held back: {depth} of {N} messages queued"
    );
    // Others are not disturbed.
    assert_usable(&broker.connect().await).await;

    // The consumer reads again: the publisher goes on, and every message arrives, in order.
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
    let pconn = tokio::time::timeout(Duration::from_secs(30), publisher)
        .await
        .expect("the publisher finished")
        .expect("publisher task");
    assert!(pconn.status().connected(), "the held publisher was not disconnected");
    assert_eq!(ready(&ch, "flow").await, 0);
}

#[tokio::test]
async fn a_consumer_that_acks_slowly_does_not_hold_publishers_back() {
    const N: usize = 30_000;
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "slow").await;
    // Takes 10 messages and never acks them: its window is full, its connection idle.
    let (_cconn, cch) = broker.channel().await;
    cch.basic_qos(10, BasicQosOptions::default()).await.expect("basic.qos");
    let mut consumer = cch
        .basic_consume(
            "slow".into(),
            "slow".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");

    ch.confirm_select(Default::default()).await.expect("confirm.select");
    let mut confirms = Vec::with_capacity(N);
    for i in 0..N {
        let c = ch
            .basic_publish(
                "".into(),
                "slow".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        confirms.push(c);
    }
    let all = async {
        for c in confirms {
            assert!(c.await.expect("confirm").is_ack());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every publish confirmed: a slow consumer holds nobody back");
    for _ in 0..10 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await;
        d.expect("a delivery").expect("stream open").expect("delivery");
    }
    assert_eq!(ready(&ch, "slow").await, (N - 10) as u32);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    const N: usize = 20_000;
    let broker = TestBroker::start_with(&["--send-timeout", "2"], &[]);
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "stall").await;
    publish_confirmed(&ch, "stall", N).await;
    // A consumer with manual acks and no prefetch limit that never reads its socket.
    let raw = raw_consumer(broker.addr, "stall", false).await;

    // It is dropped once its socket has taken nothing for 2 s; what it held is requeued.
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let started = Instant::now();
    loop {
        let q = ch
            .queue_declare("stall".into(), passive, FieldTable::default())
            .await
            .expect("passive declare");
        if q.consumer_count() == 0 && q.message_count() == N as u32 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still {} consumer(s), {} of {N} ready",
            q.consumer_count(),
            q.message_count()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(raw);
}

#[tokio::test]
async fn a_consumer_without_a_prefetch_limit_takes_the_backlog_in_windows() {
    const N: usize = 30_000;
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "unlimited").await;
    publish_confirmed(&ch, "unlimited", N).await;
    // Manual acks, no prefetch limit, and a socket it does not read: the broker must not
    // move the whole backlog into its own memory on the way to that socket.
    let mut raw = raw_consumer(broker.addr, "unlimited", false).await;
    let depth = settled_depth(&ch, "unlimited").await;
    assert!(
        depth as usize >= N / 2,
        "{} of {N} messages left the queue for a stalled socket",
        N - depth as usize
    );
    // Reading, it gets every message.
    let mut got = 0usize;
    while got < N {
        if let warren_wire::Frame::Body { .. } = raw.frame().await.expect("a frame") {
            got += 1;
        }
    }
    assert_eq!(ready(&ch, "unlimited").await, 0);
}

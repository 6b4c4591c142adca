//! Large operations stay linear and do not hold up other clients: closing a channel with tens
//! of thousands of consumers, deleting a queue with tens of thousands of bindings. These tests
//! check the outcome (and print how long the operation took, for the record: timing is for
//! benchmarks, not assertions).

use std::time::Instant;

use lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;

use crate::TestBroker;
use crate::publish::declare;

const N: usize = 40_000;

#[tokio::test]
async fn closing_a_channel_with_forty_thousand_consumers() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "many").await;
    let cconn = broker.connect().await;
    let cch = cconn.create_channel().await.expect("channel");
    let nowait = BasicConsumeOptions { nowait: true, ..Default::default() };
    for i in 0..N {
        cch.basic_consume(
            "many".into(),
            format!("c{i}").as_str().into(),
            nowait,
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    }
    let count = |ch: lapin::Channel| async move {
        ch.queue_declare(
            "many".into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .consumer_count()
    };
    // On the consumers' own channel: answered after every consume before it was handled.
    assert_eq!(count(cch.clone()).await, N as u32);
    let t = Instant::now();
    cch.close(200, "bye".into()).await.expect("channel.close");
    eprintln!("closing a channel with {N} consumers: {:?}", t.elapsed());
    assert_eq!(count(ch.clone()).await, 0);
}

#[tokio::test]
async fn deleting_a_queue_with_forty_thousand_bindings() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "bound").await;
    let nowait = QueueBindOptions { nowait: true };
    for i in 0..N {
        ch.queue_bind(
            "bound".into(),
            "amq.direct".into(),
            format!("k{i}").as_str().into(),
            nowait,
            FieldTable::default(),
        )
        .await
        .expect("queue.bind");
    }
    // A round trip after the nowait binds: they are all in place.
    declare(&ch, "other").await;
    let t = Instant::now();
    ch.queue_delete("bound".into(), QueueDeleteOptions::default()).await.expect("queue.delete");
    eprintln!("deleting a queue with {N} bindings: {:?}", t.elapsed());
    // The exchange routes nothing there any more, and still works.
    ch.queue_bind(
        "other".into(),
        "amq.direct".into(),
        "k1".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue.bind");
}

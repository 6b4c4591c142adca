//! Transient backlogs are paged to disk: a long queue of messages the store does not keep
//! (transient ones, or any in a non-durable queue) writes them out and reads them back in
//! order, gives the disk space back as it drains, and never brings them back after a restart.

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use crate::TestBroker;
use crate::support::{message_count, within};

/// Past the queue's threshold for paging transient messages (16 MiB of bodies).
const N: usize = 30_000;
const SIZE: usize = 1000;

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("m{i:06}-").into_bytes();
    b.resize(SIZE, b'x');
    b
}

async fn fill(ch: &Channel, queue: &str, props: &BasicProperties) {
    for i in 0..N {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body(i),
            props.clone(),
        )
        .await
        .expect("publish");
    }
    assert!(ch.wait_for_confirms().await.expect("confirms").is_empty());
}

/// Bytes in the data dir's message segments.
fn segment_bytes(broker: &TestBroker) -> u64 {
    std::fs::read_dir(broker.data_dir.join("messages"))
        .map(|d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

async fn consume_all(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let opts = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut c = ch
        .basic_consume(queue.into(), "c".into(), opts, FieldTable::default())
        .await
        .expect("consume");
    let mut got = Vec::with_capacity(N);
    while got.len() < N {
        let d = within(c.next()).await.expect("a delivery").expect("delivery");
        got.push(d.data);
    }
    got
}

#[tokio::test]
async fn a_long_transient_backlog_is_paged_out_and_drains_in_order() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(Default::default()).await.expect("confirm");
    ch.queue_declare("t".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    fill(&ch, "t", &BasicProperties::default()).await;
    assert_eq!(message_count(&ch, "t").await as usize, N);
    // Everything past the first 16 MiB goes to disk (the writer may still be at it: transient
    // publishes are confirmed at once).
    within(async {
        while segment_bytes(&broker) <= (SIZE * N / 4) as u64 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let got = consume_all(&ch, "t").await;
    assert!(got.iter().enumerate().all(|(i, b)| *b == body(i)), "drained whole and in order");
}

#[tokio::test]
async fn paged_transient_messages_do_not_come_back_after_a_restart() {
    let mut broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    ch.confirm_select(Default::default()).await.expect("confirm");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare("d".into(), durable, FieldTable::default()).await.expect("declare");
    fill(&ch, "d", &BasicProperties::default()).await;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    ch.basic_publish("".into(), "d".into(), BasicPublishOptions::default(), b"kept", persistent)
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(segment_bytes(&broker) > (SIZE * N / 4) as u64);
    broker.restart();
    let (_conn, ch) = broker.channel().await;
    assert_eq!(message_count(&ch, "d").await, 1, "only the persistent message is recovered");
    let opts = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut c = ch
        .basic_consume("d".into(), "c".into(), opts, FieldTable::default())
        .await
        .expect("consume");
    let d = within(c.next()).await.expect("a delivery").expect("delivery");
    assert_eq!(d.data, b"kept");
    // The segment held the pages and the persistent message: with the message gone, nothing
    // needs it, and its disk space comes back.
    within(async {
        while segment_bytes(&broker) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

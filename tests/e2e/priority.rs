//! Priority queues, as RabbitMQ's: `x-max-priority` (0 to 255), the `priority` property
//! (capped at the queue's maximum, none counts as 0), the highest priority first and FIFO
//! within one, requeued messages back to their place, priorities kept across a restart.
//!
//! The `rabbit_` tests pass against RabbitMQ 3.10 too (`WARREN_E2E_URL=amqp://... cargo test
//! --test e2e priority::rabbit`).

use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::TestBroker;
use crate::support::{channel, publish_props, refused, table, text, within};

fn max_priority(n: i32) -> FieldTable {
    table(&[("x-max-priority", AMQPValue::LongInt(n))])
}

async fn queue(ch: &Channel, name: &str, durable: bool, args: FieldTable) {
    let _ = within(ch.queue_delete(name.into(), QueueDeleteOptions::default())).await;
    let o = QueueDeclareOptions { durable, ..Default::default() };
    within(ch.queue_declare(name.into(), o, args)).await.expect("queue.declare");
}

fn priority(p: Option<u8>, persistent: bool) -> BasicProperties {
    let props = BasicProperties::default();
    let props = match p {
        Some(p) => props.with_priority(p),
        None => props,
    };
    if persistent { props.with_delivery_mode(2) } else { props }
}

async fn drain(ch: &Channel, queue: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        out.push((String::from_utf8_lossy(&m.delivery.data).into_owned(), m.delivery.redelivered));
    }
    out
}

const MIX: [(&str, Option<u8>); 7] = [
    ("a0", None),
    ("b3", Some(3)),
    ("c9", Some(9)),
    ("d3", Some(3)),
    ("e1", Some(1)),
    ("f0", Some(0)),
    ("g5", Some(5)),
];

#[tokio::test]
async fn rabbit_highest_priority_first_fifo_within_and_requeue_to_its_place() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    queue(&ch, "prio", false, max_priority(5)).await;
    for (body, p) in MIX {
        publish_props(&ch, "", "prio", body, priority(p, false)).await;
    }
    // Two taken (the 9 counts as 5, published before the 5), then given back.
    let mut tags = Vec::new();
    for expected in ["c9", "g5"] {
        let m = within(ch.basic_get("prio".into(), BasicGetOptions::default()))
            .await
            .expect("get")
            .expect("a message");
        assert_eq!(m.delivery.data, expected.as_bytes());
        tags.push(m.delivery.delivery_tag);
    }
    for tag in tags.into_iter().rev() {
        let requeue = BasicNackOptions { multiple: false, requeue: true };
        within(ch.basic_nack(tag, requeue)).await.expect("nack");
    }
    let order = drain(&ch, "prio").await;
    let expected = [
        ("c9", true),
        ("g5", true),
        ("b3", false),
        ("d3", false),
        ("e1", false),
        ("a0", false),
        ("f0", false),
    ];
    assert_eq!(order, expected.map(|(b, r)| (b.to_string(), r)));
    let _ = ch.queue_delete("prio".into(), QueueDeleteOptions::default()).await;
}

#[tokio::test]
async fn rabbit_max_priority_is_checked_and_compared_as_rabbitmq_does() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    for ok in [0, 255] {
        let ch = channel(&conn).await;
        queue(&ch, "prio-ok", false, max_priority(ok)).await;
        let _ = ch.queue_delete("prio-ok".into(), QueueDeleteOptions::default()).await;
    }
    for bad in [max_priority(256), max_priority(-1), table(&[("x-max-priority", text("5"))])] {
        let ch = channel(&conn).await;
        let declare = ch.queue_declare("prio-bad".into(), QueueDeclareOptions::default(), bad);
        assert_eq!(refused(declare).await, 406);
    }
    let ch = channel(&conn).await;
    queue(&ch, "prio-eq", false, max_priority(5)).await;
    let again = ch.queue_declare("prio-eq".into(), QueueDeclareOptions::default(), max_priority(6));
    assert_eq!(refused(again).await, 406);
    let ch = channel(&conn).await;
    let _ = ch.queue_delete("prio-eq".into(), QueueDeleteOptions::default()).await;
}

#[tokio::test]
async fn priorities_survive_a_restart_also_for_paged_out_messages() {
    let mut broker = TestBroker::start();
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        queue(&ch, "prio-d", true, max_priority(10)).await;
        // More than a queue keeps loaded: the later ones are paged out before the restart.
        for i in 0..3000 {
            publish_props(&ch, "", "prio-d", &format!("low{i}"), priority(Some(1), true)).await;
        }
        for (body, p) in MIX {
            publish_props(&ch, "", "prio-d", body, priority(p, true)).await;
        }
    }
    broker.restart();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    let order: Vec<String> = drain(&ch, "prio-d").await.into_iter().map(|(b, _)| b).collect();
    assert_eq!(order.len(), 3007);
    assert_eq!(order[..4], ["c9", "g5", "b3", "d3"]);
    assert_eq!(order[4..6], ["low0", "low1"], "FIFO within a level");
    assert_eq!(order[3003..], ["low2999", "e1", "a0", "f0"]);
}

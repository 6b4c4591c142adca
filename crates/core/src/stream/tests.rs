//! A stream queue through the core's API: publishing, readers that start at different
//! offsets and read past the in-memory tail from disk, credit, and a restart.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use warren_wire::{BasicProperties, FieldTable, FieldValue};

use super::{ReadSpec, Start};
use crate::broker::{Broker, Defaults};
use crate::message::Message;
use crate::publish::Scratch;
use crate::queue::{ChannelLimit, Consumer, ConsumerSpec, Event, Queue, QueueOptions};

fn defaults() -> Defaults {
    Defaults {
        user: "guest".into(),
        password: "guest".into(),
        vhost: "/".into(),
        loopback_only: false,
    }
}

fn msg(i: usize) -> Arc<Message> {
    Arc::new(Message::new(
        "".into(),
        "s".into(),
        &BasicProperties::default(),
        Bytes::new(),
        Bytes::from(format!("m{i}")),
    ))
}

fn wait_synced(broker: &Broker) {
    let (tx, rx) = std::sync::mpsc::channel();
    broker.after_sync(move || {
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("synced");
}

fn reader(q: &Arc<Queue>, prefetch: u32, start: Start) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        tag: "r".into(),
        channel: 1,
        connection: 1,
        no_ack: false,
        exclusive: false,
        prefetch,
        priority: 0,
    };
    let c = Arc::new(Consumer::new(
        spec,
        q.clone(),
        Arc::new(ChannelLimit::default()),
        tx,
        Arc::default(),
    ));
    q.add_reader(c, ReadSpec { start, filter: None, match_unfiltered: false }).expect("reader");
    rx
}

/// Takes every delivery, acking each (credit back, then a dispatch, as a channel does).
fn drain(q: &Arc<Queue>, rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<u64> {
    let mut offsets = Vec::new();
    while let Ok(Event::Deliver { consumer, entry }) = rx.try_recv() {
        offsets.push(entry.seq);
        let props = BasicProperties::decode(&q.delivery_properties(&entry).unwrap()).unwrap();
        let header = props.headers.unwrap().get("x-stream-offset").cloned();
        assert_eq!(header, Some(FieldValue::I64(entry.seq as i64)));
        consumer.release(1);
        q.settle([&entry]);
        q.dispatch();
    }
    offsets
}

#[test]
fn readers_past_the_tail_read_from_disk_in_order_and_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("warren-core-stream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let n = super::TAIL_MESSAGES * 3;
    {
        let broker = Broker::open(&dir, &defaults()).expect("open");
        let v = broker.vhost("/").unwrap();
        let options = QueueOptions {
            durable: true,
            exclusive: None,
            auto_delete: false,
            arguments: FieldTable::new().with("x-queue-type", "stream"),
        };
        v.declare_queue("s", false, options, 1).expect("declare");
        let q = v.queue("s").unwrap();
        let mut scratch = Scratch::default();
        let mut live = reader(&q, 50, Start::Next);
        for i in 0..n {
            let routed = v.publish(msg(i), None, &mut scratch).unwrap();
            assert_eq!(routed.queues, 1);
            assert!(routed.stored.is_some(), "a stream publish waits for the store");
        }
        wait_synced(&broker);
        assert_eq!(q.message_count() as usize, n);
        // Without a runtime, disk reads happen in place: a reader from the first offset reads
        // what the tail no longer holds from disk, then the tail.
        let mut first = reader(&q, 100, Start::First);
        let got = drain(&q, &mut first);
        assert!(got == (0..n as u64).collect::<Vec<_>>(), "in order, all");
        let got = drain(&q, &mut live);
        assert!(got == (0..n as u64).collect::<Vec<_>>(), "the live reader saw them all too");
        let mut mid = reader(&q, 10, Start::Offset(n as u64 - 5));
        assert_eq!(drain(&q, &mut mid).len(), 5);
        let mut last = reader(&q, 10, Start::Last);
        assert!(!drain(&q, &mut last).is_empty());
        broker.close();
    }
    let broker = Broker::open(&dir, &defaults()).expect("reopen");
    let q = broker.vhost("/").unwrap().queue("s").expect("the stream is back");
    assert!(q.is_stream());
    assert_eq!(q.message_count() as usize, n);
    let mut first = reader(&q, 100, Start::First);
    assert_eq!(drain(&q, &mut first).len(), n);
    broker.close();
    let _ = std::fs::remove_dir_all(&dir);
}

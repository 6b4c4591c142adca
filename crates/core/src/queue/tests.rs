//! Delivery to consumers, requeue, exclusivity and flow control, through the public API.

use super::*;
use bytes::Bytes;
use std::future::Future;
use tokio::sync::mpsc;
use warren_wire::BasicProperties;

fn queue() -> Arc<Queue> {
    Arc::new(Queue::new(
        "q".into(),
        QueueOptions {
            durable: false,
            exclusive: None,
            auto_delete: false,
            arguments: FieldTable::new(),
        },
    ))
}

fn msg(n: u8) -> Arc<Message> {
    Arc::new(Message::new(
        "".into(),
        "q".into(),
        &BasicProperties::default(),
        Bytes::new(),
        Bytes::from(vec![n]),
    ))
}

fn consumer(
    q: &Arc<Queue>,
    tag: &str,
    prefetch: u32,
    priority: i32,
    limit: &Arc<ChannelLimit>,
) -> (Arc<Consumer>, mpsc::UnboundedReceiver<Event>) {
    consumer_with_lag(q, tag, prefetch, priority, limit, Arc::default())
}

fn consumer_with_lag(
    q: &Arc<Queue>,
    tag: &str,
    prefetch: u32,
    priority: i32,
    limit: &Arc<ChannelLimit>,
    lag: Arc<Lag>,
) -> (Arc<Consumer>, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        tag: tag.into(),
        channel: 1,
        connection: 1,
        no_ack: false,
        exclusive: false,
        prefetch,
        priority,
    };
    (Arc::new(Consumer::new(spec, q.clone(), limit.clone(), tx, lag)), rx)
}

fn bodies(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<(u8, bool)> {
    let mut out = Vec::new();
    while let Ok(Event::Deliver { entry, .. }) = rx.try_recv() {
        out.push((entry.message.body[0], entry.redelivered));
    }
    out
}

#[test]
fn round_robin_within_prefetch_windows() {
    let q = queue();
    let limit = Arc::new(ChannelLimit::default());
    let (a, mut ra) = consumer(&q, "a", 2, 0, &limit);
    let (b, mut rb) = consumer(&q, "b", 2, 0, &limit);
    q.add_consumer(a.clone()).unwrap();
    q.add_consumer(b.clone()).unwrap();
    for n in 0..6 {
        q.publish(msg(n), None);
    }
    assert_eq!(bodies(&mut ra), vec![(0, false), (2, false)]);
    assert_eq!(bodies(&mut rb), vec![(1, false), (3, false)]);
    assert_eq!(q.message_count(), 2, "windows full: two wait");
    a.release(1);
    q.dispatch();
    assert_eq!(bodies(&mut ra), vec![(4, false)]);
}

#[test]
fn higher_priority_consumers_first_while_they_have_room() {
    let q = queue();
    let limit = Arc::new(ChannelLimit::default());
    let (low, mut rlow) = consumer(&q, "low", 0, 0, &limit);
    let (high, mut rhigh) = consumer(&q, "high", 2, 10, &limit);
    q.add_consumer(low).unwrap();
    q.add_consumer(high).unwrap();
    for n in 0..4 {
        q.publish(msg(n), None);
    }
    assert_eq!(bodies(&mut rhigh), vec![(0, false), (1, false)]);
    assert_eq!(bodies(&mut rlow), vec![(2, false), (3, false)]);
}

#[test]
fn channel_window_is_shared() {
    let q = queue();
    let limit = Arc::new(ChannelLimit::default());
    limit.prefetch.store(3, std::sync::atomic::Ordering::Release);
    let (a, mut ra) = consumer(&q, "a", 0, 0, &limit);
    let (b, mut rb) = consumer(&q, "b", 0, 0, &limit);
    q.add_consumer(a).unwrap();
    q.add_consumer(b).unwrap();
    for n in 0..5 {
        q.publish(msg(n), None);
    }
    assert_eq!(bodies(&mut ra).len() + bodies(&mut rb).len(), 3);
}

#[test]
fn requeue_restores_original_order_and_flags() {
    let q = queue();
    for n in 0..5 {
        q.publish(msg(n), None);
    }
    let (e0, _) = q.get().unwrap();
    let (e1, _) = q.get().unwrap();
    q.requeue([e1]);
    q.requeue([e0]);
    let order: Vec<(u8, bool)> =
        std::iter::from_fn(|| q.get()).map(|(e, _)| (e.message.body[0], e.redelivered)).collect();
    assert_eq!(order, vec![(0, true), (1, true), (2, false), (3, false), (4, false)]);
}

#[test]
fn exclusive_consumer_excludes_others() {
    let q = queue();
    let limit = Arc::new(ChannelLimit::default());
    let (a, _ra) = consumer(&q, "a", 0, 0, &limit);
    q.add_consumer(a).unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        tag: "x".into(),
        channel: 1,
        connection: 1,
        no_ack: false,
        exclusive: true,
        prefetch: 0,
        priority: 0,
    };
    let x = Arc::new(Consumer::new(spec, q.clone(), limit, tx, Arc::default()));
    assert_eq!(q.add_consumer(x).unwrap_err().code, 403);
}

#[test]
fn a_consumer_whose_connection_went_is_dropped_and_the_message_kept() {
    let q = queue();
    let limit = Arc::new(ChannelLimit::default());
    let (a, ra) = consumer(&q, "a", 0, 0, &limit);
    drop(ra);
    q.add_consumer(a).unwrap();
    q.publish(msg(7), None);
    assert_eq!(q.consumer_count(), 0);
    assert_eq!(q.message_count(), 1);
}

#[test]
fn publishers_are_held_only_while_a_consumer_lags_and_the_backlog_is_high() {
    let q = queue();
    let limit = Arc::new(ChannelLimit::default());
    let lag = Arc::new(Lag::default());
    let (c, _rx) = consumer_with_lag(&q, "c", 1, 0, &limit, lag.clone());
    q.add_consumer(c).unwrap();
    // A consumer that is not behind: any backlog is fine (a slow application).
    for _ in 0..flow::FLOW_HIGH + 10 {
        assert_eq!(q.publish(msg(0), None), Publish::Enqueued);
    }
    assert!(!q.flow_blocked());
    // Its connection falls behind: the next publish is told to wait.
    lag.set(flow::LAGGING as usize);
    assert_eq!(q.publish(msg(0), None), Publish::Congested);
    assert!(q.flow_blocked());
    // It catches up: the wait is over, and the waiters are woken.
    let woken = q.flow_changed();
    let mut woken = std::pin::pin!(woken);
    woken.as_mut().enable();
    lag.set(0);
    assert!(!q.flow_blocked());
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(woken.as_mut().poll(&mut cx).is_ready(), "waiters woken");
    // Behind again, then the backlog drains below the low mark: over too.
    lag.set_blocked();
    assert_eq!(q.publish(msg(0), None), Publish::Congested);
    while q.message_count() as usize >= flow::FLOW_LOW {
        q.get();
    }
    assert!(!q.flow_blocked());
    // Below the high mark nobody is held, lagging or not.
    assert_eq!(q.publish(msg(0), None), Publish::Enqueued);
}

#[test]
fn an_unlimited_consumer_gets_a_window_of_deliveries_not_yet_written() {
    let q = queue();
    let limit = Arc::new(ChannelLimit::default());
    let (c, mut rx) = consumer(&q, "c", 0, 0, &limit);
    q.add_consumer(c.clone()).unwrap();
    for _ in 0..NO_ACK_WINDOW + 500 {
        q.publish(msg(0), None);
    }
    assert_eq!(bodies(&mut rx).len(), NO_ACK_WINDOW as usize, "the rest waits in the queue");
    assert_eq!(q.message_count(), 500);
    // Its connection writes one out: the queue is asked to dispatch again, and sends one.
    assert!(c.written());
    assert!(!c.written(), "only the step below the window asks for a dispatch");
    q.dispatch();
    assert_eq!(bodies(&mut rx).len(), 2);
    // Written deliveries stay unacked: prefetch 0 means no limit on those.
    assert_eq!(c.in_flight(), NO_ACK_WINDOW + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_out_backlog_is_read_back_off_the_lock_and_delivered_in_order() {
    let dir = std::env::temp_dir().join(format!("warren-core-readback-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (store, _) = Store::open(&dir, Default::default()).expect("store");
    let options = QueueOptions {
        durable: false,
        exclusive: None,
        auto_delete: false,
        arguments: FieldTable::new(),
    };
    let q =
        Arc::new(Queue::with_store("q".into(), options, None, Some(store.clone()), Weak::new()));
    let n = 40_000u32;
    let body = |i: u32| Bytes::from(i.to_be_bytes().to_vec());
    for i in 0..n {
        let m =
            Message::new("".into(), "q".into(), &BasicProperties::default(), Bytes::new(), body(i));
        q.publish(Arc::new(m), None);
    }
    let limit = Arc::new(ChannelLimit::default());
    let (c, mut rx) = consumer(&q, "c", n, 0, &limit);
    q.add_consumer(c.clone()).unwrap();
    // What was in memory went at once; the rest (paged out past 32,768) is read on the blocking
    // pool, not under this call.
    let mut got = Vec::new();
    // (The connection writing them out, as `written` tells the consumer, lets more come.)
    let write = |got: &mut Vec<Bytes>, entry: Entry| {
        got.push(entry.message.body.clone());
        if c.written() {
            q.dispatch();
        }
    };
    while let Ok(Event::Deliver { entry, .. }) = rx.try_recv() {
        write(&mut got, entry);
    }
    assert!(got.len() < n as usize, "the paged-out part was not read under the lock");
    while got.len() < n as usize {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
        let Ok(Some(Event::Deliver { entry, .. })) = event else {
            panic!("stalled at {}", got.len())
        };
        write(&mut got, entry);
    }
    assert!(got.iter().enumerate().all(|(i, b)| *b == body(i as u32)), "in order");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stats_count_acked_no_ack_and_returned_deliveries() {
    let q = queue();
    for n in 0..4 {
        q.publish(msg(n), None);
    }
    let limit = Arc::new(ChannelLimit::default());
    // An acknowledging consumer with room for two.
    let (c, mut rx) = consumer(&q, "ack", 2, 0, &limit);
    q.add_consumer(c.clone()).unwrap();
    let taken: Vec<Entry> = std::iter::from_fn(|| match rx.try_recv() {
        Ok(Event::Deliver { entry, .. }) => Some(entry),
        _ => None,
    })
    .collect();
    assert_eq!(taken.len(), 2);
    let s = q.stats();
    assert_eq!((s.ready, s.unacked, s.delivered, s.published), (2, 2, 2, 4));
    q.settle(taken[..1].iter());
    q.requeue(taken[1..].iter().cloned());
    let s = q.stats();
    assert_eq!((s.unacked, s.acked, s.redelivered), (0, 1, 1));
    c.retire();
    q.remove_retired();
    // A no-ack consumer: settled when sent, never unacked; one put back undone.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let spec = ConsumerSpec {
        tag: "noack".into(),
        channel: 2,
        connection: 1,
        no_ack: true,
        exclusive: false,
        prefetch: 0,
        priority: 0,
    };
    let c = Arc::new(Consumer::new(spec, q.clone(), limit.clone(), tx, Arc::default()));
    q.add_consumer(c.clone()).unwrap();
    let mut got = Vec::new();
    while let Ok(Event::Deliver { entry, .. }) = rx.try_recv() {
        got.push(entry);
    }
    assert_eq!(got.len(), 3);
    let s = q.stats();
    assert_eq!((s.ready, s.unacked, s.delivered, s.acked), (0, 0, 5, 4));
    c.retire();
    q.remove_retired();
    c.put_back(got.pop().unwrap());
    let s = q.stats();
    assert_eq!((s.ready, s.unacked, s.delivered, s.acked), (1, 0, 4, 3));
}

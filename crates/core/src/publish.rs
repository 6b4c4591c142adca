//! Publishing as one core operation: route a message, write it to the store once if it is
//! persistent and goes to durable queues, enqueue it everywhere it goes, and say what came of
//! it. The server calls this for basic.publish and tx.commit; what publishes from inside the
//! broker (dead-lettering, expiry, delayed delivery) calls the same.

use std::sync::Arc;

use warren_wire::FieldTable;

use crate::broker::Broker;
use crate::delayed::Delayed;
use crate::error::Result;
use crate::exchange::Destination;
use crate::message::Message;
use crate::queue::{Publish, Queue};
use crate::vhost::VHost;
use warren_store::{QueueId, Store, Stored};

/// Buffers a publisher reuses from one publish to the next, so that routing allocates
/// nothing per message.
#[derive(Debug, Default)]
pub struct Scratch {
    dest: Vec<Destination>,
    queues: Vec<Arc<Queue>>,
    /// Queues found congested by the last publishes (see `queue::flow`): the publisher should
    /// wait for them. The caller drains it.
    pub congested: Vec<Arc<Queue>>,
}

/// What a publish came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// Queues it was enqueued in (0: unroutable, or every queue it routed to was deleted
    /// meanwhile).
    pub queues: usize,
    /// If the store took it (persistent, for durable queues): the store's failure epoch at its
    /// append. A confirm must wait for the store's sync, and must be a nack if the epoch has
    /// moved by then.
    pub stored: Option<u64>,
    /// A queue refused it (its length limit with `x-overflow` reject-publish): a confirming
    /// publisher gets basic.nack, as from RabbitMQ.
    pub rejected: bool,
}

/// Where a routed message goes: queues, or a delayed exchange that holds it for a while.
#[derive(Debug)]
pub enum Route {
    /// These queues.
    Queues(Vec<Arc<Queue>>),
    /// Held by an `x-delayed-message` exchange for this many milliseconds.
    Delayed(Arc<Delayed>, u64),
}

/// What a message held by a delayed exchange came to: as the plugin, unroutable for now
/// (a mandatory publish is returned), confirmed once stored.
fn held(delayed: &Arc<Delayed>, message: Arc<Message>, delay: u64) -> Routed {
    let stored = delayed.hold(message, delay);
    Routed { queues: 0, stored, rejected: false }
}

impl VHost {
    /// Routes `message` from its exchange with its routing key (and `headers`, for headers
    /// exchanges), stores it if it is persistent and goes to a durable queue (once, however
    /// many), and enqueues it in every queue it goes to (or hands it to a delayed exchange).
    /// Refused (nothing enqueued) for a missing or internal exchange.
    pub fn publish(
        &self,
        message: Arc<Message>,
        headers: Option<&FieldTable>,
        scratch: &mut Scratch,
    ) -> Result<Routed> {
        let Scratch { dest, queues, congested } = scratch;
        if let Some((d, delay)) =
            self.route(&message.exchange, &message.routing_key, headers, dest, queues)?
        {
            return Ok(held(&d, message, delay));
        }
        Ok(enqueue(message, queues, congested, None).0)
    }

    /// Only routes `message`: where it goes, to [`VHost::deliver`] it there later (a
    /// transaction routes at publish time and delivers at commit, as RabbitMQ does).
    pub fn route_message(
        &self,
        message: &Message,
        headers: Option<&FieldTable>,
        scratch: &mut Scratch,
    ) -> Result<Route> {
        let Scratch { dest, queues, .. } = scratch;
        Ok(match self.route(&message.exchange, &message.routing_key, headers, dest, queues)? {
            Some((d, delay)) => Route::Delayed(d, delay),
            None => Route::Queues(std::mem::take(queues)),
        })
    }

    /// Stores and enqueues `message` where [`VHost::route_message`] said (queues deleted since
    /// are skipped).
    pub fn deliver(&self, message: Arc<Message>, route: Route, scratch: &mut Scratch) -> Routed {
        Staged::new(message, route).deliver(scratch)
    }
}

impl Broker {
    /// Calls `done` once everything the store has taken so far is on disk, or its write has
    /// failed (tell which with [`Broker::failed_since`]). Without a store nothing is ever
    /// stored, and nothing waits for this.
    pub fn after_sync(&self, done: impl FnOnce() + Send + 'static) {
        if let Some(store) = self.store() {
            store.sync(Box::new(done));
        }
    }

    /// The store's failure epoch now: it moves on each failed write or fsync.
    pub fn store_epoch(&self) -> u64 {
        self.store().map_or(0, |s| s.epoch())
    }

    /// Whether a write failed after the store's epoch was `epoch` (what was stored then may
    /// be lost, and must not be confirmed).
    pub fn failed_since(&self, epoch: u64) -> bool {
        self.store_epoch() > epoch
    }
}

/// A routed message written to the store ahead of its enqueues: a transaction's publish at
/// commit is stored first and enqueued only once every message of the commit is on disk, so
/// that a commit the store fails enqueues none of them. Dropped undelivered, it gives its
/// record up (the store's promised index entries will not come).
#[derive(Debug)]
pub struct Staged {
    message: Arc<Message>,
    route: Route,
    stored: Option<Reserved>,
}

/// A stored record and how many index entries the store still expects for it.
#[derive(Debug)]
struct Reserved {
    store: Arc<Store>,
    at: Stored,
    enqueues: u32,
}

impl Staged {
    /// Writes `message` to the store if it is persistent and routed to a durable queue
    /// (once, however many); a message for a delayed exchange is held at delivery.
    pub fn new(message: Arc<Message>, route: Route) -> Staged {
        let stored = match &route {
            Route::Queues(queues) => reserve(&message, queues),
            Route::Delayed(..) => None,
        };
        Staged { message, route, stored }
    }

    /// The store's failure epoch at the write, if it was written: the enqueues must wait for
    /// its sync, and must not happen if a write failed since.
    pub fn stored(&self) -> Option<u64> {
        self.stored.as_ref().map(|r| r.at.epoch)
    }

    /// The message.
    pub fn message(&self) -> &Arc<Message> {
        &self.message
    }

    /// Enqueues it where it was routed (queues deleted since are skipped).
    pub fn deliver(mut self, scratch: &mut Scratch) -> Routed {
        match std::mem::replace(&mut self.route, Route::Queues(Vec::new())) {
            Route::Queues(mut queues) => {
                let stored = self.stored.take();
                enqueue_reserved(
                    self.message.clone(),
                    &mut queues,
                    &mut scratch.congested,
                    None,
                    stored,
                )
                .0
            }
            Route::Delayed(d, delay) => held(&d, self.message.clone(), delay),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(r) = self.stored.take() {
            for _ in 0..r.enqueues {
                r.store.skip(r.at.id);
            }
        }
    }
}

/// Writes `message` to the store once if it is persistent and goes to a durable queue.
fn reserve(message: &Arc<Message>, queues: &[Arc<Queue>]) -> Option<Reserved> {
    if !message.is_persistent() {
        return None;
    }
    // Streams keep their messages in their own logs, whatever the delivery mode.
    let mut durable = queues.iter().filter(|q| !q.is_stream()).filter_map(|q| q.durable.as_ref());
    let d = durable.next()?;
    let enqueues = 1 + durable.count() as u32;
    Some(Reserved {
        store: d.store.clone(),
        at: d.store.append(message.clone(), enqueues),
        enqueues,
    })
}

/// Stores the message once if it is persistent and goes to a durable queue, then enqueues it
/// in `queues` (drained). A dead-lettered message names the stored entry it leaves
/// (`origin`): its durable enqueues are then a move, and the second value says whether any
/// was made (the store then removes the origin itself).
pub(crate) fn enqueue(
    message: Arc<Message>,
    queues: &mut Vec<Arc<Queue>>,
    congested: &mut Vec<Arc<Queue>>,
    origin: Option<(QueueId, u64)>,
) -> (Routed, bool) {
    let stored = reserve(&message, queues);
    enqueue_reserved(message, queues, congested, origin, stored)
}

/// Counts a queue that took the message; a congested one is noted (once) for its publisher
/// to wait for.
fn taken(outcome: Publish, q: Arc<Queue>, enqueued: &mut usize, congested: &mut Vec<Arc<Queue>>) {
    if outcome == Publish::Enqueued || outcome == Publish::Congested {
        *enqueued += 1;
    }
    if outcome == Publish::Congested && !congested.iter().any(|c| Arc::ptr_eq(c, &q)) {
        congested.push(q);
    }
}

/// Enqueues the message in `queues` (drained), its record already written (`stored`) if the
/// store keeps it: each durable queue that takes it writes the index entry the store expects,
/// each that does not (deleted, or refusing it) tells the store it will not come.
fn enqueue_reserved(
    message: Arc<Message>,
    queues: &mut Vec<Arc<Queue>>,
    congested: &mut Vec<Arc<Queue>>,
    origin: Option<(QueueId, u64)>,
    stored: Option<Reserved>,
) -> (Routed, bool) {
    let mut enqueued = 0;
    let mut rejected = false;
    let mut moved = false;
    // The oldest failure epoch of the stream appends: a confirm must wait for the store's sync
    // and be a nack if a write failed since.
    let mut streamed: Option<u64> = None;
    for q in queues.drain(..) {
        // (Checked first: no reference count is taken per classic enqueue.)
        if q.is_stream()
            && let Some((outcome, epoch)) = q.publish_stream(message.clone())
        {
            if let Some(e) = epoch {
                streamed = Some(streamed.map_or(e, |s: u64| s.min(e)));
            }
            taken(outcome, q, &mut enqueued, congested);
            continue;
        }
        let at = stored.as_ref().filter(|_| q.durable.is_some()).map(|r| r.at);
        let outcome = q.publish_from(message.clone(), at, origin);
        match outcome {
            Publish::Enqueued | Publish::Congested => {
                moved |= at.is_some() && origin.is_some();
                taken(outcome, q, &mut enqueued, congested);
            }
            Publish::Deleted | Publish::Rejected => {
                rejected |= matches!(outcome, Publish::Rejected);
                // Its promised index entry will not come.
                if let (Some(at), Some(r)) = (at, &stored) {
                    r.store.skip(at.id);
                }
            }
        }
    }
    let stored = match (stored.map(|r| r.at.epoch), streamed) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (Routed { queues: enqueued, stored, rejected }, moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use warren_wire::BasicProperties;

    use crate::exchange::{ExchangeKind, ExchangeOptions};
    use crate::queue::QueueOptions;

    fn message(exchange: &str, key: &str) -> Arc<Message> {
        Arc::new(Message::new(
            exchange.into(),
            key.into(),
            &BasicProperties::default(),
            Bytes::new(),
            Bytes::from_static(b"m"),
        ))
    }

    fn queue_options() -> QueueOptions {
        QueueOptions {
            durable: false,
            exclusive: None,
            auto_delete: false,
            arguments: FieldTable::new(),
        }
    }

    #[test]
    fn a_publish_is_routed_enqueued_and_counted() {
        let v = VHost::new("/");
        for q in ["a", "b"] {
            v.declare_queue(q, false, queue_options(), 1).unwrap();
        }
        let fanout = ExchangeOptions {
            kind: ExchangeKind::Fanout,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::new(),
        };
        v.declare_exchange("fan", "fanout", false, fanout).unwrap();
        for q in ["a", "b"] {
            v.bind_queue(q, "fan", "", &FieldTable::new(), 1).unwrap();
        }
        let mut s = Scratch::default();
        let r = v.publish(message("fan", ""), None, &mut s).unwrap();
        assert_eq!(r, Routed { queues: 2, stored: None, rejected: false });
        let r = v.publish(message("", "a"), None, &mut s).unwrap();
        assert_eq!(r.queues, 1);
        assert_eq!(v.publish(message("", "nowhere"), None, &mut s).unwrap().queues, 0);
        assert_eq!(v.publish(message("missing", ""), None, &mut s).unwrap_err().code, 404);
        assert_eq!(v.queue("a").unwrap().message_count(), 2);
        assert_eq!(v.queue("b").unwrap().message_count(), 1);
    }

    #[test]
    fn a_staged_publish_is_enqueued_only_when_delivered() {
        let dir = std::env::temp_dir().join(format!("warren-core-staged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let defaults = crate::broker::Defaults {
            user: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
            loopback_only: false,
        };
        let broker = Broker::open(&dir, &defaults).expect("open");
        let v = broker.vhost("/").unwrap();
        v.declare_queue("q", false, QueueOptions { durable: true, ..queue_options() }, 1).unwrap();
        let persistent = |body: &'static [u8]| {
            Arc::new(Message::new(
                "".into(),
                "q".into(),
                &BasicProperties { delivery_mode: Some(2), ..Default::default() },
                Bytes::new(),
                Bytes::from_static(body),
            ))
        };
        let mut s = Scratch::default();
        let stage = |m: Arc<Message>, s: &mut Scratch| {
            let route = v.route_message(&m, None, s).unwrap();
            Staged::new(m, route)
        };
        let dropped = stage(persistent(b"dropped"), &mut s);
        let kept = stage(persistent(b"kept"), &mut s);
        assert!(dropped.stored().is_some() && kept.stored().is_some(), "written at once");
        assert_eq!(v.queue("q").unwrap().message_count(), 0, "not enqueued before delivery");
        drop(dropped);
        assert_eq!(kept.deliver(&mut s).queues, 1);
        assert_eq!(v.queue("q").unwrap().message_count(), 1);
        broker.close();
        drop(v);
        drop(broker);
        // After a restart, only the delivered one is in the queue.
        let broker = Broker::open(&dir, &defaults).expect("reopen");
        let q = broker.vhost("/").unwrap().queue("q").unwrap();
        assert_eq!(q.message_count(), 1);
        assert_eq!(&q.get().unwrap().0.message.body[..], b"kept");
        broker.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

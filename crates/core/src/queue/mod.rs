//! Queues: ready messages in FIFO order, consumers served round-robin within their prefetch
//! windows, requeue to the original position, purge and delete.
//!
//! A queue's state sits behind one mutex with short, synchronous critical sections; nothing
//! awaits while holding it. Deliveries leave through each consumer's connection inbox.
//! Publishers that would bury lagging consumers are told to wait ([`flow`]). Messages that die
//! under the lock (expired, pushed out by a length limit) are collected and dead-lettered
//! when the lock is released ([`crate::dead_letter`]), never while it is held.

pub mod args;
pub mod consumer;
mod discard;
mod dispatch;
pub mod flow;
mod paging;
mod publish;
pub mod quorum;
mod read_back;
mod ready;
mod ttl;

use std::sync::{Arc, Mutex, Weak};

pub(crate) use publish::WRITE_BACKLOG_HIGH;
use read_back::READ_AHEAD;
use ready::Ready;
pub(crate) use ttl::NEVER;
use warren_wire::{FieldTable, ShortStr};

use crate::dead_letter::{Dead, DeadLetterTo, Reason};
use crate::error::{AmqpError, Result};
use crate::message::Message;
use crate::vhost::VHost;
pub use args::{Overflow, QueueArgs};
pub use consumer::{ChannelLimit, ConnectionId, Consumer, ConsumerSpec, Event, NO_ACK_WINDOW};
pub use flow::{Lag, Publish};
use tokio::sync::Notify;
use warren_store::{QueueId, Store};

/// A message in a queue, with the position it was enqueued at.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the queue; requeued messages go back to it.
    pub seq: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Whether it was delivered before.
    pub redelivered: bool,
    /// Whether the store holds it (persistent message in a durable queue): settling it must
    /// tell the store.
    pub stored: bool,
    /// When it expires (message TTL; kept when it is requeued).
    pub expires: u64,
    /// How many times it was delivered and came back (quorum queues count them).
    pub returns: u32,
}

/// Ready messages beyond this many keep only their place in the store in memory (when the
/// store has them): a backlog costs memory per message, not per byte.
pub const KEEP_LOADED: usize = 2048;

/// How a queue was declared.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueOptions {
    /// Survives a restart.
    pub durable: bool,
    /// Owned by one connection, deleted with it.
    pub exclusive: Option<ConnectionId>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A durable queue's place in the store.
#[derive(Debug, Clone)]
pub struct Durable {
    /// The store.
    pub store: Arc<Store>,
    /// The queue's id there.
    pub id: QueueId,
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Name, unique in its vhost.
    pub name: ShortStr,
    /// Declared options.
    pub options: QueueOptions,
    /// Where its persistent messages are kept, for a durable queue with a store.
    pub durable: Option<Durable>,
    /// Where it pages out the messages the store does not keep, when it is long: the broker's
    /// store, whether the queue is durable or not (`None` without a data dir).
    pager: Option<Arc<Store>>,
    /// The behaviour its arguments ask for (length limits, single active consumer), as
    /// declared; a policy may change some (see [`Queue::settings`]).
    pub args: QueueArgs,
    /// Its vhost, which routes what it dead-letters.
    vhost: Weak<VHost>,
    state: Mutex<State>,
    /// Wakes publishers held back by flow control.
    flow: Notify,
    /// Its definition is on disk (always, for a queue that is not durable).
    saved: std::sync::atomic::AtomicBool,
    /// Deliveries settled (acked, rejected, no-ack), ever: counted without the lock.
    settled: Padded,
    /// A stream queue's log and readers (`x-queue-type: stream`); the ready list and the
    /// rest of the state then stay unused, but for its consumers.
    stream: Option<Box<crate::stream::Stream>>,
}

#[derive(Debug, Default)]
struct State {
    ready: Ready,
    /// Body bytes of the ready messages.
    ready_bytes: u64,
    next_seq: u64,
    consumers: Vec<Arc<Consumer>>,
    /// Index of the consumer to try first on the next delivery (round-robin).
    next_consumer: usize,
    had_consumer: bool,
    deleted: bool,
    /// Publishers were told the queue is congested and may be waiting ([`flow`]).
    throttling: bool,
    /// Last declare, basic.get, or consumer leaving (`x-expires` counts from there); `None`
    /// until first set.
    last_used: Option<std::time::Instant>,
    /// An expiry watcher runs for this queue.
    expiry_watched: bool,
    /// A message TTL timer runs for this queue.
    ttl_timer: bool,
    /// A read of paged-out messages is in flight (`read_back`): deliveries wait for it.
    reading: bool,
    /// Messages that died under the lock, dead-lettered once it is released
    /// ([`Locked`](discard::Locked)).
    dead: Vec<Dead>,
    /// The settings in force: the declared arguments with the applying policy's
    /// ([`crate::policy`]): length limits, overflow, TTL, expiry, delivery limit.
    args: QueueArgs,
    /// Where dead messages go (`x-dead-letter-exchange`, or the policy's); `None`: dropped.
    dead_letter: Option<DeadLetterTo>,
    /// The applying policy's name.
    policy: Option<String>,
    /// Messages enqueued, ever (for the management API's rates).
    published: u64,
    /// Deliveries to consumers that acknowledge, and basic.get, ever.
    delivered: u64,
    /// Deliveries to no-ack consumers, ever (settled when sent).
    delivered_no_ack: u64,
    /// Deliveries that came back to the queue (requeued, or never reached their consumer).
    returned: u64,
}

/// What the management API shows of a queue: depths now, and counters since it was declared
/// (rates are their differences over time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Ready messages.
    pub ready: u64,
    /// Body bytes of the ready messages.
    pub ready_bytes: u64,
    /// Delivered and neither acknowledged nor returned yet.
    pub unacked: u64,
    /// Consumers.
    pub consumers: u64,
    /// Messages enqueued, ever.
    pub published: u64,
    /// Deliveries (consumers and basic.get), ever.
    pub delivered: u64,
    /// Deliveries acknowledged, rejected or taken with no-ack, ever.
    pub acked: u64,
    /// Deliveries returned to the queue (requeued), ever.
    pub redelivered: u64,
}

/// A counter on its own cache line (written by consumers' connections, away from the queue's
/// lock).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(std::sync::atomic::AtomicU64);

/// What removing a consumer left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerRemoved {
    /// Whether a consumer with that tag was there.
    pub found: bool,
    /// Whether the queue is auto-delete and has now lost its last consumer.
    pub auto_delete_now: bool,
}

impl Queue {
    /// An empty queue outside any vhost (it cannot dead-letter).
    pub fn new(name: ShortStr, options: QueueOptions) -> Self {
        Self::with_store(name, options, None, None, Weak::new())
    }

    /// An empty queue of `vhost` whose persistent messages go to the store (if `durable`), and
    /// which pages long backlogs out to `pager`.
    pub fn with_store(
        name: ShortStr,
        options: QueueOptions,
        durable: Option<Durable>,
        pager: Option<Arc<Store>>,
        vhost: Weak<VHost>,
    ) -> Self {
        Self::build(name, options, durable, pager, vhost, None)
    }

    /// A stream queue of `vhost` (see [`crate::stream`]), its log opened (or recovered) in
    /// `durable`'s store under its id.
    pub fn new_stream(
        name: ShortStr,
        options: QueueOptions,
        durable: Durable,
        vhost: Weak<VHost>,
    ) -> Result<Arc<Self>> {
        let config = crate::stream::args::check_args(&options.arguments, &name, "")?;
        let stream = crate::stream::Stream::open(&durable.store, durable.id, config)?;
        let pager = Some(durable.store.clone());
        let stream = Some(Box::new(stream));
        let q = Arc::new(Self::build(name, options, Some(durable), pager, vhost, stream));
        if let Some(s) = &q.stream {
            s.hook(Arc::downgrade(&q));
        }
        Ok(q)
    }

    fn build(
        name: ShortStr,
        options: QueueOptions,
        durable: Option<Durable>,
        pager: Option<Arc<Store>>,
        vhost: Weak<VHost>,
        stream: Option<Box<crate::stream::Stream>>,
    ) -> Self {
        let durable_is_none = durable.is_none();
        let pager = pager.or_else(|| durable.as_ref().map(|d| d.store.clone()));
        // Checked at declare (and so in the definitions): read leniently here.
        let args = QueueArgs::parse(&options.arguments, &name, "").unwrap_or_default();
        let dead_letter = DeadLetterTo::parse(&options.arguments, &name, "").unwrap_or_default();
        Queue {
            name,
            options,
            durable,
            pager,
            args,
            vhost,
            state: Mutex::new(State {
                ready: Ready::new(args.max_priority.unwrap_or(0)),
                args,
                dead_letter,
                ..State::default()
            }),
            flow: Notify::new(),
            saved: std::sync::atomic::AtomicBool::new(durable_is_none),
            settled: Padded::default(),
            stream,
        }
    }

    /// The stream, if this is a stream queue.
    pub fn stream(&self) -> Option<&crate::stream::Stream> {
        self.stream.as_deref()
    }

    /// Whether this is a stream queue.
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Its kind, as policies see it.
    pub fn kind(&self) -> crate::policy::QueueKind {
        if self.is_stream() {
            crate::policy::QueueKind::Stream
        } else if self.args.quorum {
            crate::policy::QueueKind::Quorum
        } else {
            crate::policy::QueueKind::Classic
        }
    }

    /// RabbitMQ's type name of the queue (`rabbit_classic_queue` ...), as its errors say it.
    pub fn type_module(&self) -> &'static str {
        if self.is_stream() {
            "rabbit_stream_queue"
        } else if self.args.quorum {
            "rabbit_quorum_queue"
        } else {
            "rabbit_classic_queue"
        }
    }

    /// Tells the store that deliveries to a no-ack consumer are gone for good (counted as
    /// settled when they were sent).
    pub fn settle_no_ack<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>) {
        self.settle_seqs(entries.into_iter().map(|e| (e.seq, e.stored)));
    }

    /// Tells the store that entries are gone for good (acked, rejected without requeue,
    /// taken by a no-ack basic.get).
    pub fn settle<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>) {
        let mut n = 0;
        self.settle_seqs(entries.into_iter().map(|e| {
            n += 1;
            (e.seq, e.stored)
        }));
        self.settled.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Removes one entry from the store (if it holds it).
    pub(crate) fn settle_seq(&self, seq: u64, stored: bool) {
        self.settle_seqs(std::iter::once((seq, stored)));
    }

    /// basic.reject / basic.nack without requeue: the entries are dead-lettered (reason
    /// `rejected`), or dropped if the queue has no dead-letter exchange.
    pub fn reject(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut n = 0;
        let dead = entries.into_iter().inspect(|_| n += 1).map(|e| Dead {
            message: e.message,
            reason: Reason::Rejected,
            seq: e.seq,
            stored: e.stored,
        });
        self.dead_letter_now(dead.collect());
        self.settled.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The settings in force (the declared arguments with the applying policy) and where dead
    /// messages go.
    pub fn settings(&self) -> (QueueArgs, Option<DeadLetterTo>) {
        let st = self.state();
        (st.args, st.dead_letter.clone())
    }

    /// The name of the policy that applies, if one does.
    pub fn policy(&self) -> Option<String> {
        self.state().policy.clone()
    }

    /// Applies `policy` (or none): the settings change at once; a lower length limit or TTL
    /// drops (or dead-letters) what it must now.
    pub fn apply_policy(self: &Arc<Self>, policy: Option<&crate::policy::Policy>) {
        if let Some(s) = &self.stream {
            // A stream takes retention and segment size from a policy (the policy winning).
            let declared = crate::stream::args::check_args(&self.options.arguments, "", "")
                .unwrap_or_default();
            s.log().set_config(crate::policy::stream_config(declared, policy));
            self.state().policy = policy.map(|p| p.name.clone());
            return;
        }
        let (args, dead_letter) =
            crate::policy::queue_settings(&self.options.arguments, self.args, policy);
        {
            let mut st = self.state();
            st.args = args;
            st.dead_letter = dead_letter;
            st.policy = policy.map(|p| p.name.clone());
            if args.message_ttl.is_some() {
                // Messages already queued keep their deadlines (as RabbitMQ); new ones get
                // the TTL.
                let head = self.drop_expired(&mut st);
                self.arm_ttl_timer(&mut st, head);
            }
        }
        // A lower limit cuts the queue: in chunks, the lock released (and what was cut
        // dead-lettered) between them, so a large backlog is never read back all at once.
        loop {
            let mut st = self.state();
            if st.args.overflow != Overflow::DropHead {
                return;
            }
            for _ in 0..READ_AHEAD * 4 {
                if !st.args.over(st.ready.len(), st.ready_bytes) {
                    return;
                }
                if !self.discard_front(&mut st, Reason::MaxLen) {
                    return;
                }
            }
        }
    }

    /// Removes every message that is ready (not those awaiting an ack); returns how many.
    pub fn purge(&self) -> u32 {
        if self.is_stream() {
            return 0;
        }
        let mut st = self.state();
        let n = st.ready.len() as u32;
        self.forget(st.ready.iter().map(|s| (s.seq, s.stored, &s.body)), true);
        st.ready.clear();
        st.ready_bytes = 0;
        self.end_throttling(&mut st);
        n
    }

    /// The queue was declared (or redeclared, or declared passively): `x-expires` counts from
    /// now.
    pub fn touch(&self) {
        self.state().last_used = Some(std::time::Instant::now());
    }

    /// For `x-expires` (or a policy's `expires`): `None` if the queue was deleted or has no
    /// expiry (any more); else how long until it may expire (zero: unused for the whole period
    /// now). A queue with consumers is not unused: it is looked at again a period later.
    pub fn unused_for(&self) -> Option<std::time::Duration> {
        let mut st = self.state();
        let period = std::time::Duration::from_millis(st.args.expires?);
        if st.deleted {
            return None;
        }
        let since = *st.last_used.get_or_insert_with(std::time::Instant::now);
        if !st.consumers.is_empty() {
            return Some(period);
        }
        Some(period.saturating_sub(since.elapsed()))
    }

    /// Marks the queue as watched for expiry; false if it already was.
    pub fn start_expiry_watch(&self) -> bool {
        !std::mem::replace(&mut self.state().expiry_watched, true)
    }

    /// Its expiry watch ended (no expiry any more).
    pub fn stop_expiry_watch(&self) {
        self.state().expiry_watched = false;
    }

    /// The properties a delivery of `entry` carries, if not the message's own: a quorum
    /// queue adds `x-delivery-count`.
    pub fn delivery_properties(&self, entry: &Entry) -> Option<bytes::Bytes> {
        if self.is_stream() {
            return Some(crate::stream::delivery_properties(&entry.message.properties, entry.seq));
        }
        self.args
            .quorum
            .then(|| quorum::delivery_properties(&entry.message.properties, entry.returns))
    }

    /// Depths and counters, for the management API.
    pub fn stats(&self) -> QueueStats {
        let settled = self.settled.0.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = &self.stream {
            // As RabbitMQ: every retained message is ready; deliveries are never unacked
            // messages of the stream (acks give credit only).
            let stats = s.stats();
            return QueueStats {
                ready: stats.messages,
                ready_bytes: stats.bytes,
                unacked: 0,
                consumers: self.state().consumers.len() as u64,
                published: stats.published,
                delivered: stats.delivered,
                acked: settled,
                redelivered: 0,
            };
        }
        let st = self.state();
        QueueStats {
            ready: st.ready.len() as u64,
            ready_bytes: st.ready_bytes,
            unacked: st.delivered.saturating_sub(st.returned).saturating_sub(settled),
            consumers: st.consumers.len() as u64,
            published: st.published,
            delivered: st.delivered + st.delivered_no_ack,
            acked: settled + st.delivered_no_ack,
            redelivered: st.returned,
        }
    }

    /// Ready messages.
    pub fn message_count(&self) -> u32 {
        if let Some(s) = &self.stream {
            return s.len().min(u64::from(u32::MAX)) as u32;
        }
        self.state().ready.len() as u32
    }

    /// Its consumers now (for the management API).
    pub fn consumers(&self) -> Vec<Arc<Consumer>> {
        self.state().consumers.clone()
    }

    /// Consumers.
    pub fn consumer_count(&self) -> u32 {
        self.state().consumers.len() as u32
    }

    /// Whether its definition is on disk (a durable queue's declare saved it).
    pub(crate) fn is_saved(&self) -> bool {
        self.saved.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Its definition is on disk.
    pub(crate) fn mark_saved(&self) {
        self.saved.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Marks the queue deleted, drops its messages and tells its consumers; returns the number
    /// of ready messages it held.
    pub(crate) fn delete(&self) -> u32 {
        let mut st = self.state();
        st.deleted = true;
        if let Some(s) = &self.stream {
            s.delete();
        } else if let Some(d) = &self.durable {
            d.store.drop_queue(d.id);
        }
        let n = st.ready.len() as u32;
        self.forget(st.ready.iter().map(|s| (s.seq, s.stored, &s.body)), false);
        st.ready.clear();
        st.ready_bytes = 0;
        self.end_throttling(&mut st);
        for c in st.consumers.drain(..) {
            let _ = c.send(Event::Cancelled { consumer: c.clone() });
        }
        n
    }

    /// Whether `connection` may use this queue (exclusive queues belong to one connection).
    pub fn check_access(&self, connection: ConnectionId, vhost: &str) -> Result<()> {
        match self.options.exclusive {
            Some(owner) if owner != connection => Err(self.locked(vhost)),
            _ => Ok(()),
        }
    }

    /// RabbitMQ's 405 for a queue another connection holds exclusively, or whose exclusive
    /// flag a redeclare contradicts.
    pub fn locked(&self, vhost: &str) -> AmqpError {
        AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{vhost}'. It could be \
             originally declared on another connection or the exclusive property value does not \
             match that of the original declaration.",
            self.name
        ))
    }
}

#[cfg(test)]
mod tests;

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
pub mod flow;
pub mod quorum;
mod ready;
mod ttl;

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ready::Ready;
use warren_wire::{BasicProperties, FieldTable, ShortStr};

use crate::dead_letter::{Dead, DeadLetterTo, Reason};
use crate::error::{AmqpError, Result};
use crate::message::Message;
use crate::vhost::VHost;
pub use args::{Overflow, QueueArgs};
pub use consumer::{ChannelLimit, ConnectionId, Consumer, ConsumerSpec, Event, NO_ACK_WINDOW};
use flow::{FLOW_HIGH, FLOW_LOW};
pub use flow::{Lag, Publish};
use tokio::sync::Notify;
use tracing::error;
use warren_store::{Location, QueueId, RecoveredQueue, Store, Stored};

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

/// Messages the store does not keep (transient ones, or any in a non-durable queue) are paged
/// out to it only in longer queues than stored ones are, so that the usual backlog of a busy
/// queue (flow control holds it near [`FLOW_HIGH`]) costs no disk writes: past this many
/// ready messages...
const PAGE_TRANSIENT_COUNT: usize = 32 * 1024;
/// ...or past [`KEEP_LOADED`] messages holding this many body bytes.
const PAGE_TRANSIENT_BYTES: u64 = 16 * 1024 * 1024;
/// Publishers paging out are held back (as by [`flow`]) while the store has more than this
/// many paged-out bytes still to write, until it is down to half of it.
const PAGING_BACKLOG_HIGH: u64 = 64 * 1024 * 1024;

/// How many paged-out messages are read back together when the front of the queue needs them.
const READ_AHEAD: usize = 64;

/// A ready message as the queue keeps it.
#[derive(Debug)]
struct Slot {
    seq: u64,
    body: Body,
    redelivered: bool,
    stored: bool,
    /// Body bytes (for `x-max-length-bytes`; the record's length for a recovered message).
    size: u32,
    /// Its TTL deadline (see `ttl`).
    expires: u64,
    /// Its priority level (always 0 in a queue without `x-max-priority`).
    level: u8,
    /// Deliveries that came back (quorum queues).
    returns: u32,
}

/// A ready message's body: in memory, or only in the store (as a stored message's record, or
/// paged out: see [`Store::page_out`]; the slot's `stored` tells which).
#[derive(Debug)]
enum Body {
    Loaded(Arc<Message>),
    Paged(Location),
}

impl Slot {
    /// A delivered entry coming back, to its priority level in `ready`.
    fn back(e: Entry, ready: &Ready) -> Slot {
        Slot {
            seq: e.seq,
            size: body_size(&e.message),
            level: ready.level(BasicProperties::priority_of(&e.message.properties)),
            body: Body::Loaded(e.message),
            redelivered: e.redelivered,
            stored: e.stored,
            expires: e.expires,
            returns: e.returns,
        }
    }
}

fn body_size(m: &Message) -> u32 {
    u32::try_from(m.body.len()).unwrap_or(u32::MAX)
}

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
    /// Messages that died under the lock, dead-lettered once it is released ([`Locked`]).
    dead: Vec<Dead>,
    /// The settings in force: the declared arguments with the applying policy's
    /// ([`crate::policy`]): length limits, overflow, TTL, expiry, delivery limit.
    args: QueueArgs,
    /// Where dead messages go (`x-dead-letter-exchange`, or the policy's); `None`: dropped.
    dead_letter: Option<DeadLetterTo>,
    /// The applying policy's name.
    policy: Option<String>,
}

/// The queue's locked state. Dropping it releases the lock first, then dead-letters what died
/// meanwhile: a dead-letter publish takes other queues' locks, and must never do so under
/// this one (two queues dead-lettering into each other would deadlock).
struct Locked<'a> {
    queue: &'a Queue,
    guard: Option<MutexGuard<'a, State>>,
}

impl Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut guard) = self.guard.take() else { return };
        if guard.dead.is_empty() {
            return;
        }
        let dead = std::mem::take(&mut guard.dead);
        drop(guard);
        self.queue.dead_letter_now(dead);
    }
}

/// What removing a consumer left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerRemoved {
    /// Whether a consumer with that tag was there.
    pub found: bool,
    /// Whether the queue is auto-delete and has now lost its last consumer.
    pub auto_delete_now: bool,
}

/// The consumer to deliver to next, with its window place taken: the highest `x-priority`
/// among those with room, round-robin among equals.
fn pick_consumer(st: &State, single_active: bool) -> Option<usize> {
    if single_active {
        // x-single-active-consumer: the earliest consumer still subscribed gets everything;
        // when it goes, the next in line takes over.
        let first = st.consumers.first()?;
        return (first.has_room() && first.try_reserve()).then_some(0);
    }
    let n = st.consumers.len();
    let start = st.next_consumer % n;
    loop {
        let mut best: Option<usize> = None;
        for i in (0..n).map(|i| (start + i) % n) {
            let c = &st.consumers[i];
            if best.is_none_or(|b| c.priority > st.consumers[b].priority) && c.has_room() {
                best = Some(i);
            }
        }
        let idx = best?;
        // A channel-wide window shared with another queue may have filled meanwhile.
        if st.consumers[idx].try_reserve() {
            return Some(idx);
        }
    }
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
        }
    }

    /// Puts recovered messages in (at start-up, before any client).
    pub fn recover(&self, recovered: RecoveredQueue) {
        let mut st = self.state();
        st.next_seq = st.next_seq.max(recovered.next_seq);
        let ttl = st.args.message_ttl;
        for m in recovered.messages {
            st.next_seq = st.next_seq.max(m.seq + 1);
            st.ready_bytes += u64::from(m.loc.len);
            let level = st.ready.level(Some(m.priority));
            st.ready.push_back(Slot {
                seq: m.seq,
                body: Body::Paged(m.loc),
                redelivered: m.redelivered,
                stored: true,
                size: m.loc.len,
                // The queue's TTL counts again from the restart (RabbitMQ keeps the absolute
                // time); a message's own expiration from when it is read back.
                expires: ttl::deadline(ttl, None),
                level,
                // Delivery counts are not stored: one delivered before counts once.
                returns: u32::from(m.redelivered),
            });
        }
    }

    /// Reads paged-out bodies at the front of the queue back from the store (up to
    /// `READ_AHEAD` in one go); false if nothing could be read. A record that is gone (its
    /// write failed and its publish was nacked) is dropped, loudly; a read error leaves the
    /// messages where they are, to be tried again at the next dispatch.
    fn load_front(&self, st: &mut State) -> bool {
        let Some(store) = &self.pager else { return false };
        let locs: Vec<Location> = st
            .ready
            .iter()
            .take(READ_AHEAD)
            .map_while(|s| match s.body {
                Body::Paged(loc) => Some(loc),
                Body::Loaded(_) => None,
            })
            .collect();
        if locs.is_empty() {
            return false;
        }
        let read = match store.read_many(&locs) {
            Ok(read) => read,
            Err(e) => {
                error!(queue = %self.name, "reading messages back failed, will retry: {e}");
                return false;
            }
        };
        let mut lost = Vec::new();
        for ((slot, m), loc) in st.ready.iter_mut().zip(read).zip(&locs) {
            if !slot.stored {
                // Paged out: the store's copy is not needed any more.
                store.unpage(*loc);
            }
            match m {
                Some(m) => {
                    if slot.stored && m.expiration.is_some() {
                        // A recovered message's own expiration counts from now (for one
                        // paged out before, its deadline from the publish is the earlier).
                        slot.expires = slot.expires.min(ttl::deadline(None, m.expiration));
                    }
                    slot.body = Body::Loaded(Arc::new(m));
                }
                None => lost.push((slot.seq, slot.stored)),
            }
        }
        if !lost.is_empty() {
            error!(queue = %self.name, "{} message(s) are not on disk (their writes failed); dropped", lost.len());
            st.ready.retain(|s| !lost.iter().any(|(seq, _)| *seq == s.seq));
            st.ready_bytes = st.ready.iter().map(|s| u64::from(s.size)).sum();
            self.settle_seqs(lost.into_iter());
        }
        true
    }

    /// Takes the first ready message, its body in memory.
    fn pop_loaded(&self, st: &mut State) -> Option<Entry> {
        loop {
            if st.ready.front()?.expires != ttl::NEVER {
                self.drop_expired(st);
            }
            let front = st.ready.front()?;
            if matches!(front.body, Body::Paged(_)) {
                if !self.load_front(st) {
                    return None;
                }
                continue;
            }
            let slot = st.ready.pop_front()?;
            st.ready_bytes -= u64::from(slot.size);
            let Body::Loaded(message) = slot.body else { continue };
            return Some(Entry {
                seq: slot.seq,
                message,
                redelivered: slot.redelivered,
                stored: slot.stored,
                expires: slot.expires,
                returns: slot.returns,
            });
        }
    }

    /// Tells the store that entries are gone for good (acked, rejected without requeue,
    /// delivered with no-ack).
    pub fn settle<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>) {
        self.settle_seqs(entries.into_iter().map(|e| (e.seq, e.stored)));
    }

    /// Removes one entry from the store (if it holds it).
    pub(crate) fn settle_seq(&self, seq: u64, stored: bool) {
        self.settle_seqs(std::iter::once((seq, stored)));
    }

    /// basic.reject / basic.nack without requeue: the entries are dead-lettered (reason
    /// `rejected`), or dropped if the queue has no dead-letter exchange.
    pub fn reject(&self, entries: impl IntoIterator<Item = Entry>) {
        let dead = entries.into_iter().map(|e| Dead {
            message: e.message,
            reason: Reason::Rejected,
            seq: e.seq,
            stored: e.stored,
        });
        self.dead_letter_now(dead.collect());
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
            for _ in 0..READ_AHEAD * 16 {
                if !st.args.over(st.ready.len(), st.ready_bytes) {
                    return;
                }
                if !self.discard_front(&mut st, Reason::MaxLen) {
                    return;
                }
            }
        }
    }

    /// Dead-letters `dead` (no lock held), or settles it if the vhost is gone.
    fn dead_letter_now(&self, dead: Vec<Dead>) {
        match self.vhost.upgrade() {
            Some(vhost) => vhost.dead_letter(self, dead),
            None => self.settle_seqs(dead.iter().map(|d| (d.seq, d.stored))),
        }
    }

    /// Removes the ready message at the head for good (expired, over a length limit):
    /// dead-lettered if the queue has a dead-letter exchange (its body read back first if it
    /// is paged out), else dropped. False if there was none, or its body could not be read.
    fn discard_front(&self, st: &mut State, reason: Reason) -> bool {
        if st.dead_letter.is_some()
            && st.ready.front().is_some_and(|s| matches!(s.body, Body::Paged(_)))
            && !self.load_front(st)
        {
            return false;
        }
        let Some(slot) = st.ready.pop_front() else { return false };
        st.ready_bytes -= u64::from(slot.size);
        self.discard(st, slot, reason);
        true
    }

    /// Disposes of a ready message taken out of the queue for good (see `discard_front`).
    fn discard(&self, st: &mut State, slot: Slot, reason: Reason) {
        match (st.dead_letter.is_some(), slot.body) {
            (true, Body::Loaded(message)) => {
                st.dead.push(Dead { message, reason, seq: slot.seq, stored: slot.stored });
            }
            (_, body) => self.forget(std::iter::once((slot.seq, slot.stored, &body)), true),
        }
    }

    /// Gives up ready messages dropped unread: a stored one is removed from the store (unless
    /// `remove` is false: the queue's files go as a whole), a paged-out one unpaged.
    fn forget<'a>(&self, slots: impl Iterator<Item = (u64, bool, &'a Body)>, remove: bool) {
        for (seq, stored, body) in slots {
            match (stored, body) {
                (true, _) if remove => self.settle_seq(seq, true),
                (false, Body::Paged(loc)) => {
                    if let Some(store) = &self.pager {
                        store.unpage(*loc);
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether a message the store does not keep, enqueued now, is paged out at once.
    fn pages_transient(&self, st: &State) -> bool {
        self.pager.is_some()
            && st.ready.len() >= KEEP_LOADED
            && (st.ready.len() >= PAGE_TRANSIENT_COUNT || st.ready_bytes >= PAGE_TRANSIENT_BYTES)
    }

    fn settle_seqs(&self, entries: impl Iterator<Item = (u64, bool)>) {
        if let Some(d) = &self.durable {
            for (seq, stored) in entries {
                if stored {
                    d.store.remove(d.id, seq);
                }
            }
        }
    }

    /// Records the first delivery of a stored entry, so that it comes back redelivered after
    /// a restart.
    fn mark_delivered(&self, e: &Entry) {
        if e.stored
            && !e.redelivered
            && let Some(d) = &self.durable
        {
            d.store.delivered(d.id, e.seq);
        }
    }

    fn state(&self) -> Locked<'_> {
        // A panic while holding the lock leaves consistent data (every section is short and
        // does its writes last), so a poisoned lock is taken over rather than spread.
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Locked { queue: self, guard: Some(guard) }
    }

    /// Enqueues a message and delivers it at once if a consumer has room. `stored` is the
    /// store's id for the message when it was appended for this queue. Says whether the queue
    /// was deleted meanwhile (nothing enqueued), or is congested (see [`flow`]).
    pub fn publish(self: &Arc<Self>, message: Arc<Message>, stored: Option<Stored>) -> Publish {
        self.publish_from(message, stored, None)
    }

    /// As [`Queue::publish`], for a message dead-lettered from the stored entry `origin`
    /// (queue, position): a stored enqueue is then a move in the store.
    pub fn publish_from(
        self: &Arc<Self>,
        message: Arc<Message>,
        stored: Option<Stored>,
        origin: Option<(QueueId, u64)>,
    ) -> Publish {
        let mut st = self.state();
        if st.deleted {
            return Publish::Deleted;
        }
        let size = body_size(&message);
        let level = match self.args.max_priority {
            Some(_) => st.ready.level(BasicProperties::priority_of(&message.properties)),
            None => 0,
        };
        // reject-publish: refused if it would take the queue over its limits (RabbitMQ's
        // will_overflow, checked before any consumer could take it).
        if st.args.rejects() && st.args.over(st.ready.len() + 1, st.ready_bytes + u64::from(size)) {
            if st.args.overflow == Overflow::RejectPublishDlx && st.dead_letter.is_some() {
                // reject-publish-dlx: the refused message is dead-lettered (maxlen).
                st.dead.push(Dead { message, reason: Reason::MaxLen, seq: 0, stored: false });
            }
            return Publish::Rejected;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let expires = ttl::deadline(st.args.message_ttl, message.expiration);
        let ttl_zero = st.args.message_ttl == Some(0) || message.expiration == Some(0);
        let (body, stored) = match (stored, &self.durable) {
            (Some(s), Some(d)) => {
                // Under the queue lock: the store sees this queue's positions in order, and
                // before any ack of them.
                match origin {
                    Some(from) => d.store.enqueue_moved(d.id, seq, s.id, from),
                    None => d.store.enqueue(d.id, seq, s.id),
                }
                // A TTL-0 message stays loaded: if no consumer takes it, it is dead-lettered.
                let body = if st.ready.len() >= KEEP_LOADED && !ttl_zero {
                    Body::Paged(s.loc)
                } else {
                    Body::Loaded(message)
                };
                (body, true)
            }
            (_, _) => match &self.pager {
                // A TTL-0 message stays loaded (see above).
                Some(pager) if !ttl_zero && self.pages_transient(&st) => {
                    (Body::Paged(pager.page_out(message)), false)
                }
                _ => (Body::Loaded(message), false),
            },
        };
        st.ready_bytes += u64::from(size);
        let slot = Slot { seq, body, redelivered: false, stored, size, expires, level, returns: 0 };
        st.ready.push_back(slot);
        if !st.consumers.is_empty() {
            self.dispatch_locked(&mut st);
        }
        if ttl_zero {
            // TTL 0: delivered at once or not at all.
            if let Some(slot) = st.ready.pop_back_if(level, |s| s.seq == seq) {
                st.ready_bytes -= u64::from(slot.size);
                self.discard(&mut st, slot, Reason::Expired);
            }
        }
        self.drop_head(&mut st);
        if expires != ttl::NEVER {
            let head = self.drop_expired(&mut st);
            self.arm_ttl_timer(&mut st, head);
        }
        if st.ready.len() >= FLOW_HIGH && st.consumers.iter().any(|c| c.is_lagging()) {
            st.throttling = true;
            return Publish::Congested;
        }
        if self.pager.as_ref().is_some_and(|p| p.paging_backlog() > PAGING_BACKLOG_HIGH) {
            // The disk does not keep up with paging: the publisher waits for it.
            st.throttling = true;
            return Publish::Congested;
        }
        Publish::Enqueued
    }

    /// Whether publishers told of congestion must still wait: the queue still holds
    /// [`flow::FLOW_LOW`] ready messages or more and a consumer still lags. Wakes the other
    /// waiters when that is over.
    pub fn flow_blocked(&self) -> bool {
        let mut st = self.state();
        if !st.throttling {
            return false;
        }
        let paging =
            self.pager.as_ref().is_some_and(|p| p.paging_backlog() > PAGING_BACKLOG_HIGH / 2);
        let blocked = !st.deleted
            && (paging
                || (st.ready.len() >= FLOW_LOW && st.consumers.iter().any(|c| c.is_lagging())));
        if !blocked {
            self.end_throttling(&mut st);
        }
        blocked
    }

    /// Resolves when the queue's congestion may be over (look with [`Queue::flow_blocked`]):
    /// enable the future before looking, or a wake-up in between is missed.
    pub fn flow_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.flow.notified()
    }

    fn end_throttling(&self, st: &mut State) {
        if std::mem::take(&mut st.throttling) {
            self.flow.notify_waiters();
        }
    }

    /// drop-head (the default overflow): while the queue is over its length limits, the
    /// oldest ready messages are dropped or dead-lettered (maxlen).
    fn drop_head(&self, st: &mut State) {
        if st.args.overflow != Overflow::DropHead {
            return;
        }
        while st.args.over(st.ready.len(), st.ready_bytes) {
            if !self.discard_front(st, Reason::MaxLen) {
                return;
            }
        }
    }

    /// Delivers ready messages to consumers with room, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        self.deliver_ready(st);
        if st.throttling && st.ready.len() < FLOW_LOW {
            self.end_throttling(st);
        }
    }

    fn deliver_ready(self: &Arc<Self>, st: &mut State) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let Some(idx) = pick_consumer(st, self.args.single_active_consumer) else { return };
            st.next_consumer = idx + 1;
            let Some(entry) = self.pop_loaded(st) else {
                // Nothing readable was left: give the reserved window place back.
                st.consumers[idx].unsent();
                return;
            };
            self.mark_delivered(&entry);
            // One reference count for the consumer per delivery, none for the queue (the
            // consumer holds it): they are shared with the consumer's connection, on another
            // core, and each count is a contended cache line.
            let consumer = &st.consumers[idx];
            let event = Event::Deliver { consumer: consumer.clone(), entry };
            if let Err(Event::Deliver { consumer, entry: back, .. }) = consumer.send(event) {
                // The consumer's connection is gone: drop the consumer, keep the message.
                consumer.unsent();
                st.consumers.remove(idx);
                let slot = Slot::back(back, &st.ready);
                st.ready_bytes += u64::from(slot.size);
                st.ready.push_front(slot);
            }
        }
    }

    /// basic.get: takes the first ready message, with the count left behind.
    pub fn get(&self) -> Option<(Entry, u32)> {
        let mut st = self.state();
        st.last_used = Some(std::time::Instant::now());
        let entry = self.pop_loaded(&mut st)?;
        self.mark_delivered(&entry);
        Some((entry, st.ready.len() as u32))
    }

    /// Puts messages back at their original positions, flagged redelivered, and dispatches.
    /// A quorum queue counts the return, and dead-letters (or drops) a message returned more
    /// often than its delivery limit.
    pub fn requeue(self: &Arc<Self>, entries: impl IntoIterator<Item = Entry>) {
        self.put_back(
            entries.into_iter().map(|mut e| {
                e.redelivered = true;
                e
            }),
            true,
        );
    }

    /// Puts back messages that never reached their consumer (it went away while they were on
    /// their way), keeping their redelivered flag as it was.
    pub fn restore(self: &Arc<Self>, entries: impl IntoIterator<Item = Entry>) {
        self.put_back(entries.into_iter(), false);
    }

    fn put_back(self: &Arc<Self>, entries: impl Iterator<Item = Entry>, returned: bool) {
        let mut st = self.state();
        if st.deleted {
            return;
        }
        let mut deadline = false;
        for mut e in entries {
            if returned && self.args.quorum {
                e.returns = e.returns.saturating_add(1);
                if st.args.delivery_limit.is_some_and(|l| u64::from(e.returns) > l) {
                    let slot = Slot::back(e, &st.ready);
                    self.discard(&mut st, slot, Reason::DeliveryLimit);
                    continue;
                }
            }
            let slot = Slot::back(e, &st.ready);
            deadline |= slot.expires != ttl::NEVER;
            st.ready_bytes += u64::from(slot.size);
            st.ready.insert_by_seq(slot);
        }
        if deadline {
            // Requeued messages keep their deadlines: some may be due now.
            let head = self.drop_expired(&mut st);
            self.arm_ttl_timer(&mut st, head);
        }
        self.dispatch_locked(&mut st);
    }

    /// Adds a consumer (refused if the queue or the consumer wants exclusivity and cannot have
    /// it) and delivers what is ready.
    pub fn add_consumer(self: &Arc<Self>, consumer: Arc<Consumer>) -> Result<()> {
        let mut st = self.state();
        if st.deleted {
            return Err(AmqpError::not_found(format!("no queue '{}'", self.name)));
        }
        // Only the first consumer can be exclusive: looking at it is enough (no scan).
        if st.consumers.first().is_some_and(|c| c.exclusive)
            || (consumer.exclusive && !st.consumers.is_empty())
        {
            return Err(AmqpError::access_refused(format!(
                "queue '{}' in vhost has an exclusive consumer",
                self.name
            )));
        }
        st.consumers.push(consumer);
        st.had_consumer = true;
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Removes the consumers that were retired ([`Consumer::retire`]): one pass however many
    /// there are, so closing a channel with thousands of consumers costs one pass per queue,
    /// not one per consumer.
    pub fn remove_retired(&self) -> ConsumerRemoved {
        let mut st = self.state();
        let before = st.consumers.len();
        st.consumers.retain(|c| c.is_active());
        let found = st.consumers.len() != before;
        if found && st.consumers.is_empty() {
            // Unused from now on: x-expires counts from here.
            st.last_used = Some(std::time::Instant::now());
        }
        if st.next_consumer >= st.consumers.len() {
            st.next_consumer = 0;
        }
        ConsumerRemoved {
            found,
            auto_delete_now: found
                && self.options.auto_delete
                && st.had_consumer
                && st.consumers.is_empty()
                && !st.deleted,
        }
    }

    /// Removes every message that is ready (not those awaiting an ack); returns how many.
    pub fn purge(&self) -> u32 {
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
        self.args
            .quorum
            .then(|| quorum::delivery_properties(&entry.message.properties, entry.returns))
    }

    /// Ready messages.
    pub fn message_count(&self) -> u32 {
        self.state().ready.len() as u32
    }

    /// Consumers.
    pub fn consumer_count(&self) -> u32 {
        self.state().consumers.len() as u32
    }

    /// Whether the queue was deleted (handles may outlive it).
    pub fn is_deleted(&self) -> bool {
        self.state().deleted
    }

    /// Marks the queue deleted, drops its messages and tells its consumers; returns the number
    /// of ready messages it held.
    pub(crate) fn delete(&self) -> u32 {
        let mut st = self.state();
        st.deleted = true;
        if let Some(d) = &self.durable {
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
mod tests {
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
        let order: Vec<(u8, bool)> = std::iter::from_fn(|| q.get())
            .map(|(e, _)| (e.message.body[0], e.redelivered))
            .collect();
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
}

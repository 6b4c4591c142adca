//! The channel state machine. A connection task owns its channels; each frame for a channel
//! goes through [`Channel::handle_frame`], whose flat match sends each method to one function
//! in a per-class file. Replies are appended to the connection's output buffer through
//! [`Ctx`]; nothing here awaits.

mod ack;
mod basic;
mod content;
mod exchange;
mod queue;
mod tx;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::connection::out::Out;
use tokio::sync::mpsc::UnboundedSender;
use warren_core::publish::Scratch;
use warren_core::{
    AmqpError, ChannelLimit, ConnectionId, Consumer, Entry, Event, Lag, Queue, VHost,
};
use warren_wire::{Frame, Method, ShortStr};

use crate::config::Config;
use content::Assembly;

/// A channel error with the method that caused it (for the close's class and method ids).
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: AmqpError,
    pub class_id: u16,
    pub method_id: u16,
}

/// What a channel handler needs from its connection.
pub(crate) struct Ctx<'a> {
    pub vhost: &'a Arc<VHost>,
    pub connection: ConnectionId,
    pub events: &'a UnboundedSender<Event>,
    pub out: &'a mut Out,
    pub frame_max: u32,
    pub config: &'a Config,
    /// What the authenticated user may do in the vhost (and its name: publishes with another
    /// user_id are refused).
    pub access: &'a mut warren_core::users::Access,
    /// What the connection's channels did (the management API's and Prometheus' counters).
    pub counts: &'a mut warren_core::connections::Counts,
    /// Queues whose consumers may have room again: dispatched at the end of the batch.
    pub dispatch: &'a mut Vec<Arc<Queue>>,
    /// Congested queues published to: the connection stops reading until they drain.
    pub held: &'a mut Vec<Arc<Queue>>,
    /// The connection's lag, given to its consumers (flow control).
    pub lag: &'a Arc<Lag>,
    /// When this turn began (delivery times for the consumer timeout).
    pub now: std::time::Instant,
}

impl Ctx<'_> {
    /// Appends a method frame.
    pub(crate) fn send(
        &mut self,
        channel: u16,
        method: impl Into<Method>,
    ) -> Result<(), AmqpError> {
        Frame::method(channel, method)
            .encode(self.out)
            .map_err(|e| AmqpError::internal(format!("encoding a reply: {e}")))
    }

    /// A publish found `queue` congested: stop reading after this turn until it drains.
    pub(crate) fn hold(&mut self, queue: Arc<Queue>) {
        if !self.held.iter().any(|q| Arc::ptr_eq(q, &queue)) {
            self.held.push(queue);
        }
    }

    /// Remembers that `queue` should try to deliver again at the end of this batch.
    pub(crate) fn redispatch(&mut self, queue: &Arc<Queue>) {
        if !self.dispatch.iter().any(|q| Arc::ptr_eq(q, queue)) {
            self.dispatch.push(queue.clone());
        }
    }
}

/// A message delivered on this channel and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Unacked {
    pub tag: u64,
    pub entry: Entry,
    pub source: Source,
    /// When it was delivered (the connection's turn), for the consumer timeout.
    pub at: std::time::Instant,
}

/// How an unacked message was delivered.
#[derive(Debug)]
pub(crate) enum Source {
    /// To a consumer, whose window it occupies (its queue is the consumer's).
    Consumer(Arc<Consumer>),
    /// By basic.get from this queue.
    Get(Arc<Queue>),
}

impl Unacked {
    /// The queue it came from.
    pub(crate) fn queue(&self) -> &Arc<Queue> {
        match &self.source {
            Source::Consumer(c) => &c.queue,
            Source::Get(q) => q,
        }
    }

    /// The consumer whose window it occupies (none for basic.get).
    pub(crate) fn consumer(&self) -> Option<&Arc<Consumer>> {
        match &self.source {
            Source::Consumer(c) => Some(c),
            Source::Get(_) => None,
        }
    }

    /// Delivered by the same consumer (or got from the same queue) as `other`.
    pub(crate) fn same_source(&self, other: &Unacked) -> bool {
        match (&self.source, &other.source) {
            (Source::Consumer(a), Source::Consumer(b)) => Arc::ptr_eq(a, b),
            (Source::Get(a), Source::Get(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// One of this channel's consumers.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub consumer: Arc<Consumer>,
    pub queue: Arc<Queue>,
}

/// What a settle inside a transaction will do at commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// basic.ack: gone.
    Ack,
    /// nack/reject with requeue: back to the queue.
    Requeue,
    /// nack/reject without requeue: dead-lettered, or dropped without a dead-letter exchange.
    Drop,
}

/// A publish inside a transaction: routed when published (as RabbitMQ does), delivered at
/// commit.
#[derive(Debug)]
pub(crate) struct TxPublish {
    pub message: Arc<warren_core::Message>,
    pub route: warren_core::publish::Route,
    pub mandatory: bool,
}

/// Transaction mode state.
#[derive(Debug, Default)]
pub(crate) struct Tx {
    pub publishes: Vec<TxPublish>,
    /// Deliveries settled in this transaction: out of `unacked` at once (so a second settle
    /// of the same tag is refused, as RabbitMQ), applied at commit, put back at rollback.
    pub settles: Vec<(Unacked, Settle)>,
}

/// A tx.commit on its way: its publishes are written to the store first and enqueued only
/// once all are on disk (a commit the store fails enqueues none), then its settles are
/// applied and commit-ok sent once the queues' index entries are on disk too.
#[derive(Debug)]
pub(crate) struct Commit {
    /// Publishes stored (or not kept by the store) but not yet enqueued, with their
    /// mandatory flags; empty once enqueued.
    pub staged: Vec<(warren_core::publish::Staged, bool)>,
    /// Deliveries settled in the transaction: applied at commit-ok, put back among the
    /// unacked if the store fails the commit.
    pub settles: Vec<(Unacked, Settle)>,
    /// The store's failure epoch at the commit's first write: a failure since fails it.
    pub epoch: Option<u64>,
}

/// Publisher-confirm state.
#[derive(Debug, Default)]
pub(crate) struct Confirms {
    /// Sequence number of the next publish (the first is 1).
    pub next: u64,
    /// Publishes waiting for the store's fsync, in order, with the store's failure epoch at
    /// their append.
    pub waiting: VecDeque<(u64, u64)>,
    /// Publishes to be nacked: the store failed to write them, or a queue refused them.
    pub nacks: BTreeSet<u64>,
    /// Highest publish already confirmed or nacked to the client.
    pub told_up_to: u64,
}

/// One confirm frame: every publish not yet told up to `tag` (with `multiple`), or `tag` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// basic.ack.
    Ack { tag: u64, multiple: bool },
    /// basic.nack (the store failed to write them).
    Nack { tag: u64, multiple: bool },
}

impl Confirms {
    /// Every publish up to this one has its outcome.
    pub(crate) fn settled(&self) -> u64 {
        self.waiting.front().map_or(self.next - 1, |w| w.0 - 1)
    }

    /// The frames that tell every outcome settled since the last call, in order: a run of
    /// acks, a run of nacks, and so on, each one frame.
    pub(crate) fn tell(&mut self, mut emit: impl FnMut(Outcome)) {
        let ready = self.settled();
        while let Some(&first) = self.nacks.first().filter(|n| **n <= ready) {
            if first - 1 > self.told_up_to {
                let multiple = first - 1 - self.told_up_to > 1;
                emit(Outcome::Ack { tag: first - 1, multiple });
            }
            let mut last = first;
            self.nacks.pop_first();
            while self.nacks.first() == Some(&(last + 1)) {
                last += 1;
                self.nacks.pop_first();
            }
            emit(Outcome::Nack { tag: last, multiple: last > first });
            self.told_up_to = last;
        }
        if ready > self.told_up_to {
            let multiple = ready - self.told_up_to > 1;
            emit(Outcome::Ack { tag: ready, multiple });
            self.told_up_to = ready;
        }
    }
}

/// One open channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub id: u16,
    /// channel.close was sent; everything but close/close-ok is dropped until close-ok.
    pub closing: bool,
    assembly: Assembly,
    pub consumers: HashMap<ShortStr, Subscription>,
    pub unacked: VecDeque<Unacked>,
    next_tag: u64,
    /// Prefetch for consumers created from now on (basic.qos global=false).
    consumer_prefetch: u32,
    pub limit: Arc<ChannelLimit>,
    pub confirms: Option<Confirms>,
    pub tx: Option<Tx>,
    /// Highest confirm-mode publish this turn that waits for the store: the connection asks
    /// the store to tell it when that is on disk.
    pub confirm_sync: Option<u64>,
    /// A tx.commit waiting for the store asks it for a sync at the end of the turn (the
    /// store's failure epoch at the commit's first write).
    pub commit_sync: Option<u64>,
    /// A tx.commit waiting for the store.
    pub commit: Option<Commit>,
    /// Commits received while `commit` was on its way, in order.
    pub queued_commits: VecDeque<Tx>,
    /// Counted against the user's and the node's channel limits while open.
    pub counted: Option<warren_core::usage::Counted>,
    /// Tells this channel from an earlier one of the same number on the connection.
    pub generation: u64,
    /// The last queue declared on this channel, which an empty queue name refers to.
    last_queue: Option<ShortStr>,
    next_ctag: u64,
    /// The private queue of this channel's direct reply-to consumer, if it has one.
    reply_queue: Option<ShortStr>,
    /// Routing buffers reused from one publish to the next.
    scratch: Scratch,
    /// The last exchange this channel was allowed to publish to.
    publish_cache: warren_core::users::PublishCache,
}

impl Channel {
    /// The consumer timeout a delivery has run past (its queue's `x-consumer-timeout`, or
    /// `default`), looking at the oldest unacknowledged delivery as RabbitMQ does; `None` if
    /// none has.
    pub(crate) fn ack_timed_out(&self, default: u64, now: std::time::Instant) -> Option<u64> {
        let oldest = self.unacked.front()?;
        let timeout = oldest.queue().args.consumer_timeout.unwrap_or(default);
        if timeout == 0 {
            return None;
        }
        (now.saturating_duration_since(oldest.at) > std::time::Duration::from_millis(timeout))
            .then_some(timeout)
    }

    pub(crate) fn new(id: u16, generation: u64) -> Self {
        Channel {
            id,
            closing: false,
            assembly: Assembly::default(),
            consumers: HashMap::new(),
            unacked: VecDeque::new(),
            next_tag: 1,
            consumer_prefetch: 0,
            limit: Arc::new(ChannelLimit::default()),
            confirms: None,
            tx: None,
            confirm_sync: None,
            commit_sync: None,
            commit: None,
            queued_commits: VecDeque::new(),
            counted: None,
            generation,
            last_queue: None,
            next_ctag: 1,
            reply_queue: None,
            scratch: Scratch::default(),
            publish_cache: Default::default(),
        }
    }

    /// What the management API shows of this channel.
    pub(crate) fn describe(&self) -> warren_core::connections::ChannelInfo {
        use std::sync::atomic::Ordering::Relaxed;
        warren_core::connections::ChannelInfo {
            number: self.id,
            consumers: self.consumers.len() as u32,
            unacked: self.unacked.len() as u32,
            prefetch: self.consumer_prefetch,
            global_prefetch: self.limit.prefetch.load(Relaxed),
            confirm: self.confirms.is_some(),
            transactional: self.tx.is_some(),
            unconfirmed: self
                .confirms
                .as_ref()
                .map_or(0, |c| (c.next - 1).saturating_sub(c.told_up_to)),
            uncommitted_messages: self.tx.as_ref().map_or(0, |t| t.publishes.len() as u32),
            uncommitted_acks: self.tx.as_ref().map_or(0, |t| t.settles.len() as u32),
        }
    }

    /// The next delivery tag.
    pub(crate) fn take_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    /// Resolves a queue name: empty means the last queue declared on this channel.
    fn queue_name(&self, name: &ShortStr) -> Result<ShortStr, AmqpError> {
        if !name.is_empty() {
            return Ok(name.clone());
        }
        self.last_queue.clone().ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    /// Handles one frame for this (open) channel.
    pub(crate) fn handle_frame(&mut self, frame: Frame, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
        let fail = |error: AmqpError, class_id: u16, method_id: u16| Failure {
            error,
            class_id,
            method_id,
        };
        match frame {
            Frame::Method { method, .. } => {
                let (class_id, method_id) = (method.class_id(), method.method_id());
                if !self.assembly.is_idle() {
                    return Err(fail(
                        AmqpError::unexpected_frame(format!(
                            "expected content header or body, got {}",
                            method.name()
                        )),
                        class_id,
                        method_id,
                    ));
                }
                self.handle_method(method, ctx).map_err(|e| fail(e, class_id, method_id))
            }
            Frame::Header { header, .. } => {
                let done = self
                    .assembly
                    .header(header, ctx.config.max_message_size)
                    .map_err(|e| fail(e, 60, 40))?;
                match done {
                    Some(p) => self.published(p, ctx).map_err(|e| fail(e, 60, 40)),
                    None => Ok(()),
                }
            }
            Frame::Body { payload, .. } => {
                match self.assembly.body(payload).map_err(|e| fail(e, 60, 40))? {
                    Some(p) => self.published(p, ctx).map_err(|e| fail(e, 60, 40)),
                    None => Ok(()),
                }
            }
            Frame::Heartbeat => Ok(()),
        }
    }

    fn handle_method(&mut self, method: Method, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        use Method as M;
        match method {
            M::ChannelFlow(m) => self.flow(m, ctx),
            M::ChannelFlowOk(_) => Ok(()),
            M::AccessRequest(_) => {
                ctx.send(self.id, warren_wire::method::AccessRequestOk { ticket: 1 })
            }
            M::ExchangeDeclare(m) => self.exchange_declare(m, ctx),
            M::ExchangeDelete(m) => self.exchange_delete(m, ctx),
            M::ExchangeBind(m) => self.exchange_bind(m, ctx),
            M::ExchangeUnbind(m) => self.exchange_unbind(m, ctx),
            M::QueueDeclare(m) => self.queue_declare(m, ctx),
            M::QueueBind(m) => self.queue_bind(m, ctx),
            M::QueueUnbind(m) => self.queue_unbind(m, ctx),
            M::QueuePurge(m) => self.queue_purge(m, ctx),
            M::QueueDelete(m) => self.queue_delete(m, ctx),
            M::BasicQos(m) => self.qos(m, ctx),
            M::BasicConsume(m) => self.consume(m, ctx),
            M::BasicCancel(m) => self.cancel(m, ctx),
            M::BasicPublish(m) => self.publish(m),
            M::BasicGet(m) => self.get(m, ctx),
            M::BasicAck(_) | M::BasicNack(_) | M::BasicReject(_) => self.settle(method, ctx),
            M::BasicRecover(m) => self.recover(m.requeue, true, ctx),
            M::BasicRecoverAsync(m) => self.recover(m.requeue, false, ctx),
            M::ConfirmSelect(m) => self.confirm_select(m, ctx),
            M::TxSelect(_) => self.tx_select(ctx),
            M::TxCommit(_) => self.tx_commit(ctx),
            M::TxRollback(_) => self.tx_rollback(ctx),
            M::ChannelOpen(_) => Err(AmqpError::channel_error("second 'channel.open' seen")),
            other => Err(AmqpError::command_invalid(format!(
                "{} is not valid on a channel from a client",
                other.name()
            ))),
        }
    }

    fn flow(
        &mut self,
        m: warren_wire::method::ChannelFlow,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        if !m.active {
            // As RabbitMQ: client-initiated flow control is not supported.
            return Err(AmqpError::not_implemented("active=false"));
        }
        ctx.send(self.id, warren_wire::method::ChannelFlowOk { active: true })
    }

    /// Releases everything the channel holds: consumers leave their queues (auto-delete
    /// queues may go), unacked messages return to their queues in order.
    pub(crate) fn release(&mut self, ctx: &mut Ctx<'_>) {
        // Retire them all, then each queue drops its retired consumers in one pass.
        let mut queues: HashMap<*const Queue, Arc<Queue>> = HashMap::new();
        for (_, sub) in self.consumers.drain() {
            sub.consumer.retire();
            queues.entry(Arc::as_ptr(&sub.queue)).or_insert(sub.queue);
        }
        for q in queues.into_values() {
            if q.remove_retired().auto_delete_now {
                ctx.vhost.remove_queue(&q);
            }
        }
        let mut unacked: Vec<Unacked> = self.unacked.drain(..).collect();
        // Settles of an uncommitted transaction never happened: those messages go back too.
        if let Some(tx) = self.tx.take() {
            unacked.extend(tx.settles.into_iter().map(|(u, _)| u));
        }
        // So did those of a commit still waiting for the store.
        // (Its publishes not yet enqueued are dropped: the store releases their records.)
        if let Some(commit) = self.commit.take() {
            unacked.extend(commit.settles.into_iter().map(|(u, _)| u));
        }
        for tx in self.queued_commits.drain(..) {
            unacked.extend(tx.settles.into_iter().map(|(u, _)| u));
        }
        unacked.sort_by_key(|u| u.tag);
        ack::requeue_all(unacked, ctx);
        self.assembly = Assembly::Idle;
        self.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(c: &mut Confirms) -> Vec<Outcome> {
        let mut v = Vec::new();
        c.tell(|o| v.push(o));
        v
    }

    #[test]
    fn confirms_tell_runs_of_acks_and_nacks_in_order() {
        use Outcome::{Ack, Nack};
        let mut c = Confirms { next: 1, ..Default::default() };
        // 1-2 transient, 3-6 stored in epoch 0, 7 stored in epoch 1, 8 transient.
        c.next = 9;
        for seq in 3..=6 {
            c.waiting.push_back((seq, 0));
        }
        c.waiting.push_back((7, 1));
        assert_eq!(told(&mut c), [Ack { tag: 2, multiple: true }]);
        // A write failed (epoch 1): 3-6 are nacked, 7 (appended after the failure) is acked.
        // Their sync covered up to 7 only; 8 follows once nothing waits before it.
        let mut ch = Channel::new(1, 1);
        ch.confirms = Some(c);
        ch.persisted(7, 1);
        let mut c = ch.confirms.take().unwrap();
        assert_eq!(told(&mut c), [Nack { tag: 6, multiple: true }, Ack { tag: 8, multiple: true }]);
        assert_eq!(told(&mut c), []);
        // A lone nack between acks.
        c.next = 12;
        c.waiting.extend([(9, 1), (10, 1), (11, 2)]);
        ch.confirms = Some(c);
        ch.persisted(11, 2);
        let mut c = ch.confirms.take().unwrap();
        assert_eq!(
            told(&mut c),
            [Nack { tag: 10, multiple: true }, Ack { tag: 11, multiple: false }]
        );
        // A nack between acks.
        c.next = 15;
        c.waiting.extend([(12, 2), (13, 2), (14, 3)]);
        c.waiting.make_contiguous();
        ch.confirms = Some(c);
        ch.persisted(12, 2);
        ch.persisted(14, 3);
        let mut c = ch.confirms.take().unwrap();
        assert_eq!(
            told(&mut c),
            [
                Ack { tag: 12, multiple: false },
                Nack { tag: 13, multiple: false },
                Ack { tag: 14, multiple: false }
            ]
        );
    }
}

//! Publishing: a message takes its position in the queue, loaded or paged out, under the length
//! limits (`x-overflow`); publishers are told when the queue is congested ([`super::flow`]).

use std::sync::Arc;

use warren_store::{QueueId, Stored};
use warren_wire::BasicProperties;

use super::flow::{FLOW_HIGH, FLOW_LOW, Publish};
use super::paging::{Body, Slot, body_size};
use super::{KEEP_LOADED, Overflow, Queue, State, ttl};
use crate::dead_letter::{Dead, Reason};
use crate::message::Message;

/// Publishers into a queue with a store are held back (as by [`flow`](super::flow)) while the
/// store has more than this many bytes of messages still to write (stored or paged out), until
/// it is down to half of it.
pub(crate) const WRITE_BACKLOG_HIGH: u64 = 64 * 1024 * 1024;

impl Queue {
    /// Enqueues a message and delivers it at once if a consumer has room. `stored` is the
    /// store's id for the message when it was appended for this queue. Says whether the queue
    /// was deleted meanwhile (nothing enqueued), or is congested (see [`flow`](super::flow)).
    pub fn publish(self: &Arc<Self>, message: Arc<Message>, stored: Option<Stored>) -> Publish {
        self.publish_from(message, stored, None)
    }

    /// Appends a message to a stream queue: the outcome, and the store's failure epoch at the
    /// append (the confirm waits for the store's sync). `None` for a queue that is not a
    /// stream.
    pub fn publish_stream(&self, message: Arc<Message>) -> Option<(Publish, Option<u64>)> {
        let stream = self.stream.as_ref()?;
        let Some((epoch, behind)) = stream.publish(message) else {
            return Some((Publish::Deleted, None));
        };
        self.state().published += 1;
        if behind {
            // The disk does not keep up: the publisher waits for it.
            self.state().throttling = true;
            return Some((Publish::Congested, Some(epoch)));
        }
        Some((Publish::Enqueued, Some(epoch)))
    }

    /// As [`Queue::publish`], for a message dead-lettered from the stored entry `origin`
    /// (queue, position): a stored enqueue is then a move in the store.
    pub fn publish_from(
        self: &Arc<Self>,
        message: Arc<Message>,
        stored: Option<Stored>,
        origin: Option<(QueueId, u64)>,
    ) -> Publish {
        if self.stream.is_some()
            && let Some((outcome, _)) = self.publish_stream(message.clone())
        {
            return outcome;
        }
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
        st.published += 1;
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
        if self.pager.as_ref().is_some_and(|p| p.write_backlog() > WRITE_BACKLOG_HIGH) {
            // The disk does not keep up: the publisher waits for it.
            st.throttling = true;
            return Publish::Congested;
        }
        Publish::Enqueued
    }

    /// Whether publishers told of congestion must still wait: the queue still holds
    /// [`flow::FLOW_LOW`](super::flow::FLOW_LOW) ready messages or more and a consumer still
    /// lags. Wakes the other waiters when that is over.
    pub fn flow_blocked(&self) -> bool {
        let mut st = self.state();
        if !st.throttling {
            return false;
        }
        let paging =
            self.pager.as_ref().is_some_and(|p| p.write_backlog() > WRITE_BACKLOG_HIGH / 2);
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

    pub(super) fn end_throttling(&self, st: &mut State) {
        if std::mem::take(&mut st.throttling) {
            self.flow.notify_waiters();
        }
    }
}

//! Delivery: ready messages go to the consumers with room (the highest `x-priority` first,
//! round-robin among equals) or to basic.get; requeued ones go back to their positions;
//! consumers are added and removed.

use std::sync::Arc;

use super::flow::FLOW_LOW;
use super::paging::{Body, Slot};
use super::{Consumer, ConsumerRemoved, Entry, Event, Queue, State, ttl};
use crate::dead_letter::Reason;
use crate::error::{AmqpError, Result};

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
    /// Delivers ready messages to consumers with room, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        if let Some(s) = &self.stream {
            return s.dispatch(self);
        }
        let mut st = self.state();
        self.dispatch_locked(&mut st);
    }

    pub(super) fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        self.deliver_ready(st);
        if st.throttling && st.ready.len() < FLOW_LOW {
            self.end_throttling(st);
        }
    }

    fn deliver_ready(self: &Arc<Self>, st: &mut State) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let Some(idx) = pick_consumer(st, self.args.single_active_consumer) else { return };
            st.next_consumer = idx + 1;
            let Some(entry) = self.pop_loaded(st, Some(self)) else {
                // Nothing readable was left: give the reserved window place back.
                st.consumers[idx].unsent();
                return;
            };
            self.mark_delivered(&entry);
            // One reference count for the consumer per delivery, none for the queue (the
            // consumer holds it): they are shared with the consumer's connection, on another
            // core, and each count is a contended cache line.
            let consumer = &st.consumers[idx];
            // A no-ack delivery is settled once sent: counted apart, so that its settle costs
            // no shared counter on the connection's side.
            let no_ack = consumer.no_ack;
            let event = Event::Deliver { consumer: consumer.clone(), entry };
            if no_ack {
                st.delivered_no_ack += 1;
            } else {
                st.delivered += 1;
            }
            if let Err(Event::Deliver { consumer, entry: back, .. }) = consumer.send(event) {
                if no_ack {
                    st.delivered_no_ack -= 1;
                } else {
                    st.delivered -= 1;
                }
                // The consumer's connection is gone: drop the consumer, keep the message.
                consumer.unsent();
                st.consumers.remove(idx);
                let slot = Slot::back(back, &st.ready);
                st.ready_bytes += u64::from(slot.size);
                st.ready.push_front(slot);
            }
        }
    }

    /// Takes the first ready message, its body in memory. A paged-out front is read back on
    /// the blocking pool if `reader` is given (`None` until that read lands: see `read_back`),
    /// else at once.
    fn pop_loaded(&self, st: &mut State, reader: Option<&Arc<Queue>>) -> Option<Entry> {
        loop {
            if st.ready.front()?.expires != ttl::NEVER {
                self.drop_expired(st);
            }
            let front = st.ready.front()?;
            if matches!(front.body, Body::Paged(_)) {
                if reader.is_some_and(|q| q.read_front(st)) || !self.load_front(st) {
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

    /// basic.get: takes the first ready message, with the count left behind.
    pub fn get(&self) -> Option<(Entry, u32)> {
        if self.is_stream() {
            return None;
        }
        let mut st = self.state();
        st.last_used = Some(std::time::Instant::now());
        let entry = self.pop_loaded(&mut st, None)?;
        self.mark_delivered(&entry);
        st.delivered += 1;
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
            false,
        );
    }

    /// Puts back messages that never reached their consumer (it went away while they were on
    /// their way), keeping their redelivered flag as it was; `no_ack` if that consumer took
    /// them without acknowledgement (they were counted as settled when sent).
    pub(crate) fn restore(
        self: &Arc<Self>,
        entries: impl IntoIterator<Item = Entry>,
        no_ack: bool,
    ) {
        self.put_back(entries.into_iter(), false, no_ack);
    }

    fn put_back(
        self: &Arc<Self>,
        entries: impl Iterator<Item = Entry>,
        returned: bool,
        no_ack: bool,
    ) {
        if self.is_stream() {
            // Nothing goes back to a stream: its readers have their own offsets.
            return;
        }
        let mut st = self.state();
        if st.deleted {
            return;
        }
        let mut deadline = false;
        for mut e in entries {
            if no_ack {
                st.delivered_no_ack = st.delivered_no_ack.saturating_sub(1);
            } else {
                st.returned += 1;
            }
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
        let spec = crate::stream::ReadSpec {
            start: crate::stream::Start::Next,
            filter: None,
            match_unfiltered: false,
        };
        self.add_reader(consumer, spec)
    }

    /// Adds a consumer; on a stream, reading where `spec` says (elsewhere `spec` is unused).
    pub fn add_reader(
        self: &Arc<Self>,
        consumer: Arc<Consumer>,
        spec: crate::stream::ReadSpec,
    ) -> Result<()> {
        let mut st = self.state();
        if st.deleted {
            return Err(AmqpError::not_found(format!("no queue '{}'", self.name)));
        }
        if let Some(s) = &self.stream {
            // `exclusive` means nothing to a stream (as RabbitMQ): every reader is independent.
            st.consumers.push(consumer.clone());
            st.had_consumer = true;
            drop(st);
            s.add(self, consumer, spec);
            return Ok(());
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
        if let Some(s) = &self.stream {
            s.remove_retired();
        }
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
}

//! The store side of a queue: a ready message keeps its body in memory or only in the store
//! (a stored message, or one paged out while the queue is long), and is read back when it
//! reaches the front (see `read_back`); recovery at start-up, and what the store is told of
//! deliveries and settles.

use std::sync::Arc;

use warren_store::{Location, RecoveredQueue};
use warren_wire::BasicProperties;

use super::ready::Ready;
use super::{Entry, KEEP_LOADED, Queue, State, ttl};
use crate::message::Message;

/// Messages the store does not keep (transient ones, or any in a non-durable queue) are paged
/// out to it only in longer queues than stored ones are, so that the usual backlog of a busy
/// queue (flow control holds it near [`FLOW_HIGH`](super::flow::FLOW_HIGH)) costs no disk
/// writes: past this many ready messages...
const PAGE_TRANSIENT_COUNT: usize = 32 * 1024;
/// ...or past [`KEEP_LOADED`] messages holding this many body bytes.
const PAGE_TRANSIENT_BYTES: u64 = 16 * 1024 * 1024;

/// A ready message as the queue keeps it.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) seq: u64,
    pub(super) body: Body,
    pub(super) redelivered: bool,
    pub(super) stored: bool,
    /// Body bytes (for `x-max-length-bytes`; the record's length for a recovered message).
    pub(super) size: u32,
    /// Its TTL deadline (see `ttl`).
    pub(super) expires: u64,
    /// Its priority level (always 0 in a queue without `x-max-priority`).
    pub(super) level: u8,
    /// Deliveries that came back (quorum queues).
    pub(super) returns: u32,
}

/// A ready message's body: in memory, or only in the store (as a stored message's record, or
/// paged out: see [`Store::page_out`](warren_store::Store::page_out); the slot's `stored` tells
/// which).
#[derive(Debug)]
pub(super) enum Body {
    Loaded(Arc<Message>),
    Paged(Location),
}

impl Slot {
    /// A delivered entry coming back, to its priority level in `ready`.
    pub(super) fn back(e: Entry, ready: &Ready) -> Slot {
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

pub(super) fn body_size(m: &Message) -> u32 {
    u32::try_from(m.body.len()).unwrap_or(u32::MAX)
}

impl Queue {
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

    /// Gives up ready messages dropped unread: a stored one is removed from the store (unless
    /// `remove` is false: the queue's files go as a whole), a paged-out one unpaged.
    pub(super) fn forget<'a>(
        &self,
        slots: impl Iterator<Item = (u64, bool, &'a Body)>,
        remove: bool,
    ) {
        let mut unpaged = Vec::new();
        for (seq, stored, body) in slots {
            match (stored, body) {
                (true, _) if remove => self.settle_seq(seq, true),
                (false, Body::Paged(loc)) => unpaged.push(*loc),
                _ => {}
            }
        }
        if let Some(store) = &self.pager {
            store.unpage_all(unpaged);
        }
    }

    /// Whether a message the store does not keep, enqueued now, is paged out at once.
    pub(super) fn pages_transient(&self, st: &State) -> bool {
        self.pager.is_some()
            && st.ready.len() >= KEEP_LOADED
            && (st.ready.len() >= PAGE_TRANSIENT_COUNT || st.ready_bytes >= PAGE_TRANSIENT_BYTES)
    }

    pub(super) fn settle_seqs(&self, entries: impl Iterator<Item = (u64, bool)>) {
        // Always walked: the caller counts what it settles.
        for (seq, stored) in entries {
            if stored && let Some(d) = &self.durable {
                d.store.remove(d.id, seq);
            }
        }
    }

    /// Records the first delivery of a stored entry, so that it comes back redelivered after
    /// a restart.
    pub(super) fn mark_delivered(&self, e: &Entry) {
        if e.stored
            && !e.redelivered
            && let Some(d) = &self.durable
        {
            d.store.delivered(d.id, e.seq);
        }
    }
}

//! Messages leaving a queue for good (expired, over a length limit, past the delivery limit,
//! rejected): dropped, or collected under the queue's lock ([`Locked`]) and dead-lettered once
//! it is released.

use std::ops::{Deref, DerefMut};
use std::sync::MutexGuard;

use super::paging::{Body, Slot};
use super::{Overflow, Queue, State};
use crate::dead_letter::{Dead, Reason};

/// The queue's locked state. Dropping it releases the lock first, then dead-letters what died
/// meanwhile: a dead-letter publish takes other queues' locks, and must never do so under
/// this one (two queues dead-lettering into each other would deadlock).
pub(super) struct Locked<'a> {
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

impl Queue {
    pub(super) fn state(&self) -> Locked<'_> {
        // A panic while holding the lock leaves consistent data (every section is short and
        // does its writes last), so a poisoned lock is taken over rather than spread.
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Locked { queue: self, guard: Some(guard) }
    }

    /// Dead-letters `dead` (no lock held), or settles it if the vhost is gone.
    pub(super) fn dead_letter_now(&self, dead: Vec<Dead>) {
        match self.vhost.upgrade() {
            Some(vhost) => vhost.dead_letter(self, dead),
            None => self.settle_seqs(dead.iter().map(|d| (d.seq, d.stored))),
        }
    }

    /// Removes the ready message at the head for good (expired, over a length limit):
    /// dead-lettered if the queue has a dead-letter exchange (its body read back first if it
    /// is paged out), else dropped. False if there was none, or its body could not be read.
    pub(super) fn discard_front(&self, st: &mut State, reason: Reason) -> bool {
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
    pub(super) fn discard(&self, st: &mut State, slot: Slot, reason: Reason) {
        match (st.dead_letter.is_some(), slot.body) {
            (true, Body::Loaded(message)) => {
                st.dead.push(Dead { message, reason, seq: slot.seq, stored: slot.stored });
            }
            (_, body) => self.forget(std::iter::once((slot.seq, slot.stored, &body)), true),
        }
    }

    /// drop-head (the default overflow): while the queue is over its length limits, the
    /// oldest ready messages are dropped or dead-lettered (maxlen).
    pub(super) fn drop_head(&self, st: &mut State) {
        if st.args.overflow != Overflow::DropHead {
            return;
        }
        while st.args.over(st.ready.len(), st.ready_bytes) {
            if !self.discard_front(st, Reason::MaxLen) {
                return;
            }
        }
    }
}

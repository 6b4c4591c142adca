//! Message TTL, as RabbitMQ's: a message's deadline is set when it is enqueued, from the
//! queue's `x-message-ttl` and the message's `expiration` property (the lower wins), and kept
//! when it is requeued. Expired messages are dropped as they reach the head of the queue
//! (never delivered, by consume or get), paged-out ones without reading them back; a timer per
//! queue drops them at the head when nothing else happens. With a TTL of 0 a message is
//! delivered only if a consumer takes it at once.
//!
//! Expired messages are dead-lettered (reason `expired`) if the queue has a dead-letter
//! exchange (a paged-out one is read back for that), else dropped.
//!
//! Deadlines are not stored: after a restart, a recovered message's queue TTL counts again from
//! the restart (the queue's timer starts with the listener, see [`Queue::start_ttl`]), its own
//! `expiration` from when it is read back (RabbitMQ keeps the absolute time).

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::{Queue, State};
use crate::dead_letter::Reason;

/// A deadline that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds on the process's monotonic clock.
pub(super) fn now_ms() -> u64 {
    u64::try_from(start().elapsed().as_millis()).unwrap_or(NEVER - 2)
}

/// The deadline of a message enqueued (or read back) now: the lower of the two TTLs.
pub(super) fn deadline(queue_ttl: Option<u64>, expiration: Option<u64>) -> u64 {
    match queue_ttl.into_iter().chain(expiration).min() {
        Some(ttl) => now_ms().saturating_add(ttl).min(NEVER - 2),
        None => NEVER,
    }
}

impl Queue {
    /// Drops the expired messages at the head; returns the deadline of the head left
    /// ([`NEVER`] for none).
    pub(super) fn drop_expired(&self, st: &mut State) -> u64 {
        let now = now_ms();
        loop {
            let Some(front) = st.ready.front() else { return NEVER };
            if front.expires >= now {
                return front.expires;
            }
            if !self.discard_front(st, Reason::Expired) {
                // Its body could not be read back to dead-letter it: try again in a second.
                return now + 1000;
            }
        }
    }

    /// Starts the TTL timer of a queue recovered with messages (at start-up, once the runtime
    /// runs): its head is read back (its TTL counting from now) and expires on time, without
    /// waiting for a client to touch the queue.
    pub fn start_ttl(self: &Arc<Self>) {
        let mut st = self.state();
        if st.args.message_ttl.is_none() || st.ready.is_empty() {
            return;
        }
        let head = self.drop_expired(&mut st);
        self.arm_ttl_timer(&mut st, head);
    }

    /// Makes sure a timer will drop the head when it expires at `head` (a deadline).
    pub(super) fn arm_ttl_timer(self: &Arc<Self>, st: &mut State, head: u64) {
        if head == NEVER || st.ttl_timer {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        st.ttl_timer = true;
        runtime.spawn(expire_at_head(Arc::downgrade(self), head));
    }

    /// The timer's turn: drops what expired at the head; the next deadline, or `None` (the
    /// timer stops) when no message at the head will expire.
    fn expire_head(&self) -> Option<u64> {
        let mut st = self.state();
        let head = self.drop_expired(&mut st);
        if head == NEVER {
            st.ttl_timer = false;
            return None;
        }
        Some(head)
    }
}

async fn expire_at_head(queue: Weak<Queue>, mut at: u64) {
    loop {
        // Expired once the clock is past the deadline.
        let when = start() + Duration::from_millis(at.saturating_add(1));
        tokio::time::sleep_until(when.into()).await;
        let Some(q) = queue.upgrade() else { return };
        match q.expire_head() {
            Some(next) => at = next,
            None => return,
        }
    }
}

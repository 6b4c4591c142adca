//! Flow control: publishers cannot bury a queue's consumers.
//!
//! Publishing is synchronous and cheap, delivering costs more (encoding, writing, acks), so a
//! few fast publishers can fill a queue far faster than its consumers' connections can pass
//! the messages on, until memory runs out. RabbitMQ's credit flow holds publishers to what the
//! queue can take; warren holds them to what the queue's consumers can take, but only when
//! it is the broker (or the consumer's socket) that cannot keep up, never because an
//! application acks slowly:
//!
//! - Each connection publishes its *lag* ([`Lag`]): how many deliveries wait in its inbox not
//!   yet written, or "blocked" while its socket does not take its output. A consumer is
//!   *lagging* when its connection's lag is at least [`LAGGING`].
//! - A queue is *congested* when it holds at least [`FLOW_HIGH`] ready messages and one of its
//!   consumers is lagging. A consumer whose application acks slowly is not lagging (its
//!   deliveries are written; its prefetch window is what holds it back), so a slow consumer
//!   still lets a backlog of millions build, as with RabbitMQ.
//! - A publish into a congested queue says so; the publisher's connection then stops reading
//!   its socket after the current turn (TCP back-pressure, no error, no `connection.blocked`)
//!   until the queue is below [`FLOW_LOW`] or none of its consumers lags. The queue wakes such
//!   publishers when it drains below [`FLOW_LOW`]; they also look again every few
//!   milliseconds, as the lag can clear without the queue noticing.
//! - A queue with a store is congested too while the store has more than 64 MiB of messages
//!   still to write (persistent ones, or transient ones paged out of a long queue, see
//!   [`super::KEEP_LOADED`]): a disk slower than the publishers (who may not wait for
//!   confirms) then holds them back instead of letting unwritten messages fill memory.

use std::sync::atomic::{AtomicU32, Ordering};

/// Ready messages from which a queue with a lagging consumer holds its publishers back.
pub const FLOW_HIGH: usize = 20_000;

/// Ready messages below which held publishers go on.
pub const FLOW_LOW: usize = 10_000;

/// Deliveries waiting unwritten in a connection from which its consumers count as lagging.
pub const LAGGING: u32 = 256;

/// How far a connection is behind on the deliveries sent to it; shared by the connection
/// (which sets it once per loop turn) and its consumers (which queues read).
#[derive(Debug, Default)]
pub struct Lag(AtomicU32);

impl Lag {
    /// The connection has `pending` events waiting in its inbox.
    pub fn set(&self, pending: usize) {
        let v = u32::try_from(pending).unwrap_or(u32::MAX);
        if self.0.load(Ordering::Relaxed) != v {
            self.0.store(v, Ordering::Relaxed);
        }
    }

    /// The connection waits for its socket to take its output: it passes nothing on.
    pub fn set_blocked(&self) {
        self.0.store(u32::MAX, Ordering::Relaxed);
    }

    /// Whether the connection is far enough behind to hold publishers back.
    pub fn is_lagging(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= LAGGING
    }
}

/// What a publish into a queue came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The queue was deleted meanwhile: nothing enqueued.
    Deleted,
    /// Enqueued.
    Enqueued,
    /// Enqueued, and the queue is congested: the publisher should wait for it (see the
    /// module doc).
    Congested,
    /// Refused: it would take the queue over its length limit (`x-overflow` reject-publish);
    /// a confirming publisher gets basic.nack.
    Rejected,
}

//! Consumers and prefetch: what a queue knows of a subscriber, the per-consumer and per-channel
//! windows of unacknowledged messages, and the events a queue sends to a consumer's connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::mpsc::UnboundedSender;
use warren_wire::ShortStr;

use super::flow::Lag;
use super::{Entry, Queue};

/// How many deliveries a consumer may have on their way to its socket (sent by the queue, not
/// yet written by its connection) before the queue waits: the connection gives them back as
/// it writes them out, so a backlog drains in windows instead of being pushed into memory all
/// at once. It bounds no-ack consumers and consumers whose prefetch is unlimited or above
/// it (a smaller prefetch bounds the others).
pub const NO_ACK_WINDOW: u32 = 2000;

/// Identifies a client connection (exclusive queues and consumers belong to one).
pub type ConnectionId = u64;

/// What a queue tells a consumer's connection.
#[derive(Debug)]
pub enum Event {
    /// Deliver `entry` to `consumer` (from `consumer.queue`: the queue's own reference count
    /// is not touched per delivery).
    Deliver {
        /// The consumer it is for.
        consumer: Arc<Consumer>,
        /// The message and its position.
        entry: Entry,
    },
    /// The store has finished the sync that the channel's confirm-mode publishes up to
    /// `up_to` waited for: each is confirmed, or nacked if a write failed since it was
    /// appended (the store's failure epoch tells).
    Persisted {
        /// Channel of the publisher.
        channel: u16,
        /// Which channel of that number (a number closed and opened again is another one).
        generation: u64,
        /// Highest publish sequence number the sync covers.
        up_to: u64,
    },
    /// The store has finished the sync that the channel's tx.commit waited for.
    TxPersisted {
        /// Channel of the publisher.
        channel: u16,
        /// Which channel of that number.
        generation: u64,
        /// The store's failure epoch at the commit's first append.
        epoch: u64,
    },
    /// The queue was deleted: tell the client its consumer is gone (basic.cancel).
    Cancelled {
        /// The consumer (its channel's subscription with this tag must be this one: the tag
        /// may have been reused since).
        consumer: Arc<Consumer>,
    },
    /// The management API asks what the connection's channels are doing.
    Describe {
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<Vec<crate::connections::ChannelInfo>>,
    },
}

/// The channel-wide prefetch window (`basic.qos` with `global=true`), shared by the channel's
/// consumers on every queue.
#[derive(Debug, Default)]
pub struct ChannelLimit {
    /// Channel prefetch count; 0 means unlimited.
    pub prefetch: AtomicU32,
    /// Unacknowledged deliveries on the channel.
    pub in_flight: AtomicU32,
}

/// What basic.consume asked for.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Consumer tag, unique on its channel.
    pub tag: ShortStr,
    /// Channel number on its connection.
    pub channel: u16,
    /// The connection it belongs to.
    pub connection: ConnectionId,
    /// Whether deliveries count as acknowledged when sent.
    pub no_ack: bool,
    /// Whether it asked to be the queue's only consumer.
    pub exclusive: bool,
    /// Per-consumer prefetch count; 0 means unlimited.
    pub prefetch: u32,
    /// `x-priority`: higher-priority consumers are served first while they have room.
    pub priority: i32,
}

/// Not derived: the queue would print its consumers, which would print the queue.
impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.queue.name)
            .field("tag", &self.tag)
            .field("channel", &self.channel)
            .field("connection", &self.connection)
            .field("no_ack", &self.no_ack)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// One subscription to one queue.
pub struct Consumer {
    /// The queue it consumes from. The queue holds its consumers and a consumer its queue:
    /// the cycle is broken when the consumer leaves the queue (cancel, channel or connection
    /// closed) or the queue is deleted (which drops all its consumers).
    pub queue: Arc<Queue>,
    /// Consumer tag, unique on its channel.
    pub tag: ShortStr,
    /// Channel number on its connection.
    pub channel: u16,
    /// The connection it belongs to.
    pub connection: ConnectionId,
    /// Whether deliveries count as acknowledged when sent.
    pub no_ack: bool,
    /// Whether it asked to be the queue's only consumer.
    pub exclusive: bool,
    /// Per-consumer prefetch count; 0 means unlimited.
    prefetch: u32,
    /// `x-priority` (default 0).
    pub priority: i32,
    /// Deliveries not yet acknowledged (or, for no-ack, not yet written out).
    in_flight: AtomicU32,
    /// Acknowledging consumer whose prefetch does not bound what is on its way to the socket
    /// (unlimited or above [`NO_ACK_WINDOW`]): `unwritten` is counted.
    tracks_unwritten: bool,
    /// Deliveries sent to the connection and not yet written out (when tracked).
    unwritten: AtomicU32,
    /// The channel's shared window.
    limit: Arc<ChannelLimit>,
    /// The connection's event inbox.
    sink: UnboundedSender<Event>,
    /// How far the connection is behind on its inbox (flow control).
    lag: Arc<Lag>,
    /// Still subscribed on its channel (cleared by the connection when it cancels or closes
    /// it, so that deliveries already on their way are recognised and put back).
    active: AtomicBool,
}

impl Consumer {
    /// A consumer that sends its events to `sink`.
    pub fn new(
        spec: ConsumerSpec,
        queue: Arc<Queue>,
        limit: Arc<ChannelLimit>,
        sink: UnboundedSender<Event>,
        lag: Arc<Lag>,
    ) -> Self {
        let ConsumerSpec { tag, channel, connection, no_ack, exclusive, prefetch, priority } = spec;
        Consumer {
            queue,
            tag,
            channel,
            connection,
            no_ack,
            exclusive,
            prefetch,
            priority,
            in_flight: AtomicU32::new(0),
            tracks_unwritten: !no_ack && (prefetch == 0 || prefetch > NO_ACK_WINDOW),
            unwritten: AtomicU32::new(0),
            limit,
            sink,
            lag,
            active: AtomicBool::new(true),
        }
    }

    /// Marks the consumer as no longer subscribed (cancelled, or its channel closed).
    pub fn retire(&self) {
        self.active.store(false, Ordering::Release);
    }

    /// Whether the consumer is still subscribed on its channel.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Whether the consumer and its channel have room for one more delivery (without taking it).
    pub(crate) fn has_room(&self) -> bool {
        let mine = self.in_flight.load(Ordering::Acquire);
        if self.no_ack {
            return mine < NO_ACK_WINDOW;
        }
        if self.prefetch > 0 && mine >= self.prefetch {
            return false;
        }
        if self.tracks_unwritten && self.unwritten.load(Ordering::Acquire) >= NO_ACK_WINDOW {
            return false;
        }
        let channel_max = self.limit.prefetch.load(Ordering::Acquire);
        channel_max == 0 || self.limit.in_flight.load(Ordering::Acquire) < channel_max
    }

    /// Takes one place in the consumer's and its channel's windows, if both have room.
    pub(crate) fn try_reserve(&self) -> bool {
        if self.no_ack {
            if self.in_flight.load(Ordering::Acquire) >= NO_ACK_WINDOW {
                return false;
            }
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        if self.prefetch > 0 && self.in_flight.load(Ordering::Acquire) >= self.prefetch {
            return false;
        }
        if self.tracks_unwritten && self.unwritten.load(Ordering::Acquire) >= NO_ACK_WINDOW {
            return false;
        }
        let channel_max = self.limit.prefetch.load(Ordering::Acquire);
        let before = self.limit.in_flight.fetch_add(1, Ordering::AcqRel);
        if channel_max > 0 && before >= channel_max {
            self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if self.tracks_unwritten {
            self.unwritten.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// One delivery of an acknowledging consumer was written out; true if the consumer had
    /// been held back for it (its queue should dispatch again).
    pub fn written(&self) -> bool {
        self.tracks_unwritten && sub_saturating(&self.unwritten, 1) == NO_ACK_WINDOW
    }

    /// A delivery that was reserved and sent never reached the socket (the consumer went
    /// away meanwhile): gives back its window place and its place on the way.
    pub fn unsent(&self) {
        self.release(1);
        if self.tracks_unwritten {
            sub_saturating(&self.unwritten, 1);
        }
    }

    /// A delivery that never reached the client (its consumer was cancelled or its channel
    /// closed while it was on its way) goes back to the queue, its place given back.
    pub fn put_back(&self, entry: Entry) {
        self.unsent();
        self.queue.restore([entry], self.no_ack);
    }

    /// Gives back `n` places (acked, rejected, requeued, or for no-ack written out).
    pub fn release(&self, n: u32) {
        sub_saturating(&self.in_flight, n);
        if !self.no_ack {
            sub_saturating(&self.limit.in_flight, n);
        }
    }

    /// Per-consumer prefetch count (basic.qos before basic.consume); 0 means unlimited.
    pub fn prefetch(&self) -> u32 {
        self.prefetch
    }

    /// Unacknowledged deliveries to this consumer.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether the consumer's connection is far behind on what was sent to it.
    pub(crate) fn is_lagging(&self) -> bool {
        self.lag.is_lagging()
    }

    /// Sends an event to the consumer's connection; false if the connection is gone.
    pub(crate) fn send(&self, event: Event) -> Result<(), Event> {
        self.sink.send(event).map_err(|e| e.0)
    }
}

/// Subtracts down to zero; returns the value before.
fn sub_saturating(counter: &AtomicU32, n: u32) -> u32 {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(n)))
        .unwrap_or_else(|v| v)
}

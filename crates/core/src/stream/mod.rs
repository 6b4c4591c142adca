//! Stream queues (`x-queue-type: stream`): an append-only log in the store
//! ([`warren_store::StreamLog`]) that every consumer reads at its own offset, as RabbitMQ's
//! stream queues do for AMQP 0-9-1 clients.
//!
//! - Publishing appends to the log; the publish is confirmed, and the message readable, once
//!   the store has fsync'd it (the log's commit calls back into [`Stream::dispatch`]).
//! - Each consumer is a [`reader::Reader`] with its own next offset. It takes what it needs
//!   from the recent tail kept in memory, or else from disk in reads of a few hundred KiB on
//!   tokio's blocking pool: memory per consumer is bounded by its prefetch and one read,
//!   whatever the stream's length.
//! - Acknowledgements only give credit (the prefetch window); nothing is ever removed by a
//!   consumer. Retention (size, age) removes whole segments in the store.
//! - What RabbitMQ refuses on streams (basic.get, purge, nack/reject, no-ack consumers,
//!   consumers without a prefetch, global qos) is refused by the channel, with its texts.

pub mod args;
mod reader;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::{Bytes, BytesMut};
use warren_store::{QueueId, Store, StreamLog};
use warren_wire::{BasicProperties, FieldValue};

use crate::error::{AmqpError, Result};
use crate::message::Message;
use crate::queue::{Consumer, Queue};
pub use args::{ReadSpec, Start};
use reader::Reader;

/// The recent tail kept in memory for readers that are (nearly) caught up: at most this many
/// messages...
const TAIL_MESSAGES: usize = 4096;
/// ...and this many body bytes (messages not yet committed stay regardless).
const TAIL_BYTES: u64 = 8 * 1024 * 1024;

/// A stream queue's log and readers.
pub struct Stream {
    log: Arc<StreamLog>,
    store: Arc<Store>,
    state: Mutex<State>,
    /// Where disk reads run: the runtime of the first consumer (a stream restored at start-up
    /// is opened before the runtime exists); never the store's writer thread, whose commits
    /// only deliver what is in memory. Unset outside a runtime (tests): reads are then made
    /// in place.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("log", &self.log).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    readers: Vec<Reader>,
    /// The latest messages appended, contiguous offsets.
    tail: VecDeque<(u64, Arc<Message>)>,
    tail_bytes: u64,
    /// Messages published, ever (since start).
    published: u64,
    /// Deliveries, ever.
    delivered: u64,
    deleted: bool,
}

/// What the management API shows of a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Messages retained (committed).
    pub messages: u64,
    /// Bytes of segments retained.
    pub bytes: u64,
    /// Segments.
    pub segments: usize,
    /// First offset retained.
    pub first: u64,
    /// Next offset to be committed.
    pub committed: u64,
    /// Messages published since start.
    pub published: u64,
    /// Deliveries since start.
    pub delivered: u64,
    /// Readers (consumers).
    pub readers: usize,
}

impl Stream {
    /// Opens stream `id` in `store` with the retention and segment size `config`.
    pub fn open(
        store: &Arc<Store>,
        id: QueueId,
        config: warren_store::StreamConfig,
    ) -> Result<Stream> {
        let log = store
            .open_stream(id, config)
            .map_err(|e| AmqpError::internal(format!("opening the stream's files: {e}")))?;
        Ok(Stream {
            log,
            store: store.clone(),
            state: Mutex::new(State::default()),
            runtime: std::sync::OnceLock::new(),
        })
    }

    /// Makes the log's commits dispatch to `queue`'s readers (`queue` holds this stream).
    pub(crate) fn hook(&self, queue: Weak<Queue>) {
        self.log.on_commit(Box::new(move |_| {
            if let Some(q) = queue.upgrade() {
                q.dispatch();
            }
        }));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log.
    pub fn log(&self) -> &Arc<StreamLog> {
        &self.log
    }

    /// Appends `message`: the store's failure epoch at the append (a confirm waits for the
    /// store's sync, as for a stored message), and whether the store is behind on its writes
    /// (the publisher should wait, as for a congested queue).
    pub(crate) fn publish(&self, message: Arc<Message>) -> Option<(u64, bool)> {
        let mut st = self.state();
        if st.deleted {
            return None;
        }
        let size = message.body.len() as u64;
        // Under the state lock: the tail receives offsets in order.
        let (offset, epoch) = self.store.stream_append(&self.log, message.clone());
        st.tail.push_back((offset, message));
        st.tail_bytes += size;
        st.published += 1;
        self.trim_tail(&mut st);
        Some((epoch, self.store.write_backlog() > crate::queue::WRITE_BACKLOG_HIGH))
    }

    /// Drops the oldest tail messages beyond the tail's bounds, if they are committed (the
    /// others are read from nowhere else).
    fn trim_tail(&self, st: &mut State) {
        let committed = self.log.committed();
        while (st.tail.len() > TAIL_MESSAGES || st.tail_bytes > TAIL_BYTES)
            && st.tail.front().is_some_and(|(o, _)| *o < committed)
        {
            if let Some((_, m)) = st.tail.pop_front() {
                st.tail_bytes -= m.body.len() as u64;
            }
        }
    }

    /// Adds a consumer reading from where `spec` says, and delivers what it can.
    pub(crate) fn add(&self, queue: &Arc<Queue>, consumer: Arc<Consumer>, spec: ReadSpec) {
        if self.runtime.get().is_none()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let _ = self.runtime.set(handle);
        }
        let log = &self.log;
        let committed = log.committed();
        let (next, pending) = match spec.start {
            Start::First => (log.first(), None),
            Start::Last => (log.last_chunk().max(log.first()).min(committed), None),
            Start::Next => (committed, None),
            Start::Offset(n) => (n.max(log.first()), None),
            Start::Time(ms) => (committed, Some(ms)),
        };
        let mut st = self.state();
        st.readers.push(Reader::new(consumer, spec, next, pending));
        let i = st.readers.len() - 1;
        self.feed(queue, &mut st, i);
    }

    /// Forgets the readers whose consumers were retired.
    pub(crate) fn remove_retired(&self) {
        self.state().readers.retain(|r| r.consumer.is_active());
    }

    /// Delivers to every reader with room what it has not read yet.
    pub(crate) fn dispatch(&self, queue: &Arc<Queue>) {
        let mut st = self.state();
        self.trim_tail(&mut st);
        for i in 0..st.readers.len() {
            self.feed(queue, &mut st, i);
        }
        st.readers.retain(|r| !r.gone);
    }

    /// The stream is deleted: its files go, its readers stop.
    pub(crate) fn delete(&self) {
        let mut st = self.state();
        st.deleted = true;
        st.readers.clear();
        st.tail.clear();
        self.store.drop_stream(self.log.id);
    }

    /// Committed messages retained.
    pub fn len(&self) -> u64 {
        self.log.len()
    }

    /// Whether no committed message is retained.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Sizes and counters.
    pub fn stats(&self) -> StreamStats {
        let (bytes, segments) = self.log.size();
        let st = self.state();
        StreamStats {
            messages: self.log.len(),
            bytes,
            segments,
            first: self.log.first(),
            committed: self.log.committed(),
            published: st.published,
            delivered: st.delivered,
            readers: st.readers.len(),
        }
    }
}

/// The properties a delivery from a stream carries: the message's, with the `x-stream-offset`
/// header (long) set to its offset, replacing one the publisher set.
pub fn delivery_properties(properties: &Bytes, offset: u64) -> Bytes {
    let mut p = BasicProperties::decode(properties).unwrap_or_default();
    let mut headers = p.headers.take().unwrap_or_default();
    headers.insert("x-stream-offset", FieldValue::I64(offset as i64));
    p.headers = Some(headers);
    let mut out = BytesMut::with_capacity(properties.len() + 32);
    // Properties that decoded encode again.
    let _ = p.encode(&mut out);
    out.freeze()
}

/// RabbitMQ's 540 for what streams do not support (`basic.get`, `queue.purge`, `basic.nack
/// and basic.reject`).
pub fn not_supported(what: &str, queue: &str, vhost: &str) -> AmqpError {
    AmqpError::not_implemented(format!(
        "{what} not supported by stream queues queue '{queue}' in vhost '{vhost}'"
    ))
}

#[cfg(test)]
mod tests;

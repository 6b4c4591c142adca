//! A stream consumer's reading: its next offset, records read ahead from disk, and the
//! delivery loop that takes each next message from the read-ahead, the stream's in-memory
//! tail, or a new disk read, within the consumer's prefetch window.

use std::collections::VecDeque;
use std::sync::Arc;

use warren_store::{Cursor, StoreError, StreamLog, StreamRecord};
use warren_wire::{BasicProperties, FieldValue};

use super::{ReadSpec, State, Stream};
use crate::message::Message;
use crate::queue::{Consumer, Entry, Event, NEVER, Queue};

/// Bytes one disk read takes at most (one record more if it is larger).
const READ_BYTES: usize = 256 * 1024;

/// One consumer of a stream.
pub(super) struct Reader {
    pub consumer: Arc<Consumer>,
    spec: ReadSpec,
    /// The next offset to deliver.
    next: u64,
    /// A start time still to be turned into an offset (by a disk read).
    pending_time: Option<u64>,
    /// Where the last disk read ended.
    cursor: Cursor,
    /// Records read from disk, not delivered yet.
    buffer: VecDeque<(u64, Arc<Message>)>,
    /// A disk read is in flight.
    reading: bool,
    /// Its connection is gone: dropped after the dispatch.
    pub gone: bool,
}

impl Reader {
    pub(super) fn new(
        consumer: Arc<Consumer>,
        spec: ReadSpec,
        next: u64,
        pending_time: Option<u64>,
    ) -> Reader {
        Reader {
            consumer,
            spec,
            next,
            pending_time,
            cursor: Cursor::at(next),
            buffer: VecDeque::new(),
            reading: false,
            gone: false,
        }
    }

    /// Whether `message` passes the consumer's filter (RabbitMQ 3.13's `x-stream-filter`:
    /// here exact, so clients that filter again on their side see the same).
    fn wants(&self, message: &Message) -> bool {
        let Some(filter) = &self.spec.filter else { return true };
        let props = BasicProperties::decode(&message.properties).unwrap_or_default();
        match props.headers.as_ref().and_then(|h| h.get("x-stream-filter-value")) {
            Some(FieldValue::LongStr(v)) => filter.iter().any(|f| f[..] == v[..]),
            Some(_) => false,
            None => self.spec.match_unfiltered,
        }
    }
}

/// What a disk read brought: the start time's offset if it resolved one, where the read
/// ended, and the records.
type ReadResult = Result<(Option<u64>, Cursor, Vec<StreamRecord>), StoreError>;

/// Reads for a reader: resolves a start time first if there is one.
fn read(log: &StreamLog, mut cursor: Cursor, time: Option<u64>) -> ReadResult {
    let resolved = match time {
        Some(ms) => {
            let at = log.offset_at(ms)?;
            cursor = Cursor::at(at);
            Some(at)
        }
        None => None,
    };
    let records = log.read(&mut cursor, READ_BYTES)?;
    Ok((resolved, cursor, records))
}

impl Stream {
    /// Delivers to reader `i` while it has room and something to read; starts a disk read
    /// when what it needs is neither read ahead nor in the tail.
    pub(super) fn feed(&self, queue: &Arc<Queue>, st: &mut State, i: usize) {
        loop {
            let committed = self.log.committed();
            let first = self.log.first();
            let tail_first = st.tail.front().map(|(o, _)| *o);
            let r = &mut st.readers[i];
            if r.gone {
                return;
            }
            if r.pending_time.is_none() && r.buffer.is_empty() && r.next < first {
                // Retention took what it had not read yet: it goes on from the start.
                r.next = first;
            }
            let (offset, message, buffered) = if let Some((o, m)) = r.buffer.front() {
                (*o, m.clone(), true)
            } else if r.pending_time.is_none()
                && r.next < committed
                && tail_first.is_some_and(|t| r.next >= t)
            {
                let (o, m) = &st.tail[(r.next - tail_first.unwrap_or(0)) as usize];
                (*o, m.clone(), false)
            } else if r.pending_time.is_some() || r.next < committed {
                if r.reading {
                    return;
                }
                let Some(result) = self.start_read(queue, r) else { return };
                if !apply(r, result) {
                    return;
                }
                continue;
            } else {
                return;
            };
            if !r.wants(&message) {
                if buffered {
                    r.buffer.pop_front();
                }
                r.next = offset + 1;
                continue;
            }
            if !r.consumer.try_reserve() {
                return;
            }
            if buffered {
                r.buffer.pop_front();
            }
            r.next = offset + 1;
            let entry = Entry {
                seq: offset,
                message,
                redelivered: false,
                stored: false,
                expires: NEVER,
                returns: 0,
            };
            let consumer = r.consumer.clone();
            if consumer.send(Event::Deliver { consumer: consumer.clone(), entry }).is_err() {
                consumer.unsent();
                r.gone = true;
                return;
            }
            st.delivered += 1;
        }
    }

    /// Starts a disk read for `r` on the blocking pool (its result is applied and the reader
    /// fed again when it lands); without a runtime, reads in place and returns the result.
    fn start_read(&self, queue: &Arc<Queue>, r: &mut Reader) -> Option<ReadResult> {
        let cursor = if r.cursor.next == r.next { r.cursor } else { Cursor::at(r.next) };
        let time = r.pending_time;
        let Some(runtime) = self.runtime.get() else {
            return Some(read(&self.log, cursor, time));
        };
        r.reading = true;
        let log = self.log.clone();
        let queue = queue.clone();
        let consumer = r.consumer.clone();
        runtime.spawn_blocking(move || {
            let result = read(&log, cursor, time);
            let Some(stream) = queue.stream() else { return };
            let failed = result.is_err();
            {
                let mut st = stream.state();
                if let Some(i) = st.readers.iter().position(|r| Arc::ptr_eq(&r.consumer, &consumer))
                {
                    let r = &mut st.readers[i];
                    r.reading = false;
                    if failed {
                        // Tried again on the next dispatch (an ack, a commit), or in a second.
                        if let Err(e) = &result {
                            tracing::warn!(queue = %queue.name, "reading the stream: {e}");
                        }
                    } else if apply(r, result) {
                        stream.feed(&queue, &mut st, i);
                    }
                }
                st.readers.retain(|r| !r.gone);
            }
            if failed {
                std::thread::sleep(std::time::Duration::from_secs(1));
                queue.dispatch();
            }
        });
        None
    }
}

/// Takes a disk read's records into the reader's read-ahead; false if it brought nothing
/// (the reader then waits for the next dispatch rather than reading again at once).
fn apply(r: &mut Reader, result: ReadResult) -> bool {
    let Ok((resolved, cursor, records)) = result else { return false };
    let progress = resolved.is_some() || !records.is_empty();
    if let Some(at) = resolved {
        r.pending_time = None;
        r.next = at;
    }
    r.cursor = cursor;
    let next = r.next;
    r.buffer.extend(
        records
            .into_iter()
            .filter(|rec| rec.offset >= next)
            .map(|rec| (rec.offset, Arc::new(rec.message))),
    );
    progress
}

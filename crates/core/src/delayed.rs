//! Delayed messages: exchanges of type `x-delayed-message`, as RabbitMQ's
//! `rabbitmq_delayed_message_exchange` plugin defines them. Such an exchange routes like its
//! `x-delayed-type` (direct, fanout, topic, headers), but a message published with a positive
//! integer `x-delay` header (milliseconds) is held and routed only when its delay is over,
//! with `x-delay` turned negative (as the plugin does, so it is never delayed twice).
//!
//! Unlike the plugin, which keeps every delayed message in memory (and in Mnesia), a durable
//! delayed exchange keeps its persistent messages in the store under an id of its own, with
//! their due time in the index entry: they survive restarts, and in memory each costs its
//! due time and its place in the store, not its body. One task per exchange sleeps until the
//! earliest due time (a binary heap), so a million delayed messages cost no million timers.
//! A due message reaches its queues as a move in the store ([`crate::dead_letter`]'s
//! mechanism): its delayed entry is removed only once its queue entries are on disk, so a
//! crash neither loses nor duplicates it.
//!
//! As the plugin: a delayed publish is confirmed (here once it is on disk, if persistent) but
//! counts as unroutable when published (a mandatory one is returned, and still delivered
//! later); a message whose due time finds no queue is dropped.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tracing::error;
use warren_store::{Location, RecoveredQueue};
use warren_wire::{FieldTable, FieldValue, ShortStr};

use crate::error::{AmqpError, Result};
use crate::message::Message;
use crate::publish::{Route, Scratch, enqueue};
use crate::queue::Durable;
use crate::vhost::VHost;

/// The exchange type.
pub const TYPE: &str = "x-delayed-message";

/// Most due messages routed in one turn of an exchange's task (others wait for the next).
const BATCH: usize = 1024;

/// The plugin's bound on a delay (Erlang's longest timer).
const MAX_DELAY: i64 = 4_294_967_295;

/// The routing type of an `x-delayed-message` exchange's declare: its `x-delayed-type`, with
/// the plugin's 406 when missing (its text, typos included) and 503 for an unknown type.
pub fn delayed_type(arguments: &FieldTable) -> Result<&str> {
    match arguments.get("x-delayed-type") {
        Some(v @ FieldValue::LongStr(_)) => {
            let t = v.as_str().unwrap_or_default();
            match crate::exchange::ExchangeKind::parse(t) {
                Some(_) => Ok(t),
                None => Err(AmqpError::command_invalid(format!("unknown exchange type '{t}'"))),
            }
        }
        _ => Err(AmqpError::precondition_failed(
            "Invalid argument, 'x-delayed-type' must bean existing exchnage type",
        )),
    }
}

/// The delay a message asks for: its `x-delay` header, if a positive number of milliseconds
/// (integers; floats truncated; numeric strings, as the plugin's latest versions), at most
/// 2^32 - 1.
pub fn delay_of(headers: Option<&FieldTable>) -> Option<u64> {
    let v = headers?.get("x-delay")?;
    let ms = match v {
        FieldValue::F32(f) => *f as i64,
        FieldValue::F64(f) => *f as i64,
        FieldValue::LongStr(_) => v.as_str()?.trim().parse().ok()?,
        other => other.as_i64()?,
    };
    (ms > 0 && ms <= MAX_DELAY).then_some(ms as u64)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A held message's body: in memory (transient) or only in the store (persistent).
#[derive(Debug)]
enum Body {
    Loaded(Arc<Message>),
    Stored(Location),
}

/// A held message, ordered by due time then arrival (the heap's top is the earliest).
#[derive(Debug)]
struct Held {
    due: u64,
    seq: u64,
    body: Body,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Reversed: BinaryHeap is a max-heap.
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

#[derive(Debug, Default)]
struct State {
    heap: BinaryHeap<Held>,
    next_seq: u64,
    /// The exchange's task runs.
    task: bool,
    deleted: bool,
}

/// One `x-delayed-message` exchange's held messages.
#[derive(Debug)]
pub struct Delayed {
    exchange: ShortStr,
    vhost: Weak<VHost>,
    /// Where its persistent messages are kept (a durable exchange of a broker with a store).
    pub durable: Option<Durable>,
    state: Mutex<State>,
    wake: Arc<Notify>,
}

impl Delayed {
    /// An exchange's (empty) delay store.
    pub fn new(exchange: ShortStr, vhost: Weak<VHost>, durable: Option<Durable>) -> Self {
        Delayed { exchange, vhost, durable, state: Mutex::default(), wake: Arc::default() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.state().heap.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts back what the store kept (at start-up): their due times are absolute, so those
    /// due during the downtime go out as soon as the task starts.
    pub fn recover(&self, recovered: RecoveredQueue) {
        let mut st = self.state();
        st.next_seq = st.next_seq.max(recovered.next_seq);
        for m in recovered.messages {
            st.next_seq = st.next_seq.max(m.seq + 1);
            let due = m.due.unwrap_or(0);
            st.heap.push(Held { due, seq: m.seq, body: Body::Stored(m.loc) });
        }
    }

    /// Holds `message` for `delay` ms; the store's failure epoch at its append if it was
    /// stored (the publisher's confirm waits for the store's sync).
    pub fn hold(self: &Arc<Self>, message: Arc<Message>, delay: u64) -> Option<u64> {
        let due = now_ms().saturating_add(delay);
        let mut st = self.state();
        if st.deleted {
            return None;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let (body, epoch) = match &self.durable {
            Some(d) if message.is_persistent() => {
                let s = d.store.append(message, 1);
                // Under the lock: the store sees positions in order.
                d.store.enqueue_due(d.id, seq, s.id, due);
                (Body::Stored(s.loc), Some(s.epoch))
            }
            _ => (Body::Loaded(message), None),
        };
        let earlier = st.heap.peek().is_none_or(|h| due < h.due);
        st.heap.push(Held { due, seq, body });
        if !st.task {
            self.start(&mut st);
        } else if earlier {
            self.wake.notify_one();
        }
        epoch
    }

    /// Starts the exchange's task if a runtime runs (at start-up it is started later, by
    /// [`crate::Broker::start_delayed_exchanges`]).
    fn start(self: &Arc<Self>, st: &mut State) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        st.task = true;
        runtime.spawn(run(Arc::downgrade(self), self.wake.clone()));
    }

    /// Starts the task if messages wait and it does not run.
    pub fn ensure_started(self: &Arc<Self>) {
        let mut st = self.state();
        if !st.task && !st.heap.is_empty() {
            self.start(&mut st);
        }
    }

    /// The exchange was deleted: its held messages go.
    pub fn delete(&self) {
        let mut st = self.state();
        st.deleted = true;
        st.heap.clear();
        if let Some(d) = &self.durable {
            d.store.drop_queue(d.id);
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Takes the messages due by `now` (at most [`BATCH`]); the next due time after them.
    fn take_due(&self, now: u64, out: &mut Vec<Held>) -> Option<u64> {
        let mut st = self.state();
        while out.len() < BATCH && st.heap.peek().is_some_and(|h| h.due <= now) {
            out.extend(st.heap.pop());
        }
        let next = st.heap.peek().map(|h| h.due);
        // A burst that went out gives its memory back.
        if st.heap.capacity() > 4096 && st.heap.len() < st.heap.capacity() / 4 {
            let keep = st.heap.len() * 2;
            st.heap.shrink_to(keep);
        }
        if next.is_none() || st.deleted {
            st.task = false;
        }
        next
    }

    /// Routes due messages from the exchange, each as a move out of the store when stored.
    fn release(&self, due: Vec<Held>) {
        let Some(vhost) = self.vhost.upgrade() else { return };
        let stored: Vec<Location> = due
            .iter()
            .filter_map(|h| match h.body {
                Body::Stored(loc) => Some(loc),
                Body::Loaded(_) => None,
            })
            .collect();
        let mut read = match (&self.durable, stored.is_empty()) {
            (Some(d), false) => match crate::blocking::disk(|| d.store.read_many(&stored)) {
                Ok(read) => read.into_iter(),
                Err(e) => {
                    // Nothing is known lost: they are tried again in a second.
                    error!(exchange = %self.exchange, "reading delayed messages back failed, will retry: {e}");
                    let mut st = self.state();
                    let retry = now_ms() + 1000;
                    for mut h in due {
                        h.due = h.due.max(retry);
                        st.heap.push(h);
                    }
                    return;
                }
            },
            _ => Vec::new().into_iter(),
        };
        let mut scratch = Scratch::default();
        for h in due {
            let (message, origin) = match h.body {
                Body::Loaded(m) => (m, None),
                Body::Stored(_) => match (read.next().flatten(), &self.durable) {
                    (Some(m), Some(d)) => (Arc::new(m), Some((d.id, h.seq))),
                    (None, Some(d)) => {
                        error!(exchange = %self.exchange, "a delayed message is not on disk (its write failed); dropped");
                        d.store.remove(d.id, h.seq);
                        continue;
                    }
                    _ => continue,
                },
            };
            let released = Arc::new(undelayed(&message));
            let headers = released.decoded_properties().headers;
            let moved = match vhost.route_message(&released, headers.as_ref(), &mut scratch) {
                Ok(Route::Queues(mut queues)) => {
                    let (_, moved) = enqueue(released, &mut queues, &mut scratch.congested, origin);
                    scratch.congested.clear();
                    moved
                }
                // The exchange went meanwhile, or (never: x-delay is negative now) delayed.
                _ => false,
            };
            if let (false, Some((id, seq)), Some(d)) = (moved, origin, &self.durable) {
                d.store.remove(id, seq);
            }
        }
    }
}

/// The message as a delayed exchange releases it: `x-delay` negated (a signed 32-bit
/// integer, as the plugin writes it), the headers sorted as RabbitMQ leaves them.
fn undelayed(m: &Message) -> Message {
    let mut p = m.decoded_properties();
    if let Some(h) = p.headers.as_mut()
        && let Some(delay) = delay_of(Some(h))
    {
        h.insert("x-delay", FieldValue::I32(-(delay.min(i32::MAX as u64) as i32)));
        h.0.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
    let mut out = BytesMut::with_capacity(m.properties.len() + 8);
    // Properties that decoded encode again.
    let _ = p.encode(&mut out);
    let mut released = m.clone();
    released.properties = Bytes::from(out);
    released
}

/// An exchange's task: sleeps until the earliest due time (or a wake-up for an earlier one),
/// releases what is due, and ends when nothing is held (the next hold starts it again).
async fn run(delayed: Weak<Delayed>, wake: Arc<Notify>) {
    let mut due = Vec::new();
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let Some(d) = delayed.upgrade() else { return };
            let next = d.take_due(now_ms(), &mut due);
            if !due.is_empty() {
                d.release(std::mem::take(&mut due));
                // More may be due already: look again before sleeping.
                tokio::task::yield_now().await;
                continue;
            }
            match next {
                Some(next) => next,
                None => return,
            }
        };
        let wait = Duration::from_millis(next.saturating_sub(now_ms()));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut notified => {}
        }
    }
}

impl crate::Broker {
    /// Starts the tasks of delayed exchanges that recovered held messages (at start-up, once
    /// the runtime runs).
    pub fn start_delayed_exchanges(&self) {
        for vhost in self.vhost_list() {
            for d in vhost.delayed_exchanges() {
                d.ensure_started();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::BasicProperties;

    fn headers_of(m: &Message) -> FieldTable {
        BasicProperties::decode(&m.properties).unwrap().headers.unwrap_or_default()
    }

    #[test]
    fn delays_are_read_as_the_plugin_reads_them() {
        let h = |v: FieldValue| Some(FieldTable::new().with("x-delay", v));
        assert_eq!(delay_of(h(FieldValue::I32(5000)).as_ref()), Some(5000));
        assert_eq!(delay_of(h(FieldValue::I64(1)).as_ref()), Some(1));
        assert_eq!(delay_of(h(FieldValue::F64(2.9)).as_ref()), Some(2));
        assert_eq!(delay_of(h(FieldValue::from("30")).as_ref()), Some(30));
        assert_eq!(delay_of(h(FieldValue::I32(0)).as_ref()), None, "not delayed");
        assert_eq!(delay_of(h(FieldValue::I32(-5)).as_ref()), None, "released: never again");
        assert_eq!(delay_of(h(FieldValue::I64(MAX_DELAY + 1)).as_ref()), None);
        assert_eq!(delay_of(h(FieldValue::from("soon")).as_ref()), None);
        assert_eq!(delay_of(None), None);
    }

    #[test]
    fn the_type_argument_is_checked_as_the_plugin_checks_it() {
        let t = FieldTable::new().with("x-delayed-type", "topic");
        assert_eq!(delayed_type(&t).unwrap(), "topic");
        let e = delayed_type(&FieldTable::new()).unwrap_err();
        assert_eq!(e.code, 406);
        let e = delayed_type(&FieldTable::new().with("x-delayed-type", "nope")).unwrap_err();
        assert_eq!(e.code, 503);
    }

    #[test]
    fn released_messages_carry_a_negative_delay() {
        let props = BasicProperties {
            headers: Some(FieldTable::new().with("x-delay", FieldValue::I64(250)).with("a", "b")),
            ..Default::default()
        };
        let m = Message::new("ex".into(), "k".into(), &props, Bytes::new(), Bytes::new());
        let r = undelayed(&m);
        let h = headers_of(&r);
        assert_eq!(h.get("x-delay"), Some(&FieldValue::I32(-250)));
        assert_eq!(&h.0[0].0[..], "a", "sorted");
        assert_eq!(delay_of(Some(&h)), None);
    }

    #[test]
    fn the_earliest_due_comes_first() {
        let d = Delayed::new("x".into(), Weak::new(), None);
        let msg = |s: &str| {
            Arc::new(Message::new(
                "x".into(),
                s.into(),
                &BasicProperties::default(),
                Bytes::new(),
                Bytes::new(),
            ))
        };
        {
            let mut st = d.state();
            for (due, seq) in [(30, 0), (10, 1), (20, 2), (10, 3)] {
                st.heap.push(Held { due, seq, body: Body::Loaded(msg("m")) });
            }
        }
        let mut out = Vec::new();
        assert_eq!(d.take_due(15, &mut out), Some(20));
        assert_eq!(out.iter().map(|h| h.seq).collect::<Vec<_>>(), [1, 3]);
        out.clear();
        assert_eq!(d.take_due(100, &mut out), None);
        assert_eq!(out.iter().map(|h| h.seq).collect::<Vec<_>>(), [2, 0]);
    }
}

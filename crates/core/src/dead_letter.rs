//! Dead-lettering, as RabbitMQ 3.10 does it (`rabbit_dead_letter`): a message rejected without
//! requeue, expired, or pushed out by a length limit leaves its queue and is published to the
//! queue's `x-dead-letter-exchange`, with `x-dead-letter-routing-key` (or its own routing key),
//! carrying the `x-death` history. Without a dead-letter exchange it is dropped.
//!
//! The history: `x-death` is an array of tables, newest first, one per (queue, reason) with a
//! `count` that grows when the message dies again the same way (the entry otherwise keeps its
//! first `time`, `exchange` and `routing-keys`); `x-first-death-*` are set by the first death,
//! and `x-last-death-*` by every one (as RabbitMQ 3.13 does; 3.10 does not write those). The
//! headers table comes out sorted by key, the new entry in RabbitMQ's field order. The copy
//! loses its `expiration` (kept as `original-expiration` in its entry) and, when
//! `x-dead-letter-routing-key` replaces the key, its `CC` header.
//!
//! Cycles: a message that would reach a queue it already died in, with no rejection on the
//! way since, is dropped for that queue (RabbitMQ's `detect_cycles`); a rejection is a
//! client's decision, so a reject loop goes on.
//!
//! Queues collect what they dead-letter under their lock and hand it over here after releasing
//! it ([`crate::queue`]), so a publish to another queue never happens under a queue's lock.
//! A persistent message moved from a durable queue to durable ones is an all-or-nothing move
//! in the store ([`warren_store::Store::enqueue_moved`]): never lost, never duplicated. A
//! dead-letter exchange of type `x-delayed-message` (with an `x-delay` header on the message)
//! holds the copy; that step is not a move: the source entry is removed when the copy is
//! handed over.

use std::sync::Arc;

use bytes::Bytes;
use warren_wire::{FieldTable, FieldValue, ShortStr};

use crate::error::{AmqpError, Result};
use crate::message::Message;
use crate::publish::{Route, Scratch, enqueue};
use crate::queue::Queue;
use crate::vhost::VHost;

/// Why a message was dead-lettered (the `reason` of its `x-death` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// A length limit pushed it out (drop-head) or refused it (reject-publish-dlx).
    MaxLen,
    /// It was delivered more times than the queue's delivery limit.
    DeliveryLimit,
}

impl Reason {
    /// The name RabbitMQ writes.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::MaxLen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Where a queue dead-letters to: its `x-dead-letter-exchange` and `x-dead-letter-routing-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTo {
    /// The exchange (`""`: the default exchange).
    pub exchange: ShortStr,
    /// Replaces the message's routing key, if set.
    pub routing_key: Option<ShortStr>,
}

impl DeadLetterTo {
    /// Reads and checks the arguments of queue `queue` in `vhost`, with RabbitMQ's 406 texts.
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> Result<Option<DeadLetterTo>> {
        let exchange = match args.get("x-dead-letter-exchange") {
            None => None,
            Some(v) => match v {
                FieldValue::LongStr(_) => Some(ShortStr::from(v.as_str().unwrap_or_default())),
                _ => {
                    // rabbit_channel's check, before the argument checks.
                    return Err(AmqpError::precondition_failed(format!(
                        "invalid type '{}' for arg 'x-dead-letter-exchange' in queue '{queue}' in \
                         vhost '{vhost}'",
                        v.rabbit_type()
                    )));
                }
            },
        };
        let invalid = |detail: String| {
            AmqpError::precondition_failed(format!(
                "invalid arg 'x-dead-letter-routing-key' for queue '{queue}' in vhost '{vhost}': \
                 {detail}"
            ))
        };
        let routing_key = match args.get("x-dead-letter-routing-key") {
            None => None,
            Some(v @ FieldValue::LongStr(_)) => {
                Some(ShortStr::from(v.as_str().unwrap_or_default()))
            }
            Some(v) => return Err(invalid(format!("{{unacceptable_type,{}}}", v.rabbit_type()))),
        };
        match (exchange, routing_key) {
            (None, Some(_)) => Err(invalid("routing_key_but_no_dlx_defined".into())),
            (None, None) => Ok(None),
            (Some(exchange), routing_key) => Ok(Some(DeadLetterTo { exchange, routing_key })),
        }
    }
}

/// A message leaving its queue to be dead-lettered.
#[derive(Debug)]
pub struct Dead {
    /// The message as it was in the queue.
    pub message: Arc<Message>,
    /// Why.
    pub reason: Reason,
    /// Its position in the queue, and whether the store holds it there (`stored`: the move to
    /// durable queues removes it from the store, or it is removed when nothing takes it).
    pub seq: u64,
    /// See `seq`.
    pub stored: bool,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn text(s: &str) -> FieldValue {
    FieldValue::from(s)
}

/// The string values of an `x-death` entry field.
fn entry_str<'a>(entry: &'a FieldTable, key: &str) -> Option<&'a str> {
    entry.get(key).and_then(FieldValue::as_str)
}

/// Sorts a table by key, as RabbitMQ's `sort_field_table` (byte order).
fn sorted(mut t: FieldTable) -> FieldTable {
    t.0.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    t
}

/// The dead-lettered copy of `m`, dying in `queue` for `reason`, published to `to`: its
/// headers with the death recorded, no expiration, the new exchange and routing key. Also the
/// queue names of its `x-death` entries with whether a rejection happened since each (for
/// cycle detection).
fn dead_copy(m: &Message, reason: Reason, queue: &str, to: &DeadLetterTo) -> Message {
    let mut props = m.decoded_properties();
    let mut headers = props.headers.take().unwrap_or_default();
    let mut routing_keys = vec![text(&m.routing_key)];
    if let Some(FieldValue::Array(cc)) = headers.get("CC") {
        routing_keys.extend(cc.iter().filter(|v| v.as_str().is_some()).cloned());
    }
    let (q, r, x) = (queue, reason.as_str(), m.exchange.to_string());
    let mut entry = FieldTable(vec![
        ("count".into(), FieldValue::I64(1)),
        ("reason".into(), text(r)),
        ("queue".into(), text(q)),
        ("time".into(), FieldValue::Timestamp(now_secs())),
        ("exchange".into(), text(&x)),
        ("routing-keys".into(), FieldValue::Array(routing_keys)),
    ]);
    if let Some(e) = props.expiration.take() {
        entry.0.push(("original-expiration".into(), text(&e)));
    }
    let deaths = match headers.get("x-death") {
        Some(FieldValue::Array(old)) => {
            let same = |t: &FieldTable| {
                entry_str(t, "queue") == Some(q) && entry_str(t, "reason") == Some(r)
            };
            let mut found = None;
            let mut others = Vec::with_capacity(old.len());
            for v in old {
                match v {
                    FieldValue::Table(t) if found.is_none() && same(t) => found = Some(t.clone()),
                    other => others.push(other.clone()),
                }
            }
            let first = match found {
                Some(mut t) => {
                    match t.get("count").and_then(FieldValue::as_i64) {
                        Some(n) => t.insert("count", FieldValue::I64(n + 1)),
                        None => t.0.insert(0, ("count".into(), FieldValue::I64(1))),
                    }
                    t
                }
                None => entry,
            };
            let mut all = vec![FieldValue::Table(sorted(first))];
            all.extend(others);
            all
        }
        _ => {
            headers.insert("x-first-death-reason", text(r));
            headers.insert("x-first-death-queue", text(q));
            headers.insert("x-first-death-exchange", text(&x));
            vec![FieldValue::Table(entry)]
        }
    };
    headers.insert("x-death", FieldValue::Array(deaths));
    headers.insert("x-last-death-reason", text(r));
    headers.insert("x-last-death-queue", text(q));
    headers.insert("x-last-death-exchange", text(&x));
    let routing_key = match &to.routing_key {
        Some(k) => {
            headers.0.retain(|(k, _)| k != "CC");
            k.clone()
        }
        None => m.routing_key.clone(),
    };
    props.headers = Some(sorted(headers));
    Message::new(to.exchange.clone(), routing_key, &props, Bytes::new(), m.body.clone())
}

/// Whether dead-lettering into `target` closes a cycle RabbitMQ drops: `target` appears in
/// the copy's `x-death` history (newest first) with no `rejected` death up to and including
/// that entry.
fn is_cycle(deaths: &[FieldValue], target: &str) -> bool {
    for d in deaths {
        let FieldValue::Table(t) = d else { return false };
        if entry_str(t, "reason") == Some(Reason::Rejected.as_str()) {
            return false;
        }
        if entry_str(t, "queue") == Some(target) {
            return true;
        }
    }
    false
}

impl VHost {
    /// Dead-letters messages that left `source` (called with no queue lock held). What goes
    /// nowhere (no dead-letter exchange, a missing one, no binding, only cycles) is dropped.
    pub(crate) fn dead_letter(&self, source: &Queue, dead: Vec<Dead>) {
        let mut scratch = Scratch::default();
        let (_, target) = source.settings();
        for d in dead {
            let moved = match &target {
                Some(to) => self.dead_letter_one(source, to, &d, &mut scratch),
                None => false,
            };
            if !moved {
                source.settle_seq(d.seq, d.stored);
            }
        }
    }

    /// Publishes one dead-lettered copy; true if the store took over removing the source
    /// entry (the copy went to a durable queue as a move).
    fn dead_letter_one(
        &self,
        source: &Queue,
        to: &DeadLetterTo,
        d: &Dead,
        scratch: &mut Scratch,
    ) -> bool {
        let copy = dead_copy(&d.message, d.reason, &source.name, to);
        let headers = copy.decoded_properties().headers;
        let mut queues = match self.route_message(&copy, headers.as_ref(), scratch) {
            Ok(Route::Queues(queues)) => queues,
            Ok(Route::Delayed(d, delay)) => {
                // Into a delayed exchange: held there (not a move; see the module docs).
                d.hold(Arc::new(copy), delay);
                return false;
            }
            // A missing dead-letter exchange: dropped, as RabbitMQ.
            Err(_) => return false,
        };
        if d.reason != Reason::Rejected
            && let Some(FieldValue::Array(deaths)) = headers.as_ref().and_then(|h| h.get("x-death"))
        {
            queues.retain(|q| !is_cycle(deaths, &q.name));
        }
        let origin = match (&source.durable, d.stored) {
            (Some(s), true) => Some((s.id, d.seq)),
            _ => None,
        };
        let (_, moved) = enqueue(Arc::new(copy), &mut queues, &mut scratch.congested, origin);
        // Dead-letters are not held back by flow control.
        scratch.congested.clear();
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::BasicProperties;

    fn message(headers: Option<FieldTable>, expiration: Option<&str>) -> Message {
        let props = BasicProperties {
            headers,
            expiration: expiration.map(Into::into),
            delivery_mode: Some(2),
            ..Default::default()
        };
        Message::new("ex".into(), "key".into(), &props, Bytes::new(), Bytes::from_static(b"b"))
    }

    fn to(exchange: &str, key: Option<&str>) -> DeadLetterTo {
        DeadLetterTo { exchange: exchange.into(), routing_key: key.map(Into::into) }
    }

    fn headers(m: &Message) -> FieldTable {
        m.decoded_properties().headers.unwrap()
    }

    fn deaths(m: &Message) -> Vec<FieldTable> {
        match headers(m).get("x-death") {
            Some(FieldValue::Array(a)) => a
                .iter()
                .map(|v| match v {
                    FieldValue::Table(t) => t.clone(),
                    _ => panic!("not a table"),
                })
                .collect(),
            _ => panic!("no x-death"),
        }
    }

    fn keys(t: &FieldTable) -> Vec<&str> {
        t.0.iter().map(|(k, _)| &**k).collect()
    }

    #[test]
    fn a_first_death_is_recorded_as_rabbitmq_writes_it() {
        let m = message(Some(FieldTable::new().with("z", "last").with("a", "first")), Some("6000"));
        let c = dead_copy(&m, Reason::Rejected, "src", &to("dlx", None));
        assert_eq!((&*c.exchange, &*c.routing_key), ("dlx", "key"));
        let p = c.decoded_properties();
        assert_eq!(p.expiration, None, "the copy does not expire again");
        assert_eq!(p.delivery_mode, Some(2));
        let h = headers(&c);
        assert_eq!(
            keys(&h),
            [
                "a",
                "x-death",
                "x-first-death-exchange",
                "x-first-death-queue",
                "x-first-death-reason",
                "x-last-death-exchange",
                "x-last-death-queue",
                "x-last-death-reason",
                "z"
            ]
        );
        assert_eq!(h.get("x-first-death-queue").and_then(FieldValue::as_str), Some("src"));
        assert_eq!(h.get("x-first-death-exchange").and_then(FieldValue::as_str), Some("ex"));
        let d = deaths(&c);
        assert_eq!(d.len(), 1);
        assert_eq!(
            keys(&d[0]),
            ["count", "reason", "queue", "time", "exchange", "routing-keys", "original-expiration"]
        );
        assert_eq!(d[0].get("count"), Some(&FieldValue::I64(1)));
        assert_eq!(d[0].get("reason").and_then(FieldValue::as_str), Some("rejected"));
        assert!(matches!(d[0].get("time"), Some(FieldValue::Timestamp(t)) if *t > 1_600_000_000));
        assert_eq!(d[0].get("routing-keys"), Some(&FieldValue::Array(vec![text("key")])));
        assert_eq!(d[0].get("original-expiration").and_then(FieldValue::as_str), Some("6000"));
    }

    #[test]
    fn dying_again_the_same_way_counts_and_moves_the_entry_first() {
        let m = message(None, None);
        let q1 = to("", Some("q2"));
        let once = dead_copy(&m, Reason::Rejected, "q1", &q1);
        assert_eq!(&*once.routing_key, "q2");
        let twice = dead_copy(&once, Reason::Rejected, "q2", &to("", Some("q1")));
        let thrice = dead_copy(&twice, Reason::Rejected, "q1", &q1);
        let d = deaths(&thrice);
        assert_eq!(d.len(), 2);
        assert_eq!(entry_str(&d[0], "queue"), Some("q1"));
        assert_eq!(d[0].get("count"), Some(&FieldValue::I64(2)));
        assert_eq!(keys(&d[0]), ["count", "exchange", "queue", "reason", "routing-keys", "time"]);
        assert_eq!(d[0].get("time"), deaths(&once)[0].get("time"), "keeps its first time");
        assert_eq!(entry_str(&d[1], "queue"), Some("q2"));
        let h = headers(&thrice);
        assert_eq!(h.get("x-first-death-queue").and_then(FieldValue::as_str), Some("q1"));
        assert_eq!(h.get("x-last-death-queue").and_then(FieldValue::as_str), Some("q1"));
        // Another reason in the same queue is another entry.
        let expired = dead_copy(&thrice, Reason::Expired, "q1", &q1);
        assert_eq!(deaths(&expired).len(), 3);
    }

    #[test]
    fn a_new_routing_key_drops_cc() {
        let cc = FieldValue::Array(vec![text("other")]);
        let m = message(Some(FieldTable::new().with("CC", cc)), None);
        let kept = dead_copy(&m, Reason::Expired, "q", &to("dlx", None));
        assert!(headers(&kept).get("CC").is_some());
        assert_eq!(
            deaths(&kept)[0].get("routing-keys"),
            Some(&FieldValue::Array(vec![text("key"), text("other")]))
        );
        let rekeyed = dead_copy(&m, Reason::Expired, "q", &to("dlx", Some("k2")));
        assert!(headers(&rekeyed).get("CC").is_none());
    }

    #[test]
    fn cycles_without_a_rejection_are_found() {
        let m = message(None, None);
        let a = dead_copy(&m, Reason::Expired, "a", &to("", None));
        let h = headers(&a);
        let Some(FieldValue::Array(d)) = h.get("x-death") else { panic!() };
        assert!(is_cycle(d, "a"));
        assert!(!is_cycle(d, "b"));
        let rejected_then = dead_copy(&a, Reason::Rejected, "b", &to("", None));
        let h = headers(&rejected_then);
        let Some(FieldValue::Array(d)) = h.get("x-death") else { panic!() };
        assert!(!is_cycle(d, "a"), "a rejection on the way: not automatic");
    }

    #[test]
    fn arguments_are_checked_with_rabbitmq_texts() {
        let parse = |t: FieldTable| DeadLetterTo::parse(&t, "q", "/");
        assert_eq!(parse(FieldTable::new()).unwrap(), None);
        assert_eq!(
            parse(FieldTable::new().with("x-dead-letter-exchange", "")).unwrap(),
            Some(to("", None))
        );
        let e = parse(FieldTable::new().with("x-dead-letter-routing-key", "k")).unwrap_err();
        assert_eq!(
            e.text,
            "invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': \
             routing_key_but_no_dlx_defined"
        );
        let e = parse(FieldTable::new().with("x-dead-letter-exchange", FieldValue::I32(5)))
            .unwrap_err();
        assert_eq!(
            e.text,
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
        let e = parse(
            FieldTable::new()
                .with("x-dead-letter-exchange", "e")
                .with("x-dead-letter-routing-key", FieldValue::I32(5)),
        )
        .unwrap_err();
        assert_eq!(e.code, 406);
        assert!(e.text.ends_with("{unacceptable_type,signedint}"), "{}", e.text);
    }
}

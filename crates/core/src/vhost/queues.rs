//! Queues: lookup and access checks, queue.declare with RabbitMQ's redeclare equivalence,
//! direct reply-to queues, purge and delete, and the exclusive queues of a closed connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use warren_wire::{FieldTable, FieldValue, ShortStr};

use super::{DeclaredQueue, REPLY_TO, VHost, inequivalent, read, write};
use crate::dead_letter::DeadLetterTo;
use crate::error::{AmqpError, Result};
use crate::exchange::{Destination, Exchange};
use crate::policy;
use crate::queue::{ConnectionId, Durable, Queue, QueueArgs, QueueOptions, quorum};
use crate::stream;
use crate::users::{Access, Kind, Perm};

/// The arguments a classic queue's redeclare must repeat exactly, as RabbitMQ compares them
/// (others may differ freely).
const CLASSIC_QUEUE_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-master-locator",
    "x-queue-type",
];

/// The arguments a quorum queue's redeclare must repeat exactly.
const QUORUM_QUEUE_ARGS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-delivery-limit",
    "x-expires",
    "x-max-in-memory-bytes",
    "x-max-in-memory-length",
    "x-max-length",
    "x-max-length-bytes",
    "x-message-ttl",
    "x-overflow",
    "x-quorum-initial-group-size",
    "x-single-active-consumer",
    "x-queue-type",
];

/// RabbitMQ's equivalence check of a queue redeclare's arguments: each argument of the queue
/// type must be absent in both or equal in both; `x-queue-type` absent equals `classic`.
fn check_queue_args(current: &FieldTable, got: &FieldTable, name: &str, vhost: &str) -> Result<()> {
    // rabbit_misc's texts: both present, the values ('6'); one absent, `none` against the
    // value with its type (the value 'a' of type 'longstr').
    let plain = |v: &FieldValue| match (v.as_str(), v.as_i64(), v.as_bool()) {
        (Some(s), _, _) => s.to_string(),
        (_, Some(n), _) => n.to_string(),
        (_, _, Some(b)) => b.to_string(),
        _ => format!("{v:?}"),
    };
    let show = |v: Option<&FieldValue>, other: Option<&FieldValue>| match (v, other) {
        (None, _) => "none".to_string(),
        (Some(v), Some(_)) => format!("'{}'", plain(v)),
        (Some(v), None) => format!("the value '{}' of type '{}'", plain(v), v.rabbit_type()),
    };
    let compared = if quorum::is_quorum(current) {
        QUORUM_QUEUE_ARGS
    } else if stream::args::is_stream(current) {
        stream::args::EQUIVALENT_ARGS
    } else {
        CLASSIC_QUEUE_ARGS
    };
    for arg in compared {
        let (a, b) = (current.get(arg), got.get(arg));
        let same = match (a, b) {
            (None, None) => true,
            (Some(x), Some(y)) => x == y || (x.as_i64().is_some() && x.as_i64() == y.as_i64()),
            (None, Some(v)) | (Some(v), None) => {
                *arg == "x-queue-type" && v.as_str() == Some("classic")
            }
        };
        if !same {
            return Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for queue '{name}' in vhost '{vhost}': received {} but current is {}",
                show(b, a),
                show(a, b)
            )));
        }
    }
    Ok(())
}

impl VHost {
    /// Every queue of the vhost.
    pub fn queue_list(&self) -> Vec<Arc<Queue>> {
        read(&self.queues).values().cloned().collect()
    }

    /// The queue called `name`.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        read(&self.queues).get(name).cloned()
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    /// The queue `name` if `connection` may use it: 404 if missing, 405 if another
    /// connection's exclusive queue.
    pub fn queue_for(&self, name: &str, connection: ConnectionId) -> Result<Arc<Queue>> {
        let q = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        q.check_access(connection, &self.name)?;
        Ok(q)
    }

    /// A server-generated queue name, `amq.gen-` and 22 characters as RabbitMQ makes them.
    fn generate_name(&self) -> ShortStr {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let n = self.generated.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // splitmix64 over a counter and the clock: unique per vhost, unpredictable enough.
        let mut x = nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (self as *const _ as u64);
        let mut s = String::from("amq.gen-");
        for _ in 0..22 {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            s.push(ALPHABET[(z % 64) as usize] as char);
        }
        s.into()
    }

    /// queue.declare. An empty `name` gets a server-generated one.
    pub fn declare_queue(
        &self,
        name: &str,
        passive: bool,
        options: QueueOptions,
        connection: ConnectionId,
    ) -> Result<DeclaredQueue> {
        self.declare_queue_as(None, name, passive, options, connection)
    }

    /// queue.declare by a user whose permissions are checked as RabbitMQ checks them: a
    /// passive declare needs none; otherwise configure on the queue (a server-named one by
    /// its generated name), and for a new queue with a dead-letter exchange read on the queue
    /// and write on that exchange.
    pub fn declare_queue_as(
        &self,
        mut access: Option<&mut Access>,
        name: &str,
        passive: bool,
        options: QueueOptions,
        connection: ConnectionId,
    ) -> Result<DeclaredQueue> {
        let answer = |q: Arc<Queue>| {
            // A declare of any kind refreshes x-expires (RabbitMQ's `stat`).
            q.touch();
            DeclaredQueue {
                message_count: q.message_count(),
                // As RabbitMQ: a stream's declare-ok counts no consumers.
                consumer_count: if q.is_stream() { 0 } else { q.consumer_count() },
                queue: q,
            }
        };
        if passive {
            return self.queue_for(name, connection).map(answer);
        }
        let quorum = quorum::is_quorum(&options.arguments);
        let is_stream = stream::args::is_stream(&options.arguments);
        if let Some(t) = options.arguments.get("x-queue-type")
            && t.as_str() != Some("classic")
            && !quorum
            && !is_stream
        {
            let shown =
                t.as_str().map_or_else(|| "(not a string)".to_string(), |s| format!("'{s}'"));
            return Err(AmqpError::not_implemented(format!(
                "queue type {shown}: only classic, quorum and stream queues are implemented by \
                 warren"
            )));
        }
        if is_stream && name.is_empty() {
            return Err(AmqpError::precondition_failed(
                "Cannot declare a server-named queue for type rabbit_stream_queue",
            ));
        }
        // As RabbitMQ: every client-chosen amq.* name is refused.
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let name: ShortStr = if name.is_empty() { self.generate_name() } else { name.into() };
        if let Some(a) = access.as_deref_mut() {
            a.check(Perm::Configure, Kind::Queue, &name)?;
        }
        if quorum {
            quorum::check_args(&options.arguments, &name, &self.name)?;
        }
        if is_stream {
            stream::args::check_args(&options.arguments, &name, &self.name)?;
        }
        let dead_letter = DeadLetterTo::parse(&options.arguments, &name, &self.name)?;
        QueueArgs::parse(&options.arguments, &name, &self.name)?;
        if let (Some(a), Some(dlx)) = (access, &dead_letter)
            && self.queue(&name).is_none()
        {
            a.check(Perm::Read, Kind::Queue, &name)?;
            a.check(Perm::Write, Kind::Exchange, &dlx.exchange)?;
        }
        let mut map = write(&self.queues);
        if let Some(existing) = map.get(&name).cloned() {
            drop(map);
            existing.check_access(connection, &self.name)?;
            let e = &existing.options;
            if options.exclusive.is_some() != e.exclusive.is_some() {
                // RabbitMQ checks exclusivity strictly, before the other properties: 405.
                return Err(existing.locked(&self.name));
            }
            let vh = &self.name;
            for (arg, got, current) in [
                ("durable", options.durable, e.durable),
                ("auto_delete", options.auto_delete, e.auto_delete),
            ] {
                if got != current {
                    return Err(inequivalent(
                        "queue",
                        arg,
                        &name,
                        vh,
                        &got.to_string(),
                        &current.to_string(),
                    ));
                }
            }
            check_queue_args(&e.arguments, &options.arguments, &name, vh)?;
            if !existing.is_saved() {
                // Its first declare is still saving it: declare-ok waits for a save that holds
                // it (saves run one at a time, each of a newer state).
                self.persisted(true)?;
                existing.mark_saved();
            }
            return Ok(answer(existing));
        }
        if quorum {
            let exclusive = options.exclusive.is_some();
            quorum::check_properties(
                options.durable,
                exclusive,
                options.auto_delete,
                &name,
                &self.name,
            )?;
        }
        if is_stream {
            stream::args::check_new(&options, &name, &self.name)?;
        }
        let replies = |m: &HashMap<ShortStr, Arc<Queue>>| {
            m.keys().filter(|k| k.starts_with(REPLY_TO)).count()
        };
        if self.limits().max_queues.is_some() {
            // Direct reply-to pseudo-queues do not count (RabbitMQ has no queue for them).
            self.check_queue_limit(&name, map.len() - replies(&map))?;
        }
        let durable = match (&self.persistence, options.durable && options.exclusive.is_none()) {
            (Some(p), true) => Some(Durable { store: p.store.clone(), id: p.queue_id() }),
            _ => None,
        };
        let is_durable = durable.is_some();
        let pager = self.persistence.as_ref().map(|p| p.store.clone());
        let q = match (is_stream, durable) {
            (true, Some(d)) => Queue::new_stream(name.clone(), options, d, self.me.clone())?,
            (true, None) => {
                return Err(AmqpError::not_implemented(
                    "stream queues need a data directory (the broker runs without one)",
                ));
            }
            (false, durable) => {
                Arc::new(Queue::with_store(name.clone(), options, durable, pager, self.me.clone()))
            }
        };
        q.apply_policy(policy::applying(&read(&self.policies), &name, Some(q.kind())));
        map.insert(name, q.clone());
        drop(map);
        if let Err(e) = self.persisted(is_durable) {
            // Not on disk: the queue goes again. Kept, it would take confirmed messages into
            // files that the next start-up deletes as an unknown queue's.
            self.remove_queue(&q);
            return Err(e);
        }
        q.mark_saved();
        Ok(answer(q))
    }

    /// Creates the private queue behind a direct reply-to consumer
    /// (`amq.rabbitmq.reply-to`): named `amq.rabbitmq.reply-to.<token>`, exclusive to the
    /// connection, deleted when its consumer goes. Replies published to that name through the
    /// default exchange reach the consumer like any queue's messages.
    pub fn declare_reply_queue(&self, connection: ConnectionId) -> Arc<Queue> {
        let token = self.generate_name();
        let name: ShortStr = format!("{REPLY_TO}.{}", &token["amq.gen-".len()..]).into();
        let options = QueueOptions {
            durable: false,
            exclusive: Some(connection),
            auto_delete: true,
            arguments: FieldTable::new(),
        };
        let q = Arc::new(Queue::new(name.clone(), options));
        write(&self.queues).insert(name, q.clone());
        q
    }

    /// queue.purge: the number of messages removed.
    pub fn purge_queue(&self, queue: &str, connection: ConnectionId) -> Result<u32> {
        let q = self.queue_for(queue, connection)?;
        if q.is_stream() {
            return Err(stream::not_supported("queue.purge", queue, &self.name));
        }
        Ok(q.purge())
    }

    /// queue.delete: the number of ready messages it held.
    pub fn delete_queue(
        &self,
        queue: &str,
        if_unused: bool,
        if_empty: bool,
        connection: ConnectionId,
    ) -> Result<u32> {
        let q = self.queue_for(queue, connection)?;
        // As RabbitMQ: a stream is deleted whatever if_unused and if_empty say.
        let (if_unused, if_empty) = (if_unused && !q.is_stream(), if_empty && !q.is_stream());
        if if_unused && q.consumer_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{queue}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && q.message_count() > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "queue '{queue}' in vhost '{}' is not empty",
                self.name
            )));
        }
        Ok(self.remove_queue(&q))
    }

    /// Deletes a queue (no checks): unbinds it everywhere and cancels its consumers.
    pub fn remove_queue(&self, q: &Arc<Queue>) -> u32 {
        {
            let mut map = write(&self.queues);
            match map.get(&q.name) {
                Some(current) if Arc::ptr_eq(current, q) => {
                    map.remove(&q.name);
                }
                _ => return 0,
            }
        }
        let n = q.delete();
        let sources: Vec<Arc<Exchange>> = read(&self.exchanges).values().cloned().collect();
        self.remove_destination_everywhere(&sources, &Destination::Queue(q.name.clone()));
        // A failed save is retried (the monitor, the next change); nobody waits on this one.
        let _ = self.persisted(q.durable.is_some());
        n
    }

    /// Deletes the exclusive queues of a connection that has gone.
    pub fn drop_exclusive_queues(&self, connection: ConnectionId) {
        let owned: Vec<Arc<Queue>> = read(&self.queues)
            .values()
            .filter(|q| q.options.exclusive == Some(connection))
            .cloned()
            .collect();
        for q in owned {
            self.remove_queue(&q);
        }
    }
}

//! One vhost: its exchanges and queues, the declare/delete/bind rules RabbitMQ applies to them
//! (with RabbitMQ's reply codes and wording), and routing a publish to queues.
//!
//! Registries are `RwLock<HashMap>`s: a lookup clones the `Arc` and drops the guard before the
//! caller does anything else, so no guard is ever held across an await or across two maps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use warren_store::definitions::{BindingDef, Definitions, ExchangeDef, PolicyDef, QueueDef};
use warren_wire::{FieldTable, FieldValue, ShortStr};

use crate::dead_letter::DeadLetterTo;
use crate::delayed::{self, Delayed};
use crate::error::{AmqpError, Result};
use crate::exchange::{Destination, Exchange, ExchangeKind, ExchangeOptions, headers};
use crate::limits::VhostLimits;
use crate::persistence::Persistence;
use crate::policy::{self, Policy};
use crate::queue::{ConnectionId, Durable, Queue, QueueArgs, QueueOptions, quorum};

/// Routes through one exchange; if its bindings give no destination at all, through its
/// alternate exchange (the `alternate-exchange` argument), as RabbitMQ's `process_alternate`:
/// the alternate joins the exchanges still to walk (each exchange is walked once, so a cycle
/// of alternates ends), and a missing alternate routes nowhere.
fn route_or_alternate(
    ex: &Exchange,
    routing_key: &str,
    headers: Option<&FieldTable>,
    scratch: &mut Vec<Destination>,
) {
    let before = scratch.len();
    ex.router().route(routing_key, headers, scratch);
    if scratch.len() == before
        && let Some(ae) = ex.alternate()
    {
        scratch.push(Destination::Exchange(ae));
    }
}

/// The pseudo-queue a client consumes from (no-ack) to receive direct replies.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

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
    let compared = if quorum::is_quorum(current) { QUORUM_QUEUE_ARGS } else { CLASSIC_QUEUE_ARGS };
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

/// A vhost.
#[derive(Debug)]
pub struct VHost {
    /// Name, e.g. `/`.
    pub name: String,
    exchanges: RwLock<HashMap<ShortStr, Arc<Exchange>>>,
    queues: RwLock<HashMap<ShortStr, Arc<Queue>>>,
    generated: AtomicU64,
    /// Set when the broker has a data dir: durable things are saved through it.
    persistence: Option<Arc<Persistence>>,
    /// This vhost, for its queues (they dead-letter through it).
    me: Weak<VHost>,
    /// Its policies, sorted by name.
    policies: RwLock<Vec<Policy>>,
    /// Serializes policy changes, each with its re-application (the last change applied is
    /// the last made).
    policy_change: std::sync::Mutex<()>,
    /// Its limits (`set_vhost_limits`).
    limits: RwLock<VhostLimits>,
    /// Client connections open on it (counted against `max-connections`).
    pub(crate) connections: AtomicU64,
}

/// What queue.declare answers.
#[derive(Debug, Clone)]
pub struct DeclaredQueue {
    /// The queue.
    pub queue: Arc<Queue>,
    /// Ready messages.
    pub message_count: u32,
    /// Consumers.
    pub consumer_count: u32,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn inequivalent(
    what: &str,
    arg: &str,
    name: &str,
    vhost: &str,
    got: &str,
    current: &str,
) -> AmqpError {
    AmqpError::precondition_failed(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{got}' but current is '{current}'"
    ))
}

impl VHost {
    /// A vhost with the default exchange and the `amq.*` exchanges.
    pub fn new(name: &str) -> Arc<Self> {
        Self::with_persistence(name, None)
    }

    /// A vhost whose durable things are saved through `persistence`.
    pub fn with_persistence(name: &str, persistence: Option<Arc<Persistence>>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self::build(name, persistence, me.clone()))
    }

    fn build(name: &str, persistence: Option<Arc<Persistence>>, me: Weak<VHost>) -> Self {
        let v = VHost {
            name: name.to_string(),
            exchanges: RwLock::default(),
            queues: RwLock::default(),
            generated: AtomicU64::new(0),
            persistence,
            me,
            policies: RwLock::default(),
            policy_change: std::sync::Mutex::default(),
            limits: RwLock::default(),
            connections: AtomicU64::new(0),
        };
        {
            let mut ex = write(&v.exchanges);
            for (n, kind) in [
                ("", ExchangeKind::Direct),
                ("amq.direct", ExchangeKind::Direct),
                ("amq.fanout", ExchangeKind::Fanout),
                ("amq.topic", ExchangeKind::Topic),
                ("amq.headers", ExchangeKind::Headers),
                ("amq.match", ExchangeKind::Headers),
            ] {
                let options = ExchangeOptions {
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::new(),
                };
                ex.insert(n.into(), Arc::new(Exchange::new(n.into(), options)));
            }
        }
        v
    }

    /// The exchange called `name`.
    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        read(&self.exchanges).get(name).cloned()
    }

    /// Every queue of the vhost.
    pub fn queue_list(&self) -> Vec<Arc<Queue>> {
        read(&self.queues).values().cloned().collect()
    }

    /// The queue called `name`.
    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        read(&self.queues).get(name).cloned()
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
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

    fn exchange_for_change(&self, name: &str) -> Result<Arc<Exchange>> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on the default exchange in vhost '{}'",
                self.name
            )));
        }
        self.exchange(name).ok_or_else(|| self.no_exchange(name))
    }

    /// exchange.declare.
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        passive: bool,
        options: ExchangeOptions,
    ) -> Result<()> {
        // As RabbitMQ: the type is checked first, then the default exchange. A delayed
        // exchange routes as its x-delayed-type.
        let delayed = kind == delayed::TYPE;
        let parsed = if delayed && !passive {
            Some(
                ExchangeKind::parse(delayed::delayed_type(&options.arguments)?)
                    .unwrap_or(ExchangeKind::Direct),
            )
        } else {
            ExchangeKind::parse(kind).or(delayed.then_some(ExchangeKind::Direct))
        };
        if !passive && parsed.is_none() {
            return Err(AmqpError::command_invalid(format!("unknown exchange type '{kind}'")));
        }
        if name.is_empty() {
            return Err(AmqpError::access_refused(format!(
                "operation not permitted on the default exchange in vhost '{}'",
                self.name
            )));
        }
        if passive {
            return self.exchange(name).map(|_| ()).ok_or_else(|| self.no_exchange(name));
        }
        let Some(parsed) = parsed else {
            return Err(AmqpError::command_invalid(format!("unknown exchange type '{kind}'")));
        };
        let options = ExchangeOptions { kind: parsed, ..options };
        let mut map = write(&self.exchanges);
        if let Some(existing) = map.get(name) {
            let e = &existing.options;
            let vh = &self.name;
            if existing.type_name() != kind {
                return Err(inequivalent("exchange", "type", name, vh, kind, existing.type_name()));
            }
            for (arg, got, current) in [
                ("durable", options.durable, e.durable),
                ("auto_delete", options.auto_delete, e.auto_delete),
                ("internal", options.internal, e.internal),
            ] {
                if got != current {
                    return Err(inequivalent(
                        "exchange",
                        arg,
                        name,
                        vh,
                        &got.to_string(),
                        &current.to_string(),
                    ));
                }
            }
            // As RabbitMQ: of the arguments only alternate-exchange must match.
            let ae = |t: &FieldTable| t.get("alternate-exchange").cloned();
            if ae(&e.arguments) != ae(&options.arguments) {
                return Err(AmqpError::precondition_failed(format!(
                    "inequivalent arg 'alternate-exchange' for exchange '{name}' in vhost '{vh}'"
                )));
            }
            return Ok(());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let durable = options.durable;
        let held = delayed.then(|| self.delayed_store(name.into(), durable, None));
        let ex = Exchange::with_delayed(name.into(), options, held);
        ex.apply_policy(policy::applying(&read(&self.policies), name, None));
        map.insert(name.into(), Arc::new(ex));
        drop(map);
        self.persisted(durable)?;
        Ok(())
    }

    /// Saves the definitions if a durable thing changed (call with no registry lock held).
    /// An error if they could not be written: the change is then not durable, and the client
    /// must not be told it is.
    fn persisted(&self, durable: bool) -> Result<()> {
        match &self.persistence {
            Some(p) if durable => p.changed(),
            _ => Ok(()),
        }
    }

    /// exchange.delete.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<()> {
        let ex = self.exchange_for_change(name)?;
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system exchange '{name}' in vhost '{}' refused",
                self.name
            )));
        }
        let as_dest = Destination::Exchange(ex.name.clone());
        let mut map = write(&self.exchanges);
        if if_unused {
            // As RabbitMQ: only bindings from this exchange count, not those to it.
            if !ex.router().is_empty() {
                return Err(AmqpError::precondition_failed(format!(
                    "exchange '{name}' in vhost '{}' in use",
                    self.name
                )));
            }
        }
        map.remove(name);
        let sources: Vec<Arc<Exchange>> = map.values().cloned().collect();
        drop(map);
        if let Some(d) = &ex.delayed {
            d.delete();
        }
        self.remove_destination_everywhere(&sources, &as_dest);
        self.persisted(ex.options.durable)?;
        Ok(())
    }

    /// Removes bindings to `dest` from `sources`, then deletes auto-delete exchanges left with
    /// no bindings.
    fn remove_destination_everywhere(&self, sources: &[Arc<Exchange>], dest: &Destination) {
        let mut emptied = Vec::new();
        for e in sources {
            let mut r = e.router_mut();
            if r.remove_destination(dest) > 0 && r.is_empty() && e.options.auto_delete {
                emptied.push(e.name.clone());
            }
        }
        for name in emptied {
            self.auto_delete_exchange(&name);
        }
    }

    fn auto_delete_exchange(&self, name: &str) {
        let mut map = write(&self.exchanges);
        let Some(e) = map.get(name).cloned() else {
            return;
        };
        if !e.router().is_empty() {
            return;
        }
        map.remove(name);
        let sources: Vec<Arc<Exchange>> = map.values().cloned().collect();
        drop(map);
        if let Some(d) = &e.delayed {
            d.delete();
        }
        self.remove_destination_everywhere(&sources, &Destination::Exchange(e.name.clone()));
        // A failed save is retried (the monitor, the next change); nobody waits on this one.
        let _ = self.persisted(e.options.durable);
    }

    /// exchange.bind (`destination` receives what `source` routes).
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        key: &str,
        args: &FieldTable,
    ) -> Result<()> {
        let dest = self.exchange_for_change(destination)?;
        let src = self.exchange_for_change(source)?;
        if src.options.kind == ExchangeKind::Headers {
            headers::validate_x_match(args).map_err(AmqpError::precondition_failed)?;
        }
        let added = src.router_mut().bind(&Destination::Exchange(dest.name.clone()), key, args);
        self.persisted(added && src.options.durable && dest.options.durable)?;
        Ok(())
    }

    /// exchange.unbind.
    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        key: &str,
        args: &FieldTable,
    ) -> Result<()> {
        if destination.is_empty() || source.is_empty() {
            self.exchange_for_change("")?;
        }
        // As RabbitMQ: unbinding from or to something that does not exist is a success.
        let (Some(dest), Some(src)) = (self.exchange(destination), self.exchange(source)) else {
            return Ok(());
        };
        let emptied = {
            let mut r = src.router_mut();
            r.unbind(&Destination::Exchange(dest.name.clone()), key, args) && r.is_empty()
        };
        if emptied && src.options.auto_delete {
            self.auto_delete_exchange(source);
        }
        self.persisted(src.options.durable && dest.options.durable)?;
        Ok(())
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
        let answer = |q: Arc<Queue>| {
            // A declare of any kind refreshes x-expires (RabbitMQ's `stat`).
            q.touch();
            DeclaredQueue {
                message_count: q.message_count(),
                consumer_count: q.consumer_count(),
                queue: q,
            }
        };
        if passive {
            return self.queue_for(name, connection).map(answer);
        }
        let quorum = quorum::is_quorum(&options.arguments);
        if let Some(t) = options.arguments.get("x-queue-type")
            && t.as_str() != Some("classic")
            && !quorum
        {
            let shown =
                t.as_str().map_or_else(|| "(not a string)".to_string(), |s| format!("'{s}'"));
            return Err(AmqpError::not_implemented(format!(
                "queue type {shown}: only classic and quorum queues are implemented by warren"
            )));
        }
        if quorum {
            quorum::check_args(&options.arguments, name, &self.name)?;
        }
        DeadLetterTo::parse(&options.arguments, name, &self.name)?;
        QueueArgs::parse(&options.arguments, name, &self.name)?;
        // As RabbitMQ: every client-chosen amq.* name is refused, server-generated ones too.
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let name: ShortStr = if name.is_empty() { self.generate_name() } else { name.into() };
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
        let q = Arc::new(Queue::with_store(name.clone(), options, durable, pager, self.me.clone()));
        q.apply_policy(policy::applying(&read(&self.policies), &name, Some(q.args.quorum)));
        map.insert(name, q.clone());
        drop(map);
        self.persisted(is_durable)?;
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

    /// queue.bind.
    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &FieldTable,
        connection: ConnectionId,
    ) -> Result<()> {
        let q = self.queue_for(queue, connection)?;
        let ex = self.exchange_for_change(exchange)?;
        if ex.options.kind == ExchangeKind::Headers {
            headers::validate_x_match(args).map_err(AmqpError::precondition_failed)?;
        }
        let added = ex.router_mut().bind(&Destination::Queue(q.name.clone()), key, args);
        self.persisted(added && ex.options.durable && q.durable.is_some())?;
        Ok(())
    }

    /// queue.unbind.
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &FieldTable,
        connection: ConnectionId,
    ) -> Result<()> {
        // As RabbitMQ: unbinding from or to something that does not exist is a success.
        if exchange.is_empty() {
            self.exchange_for_change(exchange)?;
        }
        let Some(q) = self.queue(queue) else { return Ok(()) };
        q.check_access(connection, &self.name)?;
        let Some(ex) = self.exchange(exchange) else { return Ok(()) };
        let emptied = {
            let mut r = ex.router_mut();
            r.unbind(&Destination::Queue(q.name.clone()), key, args) && r.is_empty()
        };
        if emptied && ex.options.auto_delete {
            self.auto_delete_exchange(exchange);
        }
        self.persisted(ex.options.durable && q.durable.is_some())?;
        Ok(())
    }

    /// queue.purge: the number of messages removed.
    pub fn purge_queue(&self, queue: &str, connection: ConnectionId) -> Result<u32> {
        Ok(self.queue_for(queue, connection)?.purge())
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

    /// The delay store of a new (or recovered: `store_id`) delayed exchange: in the store if
    /// the exchange is durable and the broker has one.
    fn delayed_store(&self, name: ShortStr, durable: bool, store_id: Option<u64>) -> Arc<Delayed> {
        let durable = match (&self.persistence, durable) {
            (Some(p), true) => Some(Durable {
                store: p.store.clone(),
                id: store_id.unwrap_or_else(|| p.queue_id()),
            }),
            _ => None,
        };
        Arc::new(Delayed::new(name, self.me.clone(), durable))
    }

    /// The held messages of every delayed exchange.
    pub fn delayed_exchanges(&self) -> Vec<Arc<Delayed>> {
        read(&self.exchanges).values().filter_map(|e| e.delayed.clone()).collect()
    }

    /// Adds a durable exchange from the definitions (at start-up), a delayed one with the
    /// messages it held.
    pub(crate) fn restore_exchange(
        &self,
        def: &ExchangeDef,
        recovered: &mut std::collections::HashMap<u64, warren_store::RecoveredQueue>,
    ) {
        let delayed = def.kind == delayed::TYPE;
        let kind_name = if delayed {
            def.arguments.get("x-delayed-type").and_then(FieldValue::as_str).unwrap_or_default()
        } else {
            &def.kind
        };
        let Some(kind) = ExchangeKind::parse(kind_name) else {
            tracing::warn!(exchange = %def.name, "skipping exchange of unknown type {}", def.kind);
            return;
        };
        let options = ExchangeOptions {
            kind,
            durable: true,
            auto_delete: def.auto_delete,
            internal: def.internal,
            arguments: def.arguments.clone(),
        };
        let name: ShortStr = def.name.as_str().into();
        let held = delayed.then(|| {
            let d = self.delayed_store(name.clone(), true, def.store_id);
            if let Some(id) = def.store_id {
                d.recover(recovered.remove(&id).unwrap_or_default());
            }
            d
        });
        let ex = Exchange::with_delayed(name.clone(), options, held);
        ex.apply_policy(policy::applying(&read(&self.policies), &name, None));
        write(&self.exchanges).insert(name, Arc::new(ex));
    }

    /// Adds a policy from the definitions (at start-up, before exchanges and queues).
    pub(crate) fn restore_policy(&self, def: &PolicyDef) {
        let made = policy::ApplyTo::parse(&def.apply_to).and_then(|apply_to| {
            Policy::new(&def.name, &def.pattern, apply_to, def.priority, def.definition.clone())
        });
        match made {
            Ok(p) => self.insert_policy(p),
            Err(e) => tracing::warn!(policy = %def.name, "skipping policy: {}", e.text),
        }
    }

    fn insert_policy(&self, p: Policy) {
        let mut ps = write(&self.policies);
        match ps.binary_search_by(|x| x.name.as_str().cmp(&p.name)) {
            Ok(i) => ps[i] = p,
            Err(i) => ps.insert(i, p),
        }
    }

    /// Sets (adds or replaces) a policy: it applies at once to every queue and exchange of the
    /// vhost, and is durable.
    pub fn set_policy(&self, p: Policy) -> Result<()> {
        let _one_at_a_time = self.policy_change.lock().unwrap_or_else(|p| p.into_inner());
        self.insert_policy(p);
        self.reapply_policies();
        self.persisted(true)
    }

    /// Clears a policy; 404 if there is none of that name.
    pub fn clear_policy(&self, name: &str) -> Result<()> {
        let _one_at_a_time = self.policy_change.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut ps = write(&self.policies);
            let Ok(i) = ps.binary_search_by(|x| x.name.as_str().cmp(name)) else {
                return Err(AmqpError::not_found(format!(
                    "Parameter does not exist: policy '{name}' in vhost '{}'",
                    self.name
                )));
            };
            ps.remove(i);
        }
        self.reapply_policies();
        self.persisted(true)
    }

    /// Its limits.
    pub fn limits(&self) -> VhostLimits {
        *read(&self.limits)
    }

    /// Sets its limits (durable); existing connections and queues beyond them stay, as with
    /// RabbitMQ.
    pub fn set_limits(&self, limits: VhostLimits) -> Result<()> {
        *write(&self.limits) = limits;
        self.persisted(true)
    }

    /// Sets limits from the definitions (at start-up).
    pub(crate) fn restore_limits(&self, limits: VhostLimits) {
        *write(&self.limits) = limits;
    }

    /// The policies, by name.
    pub fn policies(&self) -> Vec<Policy> {
        read(&self.policies).clone()
    }

    /// Applies to every queue and exchange the policy that now applies to it.
    fn reapply_policies(&self) {
        let policies = self.policies();
        for q in self.queue_list() {
            q.apply_policy(policy::applying(&policies, &q.name, Some(q.args.quorum)));
            if let Some(me) = self.me.upgrade() {
                me.watch_expiry(&q);
            }
        }
        let exchanges: Vec<Arc<Exchange>> = read(&self.exchanges).values().cloned().collect();
        for e in exchanges {
            e.apply_policy(policy::applying(&policies, &e.name, None));
        }
    }

    /// Adds a durable queue and its recovered messages (at start-up).
    pub(crate) fn restore_queue(&self, def: &QueueDef, messages: warren_store::RecoveredQueue) {
        let Some(p) = &self.persistence else { return };
        let options = QueueOptions {
            durable: true,
            exclusive: None,
            auto_delete: def.auto_delete,
            arguments: def.arguments.clone(),
        };
        let durable = Durable { store: p.store.clone(), id: def.id };
        let name: ShortStr = def.name.as_str().into();
        let q = Arc::new(Queue::with_store(
            name.clone(),
            options,
            Some(durable),
            None,
            self.me.clone(),
        ));
        q.apply_policy(policy::applying(&read(&self.policies), &name, Some(q.args.quorum)));
        q.recover(messages);
        write(&self.queues).insert(name, q);
    }

    /// Adds a durable binding (at start-up).
    pub(crate) fn restore_binding(&self, def: &BindingDef) {
        let Some(src) = self.exchange(&def.source) else { return };
        let dest = if def.to_queue {
            Destination::Queue(def.destination.as_str().into())
        } else {
            Destination::Exchange(def.destination.as_str().into())
        };
        src.router_mut().bind(&dest, &def.routing_key, &def.arguments);
    }

    /// This vhost's durable exchanges, queues and bindings, for the definitions snapshot.
    pub(crate) fn durable_definitions(&self, defs: &mut Definitions) {
        let exchanges: Vec<Arc<Exchange>> = read(&self.exchanges).values().cloned().collect();
        let queues = read(&self.queues);
        let durable_queue = |name: &str| queues.get(name).is_some_and(|q| q.durable.is_some());
        let durable_exchange =
            |name: &str| exchanges.iter().any(|e| &*e.name == name && e.options.durable);
        for e in &exchanges {
            if e.options.durable && !e.is_builtin() {
                defs.exchanges.push(ExchangeDef {
                    vhost: self.name.clone(),
                    name: e.name.to_string(),
                    kind: e.type_name().to_string(),
                    store_id: e.delayed.as_ref().and_then(|d| d.durable.as_ref()).map(|d| d.id),
                    auto_delete: e.options.auto_delete,
                    internal: e.options.internal,
                    arguments: e.options.arguments.clone(),
                });
            }
            if !e.options.durable {
                continue;
            }
            for (dest, key, args) in e.router().list() {
                let (destination, to_queue) = match dest {
                    Destination::Queue(q) if durable_queue(q) => (q.to_string(), true),
                    Destination::Exchange(x) if durable_exchange(x) => (x.to_string(), false),
                    _ => continue,
                };
                defs.bindings.push(BindingDef {
                    vhost: self.name.clone(),
                    source: e.name.to_string(),
                    destination,
                    to_queue,
                    routing_key: key.clone(),
                    arguments: args.clone(),
                });
            }
        }
        let limits = self.limits();
        if limits != VhostLimits::default() {
            defs.vhost_limits.push((self.name.clone(), limits.to_table()));
        }
        for p in read(&self.policies).iter() {
            defs.policies.push(PolicyDef {
                vhost: self.name.clone(),
                name: p.name.clone(),
                pattern: p.pattern.clone(),
                apply_to: p.apply_to.as_str().to_string(),
                priority: p.priority,
                definition: p.definition.clone(),
            });
        }
        for q in queues.values() {
            if let Some(d) = &q.durable {
                defs.queues.push(QueueDef {
                    vhost: self.name.clone(),
                    name: q.name.to_string(),
                    id: d.id,
                    auto_delete: q.options.auto_delete,
                    arguments: q.options.arguments.clone(),
                });
            }
        }
    }

    /// Routes a publish: appends to `out` each queue the message goes to (once each), following
    /// exchange-to-exchange bindings. `scratch` is reused between calls to avoid allocating.
    /// A message an `x-delayed-message` exchange must hold is not routed: its delay store and
    /// the delay are returned instead.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        scratch: &mut Vec<Destination>,
        out: &mut Vec<Arc<Queue>>,
    ) -> Result<Option<(Arc<Delayed>, u64)>> {
        out.clear();
        if exchange.is_empty() {
            if let Some(q) = self.queue(routing_key) {
                out.push(q);
            }
            return Ok(None);
        }
        scratch.clear();
        let exchanges = read(&self.exchanges);
        let ex = exchanges.get(exchange).ok_or_else(|| self.no_exchange(exchange))?;
        if ex.options.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        if let Some(d) = &ex.delayed
            && let Some(delay) = delayed::delay_of(headers)
        {
            return Ok(Some((d.clone(), delay)));
        }
        route_or_alternate(ex, routing_key, headers, scratch);
        let mut visited: Vec<&str> = Vec::new();
        visited.push(exchange);
        let mut i = 0;
        while i < scratch.len() {
            if let Destination::Exchange(name) = &scratch[i] {
                let name = name.clone();
                if !visited.contains(&&*name)
                    && let Some((key, e)) = exchanges.get_key_value(&name)
                {
                    visited.push(key);
                    route_or_alternate(e, routing_key, headers, scratch);
                }
            }
            i += 1;
        }
        drop(exchanges);
        let queues = read(&self.queues);
        for d in scratch.iter() {
            if let Destination::Queue(name) = d
                && let Some(q) = queues.get(name)
                && !out.iter().any(|o| Arc::ptr_eq(o, q))
            {
                out.push(q.clone());
            }
        }
        Ok(None)
    }
}

//! One vhost: its exchanges and queues, the declare/delete/bind rules RabbitMQ applies to them
//! (with RabbitMQ's reply codes and wording), and routing a publish to queues.
//!
//! Registries are `RwLock<HashMap>`s: a lookup clones the `Arc` and drops the guard before the
//! caller does anything else, so no guard is ever held across an await or across two maps.

mod bindings;
mod exchanges;
mod policies;
mod queues;
mod restore;
mod routing;

pub use bindings::BindingInfo;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use warren_wire::{FieldTable, ShortStr};

use crate::error::{AmqpError, Result};
use crate::exchange::{Exchange, ExchangeKind, ExchangeOptions};
use crate::limits::VhostLimits;
use crate::persistence::Persistence;
use crate::policy::Policy;
use crate::queue::Queue;

/// The pseudo-queue a client consumes from (no-ack) to receive direct replies.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

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

    /// Saves the definitions if a durable thing changed (call with no registry lock held).
    /// An error if they could not be written: the change is then not durable, and the client
    /// must not be told it is.
    fn persisted(&self, durable: bool) -> Result<()> {
        match &self.persistence {
            Some(p) if durable => p.changed(),
            _ => Ok(()),
        }
    }

    /// Counts a change to durable things about to be made (none for others or without a
    /// store); hold it until the change is saved.
    fn begin_change(&self, durable: bool) -> Option<crate::persistence::InFlight> {
        self.persistence.as_ref().filter(|_| durable).map(|p| p.begin())
    }

    /// Whether a durable thing found already there (a redeclare, a repeated bind) may still be
    /// on its way to disk from another change: then declare-ok waits for a save.
    fn others_in_flight(&self) -> bool {
        self.persistence.as_ref().is_some_and(|p| p.others_in_flight())
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
}

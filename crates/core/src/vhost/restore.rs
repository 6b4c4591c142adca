//! Durable definitions: restoring exchanges, queues, bindings, policies and limits at
//! start-up, and collecting them for the definitions snapshot.

use std::sync::Arc;

use warren_store::definitions::{BindingDef, Definitions, ExchangeDef, PolicyDef, QueueDef};
use warren_wire::{FieldValue, ShortStr};

use super::{VHost, read, write};
use crate::delayed;
use crate::exchange::{Destination, Exchange, ExchangeKind, ExchangeOptions};
use crate::limits::VhostLimits;
use crate::policy::{self, Policy};
use crate::queue::{Durable, Queue, QueueOptions};

impl VHost {
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

    /// Sets limits from the definitions (at start-up).
    pub(crate) fn restore_limits(&self, limits: VhostLimits) {
        *write(&self.limits) = limits;
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
        if crate::stream::args::is_stream(&options.arguments) {
            match Queue::new_stream(name.clone(), options, durable, self.me.clone()) {
                Ok(q) => {
                    q.apply_policy(policy::applying(&read(&self.policies), &name, Some(q.kind())));
                    q.mark_saved();
                    write(&self.queues).insert(name, q);
                }
                // Its files are kept for the next start: better than losing the stream.
                Err(e) => tracing::error!("stream '{name}' could not be opened: {}", e.text),
            }
            return;
        }
        let q = Arc::new(Queue::with_store(
            name.clone(),
            options,
            Some(durable),
            None,
            self.me.clone(),
        ));
        q.apply_policy(policy::applying(&read(&self.policies), &name, Some(q.kind())));
        q.mark_saved();
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
}

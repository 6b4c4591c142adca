//! Exchanges: lookup, exchange.declare and exchange.delete with RabbitMQ's checks, auto-delete
//! once the last binding goes, and the delay stores of `x-delayed-message` exchanges.

use std::sync::Arc;

use warren_wire::{FieldTable, ShortStr};

use super::{VHost, inequivalent, read, write};
use crate::delayed::{self, Delayed};
use crate::error::{AmqpError, Result};
use crate::exchange::{Destination, Exchange, ExchangeKind, ExchangeOptions};
use crate::policy;
use crate::queue::Durable;

impl VHost {
    /// The exchange called `name`.
    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        read(&self.exchanges).get(name).cloned()
    }

    /// Every exchange, the default one (named "") included, by name.
    pub fn exchange_list(&self) -> Vec<Arc<Exchange>> {
        let mut all: Vec<_> = read(&self.exchanges).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub(super) fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    pub(super) fn exchange_for_change(&self, name: &str) -> Result<Arc<Exchange>> {
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
        // Counted before the map is looked at: a redeclare that finds it knows it may not be
        // saved yet.
        let _change = self.begin_change(options.durable);
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
            let durable = e.durable;
            drop(map);
            // It may be another declare's, still being saved: declare-ok waits for a save.
            return self.persisted(durable && self.others_in_flight());
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
    pub(super) fn remove_destination_everywhere(
        &self,
        sources: &[Arc<Exchange>],
        dest: &Destination,
    ) {
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

    pub(super) fn auto_delete_exchange(&self, name: &str) {
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

    /// The delay store of a new (or recovered: `store_id`) delayed exchange: in the store if
    /// the exchange is durable and the broker has one.
    pub(super) fn delayed_store(
        &self,
        name: ShortStr,
        durable: bool,
        store_id: Option<u64>,
    ) -> Arc<Delayed> {
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
}

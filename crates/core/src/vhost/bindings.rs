//! Bindings: exchange.bind, exchange.unbind, queue.bind and queue.unbind.

use warren_wire::FieldTable;

use super::VHost;
use crate::error::{AmqpError, Result};
use crate::exchange::{Destination, ExchangeKind, headers};
use crate::queue::ConnectionId;

impl VHost {
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
        let to = Destination::Exchange(dest.name.clone());
        self.bind(src.options.durable && dest.options.durable, || {
            src.router_mut().bind(&to, key, args)
        })
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
        let to = Destination::Queue(q.name.clone());
        self.bind(ex.options.durable && q.durable.is_some(), || {
            ex.router_mut().bind(&to, key, args)
        })
    }

    /// Adds a binding (`bind` says whether it is new) and saves it if `durable`: counted as a
    /// change in flight from before it is visible, and saved again when it was already there
    /// but may be another bind's, still being saved.
    fn bind(&self, durable: bool, bind: impl FnOnce() -> bool) -> Result<()> {
        let _change = self.begin_change(durable);
        let added = bind();
        self.persisted(durable && (added || self.others_in_flight()))
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

    /// Every binding, as the management API lists them: first the default exchange's implicit
    /// one to each queue (its name as the key), then each exchange's, by source name.
    pub fn binding_list(&self) -> Vec<BindingInfo> {
        let mut out: Vec<BindingInfo> = self
            .queue_list()
            .into_iter()
            .map(|q| BindingInfo {
                source: String::new(),
                destination: q.name.to_string(),
                to_queue: true,
                routing_key: q.name.to_string(),
                arguments: FieldTable::new(),
            })
            .collect();
        out.sort_by(|a, b| a.destination.cmp(&b.destination));
        for x in self.exchange_list() {
            if x.name.is_empty() {
                continue;
            }
            for (dest, key, args) in x.router().list() {
                let (destination, to_queue) = match dest {
                    Destination::Queue(q) => (q.to_string(), true),
                    Destination::Exchange(e) => (e.to_string(), false),
                };
                out.push(BindingInfo {
                    source: x.name.to_string(),
                    destination,
                    to_queue,
                    routing_key: key.clone(),
                    arguments: args.clone(),
                });
            }
        }
        out
    }
}

/// One binding, as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingInfo {
    /// Source exchange ("" for the default exchange).
    pub source: String,
    /// Destination queue or exchange.
    pub destination: String,
    /// Whether the destination is a queue.
    pub to_queue: bool,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

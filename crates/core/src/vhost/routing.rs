//! Routing a publish to queues: through exchange-to-exchange bindings and alternate
//! exchanges, or held by an `x-delayed-message` exchange.

use std::sync::Arc;

use warren_wire::FieldTable;

use super::{VHost, read};
use crate::delayed::{self, Delayed};
use crate::error::{AmqpError, Result};
use crate::exchange::{Destination, Exchange};
use crate::queue::Queue;

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

impl VHost {
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

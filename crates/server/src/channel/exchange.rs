//! The exchange class: declare, delete, bind and unbind (exchange to exchange).

use warren_core::AmqpError;
use warren_core::exchange::{ExchangeKind, ExchangeOptions};
use warren_core::users::{Kind, Perm};
use warren_wire::method::{
    ExchangeBind, ExchangeBindOk, ExchangeDeclare, ExchangeDeclareOk, ExchangeDelete,
    ExchangeDeleteOk, ExchangeUnbind, ExchangeUnbindOk,
};

use super::{Channel, Ctx};

/// What RabbitMQ checks for exchange.bind and unbind: write on the destination, then read
/// on the source (the default exchange is refused by the bind itself).
fn check_bind(ctx: &mut Ctx<'_>, destination: &str, source: &str) -> Result<(), AmqpError> {
    if !destination.is_empty() {
        ctx.access.check(Perm::Write, Kind::Exchange, destination)?;
    }
    if !source.is_empty() {
        ctx.access.check(Perm::Read, Kind::Exchange, source)?;
    }
    Ok(())
}

impl Channel {
    pub(super) fn exchange_declare(
        &mut self,
        m: ExchangeDeclare,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        let options = ExchangeOptions {
            // Replaced by the parsed type; Direct is only a placeholder for passive declares.
            kind: ExchangeKind::parse(&m.kind).unwrap_or(ExchangeKind::Direct),
            durable: m.durable,
            auto_delete: m.auto_delete,
            internal: m.internal,
            arguments: m.arguments,
        };
        // As RabbitMQ: a passive declare needs no permission; the default exchange and
        // reserved names are refused by the declare itself.
        if !m.passive && !m.exchange.is_empty() {
            ctx.access.check(Perm::Configure, Kind::Exchange, &m.exchange)?;
            if let Some(ae) = options.arguments.get("alternate-exchange").and_then(|v| v.as_str())
                && ctx.vhost.exchange(&m.exchange).is_none()
            {
                ctx.access.check(Perm::Read, Kind::Exchange, &m.exchange)?;
                ctx.access.check(Perm::Write, Kind::Exchange, ae)?;
            }
        }
        ctx.vhost.declare_exchange(&m.exchange, &m.kind, m.passive, options)?;
        if m.nowait { Ok(()) } else { ctx.send(self.id, ExchangeDeclareOk {}) }
    }

    pub(super) fn exchange_delete(
        &mut self,
        m: ExchangeDelete,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        if !m.exchange.is_empty() && !m.exchange.starts_with("amq.") {
            ctx.access.check(Perm::Configure, Kind::Exchange, &m.exchange)?;
        }
        match ctx.vhost.delete_exchange(&m.exchange, m.if_unused) {
            // RabbitMQ answers delete-ok for an exchange that does not exist.
            Err(e) if e.code == 404 => {}
            other => other?,
        }
        if m.nowait { Ok(()) } else { ctx.send(self.id, ExchangeDeleteOk {}) }
    }

    pub(super) fn exchange_bind(
        &mut self,
        m: ExchangeBind,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        check_bind(ctx, &m.destination, &m.source)?;
        ctx.vhost.bind_exchange(&m.destination, &m.source, &m.routing_key, &m.arguments)?;
        if m.nowait { Ok(()) } else { ctx.send(self.id, ExchangeBindOk {}) }
    }

    pub(super) fn exchange_unbind(
        &mut self,
        m: ExchangeUnbind,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        check_bind(ctx, &m.destination, &m.source)?;
        ctx.vhost.unbind_exchange(&m.destination, &m.source, &m.routing_key, &m.arguments)?;
        if m.nowait { Ok(()) } else { ctx.send(self.id, ExchangeUnbindOk {}) }
    }
}

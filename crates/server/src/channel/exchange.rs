//! The exchange class: declare, delete, bind and unbind (exchange to exchange).

use warren_core::AmqpError;
use warren_core::exchange::{ExchangeKind, ExchangeOptions};
use warren_wire::method::{
    ExchangeBind, ExchangeBindOk, ExchangeDeclare, ExchangeDeclareOk, ExchangeDelete,
    ExchangeDeleteOk, ExchangeUnbind, ExchangeUnbindOk,
};

use super::{Channel, Ctx};

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
        ctx.vhost.declare_exchange(&m.exchange, &m.kind, m.passive, options)?;
        if m.nowait { Ok(()) } else { ctx.send(self.id, ExchangeDeclareOk {}) }
    }

    pub(super) fn exchange_delete(
        &mut self,
        m: ExchangeDelete,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
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
        ctx.vhost.bind_exchange(&m.destination, &m.source, &m.routing_key, &m.arguments)?;
        if m.nowait { Ok(()) } else { ctx.send(self.id, ExchangeBindOk {}) }
    }

    pub(super) fn exchange_unbind(
        &mut self,
        m: ExchangeUnbind,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        ctx.vhost.unbind_exchange(&m.destination, &m.source, &m.routing_key, &m.arguments)?;
        if m.nowait { Ok(()) } else { ctx.send(self.id, ExchangeUnbindOk {}) }
    }
}

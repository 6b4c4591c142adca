//! The queue class: declare, bind, unbind, purge and delete.

use warren_core::users::{Kind, Perm};
use warren_core::{AmqpError, QueueOptions};
use warren_wire::method::{
    QueueBind, QueueBindOk, QueueDeclare, QueueDeclareOk, QueueDelete, QueueDeleteOk, QueuePurge,
    QueuePurgeOk, QueueUnbind, QueueUnbindOk,
};

use super::{Channel, Ctx};

/// What RabbitMQ checks for queue.bind and unbind: write on the queue, then read on the
/// exchange (the default exchange is refused later, as binding to it at all is).
fn check_bind(ctx: &mut Ctx<'_>, queue: &str, exchange: &str) -> Result<(), AmqpError> {
    ctx.access.check(Perm::Write, Kind::Queue, queue)?;
    if !exchange.is_empty() {
        ctx.access.check(Perm::Read, Kind::Exchange, exchange)?;
    }
    Ok(())
}

impl Channel {
    pub(super) fn queue_declare(
        &mut self,
        m: QueueDeclare,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        // As RabbitMQ, no "last queue" shortcut here: a passive declare of "" is a 404.
        let name = m.queue.clone();
        if m.passive && *name == *warren_core::vhost::REPLY_TO {
            // As RabbitMQ: the direct reply-to pseudo-queue always "exists".
            let ok = QueueDeclareOk { queue: name, message_count: 0, consumer_count: 0 };
            return if m.nowait { Ok(()) } else { ctx.send(self.id, ok) };
        }
        let options = QueueOptions {
            durable: m.durable,
            exclusive: m.exclusive.then_some(ctx.connection),
            auto_delete: m.auto_delete,
            arguments: m.arguments,
        };
        let declared = ctx.vhost.declare_queue_as(
            Some(&mut *ctx.access),
            &name,
            m.passive,
            options,
            ctx.connection,
        )?;
        ctx.vhost.watch_expiry(&declared.queue);
        self.last_queue = Some(declared.queue.name.clone());
        if m.nowait {
            return Ok(());
        }
        ctx.send(
            self.id,
            QueueDeclareOk {
                queue: declared.queue.name.clone(),
                message_count: declared.message_count,
                consumer_count: declared.consumer_count,
            },
        )
    }

    pub(super) fn queue_bind(&mut self, m: QueueBind, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let queue = self.queue_name(&m.queue)?;
        // As RabbitMQ: an empty queue name and key bind with the last queue's name as the key.
        let key =
            if m.queue.is_empty() && m.routing_key.is_empty() { &queue } else { &m.routing_key };
        check_bind(ctx, &queue, &m.exchange)?;
        ctx.vhost.bind_queue(&queue, &m.exchange, key, &m.arguments, ctx.connection)?;
        if m.nowait { Ok(()) } else { ctx.send(self.id, QueueBindOk {}) }
    }

    pub(super) fn queue_unbind(
        &mut self,
        m: QueueUnbind,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        let queue = self.queue_name(&m.queue)?;
        let key =
            if m.queue.is_empty() && m.routing_key.is_empty() { &queue } else { &m.routing_key };
        check_bind(ctx, &queue, &m.exchange)?;
        ctx.vhost.unbind_queue(&queue, &m.exchange, key, &m.arguments, ctx.connection)?;
        ctx.send(self.id, QueueUnbindOk {})
    }

    pub(super) fn queue_purge(
        &mut self,
        m: QueuePurge,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        let queue = self.queue_name(&m.queue)?;
        ctx.access.check(Perm::Read, Kind::Queue, &queue)?;
        let message_count = ctx.vhost.purge_queue(&queue, ctx.connection)?;
        if m.nowait { Ok(()) } else { ctx.send(self.id, QueuePurgeOk { message_count }) }
    }

    pub(super) fn queue_delete(
        &mut self,
        m: QueueDelete,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        let queue = self.queue_name(&m.queue)?;
        ctx.access.check(Perm::Configure, Kind::Queue, &queue)?;
        let message_count =
            match ctx.vhost.delete_queue(&queue, m.if_unused, m.if_empty, ctx.connection) {
                // RabbitMQ answers delete-ok with 0 for a queue that does not exist.
                Err(e) if e.code == 404 => 0,
                other => other?,
            };
        // Consumers, this channel's included, hear of it through basic.cancel events.
        if m.nowait { Ok(()) } else { ctx.send(self.id, QueueDeleteOk { message_count }) }
    }
}

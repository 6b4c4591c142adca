//! The basic class, publishing and consuming side: qos, consume, cancel, publish (routing,
//! mandatory returns, confirms), get and recover. Acks live in `ack.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use warren_core::publish::Routed;
use warren_core::users::{Kind, Perm};
use warren_core::vhost::REPLY_TO;
use warren_core::{AmqpError, Consumer, ConsumerSpec, Message};
use warren_wire::method::{
    BasicCancel, BasicCancelOk, BasicConsume, BasicConsumeOk, BasicGet, BasicGetEmpty, BasicGetOk,
    BasicPublish, BasicQos, BasicQosOk, BasicRecoverOk, BasicReturn,
};
use warren_wire::{Method, ShortStr, constants::reply, encode_content_raw};

use super::content::Published;
use super::{Channel, Ctx, Source, Subscription, TxPublish, Unacked};

/// Checks what RabbitMQ checks of a publish's properties: user_id must be the authenticated
/// user's (unless it is tagged `impersonator`), expiration a non-negative integer
/// (milliseconds).
fn check_properties(
    p: &warren_wire::BasicProperties,
    access: &mut warren_core::users::Access,
) -> Result<(), AmqpError> {
    if let Some(id) = &p.user_id
        && **id != *access.user()
        && !access.impersonator()
    {
        let user = access.user();
        return Err(AmqpError::precondition_failed(format!(
            "user_id property set to '{id}' but authenticated user was '{user}'"
        )));
    }
    if let Some(e) = &p.expiration {
        let problem = match e.parse::<i64>() {
            Ok(v) if v < 0 => Some(format!("{{value_negative,{v}}}")),
            Ok(_) => None,
            Err(_) => Some("{error,no_integer}".to_string()),
        };
        if let Some(problem) = problem {
            return Err(AmqpError::precondition_failed(format!(
                "invalid expiration '{e}': {problem}"
            )));
        }
    }
    Ok(())
}

/// Reads `x-priority` from consume arguments (any integer type, as RabbitMQ).
fn consumer_priority(args: &warren_wire::FieldTable) -> Result<i32, AmqpError> {
    match args.get("x-priority") {
        None => Ok(0),
        Some(v) => v.as_i64().and_then(|p| i32::try_from(p).ok()).ok_or_else(|| {
            AmqpError::precondition_failed(format!("invalid arg 'x-priority' for consumer: {v:?}"))
        }),
    }
}

impl Channel {
    pub(super) fn qos(&mut self, m: BasicQos, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        if m.prefetch_size != 0 {
            return Err(AmqpError::not_implemented(format!(
                "prefetch_size!=0 ({})",
                m.prefetch_size
            )));
        }
        if m.global {
            self.limit.prefetch.store(m.prefetch_count.into(), Ordering::Release);
            // A larger window may let every queue this channel consumes from deliver more.
            for sub in self.consumers.values() {
                ctx.redispatch(&sub.queue);
            }
        } else {
            self.consumer_prefetch = m.prefetch_count.into();
        }
        ctx.send(self.id, BasicQosOk {})
    }

    pub(super) fn consume(&mut self, m: BasicConsume, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let queue_name = self.queue_name(&m.queue)?;
        let tag: ShortStr = if m.consumer_tag.is_empty() {
            let t = format!("amq.ctag-{}-{}-{}", ctx.connection, self.id, self.next_ctag);
            self.next_ctag += 1;
            t.into()
        } else {
            m.consumer_tag.clone()
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!("attempt to reuse consumer tag '{tag}'")));
        }
        warren_core::usage::check_consumer_count(
            ctx.config.consumer_max_per_channel(),
            self.consumers.len(),
        )?;
        let queue = if *queue_name == *REPLY_TO {
            if !m.no_ack {
                return Err(AmqpError::precondition_failed("reply consumer cannot acknowledge"));
            }
            if self.reply_queue.is_some() {
                return Err(AmqpError::precondition_failed("reply consumer already set"));
            }
            let q = ctx.vhost.declare_reply_queue(ctx.connection);
            self.reply_queue = Some(q.name.clone());
            q
        } else {
            ctx.access.check(Perm::Read, Kind::Queue, &queue_name)?;
            ctx.vhost.queue_for(&queue_name, ctx.connection)?
        };
        let vhost = &ctx.vhost.name;
        let global_qos = self.limit.prefetch.load(Ordering::Acquire) > 0;
        let read_spec = if queue.is_stream() {
            // RabbitMQ's order: arguments, then the prefetch, no-ack and global qos.
            let spec = warren_core::stream::args::read_spec(&m.arguments, &queue_name, vhost)?;
            if self.consumer_prefetch == 0 {
                return Err(AmqpError::precondition_failed(format!(
                    "consumer prefetch count is not set for 'queue '{queue_name}' in vhost \
                     '{vhost}''"
                )));
            }
            if m.no_ack {
                return Err(AmqpError::not_implemented(format!(
                    "automatic acknowledgement not supported by stream queues queue \
                     '{queue_name}' in vhost '{vhost}'"
                )));
            }
            Some(spec)
        } else {
            if m.arguments.get("x-stream-offset").is_some() {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg 'x-stream-offset' for queue '{queue_name}' in vhost '{vhost}' of \
                     queue type {}",
                    queue.type_module()
                )));
            }
            None
        };
        let priority = consumer_priority(&m.arguments)?;
        if (queue.args.quorum || queue.is_stream()) && global_qos {
            return Err(AmqpError::not_implemented(format!(
                "queue '{queue_name}' in vhost '{vhost}' does not support global qos"
            )));
        }
        let spec = ConsumerSpec {
            tag: tag.clone(),
            channel: self.id,
            connection: ctx.connection,
            no_ack: m.no_ack,
            exclusive: m.exclusive,
            prefetch: self.consumer_prefetch,
            priority,
        };
        // A stream consumer's credit is its own prefetch: a global qos set later does not
        // bound it (as RabbitMQ, whose streams ignore the channel's limiter).
        let limit = if queue.is_stream() {
            Arc::new(warren_core::queue::ChannelLimit::default())
        } else {
            self.limit.clone()
        };
        let consumer = Arc::new(Consumer::new(
            spec,
            queue.clone(),
            limit,
            ctx.events.clone(),
            ctx.lag.clone(),
        ));
        let added = match read_spec {
            Some(spec) => queue.add_reader(consumer.clone(), spec),
            None => queue.add_consumer(consumer.clone()),
        };
        added.map_err(|e| match e.code {
            403 => AmqpError::access_refused(format!(
                "queue '{queue_name}' in vhost '{}' in exclusive use",
                ctx.vhost.name
            )),
            _ => e,
        })?;
        self.consumers.insert(tag.clone(), Subscription { consumer, queue });
        // Deliveries the queue made already wait in the connection's inbox, behind this.
        if m.nowait { Ok(()) } else { ctx.send(self.id, BasicConsumeOk { consumer_tag: tag }) }
    }

    pub(super) fn cancel(&mut self, m: BasicCancel, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        if let Some(sub) = self.consumers.remove(&m.consumer_tag) {
            sub.consumer.retire();
            let removed = sub.queue.remove_retired();
            if removed.auto_delete_now {
                ctx.vhost.remove_queue(&sub.queue);
            }
            if self.reply_queue.as_ref() == Some(&sub.queue.name) {
                self.reply_queue = None;
            }
        }
        if m.nowait {
            Ok(())
        } else {
            ctx.send(self.id, BasicCancelOk { consumer_tag: m.consumer_tag })
        }
    }

    pub(super) fn publish(&mut self, m: BasicPublish) -> Result<(), AmqpError> {
        if m.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        self.assembly.start(m);
        Ok(())
    }

    /// A publish's content is complete: check it, then publish it now, or route it and hold
    /// it for commit.
    pub(super) fn published(&mut self, p: Published, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        ctx.access.check_publish(&p.method.exchange, &mut self.publish_cache)?;
        check_properties(&p.header.properties, ctx.access)?;
        let mandatory = p.method.mandatory;
        let (message, header) = self.message_of(p)?;
        let headers = header.properties.headers.as_ref();
        if self.tx.is_some() {
            // Routed now (an unknown exchange is refused now), delivered at commit.
            let route = ctx.vhost.route_message(&message, headers, &mut self.scratch)?;
            if let Some(tx) = &mut self.tx {
                tx.publishes.push(TxPublish { message, route, mandatory });
            }
            return Ok(());
        }
        let routed = ctx.vhost.publish(message.clone(), headers, &mut self.scratch)?;
        self.after_publish(&message, routed, mandatory, ctx)
    }

    /// The message of a completed publish, with a direct reply-to address resolved to this
    /// channel's reply queue.
    fn message_of(
        &self,
        p: Published,
    ) -> Result<(Arc<Message>, Box<warren_wire::ContentHeader>), AmqpError> {
        let Published { method, mut header, body } = p;
        if header.properties.reply_to.as_deref() == Some(REPLY_TO) {
            let Some(own) = &self.reply_queue else {
                return Err(AmqpError::precondition_failed("fast reply consumer does not exist"));
            };
            header.properties.reply_to = Some(own.clone());
            // Changed: encoded again when the message is built.
            header.raw_properties = Bytes::new();
        }
        let raw_properties = std::mem::take(&mut header.raw_properties);
        let message = Arc::new(Message::new(
            method.exchange,
            method.routing_key,
            &header.properties,
            raw_properties,
            body,
        ));
        Ok((message, header))
    }

    /// What follows a publish on the channel: waiting for congested queues, basic.return of a
    /// mandatory message that went nowhere, and confirm bookkeeping (a stored message's
    /// confirm waits for the store's fsync).
    pub(super) fn after_publish(
        &mut self,
        message: &Message,
        routed: Routed,
        mandatory: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        for q in self.scratch.congested.drain(..) {
            ctx.hold(q);
        }
        ctx.counts.published += 1;
        if routed.queues == 0 && !mandatory {
            ctx.counts.dropped += 1;
        }
        if routed.queues == 0 && mandatory {
            ctx.counts.returned += 1;
            let ret = Method::from(BasicReturn {
                reply_code: reply::NO_ROUTE,
                reply_text: "NO_ROUTE".into(),
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            });
            let (props, body) = (&message.properties, &message.body);
            encode_content_raw(ctx.out, self.id, &ret, props, body, ctx.frame_max)
                .map_err(|e| AmqpError::internal(format!("encoding basic.return: {e}")))?;
        }
        if let Some(c) = &mut self.confirms {
            let seq = c.next;
            c.next += 1;
            if routed.rejected {
                // A queue refused it (reject-publish): nacked, in its turn among the others.
                c.nacks.insert(seq);
            } else if let Some(epoch) = routed.stored {
                c.waiting.push_back((seq, epoch));
                self.confirm_sync = Some(seq);
            }
        }
        Ok(())
    }

    pub(super) fn get(&mut self, m: BasicGet, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let queue_name = self.queue_name(&m.queue)?;
        ctx.access.check(Perm::Read, Kind::Queue, &queue_name)?;
        let queue = ctx.vhost.queue_for(&queue_name, ctx.connection)?;
        if queue.is_stream() {
            let vhost = &ctx.vhost.name;
            return Err(warren_core::stream::not_supported("basic.get", &queue_name, vhost));
        }
        let Some((entry, message_count)) = queue.get() else {
            ctx.counts.get_empty += 1;
            return ctx.send(self.id, BasicGetEmpty { cluster_id: "".into() });
        };
        if m.no_ack {
            ctx.counts.get_no_ack += 1;
        } else {
            ctx.counts.get_ack += 1;
        }
        ctx.counts.redelivered += u64::from(entry.redelivered);
        let delivery_tag = self.take_tag();
        let msg = entry.message.clone();
        let ok = Method::from(BasicGetOk {
            delivery_tag,
            redelivered: entry.redelivered,
            exchange: msg.exchange.clone(),
            routing_key: msg.routing_key.clone(),
            message_count,
        });
        let quorum_props = queue.delivery_properties(&entry);
        let props = quorum_props.as_ref().unwrap_or(&msg.properties);
        encode_content_raw(ctx.out, self.id, &ok, props, &msg.body, ctx.frame_max)
            .map_err(|e| AmqpError::internal(format!("encoding basic.get-ok: {e}")))?;
        if m.no_ack {
            queue.settle([&entry]);
        } else {
            self.unacked.push_back(Unacked {
                tag: delivery_tag,
                entry,
                source: Source::Get(queue),
                at: ctx.now,
            });
        }
        Ok(())
    }

    pub(super) fn recover(
        &mut self,
        requeue: bool,
        sync: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        if !requeue {
            // As RabbitMQ: redelivery to the same consumer is not supported.
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        if let Some(u) = self.unacked.iter().find(|u| u.queue().is_stream()) {
            // Nothing goes back to a stream (RabbitMQ's channel fails here too, with 541).
            let (queue, vhost) = (&u.queue().name, &ctx.vhost.name);
            return Err(warren_core::stream::not_supported("basic.recover", queue, vhost));
        }
        let all: Vec<Unacked> = self.unacked.drain(..).collect();
        super::ack::requeue_all(all, ctx);
        if sync { ctx.send(self.id, BasicRecoverOk {}) } else { Ok(()) }
    }
}

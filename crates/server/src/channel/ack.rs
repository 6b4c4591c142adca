//! Settling deliveries: ack, nack and reject (single and `multiple`, with or without requeue),
//! requeue of a closing channel's messages, and writing deliveries out.

use std::sync::Arc;

use warren_core::{AmqpError, Consumer, Entry, Queue};
use warren_wire::method::BasicDeliver;
use warren_wire::{Method, encode_content};

use super::{Channel, Ctx, Unacked};

/// Returns unacked messages to their queues (original positions, redelivered) and frees the
/// windows they held.
pub(super) fn requeue_all(unacked: Vec<Unacked>, ctx: &mut Ctx<'_>) {
    let mut by_queue: Vec<(Arc<Queue>, Vec<Entry>)> = Vec::new();
    for u in unacked {
        if let Some(c) = &u.consumer {
            c.release(1);
        }
        match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
            Some((_, entries)) => entries.push(u.entry),
            None => by_queue.push((u.queue, vec![u.entry])),
        }
    }
    for (q, entries) in by_queue {
        q.requeue(entries);
        ctx.redispatch(&q);
    }
}

impl Channel {
    /// basic.ack, basic.nack, basic.reject (deferred to commit in tx mode).
    pub(super) fn settle(&mut self, method: Method, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        if self.tx.is_some() {
            // Unknown tags are still refused at once.
            let (tag, multiple) = match &method {
                Method::BasicAck(m) => (m.delivery_tag, m.multiple),
                Method::BasicNack(m) => (m.delivery_tag, m.multiple),
                Method::BasicReject(m) => (m.delivery_tag, false),
                _ => return Ok(()),
            };
            self.find(tag, multiple)?;
            if let Some(tx) = &mut self.tx {
                tx.acks.push(method);
            }
            return Ok(());
        }
        self.settle_now(method, ctx)
    }

    pub(super) fn settle_now(
        &mut self,
        method: Method,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        let (tag, multiple, requeue, ack) = match method {
            Method::BasicAck(m) => (m.delivery_tag, m.multiple, false, true),
            Method::BasicNack(m) => (m.delivery_tag, m.multiple, m.requeue, false),
            Method::BasicReject(m) => (m.delivery_tag, false, m.requeue, false),
            _ => return Ok(()),
        };
        let range = self.find(tag, multiple)?;
        let settled: Vec<Unacked> = self.unacked.drain(range).collect();
        if requeue && !ack {
            requeue_all(settled, ctx);
            return Ok(());
        }
        // Acked, or rejected without requeue (dropped: dead-lettering is not implemented).
        for u in settled {
            if let Some(c) = &u.consumer {
                c.release(1);
            }
            ctx.redispatch(&u.queue);
        }
        Ok(())
    }

    /// The range of `unacked` that a tag (and `multiple`) names; 406 for an unknown tag.
    fn find(&self, tag: u64, multiple: bool) -> Result<std::ops::Range<usize>, AmqpError> {
        if multiple && tag == 0 {
            return Ok(0..self.unacked.len());
        }
        let pos = self
            .unacked
            .binary_search_by_key(&tag, |u| u.tag)
            .map_err(|_| AmqpError::precondition_failed(format!("unknown delivery tag {tag}")))?;
        Ok(if multiple { 0..pos + 1 } else { pos..pos + 1 })
    }

    /// Writes a delivery from `queue` to `consumer` and records it as unacked.
    pub(crate) fn deliver(
        &mut self,
        consumer: Arc<Consumer>,
        queue: Arc<Queue>,
        entry: Entry,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        let delivery_tag = self.take_tag();
        let msg = &entry.message;
        let method = Method::from(BasicDeliver {
            consumer_tag: consumer.tag.clone(),
            delivery_tag,
            redelivered: entry.redelivered,
            exchange: msg.exchange.clone(),
            routing_key: msg.routing_key.clone(),
        });
        encode_content(
            ctx.out,
            self.id,
            &method,
            &msg.properties,
            &msg.body,
            ctx.frame_max,
        )
        .map_err(|e| AmqpError::internal(format!("encoding basic.deliver: {e}")))?;
        if consumer.no_ack {
            consumer.release(1);
            ctx.redispatch(&queue);
        } else {
            self.unacked.push_back(Unacked {
                tag: delivery_tag,
                queue,
                entry,
                consumer: Some(consumer),
            });
        }
        Ok(())
    }
}

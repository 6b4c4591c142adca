//! Settling deliveries: ack, nack and reject (single and `multiple`, with or without requeue,
//! deferred to commit in a transaction), requeue of a closing channel's messages, and writing
//! deliveries out.

use std::sync::Arc;

use warren_core::{AmqpError, Consumer, Entry, Queue};
use warren_wire::{Deliver, Method, encode_deliver};

use super::{Channel, Ctx, Settle, Source, Unacked};

/// Returns unacked messages to their queues (original positions, redelivered) and frees the
/// windows they held.
pub(super) fn requeue_all(unacked: Vec<Unacked>, ctx: &mut Ctx<'_>) {
    let mut by_queue: Vec<(Arc<Queue>, Vec<Entry>)> = Vec::new();
    for u in unacked {
        if let Some(c) = u.consumer() {
            c.release(1);
        }
        match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, u.queue())) {
            Some((_, entries)) => entries.push(u.entry),
            None => by_queue.push((u.queue().clone(), vec![u.entry])),
        }
    }
    for (q, entries) in by_queue {
        q.requeue(entries);
        ctx.redispatch(&q);
    }
}

/// Applies settles: acked and dropped messages are gone (the store is told), requeued ones
/// go back; every window place they held is freed.
pub(super) fn apply(settled: Vec<Unacked>, how: Settle, ctx: &mut Ctx<'_>) {
    if how == Settle::Requeue {
        return requeue_all(settled, ctx);
    }
    // Settled in runs from the same queue and consumer (an ack with `multiple` usually covers
    // one run): one window release and one redispatch per run, not per message (the window
    // counters are shared with the dispatching core).
    let mut run: Vec<Unacked> = Vec::new();
    let mut settled = settled.into_iter().peekable();
    while let Some(u) = settled.next() {
        let ends = settled.peek().is_none_or(|next| !next.same_source(&u));
        run.push(u);
        if !ends {
            continue;
        }
        let queue = run[0].queue().clone();
        if let Some(c) = run[0].consumer() {
            c.release(run.len() as u32);
        }
        if how == Settle::Drop {
            // Dead-lettered (rejected), or dropped without a dead-letter exchange.
            queue.reject(run.drain(..).map(|u| u.entry));
        } else {
            queue.settle(run.iter().map(|u| &u.entry));
            run.clear();
        }
        ctx.redispatch(&queue);
    }
}

impl Channel {
    /// basic.ack, basic.nack, basic.reject.
    pub(super) fn settle(&mut self, method: Method, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let (tag, multiple, how) = match method {
            Method::BasicAck(m) => (m.delivery_tag, m.multiple, Settle::Ack),
            Method::BasicNack(m) => {
                (m.delivery_tag, m.multiple, if m.requeue { Settle::Requeue } else { Settle::Drop })
            }
            Method::BasicReject(m) => {
                (m.delivery_tag, false, if m.requeue { Settle::Requeue } else { Settle::Drop })
            }
            _ => return Ok(()),
        };
        let range = self.find(tag, multiple)?;
        if how != Settle::Ack
            && let Some(u) = self.unacked.range(range.clone()).find(|u| u.queue().is_stream())
        {
            let (queue, vhost) = (&u.queue().name, &ctx.vhost.name);
            return Err(warren_core::stream::not_supported(
                "basic.nack and basic.reject",
                queue,
                vhost,
            ));
        }
        let settled: Vec<Unacked> = self.unacked.drain(range).collect();
        if how == Settle::Ack {
            ctx.counts.acked += settled.len() as u64;
        }
        match &mut self.tx {
            Some(tx) => tx.settles.extend(settled.into_iter().map(|u| (u, how))),
            None => apply(settled, how, ctx),
        }
        Ok(())
    }

    /// Puts a rolled-back transaction's settles back among the unacked, in tag order.
    pub(super) fn unsettle(&mut self, settles: Vec<(Unacked, Settle)>) {
        for (u, _) in settles {
            let pos = self.unacked.partition_point(|x| x.tag < u.tag);
            self.unacked.insert(pos, u);
        }
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

    /// Writes a delivery to `consumer` (from its queue) and records it as unacked.
    pub(crate) fn deliver(
        &mut self,
        consumer: Arc<Consumer>,
        entry: Entry,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        let delivery_tag = self.take_tag();
        let msg = &entry.message;
        let d = Deliver {
            consumer_tag: &consumer.tag,
            delivery_tag,
            redelivered: entry.redelivered,
            exchange: &msg.exchange,
            routing_key: &msg.routing_key,
        };
        let quorum_props = consumer.queue.delivery_properties(&entry);
        let props = quorum_props.as_ref().unwrap_or(&msg.properties);
        encode_deliver(ctx.out, self.id, d, props, &msg.body, ctx.frame_max)
            .map_err(|e| AmqpError::internal(format!("encoding basic.deliver: {e}")))?;
        ctx.counts.redelivered += u64::from(entry.redelivered);
        if consumer.no_ack {
            ctx.counts.delivered_no_ack += 1;
            consumer.release(1);
            consumer.queue.settle_no_ack([&entry]);
            ctx.redispatch(&consumer.queue);
        } else {
            ctx.counts.delivered_ack += 1;
            if consumer.written() {
                // It had as many deliveries on their way as it may: it can take more now.
                ctx.redispatch(&consumer.queue);
            }
            let source = Source::Consumer(consumer);
            self.unacked.push_back(Unacked { tag: delivery_tag, entry, source, at: ctx.now });
        }
        Ok(())
    }
}

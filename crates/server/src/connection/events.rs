//! Events from the connection's inbox: deliveries from queues, the store's reports that
//! publishes and commits are on disk, and consumers cancelled by their queue.

use std::sync::Arc;

use warren_core::Event;
use warren_wire::method::BasicCancel;

use super::{ConnError, Connection, ctx};
use crate::channel::Ctx;

impl Connection {
    pub(super) fn on_event(&mut self, event: Event) -> Result<(), ConnError> {
        match event {
            Event::Deliver { consumer, entry } => {
                // Retired: cancelled or its channel closed after the queue sent this.
                let live = consumer
                    .is_active()
                    .then(|| self.channels.get_mut(&consumer.channel))
                    .flatten()
                    .filter(|c| !c.closing);
                let (Some(channel), Some(vhost)) = (live, &self.vhost) else {
                    // Cancelled or closed while the delivery was on its way: put it back.
                    consumer.put_back(entry);
                    return Ok(());
                };
                let mut ctx = ctx!(self, vhost);
                channel.deliver(consumer, entry, &mut ctx).map_err(|e| ConnError::Amqp(e, 60, 60))
            }
            Event::Persisted { channel, generation, up_to } => {
                let epoch = self.broker.store_epoch();
                if let Some(c) =
                    self.channels.get_mut(&channel).filter(|c| c.generation == generation)
                {
                    c.persisted(up_to, epoch);
                }
                Ok(())
            }
            Event::TxPersisted { channel, generation, epoch } => {
                let failed = self.broker.failed_since(epoch);
                let live = self
                    .channels
                    .get_mut(&channel)
                    .filter(|c| c.generation == generation && !c.closing);
                let (Some(c), Some(vhost)) = (live, &self.vhost) else {
                    return Ok(());
                };
                let mut ctx = ctx!(self, vhost);
                c.committed(failed, &mut ctx).map_err(|e| ConnError::Amqp(e, 90, 20))
            }
            Event::Describe { reply } => {
                let mut list: Vec<_> =
                    self.channels.values().filter(|c| !c.closing).map(|c| c.describe()).collect();
                list.sort_by_key(|c| c.number);
                let _ = reply.send(list);
                Ok(())
            }
            Event::Cancelled { consumer } => {
                let channel = consumer.channel;
                let known = self
                    .channels
                    .get_mut(&channel)
                    .filter(|c| !c.closing)
                    .filter(|c| {
                        c.consumers
                            .get(&consumer.tag)
                            .is_some_and(|sub| Arc::ptr_eq(&sub.consumer, &consumer))
                    })
                    .and_then(|c| c.consumers.remove(&consumer.tag))
                    .inspect(|sub| sub.consumer.retire())
                    .is_some();
                if known && self.cancel_notify {
                    let tag = consumer.tag.clone();
                    self.send(channel, BasicCancel { consumer_tag: tag, nowait: true })?;
                }
                Ok(())
            }
        }
    }
}

//! The link between the routing core and the store: queue ids for durable queues, and the
//! definitions snapshot written whenever a durable exchange, queue or binding changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tracing::error;
use warren_store::{QueueId, Store};

use crate::broker::Broker;

/// What a broker with a data dir persists through.
#[derive(Debug)]
pub struct Persistence {
    /// The store.
    pub store: Arc<Store>,
    next_queue_id: AtomicU64,
    /// The broker whose definitions are saved (set once it exists).
    pub(crate) broker: OnceLock<Weak<Broker>>,
}

impl Persistence {
    pub(crate) fn new(store: Arc<Store>, next_queue_id: QueueId) -> Arc<Self> {
        Arc::new(Persistence {
            store,
            next_queue_id: AtomicU64::new(next_queue_id),
            broker: OnceLock::new(),
        })
    }

    /// A fresh id for a new durable queue.
    pub(crate) fn queue_id(&self) -> QueueId {
        self.next_queue_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes the definitions snapshot (synchronously: a declare is answered after its
    /// definition is on disk). Must not be called while holding any registry lock.
    pub(crate) fn changed(&self) {
        let Some(broker) = self.broker.get().and_then(Weak::upgrade) else { return };
        if let Err(e) = self.store.save_definitions(&broker.definitions()) {
            error!("saving definitions: {e}");
        }
    }
}

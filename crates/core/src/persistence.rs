//! The link between the routing core and the store: queue ids for durable queues, and the
//! definitions snapshot written whenever a durable exchange, queue or binding changes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tracing::error;
use warren_store::{QueueId, Store};

use crate::broker::Broker;
use crate::error::AmqpError;

/// What a broker with a data dir persists through.
#[derive(Debug)]
pub struct Persistence {
    /// The store.
    pub store: Arc<Store>,
    next_queue_id: AtomicU64,
    /// The broker whose definitions are saved (set once it exists).
    pub(crate) broker: OnceLock<Weak<Broker>>,
    /// The last save failed: what is in memory is not all on disk.
    unsaved: AtomicBool,
    /// Changes to durable things begun (visible in memory, or about to be) and not yet
    /// through their save ([`Persistence::begin`]).
    in_flight: AtomicU64,
}

/// A durable change on its way to disk: counted from before it is made visible until its save
/// is over (the guard is dropped after it).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Persistence>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Persistence {
    pub(crate) fn new(store: Arc<Store>, next_queue_id: QueueId) -> Arc<Self> {
        Arc::new(Persistence {
            store,
            next_queue_id: AtomicU64::new(next_queue_id),
            broker: OnceLock::new(),
            unsaved: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
        })
    }

    /// Counts a durable change about to be made visible, until the guard goes (after its save).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Whether another change than the caller's own (it holds one guard) may be visible in
    /// memory and not yet on disk: a redeclare or rebind of it must wait for a save.
    pub(crate) fn others_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 1
    }

    /// A fresh id for a new durable queue.
    pub(crate) fn queue_id(&self) -> QueueId {
        self.next_queue_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The next id [`Persistence::queue_id`] gives (saved with the definitions: ids are never
    /// reused).
    pub(crate) fn next_queue_id(&self) -> QueueId {
        self.next_queue_id.load(Ordering::Relaxed)
    }

    /// Writes the definitions snapshot (synchronously: a declare is answered after its
    /// definition is on disk). The snapshot is taken under the store's definitions lock, so
    /// that of two concurrent changes the one saved last is the newer state: a snapshot taken
    /// earlier can never overwrite a later one. Must not be called while holding any registry
    /// lock.
    ///
    /// If the write fails the change stays in memory and the caller gets 541 INTERNAL_ERROR;
    /// the next change (or [`Persistence::retry`]) saves the whole state again.
    pub(crate) fn changed(&self) -> crate::Result<()> {
        let Some(broker) = self.broker.get().and_then(Weak::upgrade) else { return Ok(()) };
        match crate::blocking::disk(|| self.store.save_definitions_with(|| broker.definitions())) {
            Ok(()) => {
                self.unsaved.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.unsaved.store(true, Ordering::Release);
                error!("saving definitions: {e}");
                Err(AmqpError::internal(format!("the definitions could not be saved: {e}")))
            }
        }
    }

    /// Saves the definitions again if the last save failed (the resource monitor calls this).
    pub fn retry(&self) {
        if self.unsaved.load(Ordering::Acquire) && self.changed().is_ok() {
            tracing::info!("definitions saved after an earlier failure");
        }
    }
}

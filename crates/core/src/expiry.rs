//! `x-expires`: a queue unused for its period (no consumers, and no declare or basic.get
//! since the period started) is deleted, as RabbitMQ's `maybe_expire` does. One small task per
//! such queue sleeps until the queue may have expired, looks, and deletes it or sleeps again.
//! After a restart the period starts again (as RabbitMQ). The period is the queue's setting in
//! force (a policy's `expires` counts too), read again at every look.

use std::sync::{Arc, Weak};

use tracing::debug;

use crate::broker::Broker;
use crate::queue::Queue;
use crate::vhost::VHost;

impl VHost {
    /// Starts the watcher that deletes `queue` once unused for its `x-expires` period. Nothing
    /// if it has none, is watched already, or no runtime runs (start-up: see
    /// [`Broker::watch_expiring_queues`]).
    pub fn watch_expiry(self: &Arc<Self>, queue: &Arc<Queue>) {
        if queue.settings().0.expires.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if !queue.start_expiry_watch() {
            return;
        }
        let (vhost, weak) = (Arc::downgrade(self), Arc::downgrade(queue));
        runtime.spawn(expire_when_unused(vhost, weak));
    }
}

impl Broker {
    /// Starts the expiry watchers of every queue with `x-expires`, and the message TTL timers
    /// of queues that recovered messages (at start-up, before the runtime ran).
    pub fn watch_expiring_queues(&self) {
        for vhost in self.vhost_list() {
            for queue in vhost.queue_list() {
                vhost.watch_expiry(&queue);
                queue.start_ttl();
            }
        }
    }
}

async fn expire_when_unused(vhost: Weak<VHost>, queue: Weak<Queue>) {
    loop {
        let Some(q) = queue.upgrade() else { return };
        let Some(wait) = q.unused_for() else {
            // Deleted, or a policy took its expiry away: a later policy starts a new watch.
            q.stop_expiry_watch();
            return;
        };
        drop(q);
        if wait.is_zero() {
            let (Some(v), Some(q)) = (vhost.upgrade(), queue.upgrade()) else { return };
            debug!(queue = %q.name, vhost = %v.name, "deleting the queue: unused for its expiry period");
            v.remove_queue(&q);
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

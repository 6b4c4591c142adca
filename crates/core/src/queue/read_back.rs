//! Reading paged-out messages back from the store. Consumers are fed by reads that run on
//! tokio's blocking pool, off the runtime threads and without the queue's lock: when a delivery
//! finds the front of the queue paged out, a read of the next [`READ_AHEAD`] paged-out messages
//! starts and deliveries wait for it; when it lands the bodies are put in place, the run behind
//! them is read already (so a draining consumer rarely waits), and delivery goes on.
//!
//! basic.get and dead-lettering a paged-out head read synchronously under the lock (they
//! cannot wait), as does a queue outside a tokio runtime. A record that is gone (its write
//! failed and its publish was nacked) is dropped, loudly; a read error leaves the messages
//! where they are, and the read is tried again a second later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::error;
use warren_store::{Location, StoreError};

use super::paging::Body;
use super::{Queue, State, ttl};
use crate::message::Message;

/// How many paged-out messages are read back together.
pub(super) const READ_AHEAD: usize = 256;

/// How far into the queue a read looks for the next paged-out run (past the loaded ones).
const SCAN: usize = 2 * READ_AHEAD;

/// The paged-out messages to read next: the first run of them within the first `scan` ready
/// messages, at most [`READ_AHEAD`].
fn next_run(st: &State, scan: usize) -> Vec<Location> {
    let mut locs = Vec::new();
    for slot in st.ready.iter().take(scan) {
        match slot.body {
            Body::Paged(loc) => {
                locs.push(loc);
                if locs.len() == READ_AHEAD {
                    break;
                }
            }
            Body::Loaded(_) if !locs.is_empty() => break,
            Body::Loaded(_) => {}
        }
    }
    locs
}

impl Queue {
    /// Reads the paged-out messages at the front back now, under the lock; false if nothing
    /// could be read.
    pub(super) fn load_front(&self, st: &mut State) -> bool {
        let Some(store) = &self.pager else { return false };
        let locs = next_run(st, 1);
        if locs.is_empty() {
            return false;
        }
        match crate::blocking::disk(|| store.read_many(&locs)) {
            Ok(read) => self.put_read(st, locs.into_iter().zip(read)),
            Err(e) => {
                error!(queue = %self.name, "reading messages back failed, will retry: {e}");
                false
            }
        }
    }

    /// The front is paged out: makes sure a read of it is in flight (true), or says that none
    /// can run here (false: no tokio runtime; read synchronously).
    pub(super) fn read_front(self: &Arc<Self>, st: &mut State) -> bool {
        if st.reading {
            return true;
        }
        let locs = next_run(st, 1);
        !locs.is_empty() && self.start_read(st, locs)
    }

    /// Starts reading `locs` on the blocking pool; false without a runtime or a store.
    fn start_read(self: &Arc<Self>, st: &mut State, locs: Vec<Location>) -> bool {
        let (Some(store), Ok(runtime)) =
            (self.pager.clone(), tokio::runtime::Handle::try_current())
        else {
            return false;
        };
        st.reading = true;
        let queue = Arc::downgrade(self);
        runtime.spawn(async move {
            let read = tokio::task::spawn_blocking(move || {
                let read = store.read_many(&locs);
                (locs, read)
            })
            .await;
            if let Some(queue) = queue.upgrade() {
                match read {
                    Ok((locs, read)) => queue.read_landed(locs, read),
                    // The blocking task panicked: nothing was read.
                    Err(_) => queue.read_landed(Vec::new(), Ok(Vec::new())),
                }
            }
        });
        true
    }

    /// A read finished: its bodies go in place, the next run is read already, and delivery
    /// goes on. After an error, the read is tried again in a second.
    fn read_landed(
        self: &Arc<Self>,
        locs: Vec<Location>,
        read: Result<Vec<Option<Message>>, StoreError>,
    ) {
        let mut st = self.state();
        st.reading = false;
        match read {
            Ok(read) => {
                self.put_read(&mut st, locs.into_iter().zip(read));
                if !st.consumers.is_empty() && !st.deleted {
                    let next = next_run(&st, SCAN);
                    if !next.is_empty() {
                        self.start_read(&mut st, next);
                    }
                }
                self.dispatch_locked(&mut st);
            }
            Err(e) => {
                error!(queue = %self.name, "reading messages back failed, will retry: {e}");
                let queue = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Some(queue) = queue.upgrade() {
                        queue.dispatch();
                    }
                });
            }
        }
    }

    /// Puts read bodies into the slots still waiting for them (the queue may have changed
    /// while the read ran: purged, requeued in front, expired); drops those whose record is
    /// gone. Whether anything changed (a body put in place, a lost one dropped).
    fn put_read(
        &self,
        st: &mut State,
        read: impl Iterator<Item = (Location, Option<Message>)>,
    ) -> bool {
        let mut want: HashMap<(u32, u64), Option<Message>> =
            read.map(|(loc, m)| ((loc.seg, loc.offset), m)).collect();
        // Requeued messages may sit before them now: look a little further than the run.
        let limit = want.len() + 64 * 1024;
        let (mut lost, mut placed, mut unpaged) = (Vec::new(), 0usize, Vec::new());
        for slot in st.ready.iter_mut().take(limit) {
            if want.is_empty() {
                break;
            }
            let Body::Paged(loc) = slot.body else { continue };
            let Some(m) = want.remove(&(loc.seg, loc.offset)) else { continue };
            if !slot.stored {
                // Paged out: the store's copy is not needed any more.
                unpaged.push(loc);
            }
            match m {
                Some(m) => {
                    if slot.stored && m.expiration.is_some() {
                        // A recovered message's own expiration counts from now (for one
                        // paged out before, its deadline from the publish is the earlier).
                        slot.expires = slot.expires.min(ttl::deadline(None, m.expiration));
                    }
                    slot.body = Body::Loaded(Arc::new(m));
                    placed += 1;
                }
                None => lost.push(slot.seq),
            }
        }
        if let Some(store) = &self.pager {
            store.unpage_all(unpaged);
        }
        let changed = placed > 0 || !lost.is_empty();
        if !lost.is_empty() {
            error!(queue = %self.name, "{} message(s) are not on disk (their writes failed); dropped", lost.len());
            st.ready.retain(|s| !lost.contains(&s.seq));
            st.ready_bytes = st.ready.iter().map(|s| u64::from(s.size)).sum();
            // Nothing is written for them: a read is never turned into an ack. Their index
            // entries stay, and the next start-up checks the records again.
        }
        changed
    }
}

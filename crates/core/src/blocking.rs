//! Disk I/O that a caller on the runtime cannot wait for elsewhere (a definitions save before
//! declare-ok, a basic.get reading a paged-out message back): run through
//! [`tokio::task::block_in_place`], so that the runtime hands this worker's other tasks to a
//! fresh worker while it waits on the disk, instead of stalling them. Outside a multi-thread
//! runtime (tests, start-up) it just runs.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which blocks on the disk, without holding up the runtime's other tasks.
pub(crate) fn disk<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

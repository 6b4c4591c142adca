//! The data dir, file by file (see `docs/storage.md`):
//!
//! ```text
//! FORMAT                      "warren-data-format N": refused if N is not ours
//! definitions                 snapshot of vhosts, users, durable exchanges/queues/bindings
//! messages/0000000001.seg     message segments, append-only, deleted when no queue needs them
//! queues/0000000007.idx       queue 7's index: one record per enqueued message (seq, location)
//! queues/0000000007.ack       queue 7's ack log: removed and delivered positions
//! ```

use std::path::{Path, PathBuf};

use crate::QueueId;

/// The format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the version file.
pub const FORMAT: &str = "FORMAT";
/// Message segments directory.
pub const MESSAGES: &str = "messages";
/// Queue index directory.
pub const QUEUES: &str = "queues";
/// First bytes of a segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"WRNSEG01";
/// First bytes of a queue index.
pub const INDEX_MAGIC: &[u8; 8] = b"WRNQIX01";
/// First bytes of a queue ack log.
pub const ACKS_MAGIC: &[u8; 8] = b"WRNQAK01";

/// Path of segment `seg`.
pub fn segment(dir: &Path, seg: u32) -> PathBuf {
    dir.join(MESSAGES).join(format!("{seg:010}.seg"))
}

/// Path of queue `id`'s index.
pub fn index(dir: &Path, id: QueueId) -> PathBuf {
    dir.join(QUEUES).join(format!("{id:010}.idx"))
}

/// Path of queue `id`'s ack log.
pub fn acks(dir: &Path, id: QueueId) -> PathBuf {
    dir.join(QUEUES).join(format!("{id:010}.ack"))
}

/// Parses `NNNNNNNNNN.ext` into its number.
pub fn number(path: &Path, ext: &str) -> Option<u64> {
    if path.extension()? != ext {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

//! The writer's file operations, in one place so that tests can make them fail on demand
//! ([`Faults`]): a failed or torn write, a failed or hanging fsync, as a full or dying disk
//! would.
//!
//! Every write the writer thread makes goes through [`Io`]. Without faults it is a thin layer
//! over `std::fs`; with them, each operation first asks whether it should fail.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Faults to inject into the store's writes (tests only; the broker never sets any).
#[derive(Debug, Default)]
pub struct Faults {
    /// This many writes succeed before the failing ones.
    pass: AtomicU32,
    /// Then this many writes fail (after writing half their bytes, if `torn` is set).
    writes: AtomicU32,
    /// The next this many fsyncs fail.
    syncs: AtomicU32,
    /// Failing writes write half their data first: a torn record on disk.
    torn: AtomicU32,
    /// fsyncs do not return while this is set (a disk that stopped answering).
    hang: AtomicBool,
}

impl Faults {
    /// No faults yet.
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// After `pass` more good writes, the next `n` writes fail with EIO; if `torn`, each
    /// writes half its bytes first.
    pub fn fail_writes(&self, pass: u32, n: u32, torn: bool) {
        self.torn.store(u32::from(torn), Ordering::SeqCst);
        self.pass.store(pass, Ordering::SeqCst);
        self.writes.store(n, Ordering::SeqCst);
    }

    /// The next `n` fsyncs fail with EIO.
    pub fn fail_syncs(&self, n: u32) {
        self.syncs.store(n, Ordering::SeqCst);
    }

    /// From now on fsyncs do not return until [`Faults::release`]: a disk that hangs.
    pub fn hang_syncs(&self) {
        self.hang.store(true, Ordering::SeqCst);
    }

    /// Hanging fsyncs return (and succeed).
    pub fn release(&self) {
        self.hang.store(false, Ordering::SeqCst);
    }

    fn take(counter: &AtomicU32) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

fn injected() -> std::io::Error {
    std::io::Error::other("injected I/O error")
}

/// File operations of the writer thread.
#[derive(Debug, Clone, Default)]
pub(crate) struct Io {
    faults: Option<Arc<Faults>>,
}

impl Io {
    pub(crate) fn new(faults: Option<Arc<Faults>>) -> Self {
        Io { faults }
    }

    /// Whether a write should fail now, and how much of it to write first.
    fn write_fault(&self, len: usize) -> Option<usize> {
        let f = self.faults.as_ref()?;
        if f.writes.load(Ordering::SeqCst) == 0 || Faults::take(&f.pass) {
            return None;
        }
        Faults::take(&f.writes)
            .then(|| if f.torn.load(Ordering::SeqCst) == 1 { len / 2 } else { 0 })
    }

    /// Writes all of `buf` at `offset`.
    pub(crate) fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> std::io::Result<()> {
        if let Some(part) = self.write_fault(buf.len()) {
            file.write_all_at(&buf[..part], offset)?;
            return Err(injected());
        }
        file.write_all_at(buf, offset)
    }

    /// Appends all of `buf` (the file is open for appending).
    pub(crate) fn append(&self, mut file: &File, buf: &[u8]) -> std::io::Result<()> {
        if let Some(part) = self.write_fault(buf.len()) {
            file.write_all(&buf[..part])?;
            return Err(injected());
        }
        file.write_all(buf)
    }

    /// fsyncs the file's data.
    pub(crate) fn sync(&self, file: &File) -> std::io::Result<()> {
        if let Some(f) = &self.faults {
            while f.hang.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if Faults::take(&f.syncs) {
                return Err(injected());
            }
        }
        file.sync_data()
    }
}

//! Counters shared by a run's tasks, the once-a-second progress line, and the broker's memory
//! read from /proc.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a run has done so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages published.
    pub published: AtomicU64,
    /// Publishes confirmed by the broker.
    pub confirmed: AtomicU64,
    /// Messages received by consumers.
    pub consumed: AtomicU64,
    /// Errors seen by any task.
    pub errors: AtomicU64,
}

impl Counters {
    /// Adds to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Prints a progress line every second until the returned handle is aborted.
pub fn progress(c: Arc<Counters>, started: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = (0u64, 0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = (
                Counters::get(&c.published),
                Counters::get(&c.confirmed),
                Counters::get(&c.consumed),
            );
            eprintln!(
                "t={:>4.0}s  published {:>9}/s  confirmed {:>9}/s  consumed {:>9}/s  in flight {:>8}  errors {}",
                started.elapsed().as_secs_f64(),
                now.0 - last.0,
                now.1 - last.1,
                now.2 - last.2,
                now.0.saturating_sub(now.2),
                Counters::get(&c.errors),
            );
            last = now;
        }
    })
}

/// Resident memory of a process in bytes, from /proc (None if unknown).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes used by the files under a directory.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

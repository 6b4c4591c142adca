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
    status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// The highest resident memory a process had so far (its high-water mark), in bytes.
pub fn rss_peak_bytes(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
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

/// CPU time (user + system) used so far by a process (`None`: this one), in seconds, from
/// /proc (None if unknown). Assumes the usual 100 clock ticks per second.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis,
    // where field 3 (state) comes first, so utime (14) and stime (15) are the 12th and 13th.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU use between two readings of [`cpu_seconds`], in percent of one core.
pub fn cpu_percent(before: Option<f64>, after: Option<f64>, wall: f64) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if wall > 0.0 => Some((a - b) / wall * 100.0),
        _ => None,
    }
}

/// A JSON number, or null.
pub fn json_num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "null".to_string(), |x| format!("{x:.decimals$}"))
}

/// `"rss_bytes":..,"rss_peak_bytes":..,"disk_bytes":..` (null where unknown), for a run's JSON.
pub fn mem_disk(pid: Option<u32>, data_dir: Option<&std::path::Path>) -> String {
    let rss = pid.and_then(rss_bytes).map_or("null".into(), |b| b.to_string());
    let peak = pid.and_then(rss_peak_bytes).map_or("null".into(), |b| b.to_string());
    let disk = data_dir.map_or("null".into(), |d| dir_bytes(d).to_string());
    format!("\"rss_bytes\":{rss},\"rss_peak_bytes\":{peak},\"disk_bytes\":{disk}")
}

//! The resource monitor: checks free disk space under the data dir and the broker's memory
//! use every second, and sets or clears the broker's alarms (`warren_core::alarm`), as
//! RabbitMQ's `disk_free_limit` and `vm_memory_high_watermark` do. Also the parsing of the two
//! settings (RabbitMQ's size units).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_core::{Broker, Resource};

use crate::config::Config;

/// How often the monitor looks.
const INTERVAL: Duration = Duration::from_secs(1);

/// The memory high watermark: a fraction of the machine's (or the cgroup's) memory, or a
/// size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermark {
    /// A fraction of the memory available to the broker (RabbitMQ's default: 0.4).
    Relative(f64),
    /// Bytes.
    Absolute(u64),
}

/// Parses a size as RabbitMQ's configuration does: a number of bytes, or a number with a
/// unit: `kB`/`KB`, `MB`, `GB`, `TB` are powers of 1000; `k`/`kiB`/`KiB`, `M`/`MiB`, `G`/`GiB`,
/// `T`/`TiB` powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is not a size such as 50MB or 1GiB"))?;
    let scale: u64 = match unit.trim() {
        "" => 1,
        "kB" | "KB" => 1000,
        "MB" => 1000u64.pow(2),
        "GB" => 1000u64.pow(3),
        "TB" => 1000u64.pow(4),
        "k" | "K" | "kiB" | "KiB" => 1024,
        "M" | "MiB" => 1024u64.pow(2),
        "G" | "GiB" => 1024u64.pow(3),
        "T" | "TiB" => 1024u64.pow(4),
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}' (use kB, MB, GB, KiB, MiB, GiB...)"
            ));
        }
    };
    n.checked_mul(scale).ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses the watermark: a fraction such as `0.4`, or a size such as `1GiB`.
pub fn parse_watermark(s: &str) -> Result<Watermark, String> {
    if s.contains('.') || s == "0" || s == "1" {
        let f: f64 =
            s.trim().parse().map_err(|_| format!("'{s}' is not a fraction such as 0.4"))?;
        if !(0.0..=1.0).contains(&f) {
            return Err(format!("the fraction {f} is not between 0 and 1"));
        }
        return Ok(Watermark::Relative(f));
    }
    parse_size(s).map(Watermark::Absolute)
}

/// Free bytes for the broker (not root) on the file system of `path`.
pub fn disk_free(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// A `kB` figure from a `/proc` file (`VmRSS:`, `MemTotal:`...).
fn proc_kb(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The broker's resident memory.
fn rss() -> Option<u64> {
    proc_kb("/proc/self/status", "VmRSS:")
}

/// The memory the broker may use: the machine's, or its cgroup's limit if lower.
fn total_memory() -> Option<u64> {
    let machine = proc_kb("/proc/meminfo", "MemTotal:");
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok()?.trim().parse::<u64>().ok());
    match (machine, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// The limits the monitor checks against, resolved once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    disk_free: u64,
    memory: Option<u64>,
}

impl Limits {
    /// Resolves the configured watermark against the memory available.
    pub fn new(config: &Config) -> Limits {
        let memory = match config.memory_high_watermark {
            Watermark::Absolute(b) => Some(b),
            Watermark::Relative(f) => total_memory().map(|t| (t as f64 * f) as u64),
        };
        info!(
            disk_free_limit = config.disk_free_limit,
            memory_high_watermark = memory,
            "resource limits: publishers are blocked below {} bytes of free disk or above {} of memory",
            config.disk_free_limit,
            memory.map_or("(unknown)".to_string(), |m| format!("{m} bytes")),
        );
        Limits { disk_free: config.disk_free_limit, memory }
    }

    /// The memory high watermark in bytes, if the memory available is known.
    pub fn memory(&self) -> Option<u64> {
        self.memory
    }

    /// The free disk space limit in bytes.
    pub fn disk_free(&self) -> u64 {
        self.disk_free
    }
}

/// Looks once and sets or clears the alarms.
pub fn check(broker: &Broker, data_dir: &Path, limits: Limits) {
    match disk_free(data_dir) {
        Ok(free) => {
            let low = free < limits.disk_free;
            if broker.alarms.set(Resource::Disk, low) {
                if low {
                    warn!(
                        "disk resource limit alarm set: {free} bytes free under {}, limit {}; \
                         publishers are blocked until it clears",
                        data_dir.display(),
                        limits.disk_free
                    );
                } else {
                    info!("disk resource limit alarm cleared: {free} bytes free");
                }
            }
        }
        Err(e) => warn!("checking free disk space under {}: {e}", data_dir.display()),
    }
    if let (Some(limit), Some(used)) = (limits.memory, rss()) {
        let high = used > limit;
        if broker.alarms.set(Resource::Memory, high) {
            if high {
                warn!(
                    "memory resource limit alarm set: {used} bytes used, watermark {limit}; \
                     publishers are blocked until it clears"
                );
            } else {
                info!("memory resource limit alarm cleared: {used} bytes used");
            }
        }
    }
}

/// Checks every second until shutdown.
pub async fn monitor(
    broker: Arc<Broker>,
    config: Arc<Config>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {
                check(&broker, &config.data_dir, limits);
                // A definitions save that failed (a full disk) is retried once space returns.
                broker.retry_definitions();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_rabbitmq_reads_them() {
        assert_eq!(parse_size("50000000"), Ok(50_000_000));
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512kB"), Ok(512_000));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("MB").is_err());
        assert!(parse_size("99999999999999TB").is_err());
    }

    #[test]
    fn watermarks_are_fractions_or_sizes() {
        assert_eq!(parse_watermark("0.4"), Ok(Watermark::Relative(0.4)));
        assert_eq!(parse_watermark("1"), Ok(Watermark::Relative(1.0)));
        assert_eq!(parse_watermark("1GiB"), Ok(Watermark::Absolute(1 << 30)));
        assert!(parse_watermark("1.5").is_err());
    }

    #[test]
    fn the_machine_reports_memory_and_disk() {
        assert!(rss().is_some_and(|r| r > 0));
        assert!(total_memory().is_some_and(|t| t > 0));
        assert!(disk_free(Path::new(".")).is_ok());
    }
}

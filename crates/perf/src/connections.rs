//! `connections`: open N connections, each with a channel and an exclusive queue, and hold
//! them; report the time to open them and the broker's memory per connection.
//!
//! Connections are opened `--parallel` at a time (a broker may take milliseconds per
//! handshake), each within `--timeout` seconds for TCP connect, handshake and queue declare
//! together, with a progress line every second. A broker that stops accepting connections
//! (RabbitMQ does so near its file-descriptor limit: about 0.9 x `ulimit -n`) shows up as
//! timeouts, which the summary counts and the error names.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio::sync::Semaphore;
use warren_wire::method::QueueDeclare;

use crate::client::{Target, connect_with, rpc};
use crate::stats::rss_bytes;

/// Options of `connections`.
#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 32)]
    pub parallel: usize,
    /// Seconds allowed to each connection (connect, handshake, channel and queue).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Seconds to hold them.
    #[arg(long, default_value_t = 3)]
    pub hold: u64,
    /// Broker pid, to report its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// This process's soft limit on open files, from /proc.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs the scenario and prints a JSON summary.
pub async fn run(o: Opts) -> anyhow::Result<()> {
    let t = Target::parse(&o.uri)?;
    if let Some(limit) = open_files_limit()
        && (o.count as u64) + 64 > limit
    {
        eprintln!(
            "warning: {} connections need about as many file descriptors, and this process may \
             open {limit} (raise it with `ulimit -n`)",
            o.count
        );
    }
    let before = o.pid.and_then(rss_bytes);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(o.parallel.max(1)));
    let opened = Arc::new(AtomicU64::new(0));
    let progress = {
        let opened = opened.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "t={:>4.0}s  opened {:>6}",
                    started.elapsed().as_secs_f64(),
                    opened.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut tasks = Vec::with_capacity(o.count);
    for _ in 0..o.count {
        let (t, gate, opened) = (t.clone(), gate.clone(), opened.clone());
        let limit = Duration::from_secs(o.timeout);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let open = async {
                let (mut r, mut w) = connect_with(&t, 4096).await?;
                rpc(&mut r, &mut w, QueueDeclare { exclusive: true, ..Default::default() }).await?;
                anyhow::Ok((r, w))
            };
            let held = match tokio::time::timeout(limit, open).await {
                Ok(res) => res?,
                Err(_) => bail!(
                    "no connection within {} s (a broker short of file descriptors stops \
                     accepting connections)",
                    limit.as_secs()
                ),
            };
            opened.fetch_add(1, Ordering::Relaxed);
            Ok(held)
        }));
    }
    let mut held = Vec::with_capacity(o.count);
    let mut failed = 0usize;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(c)) => held.push(c),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    progress.abort();
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    let during = o.pid.and_then(rss_bytes);
    let per = match (before, during) {
        (Some(b), Some(d)) if !held.is_empty() => {
            format!("{}", d.saturating_sub(b) / held.len() as u64)
        }
        _ => "null".into(),
    };
    let show = |v: Option<u64>| v.map_or("null".into(), |b| b.to_string());
    println!(
        "{{\"connections\":{},\"opened\":{},\"failed\":{failed},\"open_seconds\":{open_secs:.2},\"rss_before\":{},\"rss_held\":{},\"rss_per_connection\":{per}}}",
        o.count,
        held.len(),
        show(before),
        show(during)
    );
    for (_, w) in &mut held {
        let _ = w.close().await;
    }
    drop(held);
    if let Some(e) = first_error {
        bail!("{failed} of {} connections failed; the first: {e}", o.count);
    }
    Ok(())
}

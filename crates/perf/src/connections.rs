//! `connections`: open N connections, each with a channel and an exclusive queue, and hold
//! them; report the time to open them and the broker's memory per connection.

use std::time::{Duration, Instant};

use clap::Args;
use warren_wire::method::QueueDeclare;

use crate::client::{Target, connect, rpc};
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
    /// Seconds to hold them.
    #[arg(long, default_value_t = 3)]
    pub hold: u64,
    /// Broker pid, to report its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// Runs the scenario and prints a JSON summary.
pub async fn run(o: Opts) -> anyhow::Result<()> {
    let t = Target::parse(&o.uri)?;
    let before = o.pid.and_then(rss_bytes);
    let started = Instant::now();
    let mut held = Vec::with_capacity(o.count);
    for _ in 0..o.count {
        let (mut r, mut w) = connect(&t).await?;
        rpc(&mut r, &mut w, QueueDeclare { exclusive: true, ..Default::default() }).await?;
        held.push((r, w));
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    let during = o.pid.and_then(rss_bytes);
    let per = match (before, during) {
        (Some(b), Some(d)) => format!("{}", d.saturating_sub(b) / o.count.max(1) as u64),
        _ => "null".into(),
    };
    let show = |v: Option<u64>| v.map_or("null".into(), |b| b.to_string());
    println!(
        "{{\"connections\":{},\"open_seconds\":{open_secs:.2},\"rss_before\":{},\"rss_held\":{},\"rss_per_connection\":{per}}}",
        o.count,
        show(before),
        show(during)
    );
    drop(held);
    Ok(())
}

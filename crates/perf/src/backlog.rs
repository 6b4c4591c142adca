//! `backlog`: fill a durable queue with N persistent messages (confirmed), report the broker's
//! memory and disk, then drain it and report the drain rate. With `--delay-ms`, the messages go
//! through a durable `x-delayed-message` exchange and are held there until due: the report is
//! then of the broker holding N delayed messages, and the drain waits for them to arrive. `ready` waits for a restarted
//! broker to serve a queue with the expected count, for restart timing.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use warren_wire::method::{
    BasicAck, BasicConsume, BasicQos, ConfirmSelect, ExchangeDeclare, QueueBind, QueueDeclare,
};
use warren_wire::{BasicProperties, FieldTable, FieldValue, Frame, Method};

use crate::client::{Target, connect, declare_queue, publish_confirmed, rpc};
use crate::stats::cpu_seconds;

/// Options of `backlog`.
#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Queue to fill.
    #[arg(long, default_value = "perf-backlog")]
    pub queue: String,
    /// Messages.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Body size.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Unconfirmed messages in flight.
    #[arg(long, default_value_t = 5000)]
    pub window: u64,
    /// Broker pid, to report its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Broker data dir, to report disk use.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Fill only (drain later with --drain-only, e.g. after a restart).
    #[arg(long)]
    pub fill_only: bool,
    /// Drain only.
    #[arg(long)]
    pub drain_only: bool,
    /// Publish through a delayed-message exchange (`perf-delayed`) with this `x-delay`.
    #[arg(long)]
    pub delay_ms: Option<u32>,
    /// Declare the queue with this `x-message-ttl`; after the fill, wait until every message
    /// expired and report how long that took, the broker's CPU seconds meanwhile, and its RSS.
    #[arg(long)]
    pub ttl_ms: Option<u32>,
    /// Publish transient messages (delivery mode 1) instead of persistent ones.
    #[arg(long)]
    pub transient: bool,
}

/// The queue's declare arguments.
fn queue_args(o: &Opts) -> FieldTable {
    match o.ttl_ms {
        Some(ms) => FieldTable::new().with("x-message-ttl", FieldValue::I64(ms.into())),
        None => FieldTable::new(),
    }
}

async fn declare(
    o: &Opts,
    r: &mut crate::client::Reader,
    w: &mut crate::client::Writer,
) -> anyhow::Result<u32> {
    let declare = QueueDeclare {
        queue: o.queue.as_str().into(),
        durable: true,
        arguments: queue_args(o),
        ..Default::default()
    };
    match rpc(r, w, declare).await? {
        Method::QueueDeclareOk(ok) => Ok(ok.message_count),
        other => bail!("queue.declare answered {}", other.name()),
    }
}

/// Waits until the queue is empty (its messages expired); (seconds, broker CPU seconds).
async fn expire(o: &Opts, t: &Target) -> anyhow::Result<(f64, Option<f64>)> {
    let (mut r, mut w) = connect(t).await?;
    let cpu = cpu_seconds(o.pid);
    let started = Instant::now();
    while declare(o, &mut r, &mut w).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let used = cpu_seconds(o.pid).zip(cpu).map(|(a, b)| a - b);
    Ok((started.elapsed().as_secs_f64(), used))
}

/// The delayed-message exchange `--delay-ms` publishes through.
const DELAYED: &str = "perf-delayed";

fn mem_disk(o: &Opts) -> String {
    crate::stats::mem_disk(o.pid, o.data_dir.as_deref())
}

async fn fill(o: &Opts, t: &Target) -> anyhow::Result<f64> {
    let (mut r, mut w) = connect(t).await?;
    declare(o, &mut r, &mut w).await?;
    let Method::ConfirmSelectOk(_) = rpc(&mut r, &mut w, ConfirmSelect::default()).await? else {
        bail!("no confirms")
    };
    let mode = if o.transient { 1 } else { 2 };
    let mut props = BasicProperties { delivery_mode: Some(mode), ..Default::default() };
    let mut exchange = "";
    if let Some(ms) = o.delay_ms {
        let declare = ExchangeDeclare {
            exchange: DELAYED.into(),
            kind: "x-delayed-message".into(),
            durable: true,
            arguments: FieldTable::new().with("x-delayed-type", "direct"),
            ..Default::default()
        };
        rpc(&mut r, &mut w, declare).await?;
        let bind = QueueBind {
            queue: o.queue.as_str().into(),
            exchange: DELAYED.into(),
            routing_key: o.queue.as_str().into(),
            ..Default::default()
        };
        rpc(&mut r, &mut w, bind).await?;
        props.headers = Some(FieldTable::new().with("x-delay", FieldValue::I64(ms.into())));
        exchange = DELAYED;
    }
    let body = vec![0x42u8; o.size];
    let started = Instant::now();
    let report = |n: u64| {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("filled {n} in {secs:.1} s ({:.0} msg/s)", n as f64 / secs);
    };
    publish_confirmed(&mut r, &mut w, exchange, &o.queue, &props, &body, o.count, o.window, report)
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

async fn drain(o: &Opts, t: &Target) -> anyhow::Result<(u64, f64)> {
    let (mut r, mut w) = connect(t).await?;
    let declared = u64::from(declare(o, &mut r, &mut w).await?);
    // Delayed messages are not in the queue yet: wait for all of them.
    let n = if o.delay_ms.is_some() { o.count } else { declared };
    let patience = Duration::from_secs(30) + Duration::from_millis(o.delay_ms.unwrap_or(0).into());
    rpc(&mut r, &mut w, BasicQos { prefetch_count: 2000, ..Default::default() }).await?;
    rpc(&mut r, &mut w, BasicConsume { queue: o.queue.as_str().into(), ..Default::default() })
        .await?;
    let started = Instant::now();
    let (mut got, mut unacked) = (0u64, 0u64);
    while got < n {
        let f = tokio::time::timeout(patience, r.frame()).await??;
        if let Frame::Method { method: Method::BasicDeliver(d), .. } = f {
            got += 1;
            unacked += 1;
            if unacked >= 500 || got == n {
                w.method(BasicAck { delivery_tag: d.delivery_tag, multiple: true })?;
                w.flush().await?;
                unacked = 0;
            }
        }
    }
    Ok((got, started.elapsed().as_secs_f64()))
}

/// Runs the backlog scenario and prints a JSON summary.
pub async fn run(o: Opts) -> anyhow::Result<()> {
    let t = Target::parse(&o.uri)?;
    let mut out = Vec::new();
    if !o.drain_only {
        let before = mem_disk(&o);
        let secs = fill(&o, &t).await?;
        out.push(format!("\"before\":{{{before}}}"));
        out.push(format!("\"fill_seconds\":{secs:.2},\"fill_rate\":{:.0}", o.count as f64 / secs));
        // Let the broker settle (page out, sync) before reading its memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        out.push(format!("\"filled\":{{{}}}", mem_disk(&o)));
        if o.ttl_ms.is_some() {
            let (secs, cpu) = expire(&o, &t).await?;
            out.push(format!(
                "\"expired_seconds\":{secs:.2},\"expiry_cpu_seconds\":{},\"expired\":{{{}}}",
                crate::stats::json_num(cpu, 2),
                mem_disk(&o)
            ));
        }
    }
    if !o.fill_only {
        let (n, secs) = drain(&o, &t).await?;
        out.push(format!(
            "\"drained\":{n},\"drain_seconds\":{secs:.2},\"drain_rate\":{:.0}",
            n as f64 / secs
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        out.push(format!("\"after\":{{{}}}", mem_disk(&o)));
    }
    println!("{{{}}}", out.join(","));
    Ok(())
}

/// Options of `ready`.
#[derive(Debug, Clone, Args)]
pub struct ReadyOpts {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Queue that must hold `expect` messages.
    #[arg(long, default_value = "perf-backlog")]
    pub queue: String,
    /// Expected message count.
    #[arg(long)]
    pub expect: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// Polls until the broker accepts a connection and the queue holds the expected count;
/// prints the seconds it took.
pub async fn ready(o: ReadyOpts) -> anyhow::Result<()> {
    let t = Target::parse(&o.uri)?;
    let started = Instant::now();
    loop {
        let attempt = async {
            let (mut r, mut w) = connect(&t).await?;
            declare_queue(&mut r, &mut w, &o.queue, true).await
        };
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), attempt).await
            && n >= o.expect
        {
            println!(
                "{{\"ready_seconds\":{:.3},\"messages\":{n}}}",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(o.timeout) {
            bail!("not ready after {} s", o.timeout);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

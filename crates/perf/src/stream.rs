//! `stream`: the stream-queue benchmark. Fills a stream (`x-queue-type: stream`) with N
//! messages (confirmed), reads it whole with one consumer from `first` (the rate to compare
//! with a queue drain: `backlog` with the same count and size), then attaches many consumers
//! at offsets spread over the stream, each reading a window and holding it unacked, and
//! reports the broker's memory: it should not grow with the stream's length (run with two
//! counts to see). Works against any broker with stream queues (RabbitMQ 3.9+).

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use warren_wire::method::{BasicAck, BasicConsume, BasicQos, ConfirmSelect, QueueDeclare};
use warren_wire::{BasicProperties, FieldTable, FieldValue, Frame, Method};

use crate::client::{
    Light, Reader, Target, Writer, connect, connect_with, delete_queue, publish_confirmed, rpc,
};

/// Options of `stream`.
#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// The stream.
    #[arg(long, default_value = "perf-stream")]
    pub queue: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Body size.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Unconfirmed messages in flight while filling.
    #[arg(long, default_value_t = 5000)]
    pub window: u64,
    /// Prefetch of the consumer that reads the whole stream.
    #[arg(long, default_value_t = 2000)]
    pub prefetch: u16,
    /// Consumers attached at offsets spread over the stream.
    #[arg(long, default_value_t = 100)]
    pub readers: u64,
    /// Messages each of them reads (and holds unacked: its prefetch).
    #[arg(long, default_value_t = 100)]
    pub reader_window: u16,
    /// Broker pid, to report its RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Broker data dir, to report disk use.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Skip the fill (the stream is already there, e.g. after a restart).
    #[arg(long)]
    pub read_only: bool,
    /// Delete the stream at the end.
    #[arg(long)]
    pub cleanup: bool,
}

fn mem_disk(o: &Opts) -> String {
    crate::stats::mem_disk(o.pid, o.data_dir.as_deref())
}

async fn declare(o: &Opts, r: &mut Reader, w: &mut Writer) -> anyhow::Result<()> {
    let declare = QueueDeclare {
        queue: o.queue.as_str().into(),
        durable: true,
        arguments: FieldTable::new().with("x-queue-type", "stream"),
        ..Default::default()
    };
    match rpc(r, w, declare).await? {
        Method::QueueDeclareOk(_) => Ok(()),
        other => bail!("queue.declare answered {}", other.name()),
    }
}

async fn fill(o: &Opts, t: &Target) -> anyhow::Result<f64> {
    let (mut r, mut w) = connect(t).await?;
    declare(o, &mut r, &mut w).await?;
    let Method::ConfirmSelectOk(_) = rpc(&mut r, &mut w, ConfirmSelect::default()).await? else {
        bail!("no confirms")
    };
    let props = BasicProperties { delivery_mode: Some(2), ..Default::default() };
    let body = vec![0x42u8; o.size];
    let started = Instant::now();
    let report = |n: u64| {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("filled {n} in {secs:.1} s ({:.0} msg/s)", n as f64 / secs);
    };
    publish_confirmed(&mut r, &mut w, "", &o.queue, &props, &body, o.count, o.window, report)
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// A consumer at `offset` with `prefetch`; reads `n` messages, acking every `ack_every` (or
/// never, with 0). Returns the connection (kept open by the caller) and the seconds it took.
async fn read(
    t: &Target,
    o: &Opts,
    offset: u64,
    prefetch: u16,
    n: u64,
    ack_every: u64,
) -> anyhow::Result<((Reader, Writer), f64)> {
    let (mut r, mut w) = connect_with(t, 64 * 1024).await?;
    rpc(&mut r, &mut w, BasicQos { prefetch_count: prefetch, ..Default::default() }).await?;
    let consume = BasicConsume {
        queue: o.queue.as_str().into(),
        arguments: FieldTable::new().with("x-stream-offset", FieldValue::I64(offset as i64)),
        ..Default::default()
    };
    match rpc(&mut r, &mut w, consume).await? {
        Method::BasicConsumeOk(_) => {}
        other => bail!("basic.consume answered {}", other.name()),
    }
    let started = Instant::now();
    let (mut got, mut unacked) = (0u64, 0u64);
    while got < n {
        let light = match r.buffered_delivery()? {
            Some(l) => l,
            None => {
                tokio::time::timeout(Duration::from_secs(60), r.fill()).await??;
                continue;
            }
        };
        match light {
            Light::Deliver(tag) => {
                got += 1;
                unacked += 1;
                if ack_every > 0 && (unacked >= ack_every || got == n) {
                    w.method(BasicAck { delivery_tag: tag, multiple: true })?;
                    w.flush().await?;
                    unacked = 0;
                }
            }
            Light::Other(Frame::Method { method: Method::ConnectionClose(c), .. }) => {
                bail!("connection closed: {} {}", c.reply_code, c.reply_text)
            }
            _ => {}
        }
    }
    Ok(((r, w), started.elapsed().as_secs_f64()))
}

/// Runs the stream scenario and prints a JSON summary.
pub async fn run(o: Opts) -> anyhow::Result<()> {
    let t = Target::parse(&o.uri)?;
    let mut out = Vec::new();
    out.push(format!("\"count\":{},\"size\":{}", o.count, o.size));
    if !o.read_only {
        let before = mem_disk(&o);
        let secs = fill(&o, &t).await?;
        out.push(format!("\"before\":{{{before}}}"));
        out.push(format!("\"fill_seconds\":{secs:.2},\"fill_rate\":{:.0}", o.count as f64 / secs));
        tokio::time::sleep(Duration::from_secs(2)).await;
        out.push(format!("\"filled\":{{{}}}", mem_disk(&o)));
    }
    // One consumer reads the whole stream from the start (from disk: the broker keeps at most
    // a recent tail in memory).
    let ack_every = u64::from(o.prefetch / 4).max(1);
    let (conn, secs) = read(&t, &o, 0, o.prefetch, o.count, ack_every).await?;
    drop(conn);
    out.push(format!("\"read_seconds\":{secs:.2},\"read_rate\":{:.0}", o.count as f64 / secs));
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.push(format!("\"after_read\":{{{}}}", mem_disk(&o)));
    // Many consumers at offsets spread over the stream, each holding a window unacked.
    let started = Instant::now();
    let mut held = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..o.readers {
        let (t, o2) = (t.clone(), o.clone());
        let offset = o.count / o.readers.max(1) * i;
        let window = u64::from(o.reader_window).min(o.count - offset);
        tasks.spawn(async move {
            read(&t, &o2, offset, o2.reader_window, window, 0).await.map(|(c, _)| c)
        });
    }
    while let Some(done) = tasks.join_next().await {
        held.push(done??);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.push(format!(
        "\"readers\":{},\"readers_seconds\":{:.2},\"with_readers\":{{{}}}",
        o.readers,
        started.elapsed().as_secs_f64(),
        mem_disk(&o)
    ));
    drop(held);
    if o.cleanup {
        let (mut r, mut w) = connect(&t).await?;
        delete_queue(&mut r, &mut w, &o.queue).await?;
    }
    println!("{{{}}}", out.join(","));
    Ok(())
}

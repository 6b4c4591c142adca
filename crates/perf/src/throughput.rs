//! `throughput` and `latency`: P producers and C consumers on Q queues, with message size,
//! persistence, confirm window, prefetch, ack mode and rate cap; for latency, a timestamp in
//! each body gives end-to-end percentiles.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio::sync::{Mutex, Semaphore};
use warren_wire::method::{
    BasicAck, BasicConsume, BasicQos, ConfirmSelect, ExchangeDeclare, QueueBind,
};
use warren_wire::{BasicProperties, Frame, Method};

use crate::client::{self, Target, connect, declare_queue, rpc};
use crate::stats::Counters;

/// How consumers acknowledge.
#[derive(Debug, Clone, Copy)]
pub enum AckMode {
    /// no-ack consumers.
    Auto,
    /// One basic.ack per delivery.
    Each,
    /// basic.ack with multiple every K deliveries.
    Multiple(u64),
}

fn parse_ack(s: &str) -> Result<AckMode, String> {
    match s {
        "auto" => Ok(AckMode::Auto),
        "each" => Ok(AckMode::Each),
        _ => s
            .strip_prefix("multiple:")
            .and_then(|k| k.parse().ok())
            .filter(|k| *k > 0)
            .map(AckMode::Multiple)
            .ok_or_else(|| "expected auto, each or multiple:K".to_string()),
    }
}

/// Options of a throughput or latency run.
#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Producer connections.
    #[arg(long, short = 'P', default_value_t = 1)]
    pub producers: usize,
    /// Consumer connections.
    #[arg(long, short = 'C', default_value_t = 1)]
    pub consumers: usize,
    /// Queues (`perf-0`, `perf-1`, ...); producers and consumers are spread over them.
    #[arg(long, short = 'Q', default_value_t = 1)]
    pub queues: usize,
    /// Body size in bytes.
    #[arg(long, short = 's', default_value_t = 16)]
    pub size: usize,
    /// Persistent messages to durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirms with this many unconfirmed messages in flight (0: no confirms).
    #[arg(long, default_value_t = 0)]
    pub confirm: usize,
    /// Consumer prefetch count.
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u16,
    /// auto (no-ack), each, or multiple:K.
    #[arg(long, default_value = "multiple:100", value_parser = parse_ack)]
    pub ack: AckMode,
    /// Publish through a fanout exchange bound to this many queues per producer queue
    /// (0: the default exchange, straight to the queue).
    #[arg(long, default_value_t = 0)]
    pub fanout: usize,
    /// Messages per second per producer (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many messages per producer (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Print a JSON summary at the end.
    #[arg(long)]
    pub json: bool,
    /// Queue (and exchange) name prefix.
    #[arg(long, default_value = "perf")]
    pub prefix: String,
}

/// Sets up queues (and the fanout exchange); returns the routing targets per producer.
async fn setup(o: &Opts, t: &Target) -> anyhow::Result<Vec<(String, String)>> {
    let (mut r, mut w) = connect(t).await?;
    let mut targets = Vec::new();
    for q in 0..o.queues {
        let name = format!("{}-{q}", o.prefix);
        if o.fanout > 0 {
            let ex = format!("{}-fanout-{q}", o.prefix);
            rpc(
                &mut r,
                &mut w,
                ExchangeDeclare {
                    exchange: ex.as_str().into(),
                    kind: "fanout".into(),
                    durable: o.persistent,
                    ..Default::default()
                },
            )
            .await?;
            for f in 0..o.fanout {
                let qn = if f == 0 { name.clone() } else { format!("{name}-f{f}") };
                declare_queue(&mut r, &mut w, &qn, o.persistent).await?;
                rpc(
                    &mut r,
                    &mut w,
                    QueueBind {
                        queue: qn.as_str().into(),
                        exchange: ex.as_str().into(),
                        ..Default::default()
                    },
                )
                .await?;
            }
            targets.push((ex, String::new()));
        } else {
            declare_queue(&mut r, &mut w, &name, o.persistent).await?;
            targets.push((String::new(), name));
        }
    }
    Ok(targets)
}

fn now_nanos(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

async fn producer(
    o: Opts,
    t: Target,
    exchange: String,
    key: String,
    c: Arc<Counters>,
    epoch: Instant,
    deadline: Instant,
) -> anyhow::Result<()> {
    let (mut r, mut w) = connect(&t).await?;
    let window = (o.confirm > 0).then(|| Arc::new(Semaphore::new(o.confirm)));
    if window.is_some() {
        let Method::ConfirmSelectOk(_) = rpc(&mut r, &mut w, ConfirmSelect::default()).await?
        else {
            bail!("confirm.select refused")
        };
    }
    // Confirms are read by their own task, which frees window places.
    let reader = window.clone().map(|sem| {
        let c = c.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                match r.frame().await {
                    Ok(Frame::Method { method: Method::BasicAck(a), .. }) => {
                        let n = if a.multiple { a.delivery_tag - last } else { 1 };
                        last = last.max(a.delivery_tag);
                        Counters::add(&c.confirmed, n);
                        sem.add_permits(n as usize);
                    }
                    Ok(Frame::Method { method: Method::BasicNack(_), .. }) => {
                        Counters::add(&c.errors, 1)
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
    });
    let props = if o.persistent {
        BasicProperties { delivery_mode: Some(2), ..Default::default() }
    } else {
        BasicProperties::default()
    };
    let mut body = vec![0x5au8; o.size.max(8)];
    let mut sent = 0u64;
    let started = Instant::now();
    while Instant::now() < deadline && (o.count == 0 || sent < o.count) {
        let batch = if o.rate > 0 { 1 } else { 64 };
        let mut n = 0u64;
        for _ in 0..batch {
            if let Some(sem) = &window {
                sem.acquire().await?.forget();
            }
            body[..8].copy_from_slice(&now_nanos(epoch).to_be_bytes());
            w.publish(&exchange, &key, &props, &body[..o.size.max(8).min(body.len())])?;
            sent += 1;
            n += 1;
            if o.count > 0 && sent >= o.count {
                break;
            }
        }
        w.flush().await?;
        Counters::add(&c.published, n);
        if o.rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / o.rate as f64);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
    }
    if let Some(sem) = &window {
        // Wait (bounded) for the last confirms.
        let _ =
            tokio::time::timeout(Duration::from_secs(30), sem.acquire_many(o.confirm as u32)).await;
    }
    if let Some(h) = reader {
        h.abort();
    }
    Ok(())
}

async fn consumer(
    o: Opts,
    t: Target,
    queue: String,
    c: Arc<Counters>,
    epoch: Instant,
    lat: Option<Arc<Mutex<Vec<u64>>>>,
    stop: Instant,
) -> anyhow::Result<()> {
    let (mut r, mut w) = connect(&t).await?;
    rpc(&mut r, &mut w, BasicQos { prefetch_count: o.prefetch, ..Default::default() }).await?;
    let no_ack = matches!(o.ack, AckMode::Auto);
    rpc(
        &mut r,
        &mut w,
        BasicConsume { queue: queue.as_str().into(), no_ack, ..Default::default() },
    )
    .await?;
    let mut unacked = 0u64;
    let mut last_tag = 0u64;
    let mut samples = Vec::new();
    let mut expect_body = false;
    while Instant::now() < stop {
        let f = match tokio::time::timeout(Duration::from_millis(500), r.frame()).await {
            Ok(f) => f?,
            Err(_) => continue,
        };
        match f {
            Frame::Method { method: Method::BasicDeliver(d), .. } => {
                last_tag = d.delivery_tag;
                unacked += 1;
                Counters::add(&c.consumed, 1);
                expect_body = lat.is_some();
            }
            Frame::Body { payload, .. } if expect_body && payload.len() >= 8 => {
                expect_body = false;
                let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or([0; 8]));
                samples.push(now_nanos(epoch).saturating_sub(sent));
            }
            _ => {}
        }
        let due = match o.ack {
            AckMode::Auto => false,
            AckMode::Each => unacked > 0,
            AckMode::Multiple(k) => unacked >= k,
        };
        if due {
            w.method(BasicAck {
                delivery_tag: last_tag,
                multiple: matches!(o.ack, AckMode::Multiple(_)),
            })?;
            unacked = 0;
            w.flush().await?;
        }
    }
    if unacked > 0 && !no_ack {
        w.method(BasicAck { delivery_tag: last_tag, multiple: true })?;
        w.flush().await?;
    }
    if let Some(l) = lat {
        l.lock().await.extend(samples);
    }
    Ok(())
}

/// Runs producers and consumers; prints progress and a summary.
pub async fn run(o: Opts, latency: bool) -> anyhow::Result<()> {
    let t = client::Target::parse(&o.uri)?;
    let targets = setup(&o, &t).await?;
    let c = Arc::new(Counters::default());
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(o.duration);
    let lat = latency.then(|| Arc::new(Mutex::new(Vec::new())));
    let progress = crate::stats::progress(c.clone(), epoch);
    let mut tasks = Vec::new();
    for i in 0..o.consumers {
        let q = format!("{}-{}", o.prefix, i % o.queues.max(1));
        let stop = deadline + Duration::from_secs(if o.consumers > 0 { 3 } else { 0 });
        tasks.push(tokio::spawn(consumer(
            o.clone(),
            t.clone(),
            q,
            c.clone(),
            epoch,
            lat.clone(),
            stop,
        )));
    }
    for i in 0..o.producers {
        let (ex, key) = targets[i % targets.len()].clone();
        tasks.push(tokio::spawn(producer(
            o.clone(),
            t.clone(),
            ex,
            key,
            c.clone(),
            epoch,
            deadline,
        )));
    }
    // Consumers stop early once they have everything that was published.
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                Counters::add(&c.errors, 1);
                eprintln!("task failed: {e:#}");
            }
            Err(e) => eprintln!("task panicked: {e}"),
        }
    }
    progress.abort();
    let secs = o.duration as f64;
    let published = Counters::get(&c.published);
    let consumed = Counters::get(&c.consumed);
    let confirmed = Counters::get(&c.confirmed);
    let mut summary = format!(
        "{{\"published\":{published},\"confirmed\":{confirmed},\"consumed\":{consumed},\"seconds\":{secs},\"publish_rate\":{:.0},\"confirm_rate\":{:.0},\"consume_rate\":{:.0},\"errors\":{}",
        published as f64 / secs,
        confirmed as f64 / secs,
        consumed as f64 / secs,
        Counters::get(&c.errors)
    );
    if let Some(l) = lat {
        let mut v = l.lock().await.clone();
        v.sort_unstable();
        let pct = |p: f64| -> f64 {
            if v.is_empty() {
                0.0
            } else {
                v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
            }
        };
        summary += &format!(
            ",\"latency_us\":{{\"samples\":{},\"p50\":{:.1},\"p95\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}}",
            v.len(),
            pct(0.5),
            pct(0.95),
            pct(0.99),
            pct(0.999),
            pct(1.0)
        );
    }
    summary.push('}');
    println!("{summary}");
    Ok(())
}

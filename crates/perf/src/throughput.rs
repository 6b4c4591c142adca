//! `throughput` and `latency`: P producers and C consumers on Q queues, with message size,
//! persistence, confirm window, prefetch, ack mode and rate cap; for latency, a timestamp in
//! each body gives end-to-end percentiles. `--prefill` fills the queues first (with `-P 0`:
//! a consume-only run) and `--cleanup` deletes the queues at the end.
//!
//! Rates are counted over the time each activity really took from the start of the run:
//! publishing until the broker has read the last publish (or the last confirm arrived),
//! consuming until the last delivery arrived.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio::sync::{Mutex, Semaphore};
use warren_wire::method::{
    BasicAck, BasicConsume, BasicQos, ConfirmSelect, ExchangeDeclare, QueueBind,
};
use warren_wire::{BasicProperties, Frame, Method};

use crate::client::{self, Light, Target, connect, declare_queue, rpc};
use crate::stats::{Counters, cpu_percent, cpu_seconds, json_num, rss_bytes};

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
    /// Producer connections (0 with --prefill: consume only).
    #[arg(long, short = 'P', default_value_t = 1)]
    pub producers: usize,
    /// Consumer connections, spread over all queues (fanout queues included).
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
    /// (0: the default exchange, straight to the queue). The queues are `PREFIX-Q` and
    /// `PREFIX-Q-f1` ... and consumers are spread over all of them.
    #[arg(long, default_value_t = 0)]
    pub fanout: usize,
    /// Messages per second per producer (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to publish for (with --prefill and no producers: the most seconds to consume).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many messages per producer (0: no limit); bounds a run's memory.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Seconds consumers go on after publishing ended to receive what is still queued
    /// (they stop earlier once they have it all).
    #[arg(long, default_value_t = 3)]
    pub grace: u64,
    /// Before the run, fill each producer queue with this many messages (published with
    /// confirms); with `-P 0` the run then measures consumption alone.
    #[arg(long, default_value_t = 0)]
    pub prefill: u64,
    /// Delete the queues (and exchanges) at the end, so no backlog is left behind to
    /// disturb the next run.
    #[arg(long)]
    pub cleanup: bool,
    /// Broker pid, to report its CPU use over the run and its RSS at the end.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print a JSON summary at the end (it always is; kept for compatibility).
    #[arg(long)]
    pub json: bool,
    /// Queue (and exchange) name prefix.
    #[arg(long, default_value = "perf")]
    pub prefix: String,
}

/// The queues and exchanges of a run.
struct Layout {
    /// Per queue group: the exchange and routing key producers publish with.
    targets: Vec<(String, String)>,
    /// Every queue, group by group (the group's fanout copies follow its first queue).
    queues: Vec<String>,
    /// Fanout exchanges.
    exchanges: Vec<String>,
}

impl Layout {
    fn new(o: &Opts) -> Self {
        let mut l = Layout { targets: Vec::new(), queues: Vec::new(), exchanges: Vec::new() };
        for q in 0..o.queues.max(1) {
            let name = format!("{}-{q}", o.prefix);
            if o.fanout > 0 {
                let ex = format!("{}-fanout-{q}", o.prefix);
                l.queues.push(name.clone());
                l.queues.extend((1..o.fanout).map(|f| format!("{name}-f{f}")));
                l.targets.push((ex.clone(), String::new()));
                l.exchanges.push(ex);
            } else {
                l.queues.push(name.clone());
                l.targets.push((String::new(), name));
            }
        }
        l
    }

    /// The queue consumer `i` reads.
    fn consumer_queue(&self, i: usize) -> &str {
        &self.queues[i % self.queues.len()]
    }

    /// Queues that have at least one consumer.
    fn consumed(&self, consumers: usize) -> &[String] {
        &self.queues[..consumers.min(self.queues.len())]
    }
}

/// Declares the queues (and fanout exchanges with their bindings).
async fn setup(o: &Opts, t: &Target, l: &Layout) -> anyhow::Result<()> {
    let (mut r, mut w) = connect(t).await?;
    let per_group = o.fanout.max(1);
    for (g, (ex, _)) in l.targets.iter().enumerate() {
        if !ex.is_empty() {
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
        }
        for qn in &l.queues[g * per_group..(g + 1) * per_group] {
            declare_queue(&mut r, &mut w, qn, o.persistent).await?;
            if !ex.is_empty() {
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
        }
    }
    Ok(())
}

/// Deletes the run's queues and exchanges.
async fn cleanup(t: &Target, l: &Layout) -> anyhow::Result<()> {
    let (mut r, mut w) = connect(t).await?;
    let mut left = 0u64;
    for q in &l.queues {
        left += u64::from(client::delete_queue(&mut r, &mut w, q).await?);
    }
    for ex in &l.exchanges {
        client::delete_exchange(&mut r, &mut w, ex).await?;
    }
    eprintln!("cleanup: deleted {} queues ({left} messages left in them)", l.queues.len());
    Ok(())
}

fn props(o: &Opts) -> BasicProperties {
    if o.persistent {
        BasicProperties { delivery_mode: Some(2), ..Default::default() }
    } else {
        BasicProperties::default()
    }
}

/// Publishes `--prefill` messages to each queue group (confirmed); returns the messages then
/// held by the queues that have consumers.
async fn prefill(o: &Opts, t: &Target, l: &Layout) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (ex, key) in l.targets.clone() {
        let (o, t) = (o.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let (mut r, mut w) = connect(&t).await?;
            let Method::ConfirmSelectOk(_) = rpc(&mut r, &mut w, ConfirmSelect::default()).await?
            else {
                bail!("confirm.select refused")
            };
            let body = vec![0x5au8; o.size];
            let report = |n: u64| {
                eprintln!("prefill: {n} confirmed in {:.1} s", started.elapsed().as_secs_f64())
            };
            client::publish_confirmed(
                &mut r,
                &mut w,
                &ex,
                &key,
                &props(&o),
                &body,
                o.prefill,
                5000,
                report,
            )
            .await
        }));
    }
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(600), task).await {
            Ok(Ok(res)) => res?,
            Ok(Err(e)) => bail!("prefill task failed: {e}"),
            Err(_) => bail!("prefill did not finish in 600 s"),
        }
    }
    let (mut r, mut w) = connect(t).await?;
    let mut held = 0u64;
    for q in l.consumed(o.consumers) {
        held += u64::from(declare_queue(&mut r, &mut w, q, o.persistent).await?);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("prefill: done in {secs:.1} s; {held} messages wait in the consumed queues");
    Ok(held)
}

/// Instants of a run in nanoseconds since its epoch, and the consumers' stop condition.
#[derive(Debug, Default)]
struct Marks {
    /// When the last producer finished publishing (the broker having read it all).
    publish_end: AtomicU64,
    /// When the last confirm arrived.
    confirm_end: AtomicU64,
    /// When the last delivery arrived.
    last_delivery: AtomicU64,
    /// Producers still running.
    producers_left: AtomicU64,
    /// Deliveries that the consumed queues held before the run (prefill).
    expect_base: u64,
    /// Deliveries per published message once every queue is consumed (0: not all are).
    per_published: u64,
    /// Consumers stop once this many deliveries are counted (0: not known).
    expect: AtomicU64,
}

impl Marks {
    fn set(a: &AtomicU64, epoch: Instant) {
        a.fetch_max(now_nanos(epoch), Ordering::Relaxed);
    }

    fn secs(a: &AtomicU64) -> f64 {
        a.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// A producer is done (whether it failed or not).
    fn producer_done(&self, c: &Counters) {
        if self.producers_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let total = self.expect_base + Counters::get(&c.published) * self.per_published;
            if self.per_published > 0 || self.expect_base > 0 {
                self.expect.store(total, Ordering::Release);
            }
        }
    }
}

fn now_nanos(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

#[allow(clippy::too_many_arguments)]
async fn producer(
    o: Opts,
    t: Target,
    exchange: String,
    key: String,
    c: Arc<Counters>,
    m: Arc<Marks>,
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
    let mut reader = None;
    let mut sync_reader = None;
    if let Some(sem) = window.clone() {
        let (c, m) = (c.clone(), m.clone());
        reader = Some(tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                match r.frame().await {
                    Ok(Frame::Method { method: Method::BasicAck(a), .. }) => {
                        let n = if a.multiple { a.delivery_tag.saturating_sub(last) } else { 1 };
                        last = last.max(a.delivery_tag);
                        Counters::add(&c.confirmed, n);
                        Marks::set(&m.confirm_end, epoch);
                        sem.add_permits(n as usize);
                    }
                    Ok(Frame::Method { method: Method::BasicNack(_), .. }) => {
                        Counters::add(&c.errors, 1)
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    } else {
        sync_reader = Some(r);
    }
    let props = props(&o);
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
            w.publish(&exchange, &key, &props, &body)?;
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
        Marks::set(&m.publish_end, epoch);
        // Wait (bounded) for the last confirms.
        let _ =
            tokio::time::timeout(Duration::from_secs(30), sem.acquire_many(o.confirm as u32)).await;
    } else if let Some(r) = &mut sync_reader {
        // A synchronous method behind the publishes: its reply means the broker has read them.
        rpc(r, &mut w, BasicQos::default()).await?;
        Marks::set(&m.publish_end, epoch);
    }
    if let Some(h) = reader {
        h.abort();
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn consumer(
    o: Opts,
    t: Target,
    queue: String,
    c: Arc<Counters>,
    m: Arc<Marks>,
    epoch: Instant,
    lat: Option<Arc<Mutex<Vec<u64>>>>,
    stop: Instant,
) -> anyhow::Result<()> {
    const IDLE: Duration = Duration::from_secs(1);
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
    let mut last_frame = Instant::now();
    let mut last_delivery = 0u64;
    loop {
        // Handle all that was read, then flush the acks once, then check the clock once.
        let (mut frames, mut delivered) = (0u64, 0u64);
        while let Some(f) = r.buffered_delivery()? {
            frames += 1;
            match f {
                Light::Deliver(tag) => {
                    last_tag = tag;
                    unacked += 1;
                    delivered += 1;
                    expect_body = lat.is_some();
                }
                Light::Body { len, first } if expect_body && len >= 8 => {
                    expect_body = false;
                    let sent = u64::from_be_bytes(first);
                    samples.push(now_nanos(epoch).saturating_sub(sent));
                }
                Light::Other(Frame::Method { method: Method::ChannelClose(cl), .. }) => {
                    bail!("channel closed: {} {}", cl.reply_code, cl.reply_text)
                }
                Light::Other(Frame::Method { method: Method::ConnectionClose(cl), .. }) => {
                    bail!("connection closed: {} {}", cl.reply_code, cl.reply_text)
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
            }
        }
        w.flush().await?;
        if delivered > 0 {
            Counters::add(&c.consumed, delivered);
            last_delivery = now_nanos(epoch);
        }
        let now = Instant::now();
        if frames > 0 {
            last_frame = now;
        }
        if now >= stop {
            break;
        }
        if m.producers_left.load(Ordering::Acquire) == 0 {
            let expect = m.expect.load(Ordering::Acquire);
            if expect > 0 && Counters::get(&c.consumed) >= expect {
                break;
            }
            if now.duration_since(last_frame) >= IDLE {
                break;
            }
        }
        if let Ok(res) = tokio::time::timeout(Duration::from_millis(200), r.fill()).await {
            res?;
        }
    }
    m.last_delivery.fetch_max(last_delivery, Ordering::Relaxed);
    if unacked > 0 && !no_ack {
        w.method(BasicAck { delivery_tag: last_tag, multiple: true })?;
        w.flush().await?;
    }
    if let Some(l) = lat {
        l.lock().await.extend(samples);
    }
    Ok(())
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Runs producers and consumers; prints progress and a summary.
pub async fn run(o: Opts, latency: bool) -> anyhow::Result<()> {
    let t = client::Target::parse(&o.uri)?;
    let layout = Layout::new(&o);
    setup(&o, &t, &layout).await?;
    let prefilled = if o.prefill > 0 { prefill(&o, &t, &layout).await? } else { 0 };
    let all_consumed = o.consumers >= layout.queues.len();
    let marks = Arc::new(Marks {
        producers_left: AtomicU64::new(o.producers as u64),
        expect_base: prefilled,
        per_published: if all_consumed { o.fanout.max(1) as u64 } else { 0 },
        expect: AtomicU64::new(if o.producers == 0 { prefilled } else { 0 }),
        ..Default::default()
    });
    let c = Arc::new(Counters::default());
    let tool_cpu = cpu_seconds(None);
    let broker_cpu = o.pid.and_then(|p| cpu_seconds(Some(p)));
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(o.duration);
    let lat = latency.then(|| Arc::new(Mutex::new(Vec::new())));
    let progress = crate::stats::progress(c.clone(), epoch);
    let mut tasks = Vec::new();
    for i in 0..o.consumers {
        let q = layout.consumer_queue(i).to_string();
        let stop = deadline + Duration::from_secs(if o.producers > 0 { o.grace } else { 0 });
        tasks.push(tokio::spawn(consumer(
            o.clone(),
            t.clone(),
            q,
            c.clone(),
            marks.clone(),
            epoch,
            lat.clone(),
            stop,
        )));
    }
    for i in 0..o.producers {
        let (ex, key) = layout.targets[i % layout.targets.len()].clone();
        let (o, t, c, m) = (o.clone(), t.clone(), c.clone(), marks.clone());
        tasks.push(tokio::spawn(async move {
            let res = producer(o, t, ex, key, c.clone(), m.clone(), epoch, deadline).await;
            m.producer_done(&c);
            res
        }));
    }
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
    let secs = epoch.elapsed().as_secs_f64();
    let tool_pct = cpu_percent(tool_cpu, cpu_seconds(None), secs);
    let broker_pct = cpu_percent(broker_cpu, o.pid.and_then(|p| cpu_seconds(Some(p))), secs);
    let broker_rss = o.pid.and_then(rss_bytes).map(|b| b as f64);
    let published = Counters::get(&c.published);
    let consumed = Counters::get(&c.consumed);
    let confirmed = Counters::get(&c.confirmed);
    let (pub_s, conf_s, cons_s) = (
        Marks::secs(&marks.publish_end),
        Marks::secs(&marks.confirm_end),
        Marks::secs(&marks.last_delivery),
    );
    let mut summary = format!(
        "{{\"published\":{published},\"confirmed\":{confirmed},\"consumed\":{consumed},\"prefilled\":{prefilled},\"seconds\":{secs:.3},\"publish_seconds\":{pub_s:.3},\"confirm_seconds\":{conf_s:.3},\"consume_seconds\":{cons_s:.3},\"publish_rate\":{:.0},\"confirm_rate\":{:.0},\"consume_rate\":{:.0},\"errors\":{},\"tool_cpu_pct\":{},\"broker_cpu_pct\":{},\"broker_rss_bytes\":{}",
        rate(published, pub_s),
        rate(confirmed, conf_s),
        rate(consumed, cons_s),
        Counters::get(&c.errors),
        json_num(tool_pct, 1),
        json_num(broker_pct, 1),
        json_num(broker_rss, 0),
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
    if o.cleanup {
        tokio::time::timeout(Duration::from_secs(300), cleanup(&t, &layout))
            .await
            .map_err(|_| anyhow::anyhow!("cleanup did not finish in 300 s"))??;
    }
    Ok(())
}

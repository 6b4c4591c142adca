//! `churn`: large operations and what they cost everyone else. Registers N consumers on one
//! queue and closes their channel, then binds a queue N times and deletes it; meanwhile a probe
//! connection makes round trips (basic.qos) and records the slowest. Prints how long each
//! operation took and the probe's worst round trip during it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use warren_wire::Method;
use warren_wire::method::{BasicConsume, BasicQos, ChannelClose, QueueBind};

use crate::client::{Reader, Target, Writer, connect, declare_queue, delete_queue, rpc};

/// Options of `churn`.
#[derive(Debug, Clone, Args)]
pub struct Opts {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Consumers on one queue, then closed with their channel.
    #[arg(long, default_value_t = 40_000)]
    pub consumers: usize,
    /// Bindings of one queue, then deleted with it.
    #[arg(long, default_value_t = 40_000)]
    pub bindings: usize,
}

/// Sends `n` methods made by `make`, pipelined, and waits for their `n` replies.
async fn pipelined(
    r: &mut Reader,
    w: &mut Writer,
    n: usize,
    make: impl Fn(usize) -> Method,
) -> anyhow::Result<()> {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        for i in chunk {
            w.method(make(*i))?;
        }
        w.flush().await?;
        for _ in chunk {
            r.method().await?;
        }
    }
    Ok(())
}

/// Round trips on its own connection until `stop`; returns the slowest, in seconds.
async fn probe(t: Target, stop: Arc<AtomicBool>) -> anyhow::Result<f64> {
    let (mut r, mut w) = connect(&t).await?;
    let mut worst = 0f64;
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        rpc(&mut r, &mut w, BasicQos::default()).await?;
        worst = worst.max(t0.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    w.close().await?;
    Ok(worst)
}

/// Times `op` while the probe runs: (seconds, the probe's worst round trip in ms).
async fn timed<F: std::future::Future<Output = anyhow::Result<()>>>(
    t: &Target,
    op: F,
) -> anyhow::Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(t.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    op.await?;
    let took = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let worst = prober.await??;
    Ok((took, worst * 1000.0))
}

/// Runs the scenario and prints a JSON summary.
pub async fn run(o: Opts) -> anyhow::Result<()> {
    let t = Target::parse(&o.uri)?;
    let (mut r, mut w) = connect(&t).await?;
    declare_queue(&mut r, &mut w, "churn-consumers", false).await?;
    pipelined(&mut r, &mut w, o.consumers, |i| {
        BasicConsume {
            queue: "churn-consumers".into(),
            consumer_tag: format!("c{i}").into(),
            ..Default::default()
        }
        .into()
    })
    .await?;
    let (close_s, close_probe_ms) = timed(&t, async {
        let reply = rpc(&mut r, &mut w, ChannelClose { reply_code: 200, ..Default::default() });
        match reply.await? {
            Method::ChannelCloseOk(_) => Ok(()),
            other => bail!("channel.close answered {}", other.name()),
        }
    })
    .await?;
    w.close().await?;

    let (mut r, mut w) = connect(&t).await?;
    declare_queue(&mut r, &mut w, "churn-bindings", false).await?;
    pipelined(&mut r, &mut w, o.bindings, |i| {
        QueueBind {
            queue: "churn-bindings".into(),
            exchange: "amq.direct".into(),
            routing_key: format!("k{i}").into(),
            ..Default::default()
        }
        .into()
    })
    .await?;
    let (delete_s, delete_probe_ms) =
        timed(&t, async { delete_queue(&mut r, &mut w, "churn-bindings").await.map(drop) }).await?;
    delete_queue(&mut r, &mut w, "churn-consumers").await?;
    w.close().await?;
    println!(
        "{{\"consumers\":{},\"close_seconds\":{close_s:.4},\"close_probe_max_ms\":{close_probe_ms:.2},\
         \"bindings\":{},\"delete_seconds\":{delete_s:.4},\"delete_probe_max_ms\":{delete_probe_ms:.2}}}",
        o.consumers, o.bindings
    );
    Ok(())
}

//! Crash cycles: publishers with confirms and consumers acking at full speed, `kill -9` at a
//! random moment, restart, and check the promises:
//! - every confirmed message is still queued or was acked (nothing confirmed is lost);
//! - nothing is queued twice, and the queue is in publish order;
//! - an acked message comes back only if it was acked in the last moment before the kill;
//! - a message delivered well before the kill and not acked comes back flagged redelivered.
//!
//! CI runs a few cycles; `WARREN_CRASH_CYCLES=100 cargo test -p warren --test e2e crash --
//! --nocapture` runs more by hand.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use crate::TestBroker;

/// Acks and deliveries this close to the kill may not have reached the disk.
const LAST_MOMENT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Model {
    confirmed: HashSet<u64>,
    delivered_at: HashMap<u64, Instant>,
    acked_at: HashMap<u64, Instant>,
}

fn id_of(data: &[u8]) -> u64 {
    std::str::from_utf8(data).ok().and_then(|s| s.parse().ok()).expect("numeric body")
}

fn pseudo_random(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(7);
    let mut x = nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

async fn publisher(ch: Channel, model: Arc<Mutex<Model>>, mut next: u64) {
    let props = BasicProperties::default().with_delivery_mode(2);
    loop {
        let mut pending = Vec::with_capacity(50);
        for id in next..next + 50 {
            let body = id.to_string();
            let sent = ch
                .basic_publish(
                    "".into(),
                    "crash".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props.clone(),
                )
                .await;
            match sent {
                Ok(confirm) => pending.push((id, confirm)),
                Err(_) => return,
            }
        }
        next += 50;
        // Only a message whose own confirm says ack counts as confirmed.
        for (id, confirm) in pending {
            match confirm.await {
                Ok(c) if c.is_ack() => {
                    model.lock().expect("model").confirmed.insert(id);
                }
                _ => return,
            }
        }
    }
}

async fn consumer(ch: Channel, model: Arc<Mutex<Model>>) {
    let Ok(mut deliveries) = ch
        .basic_consume(
            "crash".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    else {
        return;
    };
    while let Some(Ok(d)) = deliveries.next().await {
        let id = id_of(&d.data);
        model.lock().expect("model").delivered_at.entry(id).or_insert_with(Instant::now);
        if d.ack(Default::default()).await.is_err() {
            return;
        }
        model.lock().expect("model").acked_at.insert(id, Instant::now());
    }
}

/// Takes everything queued after a restart (acking it), in queue order, with flags.
async fn drain(broker: &TestBroker) -> (Vec<(u64, bool)>, lapin::Connection) {
    let (conn, ch) = broker.channel().await;
    let declared = ch
        .queue_declare(
            "crash".into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let n = declared.message_count() as usize;
    let mut got = Vec::with_capacity(n);
    if n > 0 {
        let mut deliveries = ch
            .basic_consume(
                "crash".into(),
                "drain".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        while got.len() < n {
            let d = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
                .await
                .expect("drained in time")
                .expect("open")
                .expect("delivery");
            got.push((id_of(&d.data), d.redelivered));
            d.ack(Default::default()).await.expect("ack");
        }
        ch.basic_cancel("drain".into(), Default::default()).await.expect("cancel");
    }
    // The acks reach the broker before the next cycle starts.
    ch.queue_declare(
        "crash".into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("round trip");
    (got, conn)
}

fn verify(cycle: u32, got: &[(u64, bool)], model: &Model, killed_at: Instant) {
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    let unique: HashSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "cycle {cycle}: a message is queued twice");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "cycle {cycle}: queue not in publish order");
    let lost: Vec<&u64> = model
        .confirmed
        .iter()
        .filter(|id| !unique.contains(id) && !model.acked_at.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "cycle {cycle}: {} confirmed messages lost, e.g. {:?} (delivered {:?} before the kill)",
        lost.len(),
        lost.first(),
        lost.first()
            .and_then(|id| model.delivered_at.get(id))
            .map(|at| killed_at.duration_since(*at))
    );
    for (id, redelivered) in got {
        if let Some(at) = model.acked_at.get(id) {
            assert!(
                killed_at.duration_since(*at) < LAST_MOMENT,
                "cycle {cycle}: message {id} acked {:?} before the kill came back",
                killed_at.duration_since(*at)
            );
        }
        if let Some(at) = model.delivered_at.get(id)
            && killed_at.duration_since(*at) >= LAST_MOMENT
        {
            assert!(
                redelivered,
                "cycle {cycle}: message {id}, delivered long before the kill, not redelivered"
            );
        }
    }
}

#[tokio::test]
async fn crash_cycles_keep_every_confirmed_message() {
    let cycles: u32 =
        std::env::var("WARREN_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut broker = TestBroker::start();
    let model = Arc::new(Mutex::new(Model::default()));
    let mut next_id = 0u64;
    let mut totals = (0usize, 0usize);
    let (_, mut drain_conn) = drain(&broker).await;
    for cycle in 0..cycles {
        let (pconn, pch) = broker.channel().await;
        pch.confirm_select(Default::default()).await.expect("confirm");
        let (cconn, cch) = broker.channel().await;
        cch.basic_qos(100, BasicQosOptions::default()).await.expect("qos");
        let p = tokio::spawn(publisher(pch, model.clone(), next_id));
        let c = tokio::spawn(consumer(cch, model.clone()));
        let run_for = Duration::from_millis(100 + pseudo_random(cycle as u64) % 400);
        tokio::time::sleep(run_for).await;
        let killed_at = Instant::now();
        broker.crash_and_restart();
        let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
        drop((pconn, cconn, drain_conn));
        let (got, conn) = drain(&broker).await;
        drain_conn = conn;
        let mut m = model.lock().expect("model");
        verify(cycle, &got, &m, killed_at);
        let now = Instant::now();
        for (id, _) in &got {
            m.acked_at.insert(*id, now);
        }
        totals.0 += m.confirmed.len();
        totals.1 += got.len();
        next_id = m.confirmed.iter().chain(m.delivered_at.keys()).max().map_or(0, |m| m + 1000);
        eprintln!(
            "crash cycle {cycle}: ran {run_for:?}, {} confirmed so far, {} queued after restart",
            m.confirmed.len(),
            got.len()
        );
    }
    assert!(totals.0 > 0, "publishers got confirms");
}

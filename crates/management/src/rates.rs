//! Message rates: every 5 seconds (RabbitMQ's default sampling interval) the sampler reads each
//! queue's counters and keeps the per-second rates since the last sample. Reading them costs
//! the AMQP side nothing: the counters are there anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warren_core::QueueStats;

use crate::Management;

/// How often the counters are sampled.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

/// Per-second rates of one queue (or a sum of queues).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct QueueRates {
    pub publish: f64,
    pub deliver: f64,
    pub ack: f64,
    pub redeliver: f64,
    pub messages: f64,
    pub ready: f64,
    pub unacked: f64,
}

impl QueueRates {
    fn add(&mut self, o: &QueueRates) {
        self.publish += o.publish;
        self.deliver += o.deliver;
        self.ack += o.ack;
        self.redeliver += o.redeliver;
        self.messages += o.messages;
        self.ready += o.ready;
        self.unacked += o.unacked;
    }
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Inner {
    last: HashMap<Key, (Instant, QueueStats)>,
    rates: HashMap<Key, QueueRates>,
}

/// The latest rates of every queue.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    inner: Mutex<Inner>,
}

fn per_second(now: u64, then: u64, secs: f64) -> f64 {
    (now as f64 - then as f64) / secs
}

impl Rates {
    /// Reads every queue's counters now.
    pub(crate) fn sample(&self, state: &Management) {
        let now = Instant::now();
        let mut fresh = HashMap::new();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut rates = HashMap::new();
        for v in state.broker.vhost_list() {
            for q in v.queue_list() {
                let key = (v.name.clone(), q.name.to_string());
                let s = q.stats();
                if let Some((then, old)) = inner.last.get(&key) {
                    let secs = now.duration_since(*then).as_secs_f64().max(0.001);
                    let r = QueueRates {
                        publish: per_second(s.published, old.published, secs),
                        deliver: per_second(s.delivered, old.delivered, secs),
                        ack: per_second(s.acked, old.acked, secs),
                        redeliver: per_second(s.redelivered, old.redelivered, secs),
                        messages: per_second(s.ready + s.unacked, old.ready + old.unacked, secs),
                        ready: per_second(s.ready, old.ready, secs),
                        unacked: per_second(s.unacked, old.unacked, secs),
                    };
                    rates.insert(key.clone(), r);
                }
                fresh.insert(key, (now, s));
            }
        }
        inner.last = fresh;
        inner.rates = rates;
    }

    /// The rates of one queue (zero until it has been sampled twice).
    pub(crate) fn queue(&self, vhost: &str, name: &str) -> QueueRates {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.rates.get(&(vhost.to_string(), name.to_string())).copied().unwrap_or_default()
    }

    /// The summed rates of the queues `keep` selects by vhost.
    pub(crate) fn total(&self, keep: impl Fn(&str) -> bool) -> QueueRates {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum = QueueRates::default();
        for ((v, _), r) in &inner.rates {
            if keep(v) {
                sum.add(r);
            }
        }
        sum
    }
}

/// Samples until the task is aborted.
pub(crate) async fn sample(state: Arc<Management>) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        state.rates.sample(&state);
    }
}

/// `{"rate": r}` as the API writes a detail.
pub(crate) fn detail(rate: f64) -> Value {
    json!({ "rate": (rate * 10.0).round() / 10.0 })
}

/// A `message_stats` object from counters and rates, as queues, vhosts and the overview
/// carry it.
pub(crate) fn message_stats(s: &QueueStats, r: &QueueRates) -> Value {
    json!({
        "publish": s.published, "publish_details": detail(r.publish),
        "deliver": s.delivered, "deliver_details": detail(r.deliver),
        "deliver_get": s.delivered, "deliver_get_details": detail(r.deliver),
        "ack": s.acked, "ack_details": detail(r.ack),
        "redeliver": s.redelivered, "redeliver_details": detail(r.redeliver),
    })
}

/// Adds queue counters together.
pub(crate) fn sum(into: &mut QueueStats, s: &QueueStats) {
    into.ready += s.ready;
    into.ready_bytes += s.ready_bytes;
    into.unacked += s.unacked;
    into.consumers += s.consumers;
    into.published += s.published;
    into.delivered += s.delivered;
    into.acked += s.acked;
    into.redelivered += s.redelivered;
}

//! Prometheus metrics, as `rabbitmq_prometheus` serves them on port 15692: `/metrics` with
//! node-wide figures (RabbitMQ's default, aggregated: queue metrics summed over queues,
//! channel metrics over channels) and `/metrics/per-object` with one series per queue
//! (`vhost`, `queue` labels). The metric names, types and labels are RabbitMQ's, so that the
//! usual Grafana dashboards' queries resolve; `rabbitmq_identity_info` carries the node and
//! cluster names they join on. No login, as RabbitMQ.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use warren_core::{QueueStats, Resource};

use crate::{Management, RABBITMQ_VERSION, rates};

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// One metric family being written.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# TYPE {name} {kind}\n# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

/// A label value, escaped as the format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn identity(state: &Management, out: &mut Out) {
    out.family("rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info");
    out.sample(
        "rabbitmq_build_info",
        &format!(
            "rabbitmq_version=\"{RABBITMQ_VERSION}\",prometheus_plugin_version=\"{RABBITMQ_VERSION}\",prometheus_client_version=\"4.9.1\",erlang_version=\"\",product_name=\"warren\",product_version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        ),
        1,
    );
    out.family("rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info");
    let node = esc(&state.node);
    out.sample(
        "rabbitmq_identity_info",
        &format!(
            "rabbitmq_node=\"{node}\",rabbitmq_cluster=\"{node}\",rabbitmq_cluster_permanent_id=\"warren-{node}\""
        ),
        1,
    );
}

fn node(state: &Management, out: &mut Out) {
    out.one(
        "rabbitmq_process_resident_memory_bytes",
        "gauge",
        "Memory used in bytes",
        crate::overview::resident_bytes(),
    );
    if let Some(limit) = state.resources.memory_limit {
        out.one(
            "rabbitmq_resident_memory_limit_bytes",
            "gauge",
            "Memory high watermark in bytes",
            limit,
        );
    }
    if let Some(free) = (state.resources.disk_free)() {
        out.one(
            "rabbitmq_disk_space_available_bytes",
            "gauge",
            "Disk space available in bytes",
            free,
        );
    }
    out.one(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        state.resources.disk_free_limit,
    );
    let alarms = &state.broker.alarms;
    out.one(
        "rabbitmq_alarms_memory_used_watermark",
        "gauge",
        "is 1 if VM memory watermark alarm is in effect",
        u8::from(alarms.is_set(Resource::Memory)),
    );
    out.one(
        "rabbitmq_alarms_free_disk_space_watermark",
        "gauge",
        "is 1 if free disk space watermark alarm is in effect",
        u8::from(alarms.is_set(Resource::Disk)),
    );
    out.one(
        "rabbitmq_alarms_file_descriptor_limit",
        "gauge",
        "is 1 if file descriptor limit alarm is in effect",
        0,
    );
    if let Some(n) = open_fds() {
        out.one("rabbitmq_process_open_fds", "gauge", "Open file descriptors", n);
    }
    if let Some(n) = max_fds() {
        out.one("rabbitmq_process_max_fds", "gauge", "Open file descriptors limit", n);
    }
    out.one(
        "rabbitmq_erlang_uptime_seconds",
        "gauge",
        "Node uptime",
        state.started.elapsed().as_secs(),
    );
}

/// Queue figures by (vhost, queue).
fn queue_stats(state: &Management) -> Vec<(String, String, QueueStats)> {
    let mut all = Vec::new();
    for v in state.broker.vhost_list() {
        for q in v.queue_list() {
            all.push((v.name.clone(), q.name.to_string(), q.stats()));
        }
    }
    all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    all
}

/// One queue metric: name, type, help, and its value in a queue's figures.
type QueueMetric = (&'static str, &'static str, &'static str, fn(&QueueStats) -> u64);

/// The queue metrics RabbitMQ has.
const QUEUE_METRICS: [QueueMetric; 6] = [
    (
        "rabbitmq_queue_messages_ready",
        "gauge",
        "Messages ready to be delivered to consumers",
        |s| s.ready,
    ),
    (
        "rabbitmq_queue_messages_unacked",
        "gauge",
        "Messages delivered to consumers but not yet acknowledged",
        |s| s.unacked,
    ),
    (
        "rabbitmq_queue_messages",
        "gauge",
        "Sum of ready and unacknowledged messages - total queue depth",
        |s| s.ready + s.unacked,
    ),
    ("rabbitmq_queue_messages_ready_bytes", "gauge", "Size in bytes of ready messages", |s| {
        s.ready_bytes
    }),
    ("rabbitmq_queue_consumers", "gauge", "Consumers on a queue", |s| s.consumers),
    (
        "rabbitmq_queue_messages_published_total",
        "counter",
        "Total number of messages published to queues",
        |s| s.published,
    ),
];

fn connections(state: &Management, out: &mut Out, queues: &[(String, String, QueueStats)]) {
    let conns = state.broker.connections.list();
    let (opened, closed) = state.broker.connections.churn();
    let channels: u64 = conns.iter().map(|c| u64::from(c.channel_count())).sum();
    out.one("rabbitmq_connections", "gauge", "Connections currently open", conns.len());
    out.one(
        "rabbitmq_connections_opened_total",
        "counter",
        "Total number of connections opened",
        opened,
    );
    out.one(
        "rabbitmq_connections_closed_total",
        "counter",
        "Total number of connections closed or terminated",
        closed,
    );
    out.one("rabbitmq_channels", "gauge", "Channels currently open", channels);
    let consumers: u64 = queues.iter().map(|q| q.2.consumers).sum();
    out.one("rabbitmq_consumers", "gauge", "Consumers currently connected", consumers);
    out.one("rabbitmq_queues", "gauge", "Queues available", queues.len());
    let c = state.broker.connections.totals();
    let channel_metrics: [(&str, &str, u64); 10] = [
        (
            "rabbitmq_channel_messages_published_total",
            "Total number of messages published into an exchange on a channel",
            c.published,
        ),
        (
            "rabbitmq_channel_messages_unroutable_returned_total",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            c.returned,
        ),
        (
            "rabbitmq_channel_messages_unroutable_dropped_total",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            c.dropped,
        ),
        (
            "rabbitmq_channel_messages_delivered_ack_total",
            "Total number of messages delivered to consumers in manual acknowledgement mode",
            c.delivered_ack,
        ),
        (
            "rabbitmq_channel_messages_delivered_total",
            "Total number of messages delivered to consumers in automatic acknowledgement mode",
            c.delivered_no_ack,
        ),
        (
            "rabbitmq_channel_get_ack_total",
            "Total number of messages fetched with basic.get in manual acknowledgement mode",
            c.get_ack,
        ),
        (
            "rabbitmq_channel_get_total",
            "Total number of messages fetched with basic.get in automatic acknowledgement mode",
            c.get_no_ack,
        ),
        (
            "rabbitmq_channel_get_empty_total",
            "Total number of times basic.get operations fetched no message",
            c.get_empty,
        ),
        (
            "rabbitmq_channel_messages_acked_total",
            "Total number of messages acknowledged by consumers",
            c.acked,
        ),
        (
            "rabbitmq_channel_messages_redelivered_total",
            "Total number of messages redelivered to consumers",
            c.redelivered,
        ),
    ];
    for (name, help, v) in channel_metrics {
        out.one(name, "counter", help, v);
    }
    let amqp = "protocol=\"amqp091\"";
    let global_metrics = [
        (
            "rabbitmq_global_messages_received_total",
            "Total number of messages received from publishers",
            c.published,
        ),
        (
            "rabbitmq_global_messages_delivered_total",
            "Total number of messages delivered to consumers",
            c.delivered_ack + c.delivered_no_ack + c.get_ack + c.get_no_ack,
        ),
        (
            "rabbitmq_global_messages_acknowledged_total",
            "Total number of messages acknowledged by consumers",
            c.acked,
        ),
        (
            "rabbitmq_global_messages_redelivered_total",
            "Total number of messages redelivered to consumers",
            c.redelivered,
        ),
        (
            "rabbitmq_global_messages_unroutable_returned_total",
            "Total number of messages returned to publishers as unroutable",
            c.returned,
        ),
        (
            "rabbitmq_global_messages_unroutable_dropped_total",
            "Total number of messages dropped as unroutable",
            c.dropped,
        ),
    ];
    for (name, help, v) in global_metrics {
        out.family(name, "counter", help);
        out.sample(name, amqp, v);
    }
}

/// `/metrics`: node-wide figures, queues summed.
async fn aggregated(State(state): State<Arc<Management>>) -> impl IntoResponse {
    let mut out = Out(String::with_capacity(16 * 1024));
    identity(&state, &mut out);
    node(&state, &mut out);
    let queues = queue_stats(&state);
    connections(&state, &mut out, &queues);
    let mut total = QueueStats::default();
    for (_, _, s) in &queues {
        rates::sum(&mut total, s);
    }
    for (name, kind, help, value) in QUEUE_METRICS {
        out.one(name, kind, help, value(&total));
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out.0)
}

/// `/metrics/per-object`: the same, with one series per queue.
async fn per_object(State(state): State<Arc<Management>>) -> impl IntoResponse {
    let mut out = Out(String::with_capacity(64 * 1024));
    identity(&state, &mut out);
    node(&state, &mut out);
    let queues = queue_stats(&state);
    connections(&state, &mut out, &queues);
    for (name, kind, help, value) in QUEUE_METRICS {
        out.family(name, kind, help);
        for (v, q, s) in &queues {
            out.sample(name, &format!("vhost=\"{}\",queue=\"{}\"", esc(v), esc(q)), value(s));
        }
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out.0)
}

/// Serves the metrics on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<Management>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(per_object))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_format_is_prometheus_text() {
        let mut out = Out(String::new());
        out.one("rabbitmq_queues", "gauge", "Queues available", 3);
        out.family("rabbitmq_queue_messages_ready", "gauge", "Ready");
        out.sample(
            "rabbitmq_queue_messages_ready",
            &format!("vhost=\"{}\",queue=\"q\"", esc("a\"b")),
            1,
        );
        assert_eq!(
            out.0,
            "# TYPE rabbitmq_queues gauge\n# HELP rabbitmq_queues Queues available\nrabbitmq_queues 3\n\
             # TYPE rabbitmq_queue_messages_ready gauge\n# HELP rabbitmq_queue_messages_ready Ready\n\
             rabbitmq_queue_messages_ready{vhost=\"a\\\"b\",queue=\"q\"} 1\n"
        );
    }
}

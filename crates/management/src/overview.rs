//! The node as a whole: `/api/overview` (versions, totals, rates, listeners), `/api/whoami`,
//! `/api/nodes`, `/api/cluster-name`, `/api/feature-flags`, `/api/extensions`, `/api/auth`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use warren_core::QueueStats;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::rates::{self, detail};
use crate::{Management, RABBITMQ_VERSION};

const EXCHANGE_TYPES: [(&str, &str); 6] = [
    ("direct", "AMQP direct exchange, as per the AMQP specification"),
    ("fanout", "AMQP fanout exchange, as per the AMQP specification"),
    ("headers", "AMQP headers exchange, as per the AMQP specification"),
    ("topic", "AMQP topic exchange, as per the AMQP specification"),
    ("x-consistent-hash", "Consistent Hashing Exchange"),
    ("x-delayed-message", "Delayed Message Exchange"),
];

fn exchange_types() -> Value {
    EXCHANGE_TYPES
        .iter()
        .map(|(name, description)| json!({"name": name, "description": description, "enabled": true}))
        .collect()
}

fn listeners(state: &Management) -> Value {
    state
        .listeners
        .iter()
        .map(|l| {
            json!({
                "node": state.node,
                "protocol": l.protocol,
                "ip_address": l.addr.ip().to_string(),
                "port": l.addr.port(),
                "socket_opts": {},
            })
        })
        .collect()
}

pub(crate) async fn overview(
    State(state): State<Arc<Management>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    let mut totals = QueueStats::default();
    let (mut queues, mut exchanges) = (0, 0);
    let vhosts = caller.visible_vhosts(&state);
    for v in &vhosts {
        for q in v.queue_list() {
            rates::sum(&mut totals, &q.stats());
            queues += 1;
        }
        exchanges += v.exchange_list().len();
    }
    let names: Vec<&str> = vhosts.iter().map(|v| v.name.as_str()).collect();
    let r = state.rates.total(|v| names.contains(&v));
    let connections = state.broker.connections.list();
    let mine = |c: &&Arc<warren_core::connections::ConnectionInfo>| {
        caller.is_monitor() || c.user == caller.user.name
    };
    let visible: Vec<_> = connections.iter().filter(mine).collect();
    let channels: u32 = visible.iter().map(|c| c.channel_count()).sum();
    let mut out = json!({
        "management_version": RABBITMQ_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "warren",
        "rabbitmq_version": RABBITMQ_VERSION,
        "cluster_name": state.node,
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": rates::message_stats(&totals, &r),
        "queue_totals": {
            "messages": totals.ready + totals.unacked,
            "messages_details": detail(r.messages),
            "messages_ready": totals.ready,
            "messages_ready_details": detail(r.ready),
            "messages_unacknowledged": totals.unacked,
            "messages_unacknowledged_details": detail(r.unacked),
        },
        "object_totals": {
            "channels": channels,
            "connections": visible.len(),
            "consumers": totals.consumers,
            "exchanges": exchanges,
            "queues": queues,
        },
        "statistics_db_event_queue": 0,
    });
    if caller.is_monitor() {
        out["node"] = json!(state.node);
        out["listeners"] = listeners(&state);
        out["contexts"] = json!([]);
    }
    Ok(Json(out))
}

pub(crate) async fn cluster_name(State(state): State<Arc<Management>>, _: Caller) -> Json<Value> {
    Json(json!({ "name": state.node }))
}

pub(crate) async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({ "name": caller.user.name, "tags": caller.user.tags }))
}

/// No login needed (the UI asks before it has credentials).
pub(crate) async fn auth() -> Json<Value> {
    Json(json!({"enable_uaa": false, "uaa_client_id": "", "uaa_location": ""}))
}

pub(crate) async fn extensions(_: Caller) -> Json<Value> {
    Json(json!([]))
}

const FEATURE_FLAGS: [(&str, &str); 9] = [
    ("classic_mirrored_queue_version", "Support setting version for classic mirrored queues"),
    ("drop_unroutable_metric", "Count unroutable publishes to be dropped in stats"),
    ("empty_basic_get_metric", "Count AMQP `basic.get` on empty queues in stats"),
    (
        "implicit_default_bindings",
        "Default bindings are now implicit, instead of being stored in the database",
    ),
    ("maintenance_mode_status", "Maintenance mode status"),
    ("quorum_queue", "Support queues of type `quorum`"),
    ("stream_queue", "Support queues of type `stream`"),
    ("user_limits", "Configure connection and channel limits for a user"),
    ("virtual_host_metadata", "Virtual host metadata (description, tags, etc)"),
];

pub(crate) async fn feature_flags(_: Caller) -> Json<Value> {
    Json(
        FEATURE_FLAGS
            .iter()
            .map(|(name, desc)| {
                json!({"name": name, "desc": desc, "doc_url": "", "state": "enabled",
                       "stability": "stable", "provided_by": "rabbit"})
            })
            .collect(),
    )
}

/// Resident memory of this process (`VmRSS` in /proc, as the memory alarm reads it; 0 where
/// there is none).
pub(crate) fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("");
    let kb: u64 = line["VmRSS:".len().min(line.len())..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0);
    kb * 1024
}

fn node_json(state: &Management) -> Value {
    let alarms = &state.broker.alarms;
    json!({
        "name": state.node,
        "type": "disc",
        "running": true,
        "os_pid": std::process::id().to_string(),
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "mem_used": resident_bytes(),
        "mem_limit": state.resources.memory_limit,
        "disk_free": (state.resources.disk_free)(),
        "disk_free_limit": state.resources.disk_free_limit,
        "uptime": state.started.elapsed().as_millis() as u64,
        "mem_alarm": alarms.is_set(warren_core::Resource::Memory),
        "disk_free_alarm": alarms.is_set(warren_core::Resource::Disk),
        "partitions": [],
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
        ],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
    })
}

pub(crate) async fn nodes(
    State(state): State<Arc<Management>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    Ok(Json(json!([node_json(&state)])))
}

pub(crate) async fn node(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    if name != state.node {
        return Err(ApiError::NotFound);
    }
    Ok(Json(node_json(&state)))
}

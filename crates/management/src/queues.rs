//! Queues: list (depths, consumers, rates), get, declare (PUT), delete, purge
//! (`DELETE .../contents`) and get messages (`POST .../get`, with RabbitMQ's ack modes).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};
use warren_core::users::{Kind, Perm};
use warren_core::vhost::VHost;
use warren_core::{Queue, QueueOptions};

use crate::Management;
use crate::auth::Caller;
use crate::connections::consumer_json;
use crate::error::{ApiError, ApiResult, short};
use crate::exchanges::flag;
use crate::json::{object_table, table_json};
use crate::query::{Params, listing};
use crate::rates::{self, detail};
use crate::users::{body_json, created};

/// The connection id the API declares and reads as: none of a client's (exclusive queues of
/// clients stay theirs).
const API_CONNECTION: warren_core::ConnectionId = 0;

fn queue_json(state: &Management, vhost: &str, q: &Queue) -> Value {
    let s = q.stats();
    let r = state.rates.queue(vhost, &q.name);
    let kind = if q.is_stream() {
        "stream"
    } else if q.args.quorum {
        "quorum"
    } else {
        "classic"
    };
    json!({
        "name": q.name.to_string(),
        "vhost": vhost,
        "type": kind,
        "durable": q.options.durable,
        "auto_delete": q.options.auto_delete,
        "exclusive": q.options.exclusive.is_some(),
        "arguments": table_json(&q.options.arguments),
        "node": state.node,
        "state": "running",
        "policy": q.policy(),
        "consumers": s.consumers,
        "messages": s.ready + s.unacked,
        "messages_details": detail(r.messages),
        "messages_ready": s.ready,
        "messages_ready_details": detail(r.ready),
        "messages_unacknowledged": s.unacked,
        "messages_unacknowledged_details": detail(r.unacked),
        "message_bytes_ready": s.ready_bytes,
        "message_stats": rates::message_stats(&s, &r),
    })
}

fn vhost_queues(state: &Management, v: &VHost) -> Vec<Value> {
    let mut qs = v.queue_list();
    qs.sort_by(|a, b| a.name.cmp(&b.name));
    qs.iter().map(|q| queue_json(state, &v.name, q)).collect()
}

pub(crate) async fn all(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let items =
        caller.visible_vhosts(&state).iter().flat_map(|v| vhost_queues(&state, v)).collect();
    listing(items, &params)
}

pub(crate) async fn in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    listing(vhost_queues(&state, &v), &params)
}

pub(crate) async fn one(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    let q = v.queue(&name).ok_or(ApiError::NotFound)?;
    let mut out = queue_json(&state, &v.name, &q);
    out["consumer_details"] =
        q.consumers().iter().map(|c| consumer_json(&state, &v.name, c)).collect();
    Ok(Json(out))
}

pub(crate) async fn put(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let v = caller.vhost(&state, &vhost)?;
    short(&name, "the queue name")?;
    let b = body_json(&body)?;
    let arguments = b
        .get("arguments")
        .map_or(Some(Default::default()), object_table)
        .ok_or_else(|| ApiError::BadRequest("arguments must be an object".into()))?;
    let options = QueueOptions {
        durable: flag(&b, "durable", false)?,
        exclusive: None,
        auto_delete: flag(&b, "auto_delete", false)?,
        arguments,
    };
    let new = v.queue(&name).is_none();
    let mut access = caller.access(&state, &vhost);
    // Blocking: a durable queue's definition is saved before the answer.
    let declared = tokio::task::block_in_place(|| {
        v.declare_queue_as(Some(&mut access), &name, false, options, API_CONNECTION)
    })?;
    v.watch_expiry(&declared.queue);
    Ok(created(new))
}

pub(crate) async fn delete(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<StatusCode> {
    let v = caller.vhost(&state, &vhost)?;
    caller.access(&state, &vhost).check(Perm::Configure, Kind::Queue, &name)?;
    let if_unused = params.get("if-unused").is_some_and(|s| s == "true");
    let if_empty = params.get("if-empty").is_some_and(|s| s == "true");
    v.queue(&name).ok_or(ApiError::NotFound)?;
    tokio::task::block_in_place(|| v.delete_queue(&name, if_unused, if_empty, API_CONNECTION))?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn purge(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let v = caller.vhost(&state, &vhost)?;
    caller.access(&state, &vhost).check(Perm::Read, Kind::Queue, &name)?;
    v.purge_queue(&name, API_CONNECTION)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What `POST .../get` does with each message it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckMode {
    /// Put back (redelivered), as a requeueing nack.
    Requeue,
    /// Acknowledged: gone.
    Ack,
    /// Rejected without requeue: dead-lettered if the queue says so.
    Reject,
}

fn ack_mode(text: &str) -> Option<AckMode> {
    match text {
        "ack_requeue_true" | "reject_requeue_true" => Some(AckMode::Requeue),
        "ack_requeue_false" => Some(AckMode::Ack),
        "reject_requeue_false" => Some(AckMode::Reject),
        _ => None,
    }
}

fn properties_json(p: &warren_wire::BasicProperties) -> Value {
    let mut o = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.to_string(), v);
        }
    };
    let s = |v: &Option<warren_wire::ShortStr>| v.as_ref().map(|s| json!(s.to_string()));
    put("content_type", s(&p.content_type));
    put("content_encoding", s(&p.content_encoding));
    put("headers", p.headers.as_ref().map(table_json));
    put("delivery_mode", p.delivery_mode.map(|v| json!(v)));
    put("priority", p.priority.map(|v| json!(v)));
    put("correlation_id", s(&p.correlation_id));
    put("reply_to", s(&p.reply_to));
    put("expiration", s(&p.expiration));
    put("message_id", s(&p.message_id));
    put("timestamp", p.timestamp.map(|v| json!(v)));
    put("type", s(&p.kind));
    put("user_id", s(&p.user_id));
    put("app_id", s(&p.app_id));
    // As RabbitMQ: a message without properties shows them as an empty list.
    if o.is_empty() { json!([]) } else { Value::Object(o) }
}

pub(crate) async fn get_messages(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    let b = body_json(&body)?;
    let count = b
        .get("count")
        .and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(|s| s.parse().ok())))
        .unwrap_or(1);
    let mode = ack_mode(b.get("ackmode").and_then(Value::as_str).unwrap_or(""))
        .ok_or(ApiError::Internal)?;
    let encoding = b.get("encoding").and_then(Value::as_str).unwrap_or("auto");
    let truncate = b
        .get("truncate")
        .and_then(|t| t.as_u64().or_else(|| t.as_str().and_then(|s| s.parse().ok())))
        .map(|t| t as usize);
    caller.access(&state, &vhost).check(Perm::Read, Kind::Queue, &name)?;
    let q = v.queue_for(&name, API_CONNECTION)?;
    if q.is_stream() {
        return Err(warren_core::stream::not_supported("basic.get", &name, &vhost).into());
    }
    let mut out = Vec::new();
    let mut taken = Vec::new();
    for _ in 0..count {
        // basic.get may read a paged-out message back from disk.
        let Some((entry, left)) = tokio::task::block_in_place(|| q.get()) else { break };
        let m = &entry.message;
        let full = m.body.len();
        let shown = &m.body[..truncate.map_or(full, |t| t.min(full))];
        let (payload, payload_encoding) = match (encoding, std::str::from_utf8(shown)) {
            ("auto", Ok(text)) => (text.to_string(), "string"),
            _ => (base64::engine::general_purpose::STANDARD.encode(shown), "base64"),
        };
        out.push(json!({
            "payload_bytes": full,
            "redelivered": entry.redelivered,
            "exchange": m.exchange.to_string(),
            "routing_key": m.routing_key.to_string(),
            "message_count": left,
            "properties": properties_json(&m.decoded_properties()),
            "payload": payload,
            "payload_encoding": payload_encoding,
        }));
        taken.push(entry);
    }
    match mode {
        AckMode::Requeue => q.requeue(taken),
        AckMode::Ack => q.settle(taken.iter()),
        AckMode::Reject => q.reject(taken),
    }
    Ok(Json(Value::Array(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_modes_are_rabbitmqs() {
        assert_eq!(ack_mode("ack_requeue_true"), Some(AckMode::Requeue));
        assert_eq!(ack_mode("reject_requeue_true"), Some(AckMode::Requeue));
        assert_eq!(ack_mode("ack_requeue_false"), Some(AckMode::Ack));
        assert_eq!(ack_mode("reject_requeue_false"), Some(AckMode::Reject));
        assert_eq!(ack_mode("bogus"), None);
    }

    #[test]
    fn empty_properties_are_an_empty_list() {
        assert_eq!(properties_json(&Default::default()), json!([]));
        let p = warren_wire::BasicProperties { delivery_mode: Some(2), ..Default::default() };
        assert_eq!(properties_json(&p), json!({"delivery_mode": 2}));
    }
}

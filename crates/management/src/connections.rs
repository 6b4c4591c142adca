//! Client connections, their channels and consumers: `/api/connections` (list, one, `DELETE`
//! closes it with 320 CONNECTION_FORCED), `/api/channels` (asked of each connection when
//! listed), `/api/vhosts/{vhost}/connections`, `/api/consumers`. Monitoring users and
//! administrators see every connection, others their own.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use warren_core::Consumer;
use warren_core::connections::{ChannelInfo, ConnectionInfo};

use crate::Management;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::table_json;
use crate::query::{Params, listing};

fn connection_json(state: &Management, c: &ConnectionInfo) -> Value {
    let client_properties = c.client_properties();
    let provided =
        client_properties.get("connection_name").and_then(|v| v.as_str()).map(str::to_string);
    json!({
        "name": c.name,
        "node": state.node,
        "type": "network",
        "state": "running",
        "protocol": "AMQP 0-9-1",
        "user": c.user,
        "vhost": c.vhost,
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "ssl": c.tls,
        "channels": c.channel_count(),
        "channel_max": c.channel_max,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "connected_at": c.connected_at,
        "client_properties": table_json(&client_properties),
        "user_provided_name": provided,
    })
}

fn visible(caller: &Caller, c: &ConnectionInfo) -> bool {
    caller.is_monitor() || c.user == caller.user.name
}

pub(crate) async fn all(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let conns = visible_connections(&state, &caller, |_| true);
    listing(conns.iter().map(|c| connection_json(&state, c)).collect(), &params)
}

pub(crate) async fn in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    caller.vhost(&state, &vhost)?;
    let conns = visible_connections(&state, &caller, |c| c.vhost == vhost);
    listing(conns.iter().map(|c| connection_json(&state, c)).collect(), &params)
}

fn find(state: &Management, caller: &Caller, name: &str) -> ApiResult<Arc<ConnectionInfo>> {
    state.broker.connections.by_name(name).filter(|c| visible(caller, c)).ok_or(ApiError::NotFound)
}

pub(crate) async fn one(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = find(&state, &caller, &name)?;
    Ok(Json(connection_json(&state, &c)))
}

/// Closes a connection (320 CONNECTION_FORCED with the `X-Reason` header's text, as
/// RabbitMQ): administrators any, others their own.
pub(crate) async fn close(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let c = find(&state, &caller, &name)?;
    if !caller.is_admin() && c.user != caller.user.name {
        return Err(ApiError::NotAuthorised("Not administrator user".into()));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    c.request_close(reason);
    Ok(StatusCode::NO_CONTENT)
}

/// A consumer as the API lists it (also in a queue's `consumer_details`).
pub(crate) fn consumer_json(state: &Management, vhost: &str, c: &Consumer) -> Value {
    let conn = state.broker.connections.by_id(c.connection);
    let (conn_name, peer_host, peer_port, user) = match &conn {
        Some(i) => (i.name.clone(), i.peer.ip().to_string(), i.peer.port(), i.user.clone()),
        None => (String::new(), String::new(), 0, String::new()),
    };
    json!({
        "consumer_tag": c.tag.to_string(),
        "queue": {"name": c.queue.name.to_string(), "vhost": vhost},
        "channel_details": {
            "connection_name": conn_name,
            "name": format!("{conn_name} ({})", c.channel),
            "node": state.node,
            "number": c.channel,
            "peer_host": peer_host,
            "peer_port": peer_port,
            "user": user,
        },
        "ack_required": !c.no_ack,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch(),
        "active": true,
        "activity_status": "up",
        "arguments": if c.priority == 0 { json!({}) } else { json!({"x-priority": c.priority}) },
    })
}

fn vhost_consumers(state: &Management, v: &warren_core::vhost::VHost) -> Vec<Value> {
    let mut qs = v.queue_list();
    qs.sort_by(|a, b| a.name.cmp(&b.name));
    qs.iter()
        .flat_map(|q| {
            q.consumers().into_iter().map(|c| consumer_json(state, &v.name, &c)).collect::<Vec<_>>()
        })
        .collect()
}

pub(crate) async fn consumers(
    State(state): State<Arc<Management>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    let items =
        caller.visible_vhosts(&state).iter().flat_map(|v| vhost_consumers(&state, v)).collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn consumers_in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    Ok(Json(Value::Array(vhost_consumers(&state, &v))))
}

fn channel_json(state: &Management, c: &ConnectionInfo, ch: &ChannelInfo) -> Value {
    json!({
        "name": format!("{} ({})", c.name, ch.number),
        "number": ch.number,
        "node": state.node,
        "user": c.user,
        "vhost": c.vhost,
        "state": "running",
        "connection_details": {
            "name": c.name,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
        },
        "consumer_count": ch.consumers,
        "messages_unacknowledged": ch.unacked,
        "messages_unconfirmed": ch.unconfirmed,
        "messages_uncommitted": ch.uncommitted_messages,
        "acks_uncommitted": ch.uncommitted_acks,
        "prefetch_count": ch.prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
    })
}

/// Every connection is asked at once: a busy one costs its one-second wait once, not once
/// per connection before it.
async fn channels_of(state: &Management, conns: &[Arc<ConnectionInfo>]) -> Vec<Value> {
    let asks: Vec<_> = conns
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move { c.channels().await })
        })
        .collect();
    let mut out = Vec::new();
    for (c, ask) in conns.iter().zip(asks) {
        for ch in ask.await.unwrap_or_default() {
            out.push(channel_json(state, c, &ch));
        }
    }
    out
}

fn visible_connections(
    state: &Management,
    caller: &Caller,
    keep: impl Fn(&ConnectionInfo) -> bool,
) -> Vec<Arc<ConnectionInfo>> {
    state.broker.connections.list().into_iter().filter(|c| visible(caller, c) && keep(c)).collect()
}

pub(crate) async fn channels(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let conns = visible_connections(&state, &caller, |_| true);
    listing(channels_of(&state, &conns).await, &params)
}

pub(crate) async fn channels_in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    caller.vhost(&state, &vhost)?;
    let conns = visible_connections(&state, &caller, |c| c.vhost == vhost);
    listing(channels_of(&state, &conns).await, &params)
}

pub(crate) async fn channels_of_connection(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = find(&state, &caller, &name)?;
    Ok(Json(Value::Array(channels_of(&state, &[c]).await)))
}

/// `/api/channels/{name}`: a channel by its name, `CONNECTION (NUMBER)`.
pub(crate) async fn channel(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let (conn, number) =
        name.strip_suffix(')').and_then(|n| n.rsplit_once(" (")).ok_or(ApiError::NotFound)?;
    let number: u16 = number.parse().map_err(|_| ApiError::NotFound)?;
    let c = find(&state, &caller, conn)?;
    let ch = c.channels().await.into_iter().find(|ch| ch.number == number);
    let ch = ch.ok_or(ApiError::NotFound)?;
    Ok(Json(channel_json(&state, &c, &ch)))
}

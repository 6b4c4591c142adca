//! Health checks (`/api/health/checks/*`, 200 `{"status":"ok"}` or 503 with the reason, as
//! RabbitMQ) and `/api/aliveness-test/{vhost}` (declares `aliveness-test`, publishes to it
//! and gets the message back).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use warren_core::publish::Scratch;
use warren_core::users::{Kind, Perm};
use warren_core::{Message, QueueOptions, Resource};

use crate::Management;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

fn failed(body: Value) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

pub(crate) async fn ok(_: Caller) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn alarms(State(state): State<Arc<Management>>, _: Caller) -> Response {
    let alarms = &state.broker.alarms;
    let mut set = Vec::new();
    for (r, name) in [(Resource::Memory, "memory"), (Resource::Disk, "disk")] {
        if alarms.is_set(r) {
            set.push(json!({"node": state.node, "resource": name}));
        }
    }
    if set.is_empty() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        failed(
            json!({"status": "failed", "reason": "resource alarm(s) in effect in the cluster", "alarms": set}),
        )
    }
}

pub(crate) async fn virtual_hosts(_: Caller) -> Json<Value> {
    // Every vhost of a warren node runs while the node does.
    Json(json!({"status": "ok"}))
}

pub(crate) async fn port_listener(
    State(state): State<Arc<Management>>,
    _: Caller,
    Path(port): Path<String>,
) -> ApiResult<Response> {
    let port: u16 = port.parse().map_err(|_| ApiError::BadRequest(format!("bad port {port}")))?;
    let ports: Vec<u16> = state.listeners.iter().map(|l| l.addr.port()).collect();
    Ok(if ports.contains(&port) {
        Json(json!({"status": "ok", "port": port})).into_response()
    } else {
        failed(
            json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}),
        )
    })
}

pub(crate) async fn protocol_listener(
    State(state): State<Arc<Management>>,
    _: Caller,
    Path(protocol): Path<String>,
) -> Response {
    let want = match protocol.as_str() {
        "amqp091" | "amqp" | "amqp0.9.1" | "amqp0-9-1" => "amqp",
        "amqps" | "amqp/ssl" => "amqp/ssl",
        "http" | "management" => "http",
        "prometheus" | "http/prometheus" => "http/prometheus",
        other => other,
    };
    let all: Vec<&str> = state.listeners.iter().map(|l| l.protocol).collect();
    if all.contains(&want) {
        Json(json!({"status": "ok", "protocol": want})).into_response()
    } else {
        failed(
            json!({"status": "failed", "reason": "No active listener", "missing": protocol, "protocols": all}),
        )
    }
}

pub(crate) async fn certificates(_: Caller, Path(_): Path<(String, String)>) -> Json<Value> {
    // Certificates are checked when loaded at start; none is reported as expiring here.
    Json(json!({"status": "ok"}))
}

pub(crate) async fn rebalance(_: Caller) -> StatusCode {
    // A single node has nothing to rebalance.
    StatusCode::NO_CONTENT
}

pub(crate) async fn aliveness(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    // As RabbitMQ's: through the caller's own permissions (configure and read on the queue,
    // write on the default exchange), and the gets take messages as no-ack gets do.
    let mut access = caller.access(&state, &vhost);
    access.check(Perm::Write, Kind::Exchange, "")?;
    access.check(Perm::Read, Kind::Queue, "aliveness-test")?;
    let options = QueueOptions {
        durable: false,
        exclusive: None,
        auto_delete: false,
        arguments: Default::default(),
    };
    let queue = v.declare_queue_as(Some(&mut access), "aliveness-test", false, options, 0)?.queue;
    let body = bytes::Bytes::from_static(b"test_message");
    let message = Message::new(
        "".into(),
        "aliveness-test".into(),
        &Default::default(),
        bytes::Bytes::new(),
        body.clone(),
    );
    v.publish(Arc::new(message), None, &mut Scratch::default())?;
    // Messages left there by earlier or concurrent tests come first: they go too.
    for _ in 0..1000 {
        let Some((entry, _)) = tokio::task::block_in_place(|| queue.get()) else { break };
        queue.settle([&entry]);
        if entry.message.body == body {
            return Ok(Json(json!({"status": "ok"})));
        }
    }
    Ok(Json(json!({"status": "failed", "reason": "the test message did not come back"})))
}

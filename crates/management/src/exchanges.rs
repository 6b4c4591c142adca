//! Exchanges: list, get, declare (PUT), delete, and publish through one
//! (`POST /api/exchanges/{vhost}/{name}/publish`, answered once the message is routed and, if
//! persistent, on disk).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};
use warren_core::exchange::{Exchange, ExchangeKind, ExchangeOptions};
use warren_core::publish::Scratch;
use warren_core::users::{Kind, Perm};
use warren_core::vhost::VHost;
use warren_wire::BasicProperties;

use crate::Management;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, short};
use crate::json::{object_table, table_json};
use crate::query::{Params, listing};
use crate::users::{body_json, created};

/// The API's name for the default exchange.
pub(crate) const DEFAULT: &str = "amq.default";

/// The exchange a path names (`amq.default` is the default exchange, "").
pub(crate) fn exchange_name(name: &str) -> &str {
    if name == DEFAULT { "" } else { name }
}

fn exchange_json(vhost: &str, x: &Exchange) -> Value {
    let kind = match &x.delayed {
        Some(_) => "x-delayed-message",
        None => x.type_name(),
    };
    json!({
        "name": x.name.to_string(),
        "vhost": vhost,
        "type": kind,
        "durable": x.options.durable,
        "auto_delete": x.options.auto_delete,
        "internal": x.options.internal,
        "arguments": table_json(&x.options.arguments),
        "user_who_performed_action": "",
    })
}

fn vhost_exchanges(v: &VHost) -> Vec<Value> {
    v.exchange_list().iter().map(|x| exchange_json(&v.name, x)).collect()
}

pub(crate) async fn all(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let items = caller.visible_vhosts(&state).iter().flat_map(|v| vhost_exchanges(v)).collect();
    listing(items, &params)
}

pub(crate) async fn in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    listing(vhost_exchanges(&v), &params)
}

pub(crate) async fn one(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    let x = v.exchange(exchange_name(&name)).ok_or(ApiError::NotFound)?;
    Ok(Json(exchange_json(&v.name, &x)))
}

/// A boolean as the API takes it: JSON true/false or the strings rabbitmqadmin sends.
pub(crate) fn flag(b: &Value, key: &str, default: bool) -> ApiResult<bool> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(v)) => Ok(*v),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::BadRequest(format!("{key}: not a boolean: {other}"))),
    }
}

pub(crate) async fn put(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let v = caller.vhost(&state, &vhost)?;
    short(&name, "the exchange name")?;
    let b = body_json(&body)?;
    let kind = b.get("type").and_then(Value::as_str).unwrap_or("direct").to_string();
    short(&kind, "the exchange type")?;
    let arguments = b
        .get("arguments")
        .map_or(Some(Default::default()), object_table)
        .ok_or_else(|| ApiError::BadRequest("arguments must be an object".into()))?;
    let options = ExchangeOptions {
        kind: ExchangeKind::parse(&kind).unwrap_or(ExchangeKind::Direct),
        durable: flag(&b, "durable", false)?,
        auto_delete: flag(&b, "auto_delete", false)?,
        internal: flag(&b, "internal", false)?,
        arguments,
    };
    let mut access = caller.access(&state, &vhost);
    let new = v.exchange(&name).is_none();
    if !name.is_empty() {
        // As over AMQP: configure on it; for a new one with an alternate exchange, read on
        // it and write on the alternate.
        access.check(Perm::Configure, Kind::Exchange, &name)?;
        if let Some(ae) = options.arguments.get("alternate-exchange").and_then(|v| v.as_str())
            && new
        {
            access.check(Perm::Read, Kind::Exchange, &name)?;
            access.check(Perm::Write, Kind::Exchange, ae)?;
        }
    }
    v.declare_exchange(&name, &kind, false, options)?;
    Ok(created(new))
}

pub(crate) async fn delete(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<StatusCode> {
    let v = caller.vhost(&state, &vhost)?;
    caller.access(&state, &vhost).check(Perm::Configure, Kind::Exchange, &name)?;
    v.exchange(&name).ok_or(ApiError::NotFound)?;
    let if_unused = params.get("if-unused").is_some_and(|s| s == "true");
    v.delete_exchange(&name, if_unused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Message properties from the API's JSON (as a content header's fields).
pub(crate) fn properties(p: &Value) -> ApiResult<BasicProperties> {
    let text = |k: &str| p.get(k).and_then(Value::as_str).map(Into::into);
    let num = |k: &str| {
        p.get(k).and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
    };
    let headers = match p.get("headers") {
        None => None,
        Some(h) => Some(
            object_table(h)
                .ok_or_else(|| ApiError::BadRequest("headers must be an object".into()))?,
        ),
    };
    Ok(BasicProperties {
        content_type: text("content_type"),
        content_encoding: text("content_encoding"),
        headers,
        delivery_mode: num("delivery_mode").map(|v| v as u8),
        priority: num("priority").map(|v| v as u8),
        correlation_id: text("correlation_id"),
        reply_to: text("reply_to"),
        expiration: text("expiration"),
        message_id: text("message_id"),
        timestamp: num("timestamp"),
        kind: text("type"),
        user_id: text("user_id"),
        app_id: text("app_id"),
        cluster_id: None,
    })
}

pub(crate) async fn publish(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    let b = body_json(&body)?;
    let missing: Vec<String> = ["properties", "routing_key", "payload", "payload_encoding"]
        .iter()
        .filter(|k| b.get(**k).is_none())
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::BadRequest(format!("[{}]", missing.join(",\n "))));
    }
    let exchange = exchange_name(&name);
    short(exchange, "the exchange name")?;
    caller.access(&state, &vhost).check(Perm::Write, Kind::Exchange, exchange)?;
    let routing_key = b["routing_key"].as_str().unwrap_or("").to_string();
    short(&routing_key, "the routing key")?;
    let payload = b["payload"].as_str().unwrap_or("");
    let body = match b["payload_encoding"].as_str() {
        Some("string") => bytes::Bytes::copy_from_slice(payload.as_bytes()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map(bytes::Bytes::from)
            .map_err(|e| ApiError::BadRequest(format!("payload is not base64: {e}")))?,
        _ => return Err(ApiError::BadRequest("payload_encoding: string or base64".into())),
    };
    let props = properties(&b["properties"])?;
    if props.encode(&mut bytes::BytesMut::new()).is_err() {
        return Err(ApiError::BadRequest(
            "a property is longer than the wire allows (255 bytes for a short string)".into(),
        ));
    }
    if props.user_id.as_deref().is_some_and(|u| *u != *caller.user.name) {
        return Err(ApiError::BadRequest(format!(
            "user_id property set to '{}' but authenticated user was '{}'",
            props.user_id.as_deref().unwrap_or_default(),
            caller.user.name
        )));
    }
    let message = Arc::new(warren_core::Message::new(
        exchange.into(),
        routing_key.as_str().into(),
        &props,
        bytes::Bytes::new(),
        body,
    ));
    let routed = v.publish(message, props.headers.as_ref(), &mut Scratch::default())?;
    if let Some(epoch) = routed.stored {
        // As RabbitMQ's API (it publishes with confirms): answered once on disk.
        let (tx, rx) = tokio::sync::oneshot::channel();
        state.broker.after_sync(move || {
            let _ = tx.send(());
        });
        if rx.await.is_err() || state.broker.failed_since(epoch) {
            return Err(ApiError::Internal);
        }
    }
    Ok(Json(json!({ "routed": routed.queues > 0 })))
}

//! Bindings: every listing RabbitMQ's API has (all, per vhost, between an exchange and a
//! queue or exchange, from or to one), creating one (`POST`, answered 201 with a relative
//! `Location` naming its properties key) and deleting one by its properties key.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use warren_core::users::{Kind, Perm};
use warren_core::vhost::{BindingInfo, VHost};
use warren_wire::FieldTable;

use crate::Management;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, short};
use crate::exchanges::exchange_name;
use crate::json::{object_table, table_json};
use crate::query::{Params, listing};
use crate::users::body_json;

/// Percent-encodes as a query string does (`quote_plus`), `~` too: RabbitMQ's
/// `quote_binding`.
fn quote(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A short, stable digest of binding arguments (RabbitMQ hashes the Erlang term; any stable
/// digest serves: clients only hand back what they were given).
fn args_digest(args: &FieldTable) -> String {
    use base64::Engine;
    let text = table_json(args).to_string();
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_be_bytes())
}

/// A binding's properties key: how the API names it (a URL segment carries it
/// percent-encoded once more, and arrives decoded to this).
fn properties_key(key: &str, args: &FieldTable) -> String {
    match (key.is_empty(), args.is_empty()) {
        (true, true) => "~".into(),
        (false, true) => quote(key),
        _ => format!("{}~{}", quote(key), args_digest(args)),
    }
}

fn binding_json(vhost: &str, b: &BindingInfo) -> Value {
    json!({
        "source": b.source,
        "vhost": vhost,
        "destination": b.destination,
        "destination_type": if b.to_queue { "queue" } else { "exchange" },
        "routing_key": b.routing_key,
        "arguments": table_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

fn listed(v: &VHost, keep: impl Fn(&BindingInfo) -> bool) -> Vec<Value> {
    v.binding_list().iter().filter(|b| keep(b)).map(|b| binding_json(&v.name, b)).collect()
}

pub(crate) async fn all(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let items = caller.visible_vhosts(&state).iter().flat_map(|v| listed(v, |_| true)).collect();
    listing(items, &params)
}

pub(crate) async fn in_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    listing(listed(&v, |_| true), &params)
}

pub(crate) async fn from_exchange(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    let name = exchange_name(&name);
    v.exchange(name).ok_or(ApiError::NotFound)?;
    Ok(Json(Value::Array(listed(&v, |b| b.source == name))))
}

pub(crate) async fn to_exchange(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    v.exchange(exchange_name(&name)).ok_or(ApiError::NotFound)?;
    Ok(Json(Value::Array(listed(&v, |b| !b.to_queue && b.destination == name))))
}

pub(crate) async fn to_queue(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    v.queue(&name).ok_or(ApiError::NotFound)?;
    Ok(Json(Value::Array(listed(&v, |b| b.to_queue && b.destination == name))))
}

/// `q` or `e` in a binding path.
fn to_queue_kind(kind: &str) -> ApiResult<bool> {
    match kind {
        "q" => Ok(true),
        "e" => Ok(false),
        _ => Err(ApiError::NotFound),
    }
}

fn between_of(
    v: &VHost,
    source: &str,
    kind: &str,
    destination: &str,
) -> ApiResult<Vec<BindingInfo>> {
    let to_queue = to_queue_kind(kind)?;
    let source = exchange_name(source);
    v.exchange(source).ok_or(ApiError::NotFound)?;
    let exists =
        if to_queue { v.queue(destination).is_some() } else { v.exchange(destination).is_some() };
    if !exists {
        return Err(ApiError::NotFound);
    }
    Ok(v.binding_list()
        .into_iter()
        .filter(|b| b.source == source && b.to_queue == to_queue && b.destination == destination)
        .collect())
}

pub(crate) async fn between(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    let found = between_of(&v, &source, &kind, &destination)?;
    Ok(Json(found.iter().map(|b| binding_json(&v.name, b)).collect()))
}

pub(crate) async fn one(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = caller.vhost(&state, &vhost)?;
    let found = between_of(&v, &source, &kind, &destination)?;
    let b = found
        .iter()
        .find(|b| properties_key(&b.routing_key, &b.arguments) == props)
        .ok_or(ApiError::NotFound)?;
    Ok(Json(binding_json(&v.name, b)))
}

fn check(
    caller: &Caller,
    state: &Management,
    vhost: &str,
    source: &str,
    to_queue: bool,
    destination: &str,
) -> ApiResult<()> {
    let mut access = caller.access(state, vhost);
    let kind = if to_queue { Kind::Queue } else { Kind::Exchange };
    access.check(Perm::Write, kind, destination)?;
    if !source.is_empty() {
        access.check(Perm::Read, Kind::Exchange, source)?;
    }
    Ok(())
}

pub(crate) async fn create(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let v = caller.vhost(&state, &vhost)?;
    let to_queue = to_queue_kind(&kind)?;
    let b = body_json(&body)?;
    let key = b.get("routing_key").and_then(Value::as_str).unwrap_or("").to_string();
    short(&key, "the routing key")?;
    let args = b
        .get("arguments")
        .map_or(Some(FieldTable::new()), object_table)
        .ok_or_else(|| ApiError::BadRequest("arguments must be an object".into()))?;
    let source = exchange_name(&source);
    check(&caller, &state, &vhost, source, to_queue, &destination)?;
    tokio::task::block_in_place(|| {
        if to_queue {
            v.bind_queue(&destination, source, &key, &args, 0)
        } else {
            v.bind_exchange(&destination, source, &key, &args)
        }
    })?;
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(location) =
        HeaderValue::from_str(&format!("{destination}/{}", properties_key(&key, &args)))
    {
        r.headers_mut().insert(header::LOCATION, location);
    }
    Ok(r)
}

pub(crate) async fn delete(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let v = caller.vhost(&state, &vhost)?;
    let to_queue = to_queue_kind(&kind)?;
    let found = between_of(&v, &source, &kind, &destination)?;
    let b = found
        .into_iter()
        .find(|b| properties_key(&b.routing_key, &b.arguments) == props)
        .ok_or(ApiError::NotFound)?;
    check(&caller, &state, &vhost, &b.source, to_queue, &destination)?;
    tokio::task::block_in_place(|| {
        if to_queue {
            v.unbind_queue(&destination, &b.source, &b.routing_key, &b.arguments, 0)
        } else {
            v.unbind_exchange(&destination, &b.source, &b.routing_key, &b.arguments)
        }
    })?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keys_as_rabbitmq_quotes_them() {
        assert_eq!(properties_key("", &FieldTable::new()), "~");
        assert_eq!(properties_key("k", &FieldTable::new()), "k");
        assert_eq!(properties_key("a b/c~", &FieldTable::new()), "a+b%2Fc%7E");
        let args = FieldTable::new().with("x-a", warren_wire::FieldValue::I64(1));
        let k = properties_key("k", &args);
        assert!(k.starts_with("k~") && k.len() > 3, "{k}");
        assert_eq!(k, properties_key("k", &args), "stable");
    }
}

//! Definitions in RabbitMQ's JSON format: `GET /api/definitions` exports users (with their
//! password hashes), vhosts, permissions, policies and the durable queues, exchanges and
//! bindings; `POST` imports such a file, RabbitMQ's own included. What warren cannot import
//! (runtime parameters such as shovels and federation, topic permissions, an unknown
//! hashing algorithm) is reported in a 400 answer after the rest was imported, never dropped
//! in silence. The per-vhost forms leave users, vhosts and permissions out.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use warren_core::QueueOptions;
use warren_core::exchange::{ExchangeKind, ExchangeOptions};
use warren_core::password::{self, PasswordHash};
use warren_core::policy::{ApplyTo, Policy};
use warren_core::users::Permissions;
use warren_core::vhost::VHost;
use warren_wire::FieldTable;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::exchanges::flag;
use crate::json::{object_table, table_json};
use crate::users::{body_json, password_of, tags_of};
use crate::{Management, RABBITMQ_VERSION};

fn vhost_parts(v: &VHost, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>, Vec<Value>) {
    let tag = |mut o: Map<String, Value>| {
        if with_vhost {
            o.insert("vhost".into(), json!(v.name));
        }
        Value::Object(o)
    };
    let obj = |v: Value| match v {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    let policies = v
        .policies()
        .iter()
        .map(|p| {
            tag(obj(json!({"name": p.name, "pattern": p.pattern, "apply-to": p.apply_to.as_str(),
                "definition": table_json(&p.definition), "priority": p.priority})))
        })
        .collect();
    let mut queues = v.queue_list();
    queues.retain(|q| q.options.durable && q.options.exclusive.is_none());
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    let durable_queue = |name: &str| queues.iter().any(|q| *q.name == *name);
    let exchanges: Vec<_> = v
        .exchange_list()
        .into_iter()
        .filter(|x| x.options.durable && !x.is_builtin() && !x.name.is_empty())
        .collect();
    let durable_exchange = |name: &str| v.exchange(name).is_some_and(|x| x.options.durable);
    let bindings = v
        .binding_list()
        .iter()
        .filter(|b| !b.source.is_empty() && durable_exchange(&b.source))
        .filter(|b| {
            if b.to_queue {
                durable_queue(&b.destination)
            } else {
                durable_exchange(&b.destination)
            }
        })
        .map(|b| {
            tag(obj(json!({"source": b.source, "destination": b.destination,
                "destination_type": if b.to_queue { "queue" } else { "exchange" },
                "routing_key": b.routing_key, "arguments": table_json(&b.arguments)})))
        })
        .collect();
    let queues_json = queues
        .iter()
        .map(|q| {
            tag(obj(json!({"name": q.name.to_string(), "durable": true,
                "auto_delete": q.options.auto_delete, "arguments": table_json(&q.options.arguments)})))
        })
        .collect();
    let exchanges_json = exchanges
        .iter()
        .map(|x| {
            let kind = if x.delayed.is_some() { "x-delayed-message" } else { x.type_name() };
            tag(obj(json!({"name": x.name.to_string(), "type": kind, "durable": true,
                "auto_delete": x.options.auto_delete, "internal": x.options.internal,
                "arguments": table_json(&x.options.arguments)})))
        })
        .collect();
    (policies, queues_json, exchanges_json, bindings)
}

pub(crate) async fn export(
    State(state): State<Arc<Management>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let b = &state.broker;
    let users: Vec<Value> = b
        .user_list()
        .iter()
        .map(|u| {
            json!({"name": u.name,
                "password_hash": u.password.as_ref().map_or(String::new(), PasswordHash::to_base64),
                "hashing_algorithm": password::ALGORITHM, "tags": u.tags,
                "limits": table_json(&b.user_limits(&u.name).to_table())})
        })
        .collect();
    let mut vhosts = b.vhost_list();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    let permissions: Vec<Value> = b
        .permission_list()
        .iter()
        .map(|(u, v, p)| {
            let (c, w, r) = p.texts();
            json!({"user": u, "vhost": v, "configure": c, "write": w, "read": r})
        })
        .collect();
    let (mut policies, mut queues, mut exchanges, mut bindings) = (vec![], vec![], vec![], vec![]);
    for v in &vhosts {
        let (p, q, x, bs) = vhost_parts(v, true);
        policies.extend(p);
        queues.extend(q);
        exchanges.extend(x);
        bindings.extend(bs);
    }
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users,
        "vhosts": vhosts.iter().map(|v| json!({"name": v.name})).collect::<Vec<_>>(),
        "permissions": permissions,
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

pub(crate) async fn export_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let v = state.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    let (policies, queues, exchanges, bindings) = vhost_parts(&v, false);
    Ok(Json(json!({
        "rabbit_version": RABBITMQ_VERSION,
        "parameters": [],
        "policies": policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

fn items<'a>(d: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    d.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// An item's `arguments` (or `definition`) as a field table; a problem if it is not one.
fn table_of(item: &Value, key: &str, problems: &mut Vec<String>) -> Option<FieldTable> {
    match item.get(key) {
        None => Some(FieldTable::new()),
        Some(v) => {
            let t = object_table(v);
            if t.is_none() {
                problems
                    .push(format!("{key} of {item}: not an object with keys of at most 255 bytes"));
            }
            t
        }
    }
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Imports what `d` holds; what could not be imported, one line each.
fn import_into(state: &Management, d: &Value, only: Option<&str>) -> Vec<String> {
    let b = &state.broker;
    let mut problems = Vec::new();
    let vhost_of =
        |item: &Value| only.map_or_else(|| text(item, "vhost").to_string(), str::to_string);
    if only.is_none() {
        for v in items(d, "vhosts") {
            if let Err(e) = b.create_vhost(text(v, "name")) {
                problems.push(format!("vhost '{}': {}", text(v, "name"), e.text));
            }
        }
        for u in items(d, "users") {
            let name = text(u, "name");
            let hash = password_of(u);
            let tags = tags_of(u.get("tags"));
            match hash {
                Ok(h) => {
                    if let Err(e) = b.put_user(name, Some(h), Some(tags)) {
                        problems.push(format!("user '{name}': {}", e.text));
                    }
                }
                Err(e) => problems.push(format!("user '{name}': {e}")),
            }
        }
        for p in items(d, "permissions") {
            let (u, v) = (text(p, "user"), text(p, "vhost"));
            let set = Permissions::new(text(p, "configure"), text(p, "write"), text(p, "read"))
                .and_then(|perms| b.set_permissions(u, v, perms));
            if let Err(e) = set {
                problems.push(format!("permissions of '{u}' in vhost '{v}': {}", e.text));
            }
        }
        if items(d, "topic_permissions").next().is_some() {
            problems.push("topic permissions are not supported by warren".into());
        }
        for p in items(d, "global_parameters") {
            if !matches!(text(p, "name"), "cluster_name" | "internal_cluster_id") {
                problems.push(format!(
                    "global parameter '{}' is not supported by warren",
                    text(p, "name")
                ));
            }
        }
    }
    for p in items(d, "parameters") {
        problems.push(format!(
            "runtime parameter '{}' of component '{}' is not supported by warren",
            text(p, "name"),
            text(p, "component")
        ));
    }
    let vhost = |item: &Value, problems: &mut Vec<String>| {
        let name = vhost_of(item);
        let v = b.vhost(&name);
        if v.is_none() {
            problems.push(format!("vhost '{name}' does not exist"));
        }
        v
    };
    for p in items(d, "policies") {
        let Some(v) = vhost(p, &mut problems) else { continue };
        let name = text(p, "name");
        let set = ApplyTo::parse(p.get("apply-to").and_then(Value::as_str).unwrap_or("all"))
            .and_then(|apply| {
                let definition = p.get("definition").and_then(object_table).ok_or_else(|| {
                    warren_core::AmqpError::precondition_failed(
                        "the definition is not an object with keys of at most 255 bytes",
                    )
                })?;
                let priority = p.get("priority").and_then(Value::as_i64).unwrap_or(0);
                Policy::new(name, text(p, "pattern"), apply, priority, definition)
            })
            .and_then(|policy| v.set_policy(policy));
        if let Err(e) = set {
            problems.push(format!("policy '{name}' in vhost '{}': {}", v.name, e.text));
        }
    }
    // Names and keys the wire could not carry are refused (the core relies on the bound).
    let too_long = |item: &Value, keys: &[&str], problems: &mut Vec<String>| {
        let long: Vec<&str> = keys.iter().copied().filter(|k| text(item, k).len() > 255).collect();
        if !long.is_empty() {
            problems.push(format!("{} longer than 255 bytes in {item}", long.join(", ")));
        }
        !long.is_empty()
    };
    for x in items(d, "exchanges") {
        if too_long(x, &["name", "type"], &mut problems) {
            continue;
        }
        let Some(v) = vhost(x, &mut problems) else { continue };
        let name = text(x, "name");
        let kind = text(x, "type");
        let options = ExchangeOptions {
            kind: ExchangeKind::parse(kind).unwrap_or(ExchangeKind::Direct),
            durable: flag(x, "durable", true).unwrap_or(true),
            auto_delete: flag(x, "auto_delete", false).unwrap_or(false),
            internal: flag(x, "internal", false).unwrap_or(false),
            arguments: match table_of(x, "arguments", &mut problems) {
                Some(t) => t,
                None => continue,
            },
        };
        if let Err(e) = v.declare_exchange(name, kind, false, options) {
            problems.push(format!("exchange '{name}' in vhost '{}': {}", v.name, e.text));
        }
    }
    for q in items(d, "queues") {
        if too_long(q, &["name"], &mut problems) {
            continue;
        }
        let Some(v) = vhost(q, &mut problems) else { continue };
        let name = text(q, "name");
        let options = QueueOptions {
            durable: flag(q, "durable", true).unwrap_or(true),
            exclusive: None,
            auto_delete: flag(q, "auto_delete", false).unwrap_or(false),
            arguments: match table_of(q, "arguments", &mut problems) {
                Some(t) => t,
                None => continue,
            },
        };
        match v.declare_queue(name, false, options, 0) {
            Ok(d) => v.watch_expiry(&d.queue),
            Err(e) => problems.push(format!("queue '{name}' in vhost '{}': {}", v.name, e.text)),
        }
    }
    for bd in items(d, "bindings") {
        if too_long(bd, &["routing_key"], &mut problems) {
            continue;
        }
        let Some(v) = vhost(bd, &mut problems) else { continue };
        let (source, dest, key) =
            (text(bd, "source"), text(bd, "destination"), text(bd, "routing_key"));
        let Some(args) = table_of(bd, "arguments", &mut problems) else { continue };
        let bound = match text(bd, "destination_type") {
            "exchange" => v.bind_exchange(dest, source, key, &args),
            _ => v.bind_queue(dest, source, key, &args, 0),
        };
        if let Err(e) = bound {
            problems
                .push(format!("binding '{source}' -> '{dest}' in vhost '{}': {}", v.name, e.text));
        }
    }
    problems
}

fn answer(problems: Vec<String>) -> ApiResult<StatusCode> {
    if problems.is_empty() {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::BadRequest(format!(
            "imported all but what follows:\n{}",
            problems.join("\n")
        )))
    }
}

pub(crate) async fn import(
    State(state): State<Arc<Management>>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let d = body_json(&body)?;
    answer(tokio::task::block_in_place(|| import_into(&state, &d, None)))
}

pub(crate) async fn import_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    let d = body_json(&body)?;
    answer(tokio::task::block_in_place(|| import_into(&state, &d, Some(&vhost))))
}

/// Imports a definitions file at start (`--definitions FILE`, RabbitMQ's `load_definitions`);
/// the problems, one line each.
pub fn load(state: &Management, text: &str) -> Result<Vec<String>, String> {
    let d: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    Ok(import_into(state, &d, None))
}

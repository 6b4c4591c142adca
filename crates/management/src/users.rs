//! Vhosts, users, permissions and policies: `/api/vhosts`, `/api/users`, `/api/permissions`,
//! `/api/policies`. A PUT that creates answers 201, one that changes 204; a DELETE of nothing
//! 404, as RabbitMQ.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use warren_core::QueueStats;
use warren_core::password::{self, PasswordHash};
use warren_core::policy::{ApplyTo, Policy};
use warren_core::users::{Permissions, User, parse_tags};

use crate::Management;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{object_table, table_json};
use crate::query::{Params, listing};
use crate::rates::{self, detail};

/// A request body as JSON (an empty body is `{}`, as RabbitMQ takes it).
pub(crate) fn body_json(body: &Bytes) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("not JSON: {e}")))
}

/// 201 for a creation, 204 for a change.
pub(crate) fn created(new: bool) -> StatusCode {
    if new { StatusCode::CREATED } else { StatusCode::NO_CONTENT }
}

fn vhost_json(state: &Management, v: &warren_core::vhost::VHost) -> Value {
    let mut s = QueueStats::default();
    for q in v.queue_list() {
        rates::sum(&mut s, &q.stats());
    }
    let r = state.rates.total(|name| name == v.name);
    let description = if v.name == "/" { "Default virtual host" } else { "" };
    json!({
        "name": v.name,
        "description": description,
        "tags": [],
        "default_queue_type": "undefined",
        "metadata": {"description": description, "tags": []},
        "tracing": false,
        "cluster_state": {state.node.clone(): "running"},
        "messages": s.ready + s.unacked,
        "messages_details": detail(r.messages),
        "messages_ready": s.ready,
        "messages_ready_details": detail(r.ready),
        "messages_unacknowledged": s.unacked,
        "messages_unacknowledged_details": detail(r.unacked),
        "message_stats": rates::message_stats(&s, &r),
    })
}

pub(crate) async fn vhosts(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    let mut all = state.broker.vhost_list();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let items = all
        .iter()
        .filter(|v| caller.is_monitor() || caller.sees(&state, &v.name))
        .map(|v| vhost_json(&state, v))
        .collect();
    listing(items, &params)
}

pub(crate) async fn vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let v = state.broker.vhost(&name).ok_or(ApiError::NotFound)?;
    if !caller.is_monitor() && !caller.sees(&state, &name) {
        return Err(ApiError::NotAuthorised("User not authorised to access virtual host".into()));
    }
    Ok(Json(vhost_json(&state, &v)))
}

pub(crate) async fn put_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let new = state.broker.create_vhost(&name)?;
    if new {
        // As RabbitMQ's API: the user who creates a vhost gets every permission in it.
        state.broker.set_permissions(&caller.user.name, &name, Permissions::all())?;
    }
    Ok(created(new))
}

pub(crate) async fn delete_vhost(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.broker.delete_vhost(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

fn permission_json(user: &str, vhost: &str, p: &Permissions) -> Value {
    let (configure, write, read) = p.texts();
    json!({"user": user, "vhost": vhost, "configure": configure, "write": write, "read": read})
}

fn permission_list(state: &Management, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    state
        .broker
        .permission_list()
        .into_iter()
        .filter(|(u, v, _)| keep(u, v))
        .map(|(u, v, p)| permission_json(&u, &v, &p))
        .collect()
}

pub(crate) async fn vhost_permissions(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    Ok(Json(Value::Array(permission_list(&state, |_, v| v == vhost))))
}

fn user_json(state: &Management, u: &User) -> Value {
    let limits = state.broker.user_limits(&u.name).to_table();
    json!({
        "name": u.name,
        "password_hash": u.password.as_ref().map_or(String::new(), PasswordHash::to_base64),
        "hashing_algorithm": password::ALGORITHM,
        "tags": u.tags,
        "limits": table_json(&limits),
    })
}

pub(crate) async fn users(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Query(params): Query<Params>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items = state.broker.user_list().iter().map(|u| user_json(&state, u)).collect();
    listing(items, &params)
}

pub(crate) async fn users_without_permissions(
    State(state): State<Arc<Management>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let with: Vec<String> = state.broker.permission_list().into_iter().map(|p| p.0).collect();
    let items = state
        .broker
        .user_list()
        .iter()
        .filter(|u| !with.contains(&u.name))
        .map(|u| user_json(&state, u))
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn user(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let u = state.broker.user(&name).ok_or(ApiError::NotFound)?;
    Ok(Json(user_json(&state, &u)))
}

/// Tags as the API and definitions give them: a comma-separated string or an array.
pub(crate) fn tags_of(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => parse_tags(s),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).flat_map(parse_tags).collect(),
        _ => Vec::new(),
    }
}

/// A user's password as the API and definitions give it (as RabbitMQ): a password, or a hash
/// made elsewhere (RabbitMQ's own export) in RabbitMQ's algorithm, or neither (no password
/// login). The reason it is refused, if it is.
pub(crate) fn password_of(u: &Value) -> Result<Option<PasswordHash>, String> {
    if let Some(p) = u.get("password").and_then(Value::as_str) {
        return Ok(Some(PasswordHash::new(p)));
    }
    let hash = u.get("password_hash").and_then(Value::as_str).unwrap_or("");
    if hash.is_empty() {
        return Ok(None);
    }
    let algorithm = u.get("hashing_algorithm").and_then(Value::as_str);
    if algorithm.is_some_and(|a| a != password::ALGORITHM) {
        return Err(format!(
            "hashing algorithm {} is not supported (only {})",
            algorithm.unwrap_or_default(),
            password::ALGORITHM
        ));
    }
    PasswordHash::from_base64(hash)
        .map(Some)
        .ok_or_else(|| "password_hash is not a salted SHA-256 hash".to_string())
}

pub(crate) async fn put_user(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = body_json(&body)?;
    let password = password_of(&b).map_err(ApiError::BadRequest)?;
    let new = state.broker.put_user(&name, Some(password), Some(tags_of(b.get("tags"))))?;
    Ok(created(new))
}

pub(crate) async fn delete_user(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.broker.delete_user(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn user_permissions(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state.broker.user(&user).ok_or(ApiError::NotFound)?;
    Ok(Json(Value::Array(permission_list(&state, |u, _| u == user))))
}

pub(crate) async fn permissions(
    State(state): State<Arc<Management>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(Value::Array(permission_list(&state, |_, _| true))))
}

pub(crate) async fn permission(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let p = state.broker.permissions(&user, &vhost).ok_or(ApiError::NotFound)?;
    Ok(Json(permission_json(&user, &vhost, &p)))
}

pub(crate) async fn put_permission(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = body_json(&body)?;
    let field = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let perms = Permissions::new(&field("configure"), &field("write"), &field("read"))?;
    let new = state.broker.permissions(&user, &vhost).is_none();
    if state.broker.vhost(&vhost).is_none() || !state.broker.has_user(&user) {
        return Err(ApiError::NotFound);
    }
    state.broker.set_permissions(&user, &vhost, perms)?;
    Ok(created(new))
}

pub(crate) async fn delete_permission(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if state.broker.clear_permissions(&user, &vhost)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

fn policy_json(vhost: &str, p: &Policy) -> Value {
    json!({
        "vhost": vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to.as_str(),
        "definition": table_json(&p.definition),
        "priority": p.priority,
    })
}

pub(crate) async fn policies(
    State(state): State<Arc<Management>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_policymaker()?;
    let items = caller
        .visible_vhosts(&state)
        .iter()
        .flat_map(|v| {
            v.policies().into_iter().map(|p| policy_json(&v.name, &p)).collect::<Vec<_>>()
        })
        .collect();
    Ok(Json(Value::Array(items)))
}

pub(crate) async fn vhost_policies(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_policymaker()?;
    let v = caller.vhost(&state, &vhost)?;
    Ok(Json(v.policies().iter().map(|p| policy_json(&v.name, p)).collect()))
}

pub(crate) async fn policy(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_policymaker()?;
    let v = caller.vhost(&state, &vhost)?;
    let p = v.policies().into_iter().find(|p| p.name == name).ok_or(ApiError::NotFound)?;
    Ok(Json(policy_json(&v.name, &p)))
}

pub(crate) async fn put_policy(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_policymaker()?;
    let v = caller.vhost(&state, &vhost)?;
    let b = body_json(&body)?;
    let pattern = b.get("pattern").and_then(Value::as_str).unwrap_or("");
    let apply_to = ApplyTo::parse(b.get("apply-to").and_then(Value::as_str).unwrap_or("all"))?;
    let priority = b.get("priority").and_then(Value::as_i64).unwrap_or(0);
    let definition = b
        .get("definition")
        .and_then(object_table)
        .ok_or_else(|| ApiError::BadRequest("definition must be an object".into()))?;
    let new = !v.policies().iter().any(|p| p.name == name);
    v.set_policy(Policy::new(&name, pattern, apply_to, priority, definition)?)?;
    Ok(created(new))
}

pub(crate) async fn delete_policy(
    State(state): State<Arc<Management>>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_policymaker()?;
    caller.vhost(&state, &vhost)?.clear_policy(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

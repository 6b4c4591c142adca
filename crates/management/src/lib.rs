//! The management HTTP API, as RabbitMQ's `rabbitmq_management` serves it on port 15672:
//! the same `/api` paths, JSON field names, status codes and basic-auth rules (user tags
//! `administrator`, `monitoring`, `policymaker`, `management`), so that tools written for
//! RabbitMQ (Flower, KEDA, NServiceBus, scripts, `rabbitmqadmin`) work unchanged.
//!
//! The web UI (`/`, `ui/index.html`, built in) is a page over the same API.
//!
//! It reads the routing core's state directly (queue depths and counters, the connection
//! registry) and changes it through the same core operations AMQP uses; nothing here sits on
//! the AMQP hot path. Rates come from a sampler that reads the counters every 5 seconds.

mod auth;
mod bindings;
mod connections;
pub mod definitions;
mod error;
mod exchanges;
mod health;
mod json;
mod overview;
mod prometheus;
mod query;
mod queues;
mod rates;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use warren_core::Broker;

pub use error::ApiError;
pub use json::{json_table, json_value, table_json, value_json};

/// The RabbitMQ version the API reports (`rabbitmq_version`, `management_version`): the
/// release whose API and behaviour warren follows, so that tools checking it accept warren.
pub const RABBITMQ_VERSION: &str = "3.10.8";

/// A listener the broker runs, as `/api/overview` lists it and the port-listener health
/// check looks for it.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `amqp`, `amqp/ssl`, `http`, `http/prometheus`.
    pub protocol: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The node's resource limits and where its disk stands, for `/api/nodes` and the metrics.
pub struct Resources {
    /// The memory high watermark in bytes, if known.
    pub memory_limit: Option<u64>,
    /// The free disk space limit in bytes.
    pub disk_free_limit: u64,
    /// Free bytes on the data dir's file system now.
    pub disk_free: Box<dyn Fn() -> Option<u64> + Send + Sync>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("memory_limit", &self.memory_limit)
            .field("disk_free_limit", &self.disk_free_limit)
            .finish_non_exhaustive()
    }
}

/// What the API serves from.
#[derive(Debug)]
pub struct Management {
    /// The broker.
    pub broker: Arc<Broker>,
    /// The node's name (`warren@HOST`).
    pub node: String,
    /// The broker's listeners.
    pub listeners: Vec<Listener>,
    /// Limits and disk space.
    pub resources: Resources,
    /// When the node started.
    pub started: std::time::Instant,
    rates: rates::Rates,
}

impl Management {
    /// The API's state for `broker`.
    pub fn new(
        broker: Arc<Broker>,
        node: String,
        listeners: Vec<Listener>,
        resources: Resources,
    ) -> Arc<Management> {
        let started = std::time::Instant::now();
        let rates = rates::Rates::default();
        Arc::new(Management { broker, node, listeners, resources, started, rates })
    }
}

/// Every route.
pub fn router(state: Arc<Management>) -> Router {
    Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/cluster-name", get(overview::cluster_name))
        .route("/api/whoami", get(overview::whoami))
        .route("/api/auth", get(overview::auth))
        .route("/api/extensions", get(overview::extensions))
        .route("/api/feature-flags", get(overview::feature_flags))
        .route("/api/nodes", get(overview::nodes))
        .route("/api/nodes/{node}", get(overview::node))
        .route("/api/vhosts", get(users::vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(users::vhost).put(users::put_vhost).delete(users::delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(users::vhost_permissions))
        .route("/api/users", get(users::users))
        .route("/api/users/without-permissions", get(users::users_without_permissions))
        .route(
            "/api/users/{user}",
            get(users::user).put(users::put_user).delete(users::delete_user),
        )
        .route("/api/users/{user}/permissions", get(users::user_permissions))
        .route("/api/permissions", get(users::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(users::permission).put(users::put_permission).delete(users::delete_permission),
        )
        .route("/api/exchanges", get(exchanges::all))
        .route("/api/exchanges/{vhost}", get(exchanges::in_vhost))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchanges::one).put(exchanges::put).delete(exchanges::delete),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(exchanges::publish))
        .route("/api/exchanges/{vhost}/{name}/bindings/source", get(bindings::from_exchange))
        .route("/api/exchanges/{vhost}/{name}/bindings/destination", get(bindings::to_exchange))
        .route("/api/queues", get(queues::all))
        .route("/api/queues/{vhost}", get(queues::in_vhost))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queues::one).put(queues::put).delete(queues::delete),
        )
        .route("/api/queues/{vhost}/{name}/contents", axum::routing::delete(queues::purge))
        .route("/api/queues/{vhost}/{name}/get", post(queues::get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(bindings::to_queue))
        .route("/api/bindings", get(bindings::all))
        .route("/api/bindings/{vhost}", get(bindings::in_vhost))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings::between).post(bindings::create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(bindings::one).delete(bindings::delete),
        )
        .route("/api/connections", get(connections::all))
        .route("/api/connections/{name}", get(connections::one).delete(connections::close))
        .route("/api/vhosts/{vhost}/connections", get(connections::in_vhost))
        .route("/api/connections/{name}/channels", get(connections::channels_of_connection))
        .route("/api/channels", get(connections::channels))
        .route("/api/channels/{name}", get(connections::channel))
        .route("/api/vhosts/{vhost}/channels", get(connections::channels_in_vhost))
        .route("/api/consumers", get(connections::consumers))
        .route("/api/consumers/{vhost}", get(connections::consumers_in_vhost))
        .route("/api/definitions", get(definitions::export).post(definitions::import))
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .route("/api/policies", get(users::policies))
        .route("/api/policies/{vhost}", get(users::vhost_policies))
        .route(
            "/api/policies/{vhost}/{name}",
            get(users::policy).put(users::put_policy).delete(users::delete_policy),
        )
        .route("/api/health/checks/alarms", get(health::alarms))
        .route("/api/health/checks/local-alarms", get(health::alarms))
        .route("/api/health/checks/virtual-hosts", get(health::virtual_hosts))
        .route("/api/health/checks/port-listener/{port}", get(health::port_listener))
        .route("/api/health/checks/protocol-listener/{protocol}", get(health::protocol_listener))
        .route("/api/health/checks/node-is-quorum-critical", get(health::ok))
        .route("/api/health/checks/node-is-mirror-sync-critical", get(health::ok))
        .route(
            "/api/health/checks/certificate-expiration/{within}/{unit}",
            get(health::certificates),
        )
        .route("/api/aliveness-test/{vhost}", get(health::aliveness))
        .route("/api/rebalance/queues", put(health::rebalance).post(health::rebalance))
        .route("/", get(ui))
        .route("/index.html", get(ui))
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(json_only))
        // RabbitMQ's default max_body_size: a definitions file can be large.
        .layer(axum::extract::DefaultBodyLimit::max(20 * 1024 * 1024))
        .with_state(state)
}

/// As RabbitMQ's API: a request with a body must say it is JSON (415 otherwise). A form or
/// `text/plain` POST, which another site can make a logged-in browser send without asking,
/// is refused before it reaches a handler.
async fn json_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let has_body = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n != "0")
        || req.headers().contains_key(axum::http::header::TRANSFER_ENCODING);
    let json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("application/json"));
    if has_body && !json {
        return axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
    }
    next.run(req).await
}

pub use prometheus::serve as serve_prometheus;

/// The web UI: one page, built into the binary (nothing is fetched from elsewhere).
const UI: &str = include_str!("../ui/index.html");

async fn ui() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        UI,
    )
}

/// Serves the API on `listener` until `shutdown` completes; the rate sampler runs meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: Arc<Management>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sampler = tokio::spawn(rates::sample(state.clone()));
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    sampler.abort();
    served
}

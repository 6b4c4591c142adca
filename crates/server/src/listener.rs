//! The accept loop: one task per connection, tracked so that shutdown can close them all with
//! 320 CONNECTION_FORCED and wait for them before the process exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use warren_core::Broker;

use crate::alarm::{self, Limits};
use crate::config::Config;
use crate::connection;

/// Listens until SIGTERM or SIGINT, then closes every connection and returns.
pub async fn run(config: Config, broker: Arc<Broker>, limits: Limits) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let tls = match crate::tls::acceptor(&config)? {
        Some(acceptor) => {
            let l = TcpListener::bind(config.ssl_listen)
                .await
                .with_context(|| format!("binding {} for TLS", config.ssl_listen))?;
            let tls_local = l.local_addr().context("reading the TLS address")?;
            info!("AMQPS (TLS) on {tls_local}");
            Some((l, acceptor, tls_local))
        }
        None => None,
    };
    let control_socket = crate::control::bind(&config.data_dir);
    let mut listeners = vec![warren_management::Listener { protocol: "amqp", addr: local }];
    if let Some((_, _, tls_local)) = &tls {
        listeners.push(warren_management::Listener { protocol: "amqp/ssl", addr: *tls_local });
    }
    let http = match config.management_listen.0 {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} for the management API"))?;
            let http_local = l.local_addr().context("reading the management address")?;
            listeners.push(warren_management::Listener { protocol: "http", addr: http_local });
            info!("management API on http://{http_local}");
            Some(l)
        }
        None => None,
    };
    let metrics = match config.prometheus_listen.0 {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} for Prometheus metrics"))?;
            let metrics_local = l.local_addr().context("reading the metrics address")?;
            listeners.push(warren_management::Listener {
                protocol: "http/prometheus",
                addr: metrics_local,
            });
            info!("Prometheus metrics on http://{metrics_local}/metrics");
            Some(l)
        }
        None => None,
    };
    let data_dir = config.data_dir.clone();
    let resources = warren_management::Resources {
        memory_limit: limits.memory(),
        disk_free_limit: limits.disk_free(),
        disk_free: Box::new(move || alarm::disk_free(&data_dir).ok()),
    };
    let management =
        warren_management::Management::new(broker.clone(), node_name(), listeners, resources);
    if let Some(path) = &config.definitions {
        load_definitions(&management, path)?;
    }
    info!("listening on {local}");
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::spawn(alarm::monitor(broker.clone(), config.clone(), limits, shutdown.clone()));
    let control = control_socket.map(|socket| {
        tokio::spawn(crate::control::serve(broker.clone(), socket, shutdown.clone()))
    });
    let metrics = metrics.map(|l| {
        let (stop, state) = (shutdown.clone(), management.clone());
        tokio::spawn(async move {
            let stopped = async move { stop.cancelled().await };
            if let Err(e) = warren_management::serve_prometheus(l, state, stopped).await {
                warn!("Prometheus metrics stopped: {e}");
            }
        })
    });
    let http = http.map(|l| {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let stopped = async move { stop.cancelled().await };
            if let Err(e) = warren_management::serve(l, management, stopped).await {
                warn!("management API stopped: {e}");
            }
        })
    });
    // Recovered queues with x-expires: their period starts now, as with RabbitMQ.
    broker.watch_expiring_queues();
    broker.start_delayed_exchanges();
    // RabbitMQ's line, which tooling waits for (testcontainers' RabbitMQ modules, scripts).
    info!("Server startup complete");
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let (broker, config, shutdown) = (broker.clone(), config.clone(), shutdown.clone());
                    let socket = connection::socket::Stream::Tcp(socket);
                    tracker.spawn(connection::serve(socket, peer, local, None, broker, config, shutdown));
                }
                Err(e) => accept_failed(e).await,
            },
            accepted = accept_tls(tls.as_ref()) => match accepted {
                Ok((socket, peer, acceptor, local)) => {
                    let (broker, config, shutdown) = (broker.clone(), config.clone(), shutdown.clone());
                    let addrs = (peer, local);
                    tracker.spawn(crate::tls::serve(socket, addrs, acceptor, broker, config, shutdown));
                }
                Err(e) => accept_failed(e).await,
            },
        }
    }
    info!("shutting down: closing {} connection(s)", tracker.len());
    drop(listener);
    drop(tls);
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.is_err() {
        warn!("some connections did not close within 5 s");
    }
    if let Some(control) = control {
        let _ = control.await;
    }
    for server in [http, metrics].into_iter().flatten() {
        // Requests in flight finish; a client keeping a connection open does not hold us.
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    }
    info!("stopped");
    Ok(())
}

/// Out of file descriptors and the like: back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The next TLS client; never without a TLS listener.
#[allow(clippy::type_complexity)]
async fn accept_tls(
    tls: Option<&(TcpListener, tokio_rustls::TlsAcceptor, SocketAddr)>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr, tokio_rustls::TlsAcceptor, SocketAddr)> {
    let Some((listener, acceptor, local)) = tls else { return std::future::pending().await };
    let (socket, peer) = listener.accept().await?;
    Ok((socket, peer, acceptor.clone(), *local))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}

/// The node's name as the management API shows it (RabbitMQ's `rabbit@HOST`).
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("warren@{host}")
}

/// Imports `--definitions` (RabbitMQ's load_definitions): a file that cannot be read or is
/// not JSON stops the start; what in it cannot be imported is logged.
fn load_definitions(
    management: &warren_management::Management,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading definitions from {}", path.display()))?;
    let problems = warren_management::definitions::load(management, &text)
        .map_err(|e| anyhow::anyhow!("definitions in {}: {e}", path.display()))?;
    for p in &problems {
        warn!("definitions in {}: not imported: {p}", path.display());
    }
    info!("imported definitions from {}", path.display());
    Ok(())
}

//! The accept loop: one task per connection, tracked so that shutdown can close them all with
//! 320 CONNECTION_FORCED and wait for them before the process exits.

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
            info!("AMQPS (TLS) on {}", l.local_addr().context("reading the TLS address")?);
            Some((l, acceptor))
        }
        None => None,
    };
    let control_socket = crate::control::bind(&config.data_dir);
    info!("listening on {local}");
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::spawn(alarm::monitor(broker.clone(), config.clone(), limits, shutdown.clone()));
    let control = control_socket.map(|socket| {
        tokio::spawn(crate::control::serve(broker.clone(), socket, shutdown.clone()))
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
                    tracker.spawn(connection::serve(socket, peer, None, broker, config, shutdown));
                }
                Err(e) => accept_failed(e).await,
            },
            accepted = accept_tls(tls.as_ref()) => match accepted {
                Ok((socket, peer, acceptor)) => {
                    let (broker, config, shutdown) = (broker.clone(), config.clone(), shutdown.clone());
                    tracker.spawn(crate::tls::serve(socket, peer, acceptor, broker, config, shutdown));
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
    info!("stopped");
    Ok(())
}

/// Out of file descriptors and the like: back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The next TLS client; never without a TLS listener.
async fn accept_tls(
    tls: Option<&(TcpListener, tokio_rustls::TlsAcceptor)>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr, tokio_rustls::TlsAcceptor)> {
    let Some((listener, acceptor)) = tls else { return std::future::pending().await };
    let (socket, peer) = listener.accept().await?;
    Ok((socket, peer, acceptor.clone()))
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

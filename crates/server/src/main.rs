//! The `warren` binary: parses flags, opens the data directory, listens, and shuts down on
//! SIGTERM or SIGINT after closing client connections with 320 CONNECTION_FORCED.
//!
//! # Layout
//! - [`config`]: flags and environment variables.
//! - [`control`]: the control socket and `warren ctl` (policies, limits).
//! - [`alarm`]: the memory and disk monitor that sets the broker's alarms.
//! - [`listener`]: the accept loops (AMQP, and AMQPS when configured) and graceful shutdown.
//! - [`tls`]: AMQPS with rustls, and the EXTERNAL mechanism's user from a client certificate.
//! - [`connection`]: one task per client connection: handshake, frame dispatch, heartbeats,
//!   deliveries, and the socket writer.
//! - [`channel`]: the channel state machine: content assembly and one file per method class.

mod alarm;
mod channel;
mod config;
mod connection;
mod control;
mod listener;
mod tls;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use warren_core::{Broker, Defaults};

fn main() -> anyhow::Result<()> {
    let config = config::Config::parse_with_rabbitmq_env();
    if let Some(config::Command::Ctl(ctl)) = &config.command {
        return control::run_ctl(&config.data_dir, ctl);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let defaults = Defaults {
        user: config.default_user.clone(),
        password: config.default_pass.clone(),
        vhost: config.default_vhost.clone(),
        loopback_only: config.default_user_loopback_only(),
    };
    let broker = Broker::open(&config.data_dir, &defaults)
        .with_context(|| format!("opening data dir {}", config.data_dir.display()))?;
    // Alarms are in force before the first client: a broker started on a full disk blocks
    // publishers at once and serves consumers.
    broker.set_node_limits(config.node_limits());
    let limits = alarm::Limits::new(&config);
    alarm::check(&broker, &config.data_dir, limits);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let served = runtime.block_on(listener::run(config, broker.clone(), limits));
    // Connections are closed: flush and fsync what the store holds, then exit.
    broker.close();
    // Reads on the blocking pool (consumers fed from disk) may be stuck on a disk that hangs:
    // give them a moment, then exit without them (dropping the runtime would wait for them).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

//! The `warren` binary: parses flags, opens the data directory, listens, and shuts down on
//! SIGTERM or SIGINT after closing client connections with 320 CONNECTION_FORCED.
//!
//! # Layout
//! - [`config`]: flags and environment variables.
//! - [`listener`]: the accept loop and graceful shutdown.
//! - [`connection`]: one task per client connection: handshake, frame dispatch, heartbeats,
//!   deliveries, and the socket writer.
//! - [`channel`]: the channel state machine: content assembly and one file per method class.

mod channel;
mod config;
mod connection;
mod listener;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use warren_core::Broker;

fn main() -> anyhow::Result<()> {
    let config = config::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let broker = Arc::new(Broker::with_default_user(
        &config.default_user,
        &config.default_pass,
        &config.default_vhost,
        config.default_user_loopback_only(),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(listener::run(config, broker))
}

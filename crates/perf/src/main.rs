//! `warren-perf`: a load generator for AMQP 0-9-1 brokers in the spirit of RabbitMQ's PerfTest
//! and lavinmqperf, built on warren's own wire codec so that the tool is never the bottleneck.
//! It only connects where it is told, and every run is bounded in time or count.
//!
//! # Layout
//! - `client`: a minimal raw AMQP client.
//! - `throughput`: the throughput and latency subcommands.
//! - `backlog`: the backlog and ready subcommands.
//! - `connections`: the connections subcommand.
//! - `stream`: stream queues: fill, read from the start, many readers at spread offsets.
//! - `churn`: large operations (many consumers, many bindings) and their cost to others.
//! - `stats`: counters, progress line, /proc readings.

mod backlog;
mod churn;
mod client;
mod connections;
mod stats;
mod stream;
mod throughput;

use clap::{Parser, Subcommand};

/// Load generator for AMQP 0-9-1 brokers.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Producers and consumers at full speed (or a rate cap); rates per second.
    Throughput(throughput::Opts),
    /// End-to-end latency percentiles at a fixed publish rate (use --rate).
    Latency(throughput::Opts),
    /// Open and hold N connections; memory per connection.
    Connections(connections::Opts),
    /// Fill a durable queue with persistent messages, report memory/disk, drain it.
    Backlog(backlog::Opts),
    /// Wait until a (restarted) broker serves a queue with the expected count.
    Ready(backlog::ReadyOpts),
    /// Close a channel of N consumers and delete a queue of N bindings, while a probe
    /// connection measures its round trips.
    Churn(churn::Opts),
    /// Fill a stream queue, read it whole from `first`, attach many readers at spread
    /// offsets; rates and memory.
    Stream(stream::Opts),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Throughput(o) => throughput::run(o, false).await,
            Command::Latency(o) => throughput::run(o, true).await,
            Command::Connections(o) => connections::run(o).await,
            Command::Backlog(o) => backlog::run(o).await,
            Command::Ready(o) => backlog::ready(o).await,
            Command::Churn(o) => churn::run(o).await,
            Command::Stream(o) => stream::run(o).await,
        }
    })
}

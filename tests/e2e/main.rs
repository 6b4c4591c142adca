//! End-to-end tests: the real `warren` binary on an ephemeral port with a temporary data dir,
//! driven by lapin. One test binary made of modules, one module per area.

mod acks;
mod alarm;
mod broker;
mod cli;
mod connection;
mod consume;
mod conventions;
mod crash;
mod delayed;
mod disk;
mod dlx;
mod exchanges;
mod flow;
mod http;
mod limits;
mod management;
mod metrics;
mod node_limits;
mod paging;
mod permissions;
mod persistence;
mod policy;
mod priority;
mod publish;
mod queues;
mod quorum;
mod raw;
mod routing;
mod rpc;
mod scale;
mod streams;
mod support;
mod tls;
mod ttl;
mod vhost_limits;

pub use broker::TestBroker;

//! End-to-end tests: the real `warren` binary on an ephemeral port with a temporary data dir,
//! driven by lapin. One test binary made of modules, one module per area.

mod broker;
mod connection;
mod raw;
mod rpc;

pub use broker::TestBroker;

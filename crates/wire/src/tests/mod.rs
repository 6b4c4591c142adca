//! Crate-level tests: round trips of every method and property set, the method table against
//! the spec data, malformed input, streaming, and golden frames captured from real clients.

mod golden;
mod malformed;
mod roundtrip;
mod spec;
mod stream;

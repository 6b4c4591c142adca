//! Crate-level tests: round trips of every method and property set, the method table against
//! the spec data, malformed input, streaming, golden frames captured from real clients, and a
//! replay of the committed fuzz corpus.

mod fuzz_corpus;
mod golden;
mod malformed;
mod roundtrip;
mod spec;
mod stream;

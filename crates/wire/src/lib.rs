//! The AMQP 0-9-1 wire: frames, methods, content headers and field tables, decoded with nom and
//! encoded into one `BytesMut` so that many frames leave in one socket write.
//!
//! This crate is pure: no I/O, no async runtime, no broker types. It knows bytes and the typed
//! values they stand for, and the reply code that each malformation deserves.
//!
//! # Layout
//! - [`constants`]: frame types, the frame-end octet, reply codes, the protocol header.
//! - [`error`]: [`WireError`], which carries the reply code the server answers with.
//! - [`value`]: field tables, arrays and values with RabbitMQ's type letters.
//! - `read` / `write`: primitive decoding (nom) and encoding, bit packing included.
//! - [`method`]: every method of every class as a typed struct, and the [`Method`] enum.
//! - [`properties`]: the 14 basic properties and the content header.
//! - [`frame`]: [`Frame`], the two-step frame parser (header, then payload) and the encoder.
//! - [`header`]: the 8-byte protocol header that opens a connection.

#![forbid(unsafe_code)]

pub mod constants;
pub mod error;
pub mod frame;
pub mod header;
pub mod method;
pub mod properties;
mod read;
pub mod value;
mod write;

pub use error::WireError;
pub use frame::{Deliver, Frame, FrameSink, encode_content, encode_content_raw, encode_deliver};
pub use header::{ProtocolHeader, parse_protocol_header};
pub use method::Method;
pub use properties::{BasicProperties, ContentHeader};
pub use value::{Decimal, FieldArray, FieldTable, FieldValue, LongStr, ShortStr};

#[cfg(test)]
mod tests;

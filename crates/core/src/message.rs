//! A published message as queues hold it: shared (`Arc`), immutable, body as `Bytes`. It is the
//! store's message type, so persisting it needs no conversion or copy.

pub use warren_store::Message;

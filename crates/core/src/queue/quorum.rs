//! Quorum queues on a single node (`x-queue-type: quorum`): what RabbitMQ's quorum queues do
//! that classic ones do not, on warren's classic queue machinery and its store (replication is
//! not there: one node holds the queue).
//!
//! - Declared durable only, not exclusive, not auto-delete (406 `invalid property ...`), and
//!   without the classic-only arguments (406 `... of queue type rabbit_quorum_queue`).
//! - Poison messages: every return of a delivery to the queue (nack or reject with requeue, a
//!   channel or connection closing with it unacknowledged) counts; a message returned more
//!   times than `x-delivery-limit` (RabbitMQ 4's default of 20; a negative limit: none) is
//!   dead-lettered with reason `delivery_limit`, or dropped without a dead-letter exchange.
//! - Each delivery carries `x-delivery-count`, the returns so far (0 on the first delivery, as
//!   RabbitMQ 3.10 writes it).
//! - A consumer on a channel with a global prefetch (basic.qos global=true) is refused with 540
//!   "does not support global qos".

use bytes::{Bytes, BytesMut};
use warren_wire::{BasicProperties, FieldTable, FieldValue};

use crate::error::{AmqpError, Result};

/// The delivery limit of a quorum queue without `x-delivery-limit` (RabbitMQ 4's).
pub const DEFAULT_DELIVERY_LIMIT: u64 = 20;

/// Arguments a quorum queue refuses (RabbitMQ 3.10's classic-only ones).
const INVALID_ARGS: &[&str] =
    &["x-max-priority", "x-queue-mode", "x-queue-version", "x-queue-master-locator"];

/// Whether `args` declare a quorum queue.
pub fn is_quorum(args: &FieldTable) -> bool {
    args.get("x-queue-type").and_then(FieldValue::as_str) == Some("quorum")
}

/// The delivery limit `args` give a quorum queue: `None` for no limit.
pub fn delivery_limit(args: &FieldTable) -> Option<u64> {
    match args.get("x-delivery-limit").and_then(FieldValue::as_i64) {
        None => Some(DEFAULT_DELIVERY_LIMIT),
        Some(n) if n < 0 => None,
        Some(n) => Some(n as u64),
    }
}

/// RabbitMQ's check of a quorum queue's arguments (made before anything else).
pub fn check_args(args: &FieldTable, queue: &str, vhost: &str) -> Result<()> {
    match INVALID_ARGS.iter().find(|a| args.get(a).is_some()) {
        Some(arg) => Err(AmqpError::precondition_failed(format!(
            "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}' of queue type \
             rabbit_quorum_queue"
        ))),
        None => Ok(()),
    }
}

/// RabbitMQ's check of a new quorum queue's properties: durable, not exclusive, not
/// auto-delete.
pub fn check_properties(
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    queue: &str,
    vhost: &str,
) -> Result<()> {
    let refused =
        [(auto_delete, "auto-delete"), (exclusive, "exclusive-owner"), (!durable, "non-durable")];
    match refused.iter().find(|(bad, _)| *bad) {
        Some((_, property)) => Err(AmqpError::precondition_failed(format!(
            "invalid property '{property}' for queue '{queue}' in vhost '{vhost}'"
        ))),
        None => Ok(()),
    }
}

/// `x-dead-letter-strategy` (any queue type): `at-most-once` or `at-least-once`.
pub fn check_dead_letter_strategy(args: &FieldTable, queue: &str, vhost: &str) -> Result<()> {
    let Some(v) = args.get("x-dead-letter-strategy") else { return Ok(()) };
    let detail = match v {
        FieldValue::LongStr(_) => match v.as_str() {
            Some("at-most-once" | "at-least-once") => return Ok(()),
            _ => "invalid_dlx_strategy".to_string(),
        },
        other => format!("{{unacceptable_type,{}}}", other.rabbit_type()),
    };
    Err(AmqpError::precondition_failed(format!(
        "invalid arg 'x-dead-letter-strategy' for queue '{queue}' in vhost '{vhost}': {detail}"
    )))
}

/// The properties a delivery from a quorum queue carries: the message's, with
/// `x-delivery-count` set to `returns`.
pub fn delivery_properties(properties: &Bytes, returns: u32) -> Bytes {
    let mut p = BasicProperties::decode(properties).unwrap_or_default();
    let mut headers = p.headers.take().unwrap_or_default();
    headers.insert("x-delivery-count", FieldValue::I64(i64::from(returns)));
    p.headers = Some(headers);
    let mut out = BytesMut::with_capacity(properties.len() + 32);
    // Properties that decoded encode again.
    let _ = p.encode(&mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_are_checked_as_rabbitmq_checks_them() {
        let args = FieldTable::new().with("x-queue-type", "quorum");
        assert!(is_quorum(&args));
        assert!(check_args(&args, "q", "/").is_ok());
        assert!(check_properties(true, false, false, "q", "/").is_ok());
        let e = check_properties(false, false, false, "q", "/").unwrap_err();
        assert_eq!(e.text, "invalid property 'non-durable' for queue 'q' in vhost '/'");
        let e = check_properties(false, true, false, "q", "/").unwrap_err();
        assert_eq!(e.text, "invalid property 'exclusive-owner' for queue 'q' in vhost '/'");
        let lazy = args.clone().with("x-queue-mode", "lazy");
        let e = check_args(&lazy, "q", "/").unwrap_err();
        assert_eq!(
            e.text,
            "invalid arg 'x-queue-mode' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"
        );
        assert_eq!(delivery_limit(&args), Some(DEFAULT_DELIVERY_LIMIT));
        assert_eq!(
            delivery_limit(&args.clone().with("x-delivery-limit", FieldValue::I32(-1))),
            None
        );
        assert_eq!(delivery_limit(&args.with("x-delivery-limit", FieldValue::U8(3))), Some(3));
        let bogus = FieldTable::new().with("x-dead-letter-strategy", "bogus");
        let e = check_dead_letter_strategy(&bogus, "q", "/").unwrap_err();
        assert!(e.text.ends_with(": invalid_dlx_strategy"), "{}", e.text);
    }

    #[test]
    fn deliveries_carry_their_count() {
        let p = BasicProperties {
            headers: Some(FieldTable::new().with("k", "v")),
            ..Default::default()
        };
        let mut raw = BytesMut::new();
        p.encode(&mut raw).unwrap();
        let out = BasicProperties::decode(&delivery_properties(&raw.freeze(), 2)).unwrap();
        let h = out.headers.unwrap();
        assert_eq!(h.get("k").and_then(FieldValue::as_str), Some("v"));
        assert_eq!(h.get("x-delivery-count"), Some(&FieldValue::I64(2)));
    }
}

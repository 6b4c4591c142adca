//! The queue arguments that change how a queue behaves, read and checked at declare as
//! RabbitMQ checks them (`rabbit_amqqueue:declare_args/0`): length limits (`x-max-length`,
//! `x-max-length-bytes`, `x-overflow`), `x-single-active-consumer`, `x-expires` and
//! `x-message-ttl`, `x-max-priority`.
//!
//! A refused value is 406 PRECONDITION_FAILED with RabbitMQ's text: `invalid arg
//! 'x-max-length' for queue 'q' in vhost '/': {value_negative,-1}`.

use warren_wire::{FieldTable, FieldValue};

use crate::error::{AmqpError, Result};

/// What a queue does when a publish would take it past its length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Take the message and drop (or dead-letter) messages from the head (the default).
    #[default]
    DropHead,
    /// Refuse the message: a confirming publisher gets basic.nack.
    RejectPublish,
    /// Refuse it and dead-letter it (without a dead-letter exchange: as `RejectPublish`).
    RejectPublishDlx,
}

/// A queue's behaviour-changing arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueArgs {
    /// `x-max-length`: most ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: most bytes of ready message bodies.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-single-active-consumer`: only one consumer (the earliest still subscribed) gets
    /// messages.
    pub single_active_consumer: bool,
    /// `x-expires`: the queue is deleted once unused (no consumers, no basic.get, no
    /// declare) for this many milliseconds.
    pub expires: Option<u64>,
    /// `x-message-ttl`: messages expire this many milliseconds after they are enqueued.
    pub message_ttl: Option<u64>,
    /// `x-consumer-timeout`: milliseconds a delivery may stay unacknowledged before its
    /// channel is closed (instead of the broker's `--consumer-timeout`).
    pub consumer_timeout: Option<u64>,
    /// `x-max-priority`: a priority queue with levels 0 to this.
    pub max_priority: Option<u8>,
    /// `x-queue-type: quorum` (see [`super::quorum`]).
    pub quorum: bool,
    /// A quorum queue's `x-delivery-limit`: returns after which a message is dead-lettered.
    pub delivery_limit: Option<u64>,
}

impl QueueArgs {
    /// Reads and checks the arguments of queue `queue` in `vhost`.
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> Result<QueueArgs> {
        let invalid = |arg: &str, detail: String| {
            AmqpError::precondition_failed(format!(
                "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {detail}"
            ))
        };
        let non_neg = |arg: &str| -> Result<Option<u64>> {
            let Some(v) = args.get(arg) else { return Ok(None) };
            match v.as_i64() {
                Some(n) if n >= 0 => Ok(Some(n as u64)),
                Some(n) => Err(invalid(arg, format!("{{value_negative,{n}}}"))),
                None => Err(invalid(arg, format!("\"expected integer, got {}\"", v.rabbit_type()))),
            }
        };
        let overflow = match args.get("x-overflow") {
            None => Overflow::DropHead,
            Some(v @ FieldValue::LongStr(_)) => match v.as_str() {
                Some("drop-head") => Overflow::DropHead,
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => return Err(invalid("x-overflow", "invalid_overflow".into())),
            },
            Some(v) => {
                return Err(invalid(
                    "x-overflow",
                    format!("{{unacceptable_type,{}}}", v.rabbit_type()),
                ));
            }
        };
        let single_active_consumer = match args.get("x-single-active-consumer") {
            None => false,
            Some(FieldValue::Bool(b)) => *b,
            Some(v) => {
                return Err(invalid(
                    "x-single-active-consumer",
                    format!("{{unacceptable_type,{}}}", v.rabbit_type()),
                ));
            }
        };
        let expires = match args.get("x-expires") {
            None => None,
            Some(v) => match v.as_i64() {
                Some(0) => return Err(invalid("x-expires", "{value_zero,0}".into())),
                Some(n) if n < 0 => {
                    return Err(invalid("x-expires", format!("{{value_negative,{n}}}")));
                }
                // rabbit_misc:check_expiry: at most 10 years.
                Some(n) if n > 315_360_000_000 => {
                    return Err(invalid("x-expires", format!("{{value_too_large,{n}}}")));
                }
                Some(n) => Some(n as u64),
                None => {
                    return Err(invalid(
                        "x-expires",
                        format!("\"expected integer, got {}\"", v.rabbit_type()),
                    ));
                }
            },
        };
        let message_ttl = match args.get("x-message-ttl") {
            None => None,
            Some(v) => match v.as_i64() {
                Some(n) if n < 0 => {
                    return Err(invalid("x-message-ttl", format!("{{value_negative,{n}}}")));
                }
                Some(n) if n > 315_360_000_000 => {
                    return Err(invalid("x-message-ttl", format!("{{value_too_large,{n}}}")));
                }
                Some(n) => Some(n as u64),
                None => {
                    return Err(invalid(
                        "x-message-ttl",
                        format!("\"expected integer, got {}\"", v.rabbit_type()),
                    ));
                }
            },
        };
        let max_priority = match non_neg("x-max-priority")? {
            // rabbit_priority_queue's ?MAX_SUPPORTED_PRIORITY.
            Some(n) if n > 255 => {
                return Err(invalid("x-max-priority", format!("{{max_value_exceeded,{n}}}")));
            }
            n => n.map(|n| n as u8),
        };
        super::quorum::check_dead_letter_strategy(args, queue, vhost)?;
        let quorum = super::quorum::is_quorum(args);
        Ok(QueueArgs {
            quorum,
            delivery_limit: if quorum { super::quorum::delivery_limit(args) } else { None },
            max_priority,
            expires,
            message_ttl,
            consumer_timeout: non_neg("x-consumer-timeout")?,
            max_length: non_neg("x-max-length")?,
            max_length_bytes: non_neg("x-max-length-bytes")?,
            overflow,
            single_active_consumer,
        })
    }

    /// Whether a queue of `len` ready messages and `bytes` ready body bytes is over its limits.
    pub fn over(&self, len: usize, bytes: u64) -> bool {
        self.max_length.is_some_and(|m| len as u64 > m)
            || self.max_length_bytes.is_some_and(|m| bytes > m)
    }

    /// Whether the queue refuses publishes that would take it over its limits (rather than
    /// dropping from the head).
    pub fn rejects(&self) -> bool {
        self.overflow != Overflow::DropHead
            && (self.max_length.is_some() || self.max_length_bytes.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: FieldTable) -> std::result::Result<QueueArgs, String> {
        QueueArgs::parse(&args, "q", "/").map_err(|e| e.reply_text())
    }

    #[test]
    fn limits_and_overflow_are_read_and_checked_as_rabbitmq_does() {
        let a = parse(
            FieldTable::new()
                .with("x-max-length", FieldValue::I16(3))
                .with("x-max-length-bytes", FieldValue::I64(100))
                .with("x-overflow", "reject-publish"),
        )
        .unwrap();
        assert_eq!(a.max_length, Some(3));
        assert_eq!(a.max_length_bytes, Some(100));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        assert!(a.rejects());
        assert!(a.over(4, 0) && a.over(0, 101) && !a.over(3, 100));
        assert_eq!(parse(FieldTable::new()).unwrap(), QueueArgs::default());
        assert_eq!(
            parse(FieldTable::new().with("x-max-length", FieldValue::I32(-1))).unwrap_err(),
            "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' in vhost '/': \
             {value_negative,-1}"
        );
        assert_eq!(
            parse(FieldTable::new().with("x-max-length-bytes", "10")).unwrap_err(),
            "PRECONDITION_FAILED - invalid arg 'x-max-length-bytes' for queue 'q' in vhost '/': \
             \"expected integer, got longstr\""
        );
        assert_eq!(
            parse(FieldTable::new().with("x-overflow", "drop-tail")).unwrap_err(),
            "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue 'q' in vhost '/': \
             invalid_overflow"
        );
        assert_eq!(
            parse(FieldTable::new().with("x-single-active-consumer", "yes")).unwrap_err(),
            "PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue 'q' in \
             vhost '/': {unacceptable_type,longstr}"
        );
        let sac = parse(FieldTable::new().with("x-single-active-consumer", FieldValue::Bool(true)));
        assert!(sac.unwrap().single_active_consumer);
        let exp = parse(FieldTable::new().with("x-expires", FieldValue::I32(1000)));
        assert_eq!(exp.unwrap().expires, Some(1000));
        let prio = parse(FieldTable::new().with("x-max-priority", FieldValue::U8(10)));
        assert_eq!(prio.unwrap().max_priority, Some(10));
        assert_eq!(
            parse(FieldTable::new().with("x-max-priority", FieldValue::I32(256))).unwrap_err(),
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/': \
             {max_value_exceeded,256}"
        );
        assert_eq!(
            parse(FieldTable::new().with("x-expires", FieldValue::I32(0))).unwrap_err(),
            "PRECONDITION_FAILED - invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}"
        );
    }
}

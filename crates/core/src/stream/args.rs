//! What a stream queue accepts, read and checked as RabbitMQ 3.10 checks it (texts recorded
//! in `interop/streams/rabbitmq-3.10.8.md`): the declare arguments and properties, and the
//! consumer's `x-stream-offset` and filter arguments.

use warren_store::StreamConfig;
use warren_store::stream::now_ms;
use warren_wire::{FieldTable, FieldValue};

use crate::error::{AmqpError, Result};

/// RabbitMQ's `Exceeded max value for x-stream-max-segment-size-bytes` limit (3 GB).
pub const MAX_SEGMENT_SIZE: u64 = 3_000_000_000;

/// Declare arguments a stream refuses (RabbitMQ 3.10's classic and quorum ones).
const INVALID_ARGS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-master-locator",
    "x-delivery-limit",
    "x-quorum-initial-group-size",
];

/// The arguments a stream's redeclare must repeat exactly (RabbitMQ's `queue_arguments`).
pub const EQUIVALENT_ARGS: &[&str] = &[
    "x-max-length-bytes",
    "x-queue-type",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

/// RabbitMQ's queue leader locators.
const LOCATORS: &[&str] = &["client-local", "balanced", "random", "least-leaders"];

/// Whether `args` declare a stream.
pub fn is_stream(args: &FieldTable) -> bool {
    args.get("x-queue-type").and_then(FieldValue::as_str) == Some("stream")
}

/// An interval in RabbitMQ's `x-max-age` grammar (`7D`, `12h`, `30m`: digits, then one of
/// `Y M D h m s`, more than zero) in milliseconds; `None` if it is not one.
pub fn parse_age(s: &[u8]) -> Option<u64> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let (value, unit) = s.split_at(digits);
    let value: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    let unit_ms: u64 = match unit {
        b"Y" => 365 * 86_400_000,
        b"M" => 30 * 86_400_000,
        b"D" => 86_400_000,
        b"h" => 3_600_000,
        b"m" => 60_000,
        b"s" => 1000,
        _ => return None,
    };
    (value > 0).then(|| value.saturating_mul(unit_ms))
}

/// Checks a stream's declare: refused arguments first, then each argument's value, as
/// RabbitMQ does before the queue exists. The retention and segment size it asks for.
pub fn check_args(args: &FieldTable, queue: &str, vhost: &str) -> Result<StreamConfig> {
    if let Some(arg) = INVALID_ARGS.iter().find(|a| args.get(a).is_some()) {
        return Err(AmqpError::precondition_failed(format!(
            "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}' of queue type \
             rabbit_stream_queue"
        )));
    }
    let invalid = |arg: &str, detail: String| {
        AmqpError::precondition_failed(format!(
            "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {detail}"
        ))
    };
    let int = |arg: &str| -> Result<Option<i64>> {
        match args.get(arg) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(n) => Ok(Some(n)),
                None => Err(invalid(arg, format!("\"expected integer, got {}\"", v.rabbit_type()))),
            },
        }
    };
    let non_neg = |arg: &str| -> Result<Option<u64>> {
        match int(arg)? {
            Some(n) if n < 0 => Err(invalid(arg, format!("{{value_negative,{n}}}"))),
            n => Ok(n.map(|n| n as u64)),
        }
    };
    let max_bytes = non_neg("x-max-length-bytes")?;
    let max_age_ms = match args.get("x-max-age") {
        None => None,
        Some(FieldValue::LongStr(s)) => {
            Some(parse_age(s).ok_or_else(|| invalid("x-max-age", "invalid_max_age".into()))?)
        }
        Some(v) => {
            return Err(invalid("x-max-age", format!("{{unacceptable_type,{}}}", v.rabbit_type())));
        }
    };
    let segment = non_neg("x-stream-max-segment-size-bytes")?;
    match int("x-initial-cluster-size")? {
        Some(n) if n < 0 => {
            return Err(invalid("x-initial-cluster-size", format!("{{value_negative,{n}}}")));
        }
        Some(0) => return Err(invalid("x-initial-cluster-size", "{value_zero,0}".into())),
        _ => {}
    }
    match args.get("x-queue-leader-locator") {
        None => {}
        Some(v @ FieldValue::LongStr(_)) if v.as_str().is_some_and(|l| LOCATORS.contains(&l)) => {}
        Some(FieldValue::LongStr(_)) => {
            return Err(invalid("x-queue-leader-locator", "invalid_queue_locator_arg".into()));
        }
        Some(v) => {
            return Err(invalid(
                "x-queue-leader-locator",
                format!("{{unacceptable_type,{}}}", v.rabbit_type()),
            ));
        }
    }
    Ok(StreamConfig {
        max_bytes,
        max_age_ms,
        segment_max: segment.unwrap_or(warren_store::stream::DEFAULT_SEGMENT_MAX),
    })
}

/// RabbitMQ's checks of a new stream (after its arguments'): durable, not exclusive, not
/// auto-delete, a segment size within its maximum.
pub fn check_new(options: &crate::queue::QueueOptions, queue: &str, vhost: &str) -> Result<()> {
    crate::queue::quorum::check_properties(
        options.durable,
        options.exclusive.is_some(),
        options.auto_delete,
        queue,
        vhost,
    )?;
    if options
        .arguments
        .get("x-stream-max-segment-size-bytes")
        .and_then(FieldValue::as_i64)
        .is_some_and(|n| n > MAX_SEGMENT_SIZE as i64)
    {
        return Err(AmqpError::precondition_failed(
            "Exceeded max value for x-stream-max-segment-size-bytes",
        ));
    }
    Ok(())
}

/// Where a stream consumer starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first retained message.
    First,
    /// The start of the last chunk written.
    Last,
    /// The next message published (the default).
    Next,
    /// This offset (past the end: wait for it; before the start: the start).
    Offset(u64),
    /// The first chunk written at or after this time (ms since the Unix epoch).
    Time(u64),
}

/// What a stream consumer asked for: where to start, and which messages (RabbitMQ 3.13's
/// filtering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSpec {
    /// Where to start.
    pub start: Start,
    /// `x-stream-filter`: only messages whose `x-stream-filter-value` is one of these.
    pub filter: Option<Vec<Vec<u8>>>,
    /// `x-stream-match-unfiltered`: with a filter, messages without a filter value too.
    pub match_unfiltered: bool,
}

/// Reads a stream consumer's arguments: `x-stream-offset` (as RabbitMQ reads it),
/// `x-stream-filter` and `x-stream-match-unfiltered`; refuses `x-priority`.
pub fn read_spec(args: &FieldTable, queue: &str, vhost: &str) -> Result<ReadSpec> {
    if args.get("x-priority").is_some() {
        return Err(AmqpError::precondition_failed(format!(
            "invalid arg 'x-priority' for queue '{queue}' in vhost '{vhost}' of queue type \
             rabbit_stream_queue"
        )));
    }
    let invalid = |v: &FieldValue| {
        let shown = match v {
            FieldValue::LongStr(s) => format!("{{longstr,<<\"{}\">>}}", String::from_utf8_lossy(s)),
            other => format!("{{{},{other:?}}}", other.rabbit_type()),
        };
        AmqpError::precondition_failed(format!(
            "invalid arg 'x-stream-offset' for queue '{queue}' in vhost '{vhost}': \
             {{invalid_stream_offset_arg,{shown}}}"
        ))
    };
    let start = match args.get("x-stream-offset") {
        None => Start::Next,
        Some(v @ (FieldValue::LongStr(_) | FieldValue::Bytes(_))) => {
            let s: &[u8] = match v {
                FieldValue::LongStr(s) => s,
                FieldValue::Bytes(b) => b,
                _ => &[],
            };
            match s {
                b"first" => Start::First,
                b"last" => Start::Last,
                b"next" => Start::Next,
                // RabbitMQ reads only a longstr as an interval (bytes crash its channel).
                _ if matches!(v, FieldValue::LongStr(_)) => match parse_age(s) {
                    Some(ms) => Start::Time(now_ms().saturating_sub(ms)),
                    None => return Err(invalid(v)),
                },
                _ => return Err(invalid(v)),
            }
        }
        Some(FieldValue::Timestamp(secs)) => Start::Time(secs.saturating_mul(1000)),
        Some(v) => match v.as_i64() {
            Some(n) if n < 0 => Start::First,
            Some(n) => Start::Offset(n as u64),
            None => return Err(invalid(v)),
        },
    };
    let filter = match args.get("x-stream-filter") {
        None => None,
        Some(FieldValue::LongStr(s)) => Some(vec![s.to_vec()]),
        Some(FieldValue::Array(a)) => Some(
            a.iter()
                .filter_map(|v| match v {
                    FieldValue::LongStr(s) => Some(s.to_vec()),
                    _ => None,
                })
                .collect(),
        ),
        Some(_) => None,
    };
    let match_unfiltered = args.get("x-stream-match-unfiltered").and_then(FieldValue::as_bool);
    Ok(ReadSpec { start, filter, match_unfiltered: match_unfiltered.unwrap_or(false) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: FieldTable) -> std::result::Result<StreamConfig, String> {
        check_args(&args.with("x-queue-type", "stream"), "s", "/").map_err(|e| e.text)
    }

    #[test]
    fn declare_arguments_are_checked_as_rabbitmq_checks_them() {
        let c = check(
            FieldTable::new()
                .with("x-max-length-bytes", FieldValue::I32(1000))
                .with("x-max-age", "7D")
                .with("x-stream-max-segment-size-bytes", FieldValue::I64(5000))
                .with("x-initial-cluster-size", FieldValue::I64(3)),
        )
        .unwrap();
        assert_eq!(
            c,
            StreamConfig {
                max_bytes: Some(1000),
                max_age_ms: Some(7 * 86_400_000),
                segment_max: 5000
            }
        );
        let defaults = check(FieldTable::new()).unwrap();
        assert_eq!(defaults, StreamConfig::default());
        let refused =
            check(FieldTable::new().with("x-max-length", FieldValue::I64(1))).unwrap_err();
        assert_eq!(
            refused,
            "invalid arg 'x-max-length' for queue 's' in vhost '/' of queue type rabbit_stream_queue"
        );
        let age = |s: &str| check(FieldTable::new().with("x-max-age", s));
        for good in ["7D", "12h", "30m", "10s", "1Y", "1M", "007D"] {
            assert!(age(good).is_ok(), "{good}");
        }
        for bad in ["10", "0s", "1.5h", "1W", "7D ", "7d", "", "bogus", "-1h"] {
            assert!(age(bad).unwrap_err().ends_with(": invalid_max_age"), "{bad}");
        }
        let e = check(FieldTable::new().with("x-max-age", FieldValue::I64(3600))).unwrap_err();
        assert!(e.ends_with(": {unacceptable_type,long}"), "{e}");
        let e =
            check(FieldTable::new().with("x-max-length-bytes", FieldValue::I64(-1))).unwrap_err();
        assert!(e.ends_with(": {value_negative,-1}"), "{e}");
        let e = check(FieldTable::new().with("x-max-length-bytes", "1")).unwrap_err();
        assert!(e.ends_with(": \"expected integer, got longstr\""), "{e}");
        let e = check(FieldTable::new().with("x-initial-cluster-size", FieldValue::I64(0)))
            .unwrap_err();
        assert!(e.ends_with(": {value_zero,0}"), "{e}");
        let e = check(FieldTable::new().with("x-queue-leader-locator", "nearest")).unwrap_err();
        assert!(e.ends_with(": invalid_queue_locator_arg"), "{e}");
    }

    #[test]
    fn offsets_are_read_as_rabbitmq_reads_them() {
        let start = |v: FieldValue| {
            read_spec(&FieldTable::new().with("x-stream-offset", v), "s", "/")
                .map(|s| s.start)
                .map_err(|e| e.text)
        };
        assert_eq!(read_spec(&FieldTable::new(), "s", "/").unwrap().start, Start::Next);
        assert_eq!(start("first".into()).unwrap(), Start::First);
        assert_eq!(start("last".into()).unwrap(), Start::Last);
        assert_eq!(start("next".into()).unwrap(), Start::Next);
        assert_eq!(
            start(FieldValue::Bytes(bytes::Bytes::from_static(b"first"))).unwrap(),
            Start::First
        );
        assert_eq!(start(FieldValue::I8(5)).unwrap(), Start::Offset(5));
        assert_eq!(start(FieldValue::I64L(-1)).unwrap(), Start::First);
        assert_eq!(
            start(FieldValue::Timestamp(1_700_000_000)).unwrap(),
            Start::Time(1_700_000_000_000)
        );
        let Start::Time(t) = start("10m".into()).unwrap() else { panic!("a time") };
        assert!(now_ms() - t >= 600_000 && now_ms() - t < 660_000);
        assert_eq!(
            start("5".into()).unwrap_err(),
            "invalid arg 'x-stream-offset' for queue 's' in vhost '/': \
             {invalid_stream_offset_arg,{longstr,<<\"5\">>}}"
        );
        assert!(start("0s".into()).is_err());
        assert!(start(FieldValue::F64(5.0)).is_err());
        assert!(start(FieldValue::Bool(true)).is_err());
        let e = read_spec(&FieldTable::new().with("x-priority", FieldValue::I32(5)), "s", "/");
        assert!(e.unwrap_err().text.ends_with("of queue type rabbit_stream_queue"));
        let f = read_spec(&FieldTable::new().with("x-stream-filter", "red"), "s", "/").unwrap();
        assert_eq!(f.filter, Some(vec![b"red".to_vec()]));
        assert!(!f.match_unfiltered);
    }
}

//! Policies, as RabbitMQ's: per vhost, a name, a regular expression matched against queue
//! and/or exchange names (`apply-to`), a priority, and a definition of settings. Of the
//! policies that match a queue or exchange, the one with the highest priority applies (ties:
//! the first by name), and only that one. A change re-applies to everything in the vhost at
//! once, and policies are durable (kept in the definitions).
//!
//! Precedence between a policy and the declare arguments, as RabbitMQ 3.10's classic and quorum
//! queues resolve it: for `max-length`, `max-length-bytes`, `message-ttl`, `expires` and
//! `delivery-limit` the lower of the two wins; for `dead-letter-exchange`,
//! `dead-letter-routing-key`, `overflow` and `alternate-exchange` the argument wins.

use regex_lite::Regex;
use warren_wire::{FieldTable, FieldValue, ShortStr};

use crate::dead_letter::DeadLetterTo;
use crate::error::{AmqpError, Result};
use crate::queue::{Overflow, QueueArgs};

/// What a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    /// Queues of every type.
    Queues,
    /// Exchanges.
    Exchanges,
    /// Both.
    All,
    /// Classic queues only (RabbitMQ 3.12's finer kinds).
    ClassicQueues,
    /// Quorum queues only.
    QuorumQueues,
    /// Stream queues only.
    Streams,
}

/// What kind of queue a policy is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// A classic queue.
    Classic,
    /// A quorum queue.
    Quorum,
    /// A stream queue.
    Stream,
}

impl ApplyTo {
    /// Parses `apply-to`; RabbitMQ's error text otherwise.
    pub fn parse(s: &str) -> Result<ApplyTo> {
        Ok(match s {
            "queues" => ApplyTo::Queues,
            "exchanges" => ApplyTo::Exchanges,
            "all" => ApplyTo::All,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            other => {
                return Err(AmqpError::precondition_failed(format!(
                    "Validation failed\n\n'{other}' is not a valid apply-to value"
                )));
            }
        })
    }

    /// The name RabbitMQ lists.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
            ApplyTo::ClassicQueues => "classic_queues",
            ApplyTo::QuorumQueues => "quorum_queues",
            ApplyTo::Streams => "streams",
        }
    }

    fn queues(self, kind: QueueKind) -> bool {
        match self {
            ApplyTo::Queues | ApplyTo::All => true,
            ApplyTo::ClassicQueues => kind == QueueKind::Classic,
            ApplyTo::QuorumQueues => kind == QueueKind::Quorum,
            ApplyTo::Streams => kind == QueueKind::Stream,
            ApplyTo::Exchanges => false,
        }
    }

    fn exchanges(self) -> bool {
        matches!(self, ApplyTo::Exchanges | ApplyTo::All)
    }
}

/// One policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Name, unique in its vhost.
    pub name: String,
    /// The regular expression, as given.
    pub pattern: String,
    /// What it applies to.
    pub apply_to: ApplyTo,
    /// Higher wins.
    pub priority: i64,
    /// The settings.
    pub definition: FieldTable,
    regex: Regex,
}

/// Keys a definition may hold, each with its check.
fn check_key(key: &str, v: &FieldValue) -> std::result::Result<(), String> {
    let int = |min: i64| match v.as_i64() {
        Some(n) if n >= min => Ok(()),
        _ => Err(format!("{key} must be an integer of at least {min}: {}", shown(v))),
    };
    let text = |allowed: &[&str]| match v.as_str() {
        Some(s) if allowed.is_empty() || allowed.contains(&s) => Ok(()),
        _ => Err(format!("{} is not a valid {key} value", shown(v))),
    };
    match key {
        "max-length" | "max-length-bytes" | "message-ttl" => int(0),
        "expires" => int(1),
        "delivery-limit" => int(-1),
        "dead-letter-exchange" | "dead-letter-routing-key" | "alternate-exchange" => text(&[]),
        "overflow" => text(&["drop-head", "reject-publish", "reject-publish-dlx"]),
        "queue-mode" => text(&["default", "lazy"]),
        "dead-letter-strategy" => text(&["at-most-once", "at-least-once"]),
        "queue-version" => int(1),
        "max-in-memory-length" | "max-in-memory-bytes" => int(0),
        // Streams' (RabbitMQ's texts).
        "max-age" => match v {
            FieldValue::LongStr(s) if crate::stream::args::parse_age(s).is_some() => Ok(()),
            _ => Err(format!("{} is not a valid max age", shown(v))),
        },
        "stream-max-segment-size-bytes" => match v.as_i64() {
            Some(n) if (0..=crate::stream::args::MAX_SEGMENT_SIZE as i64).contains(&n) => Ok(()),
            _ => Err(format!("{} is not a valid segment size", shown(v))),
        },
        "queue-leader-locator" => text(&["client-local", "balanced", "random", "least-leaders"]),
        "initial-cluster-size" => int(0),
        _ => Err(format!("[<<\"{key}\">>] are not recognised policy settings")),
    }
}

fn shown(v: &FieldValue) -> String {
    match (v.as_str(), v.as_i64()) {
        (Some(s), _) => format!("<<\"{s}\">>"),
        (_, Some(n)) => n.to_string(),
        _ => format!("{v:?}"),
    }
}

impl Policy {
    /// A checked policy: the pattern must compile, the definition hold known settings with
    /// valid values (406 with RabbitMQ's "Validation failed" otherwise).
    pub fn new(
        name: &str,
        pattern: &str,
        apply_to: ApplyTo,
        priority: i64,
        definition: FieldTable,
    ) -> Result<Policy> {
        let fail = |detail: String| {
            AmqpError::precondition_failed(format!("Validation failed\n\n{detail}"))
        };
        let regex = Regex::new(pattern).map_err(|e| {
            fail(format!("<<\"{pattern}\">> is not a valid regular expression: {e}"))
        })?;
        if definition.is_empty() {
            return Err(fail("no policy settings given".into()));
        }
        for (k, v) in definition.iter() {
            check_key(k, v).map_err(fail)?;
        }
        Ok(Policy {
            name: name.to_string(),
            pattern: pattern.to_string(),
            apply_to,
            priority,
            definition,
            regex,
        })
    }

    fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// The policy that applies to a queue (of that kind) or exchange (`None`) called `name`.
pub fn applying<'a>(
    policies: &'a [Policy],
    name: &str,
    queue: Option<QueueKind>,
) -> Option<&'a Policy> {
    let mut best: Option<&Policy> = None;
    for p in policies {
        let kind = match queue {
            Some(queue) => p.apply_to.queues(queue),
            None => p.apply_to.exchanges(),
        };
        // Sorted by name: on equal priority the first stays.
        if kind && p.matches(name) && best.is_none_or(|b| p.priority > b.priority) {
            best = Some(p);
        }
    }
    best
}

/// A queue's settings as declared (`declared`, from its `arguments`) with `policy` applied.
pub fn queue_settings(
    arguments: &FieldTable,
    declared: QueueArgs,
    policy: Option<&Policy>,
) -> (QueueArgs, Option<DeadLetterTo>) {
    let declared_dlx = DeadLetterTo::parse(arguments, "", "").unwrap_or_default();
    let Some(p) = policy else { return (declared, declared_dlx) };
    let def = &p.definition;
    let num = |k: &str| def.get(k).and_then(FieldValue::as_i64);
    let lower = |arg: Option<u64>, pol: Option<i64>| match (arg, pol.map(|n| n.max(0) as u64)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut args = declared;
    args.max_length = lower(declared.max_length, num("max-length"));
    args.max_length_bytes = lower(declared.max_length_bytes, num("max-length-bytes"));
    args.message_ttl = lower(declared.message_ttl, num("message-ttl"));
    args.expires = lower(declared.expires, num("expires"));
    if declared.quorum {
        args.delivery_limit = match (arguments.get("x-delivery-limit"), num("delivery-limit")) {
            (None, Some(n)) if n < 0 => None,
            (None, Some(n)) => Some(n as u64),
            (Some(_), Some(n)) if n >= 0 => lower(declared.delivery_limit, Some(n)),
            _ => declared.delivery_limit,
        };
    }
    if arguments.get("x-overflow").is_none() {
        args.overflow = match def.get("overflow").and_then(FieldValue::as_str) {
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            _ => declared.overflow,
        };
    }
    // Each resolved on its own, the argument winning (RabbitMQ looks them up separately).
    let pol = |k: &str| def.get(k).and_then(FieldValue::as_str).map(ShortStr::from);
    let exchange =
        declared_dlx.as_ref().map(|d| d.exchange.clone()).or_else(|| pol("dead-letter-exchange"));
    let routing_key = declared_dlx
        .as_ref()
        .and_then(|d| d.routing_key.clone())
        .or_else(|| pol("dead-letter-routing-key"));
    let dlx = exchange.map(|exchange| DeadLetterTo { exchange, routing_key });
    (args, dlx)
}

/// A stream's retention and segment size (`declared`, from its arguments) with `policy`
/// applied: for streams the policy wins over the argument (RabbitMQ's
/// `rabbit_stream_queue:policy_precedence`).
pub fn stream_config(
    declared: warren_store::StreamConfig,
    policy: Option<&Policy>,
) -> warren_store::StreamConfig {
    let Some(p) = policy else { return declared };
    let def = &p.definition;
    let num = |k: &str| def.get(k).and_then(FieldValue::as_i64).map(|n| n.max(0) as u64);
    let age = match def.get("max-age") {
        Some(FieldValue::LongStr(s)) => crate::stream::args::parse_age(s),
        _ => None,
    };
    warren_store::StreamConfig {
        max_bytes: num("max-length-bytes").or(declared.max_bytes),
        max_age_ms: age.or(declared.max_age_ms),
        segment_max: num("stream-max-segment-size-bytes").unwrap_or(declared.segment_max),
    }
}

/// An exchange's alternate exchange: its argument, else its policy's.
pub fn alternate_exchange(arguments: &FieldTable, policy: Option<&Policy>) -> Option<ShortStr> {
    let from = |t: &FieldTable| {
        t.get("alternate-exchange").and_then(FieldValue::as_str).map(ShortStr::from)
    };
    from(arguments).or_else(|| policy.and_then(|p| from(&p.definition)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, pattern: &str, priority: i64, def: FieldTable) -> Policy {
        Policy::new(name, pattern, ApplyTo::Queues, priority, def).unwrap()
    }

    #[test]
    fn the_highest_priority_match_applies() {
        let ps = vec![
            policy("a", "^q", 1, FieldTable::new().with("max-length", FieldValue::I32(5))),
            policy("b", "^q\\.", 2, FieldTable::new().with("max-length", FieldValue::I32(7))),
            policy("c", "^q", 2, FieldTable::new().with("max-length", FieldValue::I32(9))),
        ];
        assert_eq!(
            applying(&ps, "q.x", Some(QueueKind::Classic)).unwrap().name,
            "b",
            "first of equals"
        );
        assert_eq!(applying(&ps, "qx", Some(QueueKind::Classic)).unwrap().name, "c");
        assert!(applying(&ps, "other", Some(QueueKind::Classic)).is_none());
        assert!(applying(&ps, "q.x", None).is_none(), "queues only");
    }

    #[test]
    fn definitions_are_validated() {
        let bad = |def: FieldTable| Policy::new("p", ".*", ApplyTo::All, 0, def).unwrap_err().text;
        assert!(bad(FieldTable::new().with("nonsense", "x")).contains("not recognised"));
        assert!(bad(FieldTable::new().with("max-length", "ten")).contains("max-length"));
        assert!(bad(FieldTable::new().with("overflow", "drop-tail")).contains("overflow"));
        assert!(
            Policy::new(
                "p",
                "(",
                ApplyTo::All,
                0,
                FieldTable::new().with("expires", FieldValue::I32(5))
            )
            .is_err()
        );
        assert!(ApplyTo::parse("streams").is_ok() && ApplyTo::parse("streams?").is_err());
    }

    #[test]
    fn streams_take_retention_from_policies_which_win_over_arguments() {
        let bad = |def: FieldTable| Policy::new("p", ".*", ApplyTo::All, 0, def).unwrap_err().text;
        assert!(bad(FieldTable::new().with("max-age", "1W")).contains("is not a valid max age"));
        assert!(bad(FieldTable::new().with("max-age", FieldValue::I32(5))).contains("max age"));
        let huge = FieldValue::I64(10_000_000_000);
        let e = bad(FieldTable::new().with("stream-max-segment-size-bytes", huge));
        assert!(e.contains("is not a valid segment size"), "{e}");
        let p = Policy::new(
            "p",
            "^s",
            ApplyTo::Streams,
            0,
            FieldTable::new()
                .with("max-age", "1h")
                .with("max-length-bytes", FieldValue::I32(500))
                .with("stream-max-segment-size-bytes", FieldValue::I32(100)),
        )
        .unwrap();
        let declared = warren_store::StreamConfig {
            max_bytes: Some(1000),
            max_age_ms: None,
            segment_max: 5000,
        };
        let c = stream_config(declared, Some(&p));
        assert_eq!(
            c,
            warren_store::StreamConfig {
                max_bytes: Some(500),
                max_age_ms: Some(3_600_000),
                segment_max: 100
            }
        );
        assert_eq!(stream_config(declared, None), declared);
        let ps = [p];
        assert!(applying(&ps, "s1", Some(QueueKind::Stream)).is_some());
        assert!(applying(&ps, "s1", Some(QueueKind::Classic)).is_none(), "streams only");
    }

    #[test]
    fn limits_take_the_lower_and_arguments_win_the_rest() {
        let args = FieldTable::new()
            .with("x-max-length", FieldValue::I32(10))
            .with("x-dead-letter-exchange", "from-arg");
        let declared = QueueArgs::parse(&args, "q", "/").unwrap();
        let p = policy(
            "p",
            ".*",
            0,
            FieldTable::new()
                .with("max-length", FieldValue::I32(3))
                .with("message-ttl", FieldValue::I32(500))
                .with("dead-letter-exchange", "from-policy")
                .with("overflow", "reject-publish"),
        );
        let (eff, dlx) = queue_settings(&args, declared, Some(&p));
        assert_eq!(eff.max_length, Some(3));
        assert_eq!(eff.message_ttl, Some(500));
        assert_eq!(eff.overflow, Overflow::RejectPublish);
        assert_eq!(&*dlx.unwrap().exchange, "from-arg");
        let (eff, dlx) = queue_settings(&args, declared, None);
        assert_eq!((eff.max_length, eff.message_ttl), (Some(10), None));
        assert_eq!(&*dlx.unwrap().exchange, "from-arg");
        let none = FieldTable::new();
        let (_, dlx) = queue_settings(&none, QueueArgs::default(), Some(&p));
        assert_eq!(&*dlx.unwrap().exchange, "from-policy");
        // The exchange from the argument, the routing key from the policy.
        let keyed = policy("k", ".*", 0, FieldTable::new().with("dead-letter-routing-key", "pk"));
        let (_, dlx) = queue_settings(&args, declared, Some(&keyed));
        let dlx = dlx.unwrap();
        assert_eq!((&*dlx.exchange, dlx.routing_key.as_deref()), ("from-arg", Some("pk")));
    }
}

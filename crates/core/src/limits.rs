//! Vhost limits, as RabbitMQ's `rabbitmqctl set_vhost_limits`: `max-connections` (connection.open
//! beyond it: 530 "access to vhost '/' refused for user 'guest': connection limit (N) is
//! reached") and `max-queues` (a new queue beyond it: 406 "cannot declare queue 'q': queue limit
//! in vhost '/' (N) is reached"). A negative value means no limit. Durable with the definitions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use warren_wire::{FieldTable, FieldValue};

use crate::error::{AmqpError, Result};
use crate::vhost::VHost;

/// A vhost's limits (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VhostLimits {
    /// Most client connections open on the vhost.
    pub max_connections: Option<u64>,
    /// Most queues in the vhost.
    pub max_queues: Option<u64>,
}

impl VhostLimits {
    /// Reads a `set_vhost_limits` definition (406 "Validation failed" for unknown keys and
    /// values that are not integers).
    pub fn parse(def: &FieldTable) -> Result<VhostLimits> {
        let mut limits = VhostLimits::default();
        parse_limits(
            def,
            |key, n| {
                match key {
                    "max-connections" => limits.max_connections = n,
                    "max-queues" => limits.max_queues = n,
                    _ => return false,
                }
                true
            },
            |key, _| format!("[<<\"{key}\">>] are not recognised vhost limits"),
        )?;
        Ok(limits)
    }

    /// As a definition (what `list_vhost_limits` shows and the definitions keep).
    pub fn to_table(self) -> FieldTable {
        limits_table(&[("max-connections", self.max_connections), ("max-queues", self.max_queues)])
    }
}

/// Reads a limits definition (vhost or user limits): every value an integer, negative for no
/// limit (406 "Validation failed" otherwise). `set` takes each key and limit and says whether
/// it knows the key; `unknown` words the refusal of one it does not.
pub(crate) fn parse_limits(
    def: &FieldTable,
    mut set: impl FnMut(&str, Option<u64>) -> bool,
    unknown: impl Fn(&str, &FieldValue) -> String,
) -> Result<()> {
    for (key, v) in def.iter() {
        let n = v.as_i64().ok_or_else(|| {
            AmqpError::precondition_failed(format!(
                "Validation failed\n\n{key} must be an integer: {v:?}"
            ))
        })?;
        if !set(key, u64::try_from(n).ok()) {
            return Err(AmqpError::precondition_failed(format!(
                "Validation failed\n\n{}",
                unknown(key, v)
            )));
        }
    }
    Ok(())
}

/// Limits as a definition: the keys that have one.
pub(crate) fn limits_table(limits: &[(&str, Option<u64>)]) -> FieldTable {
    let mut t = FieldTable::new();
    for (key, n) in limits {
        if let Some(n) = n {
            t.insert(*key, FieldValue::I64(*n as i64));
        }
    }
    t
}

/// A client connection counted against its vhost's `max-connections` until dropped.
#[derive(Debug)]
pub struct VhostConnection(Arc<VHost>);

impl Drop for VhostConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl VHost {
    /// Counts a connection opening on this vhost for `user`: 530 if the vhost is at its
    /// `max-connections`.
    pub fn open_connection(self: &Arc<Self>, user: &str) -> Result<VhostConnection> {
        let max = self.limits().max_connections;
        let taken = self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            max.is_none_or(|m| n < m).then_some(n + 1)
        });
        match (taken, max) {
            (Ok(_), _) | (Err(_), None) => Ok(VhostConnection(self.clone())),
            (Err(_), Some(m)) => Err(AmqpError::not_allowed(format!(
                "access to vhost '{}' refused for user '{user}': connection limit ({m}) is reached",
                self.name
            ))),
        }
    }

    /// 406 if a new queue `name` would take the vhost past its `max-queues` (`count`: the
    /// queues it has).
    pub(crate) fn check_queue_limit(&self, name: &str, count: usize) -> Result<()> {
        match self.limits().max_queues {
            Some(m) if count as u64 >= m => Err(AmqpError::precondition_failed(format!(
                "cannot declare queue '{name}': queue limit in vhost '{}' ({m}) is reached",
                self.name
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_as_rabbitmq_reads_them() {
        let t = FieldTable::new()
            .with("max-connections", FieldValue::I32(2))
            .with("max-queues", FieldValue::I32(-1));
        let l = VhostLimits::parse(&t).unwrap();
        assert_eq!(l, VhostLimits { max_connections: Some(2), max_queues: None });
        assert_eq!(VhostLimits::parse(&l.to_table()).unwrap(), l);
        assert!(
            VhostLimits::parse(&FieldTable::new().with("max-channels", FieldValue::I32(1)))
                .is_err()
        );
        assert!(VhostLimits::parse(&FieldTable::new().with("max-queues", "ten")).is_err());
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_until_one_closes() {
        let v = VHost::new("/");
        v.set_limits(VhostLimits { max_connections: Some(1), max_queues: None }).unwrap();
        let first = v.open_connection("guest").unwrap();
        let e = v.open_connection("guest").unwrap_err();
        assert_eq!(e.code, 530);
        assert_eq!(
            e.text,
            "access to vhost '/' refused for user 'guest': connection limit (1) is reached"
        );
        drop(first);
        assert!(v.open_connection("guest").is_ok());
    }
}

//! Connections and channels counted against the node's limits (RabbitMQ's `connection_max`,
//! `channel_max_per_node`, `consumer_max_per_channel`) and each user's (`rabbitmqctl
//! set_user_limits`: `max-connections`, `max-channels`). A count is held by a guard
//! ([`Counted`]) for as long as the connection or channel is open. Refusals are 530
//! NOT_ALLOWED with RabbitMQ's texts. User limits are durable with the definitions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use warren_wire::FieldTable;

use crate::broker::Broker;
use crate::error::{AmqpError, Result};

/// Node-wide limits, from the command line (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLimits {
    /// Most client connections open at once (`connection_max`).
    pub connection_max: Option<u64>,
    /// Most channels open at once over all connections (`channel_max_per_node`).
    pub channel_max_per_node: Option<u64>,
}

/// A user's limits (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Most connections the user has open at once.
    pub max_connections: Option<u64>,
    /// Most channels the user has open at once, over all their connections.
    pub max_channels: Option<u64>,
}

impl UserLimits {
    /// Reads a `set_user_limits` definition: `max-connections` and / or `max-channels`,
    /// integers, negative for no limit (406 "Validation failed" otherwise).
    pub fn parse(def: &FieldTable) -> Result<UserLimits> {
        let mut limits = UserLimits::default();
        crate::limits::parse_limits(
            def,
            |key, n| {
                match key {
                    "max-connections" => limits.max_connections = n,
                    "max-channels" => limits.max_channels = n,
                    _ => return false,
                }
                true
            },
            |key, v| format!("Unrecognised terms [{{<<\"{key}\">>,{v:?}}}] in user-limits"),
        )?;
        Ok(limits)
    }

    /// As a definition (what `list_user_limits` shows and the definitions keep).
    pub fn to_table(self) -> FieldTable {
        crate::limits::limits_table(&[
            ("max-connections", self.max_connections),
            ("max-channels", self.max_channels),
        ])
    }

    /// Whether no limit is set.
    pub fn is_empty(self) -> bool {
        self == UserLimits::default()
    }
}

/// Open connections and channels: the node's and each user's.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub limits: std::sync::RwLock<NodeLimits>,
    connections: Arc<AtomicU64>,
    channels: Arc<AtomicU64>,
    users: std::sync::Mutex<HashMap<String, UserCounts>>,
    pub user_limits: std::sync::RwLock<HashMap<String, UserLimits>>,
}

#[derive(Debug, Default, Clone)]
struct UserCounts {
    connections: Arc<AtomicU64>,
    channels: Arc<AtomicU64>,
}

/// One connection or channel counted until dropped.
#[derive(Debug)]
pub struct Counted(Vec<Arc<AtomicU64>>);

impl Drop for Counted {
    fn drop(&mut self) {
        for c in &self.0 {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Counts one more on `counter` if it is below `max`; false if it is not.
fn take(counter: &Arc<AtomicU64>, max: Option<u64>) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            max.is_none_or(|m| n < m).then_some(n + 1)
        })
        .is_ok()
}

/// The node's name as RabbitMQ's texts show it.
fn node_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string());
    format!("warren@{host}")
}

impl Broker {
    /// Sets the node-wide limits (at start-up).
    pub fn set_node_limits(&self, limits: NodeLimits) {
        *self.usage.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The node-wide limits.
    pub fn node_limits(&self) -> NodeLimits {
        *self.usage.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A user's limits.
    pub fn user_limits(&self, user: &str) -> UserLimits {
        let limits = self.usage.user_limits.read().unwrap_or_else(|p| p.into_inner());
        limits.get(user).copied().unwrap_or_default()
    }

    /// Sets a user's limits (all of them: unset ones are cleared) and saves the definitions.
    /// 404-like 406 if there is no such user.
    pub fn set_user_limits(&self, user: &str, limits: UserLimits) -> Result<()> {
        if !self.has_user(user) {
            return Err(AmqpError::not_found(format!("user '{user}' does not exist")));
        }
        self.restore_user_limits(user, limits);
        self.save_definitions()
    }

    /// Sets a user's limits without saving (at start-up).
    pub(crate) fn restore_user_limits(&self, user: &str, limits: UserLimits) {
        let mut all = self.usage.user_limits.write().unwrap_or_else(|p| p.into_inner());
        if limits.is_empty() {
            all.remove(user);
        } else {
            all.insert(user.to_string(), limits);
        }
    }

    /// Every user's limits.
    pub fn all_user_limits(&self) -> Vec<(String, UserLimits)> {
        let all = self.usage.user_limits.read().unwrap_or_else(|p| p.into_inner());
        all.iter().map(|(u, l)| (u.clone(), *l)).collect()
    }

    fn user_counts(&self, user: &str) -> UserCounts {
        let mut users = self.usage.users.lock().unwrap_or_else(|p| p.into_inner());
        users.entry(user.to_string()).or_default().clone()
    }

    /// Counts a connection opening on the node: 530 "connection refused: node connection
    /// limit (N) is reached" past `connection_max`.
    pub fn count_connection(&self) -> Result<Counted> {
        let max = self.node_limits().connection_max;
        if !take(&self.usage.connections, max) {
            return Err(AmqpError::not_allowed(format!(
                "connection refused: node connection limit ({}) is reached",
                max.unwrap_or_default()
            )));
        }
        Ok(Counted(vec![self.usage.connections.clone()]))
    }

    /// Counts a connection of `user`: 530 "connection refused for user 'u': user connection
    /// limit (N) is reached" past their `max-connections`.
    pub fn count_user_connection(&self, user: &str) -> Result<Counted> {
        let max = self.user_limits(user).max_connections;
        let counts = self.user_counts(user);
        if !take(&counts.connections, max) {
            return Err(AmqpError::not_allowed(format!(
                "connection refused for user '{user}': user connection limit ({}) is reached",
                max.unwrap_or_default()
            )));
        }
        Ok(Counted(vec![counts.connections]))
    }

    /// Counts a channel of `user` opening: 530 past their `max-channels` (checked first, as
    /// RabbitMQ), or past the node's `channel_max_per_node`.
    pub fn count_channel(&self, user: &str) -> Result<Counted> {
        let max = self.user_limits(user).max_channels;
        let counts = self.user_counts(user);
        if !take(&counts.channels, max) {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened for user '{user}' has reached the maximum allowed \
                 user limit of ({})",
                max.unwrap_or_default()
            )));
        }
        let user_count = Counted(vec![counts.channels]);
        let max = self.node_limits().channel_max_per_node;
        if !take(&self.usage.channels, max) {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened on node '{}' has reached the maximum allowed limit \
                 of {}",
                node_name(),
                max.unwrap_or_default()
            )));
        }
        let mut counted = user_count;
        counted.0.push(self.usage.channels.clone());
        Ok(counted)
    }
}

/// 530 if a channel with `consumers` consumers may not take another (`max`: the node's
/// `consumer_max_per_channel`).
pub fn check_consumer_count(max: Option<u64>, consumers: usize) -> Result<()> {
    match max {
        Some(m) if consumers as u64 >= m => {
            Err(AmqpError::not_allowed(format!("reached maximum ({m}) of consumers per channel")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::FieldValue;

    fn broker() -> Broker {
        Broker::with_default_user("guest", "guest", "/", false)
    }

    #[test]
    fn user_limits_are_read_as_rabbitmq_reads_them() {
        let t = FieldTable::new()
            .with("max-connections", FieldValue::I32(2))
            .with("max-channels", FieldValue::I32(-1));
        let l = UserLimits::parse(&t).unwrap();
        assert_eq!(l, UserLimits { max_connections: Some(2), max_channels: None });
        assert_eq!(UserLimits::parse(&l.to_table()).unwrap(), l);
        let e = UserLimits::parse(&FieldTable::new().with("max-queues", FieldValue::I32(1)))
            .unwrap_err();
        assert!(e.text.contains("user-limits"), "{}", e.text);
        assert!(UserLimits::parse(&FieldTable::new().with("max-channels", "ten")).is_err());
    }

    #[test]
    fn node_connections_beyond_the_limit_are_refused_until_one_closes() {
        let b = broker();
        b.set_node_limits(NodeLimits { connection_max: Some(1), ..Default::default() });
        let first = b.count_connection().unwrap();
        let e = b.count_connection().unwrap_err();
        assert_eq!(
            (e.code, e.text.as_str()),
            (530, "connection refused: node connection limit (1) is reached")
        );
        drop(first);
        assert!(b.count_connection().is_ok());
    }

    #[test]
    fn user_limits_count_each_user_apart() {
        let b = broker();
        b.set_user_limits("guest", UserLimits { max_connections: Some(1), max_channels: Some(2) })
            .unwrap();
        assert!(b.set_user_limits("nobody", UserLimits::default()).is_err());
        let c = b.count_user_connection("guest").unwrap();
        let e = b.count_user_connection("guest").unwrap_err();
        assert_eq!(
            e.text,
            "connection refused for user 'guest': user connection limit (1) is reached"
        );
        assert!(b.count_user_connection("other").is_ok(), "another user is not limited");
        drop(c);
        let chans = [b.count_channel("guest").unwrap(), b.count_channel("guest").unwrap()];
        let e = b.count_channel("guest").unwrap_err();
        assert_eq!(
            e.text,
            "number of channels opened for user 'guest' has reached the maximum allowed user \
             limit of (2)"
        );
        drop(chans);
        assert!(b.count_channel("guest").is_ok());
    }

    #[test]
    fn a_channel_refused_by_the_node_limit_does_not_count_for_its_user() {
        let b = broker();
        b.set_node_limits(NodeLimits { channel_max_per_node: Some(1), ..Default::default() });
        b.set_user_limits("guest", UserLimits { max_connections: None, max_channels: Some(1) })
            .unwrap();
        let _other = b.count_channel("other").unwrap();
        assert!(b.count_channel("guest").unwrap_err().text.contains("on node"));
        // The refused attempt gave its user count back: the user may open one when the node
        // has room.
        drop(_other);
        assert!(b.count_channel("guest").is_ok());
    }

    #[test]
    fn consumers_per_channel() {
        assert!(check_consumer_count(None, 10_000).is_ok());
        assert!(check_consumer_count(Some(2), 1).is_ok());
        let e = check_consumer_count(Some(2), 2).unwrap_err();
        assert_eq!(
            (e.code, e.text.as_str()),
            (530, "reached maximum (2) of consumers per channel")
        );
    }
}

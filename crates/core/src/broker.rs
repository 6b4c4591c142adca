//! The broker: users with their passwords and vhost permissions, and the vhosts themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::queue::ConnectionId;
use crate::vhost::VHost;

/// A user who may log in.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Password (PLAIN / AMQPLAIN compare it as given).
    pub password: String,
    /// Vhosts the user may open.
    pub vhosts: Vec<String>,
    /// Like RabbitMQ's `loopback_users`: may log in only from a loopback address.
    pub loopback_only: bool,
}

/// All of the broker's state.
#[derive(Debug, Default)]
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: RwLock<HashMap<String, User>>,
    next_connection: AtomicU64,
}

impl Broker {
    /// A broker with one user who may use one vhost, as RabbitMQ starts with guest on `/`.
    pub fn with_default_user(user: &str, password: &str, vhost: &str, loopback_only: bool) -> Self {
        let broker = Broker::default();
        broker.add_vhost(vhost);
        broker.add_user(User {
            name: user.to_string(),
            password: password.to_string(),
            vhosts: vec![vhost.to_string()],
            loopback_only,
        });
        broker
    }

    /// Creates a vhost with its standard exchanges (no-op if it exists).
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let mut vhosts = self.vhosts.write().unwrap_or_else(|p| p.into_inner());
        vhosts
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(VHost::new(name)))
            .clone()
    }

    /// Adds or replaces a user.
    pub fn add_user(&self, user: User) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        users.insert(user.name.clone(), user);
    }

    /// The vhost called `name`.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The user if the password matches.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        users.get(name).filter(|u| u.password == password).cloned()
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Called when a connection ends: its exclusive queues are deleted in every vhost.
    pub fn connection_closed(&self, connection: ConnectionId) {
        let vhosts: Vec<Arc<VHost>> = self
            .vhosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for v in vhosts {
            v.drop_exclusive_queues(connection);
        }
    }
}

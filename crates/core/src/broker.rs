//! The broker: users with their passwords and vhost permissions, and the vhosts themselves;
//! opening it on a data dir recovers what was durable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tracing::info;
use warren_store::definitions::{Definitions, Password, UserDef};
use warren_store::{Store, StoreError, StoreOptions};

use crate::alarm::Alarms;
use crate::password::PasswordHash;
use crate::persistence::Persistence;
use crate::queue::ConnectionId;
use crate::vhost::VHost;

/// A user who may log in.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The password's salted hash (PLAIN / AMQPLAIN check the given password against it).
    pub password: PasswordHash,
    /// Vhosts the user may open.
    pub vhosts: Vec<String>,
    /// Like RabbitMQ's `loopback_users`: may log in only from a loopback address.
    pub loopback_only: bool,
}

/// The user and vhost a new data dir starts with (RabbitMQ's default user and vhost).
#[derive(Debug, Clone)]
pub struct Defaults {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Vhost.
    pub vhost: String,
    /// Whether the user may only connect from loopback.
    pub loopback_only: bool,
}

/// All of the broker's state.
#[derive(Debug, Default)]
pub struct Broker {
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    users: RwLock<HashMap<String, User>>,
    next_connection: AtomicU64,
    persistence: Option<Arc<Persistence>>,
    /// The memory and disk alarms in force.
    pub alarms: Alarms,
    /// Connections and channels counted against the node's and users' limits.
    pub(crate) usage: crate::usage::Usage,
}

impl Broker {
    /// An in-memory broker with one user who may use one vhost.
    pub fn with_default_user(user: &str, password: &str, vhost: &str, loopback_only: bool) -> Self {
        let broker = Broker::default();
        broker.add_defaults(&Defaults {
            user: user.into(),
            password: password.into(),
            vhost: vhost.into(),
            loopback_only,
        });
        broker
    }

    fn add_defaults(&self, d: &Defaults) {
        self.add_vhost(&d.vhost);
        self.add_user(User {
            name: d.user.clone(),
            password: PasswordHash::new(&d.password),
            vhosts: vec![d.vhost.clone()],
            loopback_only: d.loopback_only,
        });
    }

    /// Opens the data dir: recovers users, vhosts, durable exchanges, queues, bindings and
    /// persistent messages; a new data dir starts with `defaults`.
    pub fn open(dir: &Path, defaults: &Defaults) -> Result<Arc<Broker>, StoreError> {
        let started = std::time::Instant::now();
        let (store, recovery) = Store::open(dir, StoreOptions::default())?;
        let next_queue_id = recovery
            .definitions
            .as_ref()
            .and_then(|d| {
                let exchanges = d.exchanges.iter().filter_map(|e| e.store_id);
                d.queues.iter().map(|q| q.id).chain(exchanges).max()
            })
            .map_or(1, |m| m + 1)
            .max(recovery.definitions.as_ref().map_or(0, |d| d.next_queue_id));
        let persistence = Persistence::new(store, next_queue_id);
        let broker =
            Arc::new(Broker { persistence: Some(persistence.clone()), ..Broker::default() });
        let _ = persistence.broker.set(Arc::downgrade(&broker));
        match recovery.definitions {
            None => {
                broker.add_defaults(defaults);
                // A new data dir on a full disk: the monitor's retries save them later.
                let _ = persistence.changed();
            }
            Some(defs) => {
                let mut messages = recovery.queues;
                for v in &defs.vhosts {
                    broker.add_vhost(v);
                }
                let mut rehashed = false;
                for u in defs.users {
                    let password = match &u.password {
                        Password::Hash(h) => PasswordHash::from_base64(h),
                        Password::Plain(p) => {
                            // Written before warren hashed passwords: hashed now, saved below.
                            rehashed = true;
                            Some(PasswordHash::new(p))
                        }
                    };
                    let Some(password) = password else {
                        tracing::warn!(user = %u.name, "skipping a user whose password hash is not one");
                        continue;
                    };
                    broker.add_user(User {
                        name: u.name,
                        password,
                        vhosts: u.vhosts,
                        loopback_only: u.loopback_only,
                    });
                }
                for (u, limits) in &defs.user_limits {
                    match crate::usage::UserLimits::parse(limits) {
                        Ok(l) => broker.restore_user_limits(u, l),
                        Err(e) => tracing::warn!(user = %u, "skipping user limits: {}", e.text),
                    }
                }
                for (v, limits) in &defs.vhost_limits {
                    match (broker.vhost(v), crate::limits::VhostLimits::parse(limits)) {
                        (Some(v), Ok(l)) => v.restore_limits(l),
                        (_, Err(e)) => {
                            tracing::warn!(vhost = %v, "skipping vhost limits: {}", e.text)
                        }
                        _ => {}
                    }
                }
                for p in &defs.policies {
                    if let Some(v) = broker.vhost(&p.vhost) {
                        v.restore_policy(p);
                    }
                }
                for e in &defs.exchanges {
                    if let Some(v) = broker.vhost(&e.vhost) {
                        v.restore_exchange(e, &mut messages);
                    }
                }
                for q in &defs.queues {
                    if let Some(v) = broker.vhost(&q.vhost) {
                        v.restore_queue(q, messages.remove(&q.id).unwrap_or_default());
                    }
                }
                for b in &defs.bindings {
                    if let Some(v) = broker.vhost(&b.vhost) {
                        v.restore_binding(b);
                    }
                }
                if rehashed {
                    // No password stays in plain text on disk (retried if this save fails).
                    let _ = persistence.changed();
                }
                info!(
                    vhosts = defs.vhosts.len(),
                    exchanges = defs.exchanges.len(),
                    queues = defs.queues.len(),
                    bindings = defs.bindings.len(),
                    messages = recovery.stats.messages,
                    "recovered definitions and messages in {:.3} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Ok(broker)
    }

    /// Flushes and fsyncs the store and stops its writer (at shutdown).
    pub fn close(&self) {
        if let Some(p) = &self.persistence {
            p.store.close();
        }
    }

    /// Saves the definitions if an earlier save failed (called periodically).
    pub fn retry_definitions(&self) {
        if let Some(p) = &self.persistence {
            p.retry();
        }
    }

    /// The store, if the broker has a data dir.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.persistence.as_ref().map(|p| &p.store)
    }

    /// The definitions snapshot: users, vhosts and every vhost's durable things.
    pub fn definitions(&self) -> Definitions {
        let mut defs = Definitions::default();
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        for u in users.values() {
            defs.users.push(UserDef {
                name: u.name.clone(),
                password: Password::Hash(u.password.to_base64()),
                vhosts: u.vhosts.clone(),
                loopback_only: u.loopback_only,
            });
        }
        drop(users);
        for (u, limits) in self.all_user_limits() {
            defs.user_limits.push((u, limits.to_table()));
        }
        let vhosts: Vec<Arc<VHost>> =
            self.vhosts.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for v in vhosts {
            defs.vhosts.push(v.name.clone());
            v.durable_definitions(&mut defs);
        }
        defs.next_queue_id = self.persistence.as_ref().map_or(0, |p| p.next_queue_id());
        defs
    }

    /// Creates a vhost with its standard exchanges (no-op if it exists).
    pub fn add_vhost(&self, name: &str) -> Arc<VHost> {
        let mut vhosts = self.vhosts.write().unwrap_or_else(|p| p.into_inner());
        vhosts
            .entry(name.to_string())
            .or_insert_with(|| VHost::with_persistence(name, self.persistence.clone()))
            .clone()
    }

    /// Adds or replaces a user.
    pub fn add_user(&self, user: User) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        users.insert(user.name.clone(), user);
    }

    /// Every vhost.
    pub fn vhost_list(&self) -> Vec<Arc<VHost>> {
        self.vhosts.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The vhost called `name`.
    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Whether user `name` exists.
    pub fn has_user(&self, name: &str) -> bool {
        self.users.read().unwrap_or_else(|p| p.into_inner()).contains_key(name)
    }

    /// Saves the definitions (after a change made outside a vhost).
    pub(crate) fn save_definitions(&self) -> crate::Result<()> {
        self.persistence.as_ref().map_or(Ok(()), |p| p.changed())
    }

    /// The user called `name` (a login that needs no password: EXTERNAL).
    pub fn user(&self, name: &str) -> Option<User> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The user if the password matches.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        users.get(name).filter(|u| u.password.verify(password)).cloned()
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Called when a connection ends: its exclusive queues are deleted in every vhost.
    pub fn connection_closed(&self, connection: ConnectionId) {
        let vhosts: Vec<Arc<VHost>> =
            self.vhosts.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for v in vhosts {
            v.drop_exclusive_queues(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_store::StoreOptions;

    #[test]
    fn a_plain_text_password_from_an_older_data_dir_is_hashed_and_saved_hashed() {
        let dir = std::env::temp_dir().join(format!("warren-core-rehash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = Store::open(&dir, StoreOptions::default()).expect("store");
        let old = Definitions {
            vhosts: vec!["/".into()],
            users: vec![UserDef {
                name: "app".into(),
                password: Password::Plain("hunter2-plain".into()),
                vhosts: vec!["/".into()],
                loopback_only: false,
            }],
            ..Default::default()
        };
        store.save_definitions(&old).expect("save");
        store.close();
        let file = dir.join(warren_store::definitions::FILE);
        let contains = |needle: &[u8]| {
            std::fs::read(&file).expect("read").windows(needle.len()).any(|w| w == needle)
        };
        assert!(contains(b"hunter2-plain"), "the old file has it in plain text");
        let defaults = Defaults {
            user: "guest".into(),
            password: "guest".into(),
            vhost: "/".into(),
            loopback_only: true,
        };
        let broker = Broker::open(&dir, &defaults).expect("open");
        assert!(broker.authenticate("app", "hunter2-plain").is_some());
        assert!(broker.authenticate("app", "hunter2").is_none());
        assert!(!contains(b"hunter2-plain"), "saved again with the hash only");
        broker.close();
        drop(broker);
        let broker = Broker::open(&dir, &defaults).expect("reopen");
        assert!(broker.authenticate("app", "hunter2-plain").is_some(), "the hash survives");
        broker.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The broker: users with their passwords and vhost permissions, and the vhosts themselves;
//! opening it on a data dir recovers what was durable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tracing::info;
use warren_store::definitions::{Definitions, Password, PermissionDef, UserDef};
use warren_store::{Store, StoreError, StoreOptions};

use crate::alarm::Alarms;
use crate::password::PasswordHash;
use crate::persistence::Persistence;
use crate::queue::ConnectionId;
use crate::users::{Permissions, User};
use crate::vhost::VHost;

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
    pub(crate) users: RwLock<HashMap<String, User>>,
    /// Users' permissions: (user, vhost) -> permissions.
    pub(crate) permissions: RwLock<HashMap<(String, String), Arc<Permissions>>>,
    /// Moves on every change to users or permissions (connections look theirs up again).
    pub(crate) permission_generation: AtomicU64,
    next_connection: AtomicU64,
    persistence: Option<Arc<Persistence>>,
    /// The memory and disk alarms in force.
    pub alarms: Alarms,
    /// Connections and channels counted against the node's and users' limits.
    pub(crate) usage: crate::usage::Usage,
    /// The open client connections (for the management API).
    pub connections: crate::connections::Connections,
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
        // As RabbitMQ's default user: an administrator with every permission on the vhost.
        self.add_user(User {
            name: d.user.clone(),
            password: Some(PasswordHash::new(&d.password)),
            tags: vec!["administrator".into()],
            loopback_only: d.loopback_only,
        });
        self.grant(&d.user, &d.vhost, Permissions::all());
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
                        None => None,
                        Some(Password::Hash(h)) => match PasswordHash::from_base64(h) {
                            Some(h) => Some(h),
                            None => {
                                tracing::warn!(user = %u.name, "a password hash that is not one: the user cannot log in with a password");
                                None
                            }
                        },
                        Some(Password::Plain(p)) => {
                            // Written before warren hashed passwords: hashed now, saved below.
                            rehashed = true;
                            Some(PasswordHash::new(p))
                        }
                    };
                    for v in &u.vhosts {
                        // Written before warren had permissions: the user could do anything
                        // in the vhosts it could open.
                        rehashed = true;
                        broker.grant(&u.name, v, Permissions::all());
                    }
                    broker.add_user(User {
                        name: u.name,
                        password,
                        tags: u.tags,
                        loopback_only: u.loopback_only,
                    });
                }
                for p in &defs.permissions {
                    match Permissions::new(&p.configure, &p.write, &p.read) {
                        Ok(perms) => broker.grant(&p.user, &p.vhost, perms),
                        Err(e) => {
                            tracing::warn!(user = %p.user, vhost = %p.vhost, "skipping permissions: {}", e.text)
                        }
                    }
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
                password: u.password.as_ref().map(|h| Password::Hash(h.to_base64())),
                tags: u.tags.clone(),
                vhosts: Vec::new(),
                loopback_only: u.loopback_only,
            });
        }
        drop(users);
        for ((user, vhost), p) in self.permissions.read().unwrap_or_else(|p| p.into_inner()).iter()
        {
            let (configure, write, read) = p.texts();
            defs.permissions.push(PermissionDef {
                user: user.clone(),
                vhost: vhost.clone(),
                configure: configure.into(),
                write: write.into(),
                read: read.into(),
            });
        }
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

    /// Creates a vhost if there is none of that name (`add_vhost`, the API's PUT), and saves
    /// the definitions; whether it is new.
    pub fn create_vhost(&self, name: &str) -> crate::Result<bool> {
        if name.is_empty() || name.len() > 255 {
            return Err(crate::AmqpError::precondition_failed(
                "a vhost name must have 1 to 255 bytes",
            ));
        }
        if self.vhost(name).is_some() {
            return Ok(false);
        }
        self.add_vhost(name);
        self.save_definitions()?;
        Ok(true)
    }

    /// Deletes a vhost with everything in it (`delete_vhost`, the API's DELETE): its
    /// connections are closed (320), its queues deleted with their messages, permissions in
    /// it removed. 404 if there is none.
    pub fn delete_vhost(&self, name: &str) -> crate::Result<()> {
        let removed = self.vhosts.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        let Some(vhost) = removed else {
            return Err(crate::AmqpError::not_found(format!("no vhost '{name}'")));
        };
        for c in self.connections.list().into_iter().filter(|c| c.vhost == name) {
            c.request_close(&format!("vhost '{name}' is deleted"));
        }
        for q in vhost.queue_list() {
            vhost.remove_queue(&q);
        }
        for x in vhost.exchange_list() {
            if !x.is_builtin() && !x.name.is_empty() {
                let _ = vhost.delete_exchange(&x.name, false);
            }
        }
        self.permissions.write().unwrap_or_else(|p| p.into_inner()).retain(|(_, v), _| v != name);
        self.permission_generation.fetch_add(1, Ordering::AcqRel);
        self.save_definitions()
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
        users.get(name).filter(|u| u.password.as_ref().is_some_and(|h| h.verify(password))).cloned()
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
                password: Some(Password::Plain("hunter2-plain".into())),
                tags: Vec::new(),
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

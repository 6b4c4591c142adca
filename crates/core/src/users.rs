//! Users and what they may do, as RabbitMQ's internal auth backend has it: a user has a
//! salted password hash (or none: no password login), tags (`administrator`, `monitoring`,
//! `policymaker`, `management`, or any other word) and, per vhost, three regular expressions
//! naming the resources (queues and exchanges) it may configure, write to and read from.
//!
//! The broker holds them (`Broker::set_permissions` ...); [`Access`] is what a connection keeps
//! to check its operations cheaply: the permissions of its user in its vhost, looked up again
//! only when any permission changed since.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use regex_lite::Regex;

use crate::error::{AmqpError, Result};
use crate::password::PasswordHash;

/// A user who may log in.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The password's salted hash; `None`: the user cannot log in with a password (only
    /// EXTERNAL, with a client certificate).
    pub password: Option<PasswordHash>,
    /// Tags (`administrator`, `monitoring`, `policymaker`, `management`, ...), in order.
    pub tags: Vec<String>,
    /// Like RabbitMQ's `loopback_users`: may log in only from a loopback address.
    pub loopback_only: bool,
}

impl User {
    /// Whether the user has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Splits a tags argument as rabbitmqctl and the HTTP API take it: separated by commas or
/// spaces, empty words dropped.
pub fn parse_tags(text: &str) -> Vec<String> {
    text.split([',', ' ']).map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()
}

/// What an operation needs on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Create or delete it (declare, delete).
    Configure,
    /// Put into it (publish to an exchange, bind a queue to something).
    Write,
    /// Take from it (consume or get from a queue, bind from an exchange).
    Read,
}

/// The kind of resource a permission names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A queue.
    Queue,
    /// An exchange (the default exchange is `amq.default` here).
    Exchange,
}

/// One regular expression of a permission, as given and compiled. An empty one allows
/// nothing (RabbitMQ: a synonym for `^$`, which no resource name matches); `.*` matches
/// everything without running the regex.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    regex: Option<Regex>,
}

impl Pattern {
    fn new(text: &str) -> Result<Pattern> {
        let regex = match text {
            ".*" => None,
            "" => Some(Regex::new("^$").expect("a valid regex")),
            _ => Some(Regex::new(text).map_err(|e| {
                AmqpError::precondition_failed(format!("invalid regular expression '{text}': {e}"))
            })?),
        };
        Ok(Pattern { text: text.into(), regex })
    }

    fn allows(&self, name: &str) -> bool {
        self.regex.as_ref().is_none_or(|r| r.is_match(name))
    }
}

/// A user's permissions in one vhost.
#[derive(Debug, Clone)]
pub struct Permissions {
    configure: Pattern,
    write: Pattern,
    read: Pattern,
}

impl Permissions {
    /// Permissions from their three regular expressions (refused if one does not compile).
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permissions> {
        Ok(Permissions {
            configure: Pattern::new(configure)?,
            write: Pattern::new(write)?,
            read: Pattern::new(read)?,
        })
    }

    /// Everything (`.*` three times), as the default user has on the default vhost.
    pub fn all() -> Permissions {
        Permissions::new(".*", ".*", ".*").expect("valid")
    }

    /// The three regular expressions as given: configure, write, read.
    pub fn texts(&self) -> (&str, &str, &str) {
        (&self.configure.text, &self.write.text, &self.read.text)
    }

    /// Whether `perm` on the resource called `name` is allowed.
    pub fn allows(&self, perm: Perm, name: &str) -> bool {
        match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        }
        .allows(name)
    }
}

/// The 403 ACCESS_REFUSED RabbitMQ answers to an operation the user's permissions do not
/// allow (its text does not say which permission was missing).
pub fn refused(kind: Kind, name: &str, vhost: &str, user: &str) -> AmqpError {
    let kind = match kind {
        Kind::Queue => "queue",
        Kind::Exchange => "exchange",
    };
    AmqpError::access_refused(format!(
        "access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"
    ))
}

/// The last exchange a channel was allowed to publish to (see [`Access::check_publish`]).
#[derive(Debug, Default)]
pub struct PublishCache {
    exchange: Option<String>,
    generation: u64,
}

/// What a connection keeps to check its user's operations in its vhost: the permissions it
/// had at the last look, and the broker's permission generation then.
#[derive(Debug)]
pub struct Access {
    broker: Arc<crate::Broker>,
    user: String,
    vhost: String,
    generation: u64,
    permissions: Option<Arc<Permissions>>,
    /// The user has the `impersonator` tag: it may publish with another user's user_id.
    impersonator: bool,
}

impl Access {
    /// The access of `user` in `vhost`, as it is now.
    pub fn new(broker: Arc<crate::Broker>, user: &str, vhost: &str) -> Access {
        let generation = broker.permission_generation();
        let permissions = broker.permissions(user, vhost);
        let impersonator = broker.user(user).is_some_and(|u| u.has_tag("impersonator"));
        Access {
            broker,
            user: user.into(),
            vhost: vhost.into(),
            generation,
            permissions,
            impersonator,
        }
    }

    /// The user's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the user may publish with another user's `user_id` (tag `impersonator`).
    pub fn impersonator(&mut self) -> bool {
        self.refresh();
        self.impersonator
    }

    /// Whether the user has any permissions in the vhost (connection.open needs some).
    pub fn any(&mut self) -> bool {
        self.refresh();
        self.permissions.is_some()
    }

    /// The broker's permission generation the last check saw (a publisher caches its last
    /// allowed exchange with it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Looks the permissions up again if any changed since the last look (the connection
    /// calls this once per batch of frames it reads, so that a change applies at once).
    pub fn refresh(&mut self) {
        let now = self.broker.permission_generation();
        if now != self.generation {
            self.generation = now;
            self.permissions = self.broker.permissions(&self.user, &self.vhost);
            self.impersonator =
                self.broker.user(&self.user).is_some_and(|u| u.has_tag("impersonator"));
        }
    }

    /// Checks write on the exchange a publish goes to, remembering the last exchange
    /// allowed (with the permission generation) in `cache`: a publisher repeating its
    /// exchange costs a name comparison.
    pub fn check_publish(&mut self, exchange: &str, cache: &mut PublishCache) -> Result<()> {
        // Against the generation of the last `refresh` (the connection refreshes once per
        // batch of frames it reads): nothing shared is touched per publish.
        let same = |name: &str| {
            name.len() == exchange.len()
                && (name.is_empty() || name.as_bytes() == exchange.as_bytes())
        };
        if cache.generation == self.generation && cache.exchange.as_deref().is_some_and(same) {
            return Ok(());
        }
        self.check(Perm::Write, Kind::Exchange, exchange)?;
        // A copy: a clone of the name would be a slice of the connection's read buffer, and
        // would keep that buffer from being reused.
        match &mut cache.exchange {
            Some(name) => {
                name.clear();
                name.push_str(exchange);
            }
            none => *none = Some(exchange.to_string()),
        }
        cache.generation = self.generation;
        Ok(())
    }

    /// Checks `perm` on a resource; 403 with RabbitMQ's text if it is not allowed. The
    /// default exchange is checked as `amq.default`.
    pub fn check(&mut self, perm: Perm, kind: Kind, name: &str) -> Result<()> {
        self.refresh();
        let name = if kind == Kind::Exchange && name.is_empty() { "amq.default" } else { name };
        match &self.permissions {
            Some(p) if p.allows(perm, name) => Ok(()),
            _ => Err(refused(kind, name, &self.vhost, &self.user)),
        }
    }
}

impl crate::Broker {
    /// The permissions of `user` in `vhost`, if it has any there.
    pub fn permissions(&self, user: &str, vhost: &str) -> Option<Arc<Permissions>> {
        let perms = self.permissions.read().unwrap_or_else(|p| p.into_inner());
        perms.get(&(user.to_string(), vhost.to_string())).cloned()
    }

    /// Moves on every change to users or permissions.
    pub fn permission_generation(&self) -> u64 {
        self.permission_generation.load(Ordering::Acquire)
    }

    fn users_changed(&self) {
        self.permission_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Sets permissions without checks or saving (start-up, defaults).
    pub(crate) fn grant(&self, user: &str, vhost: &str, perms: Permissions) {
        let mut all = self.permissions.write().unwrap_or_else(|p| p.into_inner());
        all.insert((user.to_string(), vhost.to_string()), Arc::new(perms));
        drop(all);
        self.users_changed();
    }

    /// Adds or replaces a user without saving (start-up, defaults).
    pub(crate) fn add_user(&self, user: User) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        users.insert(user.name.clone(), user);
        drop(users);
        self.users_changed();
    }

    /// Every user, by name.
    pub fn user_list(&self) -> Vec<User> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<User> = users.values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Every permission: (user, vhost, permissions), by user then vhost.
    pub fn permission_list(&self) -> Vec<(String, String, Arc<Permissions>)> {
        let perms = self.permissions.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> =
            perms.iter().map(|((u, v), p)| (u.clone(), v.clone(), p.clone())).collect();
        list.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        list
    }

    /// Creates or updates a user (`add_user`, `change_password`, `set_user_tags`, the API's
    /// PUT): `password` replaces the password (`Some(None)` removes it), `tags` the tags;
    /// what is `None` stays as it was (for a new user: no password, no tags). Saved.
    /// Returns whether the user is new.
    pub fn put_user(
        &self,
        name: &str,
        password: Option<Option<PasswordHash>>,
        tags: Option<Vec<String>>,
    ) -> Result<bool> {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        let created = !users.contains_key(name);
        let user = users.entry(name.to_string()).or_insert_with(|| User {
            name: name.to_string(),
            password: None,
            tags: Vec::new(),
            loopback_only: false,
        });
        if let Some(p) = password {
            user.password = p;
        }
        if let Some(t) = tags {
            user.tags = t;
        }
        drop(users);
        self.users_changed();
        self.save_definitions()?;
        Ok(created)
    }

    /// Deletes a user with its permissions and limits (404 if there is none). Saved.
    pub fn delete_user(&self, name: &str) -> Result<()> {
        let removed = self.users.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        if removed.is_none() {
            return Err(AmqpError::not_found(format!("user '{name}' does not exist")));
        }
        self.permissions.write().unwrap_or_else(|p| p.into_inner()).retain(|(u, _), _| u != name);
        self.users_changed();
        self.save_definitions()
    }

    /// Sets a user's permissions in a vhost (both must exist: 404 otherwise). Saved.
    pub fn set_permissions(&self, user: &str, vhost: &str, perms: Permissions) -> Result<()> {
        if !self.has_user(user) {
            return Err(AmqpError::not_found(format!("user '{user}' does not exist")));
        }
        if self.vhost(vhost).is_none() {
            return Err(AmqpError::not_found(format!("vhost '{vhost}' does not exist")));
        }
        self.grant(user, vhost, perms);
        self.save_definitions()
    }

    /// Removes a user's permissions in a vhost; whether it had any (saved if so).
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<bool> {
        let mut all = self.permissions.write().unwrap_or_else(|p| p.into_inner());
        if all.remove(&(user.to_string(), vhost.to_string())).is_none() {
            return Ok(false);
        }
        drop(all);
        self.users_changed();
        self.save_definitions()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_rabbitmqs() {
        let p = Permissions::new("^app\\.", "", ".*").unwrap();
        assert!(p.allows(Perm::Configure, "app.jobs"));
        assert!(!p.allows(Perm::Configure, "other.app.jobs"));
        // Unanchored otherwise: a regex that matches anywhere in the name allows it.
        assert!(Permissions::new("jobs", "", "").unwrap().allows(Perm::Configure, "my-jobs-q"));
        assert!(!p.allows(Perm::Write, "anything"), "an empty regex allows nothing");
        assert!(!p.allows(Perm::Write, "amq.default"));
        assert!(p.allows(Perm::Read, "anything"));
        assert_eq!(p.texts(), ("^app\\.", "", ".*"));
        assert_eq!(Permissions::new("(", ".*", ".*").unwrap_err().code, 406);
    }

    #[test]
    fn the_refusal_is_rabbitmqs() {
        let e = refused(Kind::Queue, "q", "/", "u");
        assert_eq!(e.code, 403);
        assert_eq!(e.text, "access to queue 'q' in vhost '/' refused for user 'u'");
    }

    #[test]
    fn tags_split_on_commas_and_spaces() {
        assert_eq!(
            parse_tags("administrator, monitoring  x"),
            ["administrator", "monitoring", "x"]
        );
        assert!(parse_tags("").is_empty());
    }
}

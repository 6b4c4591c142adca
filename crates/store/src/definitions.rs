//! Durable definitions: vhosts, users and their permissions, durable exchanges, durable
//! queues (with the ids their files are named by) and the bindings between durable things.
//!
//! They change rarely, so the whole set is rewritten as one snapshot on every change
//! (`definitions.new`, fsync, rename over `definitions`, fsync of the directory): a crash leaves
//! either the old or the new snapshot, never a mix. Each entity is one record whose payload is
//! an AMQP field table, so the format is self-describing and reuses the wire codec.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use warren_wire::{FieldTable, FieldValue};

use crate::StoreError;
use crate::record::{self, Records};

/// First 8 bytes of the definitions file.
pub const MAGIC: &[u8; 8] = b"WRNDEF01";
/// The definitions file's name.
pub const FILE: &str = "definitions";

/// A user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserDef {
    /// Login.
    pub name: String,
    /// The password, as a hash in RabbitMQ's format (or, in a file written before warren
    /// hashed passwords, in plain text: hashed when loaded, and saved hashed); `None`: the
    /// user has no password.
    pub password: Option<Password>,
    /// Tags (`administrator`, `monitoring`, ...).
    pub tags: Vec<String>,
    /// Only read from files written before warren had permissions: vhosts the user could
    /// open (with every permission there). Never written.
    pub vhosts: Vec<String>,
    /// Only from loopback addresses.
    pub loopback_only: bool,
}

/// A user's permissions in a vhost: regular expressions naming what it may configure, write
/// to and read from.
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionDef {
    /// User.
    pub user: String,
    /// Vhost.
    pub vhost: String,
    /// Configure regex.
    pub configure: String,
    /// Write regex.
    pub write: String,
    /// Read regex.
    pub read: String,
}

/// A user's password as the definitions hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum Password {
    /// RabbitMQ's `password_hash`: base64 of a 4-byte salt and SHA-256(salt ++ password).
    Hash(String),
    /// In plain text: only ever read from a file an older warren wrote, never written.
    Plain(String),
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDef {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Type name (`direct`, ...).
    pub kind: String,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// Where a delayed-message exchange keeps its delayed messages in the store (named like a
    /// queue's files).
    pub store_id: Option<u64>,
}

/// A policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDef {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Regular expression matched against names.
    pub pattern: String,
    /// `queues`, `exchanges`, `all`, ...
    pub apply_to: String,
    /// Higher wins.
    pub priority: i64,
    /// The settings.
    pub definition: FieldTable,
}

/// A durable queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Id naming its index and ack files.
    pub id: u64,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// A binding between durable things.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    /// Vhost.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// Destination queue or exchange.
    pub destination: String,
    /// Whether the destination is a queue (else an exchange).
    pub to_queue: bool,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// Everything durable except messages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Definitions {
    /// Vhost names.
    pub vhosts: Vec<String>,
    /// Users.
    pub users: Vec<UserDef>,
    /// Users' permissions in vhosts.
    pub permissions: Vec<PermissionDef>,
    /// Durable exchanges (the built-in ones are not stored).
    pub exchanges: Vec<ExchangeDef>,
    /// Policies.
    pub policies: Vec<PolicyDef>,
    /// Durable queues.
    pub queues: Vec<QueueDef>,
    /// Bindings between durable things.
    pub bindings: Vec<BindingDef>,
    /// Vhost limits: (vhost, limits as `set_vhost_limits` takes them).
    pub vhost_limits: Vec<(String, FieldTable)>,
    /// User limits: (user, limits as `set_user_limits` takes them).
    pub user_limits: Vec<(String, FieldTable)>,
    /// The next id for a queue's (or delayed exchange's) files: ids are never reused, so that
    /// a moved entry's origin never names a later queue.
    pub next_queue_id: u64,
}

fn s(v: &str) -> FieldValue {
    FieldValue::LongStr(Bytes::copy_from_slice(v.as_bytes()))
}

struct Fields<'a>(&'a FieldTable, &'a Path);

impl Fields<'_> {
    fn bad(&self, what: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.1.to_path_buf(),
            problem: format!("definition without valid '{what}'"),
        }
    }
    fn str(&self, k: &str) -> Result<String, StoreError> {
        self.0.get(k).and_then(FieldValue::as_str).map(str::to_string).ok_or_else(|| self.bad(k))
    }
    fn bool(&self, k: &str) -> Result<bool, StoreError> {
        self.0.get(k).and_then(FieldValue::as_bool).ok_or_else(|| self.bad(k))
    }
    fn table(&self, k: &str) -> Result<FieldTable, StoreError> {
        match self.0.get(k) {
            Some(FieldValue::Table(t)) => Ok(t.clone()),
            _ => Err(self.bad(k)),
        }
    }
    fn u64(&self, k: &str) -> Result<u64, StoreError> {
        self.0
            .get(k)
            .and_then(FieldValue::as_i64)
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| self.bad(k))
    }
    fn strings_or_none(&self, k: &str) -> Result<Vec<String>, StoreError> {
        if self.0.get(k).is_none() { Ok(Vec::new()) } else { self.strings(k) }
    }
    fn strings(&self, k: &str) -> Result<Vec<String>, StoreError> {
        match self.0.get(k) {
            Some(FieldValue::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| self.bad(k)))
                .collect(),
            _ => Err(self.bad(k)),
        }
    }
}

impl Definitions {
    fn records(&self) -> Vec<FieldTable> {
        let mut out = Vec::new();
        if self.next_queue_id > 0 {
            let id = FieldValue::I64(self.next_queue_id as i64);
            out.push(FieldTable::new().with("kind", s("ids")).with("next_queue_id", id));
        }
        for v in &self.vhosts {
            out.push(FieldTable::new().with("kind", s("vhost")).with("name", s(v)));
        }
        for (v, limits) in &self.vhost_limits {
            out.push(
                FieldTable::new()
                    .with("kind", s("vhost_limits"))
                    .with("vhost", s(v))
                    .with("limits", limits.clone()),
            );
        }
        for (u, limits) in &self.user_limits {
            out.push(
                FieldTable::new()
                    .with("kind", s("user_limits"))
                    .with("user", s(u))
                    .with("limits", limits.clone()),
            );
        }
        for u in &self.users {
            let mut t = FieldTable::new().with("kind", s("user")).with("name", s(&u.name));
            match &u.password {
                Some(Password::Hash(p)) => t = t.with("password_hash", s(p)),
                Some(Password::Plain(p)) => t = t.with("password", s(p)),
                None => {}
            }
            out.push(
                t.with("tags", FieldValue::Array(u.tags.iter().map(|v| s(v)).collect()))
                    .with("loopback_only", u.loopback_only),
            );
        }
        for p in &self.permissions {
            out.push(
                FieldTable::new()
                    .with("kind", s("permission"))
                    .with("user", s(&p.user))
                    .with("vhost", s(&p.vhost))
                    .with("configure", s(&p.configure))
                    .with("write", s(&p.write))
                    .with("read", s(&p.read)),
            );
        }
        for e in &self.exchanges {
            let mut t = FieldTable::new()
                .with("kind", s("exchange"))
                .with("vhost", s(&e.vhost))
                .with("name", s(&e.name))
                .with("type", s(&e.kind))
                .with("auto_delete", e.auto_delete)
                .with("internal", e.internal)
                .with("arguments", e.arguments.clone());
            if let Some(id) = e.store_id {
                t.insert("id", FieldValue::I64(id as i64));
            }
            out.push(t);
        }
        for p in &self.policies {
            out.push(
                FieldTable::new()
                    .with("kind", s("policy"))
                    .with("vhost", s(&p.vhost))
                    .with("name", s(&p.name))
                    .with("pattern", s(&p.pattern))
                    .with("apply_to", s(&p.apply_to))
                    .with("priority", FieldValue::I64(p.priority))
                    .with("definition", p.definition.clone()),
            );
        }
        for q in &self.queues {
            out.push(
                FieldTable::new()
                    .with("kind", s("queue"))
                    .with("vhost", s(&q.vhost))
                    .with("name", s(&q.name))
                    .with("id", FieldValue::I64(q.id as i64))
                    .with("auto_delete", q.auto_delete)
                    .with("arguments", q.arguments.clone()),
            );
        }
        for b in &self.bindings {
            out.push(
                FieldTable::new()
                    .with("kind", s("binding"))
                    .with("vhost", s(&b.vhost))
                    .with("source", s(&b.source))
                    .with("destination", s(&b.destination))
                    .with("to_queue", b.to_queue)
                    .with("routing_key", s(&b.routing_key))
                    .with("arguments", b.arguments.clone()),
            );
        }
        out
    }

    /// Writes the snapshot atomically into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let mut data = MAGIC.to_vec();
        let mut buf = BytesMut::new();
        for r in self.records() {
            buf.clear();
            r.encode(&mut buf).map_err(|e| StoreError::Corrupt {
                path: dir.join(FILE),
                problem: format!("encoding a definition: {e}"),
            })?;
            record::frame(&mut data, &buf);
        }
        let tmp = dir.join("definitions.new");
        let fin = dir.join(FILE);
        let mut f = File::create(&tmp).map_err(StoreError::io("creating", &tmp))?;
        f.write_all(&data).map_err(StoreError::io("writing", &tmp))?;
        f.sync_all().map_err(StoreError::io("syncing", &tmp))?;
        std::fs::rename(&tmp, &fin).map_err(StoreError::io("renaming over", &fin))?;
        crate::sync_dir(dir)
    }

    /// Reads the snapshot from `dir`; `None` if there is none (a new data dir).
    pub fn load(dir: &Path) -> Result<Option<Definitions>, StoreError> {
        let path = dir.join(FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("reading", &path)(e)),
        };
        if data.get(..8) != Some(&MAGIC[..]) {
            return Err(StoreError::Corrupt {
                path,
                problem: "not a warren definitions file".into(),
            });
        }
        let mut defs = Definitions::default();
        let mut records = Records::new(&data, 8);
        for (_, payload) in records.by_ref() {
            let table = FieldTable::decode(&Bytes::copy_from_slice(payload))
                .map_err(|e| StoreError::Corrupt { path: path.clone(), problem: e.to_string() })?;
            let f = Fields(&table, &path);
            match f.str("kind")?.as_str() {
                "vhost" => defs.vhosts.push(f.str("name")?),
                "user" => defs.users.push(UserDef {
                    name: f.str("name")?,
                    password: if table.get("password_hash").is_some() {
                        Some(Password::Hash(f.str("password_hash")?))
                    } else if table.get("password").is_some() {
                        Some(Password::Plain(f.str("password")?))
                    } else {
                        None
                    },
                    tags: f.strings_or_none("tags")?,
                    vhosts: f.strings_or_none("vhosts")?,
                    loopback_only: f.bool("loopback_only")?,
                }),
                "permission" => defs.permissions.push(PermissionDef {
                    user: f.str("user")?,
                    vhost: f.str("vhost")?,
                    configure: f.str("configure")?,
                    write: f.str("write")?,
                    read: f.str("read")?,
                }),
                "exchange" => defs.exchanges.push(ExchangeDef {
                    vhost: f.str("vhost")?,
                    name: f.str("name")?,
                    kind: f.str("type")?,
                    auto_delete: f.bool("auto_delete")?,
                    internal: f.bool("internal")?,
                    arguments: f.table("arguments")?,
                    store_id: table.get("id").and_then(FieldValue::as_i64).map(|id| id as u64),
                }),
                "vhost_limits" => defs.vhost_limits.push((f.str("vhost")?, f.table("limits")?)),
                "user_limits" => defs.user_limits.push((f.str("user")?, f.table("limits")?)),
                "ids" => {
                    defs.next_queue_id = f.u64("next_queue_id")?;
                }
                "policy" => defs.policies.push(PolicyDef {
                    vhost: f.str("vhost")?,
                    name: f.str("name")?,
                    pattern: f.str("pattern")?,
                    apply_to: f.str("apply_to")?,
                    priority: table.get("priority").and_then(FieldValue::as_i64).unwrap_or(0),
                    definition: f.table("definition")?,
                }),
                "queue" => defs.queues.push(QueueDef {
                    vhost: f.str("vhost")?,
                    name: f.str("name")?,
                    id: f.u64("id")?,
                    auto_delete: f.bool("auto_delete")?,
                    arguments: f.table("arguments")?,
                }),
                "binding" => defs.bindings.push(BindingDef {
                    vhost: f.str("vhost")?,
                    source: f.str("source")?,
                    destination: f.str("destination")?,
                    to_queue: f.bool("to_queue")?,
                    routing_key: f.str("routing_key")?,
                    arguments: f.table("arguments")?,
                }),
                other => {
                    return Err(StoreError::Corrupt {
                        path,
                        problem: format!("unknown definition kind {other:?}"),
                    });
                }
            }
        }
        if records.torn || records.skipped > 0 {
            // The snapshot is renamed into place only once complete and synced, so damage is
            // the disk's. Starting without the damaged definitions would delete the files of
            // the queues they named, confirmed messages and all: refuse instead.
            return Err(StoreError::Corrupt {
                path,
                problem: format!(
                    "damaged record(s) ({} bytes unreadable); restore the file from a backup",
                    records.skipped
                ),
            });
        }
        Ok(Some(defs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip() {
        let dir = crate::tests::temp_dir("defs");
        assert_eq!(Definitions::load(&dir).unwrap(), None);
        let defs = Definitions {
            vhost_limits: vec![(
                "/".into(),
                FieldTable::new().with("max-queues", FieldValue::I64(5)),
            )],
            user_limits: vec![(
                "guest".into(),
                FieldTable::new().with("max-channels", FieldValue::I64(3)),
            )],
            next_queue_id: 12,
            vhosts: vec!["/".into(), "dev".into()],
            users: vec![
                UserDef {
                    name: "guest".into(),
                    password: Some(Password::Hash("AQIDBHs=".into())),
                    tags: vec!["administrator".into(), "monitoring".into()],
                    vhosts: Vec::new(),
                    loopback_only: true,
                },
                UserDef {
                    name: "certified".into(),
                    password: None,
                    tags: Vec::new(),
                    vhosts: Vec::new(),
                    loopback_only: false,
                },
            ],
            permissions: vec![PermissionDef {
                user: "guest".into(),
                vhost: "dev".into(),
                configure: "^app\\.".into(),
                write: "".into(),
                read: ".*".into(),
            }],
            policies: vec![PolicyDef {
                vhost: "/".into(),
                name: "limits".into(),
                pattern: "^jobs$".into(),
                apply_to: "queues".into(),
                priority: -3,
                definition: FieldTable::new().with("max-length", FieldValue::I64(10)),
            }],
            exchanges: vec![
                ExchangeDef {
                    vhost: "/".into(),
                    name: "logs".into(),
                    kind: "topic".into(),
                    auto_delete: false,
                    internal: true,
                    arguments: FieldTable::new().with("alternate-exchange", "ae"),
                    store_id: None,
                },
                ExchangeDef {
                    vhost: "/".into(),
                    name: "later".into(),
                    kind: "x-delayed-message".into(),
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::new().with("x-delayed-type", "direct"),
                    store_id: Some(9),
                },
            ],
            queues: vec![QueueDef {
                vhost: "/".into(),
                name: "jobs".into(),
                id: 7,
                auto_delete: false,
                arguments: FieldTable::new(),
            }],
            bindings: vec![BindingDef {
                vhost: "/".into(),
                source: "logs".into(),
                destination: "jobs".into(),
                to_queue: true,
                routing_key: "a.#".into(),
                arguments: FieldTable::new().with("x-match", "any"),
            }],
        };
        defs.save(&dir).unwrap();
        assert_eq!(Definitions::load(&dir).unwrap(), Some(defs));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn users_written_before_permissions_and_hashes_still_load() {
        let dir = crate::tests::temp_dir("defsold");
        // A user record as an older warren wrote it: plain password, a vhosts list, no tags.
        let old = FieldTable::new()
            .with("kind", s("user"))
            .with("name", s("app"))
            .with("password", s("secret"))
            .with("vhosts", FieldValue::Array(vec![s("/")]))
            .with("loopback_only", false);
        let mut payload = BytesMut::new();
        old.encode(&mut payload).unwrap();
        let mut data = MAGIC.to_vec();
        record::frame(&mut data, &payload);
        std::fs::write(dir.join(FILE), &data).unwrap();
        let defs = Definitions::load(&dir).unwrap().expect("a snapshot");
        assert_eq!(
            defs.users,
            [UserDef {
                name: "app".into(),
                password: Some(Password::Plain("secret".into())),
                tags: Vec::new(),
                vhosts: vec!["/".into()],
                loopback_only: false,
            }]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_layout_is_as_documented() {
        let dir = crate::tests::temp_dir("defslayout");
        Definitions { vhosts: vec!["/".into()], ..Default::default() }.save(&dir).unwrap();
        // One record: an AMQP field table {kind: "vhost", name: "/"} (long strings, type 'S').
        let payload: &[u8] = &[
            0, 0, 0, 26, // table length
            4, b'k', b'i', b'n', b'd', b'S', 0, 0, 0, 5, b'v', b'h', b'o', b's', b't', 4, b'n',
            b'a', b'm', b'e', b'S', 0, 0, 0, 1, b'/',
        ];
        let mut want = b"WRNDEF01".to_vec();
        want.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        want.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        want.extend_from_slice(payload);
        assert_eq!(std::fs::read(dir.join(FILE)).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damage_in_the_middle_refuses_to_start_rather_than_forget_a_queue() {
        let dir = crate::tests::temp_dir("defsdamage");
        let queue = |name: &str, id| QueueDef {
            vhost: "/".into(),
            name: name.into(),
            id,
            auto_delete: false,
            arguments: FieldTable::new(),
        };
        let defs = Definitions {
            vhosts: vec!["/".into()],
            queues: vec![queue("first", 1), queue("second", 2), queue("third", 3)],
            ..Default::default()
        };
        defs.save(&dir).unwrap();
        // A flipped byte in the second queue's record: its CRC fails, the records around it
        // are fine.
        let path = dir.join(FILE);
        let mut data = std::fs::read(&path).unwrap();
        let at = data.windows(6).position(|w| w == b"second").expect("record");
        data[at] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let err = Definitions::load(&dir).expect_err("a damaged snapshot is refused");
        assert!(err.to_string().contains("damaged"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

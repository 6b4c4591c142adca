//! The control socket and the `warren ctl` commands that use it: what `rabbitmqctl` does for a
//! RabbitMQ node, for the running broker on the same machine (policies, vhost and user limits,
//! users, permissions and vhosts, for now).
//!
//! The broker listens on the Unix socket `warren.sock` in its data dir (mode 0600: only the
//! user the broker runs as may use it, as only that user may read the data dir). A request is
//! one line of tab-separated fields, the command first; the answer is the command's output
//! lines, then `ok` or `error: CODE TEXT` (newlines in the text escaped as `\n`).

mod users;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warren_core::limits::VhostLimits;
use warren_core::policy::{ApplyTo, Policy};
use warren_core::usage::UserLimits;
use warren_core::{AmqpError, Broker};
use warren_management::{json_table, table_json};

/// The socket's name in the data dir.
pub const SOCKET: &str = "warren.sock";

/// `warren ctl`: commands for the running broker (as `rabbitmqctl`'s).
#[derive(Debug, Clone, Args)]
pub struct Ctl {
    /// Vhost (before or after the command, as with rabbitmqctl).
    #[arg(short = 'p', long = "vhost", default_value = "/", global = true)]
    pub vhost: String,
    /// The command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The commands.
#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Sets a policy (as `rabbitmqctl set_policy`): NAME PATTERN DEFINITION (JSON).
    #[command(name = "set_policy", alias = "set-policy")]
    SetPolicy {
        /// Priority: of the policies matching a name, the highest applies.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// queues, exchanges, all, classic_queues or quorum_queues.
        #[arg(long = "apply-to", default_value = "all")]
        apply_to: String,
        /// Policy name.
        name: String,
        /// Regular expression matched against queue / exchange names.
        pattern: String,
        /// Settings, as a JSON object, e.g. '{"max-length":1000}'.
        definition: String,
    },
    /// Clears a policy (as `rabbitmqctl clear_policy`).
    #[command(name = "clear_policy", alias = "clear-policy")]
    ClearPolicy {
        /// Policy name.
        name: String,
    },
    /// Sets a vhost's limits (as `rabbitmqctl set_vhost_limits`): a JSON object with
    /// `max-connections` and / or `max-queues` (negative: no limit).
    #[command(name = "set_vhost_limits", alias = "set-vhost-limits")]
    SetVhostLimits {
        /// The limits, e.g. '{"max-connections": 100}'.
        definition: String,
    },
    /// Clears a vhost's limits (as `rabbitmqctl clear_vhost_limits`).
    #[command(name = "clear_vhost_limits", alias = "clear-vhost-limits")]
    ClearVhostLimits,
    /// Lists a vhost's limits (as `rabbitmqctl list_vhost_limits`).
    #[command(name = "list_vhost_limits", alias = "list-vhost-limits")]
    ListVhostLimits,
    /// Sets limits of a user (as `rabbitmqctl set_user_limits`): a JSON object with
    /// `max-connections` and / or `max-channels` (negative: no limit); others are kept.
    #[command(name = "set_user_limits", alias = "set-user-limits")]
    SetUserLimits {
        /// The user.
        user: String,
        /// The limits, e.g. '{"max-channels": 10}'.
        definition: String,
    },
    /// Clears a user's limit (as `rabbitmqctl clear_user_limits`): `max-connections`,
    /// `max-channels` or `all`.
    #[command(name = "clear_user_limits", alias = "clear-user-limits")]
    ClearUserLimits {
        /// The user.
        user: String,
        /// Which limit.
        limit: String,
    },
    /// Lists a user's limits (as `rabbitmqctl list_user_limits --user U`), or every user's.
    #[command(name = "list_user_limits", alias = "list-user-limits")]
    ListUserLimits {
        /// The user (all users with limits without it).
        #[arg(long)]
        user: Option<String>,
    },
    /// Lists the policies (as `rabbitmqctl list_policies`): vhost, name, pattern, apply-to,
    /// definition, priority, tab-separated.
    #[command(name = "list_policies", alias = "list-policies")]
    ListPolicies,
    /// Adds a user with a password and no tags (as `rabbitmqctl add_user`).
    #[command(name = "add_user", alias = "add-user")]
    AddUser {
        /// Login.
        user: String,
        /// Password.
        password: String,
    },
    /// Deletes a user with its permissions (as `rabbitmqctl delete_user`).
    #[command(name = "delete_user", alias = "delete-user")]
    DeleteUser {
        /// Login.
        user: String,
    },
    /// Changes a user's password (as `rabbitmqctl change_password`).
    #[command(name = "change_password", alias = "change-password")]
    ChangePassword {
        /// Login.
        user: String,
        /// New password.
        password: String,
    },
    /// Sets a user's tags, replacing its others (as `rabbitmqctl set_user_tags`).
    #[command(name = "set_user_tags", alias = "set-user-tags")]
    SetUserTags {
        /// Login.
        user: String,
        /// Tags: administrator, monitoring, policymaker, management, or others.
        tags: Vec<String>,
    },
    /// Lists users and their tags (as `rabbitmqctl list_users`).
    #[command(name = "list_users", alias = "list-users")]
    ListUsers,
    /// Sets a user's permissions in the vhost (as `rabbitmqctl set_permissions`): regular
    /// expressions for configure, write and read.
    #[command(name = "set_permissions", alias = "set-permissions")]
    SetPermissions {
        /// Login.
        user: String,
        /// Resources the user may declare and delete.
        configure: String,
        /// Resources the user may publish or bind to.
        write: String,
        /// Resources the user may consume from or bind from.
        read: String,
    },
    /// Removes a user's permissions in the vhost (as `rabbitmqctl clear_permissions`).
    #[command(name = "clear_permissions", alias = "clear-permissions")]
    ClearPermissions {
        /// Login.
        user: String,
    },
    /// Lists the permissions in the vhost (as `rabbitmqctl list_permissions`).
    #[command(name = "list_permissions", alias = "list-permissions")]
    ListPermissions,
    /// Lists a user's permissions in every vhost (as `rabbitmqctl list_user_permissions`).
    #[command(name = "list_user_permissions", alias = "list-user-permissions")]
    ListUserPermissions {
        /// Login.
        user: String,
    },
    /// Adds a vhost (as `rabbitmqctl add_vhost`).
    #[command(name = "add_vhost", alias = "add-vhost")]
    AddVhost {
        /// Name.
        name: String,
    },
    /// Lists the vhosts (as `rabbitmqctl list_vhosts`).
    #[command(name = "list_vhosts", alias = "list-vhosts")]
    ListVhosts,
}

impl Ctl {
    fn request(&self) -> Vec<String> {
        let vhost = &self.vhost;
        match &self.command {
            CtlCommand::SetPolicy { priority, apply_to, name, pattern, definition } => {
                let fields = [vhost, name, pattern, definition, &priority.to_string(), apply_to];
                std::iter::once("set_policy")
                    .chain(fields.map(String::as_str))
                    .map(Into::into)
                    .collect()
            }
            CtlCommand::ClearPolicy { name } => {
                vec!["clear_policy".into(), vhost.clone(), name.clone()]
            }
            CtlCommand::ListPolicies => vec!["list_policies".into(), vhost.clone()],
            CtlCommand::SetVhostLimits { definition } => {
                vec!["set_vhost_limits".into(), vhost.clone(), definition.clone()]
            }
            CtlCommand::ClearVhostLimits => vec!["clear_vhost_limits".into(), vhost.clone()],
            CtlCommand::ListVhostLimits => vec!["list_vhost_limits".into(), vhost.clone()],
            CtlCommand::SetUserLimits { user, definition } => {
                vec!["set_user_limits".into(), user.clone(), definition.clone()]
            }
            CtlCommand::ClearUserLimits { user, limit } => {
                vec!["clear_user_limits".into(), user.clone(), limit.clone()]
            }
            CtlCommand::ListUserLimits { user } => {
                std::iter::once("list_user_limits".to_string()).chain(user.clone()).collect()
            }
            CtlCommand::AddUser { user, password } => {
                vec!["add_user".into(), user.clone(), password.clone()]
            }
            CtlCommand::DeleteUser { user } => vec!["delete_user".into(), user.clone()],
            CtlCommand::ChangePassword { user, password } => {
                vec!["change_password".into(), user.clone(), password.clone()]
            }
            CtlCommand::SetUserTags { user, tags } => ["set_user_tags".to_string(), user.clone()]
                .into_iter()
                .chain(tags.clone())
                .collect(),
            CtlCommand::ListUsers => vec!["list_users".into()],
            CtlCommand::SetPermissions { user, configure, write, read } => vec![
                "set_permissions".into(),
                vhost.clone(),
                user.clone(),
                configure.clone(),
                write.clone(),
                read.clone(),
            ],
            CtlCommand::ClearPermissions { user } => {
                vec!["clear_permissions".into(), vhost.clone(), user.clone()]
            }
            CtlCommand::ListPermissions => vec!["list_permissions".into(), vhost.clone()],
            CtlCommand::ListUserPermissions { user } => {
                vec!["list_user_permissions".into(), user.clone()]
            }
            CtlCommand::AddVhost { name } => vec!["add_vhost".into(), name.clone()],
            CtlCommand::ListVhosts => vec!["list_vhosts".into()],
        }
    }
}

/// Runs a `warren ctl` command against the broker whose data dir is `data_dir`; prints its
/// output. An error (with the broker's reply code) if it failed.
pub fn run_ctl(data_dir: &Path, ctl: &Ctl) -> anyhow::Result<()> {
    let path = data_dir.join(SOCKET);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!("connecting to the broker at {} (is it running on this data dir?)", path.display())
    })?;
    let request = ctl.request();
    if request.iter().any(|f| f.contains(['\t', '\n'])) {
        bail!("arguments cannot hold tabs or newlines");
    }
    stream.write_all(format!("{}\n", request.join("\t")).as_bytes())?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        if line == "ok" {
            return Ok(());
        }
        if let Some(err) = line.strip_prefix("error: ") {
            bail!("{}", err.replace("\\n", "\n"));
        }
        println!("{line}");
    }
    bail!("the broker closed the connection without an answer")
}

/// Binds the control socket in `data_dir` (before the broker says it is listening, so that
/// `warren ctl` works as soon as it is ready); `None` if it cannot (logged: the broker runs
/// without it).
pub fn bind(data_dir: &Path) -> Option<(UnixListener, PathBuf)> {
    let path = data_dir.join(SOCKET);
    // A socket file left by a broker that did not stop cleanly.
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(
                "control socket {} not available ({e}): warren ctl will not work",
                path.display()
            );
            return None;
        }
    };
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        warn!("restricting {}: {e}", path.display());
    }
    info!("control socket on {}", path.display());
    Some((listener, path))
}

/// Answers on the control socket until `shutdown`, then removes it.
pub async fn serve(
    broker: Arc<Broker>,
    (listener, path): (UnixListener, PathBuf),
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(answer(broker.clone(), stream));
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// The longest request line read (a definition is small).
const MAX_REQUEST: u64 = 64 * 1024;

async fn answer(broker: Arc<Broker>, stream: tokio::net::UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST));
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(_))) {
        return;
    }
    // Re-applying policies and saving the definitions (an fsync) are blocking work.
    let reply = tokio::task::spawn_blocking(move || {
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        match execute(&broker, &fields) {
            Ok(mut out) => {
                out.push_str("ok\n");
                out
            }
            Err(e) => format!("error: {} {}\n", e.code, e.text.replace('\n', "\\n")),
        }
    })
    .await
    .unwrap_or_else(|e| format!("error: 541 {e}\n"));
    let _ = write.write_all(reply.as_bytes()).await;
}

fn execute(broker: &Broker, fields: &[&str]) -> Result<String, AmqpError> {
    let vhost = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| AmqpError::not_found(format!("vhost '{name}' does not exist")))
    };
    match fields {
        ["set_policy", v, name, pattern, definition, priority, apply_to] => {
            let priority = priority
                .parse()
                .map_err(|_| AmqpError::precondition_failed(format!("priority '{priority}'")))?;
            let definition = json_table(definition)?;
            let policy =
                Policy::new(name, pattern, ApplyTo::parse(apply_to)?, priority, definition)?;
            vhost(v)?.set_policy(policy)?;
            Ok(format!(
                "Setting policy \"{name}\" for pattern \"{pattern}\" to \"{}\" with priority \"{priority}\" for vhost \"{v}\" ...\n",
                fields[4]
            ))
        }
        ["clear_policy", v, name] => {
            vhost(v)?.clear_policy(name)?;
            Ok(format!("Clearing policy \"{name}\" on vhost \"{v}\" ...\n"))
        }
        ["set_vhost_limits", v, definition] => {
            let limits = VhostLimits::parse(&json_table(definition)?)?;
            vhost(v)?.set_limits(limits)?;
            Ok(format!("Setting vhost limits to \"{definition}\" for vhost \"{v}\" ...\n"))
        }
        ["clear_vhost_limits", v] => {
            vhost(v)?.set_limits(VhostLimits::default())?;
            Ok(format!("Clearing vhost \"{v}\" limits ...\n"))
        }
        ["list_vhost_limits", v] => {
            let limits = vhost(v)?.limits().to_table();
            Ok(format!("Listing limits for vhost \"{v}\" ...\n{}\n", table_json(&limits)))
        }
        ["set_user_limits", u, definition] => {
            let table = json_table(definition)?;
            let new = UserLimits::parse(&table)?;
            let mut limits = broker.user_limits(u);
            for (key, _) in table.iter() {
                match key {
                    "max-connections" => limits.max_connections = new.max_connections,
                    _ => limits.max_channels = new.max_channels,
                }
            }
            broker.set_user_limits(u, limits)?;
            Ok(format!("Setting user limits to \"{definition}\" for user \"{u}\" ...\n"))
        }
        ["clear_user_limits", u, which] => {
            let mut limits = broker.user_limits(u);
            match *which {
                "all" => limits = UserLimits::default(),
                "max-connections" => limits.max_connections = None,
                "max-channels" => limits.max_channels = None,
                other => {
                    return Err(AmqpError::precondition_failed(format!(
                        "unknown user limit '{other}'"
                    )));
                }
            }
            broker.set_user_limits(u, limits)?;
            Ok(match *which {
                "all" => format!("Clearing all limits for user \"{u}\" ...\n"),
                _ => format!("Clearing \"{which}\" limit for user \"{u}\" ...\n"),
            })
        }
        ["list_user_limits", u] => {
            if !broker.has_user(u) {
                return Err(AmqpError::not_found(format!("user '{u}' does not exist")));
            }
            let limits = broker.user_limits(u).to_table();
            Ok(format!("Listing limits for user \"{u}\" ...\n{}\n", table_json(&limits)))
        }
        ["list_user_limits"] => {
            let mut out = String::from("Listing limits for all users ...\nuser\tlimits\n");
            let mut all = broker.all_user_limits();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            for (u, l) in all {
                out.push_str(&format!("{u}\t{}\n", table_json(&l.to_table())));
            }
            Ok(out)
        }
        ["list_policies", v] => {
            let mut out = String::from("vhost\tname\tpattern\tapply-to\tdefinition\tpriority\n");
            for p in vhost(v)?.policies() {
                out.push_str(&format!(
                    "{v}\t{}\t{}\t{}\t{}\t{}\n",
                    p.name,
                    p.pattern,
                    p.apply_to.as_str(),
                    table_json(&p.definition),
                    p.priority
                ));
            }
            Ok(out)
        }
        _ => users::execute(broker, fields),
    }
}

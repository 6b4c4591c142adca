//! `rabbitmqctl` and `rabbitmq-diagnostics` for warren: the commands dev tooling and people
//! type for a RabbitMQ node (`rabbitmq-diagnostics -q ping` in a compose health check,
//! `rabbitmqctl list_queues name messages`, `add_user`, `set_permissions` ...), with
//! RabbitMQ's output, carried out over warren's management HTTP API.
//!
//! The broker is found at `--url` / `WARREN_MANAGEMENT_URL` (default
//! `http://guest:guest@localhost:15672`); RabbitMQ's global flags are accepted: `-q`/`--quiet`
//! (no banners), `-s`/`--silent`, `-n NODE` (one node: only shown in messages), `-p VHOST`,
//! `-t SECONDS`, `--formatter json|table`, `--no-table-headers`. Exit codes follow
//! rabbitmqctl's: 0, 64 for usage errors, 69 when the broker cannot be reached or an object
//! does not exist, 70 when a command fails, 77 when the API refuses the credentials.

/// Prints a line to stdout; a closed pipe (`| head`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod commands;
mod http;
mod listing;

use std::time::Duration;

pub use http::{Api, dechunk};

/// Why a command failed, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The API did not answer.
    #[error("unable to perform an operation on the node: {0}")]
    Unreachable(String),
    /// The API refused the credentials or the user's tags.
    #[error("{0}")]
    Refused(String),
    /// No such object.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The API refused the change.
    #[error("{0}")]
    Failed(String),
    /// The API answered something unexpected.
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// rabbitmqctl's exit code for it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 64,
            Error::Unreachable(_) | Error::NotFound(_) => 69,
            Error::Refused(_) => 77,
            Error::Failed(_) | Error::Protocol(_) => 70,
        }
    }
}

/// The global flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// `-q`: no banners.
    pub quiet: bool,
    /// `-s`: nothing but results.
    pub silent: bool,
    /// `-n NODE`.
    pub node: Option<String>,
    /// `-p VHOST` (default `/`).
    pub vhost: String,
    /// `--formatter json`.
    pub json: bool,
    /// Table headers (off with `--no-table-headers`).
    pub headers: bool,
    /// Where the management API is.
    pub api: Api,
    /// `--priority`, `--apply-to` and other command flags, in order.
    pub flags: Vec<(String, String)>,
}

impl Options {
    /// The node's name as messages show it: `-n`, else the API's.
    pub fn node(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        self.api
            .get("/api/overview")
            .ok()
            .and_then(|o| o.get("node").and_then(|n| n.as_str()).map(str::to_string))
            .unwrap_or_else(|| "warren".to_string())
    }

    /// Prints a banner line unless quiet.
    pub fn banner(&self, text: &str) {
        if !self.quiet && !self.silent {
            out!("{text}");
        }
    }

    /// A command flag's value.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Splits global flags from the command and its arguments.
fn parse(args: Vec<String>) -> Result<(Options, Vec<String>), Error> {
    let mut url = std::env::var("WARREN_MANAGEMENT_URL").ok();
    let (mut quiet, mut silent, mut json, mut headers) = (false, false, false, true);
    let (mut node, mut vhost, mut timeout) = (None, "/".to_string(), 60u64);
    let mut flags = Vec::new();
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    let value = |it: &mut std::vec::IntoIter<String>, flag: &str| {
        it.next().ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
    };
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if a.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let take = |it: &mut std::vec::IntoIter<String>| match &inline {
            Some(v) => Ok(v.clone()),
            None => value(it, &name),
        };
        match name.as_str() {
            "-q" | "--quiet" => quiet = true,
            "-s" | "--silent" => silent = true,
            "--no-table-headers" => headers = false,
            "-l" | "--longnames" | "--online" | "--offline" => {}
            "-n" | "--node" => node = Some(take(&mut it)?),
            "-p" | "--vhost" => vhost = take(&mut it)?,
            "-t" | "--timeout" => {
                timeout = take(&mut it)?.parse().map_err(|_| Error::Usage("bad timeout".into()))?
            }
            "--url" => url = Some(take(&mut it)?),
            "--formatter" => json = take(&mut it)? == "json",
            "--priority" | "--apply-to" | "--description" | "--tags" => {
                flags.push((name.trim_start_matches('-').to_string(), take(&mut it)?))
            }
            _ => rest.push(a),
        }
    }
    let url = url.unwrap_or_else(|| "http://guest:guest@localhost:15672".to_string());
    let api = Api::parse(&url, Duration::from_secs(timeout.max(1)))?;
    Ok((Options { quiet, silent, node, vhost, json, headers, api, flags }, rest))
}

/// Runs a command line of `program` (`rabbitmqctl` or `rabbitmq-diagnostics`); the exit code.
pub fn run(program: &str, args: Vec<String>) -> i32 {
    let (opts, rest) = match parse(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: {e}");
            return e.exit_code();
        }
    };
    let Some((command, args)) = rest.split_first() else {
        eprintln!("Usage: {program} [-q] [-n NODE] [-p VHOST] [--url URL] COMMAND [ARGS]");
        eprintln!("Commands: {}", commands::NAMES.join(", "));
        return 64;
    };
    match commands::run(&opts, command, args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error:\n{e}");
            e.exit_code()
        }
    }
}

//! Command-line flags and environment variables: where to listen, where data lives, the
//! default user and vhost, and limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::alarm::{Watermark, parse_size, parse_watermark};

/// warren: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address and port to accept AMQP connections on.
    #[arg(long, env = "WARREN_LISTEN", default_value = "0.0.0.0:5672")]
    pub listen: SocketAddr,

    /// Directory for durable data (created if missing).
    #[arg(long, env = "WARREN_DATA_DIR", default_value = "./warren-data", global = true)]
    pub data_dir: PathBuf,

    /// User a new data dir starts with (as RabbitMQ's docker images read it).
    #[arg(long, env = "RABBITMQ_DEFAULT_USER", default_value = "guest")]
    pub default_user: String,

    /// Default user's password.
    #[arg(long, env = "RABBITMQ_DEFAULT_PASS", default_value = "guest", hide_env_values = true)]
    pub default_pass: String,

    /// Vhost a new data dir starts with; the default user may use it.
    #[arg(long, env = "RABBITMQ_DEFAULT_VHOST", default_value = "/")]
    pub default_vhost: String,

    /// Largest message body accepted, in bytes (RabbitMQ's max_message_size); larger
    /// publishes are refused with 406 PRECONDITION_FAILED.
    #[arg(long, env = "WARREN_MAX_MESSAGE_SIZE", default_value_t = 128 * 1024 * 1024)]
    pub max_message_size: u64,

    /// Heartbeat interval offered to clients, in seconds (0 disables).
    #[arg(long, env = "WARREN_HEARTBEAT", default_value_t = 60)]
    pub heartbeat: u16,

    /// Largest frame offered to clients, in bytes.
    #[arg(long, env = "WARREN_FRAME_MAX", default_value_t = 131072, value_parser = clap::value_parser!(u32).range(4096..))]
    pub frame_max: u32,

    /// Most channels per connection.
    #[arg(long, env = "WARREN_CHANNEL_MAX", default_value_t = 2047)]
    pub channel_max: u16,

    /// Seconds a new connection has to complete the AMQP handshake.
    #[arg(long, env = "WARREN_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Seconds a client may leave its socket unread (its output backed up, none of it taken)
    /// before it is disconnected and its unacknowledged messages requeued (0: never).
    #[arg(long, env = "WARREN_SEND_TIMEOUT", default_value_t = 120)]
    pub send_timeout: u64,

    /// Milliseconds a delivery may stay unacknowledged before its channel is closed with 406
    /// (RabbitMQ's consumer_timeout; 0: never). The `x-consumer-timeout` queue argument
    /// overrides it per queue.
    #[arg(long, env = "WARREN_CONSUMER_TIMEOUT", default_value_t = 1_800_000)]
    pub consumer_timeout: u64,

    /// Free disk space under the data dir below which publishers are blocked (RabbitMQ's
    /// disk_free_limit): bytes, or a size such as 50MB or 1GiB.
    #[arg(long, env = "WARREN_DISK_FREE_LIMIT", default_value = "50MB", value_parser = parse_size)]
    pub disk_free_limit: u64,

    /// Memory use above which publishers are blocked (RabbitMQ's vm_memory_high_watermark):
    /// a fraction of the machine's memory (or the cgroup's limit) such as 0.4, or a size
    /// such as 1GiB.
    #[arg(long, env = "WARREN_MEMORY_HIGH_WATERMARK", default_value = "0.4", value_parser = parse_watermark)]
    pub memory_high_watermark: Watermark,

    /// Most client connections open at once on this node (RabbitMQ's connection_max): a
    /// number, or `infinity` (the default). connection.open beyond it: 530.
    #[arg(long, env = "WARREN_CONNECTION_MAX", value_parser = parse_limit)]
    pub connection_max: Option<Limit>,

    /// Most channels open at once on this node, over all connections (RabbitMQ's
    /// channel_max_per_node): a number, or `infinity` (the default). channel.open beyond it: 530.
    #[arg(long, env = "WARREN_CHANNEL_MAX_PER_NODE", value_parser = parse_limit)]
    pub channel_max_per_node: Option<Limit>,

    /// Most consumers on one channel (RabbitMQ's consumer_max_per_channel): a number, or
    /// `infinity` (the default). basic.consume beyond it: 530.
    #[arg(long, env = "WARREN_CONSUMER_MAX_PER_CHANNEL", value_parser = parse_limit)]
    pub consumer_max_per_channel: Option<Limit>,

    /// Where AMQPS (AMQP over TLS) listens, when a certificate and key are given (RabbitMQ's
    /// listeners.ssl.default).
    #[arg(long, env = "WARREN_SSL_LISTEN", default_value = "0.0.0.0:5671")]
    pub ssl_listen: SocketAddr,

    /// The server's certificate chain, PEM (RabbitMQ's ssl_options.certfile): enables AMQPS.
    #[arg(long, env = "RABBITMQ_SSL_CERTFILE")]
    pub ssl_certfile: Option<PathBuf>,

    /// The server's private key, PEM (ssl_options.keyfile).
    #[arg(long, env = "RABBITMQ_SSL_KEYFILE")]
    pub ssl_keyfile: Option<PathBuf>,

    /// CA certificates that client certificates are verified against, PEM
    /// (ssl_options.cacertfile).
    #[arg(long, env = "RABBITMQ_SSL_CACERTFILE")]
    pub ssl_cacertfile: Option<PathBuf>,

    /// verify_peer: ask clients for a certificate and verify it against the CA
    /// (ssl_options.verify).
    #[arg(long, env = "RABBITMQ_SSL_VERIFY", value_enum, default_value = "verify_none")]
    pub ssl_verify: SslVerify,

    /// With verify_peer, refuse clients without a certificate (ssl_options.fail_if_no_peer_cert).
    #[arg(long, env = "RABBITMQ_SSL_FAIL_IF_NO_PEER_CERT")]
    pub ssl_fail_if_no_peer_cert: bool,

    /// The user a client certificate logs in as with EXTERNAL: its whole subject
    /// (`CN=guest,O=client`) or its common name (RabbitMQ's ssl_cert_login_from).
    #[arg(
        long,
        env = "WARREN_SSL_CERT_LOGIN_FROM",
        value_enum,
        default_value = "distinguished_name"
    )]
    pub ssl_cert_login_from: CertLogin,

    /// Where the management HTTP API listens (RabbitMQ's management.tcp.port, 15672), or
    /// `off`.
    #[arg(long, env = "WARREN_MANAGEMENT_LISTEN", default_value = "0.0.0.0:15672")]
    pub management_listen: Switch,

    /// Where Prometheus metrics are served (RabbitMQ's prometheus.tcp.port, 15692), or `off`.
    #[arg(long, env = "WARREN_PROMETHEUS_LISTEN", default_value = "0.0.0.0:15692")]
    pub prometheus_listen: Switch,

    /// A definitions file (RabbitMQ's JSON export) imported at start, as RabbitMQ's
    /// load_definitions: users, vhosts, permissions, policies, queues, exchanges, bindings.
    #[arg(long, env = "WARREN_DEFINITIONS")]
    pub definitions: Option<PathBuf>,

    /// Without a command, warren runs the broker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What else the binary does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Commands for the broker running on the same data dir (policies), as `rabbitmqctl`'s.
    Ctl(crate::control::Ctl),
}

/// The listener RabbitMQ's variables name (each one in place of the default's part), or the
/// default if they name nothing valid.
fn rabbitmq_listen(ip: Option<&str>, port: Option<&str>, default: SocketAddr) -> SocketAddr {
    let ip = ip.filter(|s| !s.is_empty()).and_then(|s| s.parse().ok()).unwrap_or(default.ip());
    let port = port.and_then(|s| s.trim().parse().ok()).unwrap_or(default.port());
    SocketAddr::new(ip, port)
}

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch(pub Option<SocketAddr>);

impl std::str::FromStr for Switch {
    type Err = String;

    fn from_str(s: &str) -> Result<Switch, String> {
        match s {
            "off" | "none" | "" => Ok(Switch(None)),
            addr => addr
                .parse()
                .map(|a| Switch(Some(a)))
                .map_err(|e| format!("'{addr}' is not ADDR:PORT or off: {e}")),
        }
    }
}

/// Whether TLS clients are asked for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SslVerify {
    /// No client certificates.
    VerifyNone,
    /// Client certificates verified against `--ssl-cacertfile`.
    VerifyPeer,
}

/// Which part of a client certificate names its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum CertLogin {
    /// The whole subject, RFC 4514.
    DistinguishedName,
    /// The subject's common name.
    CommonName,
}

/// A count limit: `None` is RabbitMQ's `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u64>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    match s {
        "infinity" => Ok(Limit(None)),
        n => n
            .parse()
            .map(|n| Limit(Some(n)))
            .map_err(|_| format!("'{s}' is not a number or infinity")),
    }
}

impl Config {
    /// The flags and environment, with RabbitMQ's `RABBITMQ_NODE_PORT` and
    /// `RABBITMQ_NODE_IP_ADDRESS` taken for the AMQP listener when neither `--listen` nor
    /// `WARREN_LISTEN` says where.
    pub fn parse_with_rabbitmq_env() -> Config {
        use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
        let matches = Config::command().get_matches();
        let mut config = Config::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if matches.value_source("listen") == Some(ValueSource::DefaultValue) {
            config.listen = rabbitmq_listen(
                std::env::var("RABBITMQ_NODE_IP_ADDRESS").ok().as_deref(),
                std::env::var("RABBITMQ_NODE_PORT").ok().as_deref(),
                config.listen,
            );
        }
        config
    }

    /// The node-wide limits the flags set.
    pub fn node_limits(&self) -> warren_core::usage::NodeLimits {
        warren_core::usage::NodeLimits {
            connection_max: self.connection_max.and_then(|l| l.0),
            channel_max_per_node: self.channel_max_per_node.and_then(|l| l.0),
        }
    }

    /// `consumer_max_per_channel`, if set.
    pub fn consumer_max_per_channel(&self) -> Option<u64> {
        self.consumer_max_per_channel.and_then(|l| l.0)
    }

    /// Whether the default user may only log in from loopback: RabbitMQ restricts `guest` so.
    pub fn default_user_loopback_only(&self) -> bool {
        self.default_user == "guest"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_node_port_and_address_replace_the_defaults_parts() {
        let d: SocketAddr = "0.0.0.0:5672".parse().unwrap();
        assert_eq!(rabbitmq_listen(None, Some("5680"), d), "0.0.0.0:5680".parse().unwrap());
        assert_eq!(rabbitmq_listen(Some("127.0.0.1"), None, d), "127.0.0.1:5672".parse().unwrap());
        assert_eq!(rabbitmq_listen(Some("nonsense"), Some("x"), d), d);
    }
}

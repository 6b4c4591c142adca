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

impl Config {
    /// Whether the default user may only log in from loopback: RabbitMQ restricts `guest` so.
    pub fn default_user_loopback_only(&self) -> bool {
        self.default_user == "guest"
    }
}

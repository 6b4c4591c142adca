//! warren's routing core: vhosts, exchanges, bindings, queues, consumers and acks. It owns the
//! broker's state and rules and knows nothing of sockets: the server calls these synchronous
//! methods and never awaits while holding anything of theirs.
//!
//! # Layout
//! - [`broker`]: the broker: users and vhosts.
//! - [`alarm`]: the memory and disk alarms that block publishers.
//! - [`vhost`]: one vhost's exchanges and queues, declare/delete/bind rules and routing.
//! - [`publish`]: publishing as one operation: route, store, enqueue, outcome.
//! - [`dead_letter`]: dead-lettering: the `x-death` history, cycles, the move to other queues.
//! - [`delayed`]: `x-delayed-message` exchanges: messages held until their `x-delay` is over.
//! - [`expiry`]: `x-expires`, queues deleted once unused for a while.
//! - [`limits`]: vhost limits (`max-connections`, `max-queues`).
//! - [`exchange`]: exchange records and one router per exchange type.
//! - [`queue`]: queues, consumers, prefetch windows and the events sent to connections.
//! - [`message`]: the shared message.
//! - [`policy`]: policies: matching, validation, and their precedence over arguments.
//! - [`persistence`]: queue ids and definitions snapshots for a broker with a data dir.
//! - [`error`]: [`AmqpError`], a reply code and text.

pub mod alarm;
mod blocking;
pub mod broker;
pub mod connections;
pub mod dead_letter;
pub mod delayed;
pub mod error;
pub mod exchange;
pub mod expiry;
pub mod limits;
pub mod message;
pub mod password;
pub mod persistence;
pub mod policy;
pub mod publish;
pub mod queue;
pub mod stream;
pub mod usage;
pub mod users;
pub mod vhost;

pub use alarm::{Alarms, Resource};
pub use broker::{Broker, Defaults};
pub use error::{AmqpError, Result};
pub use message::Message;
pub use queue::{
    ChannelLimit, ConnectionId, Consumer, ConsumerSpec, Entry, Event, Lag, Publish, Queue,
    QueueOptions, QueueStats,
};
pub use users::User;
pub use vhost::VHost;

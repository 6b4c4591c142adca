//! One task per client connection. It owns the read half of the socket, its channels and its
//! event inbox (deliveries from queues), and hands batches of output to the writer task. Each
//! loop turn handles whatever is ready (frames or events), then sends confirms, lets queues
//! deliver again, and flushes once: many frames, one write.

mod close;
mod events;
mod frames;
mod handshake;
pub(crate) mod out;
mod read;
pub(crate) mod socket;
mod turn;
mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket::{ReadHalf, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};
use warren_core::users::Access;
use warren_core::{AmqpError, Broker, ConnectionId, Event, Lag, Queue, VHost};
use warren_wire::{Frame, Method, WireError};

use crate::channel::Channel;
use crate::config::Config;
use out::Out;
use read::ReadBuf;
use writer::Writer;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    #[error("{0} (class {1}, method {2})")]
    Amqp(AmqpError, u16, u16),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("closed by the client")]
    ClientClosed,
    /// The client sent connection.close: close-ok is owed once resources are released.
    #[error("closed by the client")]
    ClientClose,
    #[error("peer went away")]
    PeerGone,
    #[error("missed heartbeats")]
    HeartbeatTimeout,
    #[error("the client read nothing for the send timeout")]
    SendTimeout,
    #[error("broker shutting down")]
    Forced,
    /// Closed through the management API (`DELETE /api/connections/{name}`).
    #[error("closed by an administrator: {0}")]
    Closed(String),
}

/// What TLS established about a client (AMQPS connections only).
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsPeer {
    /// The user its verified certificate names (`--ssl-cert-login-from`): it may log in with
    /// the EXTERNAL mechanism.
    pub login: Option<String>,
}

/// Serves one accepted socket until it closes.
pub(crate) async fn serve(
    mut socket: Stream,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<TlsPeer>,
    broker: Arc<Broker>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) {
    let id = broker.next_connection_id();
    let span = info_span!("conn", id, %peer, tls = tls.is_some());
    async move {
        if let Stream::Tcp(s) = &socket {
            let _ = s.set_nodelay(true);
        }
        let limit = Duration::from_secs(config.handshake_timeout);
        match tokio::time::timeout(limit, handshake::protocol_header(socket.io())).await {
            Err(_) => return debug!("no protocol header within {limit:?}"),
            Ok(Err(e)) => return debug!("{e}"),
            Ok(Ok(())) => {}
        }
        let (rd, wr) = socket.into_split();
        let mut conn = Connection::new(id, peer, broker, config, shutdown, rd, Writer::new(wr));
        conn.tls = tls;
        conn.local = local;
        let result = match tokio::time::timeout(limit, conn.handshake()).await {
            Err(_) => Err(ConnError::Handshake("handshake timed out".into())),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => conn.main_loop().await,
        };
        conn.finish(result).await;
    }
    .instrument(span)
    .await
}

/// A channel handler's view of the connection, built from disjoint fields so that a channel
/// (borrowed from `self.channels`) can be handled at the same time.
macro_rules! ctx {
    ($conn:ident, $vhost:expr) => {
        Ctx {
            vhost: $vhost,
            connection: $conn.id,
            events: &$conn.events_tx,
            out: &mut $conn.out,
            frame_max: $conn.frame_max,
            config: &$conn.config,
            access: &mut $conn.access,
            counts: &mut $conn.counts,
            dispatch: &mut $conn.dispatch,
            held: &mut $conn.held,
            lag: &$conn.lag,
            now: $conn.turn,
        }
    };
}
// Lets the child modules import it by path (`use super::ctx`).
use ctx;

/// A client connection's state, owned by its task.
pub(crate) struct Connection {
    id: ConnectionId,
    peer: SocketAddr,
    /// Set for an AMQPS connection.
    tls: Option<TlsPeer>,
    broker: Arc<Broker>,
    config: Arc<Config>,
    /// Cancelled at shutdown, or when the management API closes this connection (a child of
    /// the broker's shutdown token).
    shutdown: CancellationToken,
    rd: ReadHalf,
    inbuf: ReadBuf,
    /// Output of the current loop turn, handed to the writer at its end.
    out: Out,
    /// The socket's write side and the output waiting for it.
    writer: Writer,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    vhost: Option<Arc<VHost>>,
    /// Counts this connection against its vhost's `max-connections` while it lives.
    vhost_connection: Option<warren_core::limits::VhostConnection>,
    /// Counted against the node's and the user's connection limits while open.
    counted: Vec<warren_core::usage::Counted>,
    user: String,
    /// What the user may do in the vhost (nothing before connection.open). Boxed: the
    /// connection's future stays as small as before it (measured: inline, 16-byte 1p1c
    /// throughput fell 4-5%).
    access: Box<Access>,
    /// The listener's address the client came in on.
    local: SocketAddr,
    /// Client properties from connection.start-ok (for the management API).
    client_properties: warren_wire::FieldTable,
    /// What its channels did (published to its record once per turn). Boxed, as `access`.
    counts: Box<warren_core::connections::Counts>,
    /// Its record in the broker's registry, once open.
    info: Option<warren_core::connections::Registration>,
    /// Boxed: a channel is several hundred bytes, and the map's spare slots would be too.
    channels: HashMap<u16, Box<Channel>>,
    channel_max: u16,
    frame_max: u32,
    heartbeat: u16,
    /// The client understands server-sent basic.cancel.
    cancel_notify: bool,
    /// The client understands connection.blocked / unblocked.
    blocked_notify: bool,
    /// Blocked by a resource alarm: it published while one was set, and is not read until
    /// the alarms clear (consumers, acks and confirms go on).
    alarm_blocked: bool,
    /// connection.blocked was sent (connection.unblocked is owed).
    blocked_sent: bool,
    last_read: Instant,
    last_write: Instant,
    dispatch: Vec<Arc<Queue>>,
    /// Channels opened so far: each gets the next number as its generation, so that events
    /// meant for a closed channel never reach a new one of the same number.
    generations: u64,
    /// Congested queues this connection published to: it reads nothing until they drain
    /// (flow control, see `warren_core::queue::flow`).
    held: Vec<Arc<Queue>>,
    /// How far behind this connection is on its inbox, read by the queues it consumes from.
    lag: Arc<Lag>,
    /// The most events found waiting in the inbox during this turn.
    inbox_seen: usize,
    /// When the current loop turn began.
    turn: Instant,
}

impl Connection {
    fn new(
        id: ConnectionId,
        peer: SocketAddr,
        broker: Arc<Broker>,
        config: Arc<Config>,
        shutdown: CancellationToken,
        rd: ReadHalf,
        writer: Writer,
    ) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let frame_max = config.frame_max;
        let access = Box::new(Access::new(broker.clone(), "", ""));
        Connection {
            id,
            peer,
            tls: None,
            broker,
            config,
            shutdown: shutdown.child_token(),
            rd,
            inbuf: ReadBuf::new(),
            out: Out::default(),
            writer,
            events_tx,
            events_rx,
            vhost: None,
            vhost_connection: None,
            counted: Vec::new(),
            user: String::new(),
            access,
            local: peer,
            client_properties: warren_wire::FieldTable::new(),
            counts: Box::default(),
            info: None,
            channels: HashMap::new(),
            channel_max: 0,
            frame_max,
            heartbeat: 0,
            cancel_notify: false,
            blocked_notify: false,
            alarm_blocked: false,
            blocked_sent: false,
            last_read: Instant::now(),
            last_write: Instant::now(),
            dispatch: Vec::new(),
            generations: 0,
            held: Vec::new(),
            lag: Arc::default(),
            inbox_seen: 0,
            turn: Instant::now(),
        }
    }

    /// Appends a method frame to the output.
    fn send(&mut self, channel: u16, method: impl Into<Method>) -> Result<(), ConnError> {
        Frame::method(channel, method).encode(&mut self.out)?;
        Ok(())
    }

    /// Writes the turn's output as far as the socket takes it now; what remains goes out when
    /// the socket is writable (the main loop waits for that, and while so much is pending
    /// that the client is clearly not reading, it reads and delivers nothing more).
    fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            self.writer.send(self.out.take())?;
            self.last_write = Instant::now();
        }
        Ok(())
    }

    /// Writes all output before going on (the handshake, and closing): the client's next
    /// step waits for it. Bounded: a client that does not read is given up on.
    async fn flush_all(&mut self) -> Result<(), ConnError> {
        self.flush()?;
        match tokio::time::timeout(Duration::from_secs(2), self.writer.drain()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ConnError::PeerGone),
        }
    }

    fn unexpected(&self, got: &Method) -> ConnError {
        ConnError::Amqp(
            AmqpError::command_invalid(format!("{} not expected during the handshake", got.name())),
            got.class_id(),
            got.method_id(),
        )
    }
}

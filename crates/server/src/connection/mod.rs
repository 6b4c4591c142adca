//! One task per client connection. It owns the read half of the socket, its channels and its
//! event inbox (deliveries from queues), and hands batches of output to the writer task. Each
//! loop turn handles whatever is ready (frames or events), then sends confirms, lets queues
//! deliver again, and flushes once: many frames, one write.

mod handshake;
pub(crate) mod out;
pub(crate) mod socket;
mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use socket::{ReadHalf, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};
use warren_core::{AmqpError, Broker, ConnectionId, Event, Lag, Queue, VHost};
use warren_wire::frame::decode_frame;
use warren_wire::method::{
    BasicCancel, ChannelClose, ChannelCloseOk, ChannelOpenOk, ConnectionBlocked, ConnectionClose,
    ConnectionCloseOk, ConnectionUnblocked, ConnectionUpdateSecretOk,
};
use warren_wire::{Frame, Method, WireError, constants::reply};

use crate::channel::{Channel, Ctx};
use crate::config::Config;
use out::Out;
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
            user: &$conn.user,
            dispatch: &mut $conn.dispatch,
            held: &mut $conn.held,
            lag: &$conn.lag,
            now: $conn.turn,
        }
    };
}

/// Size of a read buffer.
const READ_SIZE: usize = 64 * 1024;

/// Output waiting for the socket from which the connection counts as lagging.
const LAGGING_OUTPUT: usize = 256 * 1024;

/// Frames in one read after which the connection yields to the others on its thread.
const YIELD_AFTER: usize = 256;

/// Waits until the broker's alarms may have changed (the caller looks); forever without a
/// broker (the branch is off: select! still builds the future, so it must cost nothing).
async fn alarm_wait(broker: Option<Arc<Broker>>) {
    let Some(broker) = broker else { return std::future::pending().await };
    let changed = broker.alarms.changed();
    tokio::pin!(changed);
    changed.as_mut().enable();
    if !broker.alarms.any() {
        return;
    }
    changed.await;
}

/// Sleeps until `deadline`; forever without one (as [`alarm_wait`], a disabled branch's
/// future is built every turn: no timer unless needed).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits until `queue`'s congestion may be over: its wake-up, or 10 ms (a consumer's lag
/// can clear without the queue hearing of it). The caller looks again.
async fn flow_wait(queue: Option<Arc<Queue>>) {
    let Some(queue) = queue else { return std::future::pending().await };
    let changed = queue.flow_changed();
    tokio::pin!(changed);
    changed.as_mut().enable();
    if !queue.flow_blocked() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_millis(10), changed).await;
}

/// Spare room below which a new read buffer is taken.
const READ_LOW: usize = 4 * 1024;

/// The read buffer. A connection waiting for input holds none: it waits for readiness
/// first, takes a buffer only to read, and lets it go after a small read that left nothing
/// behind, so an idle connection costs little memory while a busy one keeps its buffer.
struct ReadBuf {
    buf: BytesMut,
    /// Bytes the last read brought.
    last: usize,
}

impl ReadBuf {
    fn new() -> Self {
        ReadBuf { buf: BytesMut::new(), last: 0 }
    }

    /// Reads more bytes; false on end of stream. Cancel-safe.
    async fn fill(&mut self, rd: &mut ReadHalf) -> std::io::Result<bool> {
        rd.readable().await?;
        if self.buf.capacity() - self.buf.len() < READ_LOW && !self.buf.try_reclaim(READ_SIZE) {
            // A new buffer, with the partial frame copied over, made at full size: a
            // `BytesMut` remembers the capacity it was made with and grows to that when
            // frames still hold it (so `decode_frame` reserving the rest of a small frame
            // takes a full-size buffer, not one just big enough).
            let mut fresh = BytesMut::with_capacity(READ_SIZE + self.buf.len());
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        // The socket is ready, so this returns at once (unless the readiness was stale);
        // unlike the readiness wait, a read counts against the task's cooperative budget.
        self.last = rd.read_buf(&mut self.buf).await?;
        Ok(self.last > 0)
    }

    /// Between reads: after a small read that left nothing behind, the buffer is let go.
    fn relax(&mut self) {
        if self.buf.is_empty() && self.last < READ_LOW && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }
}

/// A client connection's state, owned by its task.
pub(crate) struct Connection {
    id: ConnectionId,
    peer: SocketAddr,
    /// Set for an AMQPS connection.
    tls: Option<TlsPeer>,
    broker: Arc<Broker>,
    config: Arc<Config>,
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
        Connection {
            id,
            peer,
            tls: None,
            broker,
            config,
            shutdown,
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

    /// Reads more bytes; false on end of stream.
    async fn fill(&mut self) -> Result<bool, ConnError> {
        let more = self.inbuf.fill(&mut self.rd).await?;
        self.last_read = Instant::now();
        Ok(more)
    }

    /// The next method frame during the handshake (heartbeats skipped).
    async fn next_method(&mut self) -> Result<Method, ConnError> {
        loop {
            while let Some(frame) = decode_frame(&mut self.inbuf.buf, self.frame_max)? {
                match frame {
                    Frame::Heartbeat => {}
                    Frame::Method { channel: 0, method } => return Ok(method),
                    _ => {
                        return Err(ConnError::Amqp(
                            AmqpError::unexpected_frame(
                                "only connection methods on channel 0 during the handshake",
                            ),
                            0,
                            0,
                        ));
                    }
                }
            }
            if !self.fill().await? {
                return Err(ConnError::PeerGone);
            }
        }
    }

    fn unexpected(&self, got: &Method) -> ConnError {
        ConnError::Amqp(
            AmqpError::command_invalid(format!("{} not expected during the handshake", got.name())),
            got.class_id(),
            got.method_id(),
        )
    }

    async fn main_loop(&mut self) -> Result<(), ConnError> {
        let hb = Duration::from_secs(self.heartbeat.into());
        let mut tick =
            tokio::time::interval(if hb.is_zero() { Duration::from_secs(3600) } else { hb / 2 });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shutdown.clone();
        // Frames a client sent right behind connection.open (pipelined) are already buffered.
        while let Some(frame) = decode_frame(&mut self.inbuf.buf, self.frame_max)? {
            self.on_frame(frame)?;
        }
        self.inbuf.relax();
        self.end_of_turn()?;
        self.flush()?;
        let send_timeout = Duration::from_secs(self.config.send_timeout);
        // The consumer timeout is looked at a few times per period (at most every minute,
        // as RabbitMQ's channel tick; per-queue timeouts are looked at as often).
        let ack_timeout = self.config.consumer_timeout;
        let every = Duration::from_millis(ack_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut ack_check =
            tokio::time::interval(if ack_timeout == 0 { Duration::from_secs(60) } else { every });
        ack_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Held by flow control: the queue to wait for (its wake-up or a short tick).
            let hold = self.held.first().cloned();
            // The client does not read: nothing more is read or delivered until it does, and
            // it is dropped if its socket takes nothing for the send timeout.
            let backed_up = self.writer.backed_up();
            let stalled_until = (backed_up && !send_timeout.is_zero())
                .then(|| self.writer.last_progress() + send_timeout);
            let mut frames = 0usize;
            tokio::select! {
                _ = shutdown.cancelled() => return Err(ConnError::Forced),
                () = sleep_until(stalled_until), if stalled_until.is_some() => {
                    if self.writer.backed_up()
                        && self.writer.last_progress().elapsed() >= send_timeout
                    {
                        return Err(ConnError::SendTimeout);
                    }
                }
                more = self.inbuf.fill(&mut self.rd),
                    if hold.is_none() && !self.alarm_blocked && !backed_up =>
                {
                    if !more? {
                        return Err(ConnError::PeerGone);
                    }
                    self.last_read = Instant::now();
                    self.turn = self.last_read;
                    while let Some(frame) = decode_frame(&mut self.inbuf.buf, self.frame_max)? {
                        self.on_frame(frame)?;
                        frames += 1;
                    }
                    self.inbuf.relax();
                }
                () = flow_wait(hold.clone()), if hold.is_some() => {
                    self.held.retain(|q| q.flow_blocked());
                    if self.held.is_empty() && !self.alarm_blocked {
                        // Not read while held: heartbeats from the peer were not either.
                        self.last_read = Instant::now();
                    }
                }
                () = alarm_wait(self.alarm_blocked.then(|| self.broker.clone())),
                    if self.alarm_blocked =>
                {
                    self.alarms_changed()?;
                }
                Some(event) = self.events_rx.recv(), if !backed_up => {
                    self.turn = Instant::now();
                    self.inbox_seen = self.inbox_seen.max(self.events_rx.len() + 1);
                    self.on_event(event)?;
                    for _ in 0..512 {
                        match self.events_rx.try_recv() {
                            Ok(event) => self.on_event(event)?,
                            Err(_) => break,
                        }
                    }
                }
                ready = self.writer.writable(), if self.writer.has_pending() => {
                    ready?;
                    self.writer.write_now()?;
                }
                _ = ack_check.tick() => {
                    self.turn = Instant::now();
                    self.check_ack_timeouts()?;
                }
                _ = tick.tick(), if !hb.is_zero() => {
                    let reading = self.held.is_empty() && !self.alarm_blocked && !backed_up;
                    if reading && self.last_read.elapsed() > hb * 2 {
                        return Err(ConnError::HeartbeatTimeout);
                    }
                    if self.last_write.elapsed() >= hb / 2 {
                        Frame::Heartbeat.encode(&mut self.out)?;
                    }
                }
            }
            self.end_of_turn()?;
            self.flush()?;
            if frames >= YIELD_AFTER {
                // A busy publisher gives the other connections on its worker thread a turn
                // (the runtime's own budget counts reads, not the thousands of frames one
                // read can hold).
                tokio::task::yield_now().await;
            }
        }
    }

    /// Closes, with RabbitMQ's 406, every channel whose oldest unacknowledged delivery is
    /// older than its consumer timeout (its messages are requeued).
    fn check_ack_timeouts(&mut self) -> Result<(), ConnError> {
        let Some(vhost) = &self.vhost else { return Ok(()) };
        let now = self.turn;
        for (id, channel) in self.channels.iter_mut() {
            if channel.closing {
                continue;
            }
            let Some(timeout) = channel.ack_timed_out(self.config.consumer_timeout, now) else {
                continue;
            };
            let error = AmqpError::precondition_failed(format!(
                "delivery acknowledgement on channel {id} timed out. Timeout value used: \
                 {timeout} ms. This timeout value can be configured, see consumers doc guide to \
                 learn more"
            ));
            tracing::warn!(channel = id, "consumer timed out waiting for an acknowledgement");
            let mut ctx = ctx!(self, vhost);
            channel.release(&mut ctx);
            channel.closing = true;
            let close = ChannelClose {
                reply_code: error.code,
                reply_text: error.reply_text().into(),
                class_id: 0,
                method_id: 0,
            };
            ctx.send(*id, close).map_err(|e| ConnError::Amqp(e, 20, 40))?;
        }
        Ok(())
    }

    /// The alarms changed while this connection was blocked: tell the client, and read again
    /// once they are all clear.
    fn alarms_changed(&mut self) -> Result<(), ConnError> {
        if self.broker.alarms.any() {
            return Ok(());
        }
        self.alarm_blocked = false;
        if std::mem::take(&mut self.blocked_sent) {
            self.send(0, ConnectionUnblocked {})?;
        }
        if self.held.is_empty() {
            // Not read while blocked: heartbeats from the peer were not either.
            self.last_read = Instant::now();
        }
        Ok(())
    }

    /// Confirms and re-dispatch, once per loop turn.
    /// Once per loop turn: asks the store to report when this turn's stored publishes are on
    /// disk, sends the confirms that are due, and lets queues deliver again.
    fn end_of_turn(&mut self) -> Result<(), ConnError> {
        if self.alarm_blocked
            && !self.blocked_sent
            && self.blocked_notify
            && let Some(reason) = self.broker.alarms.reason()
        {
            self.send(0, ConnectionBlocked { reason: reason.into() })?;
            self.blocked_sent = true;
        }
        if let Some(vhost) = &self.vhost {
            let store = self.broker.store();
            for channel in self.channels.values_mut() {
                if channel.closing {
                    continue;
                }
                let (id, generation) = (channel.id, channel.generation);
                if let Some(up_to) = channel.confirm_sync.take()
                    && let Some(store) = store
                {
                    let events = self.events_tx.clone();
                    store.sync(Box::new(move || {
                        let _ = events.send(Event::Persisted { channel: id, generation, up_to });
                    }));
                }
                if let Some(epoch) = channel.commit_sync.take()
                    && let Some(store) = store
                {
                    let events = self.events_tx.clone();
                    store.sync(Box::new(move || {
                        let _ = events.send(Event::TxPersisted { channel: id, generation, epoch });
                    }));
                }
                if channel.confirms.is_some() {
                    let mut ctx = ctx!(self, vhost);
                    channel.flush_confirms(&mut ctx).map_err(|e| ConnError::Amqp(e, 60, 80))?;
                }
            }
        }
        for q in self.dispatch.drain(..) {
            q.dispatch();
        }
        // Behind if deliveries piled up in the inbox during the turn, or the socket does not
        // take the output as fast as it is made.
        if self.writer.pending_bytes() >= LAGGING_OUTPUT {
            self.lag.set_blocked();
        } else {
            self.lag.set(std::mem::take(&mut self.inbox_seen).max(self.events_rx.len()));
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), ConnError> {
        let ch = frame.channel();
        if ch == 0 {
            return match frame {
                Frame::Heartbeat => Ok(()),
                Frame::Method { method, .. } => self.on_connection_method(method),
                _ => Err(ConnError::Amqp(
                    AmqpError::unexpected_frame("content frame on channel 0"),
                    0,
                    0,
                )),
            };
        }
        let (class_id, method_id) = match &frame {
            Frame::Method { method, .. } => (method.class_id(), method.method_id()),
            _ => {
                // A publish's content while an alarm is set: this connection is blocked
                // after the turn (as RabbitMQ's reader, which blocks at a publish).
                if !self.alarm_blocked && self.broker.alarms.any() {
                    self.alarm_blocked = true;
                }
                (0, 0)
            }
        };
        let Some(vhost) = &self.vhost else {
            return Err(ConnError::Amqp(
                AmqpError::command_invalid("connection not open"),
                class_id,
                method_id,
            ));
        };
        let Some(channel) = self.channels.get_mut(&ch) else {
            return match frame {
                Frame::Method { method: Method::ChannelOpen(_), .. } => {
                    // As RabbitMQ: channel-max bounds how many channels are open, not their
                    // numbers (any of 1-65535 may be used).
                    if self.channel_max != 0 && self.channels.len() >= usize::from(self.channel_max)
                    {
                        return Err(ConnError::Amqp(
                            AmqpError::not_allowed(format!(
                                "number of channels opened ({}) has reached the negotiated \
                                 channel_max ({})",
                                self.channels.len(),
                                self.channel_max
                            )),
                            class_id,
                            method_id,
                        ));
                    }
                    let counted = self
                        .broker
                        .count_channel(&self.user)
                        .map_err(|e| ConnError::Amqp(e, class_id, method_id))?;
                    self.generations += 1;
                    let mut channel = Box::new(Channel::new(ch, self.generations));
                    channel.counted = Some(counted);
                    self.channels.insert(ch, channel);
                    self.send(ch, ChannelOpenOk { channel_id: Default::default() })
                }
                Frame::Method { method: Method::ChannelCloseOk(_), .. } => Ok(()),
                _ => Err(ConnError::Amqp(
                    AmqpError::channel_error(format!("expected 'channel.open' on channel {ch}")),
                    class_id,
                    method_id,
                )),
            };
        };
        let mut ctx = ctx!(self, vhost);
        if channel.closing {
            // Until close-ok, everything else on the channel is dropped.
            match frame {
                Frame::Method { method: Method::ChannelCloseOk(_), .. } => {
                    self.channels.remove(&ch);
                }
                Frame::Method { method: Method::ChannelClose(_), .. } => {
                    ctx.send(ch, ChannelCloseOk {}).map_err(|e| ConnError::Amqp(e, 20, 41))?;
                    self.channels.remove(&ch);
                }
                _ => {}
            }
            return Ok(());
        }
        if let Frame::Method { method: Method::ChannelClose(_), .. } = frame {
            channel.release(&mut ctx);
            ctx.send(ch, ChannelCloseOk {}).map_err(|e| ConnError::Amqp(e, 20, 41))?;
            self.channels.remove(&ch);
            return Ok(());
        }
        match channel.handle_frame(frame, &mut ctx) {
            Ok(()) => Ok(()),
            Err(f) if f.error.is_connection_error() => {
                Err(ConnError::Amqp(f.error, f.class_id, f.method_id))
            }
            Err(f) => {
                debug!(channel = ch, "channel error: {}", f.error.reply_text());
                channel.release(&mut ctx);
                channel.closing = true;
                ctx.send(
                    ch,
                    ChannelClose {
                        reply_code: f.error.code,
                        reply_text: f.error.reply_text().into(),
                        class_id: f.class_id,
                        method_id: f.method_id,
                    },
                )
                .map_err(|e| ConnError::Amqp(e, 20, 40))
            }
        }
    }

    fn on_connection_method(&mut self, method: Method) -> Result<(), ConnError> {
        match method {
            Method::ConnectionClose(_) => Err(ConnError::ClientClose),
            Method::ConnectionCloseOk(_) => Err(ConnError::ClientClosed),
            Method::ConnectionUpdateSecret(_) => self.send(0, ConnectionUpdateSecretOk {}),
            Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => Ok(()),
            other => Err(ConnError::Amqp(
                AmqpError::command_invalid(format!("{} is not valid on channel 0", other.name())),
                other.class_id(),
                other.method_id(),
            )),
        }
    }

    fn on_event(&mut self, event: Event) -> Result<(), ConnError> {
        match event {
            Event::Deliver { consumer, entry } => {
                // Retired: cancelled or its channel closed after the queue sent this.
                let live = consumer
                    .is_active()
                    .then(|| self.channels.get_mut(&consumer.channel))
                    .flatten()
                    .filter(|c| !c.closing);
                let (Some(channel), Some(vhost)) = (live, &self.vhost) else {
                    // Cancelled or closed while the delivery was on its way: put it back.
                    consumer.unsent();
                    consumer.queue.restore([entry]);
                    return Ok(());
                };
                let mut ctx = ctx!(self, vhost);
                channel.deliver(consumer, entry, &mut ctx).map_err(|e| ConnError::Amqp(e, 60, 60))
            }
            Event::Persisted { channel, generation, up_to } => {
                let epoch = self.broker.store().map_or(0, |s| s.epoch());
                if let Some(c) =
                    self.channels.get_mut(&channel).filter(|c| c.generation == generation)
                {
                    c.persisted(up_to, epoch);
                }
                Ok(())
            }
            Event::TxPersisted { channel, generation, epoch } => {
                let failed = self.broker.store().is_some_and(|s| s.epoch() > epoch);
                let live = self
                    .channels
                    .get_mut(&channel)
                    .filter(|c| c.generation == generation && !c.closing);
                let (Some(c), Some(vhost)) = (live, &self.vhost) else {
                    return Ok(());
                };
                let mut ctx = ctx!(self, vhost);
                c.committed(failed, &mut ctx).map_err(|e| ConnError::Amqp(e, 90, 20))
            }
            Event::Cancelled { consumer } => {
                let channel = consumer.channel;
                let known = self
                    .channels
                    .get_mut(&channel)
                    .filter(|c| !c.closing)
                    .filter(|c| {
                        c.consumers
                            .get(&consumer.tag)
                            .is_some_and(|sub| Arc::ptr_eq(&sub.consumer, &consumer))
                    })
                    .and_then(|c| c.consumers.remove(&consumer.tag))
                    .inspect(|sub| sub.consumer.retire())
                    .is_some();
                if known && self.cancel_notify {
                    let tag = consumer.tag.clone();
                    self.send(channel, BasicCancel { consumer_tag: tag, nowait: true })?;
                }
                Ok(())
            }
        }
    }

    /// Says goodbye as the reason requires, then releases everything the connection held.
    async fn finish(&mut self, result: Result<(), ConnError>) {
        let close = match &result {
            Err(ConnError::Amqp(e, class_id, method_id)) => {
                Some((e.code, e.reply_text(), *class_id, *method_id))
            }
            Err(ConnError::Wire(e)) => {
                Some((e.reply_code(), format!("{} - {e}", reply::name(e.reply_code())), 0, 0))
            }
            Err(ConnError::Forced) => Some((
                reply::CONNECTION_FORCED,
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
                    .to_string(),
                0,
                0,
            )),
            _ => None,
        };
        match &result {
            Ok(()) | Err(ConnError::ClientClosed | ConnError::ClientClose) => {
                info!("connection closed")
            }
            Err(ConnError::Io(_) | ConnError::PeerGone) => info!("connection lost"),
            Err(e) => info!("closing connection: {e}"),
        }
        if let Err(ConnError::ClientClose) = result {
            // As RabbitMQ: release everything (exclusive queues go, unacked messages are
            // requeued) before close-ok, then leave the socket to the client to close: close-ok
            // tells it that closing is safe, and closing first makes some clients see a reset.
            self.release();
            if self.send(0, ConnectionCloseOk {}).is_ok() && self.flush_all().await.is_ok() {
                self.await_eof(Duration::from_secs(10)).await;
            }
        } else if let Some((reply_code, text, class_id, method_id)) = close {
            let close =
                ConnectionClose { reply_code, reply_text: text.into(), class_id, method_id };
            if self.send(0, close).is_ok() && self.flush_all().await.is_ok() {
                self.await_close_ok().await;
            }
        } else {
            let _ = self.flush();
        }
        self.release();
        self.writer.finish().await;
    }

    /// After close-ok: waits (bounded) for the client to close its side.
    async fn await_eof(&mut self, limit: Duration) {
        let wait = async {
            while let Ok(true) = self.fill().await {
                self.inbuf.buf.clear();
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// After sending connection.close: waits briefly for close-ok, dropping other frames.
    async fn await_close_ok(&mut self) {
        let wait = async {
            loop {
                while let Ok(Some(frame)) = decode_frame(&mut self.inbuf.buf, self.frame_max) {
                    if let Frame::Method {
                        method: Method::ConnectionCloseOk(_) | Method::ConnectionClose(_),
                        ..
                    } = frame
                    {
                        return;
                    }
                }
                match self.fill().await {
                    Ok(true) => {}
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
    }

    /// Requeues unacked messages, removes consumers, deletes exclusive queues (idempotent).
    fn release(&mut self) {
        if let Some(vhost) = &self.vhost {
            for (_, mut channel) in self.channels.drain() {
                let mut ctx = ctx!(self, vhost);
                channel.release(&mut ctx);
            }
        }
        self.events_rx.close();
        while let Ok(event) = self.events_rx.try_recv() {
            if let Event::Deliver { consumer, entry } = event {
                consumer.unsent();
                consumer.queue.restore([entry]);
            }
        }
        self.broker.connection_closed(self.id);
        for q in self.dispatch.drain(..) {
            q.dispatch();
        }
    }
}

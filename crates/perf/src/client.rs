//! A minimal AMQP 0-9-1 client on warren-wire: handshake, one channel, synchronous setup
//! methods, and frames encoded straight into a write buffer so that a publisher costs
//! well under a microsecond per message (the load tool must never be the bottleneck).

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use warren_wire::frame::decode_frame;
use warren_wire::method::*;
use warren_wire::{BasicProperties, FieldTable, Frame, Method, encode_content};

/// Where and as whom to connect, parsed from `amqp://user:pass@host:port/vhost`.
#[derive(Debug, Clone)]
pub struct Target {
    /// host:port
    pub addr: String,
    /// Login.
    pub user: String,
    /// Password.
    pub pass: String,
    /// Vhost.
    pub vhost: String,
}

impl Target {
    /// Parses an AMQP URI (percent-encoded `/` in the vhost as `%2f`).
    pub fn parse(uri: &str) -> anyhow::Result<Self> {
        let rest = uri.strip_prefix("amqp://").context("URI must start with amqp://")?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (a, h),
            None => ("guest:guest", rest),
        };
        let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
        let (hostport, vhost) = match hostpart.split_once('/') {
            Some((h, v)) if !v.is_empty() => (h, v.replace("%2f", "/").replace("%2F", "/")),
            Some((h, _)) => (h, "/".to_string()),
            None => (hostpart, "/".to_string()),
        };
        let addr =
            if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:5672") };
        Ok(Target { addr, user: user.into(), pass: pass.into(), vhost })
    }
}

/// Read side of a connection.
pub struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    /// How much the read buffer grows by when it runs low.
    chunk: usize,
}

impl Reader {
    /// The next frame (heartbeats included).
    pub async fn frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(f) = self.buffered()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// The next frame if the bytes already read hold one (no I/O).
    pub fn buffered(&mut self) -> anyhow::Result<Option<Frame>> {
        Ok(decode_frame(&mut self.buf, u32::MAX)?)
    }

    /// Reads what the socket has into the buffer (cancel-safe); an error once it is closed.
    pub async fn fill(&mut self) -> anyhow::Result<()> {
        if self.buf.capacity() - self.buf.len() < self.chunk / 16 {
            self.buf.reserve(self.chunk);
        }
        if self.rd.read_buf(&mut self.buf).await? == 0 {
            bail!("connection closed by the broker");
        }
        Ok(())
    }

    /// The next method, skipping heartbeats; a close from the broker is an error.
    pub async fn method(&mut self) -> anyhow::Result<Method> {
        loop {
            match self.frame().await? {
                Frame::Method { method: Method::ConnectionClose(c), .. } => {
                    bail!("connection closed: {} {}", c.reply_code, c.reply_text)
                }
                Frame::Method { method: Method::ChannelClose(c), .. } => {
                    bail!("channel closed: {} {}", c.reply_code, c.reply_text)
                }
                Frame::Method { method, .. } => return Ok(method),
                _ => continue,
            }
        }
    }
}

/// Write side of a connection: frames accumulate in `out` until `flush`.
pub struct Writer {
    wr: OwnedWriteHalf,
    /// Pending output.
    pub out: BytesMut,
    /// Negotiated frame-max.
    pub frame_max: u32,
}

impl Writer {
    /// Appends a method frame on channel 1.
    pub fn method(&mut self, m: impl Into<Method>) -> anyhow::Result<()> {
        Frame::method(1, m).encode(&mut self.out)?;
        Ok(())
    }

    /// Appends a publish on channel 1.
    pub fn publish(
        &mut self,
        exchange: &str,
        key: &str,
        props: &BasicProperties,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let m = Method::from(BasicPublish {
            exchange: exchange.into(),
            routing_key: key.into(),
            ..Default::default()
        });
        encode_content(&mut self.out, 1, &m, props, body, self.frame_max)?;
        Ok(())
    }

    /// Sends connection.close (without waiting for close-ok).
    pub async fn close(&mut self) -> anyhow::Result<()> {
        Frame::method(
            0,
            ConnectionClose { reply_code: 200, reply_text: "bye".into(), ..Default::default() },
        )
        .encode(&mut self.out)?;
        self.flush().await
    }

    /// Writes what is pending.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.wr.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Connects, logs in, opens channel 1. Heartbeats are off (the tool is never idle).
pub async fn connect(t: &Target) -> anyhow::Result<(Reader, Writer)> {
    connect_with(t, 256 * 1024).await
}

/// As [`connect`], with read and write buffers of `buffer` bytes (small for idle connections).
pub async fn connect_with(t: &Target, buffer: usize) -> anyhow::Result<(Reader, Writer)> {
    let sock = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&t.addr))
        .await
        .context("connect timed out")??;
    sock.set_nodelay(true)?;
    let (rd, wr) = sock.into_split();
    let mut r = Reader { rd, buf: BytesMut::with_capacity(buffer), chunk: buffer };
    let mut w = Writer { wr, out: BytesMut::with_capacity(buffer), frame_max: 131072 };
    w.out.extend_from_slice(b"AMQP\x00\x00\x09\x01");
    w.flush().await?;
    let Method::ConnectionStart(_) = r.method().await? else { bail!("expected connection.start") };
    let response = Bytes::from(format!("\0{}\0{}", t.user, t.pass));
    let caps = FieldTable::new()
        .with("publisher_confirms", true)
        .with("consumer_cancel_notify", true)
        .with("basic.nack", true);
    let props = FieldTable::new().with("product", "warren-perf").with("capabilities", caps);
    Frame::method(
        0,
        ConnectionStartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response,
            locale: "en_US".into(),
        },
    )
    .encode(&mut w.out)?;
    w.flush().await?;
    let Method::ConnectionTune(tune) = r.method().await? else { bail!("login refused") };
    w.frame_max = if tune.frame_max == 0 { 131072 } else { tune.frame_max.min(131072) };
    Frame::method(
        0,
        ConnectionTuneOk { channel_max: tune.channel_max, frame_max: w.frame_max, heartbeat: 0 },
    )
    .encode(&mut w.out)?;
    Frame::method(
        0,
        ConnectionOpen { virtual_host: t.vhost.as_str().into(), ..Default::default() },
    )
    .encode(&mut w.out)?;
    w.method(ChannelOpen::default())?;
    w.flush().await?;
    let Method::ConnectionOpenOk(_) = r.method().await? else { bail!("vhost refused") };
    let Method::ChannelOpenOk(_) = r.method().await? else { bail!("channel refused") };
    Ok((r, w))
}

/// Sends a method and waits for its reply.
pub async fn rpc(r: &mut Reader, w: &mut Writer, m: impl Into<Method>) -> anyhow::Result<Method> {
    w.method(m)?;
    w.flush().await?;
    r.method().await
}

/// Declares a queue (durable when asked); returns its message count.
pub async fn declare_queue(
    r: &mut Reader,
    w: &mut Writer,
    name: &str,
    durable: bool,
) -> anyhow::Result<u32> {
    let reply =
        rpc(r, w, QueueDeclare { queue: name.into(), durable, ..Default::default() }).await?;
    match reply {
        Method::QueueDeclareOk(ok) => Ok(ok.message_count),
        other => bail!("queue.declare answered {}", other.name()),
    }
}

/// Deletes a queue (whatever it holds); returns how many messages it held.
pub async fn delete_queue(r: &mut Reader, w: &mut Writer, name: &str) -> anyhow::Result<u32> {
    match rpc(r, w, QueueDelete { queue: name.into(), ..Default::default() }).await? {
        Method::QueueDeleteOk(ok) => Ok(ok.message_count),
        other => bail!("queue.delete answered {}", other.name()),
    }
}

/// Deletes an exchange.
pub async fn delete_exchange(r: &mut Reader, w: &mut Writer, name: &str) -> anyhow::Result<()> {
    match rpc(r, w, ExchangeDelete { exchange: name.into(), ..Default::default() }).await? {
        Method::ExchangeDeleteOk(_) => Ok(()),
        other => bail!("exchange.delete answered {}", other.name()),
    }
}

/// Publishes `count` copies of `body` on a channel in confirm mode (confirm.select already
/// done) with at most `window` unconfirmed, and returns once all are confirmed. `progress`
/// is called with the confirmed count about once a second.
#[allow(clippy::too_many_arguments)]
pub async fn publish_confirmed(
    r: &mut Reader,
    w: &mut Writer,
    exchange: &str,
    key: &str,
    props: &BasicProperties,
    body: &[u8],
    count: u64,
    window: u64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<()> {
    let window = window.max(1);
    let (mut sent, mut confirmed) = (0u64, 0u64);
    let mut next_report = std::time::Instant::now() + Duration::from_secs(1);
    while confirmed < count {
        while sent < count && sent - confirmed < window {
            for _ in 0..64.min(count - sent).min(window - (sent - confirmed)) {
                w.publish(exchange, key, props, body)?;
                sent += 1;
            }
            w.flush().await?;
        }
        match r.frame().await? {
            Frame::Method { method: Method::BasicAck(a), .. } => {
                confirmed = if a.multiple { a.delivery_tag } else { confirmed.max(a.delivery_tag) };
            }
            Frame::Method { method: Method::BasicNack(_), .. } => bail!("a publish was nacked"),
            Frame::Method { method: Method::ConnectionClose(c), .. } => {
                bail!("connection closed: {} {}", c.reply_code, c.reply_text)
            }
            Frame::Method { method: Method::ChannelClose(c), .. } => {
                bail!("channel closed: {} {}", c.reply_code, c.reply_text)
            }
            _ => {}
        }
        if std::time::Instant::now() >= next_report {
            progress(confirmed);
            next_report += Duration::from_secs(1);
        }
    }
    Ok(())
}

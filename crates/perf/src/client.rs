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
}

impl Reader {
    /// The next frame (heartbeats included).
    pub async fn frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some(f) = decode_frame(&mut self.buf, u32::MAX)? {
                return Ok(f);
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(256 * 1024);
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed by the broker");
            }
        }
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
    let sock = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&t.addr))
        .await
        .context("connect timed out")??;
    sock.set_nodelay(true)?;
    let (rd, wr) = sock.into_split();
    let mut r = Reader { rd, buf: BytesMut::with_capacity(256 * 1024) };
    let mut w = Writer { wr, out: BytesMut::with_capacity(256 * 1024), frame_max: 131072 };
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

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

/// A frame as a consumer's hot loop sees it ([`Reader::buffered_delivery`]).
pub enum Light {
    /// basic.deliver, with its delivery tag.
    Deliver(u64),
    /// A content header.
    Header,
    /// A body frame: its length and first (up to) 8 bytes.
    Body {
        /// Payload length.
        len: usize,
        /// The first bytes (zero-padded).
        first: [u8; 8],
    },
    /// Any other frame, decoded.
    Other(Frame),
}

/// [`Reader::buffered_delivery`] on a buffer.
fn scan_delivery(buf: &mut BytesMut) -> anyhow::Result<Option<Light>> {
    use warren_wire::constants::{FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_METHOD};
    use warren_wire::frame::FRAME_HEADER_SIZE as HEADER;
    let b = &buf[..];
    if b.len() < HEADER {
        return Ok(None);
    }
    let size = u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as usize;
    let total = HEADER + size + 1;
    if b.len() < total {
        return Ok(decode_frame(buf, u32::MAX)?.map(Light::Other));
    }
    if b[total - 1] != FRAME_END {
        bail!("bad frame end");
    }
    let payload = &b[HEADER..HEADER + size];
    let light = match b[0] {
        // basic.deliver: class 60, method 60, consumer-tag (short string), delivery-tag.
        FRAME_METHOD if payload.len() >= 5 && payload[..4] == [0, 60, 0, 60] => {
            let at = 5 + payload[4] as usize;
            let Some(tag) = payload.get(at..at + 8) else { bail!("short basic.deliver") };
            Light::Deliver(u64::from_be_bytes(tag.try_into()?))
        }
        FRAME_HEADER => Light::Header,
        FRAME_BODY => {
            let mut first = [0u8; 8];
            let n = payload.len().min(8);
            first[..n].copy_from_slice(&payload[..n]);
            Light::Body { len: payload.len(), first }
        }
        _ => return Ok(decode_frame(buf, u32::MAX)?.map(Light::Other)),
    };
    bytes::Buf::advance(buf, total);
    Ok(Some(light))
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

    /// Like [`Reader::buffered`], for a consumer's hot loop: a basic.deliver gives only its
    /// delivery tag, a content header nothing, a body only its first 8 bytes; those frames
    /// are skipped in the buffer without being split off or decoded (no reference counts,
    /// no copies). Any other frame is decoded in full.
    pub fn buffered_delivery(&mut self) -> anyhow::Result<Option<Light>> {
        scan_delivery(&mut self.buf)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning_deliveries_matches_decoding_them() {
        let mut buf = BytesMut::new();
        let props = BasicProperties { delivery_mode: Some(2), ..Default::default() };
        for (tag, body) in [(7u64, &b"0123456789"[..]), (8, b"abc"), (u64::MAX, b"")] {
            let d = BasicDeliver {
                consumer_tag: "ctag-x".into(),
                delivery_tag: tag,
                exchange: "ex".into(),
                routing_key: "rk".into(),
                ..Default::default()
            };
            encode_content(&mut buf, 1, &Method::from(d), &props, body, 131_072).unwrap();
        }
        Frame::method(1, BasicCancel { consumer_tag: "c".into(), nowait: true })
            .encode(&mut buf)
            .unwrap();
        let mut seen = Vec::new();
        while let Some(light) = scan_delivery(&mut buf).unwrap() {
            seen.push(match light {
                Light::Deliver(tag) => format!("deliver {tag}"),
                Light::Header => "header".into(),
                Light::Body { len, first } => format!("body {len} {:?}", &first[..len.min(8)]),
                Light::Other(f) => format!("other {}", matches!(f, Frame::Method { .. })),
            });
        }
        assert_eq!(
            seen,
            [
                "deliver 7",
                "header",
                "body 10 [48, 49, 50, 51, 52, 53, 54, 55]",
                "deliver 8",
                "header",
                "body 3 [97, 98, 99]",
                &format!("deliver {}", u64::MAX),
                "header",
                "other true",
            ]
        );
        assert!(buf.is_empty());
        // An incomplete frame waits for more bytes.
        let mut part = BytesMut::from(&b"\x01\x00\x01\x00\x00\x00\x10abc"[..]);
        assert!(scan_delivery(&mut part).unwrap().is_none());
    }
}

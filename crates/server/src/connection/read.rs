//! The connection's read buffer, and its reads outside the main loop: the handshake's
//! method frames, and the client's last bytes while closing.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use warren_core::AmqpError;
use warren_wire::frame::decode_frame;
use warren_wire::{Frame, Method, ShortStr};

use super::socket::ReadHalf;
use super::{ConnError, Connection};

/// Size of a read buffer.
const READ_SIZE: usize = 64 * 1024;

/// Spare room below which a new read buffer is taken.
const READ_LOW: usize = 4 * 1024;

/// The read buffer. A connection waiting for input holds none: it waits for readiness
/// first, takes a buffer only to read, and lets it go after a small read that left nothing
/// behind, so an idle connection costs little memory while a busy one keeps its buffer.
pub(super) struct ReadBuf {
    pub(super) buf: BytesMut,
    /// Bytes the last read brought.
    last: usize,
}

impl ReadBuf {
    pub(super) fn new() -> Self {
        ReadBuf { buf: BytesMut::new(), last: 0 }
    }

    /// Reads more bytes; false on end of stream. Cancel-safe.
    pub(super) async fn fill(&mut self, rd: &mut ReadHalf) -> std::io::Result<bool> {
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

    /// A frame decoded from the buffer, made to keep it alive only after a large read. The
    /// body and properties of a message share the read buffer; after a small read (a client
    /// publishing slowly, or one that sends a frame per read on purpose), the buffer is let go
    /// and a new 64 KiB one taken for the next read, so a queued message holding a slice would
    /// keep a whole buffer for a few bytes. Those few bytes are copied instead. Large reads,
    /// the busy path, copy nothing.
    pub(super) fn detach(&self, frame: Frame) -> Frame {
        if self.last >= READ_LOW {
            return frame;
        }
        match frame {
            Frame::Body { channel, payload } => {
                Frame::Body { channel, payload: Bytes::copy_from_slice(&payload) }
            }
            Frame::Header { channel, mut header } => {
                header.raw_properties = Bytes::copy_from_slice(&header.raw_properties);
                Frame::Header { channel, header }
            }
            Frame::Method { channel, method: Method::BasicPublish(mut m) } => {
                // The message keeps its exchange and routing key.
                m.exchange = ShortStr::from(&*m.exchange);
                m.routing_key = ShortStr::from(&*m.routing_key);
                Frame::Method { channel, method: Method::BasicPublish(m) }
            }
            other => other,
        }
    }

    /// Between reads: after a small read that left nothing behind, the buffer is let go.
    pub(super) fn relax(&mut self) {
        if self.buf.is_empty() && self.last < READ_LOW && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }
}

impl Connection {
    /// Reads more bytes; false on end of stream.
    pub(super) async fn fill(&mut self) -> Result<bool, ConnError> {
        let more = self.inbuf.fill(&mut self.rd).await?;
        self.last_read = Instant::now();
        Ok(more)
    }

    /// The next method frame during the handshake (heartbeats skipped).
    pub(super) async fn next_method(&mut self) -> Result<Method, ConnError> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_in_buffer() -> (Bytes, Frame) {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        buf.extend_from_slice(b"a small body");
        let payload = buf.split().freeze();
        (payload.clone(), Frame::Body { channel: 1, payload })
    }

    fn payload(frame: Frame) -> Bytes {
        match frame {
            Frame::Body { payload, .. } => payload,
            _ => Bytes::new(),
        }
    }

    #[test]
    fn bodies_from_a_small_read_let_the_read_buffer_go() {
        let mut r = ReadBuf::new();
        r.last = 12;
        let (original, frame) = body_in_buffer();
        let kept = payload(r.detach(frame));
        assert_eq!(kept, original);
        assert_ne!(kept.as_ptr(), original.as_ptr(), "copied out of the read buffer");
        r.last = READ_SIZE;
        let (original, frame) = body_in_buffer();
        assert_eq!(
            payload(r.detach(frame)).as_ptr(),
            original.as_ptr(),
            "a large read copies nothing"
        );
    }
}

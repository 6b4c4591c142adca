//! Frames: the unit on the socket. Parsing is two steps: the 7-byte header first (type,
//! channel, size), whose size is checked against frame-max before anything else is buffered;
//! then, once the whole frame is in, its payload. Encoding appends to one `BytesMut`.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use nom::IResult;
use nom::Parser;
use nom::number::complete::{be_u8, be_u16, be_u32};

use crate::constants::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};
use crate::error::WireError;
use crate::method::Method;
use crate::properties::{BasicProperties, ContentHeader, write_header};

/// Bytes reserved beyond an incomplete frame, for the frames that follow it.
pub const READ_AHEAD: usize = 4096;

/// Size of the frame header: type (1), channel (2), payload size (4).
pub const FRAME_HEADER_SIZE: usize = 7;

/// One decoded frame.
///
/// A content header is boxed: its 14 decoded properties take several hundred bytes, and an
/// unboxed header would make every frame that large, copied at each move from the decoder to
/// the channel (one small allocation per message costs less than those copies).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel number (0 for connection-class methods).
        channel: u16,
        /// The method.
        method: Method,
    },
    /// A content header frame.
    Header {
        /// Channel number.
        channel: u16,
        /// Class, body size and properties.
        header: Box<ContentHeader>,
    },
    /// A content body frame; the payload shares the read buffer.
    Body {
        /// Channel number.
        channel: u16,
        /// The body bytes of this frame.
        payload: Bytes,
    },
    /// A heartbeat (always channel 0).
    Heartbeat,
}

impl Frame {
    /// A method frame.
    pub fn method(channel: u16, method: impl Into<Method>) -> Frame {
        Frame::Method { channel, method: method.into() }
    }

    /// The channel the frame travels on.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. } => *channel,
            Frame::Heartbeat => 0,
        }
    }

    /// Appends the encoded frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), WireError> {
        match self {
            Frame::Method { channel, method } => {
                framed(buf, FRAME_METHOD, *channel, |b| method.encode(b))
            }
            Frame::Header { channel, header } => {
                framed(buf, FRAME_HEADER, *channel, |b| header.encode(b))
            }
            Frame::Body { channel, payload } => framed(buf, FRAME_BODY, *channel, |b| {
                b.put_slice(payload);
                Ok(())
            }),
            Frame::Heartbeat => framed(buf, FRAME_HEARTBEAT, 0, |_| Ok(())),
        }
    }
}

/// Writes a frame around whatever `payload` appends, patching the size in afterwards.
fn framed(
    buf: &mut BytesMut,
    kind: u8,
    channel: u16,
    payload: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let start = buf.len();
    buf.put_u8(kind);
    buf.put_u16(channel);
    buf.put_u32(0);
    if let Err(e) = payload(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let size = buf.len() - start - FRAME_HEADER_SIZE;
    let Ok(size32) = u32::try_from(size) else {
        buf.truncate(start);
        return Err(WireError::TooLong(size));
    };
    buf[start + 3..start + FRAME_HEADER_SIZE].copy_from_slice(&size32.to_be_bytes());
    buf.put_u8(FRAME_END);
    Ok(())
}

/// Appends a whole message: the method frame, the content header, and the body split into
/// frames that fit `frame_max` (no body frame for an empty body).
pub fn encode_content(
    buf: &mut BytesMut,
    channel: u16,
    method: &Method,
    properties: &BasicProperties,
    body: &[u8],
    frame_max: u32,
) -> Result<(), WireError> {
    let (class_id, size) = (method.class_id(), body.len() as u64);
    buf.reserve(body.len() + 64);
    let header = |b: &mut BytesMut| write_header(b, class_id, 0, size, properties);
    let method_args = |b: &mut BytesMut| method.encode(b);
    content(buf, channel, method_args, body.len(), frame_max, header, |b, range| {
        b.extend_from_slice(&body[range]);
    })
}

/// Where encoded frames go: a buffer for the frames' own bytes, and a way to take a body part.
///
/// A plain `BytesMut` copies bodies in. A sink that writes vectored can keep a reference to a
/// large body instead (it is a `Bytes`, shared with the queue), so the body is never copied
/// between its arrival and the socket.
pub trait FrameSink {
    /// The buffer frames are written into.
    fn buf(&mut self) -> &mut BytesMut;

    /// Appends `body[range]` as the payload of the body frame being written.
    fn body(&mut self, body: &Bytes, range: Range<usize>) {
        self.buf().extend_from_slice(&body[range]);
    }
}

impl FrameSink for BytesMut {
    fn buf(&mut self) -> &mut BytesMut {
        self
    }
}

/// Like [`encode_content`], with the properties already encoded (as a content header carries
/// them): a broker relays what it received without decoding or re-encoding it. The body goes
/// through [`FrameSink::body`], so a sink may take it without copying.
pub fn encode_content_raw<S: FrameSink + ?Sized>(
    sink: &mut S,
    channel: u16,
    method: &Method,
    raw_properties: &[u8],
    body: &Bytes,
    frame_max: u32,
) -> Result<(), WireError> {
    let method_args = |b: &mut BytesMut| method.encode(b);
    content_raw(sink, channel, method_args, method.class_id(), raw_properties, body, frame_max)
}

/// What a basic.deliver says, borrowed (see [`encode_deliver`]).
#[derive(Debug, Clone, Copy)]
pub struct Deliver<'a> {
    /// Consumer tag.
    pub consumer_tag: &'a str,
    /// Delivery tag.
    pub delivery_tag: u64,
    /// Delivered before.
    pub redelivered: bool,
    /// Exchange the message was published to.
    pub exchange: &'a str,
    /// Routing key it was published with.
    pub routing_key: &'a str,
}

/// A basic.deliver with its content, like [`encode_content_raw`] with a `BasicDeliver`, from
/// borrowed strings: a broker's delivery path takes no reference on the consumer tag, exchange
/// and routing key (slices of buffers that other cores are using too) for each message.
pub fn encode_deliver<S: FrameSink + ?Sized>(
    sink: &mut S,
    channel: u16,
    d: Deliver<'_>,
    raw_properties: &[u8],
    body: &Bytes,
    frame_max: u32,
) -> Result<(), WireError> {
    let method_args = |b: &mut BytesMut| {
        let mut w = crate::write::Writer::new(b);
        w.short(60);
        w.short(60);
        w.shortstr(d.consumer_tag)?;
        w.longlong(d.delivery_tag);
        w.bit(d.redelivered);
        w.shortstr(d.exchange)?;
        w.shortstr(d.routing_key)
    };
    content_raw(sink, channel, method_args, 60, raw_properties, body, frame_max)
}

/// [`content`] with a header of already encoded properties and the body through the sink.
fn content_raw<S: FrameSink + ?Sized>(
    sink: &mut S,
    channel: u16,
    method_args: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
    class_id: u16,
    raw_properties: &[u8],
    body: &Bytes,
    frame_max: u32,
) -> Result<(), WireError> {
    let header = |b: &mut BytesMut| {
        b.put_u16(class_id);
        b.put_u16(0);
        b.put_u64(body.len() as u64);
        b.put_slice(raw_properties);
        Ok(())
    };
    content(sink, channel, method_args, body.len(), frame_max, header, |s, range| {
        s.body(body, range)
    })
}

/// The method frame, a header frame whose payload `header` writes, and the body frames whose
/// payloads `part` appends; on error the sink is left as it was (only the method and header
/// can fail, and they are written before any body part).
fn content<S: FrameSink + ?Sized>(
    sink: &mut S,
    channel: u16,
    method: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
    body_len: usize,
    frame_max: u32,
    header: impl FnOnce(&mut BytesMut) -> Result<(), WireError>,
    mut part: impl FnMut(&mut S, Range<usize>),
) -> Result<(), WireError> {
    let buf = sink.buf();
    let start = buf.len();
    let result = framed(buf, FRAME_METHOD, channel, method)
        .and_then(|()| framed(buf, FRAME_HEADER, channel, header));
    if result.is_err() {
        buf.truncate(start);
        return result;
    }
    let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1) as usize;
    let mut at = 0;
    while at < body_len {
        let end = body_len.min(at + chunk);
        let buf = sink.buf();
        buf.put_u8(FRAME_BODY);
        buf.put_u16(channel);
        buf.put_u32((end - at) as u32);
        part(sink, at..end);
        sink.buf().put_u8(FRAME_END);
        at = end;
    }
    Ok(())
}

fn frame_header(input: &[u8]) -> IResult<&[u8], (u8, u16, u32), ()> {
    (be_u8, be_u16, be_u32).parse(input)
}

/// Bytes a frame may exceed the negotiated frame-max by and still be taken: RabbitMQ allows
/// one empty frame's size (its `FRAME_SIZE_FUDGE`), "since quite a few [clients] get it wrong",
/// i.e. a payload of up to frame-max rather than frame-max - 8. Some clients rely on it.
pub const FRAME_SIZE_FUDGE: u32 = FRAME_OVERHEAD;

/// Takes one frame off the front of `buf` if it is all there. `Ok(None)` means more bytes are
/// needed (and `buf` has been reserved for them, and [`READ_AHEAD`] more). A frame larger
/// than `frame_max` (plus [`FRAME_SIZE_FUDGE`], as RabbitMQ) is refused from its header alone,
/// before its payload is waited for.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, WireError> {
    let Ok((_, (kind, channel, size))) = frame_header(buf) else {
        return Ok(None);
    };
    let total = u64::from(size) + u64::from(FRAME_OVERHEAD);
    if total > u64::from(frame_max) + u64::from(FRAME_SIZE_FUDGE) {
        return Err(WireError::FrameTooLarge { size: total, max: frame_max });
    }
    let total = total as usize;
    if buf.len() < total {
        // Room for the rest of this frame and a few small ones behind it: a large frame gets
        // a buffer of its own size (its payload keeps that buffer alive), and the read that
        // completes it need not grow the buffer again.
        buf.reserve(total - buf.len() + READ_AHEAD);
        return Ok(None);
    }
    let frame = buf.split_to(total).freeze();
    let end = frame[total - 1];
    if end != FRAME_END {
        return Err(WireError::BadFrameEnd(end));
    }
    let payload = &frame[FRAME_HEADER_SIZE..total - 1];
    let decoded = match kind {
        FRAME_METHOD => Frame::Method { channel, method: Method::decode(&frame, payload)? },
        FRAME_HEADER => {
            Frame::Header { channel, header: Box::new(ContentHeader::decode(&frame, payload)?) }
        }
        FRAME_BODY => Frame::Body { channel, payload: frame.slice_ref(payload) },
        FRAME_HEARTBEAT if channel == 0 && payload.is_empty() => Frame::Heartbeat,
        FRAME_HEARTBEAT => return Err(WireError::BadHeartbeat),
        other => return Err(WireError::UnknownFrameType(other)),
    };
    Ok(Some(decoded))
}

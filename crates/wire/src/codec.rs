//! `tokio_util::codec` adapters over [`Frame`], so the server can drive a socket with `Framed`
//! or its own read loop. The encoder appends to the caller's buffer: many frames, one write.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::constants::FRAME_MIN_SIZE;
use crate::error::WireError;
use crate::frame::{Frame, decode_frame};

/// Frame codec with a frame-max that the connection raises or lowers after tuning.
#[derive(Debug, Clone, Copy)]
pub struct AmqpCodec {
    /// Largest total frame size (payload + 8) accepted on decode.
    pub frame_max: u32,
}

impl Default for AmqpCodec {
    fn default() -> Self {
        AmqpCodec { frame_max: FRAME_MIN_SIZE }
    }
}

impl AmqpCodec {
    /// A codec accepting frames up to `frame_max` bytes.
    pub fn new(frame_max: u32) -> Self {
        AmqpCodec { frame_max }
    }
}

impl Decoder for AmqpCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        decode_frame(src, self.frame_max)
    }
}

impl Encoder<&Frame> for AmqpCodec {
    type Error = WireError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        frame.encode(dst)
    }
}

impl Encoder<Frame> for AmqpCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        frame.encode(dst)
    }
}

//! [`WireError`]: everything that can be wrong with bytes from the peer, each carrying the reply
//! code the server must close the connection with and a message a person understands.

use crate::constants::reply;

/// A malformed or unacceptable frame. Every variant is a connection-level (hard) error.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame's declared size is larger than the negotiated frame-max.
    #[error("frame of {size} bytes exceeds negotiated frame-max {max}")]
    FrameTooLarge {
        /// Total size the frame header claims (payload + 8).
        size: u64,
        /// The negotiated limit.
        max: u32,
    },
    /// The octet after the payload was not 0xCE.
    #[error("frame end octet was 0x{0:02X}, expected 0xCE")]
    BadFrameEnd(u8),
    /// A frame type other than method, header, body or heartbeat.
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A heartbeat on a channel other than 0, or with a payload.
    #[error("heartbeat frame must be on channel 0 with an empty payload")]
    BadHeartbeat,
    /// A class id and method id that name no method.
    #[error("unknown method {class_id}/{method_id}")]
    UnknownMethod {
        /// Class id as received.
        class_id: u16,
        /// Method id as received.
        method_id: u16,
    },
    /// The payload ended before a value it announced.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// Bytes were left after the last argument of a method or header.
    #[error("{0} trailing bytes after {1}")]
    TrailingBytes(usize, &'static str),
    /// A field-table or array value with a type letter RabbitMQ does not know.
    #[error("unknown field type {0:?} in field table")]
    UnknownFieldType(char),
    /// A short string that is not UTF-8.
    #[error("short string is not valid UTF-8")]
    InvalidUtf8,
    /// A content header whose property flags set a bit that names no property.
    #[error("content header property flags 0x{0:04X} name unknown properties")]
    BadPropertyFlags(u16),
    /// Encode side: a short string longer than 255 bytes.
    #[error("short string of {0} bytes exceeds 255")]
    ShortStrTooLong(usize),
    /// Encode side: a table, array or long string longer than 4 GiB.
    #[error("value of {0} bytes exceeds the 32-bit length field")]
    TooLong(usize),
    /// The socket failed (the codec traits need this variant).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    /// The reply code a server sends in `connection.close` for this error.
    pub fn reply_code(&self) -> u16 {
        match self {
            WireError::FrameTooLarge { .. }
            | WireError::BadFrameEnd(_)
            | WireError::UnknownFrameType(_)
            | WireError::BadHeartbeat => reply::FRAME_ERROR,
            WireError::UnknownMethod { .. } => reply::NOT_IMPLEMENTED,
            WireError::Truncated(_)
            | WireError::TrailingBytes(..)
            | WireError::UnknownFieldType(_)
            | WireError::InvalidUtf8
            | WireError::BadPropertyFlags(_) => reply::SYNTAX_ERROR,
            WireError::ShortStrTooLong(_) | WireError::TooLong(_) | WireError::Io(_) => {
                reply::INTERNAL_ERROR
            }
        }
    }
}

//! [`AmqpError`]: a broker rule broken, with the reply code and text the client is told.
//! Soft codes (3xx/4xx) close the channel; hard codes (5xx, and 320/402) close the connection.

use warren_wire::constants::reply;

/// An error answered with channel.close or connection.close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} - {text}", reply::name(*code))]
pub struct AmqpError {
    /// Reply code.
    pub code: u16,
    /// Human-readable text (without the code name; [`reply_text`](Self::reply_text) adds it).
    pub text: String,
}

/// Result of a broker operation.
pub type Result<T, E = AmqpError> = std::result::Result<T, E>;

impl AmqpError {
    /// An error with `code` and `text`.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        AmqpError { code, text: text.into() }
    }

    /// Whether the error closes the whole connection rather than one channel.
    pub fn is_connection_error(&self) -> bool {
        matches!(self.code, 320 | 402 | 501..=541)
    }

    /// The reply text as RabbitMQ words it: `NOT_FOUND - no queue 'x' in vhost '/'`.
    pub fn reply_text(&self) -> String {
        let mut t = format!("{} - {}", reply::name(self.code), self.text);
        if t.len() > 255 {
            let mut cut = 255;
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t.truncate(cut);
        }
        t
    }

    /// 404 NOT_FOUND.
    pub fn not_found(text: impl Into<String>) -> Self {
        Self::new(reply::NOT_FOUND, text)
    }
    /// 403 ACCESS_REFUSED.
    pub fn access_refused(text: impl Into<String>) -> Self {
        Self::new(reply::ACCESS_REFUSED, text)
    }
    /// 405 RESOURCE_LOCKED.
    pub fn resource_locked(text: impl Into<String>) -> Self {
        Self::new(reply::RESOURCE_LOCKED, text)
    }
    /// 406 PRECONDITION_FAILED.
    pub fn precondition_failed(text: impl Into<String>) -> Self {
        Self::new(reply::PRECONDITION_FAILED, text)
    }
    /// 503 COMMAND_INVALID.
    pub fn command_invalid(text: impl Into<String>) -> Self {
        Self::new(reply::COMMAND_INVALID, text)
    }
    /// 504 CHANNEL_ERROR.
    pub fn channel_error(text: impl Into<String>) -> Self {
        Self::new(reply::CHANNEL_ERROR, text)
    }
    /// 505 UNEXPECTED_FRAME.
    pub fn unexpected_frame(text: impl Into<String>) -> Self {
        Self::new(reply::UNEXPECTED_FRAME, text)
    }
    /// 530 NOT_ALLOWED.
    pub fn not_allowed(text: impl Into<String>) -> Self {
        Self::new(reply::NOT_ALLOWED, text)
    }
    /// 540 NOT_IMPLEMENTED.
    pub fn not_implemented(text: impl Into<String>) -> Self {
        Self::new(reply::NOT_IMPLEMENTED, text)
    }
    /// 541 INTERNAL_ERROR.
    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(reply::INTERNAL_ERROR, text)
    }
}

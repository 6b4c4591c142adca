//! [`AmqpError`]: a broker rule broken, with the reply code and text the client is told.
//! Each error knows what it closes ([`Scope`]): the spec's soft errors a channel, its hard
//! errors the connection.

use warren_wire::constants::reply;

/// An error answered with channel.close or connection.close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} - {text}", reply::name(*code))]
pub struct AmqpError {
    /// Reply code.
    pub code: u16,
    /// Human-readable text (without the code name; [`reply_text`](Self::reply_text) adds it).
    pub text: String,
    /// What it closes.
    pub scope: Scope,
}

/// What an error closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The channel it happened on (channel.close).
    Channel,
    /// The whole connection (connection.close).
    Connection,
}

/// Result of a broker operation.
pub type Result<T, E = AmqpError> = std::result::Result<T, E>;

impl AmqpError {
    /// An error with `code` and `text`, closing what the spec says that code closes (the
    /// connection for its hard errors, else the channel).
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        let scope = if reply::is_hard_error(code) { Scope::Connection } else { Scope::Channel };
        AmqpError { code, text: text.into(), scope }
    }

    /// Whether the error closes the whole connection rather than one channel.
    pub fn is_connection_error(&self) -> bool {
        self.scope == Scope::Connection
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_hard_errors_close_the_connection_and_its_soft_ones_a_channel() {
        // The spec's constants of class hard-error and soft-error.
        for code in [320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541] {
            assert_eq!(AmqpError::new(code, "x").scope, Scope::Connection, "{code}");
        }
        for code in [311, 312, 313, 403, 404, 405, 406] {
            assert_eq!(AmqpError::new(code, "x").scope, Scope::Channel, "{code}");
        }
        assert!(AmqpError::not_allowed("x").is_connection_error());
        assert!(!AmqpError::precondition_failed("x").is_connection_error());
    }
}

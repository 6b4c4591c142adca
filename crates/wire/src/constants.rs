//! Numbers fixed by the protocol: frame types, the frame-end octet, sizes and reply codes.
//! They match `amqp-rabbitmq-0.9.1.json`'s `constants` (a test checks it).

/// The 8 bytes a 0-9-1 client opens with, and that a server answers a foreign header with.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// Method frame type.
pub const FRAME_METHOD: u8 = 1;
/// Content header frame type.
pub const FRAME_HEADER: u8 = 2;
/// Content body frame type.
pub const FRAME_BODY: u8 = 3;
/// Heartbeat frame type.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The octet that closes every frame.
pub const FRAME_END: u8 = 0xCE;
/// The smallest frame-max a peer may negotiate; also the limit before tuning.
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Bytes of a frame that are not payload: type, channel, size, frame-end.
pub const FRAME_OVERHEAD: u32 = 8;

/// Reply codes, as `u16`, named as in the spec.
pub mod reply {
    /// 200: success (used by close with no error).
    pub const SUCCESS: u16 = 200;
    /// 311: content too large (soft).
    pub const CONTENT_TOO_LARGE: u16 = 311;
    /// 312: mandatory message could not be routed (soft, basic.return).
    pub const NO_ROUTE: u16 = 312;
    /// 313: immediate message had no consumer (soft, basic.return).
    pub const NO_CONSUMERS: u16 = 313;
    /// 320: the server closed the connection (shutdown, admin).
    pub const CONNECTION_FORCED: u16 = 320;
    /// 402: invalid path (hard).
    pub const INVALID_PATH: u16 = 402;
    /// 403: access refused (soft, or hard during the handshake).
    pub const ACCESS_REFUSED: u16 = 403;
    /// 404: not found (soft).
    pub const NOT_FOUND: u16 = 404;
    /// 405: resource locked, e.g. another connection's exclusive queue (soft).
    pub const RESOURCE_LOCKED: u16 = 405;
    /// 406: precondition failed (soft).
    pub const PRECONDITION_FAILED: u16 = 406;
    /// 501: malformed frame (hard).
    pub const FRAME_ERROR: u16 = 501;
    /// 502: malformed method arguments (hard).
    pub const SYNTAX_ERROR: u16 = 502;
    /// 503: invalid command or sequence (hard).
    pub const COMMAND_INVALID: u16 = 503;
    /// 504: channel error, e.g. a frame on a channel that is not open (hard).
    pub const CHANNEL_ERROR: u16 = 504;
    /// 505: a frame arrived where another kind was expected (hard).
    pub const UNEXPECTED_FRAME: u16 = 505;
    /// 506: the server ran out of a resource (hard).
    pub const RESOURCE_ERROR: u16 = 506;
    /// 530: not allowed (hard).
    pub const NOT_ALLOWED: u16 = 530;
    /// 540: not implemented (hard).
    pub const NOT_IMPLEMENTED: u16 = 540;
    /// 541: internal error (hard).
    pub const INTERNAL_ERROR: u16 = 541;

    /// The spec's name of a reply code, as clients print it (`NOT_FOUND`).
    pub fn name(code: u16) -> &'static str {
        match code {
            SUCCESS => "REPLY_SUCCESS",
            CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
            NO_ROUTE => "NO_ROUTE",
            NO_CONSUMERS => "NO_CONSUMERS",
            CONNECTION_FORCED => "CONNECTION_FORCED",
            INVALID_PATH => "INVALID_PATH",
            ACCESS_REFUSED => "ACCESS_REFUSED",
            NOT_FOUND => "NOT_FOUND",
            RESOURCE_LOCKED => "RESOURCE_LOCKED",
            PRECONDITION_FAILED => "PRECONDITION_FAILED",
            FRAME_ERROR => "FRAME_ERROR",
            SYNTAX_ERROR => "SYNTAX_ERROR",
            COMMAND_INVALID => "COMMAND_INVALID",
            CHANNEL_ERROR => "CHANNEL_ERROR",
            UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            RESOURCE_ERROR => "RESOURCE_ERROR",
            NOT_ALLOWED => "NOT_ALLOWED",
            NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            INTERNAL_ERROR => "INTERNAL_ERROR",
            _ => "UNKNOWN",
        }
    }

    /// Whether the spec classes `code` as a hard error (it closes the connection; the spec's
    /// `hard-error` constants), rather than a soft one (it closes a channel).
    pub fn is_hard_error(code: u16) -> bool {
        matches!(
            code,
            CONNECTION_FORCED
                | INVALID_PATH
                | FRAME_ERROR
                | SYNTAX_ERROR
                | COMMAND_INVALID
                | CHANNEL_ERROR
                | UNEXPECTED_FRAME
                | RESOURCE_ERROR
                | NOT_ALLOWED
                | NOT_IMPLEMENTED
                | INTERNAL_ERROR
        )
    }
}

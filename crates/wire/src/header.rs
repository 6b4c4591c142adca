//! The protocol header that opens a connection: `AMQP\x00\x00\x09\x01`.

use crate::constants::PROTOCOL_HEADER;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeader {
    /// Fewer than 8 bytes so far, all consistent with 0-9-1's header.
    Incomplete,
    /// Exactly the 0-9-1 header.
    Amqp091,
    /// Anything else (AMQP 1.0 or 0-8, HTTP, garbage): answer with the 0-9-1 header and close.
    Foreign,
}

/// Classifies the first bytes a peer sent.
pub fn parse_protocol_header(input: &[u8]) -> ProtocolHeader {
    let n = input.len().min(PROTOCOL_HEADER.len());
    if input[..n] != PROTOCOL_HEADER[..n] {
        ProtocolHeader::Foreign
    } else if n < PROTOCOL_HEADER.len() {
        ProtocolHeader::Incomplete
    } else {
        ProtocolHeader::Amqp091
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_headers() {
        assert_eq!(parse_protocol_header(b"AMQP\x00\x00\x09\x01"), ProtocolHeader::Amqp091);
        assert_eq!(parse_protocol_header(b"AMQP\x00\x00"), ProtocolHeader::Incomplete);
        assert_eq!(parse_protocol_header(b""), ProtocolHeader::Incomplete);
        assert_eq!(parse_protocol_header(b"AMQP\x00\x01\x00\x00"), ProtocolHeader::Foreign);
        assert_eq!(parse_protocol_header(b"AMQP\x03\x01\x00\x00"), ProtocolHeader::Foreign);
        assert_eq!(parse_protocol_header(b"GET / HTTP/1.1\r\n"), ProtocolHeader::Foreign);
        assert_eq!(parse_protocol_header(b"\x16\x03\x01"), ProtocolHeader::Foreign);
    }
}

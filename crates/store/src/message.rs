//! The message as it is stored and shared: exchange, routing key, properties (kept encoded, as
//! they arrived), body. The routing core keeps these behind an `Arc`; the store writes them
//! into segments.
//!
//! Properties stay in their wire encoding (a few bytes, usually) rather than as the decoded
//! struct (several hundred bytes): a queued message costs little memory, and delivering it
//! relays the bytes as received, without re-encoding.

use bytes::{Bytes, BytesMut};
use warren_wire::{BasicProperties, ShortStr};

/// One published message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: ShortStr,
    /// Routing key it was published with.
    pub routing_key: ShortStr,
    /// Properties in their wire encoding (flag word, then the present values).
    pub properties: Bytes,
    /// Whether delivery-mode is 2.
    pub persistent: bool,
    /// The `expiration` property, in milliseconds, when it is a valid one (per-message TTL).
    pub expiration: Option<u64>,
    /// The body (one slice of the read buffer when it came in one frame).
    pub body: Bytes,
}

/// The `expiration` property as milliseconds (a non-negative integer, as publishers are held
/// to); `None` without one.
fn expiration_ms(p: &BasicProperties) -> Option<u64> {
    p.expiration.as_ref().and_then(|e| e.parse().ok())
}

impl Message {
    /// A message from decoded properties, with their encoding if it is at hand (`raw`, as
    /// received) or encoded here.
    pub fn new(
        exchange: ShortStr,
        routing_key: ShortStr,
        properties: &BasicProperties,
        raw: Bytes,
        body: Bytes,
    ) -> Message {
        let properties_raw = if raw.is_empty() {
            let mut buf = BytesMut::with_capacity(16);
            // Properties that decoded from the wire always encode again.
            let _ = properties.encode(&mut buf);
            buf.freeze()
        } else {
            raw
        };
        Message {
            exchange,
            routing_key,
            properties: properties_raw,
            persistent: properties.is_persistent(),
            expiration: expiration_ms(properties),
            body,
        }
    }

    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// The properties, decoded (those of a message that was accepted always decode).
    pub fn decoded_properties(&self) -> BasicProperties {
        BasicProperties::decode(&self.properties).unwrap_or_default()
    }

    /// The segment record payload up to the body: id, exchange, routing key, properties.
    pub(crate) fn encode_head(&self, id: u64, out: &mut BytesMut) {
        out.extend_from_slice(&id.to_be_bytes());
        for s in [&self.exchange, &self.routing_key] {
            // Short strings: at most 255 bytes, guaranteed by the wire codec.
            out.extend_from_slice(&[s.len() as u8]);
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&(self.properties.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.properties);
    }

    /// Decodes a segment record payload: (id, message).
    pub(crate) fn decode(payload: &Bytes) -> Option<(u64, Message)> {
        let mut p = 0usize;
        let take = |p: &mut usize, n: usize| -> Option<Bytes> {
            let s = payload.get(*p..*p + n)?;
            *p += n;
            Some(payload.slice_ref(s))
        };
        let id = u64::from_be_bytes(take(&mut p, 8)?[..].try_into().ok()?);
        let mut strs = Vec::with_capacity(2);
        for _ in 0..2 {
            let n = *take(&mut p, 1)?.first()? as usize;
            strs.push(ShortStr::try_from(take(&mut p, n)?).ok()?);
        }
        let plen = u32::from_be_bytes(take(&mut p, 4)?[..].try_into().ok()?) as usize;
        let properties = take(&mut p, plen)?;
        let decoded = BasicProperties::decode(&properties).ok()?;
        let (persistent, expiration) = (decoded.is_persistent(), expiration_ms(&decoded));
        let body = payload.slice(p..);
        let routing_key = strs.pop()?;
        let exchange = strs.pop()?;
        Some((id, Message { exchange, routing_key, properties, persistent, expiration, body }))
    }
}

/// The `priority` property of a segment record payload (0 without one), read without
/// decoding the message.
pub(crate) fn priority_in_record(payload: &[u8]) -> u8 {
    let skip_short = |at: usize| payload.get(at).map(|n| at + 1 + usize::from(*n));
    let props = skip_short(8).and_then(skip_short).and_then(|at| {
        let len = u32::from_be_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        payload.get(at + 4..at + 4 + len)
    });
    props.and_then(BasicProperties::priority_of).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::FieldTable;

    /// A segment record's payload, byte for byte: id, exchange and routing key as short
    /// strings, the properties as in a content header (length-prefixed), then the body.
    const RECORD: &[u8] = &[
        0, 0, 0, 0, 0, 0, 0, 5, // id 5
        2, b'e', b'x', // exchange "ex"
        1, b'k', // routing key "k"
        0, 0, 0, 4, // 4 bytes of properties:
        0x18, 0x00, 2, 7, //   flags delivery-mode + priority, delivery-mode 2, priority 7
        b'h', b'i', // body
    ];

    #[test]
    fn the_record_layout_is_as_documented() {
        let props =
            BasicProperties { delivery_mode: Some(2), priority: Some(7), ..Default::default() };
        let m =
            Message::new("ex".into(), "k".into(), &props, Bytes::new(), Bytes::from_static(b"hi"));
        let mut out = BytesMut::new();
        m.encode_head(5, &mut out);
        out.extend_from_slice(&m.body);
        assert_eq!(&out[..], RECORD);
        let (id, back) = Message::decode(&Bytes::from_static(RECORD)).expect("decodes");
        assert_eq!(
            (id, &*back.exchange, &*back.routing_key, &back.body[..]),
            (5, "ex", "k", &b"hi"[..])
        );
        assert!(back.is_persistent());
        assert_eq!(priority_in_record(RECORD), 7);
    }

    #[test]
    fn records_round_trip() {
        let props = BasicProperties {
            delivery_mode: Some(2),
            headers: Some(FieldTable::new().with("k", "v")),
            ..Default::default()
        };
        let m = Message::new(
            "ex".into(),
            "a.b".into(),
            &props,
            Bytes::new(),
            Bytes::from_static(b"hello"),
        );
        assert!(m.is_persistent());
        assert_eq!(m.decoded_properties(), props);
        let mut out = BytesMut::new();
        m.encode_head(42, &mut out);
        out.extend_from_slice(&m.body);
        assert_eq!(priority_in_record(&out), 0);
        assert_eq!(Message::decode(&out.freeze()), Some((42, m)));
        let p7 = BasicProperties { priority: Some(7), ..props };
        let m = Message::new("".into(), "k".into(), &p7, Bytes::new(), Bytes::new());
        let mut out = BytesMut::new();
        m.encode_head(1, &mut out);
        assert_eq!(priority_in_record(&out), 7);
    }
}

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

    /// The segment record payload up to the body (see [`RecordHead`]).
    pub(crate) fn encode_head(&self, id: u64, out: &mut BytesMut) {
        RecordHead {
            id,
            exchange: self.exchange.as_bytes(),
            routing_key: self.routing_key.as_bytes(),
            properties: &self.properties,
            body_at: 0,
        }
        .encode(out);
    }

    /// Decodes a segment record payload: (id, message).
    pub(crate) fn decode(payload: &Bytes) -> Option<(u64, Message)> {
        let head = RecordHead::parse(payload)?;
        let exchange = ShortStr::try_from(payload.slice_ref(head.exchange)).ok()?;
        let routing_key = ShortStr::try_from(payload.slice_ref(head.routing_key)).ok()?;
        let properties = payload.slice_ref(head.properties);
        let decoded = BasicProperties::decode(&properties).ok()?;
        let (persistent, expiration) = (decoded.is_persistent(), expiration_ms(&decoded));
        let body = payload.slice(head.body_at..);
        Some((head.id, Message { exchange, routing_key, properties, persistent, expiration, body }))
    }
}

/// The head of a segment record's payload, the one place its layout is written down:
/// `[u64 id][u8 len][exchange][u8 len][routing key][u32 len][properties]`, big-endian, the
/// body after it to the end of the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHead<'a> {
    /// The message id (index entries name it).
    pub id: u64,
    pub exchange: &'a [u8],
    pub routing_key: &'a [u8],
    /// Properties as in a content header (flag word, then the present values).
    pub properties: &'a [u8],
    /// Where the body starts in the payload.
    pub body_at: usize,
}

impl<'a> RecordHead<'a> {
    /// Appends the head (`body_at` is not written: the body follows).
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.extend_from_slice(&self.id.to_be_bytes());
        for s in [self.exchange, self.routing_key] {
            // Short strings: at most 255 bytes, guaranteed by the wire codec.
            out.extend_from_slice(&[s.len() as u8]);
            out.extend_from_slice(s);
        }
        out.extend_from_slice(&(self.properties.len() as u32).to_be_bytes());
        out.extend_from_slice(self.properties);
    }

    /// Reads the head of a payload; `None` if it is cut short.
    pub(crate) fn parse(payload: &'a [u8]) -> Option<Self> {
        let mut p = 0usize;
        let mut take = |n: usize| -> Option<&'a [u8]> {
            let s = payload.get(p..p.checked_add(n)?)?;
            p += n;
            Some(s)
        };
        let id = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let exchange_len = take(1)?[0];
        let exchange = take(usize::from(exchange_len))?;
        let key_len = take(1)?[0];
        let routing_key = take(usize::from(key_len))?;
        let props_len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let properties = take(props_len)?;
        Some(RecordHead { id, exchange, routing_key, properties, body_at: p })
    }

    /// The message id of a payload, read without the rest.
    pub(crate) fn id_of(payload: &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
    }
}

/// The `priority` property of a segment record payload (0 without one), read without
/// decoding the message.
pub(crate) fn priority_in_record(payload: &[u8]) -> u8 {
    RecordHead::parse(payload).and_then(|h| BasicProperties::priority_of(h.properties)).unwrap_or(0)
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
        let head = RecordHead::parse(RECORD).expect("a whole head");
        assert_eq!(
            head,
            RecordHead {
                id: 5,
                exchange: b"ex",
                routing_key: b"k",
                properties: &[0x18, 0x00, 2, 7],
                body_at: 21,
            }
        );
        assert_eq!(RecordHead::id_of(RECORD), Some(5));
        for cut in 0..head.body_at {
            assert_eq!(RecordHead::parse(&RECORD[..cut]), None, "cut at {cut}");
        }
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

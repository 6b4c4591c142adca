//! The message as it is stored and shared: exchange, routing key, properties and body. The
//! routing core keeps these behind an `Arc`; the store writes them into segments.

use bytes::{Bytes, BytesMut};
use warren_wire::{BasicProperties, ShortStr};

/// One published message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: ShortStr,
    /// Routing key it was published with.
    pub routing_key: ShortStr,
    /// Properties as the publisher set them.
    pub properties: BasicProperties,
    /// The body (one slice of the read buffer when it came in one frame).
    pub body: Bytes,
}

impl Message {
    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        self.properties.is_persistent()
    }

    /// The segment record payload: id, exchange, routing key, properties, body.
    pub(crate) fn encode_head(&self, id: u64, out: &mut BytesMut) {
        out.extend_from_slice(&id.to_be_bytes());
        for s in [&self.exchange, &self.routing_key] {
            // Short strings: at most 255 bytes, guaranteed by the wire codec.
            out.extend_from_slice(&[s.len() as u8]);
            out.extend_from_slice(s.as_bytes());
        }
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        // Properties that decoded from the wire always encode again.
        let _ = self.properties.encode(out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
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
        let properties = BasicProperties::decode(&take(&mut p, plen)?).ok()?;
        let body = payload.slice(p..);
        let routing_key = strs.pop()?;
        let exchange = strs.pop()?;
        Some((id, Message { exchange, routing_key, properties, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::FieldTable;

    #[test]
    fn records_round_trip() {
        let m = Message {
            exchange: "ex".into(),
            routing_key: "a.b".into(),
            properties: BasicProperties {
                delivery_mode: Some(2),
                headers: Some(FieldTable::new().with("k", "v")),
                ..Default::default()
            },
            body: Bytes::from_static(b"hello"),
        };
        let mut out = BytesMut::new();
        m.encode_head(42, &mut out);
        out.extend_from_slice(&m.body);
        assert_eq!(Message::decode(&out.freeze()), Some((42, m)));
    }
}

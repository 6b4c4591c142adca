//! Content assembly: a content-bearing method, then its header, then body frames until the
//! declared size is reached. A pure state machine: frames in, a complete message out.

use bytes::{Bytes, BytesMut};
use warren_core::AmqpError;
use warren_wire::ContentHeader;
use warren_wire::method::BasicPublish;

/// A publish whose content has all arrived.
#[derive(Debug)]
pub(crate) struct Published {
    pub method: BasicPublish,
    /// The content header as decoded, with the properties both decoded and as encoded on the
    /// wire (`raw_properties`: kept with the message, relayed verbatim). Boxed as it came
    /// from the decoder, so that moving a publish around moves a pointer.
    pub header: Box<ContentHeader>,
    pub body: Bytes,
}

/// Where the channel is in receiving a message.
#[derive(Debug, Default)]
pub(crate) enum Assembly {
    /// Between messages.
    #[default]
    Idle,
    /// basic.publish seen; its content header is next.
    AwaitingHeader(BasicPublish),
    /// Header seen; body frames are next until `size` bytes arrived.
    AwaitingBody {
        method: BasicPublish,
        header: Box<ContentHeader>,
        size: u64,
        /// The body frames so far, kept as they came (a one-frame body is never copied; a
        /// longer one is joined once, when complete). Nothing is reserved for the size the
        /// peer declared before its bytes arrive.
        parts: Vec<Bytes>,
        /// Bytes in `parts`.
        have: u64,
    },
}

impl Assembly {
    /// Whether a method may arrive now (no content is half received).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self, Assembly::Idle)
    }

    /// basic.publish arrived.
    pub(crate) fn start(&mut self, method: BasicPublish) {
        *self = Assembly::AwaitingHeader(method);
    }

    /// A content header arrived. `max_size` bounds the body.
    pub(crate) fn header(
        &mut self,
        header: Box<ContentHeader>,
        max_size: u64,
    ) -> Result<Option<Published>, AmqpError> {
        let Assembly::AwaitingHeader(method) = std::mem::take(self) else {
            return Err(AmqpError::unexpected_frame("content header frame without a method"));
        };
        if header.class_id != 60 {
            return Err(AmqpError::unexpected_frame(format!(
                "content header for class {} on a basic.publish",
                header.class_id
            )));
        }
        if header.body_size > max_size {
            return Err(AmqpError::precondition_failed(format!(
                "message size {} is larger than configured max size {max_size}",
                header.body_size
            )));
        }
        if header.body_size == 0 {
            return Ok(Some(Published { method, header, body: Bytes::new() }));
        }
        *self = Assembly::AwaitingBody {
            method,
            size: header.body_size,
            header,
            parts: Vec::new(),
            have: 0,
        };
        Ok(None)
    }

    /// A body frame arrived.
    pub(crate) fn body(&mut self, payload: Bytes) -> Result<Option<Published>, AmqpError> {
        let Assembly::AwaitingBody { size, parts, have, .. } = self else {
            return Err(AmqpError::unexpected_frame("content body frame without a content header"));
        };
        if *have + payload.len() as u64 > *size {
            return Err(AmqpError::unexpected_frame(format!(
                "content body exceeds its declared size of {size} bytes"
            )));
        }
        *have += payload.len() as u64;
        parts.push(payload);
        if *have < *size {
            return Ok(None);
        }
        let Assembly::AwaitingBody { method, header, mut parts, size, .. } = std::mem::take(self)
        else {
            return Ok(None);
        };
        let body = if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            let mut joined = BytesMut::with_capacity(size as usize);
            for p in &parts {
                joined.extend_from_slice(p);
            }
            joined.freeze()
        };
        Ok(Some(Published { method, header, body }))
    }

    /// Bytes of body held while a message is incomplete.
    #[cfg(test)]
    fn held(&self) -> usize {
        match self {
            Assembly::AwaitingBody { parts, .. } => parts.iter().map(Bytes::len).sum(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64) -> Box<ContentHeader> {
        Box::new(ContentHeader { class_id: 60, body_size: size, ..Default::default() })
    }

    #[test]
    fn one_frame_body_is_not_copied() {
        let mut a = Assembly::default();
        a.start(BasicPublish::default());
        assert!(a.header(header(3), 10).unwrap().is_none());
        let body = Bytes::from_static(b"abc");
        let p = a.body(body.clone()).unwrap().unwrap();
        assert_eq!(p.body.as_ptr(), body.as_ptr());
        assert!(a.is_idle());
    }

    #[test]
    fn many_frames_are_joined() {
        let mut a = Assembly::default();
        a.start(BasicPublish::default());
        a.header(header(5), 10).unwrap();
        assert!(a.body(Bytes::from_static(b"ab")).unwrap().is_none());
        assert!(a.body(Bytes::from_static(b"cd")).unwrap().is_none());
        assert_eq!(&a.body(Bytes::from_static(b"e")).unwrap().unwrap().body[..], b"abcde");
    }

    #[test]
    fn a_huge_declared_size_reserves_nothing_until_bytes_arrive() {
        let mut a = Assembly::default();
        a.start(BasicPublish::default());
        a.header(header(100 << 20), 128 << 20).unwrap();
        assert!(a.body(Bytes::from_static(b"ab")).unwrap().is_none());
        assert!(a.body(Bytes::from_static(b"cd")).unwrap().is_none());
        assert_eq!(a.held(), 4);
    }

    #[test]
    fn empty_body_completes_at_the_header() {
        let mut a = Assembly::default();
        a.start(BasicPublish::default());
        assert!(a.header(header(0), 10).unwrap().is_some());
    }

    #[test]
    fn out_of_order_and_oversized_content_is_refused() {
        let mut a = Assembly::default();
        assert_eq!(a.header(header(1), 10).unwrap_err().code, 505);
        assert_eq!(a.body(Bytes::from_static(b"x")).unwrap_err().code, 505);
        a.start(BasicPublish::default());
        assert_eq!(a.header(header(11), 10).unwrap_err().code, 406);
        a.start(BasicPublish::default());
        a.header(header(2), 10).unwrap();
        assert_eq!(a.body(Bytes::from_static(b"xyz")).unwrap_err().code, 505);
    }
}

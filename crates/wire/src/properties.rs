//! The content header: class, weight, body size and the 14 basic properties behind a 16-bit
//! flag word (bit 15 = content-type ... bit 2 = cluster-id; bit 0 = another flag word follows).

use bytes::{Bytes, BytesMut};

use crate::error::WireError;
use crate::read::Reader;
use crate::value::{FieldTable, ShortStr};
use crate::write::Writer;

/// The basic class's message properties. Absent properties are `None` and take no bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasicProperties {
    /// MIME content type.
    pub content_type: Option<ShortStr>,
    /// MIME content encoding.
    pub content_encoding: Option<ShortStr>,
    /// Application headers (also what the headers exchange matches on).
    pub headers: Option<FieldTable>,
    /// 1 = transient, 2 = persistent.
    pub delivery_mode: Option<u8>,
    /// Priority 0-9.
    pub priority: Option<u8>,
    /// Correlation id (RPC).
    pub correlation_id: Option<ShortStr>,
    /// Reply-to queue (RPC).
    pub reply_to: Option<ShortStr>,
    /// Per-message TTL in milliseconds, as text.
    pub expiration: Option<ShortStr>,
    /// Application message id.
    pub message_id: Option<ShortStr>,
    /// Timestamp, seconds since the epoch.
    pub timestamp: Option<u64>,
    /// Message type name (`type` in the spec).
    pub kind: Option<ShortStr>,
    /// Creating user id.
    pub user_id: Option<ShortStr>,
    /// Creating application id.
    pub app_id: Option<ShortStr>,
    /// Deprecated cluster id.
    pub cluster_id: Option<ShortStr>,
}

/// Property flag bits, from content-type (bit 15) down to cluster-id (bit 2).
mod flag {
    pub const CONTENT_TYPE: u16 = 1 << 15;
    pub const CONTENT_ENCODING: u16 = 1 << 14;
    pub const HEADERS: u16 = 1 << 13;
    pub const DELIVERY_MODE: u16 = 1 << 12;
    pub const PRIORITY: u16 = 1 << 11;
    pub const CORRELATION_ID: u16 = 1 << 10;
    pub const REPLY_TO: u16 = 1 << 9;
    pub const EXPIRATION: u16 = 1 << 8;
    pub const MESSAGE_ID: u16 = 1 << 7;
    pub const TIMESTAMP: u16 = 1 << 6;
    pub const TYPE: u16 = 1 << 5;
    pub const USER_ID: u16 = 1 << 4;
    pub const APP_ID: u16 = 1 << 3;
    pub const CLUSTER_ID: u16 = 1 << 2;
    pub const CONTINUATION: u16 = 1;
    /// Bit 1 names no basic property.
    pub const UNUSED: u16 = 1 << 1;
}

impl BasicProperties {
    /// Whether delivery-mode says persistent (2).
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }

    fn flags(&self) -> u16 {
        let mut f = 0;
        let mut set = |present: bool, bit: u16| {
            if present {
                f |= bit;
            }
        };
        set(self.content_type.is_some(), flag::CONTENT_TYPE);
        set(self.content_encoding.is_some(), flag::CONTENT_ENCODING);
        set(self.headers.is_some(), flag::HEADERS);
        set(self.delivery_mode.is_some(), flag::DELIVERY_MODE);
        set(self.priority.is_some(), flag::PRIORITY);
        set(self.correlation_id.is_some(), flag::CORRELATION_ID);
        set(self.reply_to.is_some(), flag::REPLY_TO);
        set(self.expiration.is_some(), flag::EXPIRATION);
        set(self.message_id.is_some(), flag::MESSAGE_ID);
        set(self.timestamp.is_some(), flag::TIMESTAMP);
        set(self.kind.is_some(), flag::TYPE);
        set(self.user_id.is_some(), flag::USER_ID);
        set(self.app_id.is_some(), flag::APP_ID);
        set(self.cluster_id.is_some(), flag::CLUSTER_ID);
        f
    }

    /// Appends the flag word and the present properties, as in a content header (how the
    /// store keeps them on disk).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), WireError> {
        self.write(&mut Writer::new(buf))
    }

    /// Decodes what [`encode`](Self::encode) wrote; `bytes` must hold exactly that.
    pub fn decode(bytes: &Bytes) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes, bytes);
        let p = Self::read(&mut r)?;
        r.finish("basic properties")?;
        Ok(p)
    }

    /// The `priority` property of encoded properties (as [`encode`](Self::encode) writes
    /// them), read without decoding the rest: `None` if absent or malformed. Recovery reads
    /// it for every stored message of a priority queue.
    pub fn priority_of(encoded: &[u8]) -> Option<u8> {
        let word = |at: usize| encoded.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let f = word(0)?;
        if f & flag::PRIORITY == 0 {
            return None;
        }
        let mut at = 2;
        let mut more = f & flag::CONTINUATION != 0;
        while more {
            more = word(at)? & flag::CONTINUATION != 0;
            at += 2;
        }
        for (bit, len_bytes) in
            [(flag::CONTENT_TYPE, 1), (flag::CONTENT_ENCODING, 1), (flag::HEADERS, 4)]
        {
            if f & bit != 0 {
                let len = encoded.get(at..at + len_bytes)?;
                let len = len.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
                at += len_bytes + len;
            }
        }
        if f & flag::DELIVERY_MODE != 0 {
            at += 1;
        }
        encoded.get(at).copied()
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let f = r.short()?;
        if f & flag::UNUSED != 0 {
            return Err(WireError::BadPropertyFlags(f));
        }
        // Further flag words may follow; basic defines no property there, so any set bit
        // other than the continuation is an error.
        let mut more = f & flag::CONTINUATION != 0;
        while more {
            let g = r.short()?;
            if g & !flag::CONTINUATION != 0 {
                return Err(WireError::BadPropertyFlags(g));
            }
            more = g & flag::CONTINUATION != 0;
        }
        let has = |bit: u16| f & bit != 0;
        let mut p = BasicProperties::default();
        if has(flag::CONTENT_TYPE) {
            p.content_type = Some(r.shortstr()?);
        }
        if has(flag::CONTENT_ENCODING) {
            p.content_encoding = Some(r.shortstr()?);
        }
        if has(flag::HEADERS) {
            p.headers = Some(r.table()?);
        }
        if has(flag::DELIVERY_MODE) {
            p.delivery_mode = Some(r.octet()?);
        }
        if has(flag::PRIORITY) {
            p.priority = Some(r.octet()?);
        }
        if has(flag::CORRELATION_ID) {
            p.correlation_id = Some(r.shortstr()?);
        }
        if has(flag::REPLY_TO) {
            p.reply_to = Some(r.shortstr()?);
        }
        if has(flag::EXPIRATION) {
            p.expiration = Some(r.shortstr()?);
        }
        if has(flag::MESSAGE_ID) {
            p.message_id = Some(r.shortstr()?);
        }
        if has(flag::TIMESTAMP) {
            p.timestamp = Some(r.longlong()?);
        }
        if has(flag::TYPE) {
            p.kind = Some(r.shortstr()?);
        }
        if has(flag::USER_ID) {
            p.user_id = Some(r.shortstr()?);
        }
        if has(flag::APP_ID) {
            p.app_id = Some(r.shortstr()?);
        }
        if has(flag::CLUSTER_ID) {
            p.cluster_id = Some(r.shortstr()?);
        }
        Ok(p)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.short(self.flags());
        let strs = |w: &mut Writer<'_>, s: &Option<ShortStr>| match s {
            Some(s) => w.shortstr(s),
            None => Ok(()),
        };
        strs(w, &self.content_type)?;
        strs(w, &self.content_encoding)?;
        if let Some(h) = &self.headers {
            w.table(h)?;
        }
        if let Some(v) = self.delivery_mode {
            w.octet(v);
        }
        if let Some(v) = self.priority {
            w.octet(v);
        }
        strs(w, &self.correlation_id)?;
        strs(w, &self.reply_to)?;
        strs(w, &self.expiration)?;
        strs(w, &self.message_id)?;
        if let Some(v) = self.timestamp {
            w.longlong(v);
        }
        strs(w, &self.kind)?;
        strs(w, &self.user_id)?;
        strs(w, &self.app_id)?;
        strs(w, &self.cluster_id)
    }
}

/// A content header frame's payload.
#[derive(Debug, Clone, Default)]
pub struct ContentHeader {
    /// Class of the method the content belongs to (60 for basic).
    pub class_id: u16,
    /// Unused, always 0.
    pub weight: u16,
    /// Total size of the body frames that follow.
    pub body_size: u64,
    /// The properties.
    pub properties: BasicProperties,
    /// The encoded properties (flag words and values) exactly as received, sharing the frame's
    /// buffer; empty for a header built locally. A broker keeps these few bytes per message
    /// instead of the decoded struct, and relays them verbatim.
    pub raw_properties: Bytes,
}

/// Headers are equal when their decoded contents are: `raw_properties` is a cache of the
/// same data (present after decoding, absent when built locally).
impl PartialEq for ContentHeader {
    fn eq(&self, other: &Self) -> bool {
        (self.class_id, self.weight, self.body_size)
            == (other.class_id, other.weight, other.body_size)
            && self.properties == other.properties
    }
}

impl ContentHeader {
    /// Decodes a content header payload that lies inside `root`.
    pub fn decode(root: &Bytes, payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(root, payload);
        let class_id = r.short()?;
        let weight = r.short()?;
        let body_size = r.longlong()?;
        let at = payload.len() - r.remaining();
        let properties = BasicProperties::read(&mut r)?;
        r.finish("content header")?;
        let raw_properties = root.slice_ref(&payload[at..]);
        Ok(ContentHeader { class_id, weight, body_size, properties, raw_properties })
    }

    /// Appends the payload of this header.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), WireError> {
        write_header(buf, self.class_id, self.weight, self.body_size, &self.properties)
    }
}

/// Appends a content header payload from its parts (no `ContentHeader` needs building, so
/// relaying a message's properties clones nothing).
pub(crate) fn write_header(
    buf: &mut BytesMut,
    class_id: u16,
    weight: u16,
    body_size: u64,
    properties: &BasicProperties,
) -> Result<(), WireError> {
    let mut w = Writer::new(buf);
    w.short(class_id);
    w.short(weight);
    w.longlong(body_size);
    properties.write(&mut w)
}

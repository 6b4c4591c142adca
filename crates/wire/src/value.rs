//! Field tables, arrays and values as RabbitMQ reads them.
//!
//! RabbitMQ's type letters differ from the 0-9-1 spec's own table (see RabbitMQ's errata):
//! `s` is a signed 16-bit integer, `u` unsigned 16, `I` signed 32, `i` unsigned 32, `l` signed 64,
//! `L` also signed 64 (RabbitMQ reads both the same), `b` signed 8, `B` unsigned 8, `x` a byte
//! array, `V` void. The spec's `U` (signed 16) is accepted as well. Each letter has its own
//! variant so that a table is re-encoded byte for byte as it was received.
//!
//! Tables keep their entries in wire order in a `Vec`: tables are small, order matters for a
//! byte-exact relay, and a linear lookup beats hashing at these sizes.

use bytes::Bytes;
use bytestring::ByteString;

/// A short string (at most 255 bytes, UTF-8), sharing the frame's buffer when decoded.
pub type ShortStr = ByteString;
/// A long string: any bytes, sharing the frame's buffer when decoded.
pub type LongStr = Bytes;
/// A field array.
pub type FieldArray = Vec<FieldValue>;

/// A decimal: `value / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value.
    pub value: u32,
}

/// One value of a field table or array, tagged with the type letter it travels under.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// `t`: boolean.
    Bool(bool),
    /// `b`: signed 8-bit.
    I8(i8),
    /// `B`: unsigned 8-bit.
    U8(u8),
    /// `s`: signed 16-bit (RabbitMQ).
    I16(i16),
    /// `U`: signed 16-bit (the spec's letter; RabbitMQ does not send it).
    I16U(i16),
    /// `u`: unsigned 16-bit.
    U16(u16),
    /// `I`: signed 32-bit.
    I32(i32),
    /// `i`: unsigned 32-bit.
    U32(u32),
    /// `l`: signed 64-bit.
    I64(i64),
    /// `L`: 64-bit, read signed as RabbitMQ does.
    I64L(i64),
    /// `f`: 32-bit float.
    F32(f32),
    /// `d`: 64-bit float.
    F64(f64),
    /// `D`: decimal.
    Decimal(Decimal),
    /// `S`: long string (bytes, commonly UTF-8).
    LongStr(LongStr),
    /// `x`: byte array.
    Bytes(Bytes),
    /// `A`: array.
    Array(FieldArray),
    /// `T`: timestamp, seconds since the epoch.
    Timestamp(u64),
    /// `F`: nested table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
}

impl FieldValue {
    /// The type letter this value is encoded with.
    pub fn type_letter(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::I16U(_) => b'U',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::I64L(_) => b'L',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::Bytes(_) => b'x',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
        }
    }

    /// The value as a signed integer, for any integer letter (how arguments like
    /// `x-max-length` are read, whatever width the client chose).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => v.into(),
            FieldValue::U8(v) => v.into(),
            FieldValue::I16(v) | FieldValue::I16U(v) => v.into(),
            FieldValue::U16(v) => v.into(),
            FieldValue::I32(v) => v.into(),
            FieldValue::U32(v) => v.into(),
            FieldValue::I64(v) | FieldValue::I64L(v) => v,
            FieldValue::Timestamp(v) => i64::try_from(v).ok()?,
            _ => return None,
        })
    }

    /// The value as text, for long strings that hold UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The Erlang type atom RabbitMQ decodes this value's type letter to
    /// (`rabbit_binary_parser`), as its error texts name it. `U`, which RabbitMQ does not
    /// read, is taken as the signed 16-bit `short` it stands for.
    pub fn rabbit_type(&self) -> &'static str {
        match self {
            FieldValue::Bool(_) => "bool",
            FieldValue::I8(_) => "byte",
            FieldValue::U8(_) => "unsignedbyte",
            FieldValue::I16(_) | FieldValue::I16U(_) => "short",
            FieldValue::U16(_) => "unsignedshort",
            FieldValue::I32(_) => "signedint",
            FieldValue::U32(_) => "unsignedint",
            FieldValue::I64(_) | FieldValue::I64L(_) => "long",
            FieldValue::F32(_) => "float",
            FieldValue::F64(_) => "double",
            FieldValue::Decimal(_) => "decimal",
            FieldValue::LongStr(_) => "longstr",
            FieldValue::Bytes(_) => "binary",
            FieldValue::Array(_) => "array",
            FieldValue::Timestamp(_) => "timestamp",
            FieldValue::Table(_) => "table",
            FieldValue::Void => "void",
        }
    }

    /// The value as a boolean, for `t`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl From<&str> for FieldValue {
    fn from(s: &str) -> Self {
        FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<bool> for FieldValue {
    fn from(b: bool) -> Self {
        FieldValue::Bool(b)
    }
}

impl From<FieldTable> for FieldValue {
    fn from(t: FieldTable) -> Self {
        FieldValue::Table(t)
    }
}

/// A field table: named values in wire order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable(pub Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    /// An empty table.
    pub fn new() -> Self {
        FieldTable(Vec::new())
    }

    /// The first value under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key`, replacing an existing entry in place or appending.
    pub fn insert(&mut self, key: impl Into<ShortStr>, value: impl Into<FieldValue>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, key: impl Into<ShortStr>, value: impl Into<FieldValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }
}

impl FieldTable {
    /// Appends the table as on the wire (32-bit length, then entries).
    pub fn encode(&self, buf: &mut bytes::BytesMut) -> Result<(), crate::WireError> {
        crate::write::Writer::new(buf).table(self)
    }

    /// Decodes a table written by [`encode`](Self::encode); `bytes` must hold exactly that.
    pub fn decode(bytes: &Bytes) -> Result<FieldTable, crate::WireError> {
        let mut r = crate::read::Reader::new(bytes, bytes);
        let table = r.table()?;
        r.finish("field table")?;
        Ok(table)
    }

    /// Decodes a table body given without its 4-byte length prefix (as AMQPLAIN's response
    /// carries it).
    pub fn decode_body(body: &Bytes) -> Result<FieldTable, crate::WireError> {
        let mut framed = bytes::BytesMut::with_capacity(body.len() + 4);
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(body);
        let root = framed.freeze();
        let mut r = crate::read::Reader::new(&root, &root);
        let table = r.table()?;
        r.finish("field table")?;
        Ok(table)
    }
}

/// Tables are compared as RabbitMQ compares declare arguments: same entries, any order.
pub fn tables_equivalent(a: &FieldTable, b: &FieldTable) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// Proptest strategies for values and method arguments (tests only).
#[cfg(test)]
pub(crate) mod arbitrary {
    use super::*;
    use proptest::prelude::*;

    /// A strategy for every type that can be a method argument.
    pub(crate) trait ArbArg: Sized {
        fn arb() -> BoxedStrategy<Self>;
    }

    macro_rules! arb_any {
        ($($t:ty),*) => {$(
            impl ArbArg for $t {
                fn arb() -> BoxedStrategy<Self> {
                    any::<$t>().boxed()
                }
            }
        )*};
    }
    arb_any!(u8, u16, u32, u64, bool);

    impl ArbArg for ShortStr {
        fn arb() -> BoxedStrategy<Self> {
            short_str().boxed()
        }
    }

    impl ArbArg for LongStr {
        fn arb() -> BoxedStrategy<Self> {
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from).boxed()
        }
    }

    impl ArbArg for FieldTable {
        fn arb() -> BoxedStrategy<Self> {
            table().boxed()
        }
    }

    /// Short strings up to 255 bytes of UTF-8, non-ASCII included.
    pub(crate) fn short_str() -> impl Strategy<Value = ShortStr> {
        "[a-zA-Z0-9._\\-é€😀]{0,60}".prop_map(ShortStr::from)
    }

    fn leaf() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<i16>().prop_map(FieldValue::I16U),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            any::<i64>().prop_map(FieldValue::I64L),
            // NaN != NaN would fail equality, not the codec: compare finite floats.
            (-1e30f32..1e30f32).prop_map(FieldValue::F32),
            (-1e300f64..1e300f64).prop_map(FieldValue::F64),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
            ".{0,40}".prop_map(|s: String| FieldValue::LongStr(Bytes::from(s))),
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|v| FieldValue::Bytes(Bytes::from(v))),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
        ]
    }

    /// Any field value, nested tables and arrays included.
    pub(crate) fn value() -> impl Strategy<Value = FieldValue> {
        leaf().prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
                proptest::collection::vec((short_str(), inner), 0..6)
                    .prop_map(|e| FieldValue::Table(FieldTable(e))),
            ]
        })
    }

    /// Any field table.
    pub(crate) fn table() -> impl Strategy<Value = FieldTable> {
        proptest::collection::vec((short_str(), value()), 0..8).prop_map(FieldTable)
    }
}

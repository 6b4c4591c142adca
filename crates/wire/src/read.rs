//! Decoding of primitive values, bit fields and field tables from a frame payload.
//!
//! Numbers are read with nom's big-endian parsers. Strings and byte arrays come out as slices of
//! the frame's `Bytes` (no copy): the reader keeps the frame it reads from as `root`.

use bytes::Bytes;
use bytestring::ByteString;
use nom::IResult;
use nom::bytes::complete::take;
use nom::number::complete::{
    be_f32, be_f64, be_i8, be_i16, be_i32, be_i64, be_u8, be_u16, be_u32, be_u64,
};

use crate::error::WireError;
use crate::value::{Decimal, FieldArray, FieldTable, FieldValue};

/// Nesting deeper than this is refused: it bounds recursion on hostile input.
const MAX_DEPTH: usize = 64;

/// Reads values off a payload that is a slice of `root`.
pub(crate) struct Reader<'a> {
    root: &'a Bytes,
    input: &'a [u8],
    /// The octet bits are being taken from and the index of the next bit, while consecutive bit
    /// fields are read.
    bits: Option<(u8, u8)>,
}

type Parsed<'a, T> = IResult<&'a [u8], T, ()>;

impl<'a> Reader<'a> {
    /// A reader over `input`, which must lie inside `root`.
    pub(crate) fn new(root: &'a Bytes, input: &'a [u8]) -> Self {
        Reader { root, input, bits: None }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.input.len()
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), WireError> {
        match self.input.len() {
            0 => Ok(()),
            n => Err(WireError::TrailingBytes(n, what)),
        }
    }

    fn run<T>(
        &mut self,
        what: &'static str,
        parser: impl FnOnce(&'a [u8]) -> Parsed<'a, T>,
    ) -> Result<T, WireError> {
        self.bits = None;
        let (rest, value) = parser(self.input).map_err(|_| WireError::Truncated(what))?;
        self.input = rest;
        Ok(value)
    }

    pub(crate) fn octet(&mut self) -> Result<u8, WireError> {
        self.run("octet", be_u8)
    }

    pub(crate) fn short(&mut self) -> Result<u16, WireError> {
        self.run("short", be_u16)
    }

    pub(crate) fn long(&mut self) -> Result<u32, WireError> {
        self.run("long", be_u32)
    }

    pub(crate) fn longlong(&mut self) -> Result<u64, WireError> {
        self.run("longlong", be_u64)
    }

    /// One bit of a run of packed bit fields (least significant bit first).
    pub(crate) fn bit(&mut self) -> Result<bool, WireError> {
        let (byte, idx) = match self.bits {
            Some((byte, idx)) if idx < 8 => (byte, idx),
            _ => (self.octet()?, 0),
        };
        self.bits = Some((byte, idx + 1));
        Ok(byte & (1 << idx) != 0)
    }

    fn slice(&mut self, len: usize, what: &'static str) -> Result<Bytes, WireError> {
        let part = self.run(what, |i| take(len)(i))?;
        Ok(self.root.slice_ref(part))
    }

    pub(crate) fn shortstr(&mut self) -> Result<ByteString, WireError> {
        let len = self.octet()?;
        let bytes = self.slice(len.into(), "short string")?;
        ByteString::try_from(bytes).map_err(|_| WireError::InvalidUtf8)
    }

    pub(crate) fn longstr(&mut self) -> Result<Bytes, WireError> {
        let len = self.long()?;
        self.slice(len as usize, "long string")
    }

    pub(crate) fn table(&mut self) -> Result<FieldTable, WireError> {
        self.table_at(0)
    }

    fn nested(&mut self, depth: usize, what: &'static str) -> Result<Reader<'a>, WireError> {
        if depth >= MAX_DEPTH {
            return Err(WireError::Truncated("field table nesting (too deep)"));
        }
        let len = self.long()?;
        let inner = self.run(what, |i| take(len)(i))?;
        Ok(Reader::new(self.root, inner))
    }

    fn table_at(&mut self, depth: usize) -> Result<FieldTable, WireError> {
        let mut inner = self.nested(depth, "field table")?;
        let mut entries = Vec::new();
        while inner.remaining() > 0 {
            let key = inner.shortstr()?;
            let value = inner.value(depth)?;
            entries.push((key, value));
        }
        Ok(FieldTable(entries))
    }

    fn array_at(&mut self, depth: usize) -> Result<FieldArray, WireError> {
        let mut inner = self.nested(depth, "field array")?;
        let mut values = Vec::new();
        while inner.remaining() > 0 {
            values.push(inner.value(depth)?);
        }
        Ok(values)
    }

    fn value(&mut self, depth: usize) -> Result<FieldValue, WireError> {
        let letter = self.octet()?;
        Ok(match letter {
            b't' => FieldValue::Bool(self.octet()? != 0),
            b'b' => FieldValue::I8(self.run("field value", be_i8)?),
            b'B' => FieldValue::U8(self.octet()?),
            b's' => FieldValue::I16(self.run("field value", be_i16)?),
            b'U' => FieldValue::I16U(self.run("field value", be_i16)?),
            b'u' => FieldValue::U16(self.short()?),
            b'I' => FieldValue::I32(self.run("field value", be_i32)?),
            b'i' => FieldValue::U32(self.long()?),
            b'l' => FieldValue::I64(self.run("field value", be_i64)?),
            b'L' => FieldValue::I64L(self.run("field value", be_i64)?),
            b'f' => FieldValue::F32(self.run("field value", be_f32)?),
            b'd' => FieldValue::F64(self.run("field value", be_f64)?),
            b'D' => FieldValue::Decimal(Decimal { scale: self.octet()?, value: self.long()? }),
            b'S' => FieldValue::LongStr(self.longstr()?),
            b'x' => FieldValue::Bytes(self.longstr()?),
            b'A' => FieldValue::Array(self.array_at(depth + 1)?),
            b'T' => FieldValue::Timestamp(self.longlong()?),
            b'F' => FieldValue::Table(self.table_at(depth + 1)?),
            b'V' => FieldValue::Void,
            other => return Err(WireError::UnknownFieldType(other as char)),
        })
    }
}

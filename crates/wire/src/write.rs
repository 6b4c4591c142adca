//! Encoding of primitive values, packed bit fields and field tables into a `BytesMut`.

use bytes::{BufMut, BytesMut};

use crate::error::WireError;
use crate::value::{FieldTable, FieldValue};

/// Appends values to a buffer, packing consecutive bits into shared octets.
pub(crate) struct Writer<'a> {
    buf: &'a mut BytesMut,
    /// Position of the octet the last bit went into and the index of the next bit, while
    /// consecutive bit fields are written.
    bits: Option<(usize, u8)>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut BytesMut) -> Self {
        Writer { buf, bits: None }
    }

    pub(crate) fn octet(&mut self, v: u8) {
        self.bits = None;
        self.buf.put_u8(v);
    }

    pub(crate) fn short(&mut self, v: u16) {
        self.bits = None;
        self.buf.put_u16(v);
    }

    pub(crate) fn long(&mut self, v: u32) {
        self.bits = None;
        self.buf.put_u32(v);
    }

    pub(crate) fn longlong(&mut self, v: u64) {
        self.bits = None;
        self.buf.put_u64(v);
    }

    pub(crate) fn bit(&mut self, v: bool) {
        let (pos, idx) = match self.bits {
            Some((pos, idx)) if idx < 8 => (pos, idx),
            _ => {
                self.buf.put_u8(0);
                (self.buf.len() - 1, 0)
            }
        };
        if v {
            self.buf[pos] |= 1 << idx;
        }
        self.bits = Some((pos, idx + 1));
    }

    pub(crate) fn shortstr(&mut self, s: &str) -> Result<(), WireError> {
        let len = u8::try_from(s.len()).map_err(|_| WireError::ShortStrTooLong(s.len()))?;
        self.octet(len);
        self.buf.put_slice(s.as_bytes());
        Ok(())
    }

    pub(crate) fn longstr(&mut self, s: &[u8]) -> Result<(), WireError> {
        let len = u32::try_from(s.len()).map_err(|_| WireError::TooLong(s.len()))?;
        self.long(len);
        self.buf.put_slice(s);
        Ok(())
    }

    /// Writes a 32-bit length placeholder, runs `body`, then fills the length in.
    fn sized(
        &mut self,
        body: impl FnOnce(&mut Self) -> Result<(), WireError>,
    ) -> Result<(), WireError> {
        self.long(0);
        let start = self.buf.len();
        body(self)?;
        let len = self.buf.len() - start;
        let len32 = u32::try_from(len).map_err(|_| WireError::TooLong(len))?;
        self.buf[start - 4..start].copy_from_slice(&len32.to_be_bytes());
        self.bits = None;
        Ok(())
    }

    pub(crate) fn table(&mut self, t: &FieldTable) -> Result<(), WireError> {
        self.sized(|w| {
            for (k, v) in &t.0 {
                w.shortstr(k)?;
                w.value(v)?;
            }
            Ok(())
        })
    }

    fn value(&mut self, v: &FieldValue) -> Result<(), WireError> {
        self.octet(v.type_letter());
        match v {
            FieldValue::Bool(b) => self.octet(u8::from(*b)),
            FieldValue::I8(n) => self.buf.put_i8(*n),
            FieldValue::U8(n) => self.octet(*n),
            FieldValue::I16(n) | FieldValue::I16U(n) => self.buf.put_i16(*n),
            FieldValue::U16(n) => self.short(*n),
            FieldValue::I32(n) => self.buf.put_i32(*n),
            FieldValue::U32(n) => self.long(*n),
            FieldValue::I64(n) | FieldValue::I64L(n) => self.buf.put_i64(*n),
            FieldValue::F32(n) => self.buf.put_f32(*n),
            FieldValue::F64(n) => self.buf.put_f64(*n),
            FieldValue::Decimal(d) => {
                self.octet(d.scale);
                self.long(d.value);
            }
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => self.longstr(b)?,
            FieldValue::Array(a) => self.sized(|w| a.iter().try_for_each(|v| w.value(v)))?,
            FieldValue::Timestamp(n) => self.longlong(*n),
            FieldValue::Table(t) => self.table(t)?,
            FieldValue::Void => {}
        }
        Ok(())
    }
}

//! A connection's pending output: frames encoded into one buffer, with large bodies kept by
//! reference between them. A body of [`SHARE_MIN`] bytes or more is a slice of the `Bytes` it
//! arrived in and leaves with a vectored write, so it is never copied on its way through.
//! The buffer is sized by how much a turn writes (4 to 64 KiB), and a connection that writes
//! little holds none between turns.

use std::ops::{Deref, DerefMut, Range};

use bytes::{Bytes, BytesMut};
use warren_wire::FrameSink;

/// Body parts at least this large are written from their own buffer; smaller ones are
/// cheaper to copy than to give their own slot in the write.
const SHARE_MIN: usize = 4096;

/// Smallest and largest buffer allocated for a turn's output.
const OUT_MIN: usize = 4 * 1024;
const OUT_MAX: usize = 64 * 1024;

/// Spare room below which the buffer is topped up before a frame is written.
const LOW: usize = 512;

/// Output of one loop turn.
#[derive(Debug)]
pub(crate) struct Out {
    buf: BytesMut,
    /// Earlier parts of the output when a shared body cut it; `buf` follows them.
    chunks: Vec<Bytes>,
    /// Size of the next buffer allocated.
    size: usize,
}

impl Default for Out {
    fn default() -> Self {
        Out { buf: BytesMut::new(), chunks: Vec::new(), size: OUT_MIN }
    }
}

/// What a loop turn hands the writer: one buffer, or buffers to write in order.
#[derive(Debug)]
pub(crate) enum Batch {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Out {
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.chunks.is_empty()
    }

    /// Takes everything queued, leaving the output empty. The buffer's spare room is kept
    /// for the next turn while turns write a lot, and let go when they write little.
    pub(crate) fn take(&mut self) -> Batch {
        let written = self.buf.len();
        let batch = if self.chunks.is_empty() {
            Batch::One(self.buf.split().freeze())
        } else {
            if !self.buf.is_empty() {
                self.chunks.push(self.buf.split().freeze());
            }
            Batch::Many(std::mem::take(&mut self.chunks))
        };
        if written >= self.size / 2 {
            self.size = (self.size * 2).min(OUT_MAX);
        } else if written < self.size / 8 {
            self.size = (self.size / 2).max(OUT_MIN);
        }
        if self.size == OUT_MIN && written < OUT_MIN / 4 {
            self.buf = BytesMut::new();
        }
        batch
    }

    /// The buffer, with room for at least a small frame.
    fn room(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < LOW {
            if self.buf.is_empty() {
                self.buf = BytesMut::with_capacity(self.size);
            } else {
                self.buf.reserve(self.size);
            }
        }
        &mut self.buf
    }
}

impl Deref for Out {
    type Target = BytesMut;

    fn deref(&self) -> &BytesMut {
        &self.buf
    }
}

impl DerefMut for Out {
    fn deref_mut(&mut self) -> &mut BytesMut {
        self.room()
    }
}

impl FrameSink for Out {
    fn buf(&mut self) -> &mut BytesMut {
        self.room()
    }

    fn body(&mut self, body: &Bytes, range: Range<usize>) {
        if range.len() < SHARE_MIN {
            self.buf.extend_from_slice(&body[range]);
            return;
        }
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
        self.chunks.push(body.slice(range));
    }
}

impl Batch {
    /// Total bytes in the batch.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            Batch::One(b) => b.len(),
            Batch::Many(chunks) => chunks.iter().map(Bytes::len).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::method::BasicDeliver;
    use warren_wire::{Method, encode_content_raw};

    fn deliver(out: &mut impl FrameSink, body: &Bytes) {
        let m = Method::from(BasicDeliver { delivery_tag: 1, ..Default::default() });
        encode_content_raw(out, 1, &m, b"\x00\x00", body, 131_072).unwrap();
    }

    fn concat(batch: Batch) -> Vec<u8> {
        match batch {
            Batch::One(b) => b.to_vec(),
            Batch::Many(chunks) => chunks.concat(),
        }
    }

    #[test]
    fn small_bodies_are_copied_into_one_buffer() {
        let mut out = Out::default();
        deliver(&mut out, &Bytes::from_static(b"hello"));
        assert!(matches!(out.take(), Batch::One(_)));
        assert!(out.is_empty());
    }

    #[test]
    fn large_bodies_are_shared_and_bytes_match_a_copy() {
        let body = Bytes::from(vec![7u8; 200_000]);
        let mut out = Out::default();
        deliver(&mut out, &Bytes::from_static(b"x"));
        deliver(&mut out, &body);
        deliver(&mut out, &Bytes::from_static(b"y"));
        let mut copied = BytesMut::new();
        deliver(&mut copied, &Bytes::from_static(b"x"));
        deliver(&mut copied, &body);
        deliver(&mut copied, &Bytes::from_static(b"y"));
        let batch = out.take();
        assert_eq!(batch.len(), copied.len());
        let Batch::Many(chunks) = &batch else { panic!("expected shared chunks") };
        // 200 000 bytes over frame-max 131 072: two body frames, both shared.
        let shared = chunks.iter().filter(|c| body.as_ptr_range().contains(&c.as_ptr())).count();
        assert_eq!(shared, 2);
        assert_eq!(concat(batch), copied.to_vec());
        assert!(out.is_empty());
    }
}

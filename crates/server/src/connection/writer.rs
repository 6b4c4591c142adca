//! The socket's write side and the output waiting for it. The connection task writes its
//! output itself, without waiting: whatever the socket does not take now stays pending and
//! goes out when the socket is writable again (the connection's loop waits for that too).
//! A client that does not read lets pending output grow to [`HIGH_WATER`]; then its
//! connection waits for the socket before it reads or delivers more (back-pressure instead
//! of unbounded memory). Several buffers (large bodies are their own) leave in one `writev`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use super::socket::WriteHalf;
use bytes::{Buf, Bytes};

use super::out::Batch;

/// Pending output beyond which the connection waits for the socket.
const HIGH_WATER: usize = 1024 * 1024;

/// Buffers handed to one `writev`.
const IOV: usize = 64;

/// How long a closing connection waits for its last output to leave.
const LINGER: Duration = Duration::from_secs(2);

/// The write half of a connection's socket.
pub(crate) struct Writer {
    half: WriteHalf,
    pending: Pending,
    /// When the socket last took bytes (or output last found it empty).
    progress: Instant,
}

impl Writer {
    pub(crate) fn new(half: WriteHalf) -> Self {
        Writer { half, pending: Pending::default(), progress: Instant::now() }
    }

    /// When the socket last took any of the pending output (now, if none is pending).
    pub(crate) fn last_progress(&self) -> Instant {
        if self.has_pending() { self.progress } else { Instant::now() }
    }

    /// Queues a batch and writes what the socket takes now.
    pub(crate) fn send(&mut self, batch: Batch) -> io::Result<()> {
        match batch {
            Batch::One(bytes) => self.pending.push(bytes),
            Batch::Many(chunks) => chunks.into_iter().for_each(|c| self.pending.push(c)),
        }
        self.write_now()
    }

    /// Writes what the socket takes without waiting.
    pub(crate) fn write_now(&mut self) -> io::Result<()> {
        let half = &self.half;
        let before = self.pending.bytes;
        let result = self.pending.write_with(|iov| half.try_write_vectored(iov));
        if self.pending.bytes < before || before == 0 {
            self.progress = Instant::now();
        }
        result
    }

    /// Output is waiting for the socket.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.chunks.is_empty()
    }

    /// Bytes waiting for the socket.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending.bytes
    }

    /// So much output is waiting that the connection should stop making more.
    pub(crate) fn backed_up(&self) -> bool {
        self.pending.bytes > HIGH_WATER
    }

    /// Waits until the socket may take more.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.half.writable().await
    }

    /// Waits until all pending output has been written.
    pub(crate) async fn drain(&mut self) -> io::Result<()> {
        while self.has_pending() {
            self.half.writable().await?;
            self.write_now()?;
        }
        Ok(())
    }

    /// Writes what is pending (bounded wait), then closes the write side.
    pub(crate) async fn finish(&mut self) {
        if let Ok(Ok(())) = tokio::time::timeout(LINGER, self.drain()).await {
            let _ = tokio::time::timeout(LINGER, self.half.shutdown()).await;
        }
    }
}

/// Buffers waiting for the socket, in order.
#[derive(Debug, Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl Pending {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.bytes += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Hands the pending buffers to `write` (as a `writev` would take them) until all are
    /// written or it would block; a short write resumes from the byte where it stopped.
    fn write_with(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<()> {
        while !self.chunks.is_empty() {
            let result = {
                let mut iov = [IoSlice::new(&[]); IOV];
                let mut n = 0;
                for chunk in self.chunks.iter().take(IOV) {
                    iov[n] = IoSlice::new(chunk);
                    n += 1;
                }
                write(&iov[..n])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(wrote) => self.advance(wrote),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn advance(&mut self, mut wrote: usize) {
        self.bytes -= wrote;
        while wrote > 0 {
            let Some(front) = self.chunks.front_mut() else { return };
            if wrote < front.len() {
                front.advance(wrote);
                return;
            }
            wrote -= front.len();
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `step` bytes per call, and blocks every `block_every`
    /// calls.
    fn trickle(
        got: &mut Vec<u8>,
        step: usize,
        calls: &mut usize,
        block_every: usize,
    ) -> impl FnMut(&[IoSlice<'_>]) -> io::Result<usize> {
        move |bufs| {
            *calls += 1;
            if (*calls).is_multiple_of(block_every) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut left = step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                got.extend_from_slice(&b[..take]);
                (left, n) = (left - take, n + take);
                if left == 0 {
                    break;
                }
            }
            Ok(n)
        }
    }

    #[test]
    fn short_and_blocked_writes_resume_where_they_stopped() {
        let chunks: Vec<Bytes> =
            (0..300u32).map(|i| Bytes::from(vec![i as u8; (i as usize * 7) % 23])).collect();
        let want: Vec<u8> = chunks.concat();
        for step in [1, 5, 64, 1000, usize::MAX] {
            let mut pending = Pending::default();
            chunks.iter().cloned().for_each(|c| pending.push(c));
            assert_eq!(pending.bytes, want.len());
            let (mut got, mut calls) = (Vec::new(), 0);
            let mut rounds = 0;
            while !pending.chunks.is_empty() {
                pending.write_with(trickle(&mut got, step, &mut calls, 3)).unwrap();
                rounds += 1;
            }
            assert_eq!(got, want, "step {step}");
            assert_eq!(pending.bytes, 0);
            assert!(rounds > 1, "some writes blocked and were resumed");
        }
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error() {
        let mut pending = Pending::default();
        pending.push(Bytes::from_static(b"abc"));
        let err = pending.write_with(|_| Ok(0)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}

//! The socket writer: a task that owns the write half and writes the batches the connection
//! task hands it, so a slow reader never stalls the connection's own reading. The channel is
//! bounded: a client that does not read makes its connection wait, which stops it reading
//! more publishes from that client (back-pressure instead of unbounded memory). A batch of
//! several buffers (large bodies are their own) leaves in vectored writes.

use std::io::IoSlice;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::out::Batch;

/// Batches that may wait for the socket before the connection task waits too.
const DEPTH: usize = 64;

/// Buffers handed to one `writev`.
const IOV: usize = 64;

/// Handle to a connection's writer task.
pub(crate) struct Writer {
    tx: mpsc::Sender<Batch>,
    task: JoinHandle<()>,
}

impl Writer {
    pub(crate) fn spawn(mut half: OwnedWriteHalf) -> Self {
        let (tx, mut rx) = mpsc::channel::<Batch>(DEPTH);
        let task = tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                if write_batch(&mut half, &batch).await.is_err() {
                    // The reader side notices the broken socket and cleans up.
                    return;
                }
            }
            let _ = half.shutdown().await;
        });
        Writer { tx, task }
    }

    /// Queues a batch; waits while the socket is backed up. False if the writer has gone.
    pub(crate) async fn send(&self, batch: Batch) -> bool {
        self.tx.send(batch).await.is_ok()
    }

    /// Writes what is queued, then closes the write side (bounded wait).
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}

/// Writes a whole batch, in order.
async fn write_batch<W: AsyncWrite + Unpin>(w: &mut W, batch: &Batch) -> std::io::Result<()> {
    match batch {
        Batch::One(bytes) => w.write_all(bytes).await,
        Batch::Many(chunks) => write_all_vectored(w, chunks).await,
    }
}

/// `write_all` over several buffers: as many as fit in one `writev`, resumed after a short
/// write from the byte where it stopped.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    let (mut i, mut offset) = (0, 0);
    loop {
        while i < chunks.len() && offset == chunks[i].len() {
            (i, offset) = (i + 1, 0);
        }
        if i == chunks.len() {
            return Ok(());
        }
        let mut iov = [IoSlice::new(&[]); IOV];
        let mut n = 0;
        for (k, chunk) in chunks[i..].iter().enumerate().take(IOV) {
            iov[n] = IoSlice::new(if k == 0 { &chunk[offset..] } else { chunk });
            n += 1;
        }
        let mut wrote = w.write_vectored(&iov[..n]).await?;
        if wrote == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while wrote > 0 {
            let left = chunks[i].len() - offset;
            if wrote < left {
                offset += wrote;
                break;
            }
            wrote -= left;
            (i, offset) = (i + 1, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A sink that accepts at most `step` bytes per write, vectored or not.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.got.extend_from_slice(&b[..take]);
                (left, n) = (left - take, n + take);
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn short_vectored_writes_resume_where_they_stopped() {
        let chunks: Vec<Bytes> =
            (0..200u32).map(|i| Bytes::from(vec![i as u8; (i as usize * 7) % 23])).collect();
        let want: Vec<u8> = chunks.concat();
        for step in [1, 5, 64, 1000, usize::MAX] {
            let mut w = Trickle { got: Vec::new(), step };
            write_batch(&mut w, &Batch::Many(chunks.clone())).await.unwrap();
            assert_eq!(w.got, want, "step {step}");
        }
    }
}

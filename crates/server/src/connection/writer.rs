//! The socket writer: a task that owns the write half and writes the batches the connection
//! task hands it, so a slow reader never stalls the connection's own reading. The channel is
//! bounded: a client that does not read makes its connection wait, which stops it reading
//! more publishes from that client (back-pressure instead of unbounded memory).

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches that may wait for the socket before the connection task waits too.
const DEPTH: usize = 64;

/// Handle to a connection's writer task.
pub(crate) struct Writer {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
}

impl Writer {
    pub(crate) fn spawn(mut half: OwnedWriteHalf) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
        let task = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if half.write_all(&chunk).await.is_err() {
                    // The reader side notices the broken socket and cleans up.
                    return;
                }
            }
            let _ = half.shutdown().await;
        });
        Writer { tx, task }
    }

    /// Queues a batch; waits while the socket is backed up. False if the writer has gone.
    pub(crate) async fn send(&self, chunk: Bytes) -> bool {
        self.tx.send(chunk).await.is_ok()
    }

    /// Writes what is queued, then closes the write side (bounded wait).
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await;
    }
}

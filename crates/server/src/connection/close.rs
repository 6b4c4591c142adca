//! Closing a connection: connection.close or close-ok as the reason requires, then the
//! release of everything it held.

use std::time::Duration;

use tracing::info;
use warren_core::Event;
use warren_wire::frame::decode_frame;
use warren_wire::method::{ConnectionClose, ConnectionCloseOk};
use warren_wire::{Frame, Method, constants::reply};

use super::{ConnError, Connection, ctx};
use crate::channel::Ctx;

impl Connection {
    /// Says goodbye as the reason requires, then releases everything the connection held.
    pub(super) async fn finish(&mut self, result: Result<(), ConnError>) {
        if let Some(registration) = self.info.take() {
            // Its final counts, then out of the registry (when dropped).
            registration.info().counters.store(&self.counts);
        }
        let close = match &result {
            Err(ConnError::Amqp(e, class_id, method_id)) => {
                Some((e.code, e.reply_text(), *class_id, *method_id))
            }
            Err(ConnError::Wire(e)) => {
                Some((e.reply_code(), format!("{} - {e}", reply::name(e.reply_code())), 0, 0))
            }
            Err(ConnError::Closed(reason)) => {
                Some((reply::CONNECTION_FORCED, format!("CONNECTION_FORCED - {reason}"), 0, 0))
            }
            Err(ConnError::Forced) => Some((
                reply::CONNECTION_FORCED,
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
                    .to_string(),
                0,
                0,
            )),
            _ => None,
        };
        match &result {
            Ok(()) | Err(ConnError::ClientClosed | ConnError::ClientClose) => {
                info!("connection closed")
            }
            Err(ConnError::Io(_) | ConnError::PeerGone) => info!("connection lost"),
            Err(e) => info!("closing connection: {e}"),
        }
        if let Err(ConnError::ClientClose) = result {
            // As RabbitMQ: release everything (exclusive queues go, unacked messages are
            // requeued) before close-ok, then leave the socket to the client to close: close-ok
            // tells it that closing is safe, and closing first makes some clients see a reset.
            self.release();
            if self.send(0, ConnectionCloseOk {}).is_ok() && self.flush_all().await.is_ok() {
                self.await_eof(Duration::from_secs(10)).await;
            }
        } else if let Some((reply_code, text, class_id, method_id)) = close {
            let close =
                ConnectionClose { reply_code, reply_text: text.into(), class_id, method_id };
            if self.send(0, close).is_ok() && self.flush_all().await.is_ok() {
                self.await_close_ok().await;
            }
        } else {
            let _ = self.flush();
        }
        self.release();
        self.writer.finish().await;
    }

    /// After close-ok: waits (bounded) for the client to close its side.
    async fn await_eof(&mut self, limit: Duration) {
        let wait = async {
            while let Ok(true) = self.fill().await {
                self.inbuf.buf.clear();
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// After sending connection.close: waits briefly for close-ok, dropping other frames.
    async fn await_close_ok(&mut self) {
        let wait = async {
            loop {
                while let Ok(Some(frame)) = decode_frame(&mut self.inbuf.buf, self.frame_max) {
                    if let Frame::Method {
                        method: Method::ConnectionCloseOk(_) | Method::ConnectionClose(_),
                        ..
                    } = frame
                    {
                        return;
                    }
                }
                match self.fill().await {
                    Ok(true) => {}
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
    }

    /// Requeues unacked messages, removes consumers, deletes exclusive queues (idempotent).
    fn release(&mut self) {
        if let Some(vhost) = &self.vhost {
            for (_, mut channel) in self.channels.drain() {
                let mut ctx = ctx!(self, vhost);
                channel.release(&mut ctx);
            }
        }
        self.events_rx.close();
        while let Ok(event) = self.events_rx.try_recv() {
            if let Event::Deliver { consumer, entry } = event {
                consumer.put_back(entry);
            }
        }
        self.broker.connection_closed(self.id);
        for q in self.dispatch.drain(..) {
            q.dispatch();
        }
    }
}

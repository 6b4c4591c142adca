//! The connection's main loop: what it waits for each turn (input, inbox, writable socket,
//! flow control, alarms, timers), and the work done at the end of every turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_core::{AmqpError, Broker, Event, Queue};
use warren_wire::Frame;
use warren_wire::frame::decode_frame;
use warren_wire::method::{ChannelClose, ConnectionBlocked, ConnectionUnblocked};

use super::{ConnError, Connection, ctx};
use crate::channel::Ctx;

/// Output waiting for the socket from which the connection counts as lagging.
const LAGGING_OUTPUT: usize = 256 * 1024;

/// Frames in one read after which the connection yields to the others on its thread.
const YIELD_AFTER: usize = 256;

/// Waits until the broker's alarms may have changed (the caller looks); forever without a
/// broker (the branch is off: select! still builds the future, so it must cost nothing).
async fn alarm_wait(broker: Option<Arc<Broker>>) {
    let Some(broker) = broker else { return std::future::pending().await };
    let changed = broker.alarms.changed();
    tokio::pin!(changed);
    changed.as_mut().enable();
    if !broker.alarms.any() {
        return;
    }
    changed.await;
}

/// Sleeps until `deadline`; forever without one (as [`alarm_wait`], a disabled branch's
/// future is built every turn: no timer unless needed).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits until `queue`'s congestion may be over: its wake-up, or 10 ms (a consumer's lag
/// can clear without the queue hearing of it). The caller looks again.
async fn flow_wait(queue: Option<Arc<Queue>>) {
    let Some(queue) = queue else { return std::future::pending().await };
    let changed = queue.flow_changed();
    tokio::pin!(changed);
    changed.as_mut().enable();
    if !queue.flow_blocked() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_millis(10), changed).await;
}

impl Connection {
    pub(super) async fn main_loop(&mut self) -> Result<(), ConnError> {
        let hb = Duration::from_secs(self.heartbeat.into());
        let mut tick =
            tokio::time::interval(if hb.is_zero() { Duration::from_secs(3600) } else { hb / 2 });
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shutdown.clone();
        // Set by the handshake: the management API may ask to close the connection (through
        // the shutdown token, with its reason here).
        let info = self.info.as_ref().map(|r| r.info().clone());
        // Frames a client sent right behind connection.open (pipelined) are already buffered.
        while let Some(frame) = decode_frame(&mut self.inbuf.buf, self.frame_max)? {
            self.on_frame(self.inbuf.detach(frame))?;
        }
        self.inbuf.relax();
        self.end_of_turn()?;
        self.flush()?;
        let send_timeout = Duration::from_secs(self.config.send_timeout);
        // The consumer timeout is looked at a few times per period (at most every minute,
        // as RabbitMQ's channel tick; per-queue timeouts are looked at as often).
        let ack_timeout = self.config.consumer_timeout;
        let every = Duration::from_millis(ack_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut ack_check =
            tokio::time::interval(if ack_timeout == 0 { Duration::from_secs(60) } else { every });
        ack_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Held by flow control: the queue to wait for (its wake-up or a short tick).
            let hold = self.held.first().cloned();
            // The client does not read: nothing more is read or delivered until it does, and
            // it is dropped if its socket takes nothing for the send timeout.
            let backed_up = self.writer.backed_up();
            let stalled_until = (backed_up && !send_timeout.is_zero())
                .then(|| self.writer.last_progress() + send_timeout);
            let mut frames = 0usize;
            tokio::select! {
                _ = shutdown.cancelled() => {
                    return Err(match info.as_ref().and_then(|i| i.close_reason()) {
                        Some(reason) => ConnError::Closed(reason),
                        None => ConnError::Forced,
                    });
                }
                () = sleep_until(stalled_until), if stalled_until.is_some() => {
                    if self.writer.backed_up()
                        && self.writer.last_progress().elapsed() >= send_timeout
                    {
                        return Err(ConnError::SendTimeout);
                    }
                }
                more = self.inbuf.fill(&mut self.rd),
                    if hold.is_none() && !self.alarm_blocked && !backed_up =>
                {
                    if !more? {
                        return Err(ConnError::PeerGone);
                    }
                    self.last_read = Instant::now();
                    self.turn = self.last_read;
                    // Permission changes apply from this batch of frames on.
                    self.access.refresh();
                    while let Some(frame) = decode_frame(&mut self.inbuf.buf, self.frame_max)? {
                        self.on_frame(self.inbuf.detach(frame))?;
                        frames += 1;
                    }
                    self.inbuf.relax();
                }
                () = flow_wait(hold.clone()), if hold.is_some() => {
                    self.held.retain(|q| q.flow_blocked());
                    if self.held.is_empty() && !self.alarm_blocked {
                        // Not read while held: heartbeats from the peer were not either.
                        self.last_read = Instant::now();
                    }
                }
                () = alarm_wait(self.alarm_blocked.then(|| self.broker.clone())),
                    if self.alarm_blocked =>
                {
                    self.alarms_changed()?;
                }
                Some(event) = self.events_rx.recv(), if !backed_up => {
                    self.turn = Instant::now();
                    self.inbox_seen = self.inbox_seen.max(self.events_rx.len() + 1);
                    self.on_event(event)?;
                    for _ in 0..512 {
                        match self.events_rx.try_recv() {
                            Ok(event) => self.on_event(event)?,
                            Err(_) => break,
                        }
                    }
                }
                ready = self.writer.writable(), if self.writer.has_pending() => {
                    ready?;
                    self.writer.write_now()?;
                }
                _ = ack_check.tick() => {
                    self.turn = Instant::now();
                    self.check_ack_timeouts()?;
                }
                _ = tick.tick(), if !hb.is_zero() => {
                    let reading = self.held.is_empty() && !self.alarm_blocked && !backed_up;
                    if reading && self.last_read.elapsed() > hb * 2 {
                        return Err(ConnError::HeartbeatTimeout);
                    }
                    if self.last_write.elapsed() >= hb / 2 {
                        Frame::Heartbeat.encode(&mut self.out)?;
                    }
                }
            }
            self.end_of_turn()?;
            self.flush()?;
            if frames >= YIELD_AFTER {
                // A busy publisher gives the other connections on its worker thread a turn
                // (the runtime's own budget counts reads, not the thousands of frames one
                // read can hold).
                tokio::task::yield_now().await;
            }
        }
    }

    /// Closes, with RabbitMQ's 406, every channel whose oldest unacknowledged delivery is
    /// older than its consumer timeout (its messages are requeued).
    fn check_ack_timeouts(&mut self) -> Result<(), ConnError> {
        let Some(vhost) = &self.vhost else { return Ok(()) };
        let now = self.turn;
        for (id, channel) in self.channels.iter_mut() {
            if channel.closing {
                continue;
            }
            let Some(timeout) = channel.ack_timed_out(self.config.consumer_timeout, now) else {
                continue;
            };
            let error = AmqpError::precondition_failed(format!(
                "delivery acknowledgement on channel {id} timed out. Timeout value used: \
                 {timeout} ms. This timeout value can be configured, see consumers doc guide to \
                 learn more"
            ));
            tracing::warn!(channel = id, "consumer timed out waiting for an acknowledgement");
            let mut ctx = ctx!(self, vhost);
            channel.release(&mut ctx);
            channel.closing = true;
            let close = ChannelClose {
                reply_code: error.code,
                reply_text: error.reply_text().into(),
                class_id: 0,
                method_id: 0,
            };
            ctx.send(*id, close).map_err(|e| ConnError::Amqp(e, 20, 40))?;
        }
        Ok(())
    }

    /// The alarms changed while this connection was blocked: tell the client, and read again
    /// once they are all clear.
    fn alarms_changed(&mut self) -> Result<(), ConnError> {
        if self.broker.alarms.any() {
            return Ok(());
        }
        self.alarm_blocked = false;
        if std::mem::take(&mut self.blocked_sent) {
            self.send(0, ConnectionUnblocked {})?;
        }
        if self.held.is_empty() {
            // Not read while blocked: heartbeats from the peer were not either.
            self.last_read = Instant::now();
        }
        Ok(())
    }

    /// Confirms and re-dispatch, once per loop turn.
    /// Once per loop turn: asks the store to report when this turn's stored publishes are on
    /// disk, sends the confirms that are due, and lets queues deliver again.
    fn end_of_turn(&mut self) -> Result<(), ConnError> {
        if self.alarm_blocked
            && !self.blocked_sent
            && self.blocked_notify
            && let Some(reason) = self.broker.alarms.reason()
        {
            self.send(0, ConnectionBlocked { reason: reason.into() })?;
            self.blocked_sent = true;
        }
        if let Some(vhost) = &self.vhost {
            for channel in self.channels.values_mut() {
                if channel.closing {
                    continue;
                }
                let (id, generation) = (channel.id, channel.generation);
                if let Some(up_to) = channel.confirm_sync.take() {
                    let events = self.events_tx.clone();
                    self.broker.after_sync(move || {
                        let _ = events.send(Event::Persisted { channel: id, generation, up_to });
                    });
                }
                if let Some(epoch) = channel.commit_sync.take() {
                    let events = self.events_tx.clone();
                    self.broker.after_sync(move || {
                        let _ = events.send(Event::TxPersisted { channel: id, generation, epoch });
                    });
                }
                if channel.confirms.is_some() {
                    let mut ctx = ctx!(self, vhost);
                    channel.flush_confirms(&mut ctx).map_err(|e| ConnError::Amqp(e, 60, 80))?;
                }
            }
        }
        for q in self.dispatch.drain(..) {
            q.dispatch();
        }
        if let Some(r) = &self.info {
            r.info().counters.store(&self.counts);
        }
        // Behind if deliveries piled up in the inbox during the turn, or the socket does not
        // take the output as fast as it is made.
        if self.writer.pending_bytes() >= LAGGING_OUTPUT {
            self.lag.set_blocked();
        } else {
            self.lag.set(std::mem::take(&mut self.inbox_seen).max(self.events_rx.len()));
        }
        Ok(())
    }
}

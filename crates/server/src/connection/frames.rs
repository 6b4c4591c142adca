//! Incoming frames: those on channel 0 are the connection's own, the others go to their
//! channel, which is opened, closed or closed on error here.

use tracing::debug;
use warren_core::AmqpError;
use warren_wire::method::{ChannelClose, ChannelCloseOk, ChannelOpenOk, ConnectionUpdateSecretOk};
use warren_wire::{Frame, Method};

use super::{ConnError, Connection, ctx};
use crate::channel::{Channel, Ctx};

impl Connection {
    /// Tells the broker's registry how many channels are open (management API).
    fn count_channels(&self) {
        if let Some(r) = &self.info {
            r.info()
                .channels
                .store(self.channels.len() as u32, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn on_frame(&mut self, frame: Frame) -> Result<(), ConnError> {
        let ch = frame.channel();
        if ch == 0 {
            return match frame {
                Frame::Heartbeat => Ok(()),
                Frame::Method { method, .. } => self.on_connection_method(method),
                _ => Err(ConnError::Amqp(
                    AmqpError::unexpected_frame("content frame on channel 0"),
                    0,
                    0,
                )),
            };
        }
        let (class_id, method_id) = match &frame {
            Frame::Method { method, .. } => (method.class_id(), method.method_id()),
            _ => {
                // A publish's content while an alarm is set: this connection is blocked
                // after the turn (as RabbitMQ's reader, which blocks at a publish).
                if !self.alarm_blocked && self.broker.alarms.any() {
                    self.alarm_blocked = true;
                }
                (0, 0)
            }
        };
        let Some(vhost) = &self.vhost else {
            return Err(ConnError::Amqp(
                AmqpError::command_invalid("connection not open"),
                class_id,
                method_id,
            ));
        };
        let Some(channel) = self.channels.get_mut(&ch) else {
            return match frame {
                Frame::Method { method: Method::ChannelOpen(_), .. } => {
                    // As RabbitMQ: channel-max bounds how many channels are open, not their
                    // numbers (any of 1-65535 may be used).
                    if self.channel_max != 0 && self.channels.len() >= usize::from(self.channel_max)
                    {
                        return Err(ConnError::Amqp(
                            AmqpError::not_allowed(format!(
                                "number of channels opened ({}) has reached the negotiated \
                                 channel_max ({})",
                                self.channels.len(),
                                self.channel_max
                            )),
                            class_id,
                            method_id,
                        ));
                    }
                    let counted = self
                        .broker
                        .count_channel(&self.user)
                        .map_err(|e| ConnError::Amqp(e, class_id, method_id))?;
                    self.generations += 1;
                    let mut channel = Box::new(Channel::new(ch, self.generations));
                    channel.counted = Some(counted);
                    self.channels.insert(ch, channel);
                    self.count_channels();
                    self.send(ch, ChannelOpenOk { channel_id: Default::default() })
                }
                Frame::Method { method: Method::ChannelCloseOk(_), .. } => Ok(()),
                _ => Err(ConnError::Amqp(
                    AmqpError::channel_error(format!("expected 'channel.open' on channel {ch}")),
                    class_id,
                    method_id,
                )),
            };
        };
        let mut ctx = ctx!(self, vhost);
        if channel.closing {
            // Until close-ok, everything else on the channel is dropped.
            match frame {
                Frame::Method { method: Method::ChannelCloseOk(_), .. } => {
                    self.channels.remove(&ch);
                    self.count_channels();
                }
                Frame::Method { method: Method::ChannelClose(_), .. } => {
                    ctx.send(ch, ChannelCloseOk {}).map_err(|e| ConnError::Amqp(e, 20, 41))?;
                    self.channels.remove(&ch);
                    self.count_channels();
                }
                _ => {}
            }
            return Ok(());
        }
        if let Frame::Method { method: Method::ChannelClose(_), .. } = frame {
            channel.release(&mut ctx);
            ctx.send(ch, ChannelCloseOk {}).map_err(|e| ConnError::Amqp(e, 20, 41))?;
            self.channels.remove(&ch);
            self.count_channels();
            return Ok(());
        }
        match channel.handle_frame(frame, &mut ctx) {
            Ok(()) => Ok(()),
            Err(f) if f.error.is_connection_error() => {
                Err(ConnError::Amqp(f.error, f.class_id, f.method_id))
            }
            Err(f) => {
                debug!(channel = ch, "channel error: {}", f.error.reply_text());
                channel.release(&mut ctx);
                channel.closing = true;
                ctx.send(
                    ch,
                    ChannelClose {
                        reply_code: f.error.code,
                        reply_text: f.error.reply_text().into(),
                        class_id: f.class_id,
                        method_id: f.method_id,
                    },
                )
                .map_err(|e| ConnError::Amqp(e, 20, 40))
            }
        }
    }

    fn on_connection_method(&mut self, method: Method) -> Result<(), ConnError> {
        match method {
            Method::ConnectionClose(_) => Err(ConnError::ClientClose),
            Method::ConnectionCloseOk(_) => Err(ConnError::ClientClosed),
            Method::ConnectionUpdateSecret(_) => self.send(0, ConnectionUpdateSecretOk {}),
            Method::ConnectionBlocked(_) | Method::ConnectionUnblocked(_) => Ok(()),
            other => Err(ConnError::Amqp(
                AmqpError::command_invalid(format!("{} is not valid on channel 0", other.name())),
                other.class_id(),
                other.method_id(),
            )),
        }
    }
}

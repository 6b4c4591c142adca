//! Publisher confirms (confirm.select, acks and nacks coalesced with `multiple`, persistent
//! messages confirmed only once the store has fsync'd them, nacked if its write failed) and
//! transactions (tx.select, commit, rollback; commit-ok only once stored messages are on
//! disk).

use warren_core::AmqpError;
use warren_wire::method::{
    BasicAck, BasicNack, ConfirmSelect, ConfirmSelectOk, TxCommitOk, TxRollbackOk, TxSelectOk,
};

use super::{Channel, Confirms, Ctx, Outcome, Tx, ack};

impl Channel {
    pub(super) fn confirm_select(
        &mut self,
        m: ConfirmSelect,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        if self.tx.is_some() {
            return Err(AmqpError::precondition_failed("cannot switch from tx to confirm mode"));
        }
        if self.confirms.is_none() {
            self.confirms = Some(Confirms { next: 1, ..Default::default() });
        }
        if m.nowait { Ok(()) } else { ctx.send(self.id, ConfirmSelectOk {}) }
    }

    /// The store finished the sync covering every publish up to `up_to`; `epoch` is its
    /// failure epoch now. A publish appended in an older epoch may have been lost by a
    /// failed write: it is nacked, never confirmed.
    pub(crate) fn persisted(&mut self, up_to: u64, epoch: u64) {
        if let Some(c) = &mut self.confirms {
            while let Some(&(seq, appended)) = c.waiting.front().filter(|w| w.0 <= up_to) {
                c.waiting.pop_front();
                if appended < epoch {
                    c.nacks.insert(seq);
                }
            }
        }
    }

    /// Tells the client the outcome of every publish settled since the last call.
    pub(crate) fn flush_confirms(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let Some(c) = &mut self.confirms else { return Ok(()) };
        let mut result = Ok(());
        c.tell(|o| {
            if result.is_ok() {
                result = match o {
                    Outcome::Ack { tag, multiple } => {
                        ctx.send(self.id, BasicAck { delivery_tag: tag, multiple })
                    }
                    Outcome::Nack { tag, multiple } => {
                        ctx.send(self.id, BasicNack { delivery_tag: tag, multiple, requeue: false })
                    }
                };
            }
        });
        result
    }

    pub(super) fn tx_select(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        if self.confirms.is_some() {
            return Err(AmqpError::precondition_failed("cannot switch from confirm to tx mode"));
        }
        if self.tx.is_none() {
            self.tx = Some(Tx::default());
        }
        ctx.send(self.id, TxSelectOk {})
    }

    pub(super) fn tx_commit(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let Some(tx) = self.tx.replace(Tx::default()) else {
            return Err(AmqpError::precondition_failed("channel is not transactional"));
        };
        // The publishes were routed when published (queues deleted since are skipped) and the
        // settles are applied whatever happens. A store failure is only known after this, and
        // undoes nothing (the client gets 541): a commit is not all or nothing yet.
        let mut stored: Option<u64> = None;
        let mut failed = None;
        for p in tx.publishes {
            let routed = ctx.vhost.deliver(p.message.clone(), p.route, &mut self.scratch);
            if let Some(epoch) = routed.stored {
                stored = Some(stored.map_or(epoch, |s| s.min(epoch)));
            }
            if let Err(e) = self.after_publish(&p.message, routed, p.mandatory, ctx) {
                failed.get_or_insert(e);
            }
        }
        for (u, how) in tx.settles {
            ack::apply(vec![u], how, ctx);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if stored.is_some() {
            // commit-ok once the store has the messages on disk (the connection asks it).
            self.commit_sync = stored;
            Ok(())
        } else {
            ctx.send(self.id, TxCommitOk {})
        }
    }

    /// The store finished the sync a commit's messages waited for; `failed` if a write failed
    /// since the first of them was appended. A commit whose messages may not be on disk
    /// fails the way RabbitMQ fails one whose queue could not take it: the connection
    /// closes with 541 INTERNAL_ERROR (the client must not take the commit as done).
    pub(crate) fn committed(&mut self, failed: bool, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        if failed {
            return Err(AmqpError::internal(
                "tx.commit failed: the store could not write the transaction's messages",
            ));
        }
        ctx.send(self.id, TxCommitOk {})
    }

    pub(super) fn tx_rollback(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let Some(tx) = self.tx.replace(Tx::default()) else {
            return Err(AmqpError::precondition_failed("channel is not transactional"));
        };
        self.unsettle(tx.settles);
        ctx.send(self.id, TxRollbackOk {})
    }
}

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
        // The publishes were routed when published (queues deleted since are skipped) and go
        // to their queues now. The settles wait for the store when the commit does: if it
        // fails them (541), they are put back among the unacked and requeued with the channel,
        // so no acked message is lost by a failed commit. The publishes stay enqueued
        // (at-least-once): a commit is all or nothing for its settles, not its publishes.
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
        if stored.is_some() && failed.is_none() {
            // commit-ok once the store has the messages on disk (the connection asks it).
            self.commit_sync = stored;
            self.commit_settles = tx.settles;
            return Ok(());
        }
        for (u, how) in tx.settles {
            ack::apply(vec![u], how, ctx);
        }
        match failed {
            Some(e) => Err(e),
            None => ctx.send(self.id, TxCommitOk {}),
        }
    }

    /// The store finished the sync a commit's messages waited for; `failed` if a write failed
    /// since the first of them was appended. A commit whose messages may not be on disk
    /// fails the way RabbitMQ fails one whose queue could not take it: the connection
    /// closes with 541 INTERNAL_ERROR (the client must not take the commit as done).
    pub(crate) fn committed(&mut self, failed: bool, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let settles = std::mem::take(&mut self.commit_settles);
        if failed {
            // Not applied: back among the unacked, requeued when the connection closes.
            self.unsettle(settles);
            return Err(AmqpError::internal(
                "tx.commit failed: the store could not write the transaction's messages",
            ));
        }
        for (u, how) in settles {
            ack::apply(vec![u], how, ctx);
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

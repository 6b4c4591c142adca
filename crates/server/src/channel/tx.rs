//! Publisher confirms (confirm.select, acks coalesced with `multiple`, persistent messages
//! confirmed only once the store has fsync'd them) and transactions (tx.select, commit,
//! rollback; commit-ok only once stored messages are on disk).

use warren_core::AmqpError;
use warren_wire::method::{
    BasicAck, ConfirmSelect, ConfirmSelectOk, TxCommitOk, TxRollbackOk, TxSelectOk,
};

use super::{Channel, Confirms, Ctx, Tx, ack};

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

    /// The store has fsync'd every publish up to `up_to`.
    pub(crate) fn persisted(&mut self, up_to: u64) {
        if let Some(c) = &mut self.confirms {
            while c.waiting.front().is_some_and(|w| *w <= up_to) {
                c.waiting.pop_front();
            }
        }
    }

    /// Tells the client of every publish confirmable since the last call, in one basic.ack
    /// (with `multiple` when it covers several).
    pub(crate) fn flush_confirms(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let Some(c) = &mut self.confirms else { return Ok(()) };
        let ready = c.confirmable();
        if ready <= c.told_up_to {
            return Ok(());
        }
        let multiple = ready - c.told_up_to > 1;
        c.told_up_to = ready;
        ctx.send(self.id, BasicAck { delivery_tag: ready, multiple })
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
        let mut stored = false;
        for p in tx.publishes {
            stored |= self.route_and_enqueue(p, ctx)?;
        }
        for (u, how) in tx.settles {
            ack::apply(vec![u], how, ctx);
        }
        if stored {
            // commit-ok once the store has the messages on disk (the connection asks it).
            self.commit_sync = true;
            Ok(())
        } else {
            ctx.send(self.id, TxCommitOk {})
        }
    }

    /// The store has fsync'd a commit's messages.
    pub(crate) fn committed(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
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

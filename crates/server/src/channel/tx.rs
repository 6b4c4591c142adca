//! Publisher confirms (confirm.select, acks coalesced with `multiple`) and transactions
//! (tx.select, commit, rollback).

use warren_core::AmqpError;
use warren_wire::method::{
    BasicAck, ConfirmSelect, ConfirmSelectOk, TxCommitOk, TxRollbackOk, TxSelectOk,
};

use super::{Channel, Confirms, Ctx, Tx};

impl Channel {
    pub(super) fn confirm_select(
        &mut self,
        m: ConfirmSelect,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), AmqpError> {
        if self.tx.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from tx to confirm mode",
            ));
        }
        if self.confirms.is_none() {
            self.confirms = Some(Confirms {
                next: 1,
                ready_up_to: 0,
                told_up_to: 0,
            });
        }
        if m.nowait {
            Ok(())
        } else {
            ctx.send(self.id, ConfirmSelectOk {})
        }
    }

    /// Tells the client of every publish confirmed since the last call, in one basic.ack
    /// (with `multiple` when it covers several).
    pub(crate) fn flush_confirms(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let Some(c) = &mut self.confirms else {
            return Ok(());
        };
        if c.ready_up_to <= c.told_up_to {
            return Ok(());
        }
        let multiple = c.ready_up_to - c.told_up_to > 1;
        let delivery_tag = c.ready_up_to;
        c.told_up_to = c.ready_up_to;
        ctx.send(
            self.id,
            BasicAck {
                delivery_tag,
                multiple,
            },
        )
    }

    pub(super) fn tx_select(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        if self.confirms.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from confirm to tx mode",
            ));
        }
        if self.tx.is_none() {
            self.tx = Some(Tx::default());
        }
        ctx.send(self.id, TxSelectOk {})
    }

    pub(super) fn tx_commit(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let Some(tx) = self.tx.take() else {
            return Err(AmqpError::precondition_failed(
                "channel is not transactional",
            ));
        };
        self.tx = Some(Tx::default());
        for p in tx.publishes {
            self.route_and_enqueue(p, ctx)?;
        }
        for m in tx.acks {
            self.settle_now(m, ctx)?;
        }
        ctx.send(self.id, TxCommitOk {})
    }

    pub(super) fn tx_rollback(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        if self.tx.is_none() {
            return Err(AmqpError::precondition_failed(
                "channel is not transactional",
            ));
        }
        self.tx = Some(Tx::default());
        ctx.send(self.id, TxRollbackOk {})
    }
}

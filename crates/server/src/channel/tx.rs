//! Publisher confirms (confirm.select, acks and nacks coalesced with `multiple`, persistent
//! messages confirmed only once the store has fsync'd them, nacked if its write failed) and
//! transactions (tx.select, commit, rollback; a commit's publishes are enqueued only once
//! all of its stored messages are on disk, and commit-ok follows once their queues' entries
//! are too).

use warren_core::AmqpError;
use warren_wire::method::{
    BasicAck, BasicNack, ConfirmSelect, ConfirmSelectOk, TxCommitOk, TxRollbackOk, TxSelectOk,
};

use warren_core::publish::Staged;

use super::{Channel, Commit, Confirms, Ctx, Outcome, Tx, ack};

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
        if self.commit.is_some() {
            // A commit sent before the last one's commit-ok: it starts once that one is done,
            // so that commit-oks come in order and each waits for its own messages.
            self.queued_commits.push_back(tx);
            return Ok(());
        }
        self.start_commit(tx, ctx)
    }

    fn start_commit(&mut self, tx: Tx, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        // The publishes were routed when published (queues deleted since are skipped). All
        // or nothing: the persistent ones are written to the store now, and every publish
        // goes to its queues only once they are all on disk.
        let staged: Vec<_> = tx
            .publishes
            .into_iter()
            .map(|p| (Staged::new(p.message, p.route), p.mandatory))
            .collect();
        let first = staged.iter().filter_map(|(s, _)| s.stored()).min();
        let commit = Commit { staged, settles: tx.settles, epoch: first };
        if first.is_some() {
            // The connection asks the store for its sync at the end of the turn.
            self.commit_sync = first;
            self.commit = Some(commit);
            return Ok(());
        }
        self.advance_commit(commit, ctx)
    }

    /// The store finished the sync the commit waited for; `failed` if a write failed since
    /// the commit's first. A commit whose messages may not be on disk fails the way RabbitMQ
    /// fails one whose queue could not take it: the connection closes with 541
    /// INTERNAL_ERROR (the client must not take the commit as done).
    pub(crate) fn committed(&mut self, failed: bool, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let Some(commit) = self.commit.take() else { return Ok(()) };
        if failed {
            // Nothing enqueued yet is dropped (the store releases its records); the settles
            // go back among the unacked, requeued when the connection closes.
            let Commit { staged, settles, .. } = commit;
            drop(staged);
            self.unsettle(settles);
            return Err(AmqpError::internal(
                "tx.commit failed: the store could not write the transaction's messages",
            ));
        }
        self.advance_commit(commit, ctx)
    }

    /// The next step of a commit whose stored messages are on disk: its publishes go to their
    /// queues, and once the index entries that makes are on disk too (another sync), its
    /// settles are applied and commit-ok sent.
    fn advance_commit(&mut self, mut commit: Commit, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        if !commit.staged.is_empty() {
            let mut wrote = false;
            let mut failed = None;
            for (staged, mandatory) in std::mem::take(&mut commit.staged) {
                let message = staged.message().clone();
                let routed = staged.deliver(&mut self.scratch);
                if let Some(e) = routed.stored {
                    wrote = true;
                    commit.epoch = Some(commit.epoch.map_or(e, |c| c.min(e)));
                }
                if let Err(e) = self.after_publish(&message, routed, mandatory, ctx) {
                    failed.get_or_insert(e);
                }
            }
            if let Some(e) = failed {
                self.unsettle(commit.settles);
                return Err(e);
            }
            if wrote {
                self.commit_sync = commit.epoch;
                self.commit = Some(commit);
                return Ok(());
            }
        }
        for (u, how) in commit.settles {
            ack::apply(vec![u], how, ctx);
        }
        ctx.send(self.id, TxCommitOk {})?;
        match self.queued_commits.pop_front() {
            Some(next) => self.start_commit(next, ctx),
            None => Ok(()),
        }
    }

    pub(super) fn tx_rollback(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AmqpError> {
        let Some(tx) = self.tx.replace(Tx::default()) else {
            return Err(AmqpError::precondition_failed("channel is not transactional"));
        };
        self.unsettle(tx.settles);
        ctx.send(self.id, TxRollbackOk {})
    }
}

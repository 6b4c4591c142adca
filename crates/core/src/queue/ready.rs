//! A queue's ready messages: one FIFO for a plain queue, one per priority level for a priority
//! queue (`x-max-priority`, RabbitMQ's `rabbit_priority_queue`): the highest level that holds
//! anything comes first, FIFO within a level, and a requeued message goes back to its
//! original position in its level.

use std::collections::VecDeque;

use super::paging::Slot;

/// A level's storage is shrunk when it is this large and three quarters empty.
const SHRINK_FROM: usize = 4096;

/// The ready messages, by level (index = priority).
#[derive(Debug)]
pub(super) struct Ready {
    levels: Vec<VecDeque<Slot>>,
    len: usize,
    /// No level above this one holds anything.
    high: usize,
}

impl Default for Ready {
    fn default() -> Self {
        Ready::new(0)
    }
}

impl Ready {
    /// Ready messages with priorities 0 to `max` (0: a plain FIFO).
    pub fn new(max: u8) -> Self {
        Ready { levels: (0..=max).map(|_| VecDeque::new()).collect(), len: 0, high: 0 }
    }

    /// The level a message of `priority` goes to: capped at the highest (RabbitMQ's rule),
    /// 0 without one.
    pub fn level(&self, priority: Option<u8>) -> u8 {
        let max = (self.levels.len() - 1) as u8;
        priority.unwrap_or(0).min(max)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The highest level holding a message.
    fn top(&self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        (0..=self.high).rev().find(|&l| !self.levels[l].is_empty())
    }

    pub fn front(&self) -> Option<&Slot> {
        self.levels[self.top()?].front()
    }

    pub fn pop_front(&mut self) -> Option<Slot> {
        let top = self.top()?;
        self.high = top;
        let q = &mut self.levels[top];
        let slot = q.pop_front()?;
        self.len -= 1;
        if q.capacity() > SHRINK_FROM && q.len() < q.capacity() / 4 {
            // A drained backlog gives its memory back (halving at a quarter: amortized O(1)).
            q.shrink_to(q.capacity() / 2);
        }
        Some(slot)
    }

    fn at(&mut self, level: u8) -> &mut VecDeque<Slot> {
        let l = usize::from(level).min(self.levels.len() - 1);
        self.high = self.high.max(l);
        &mut self.levels[l]
    }

    pub fn push_back(&mut self, slot: Slot) {
        self.len += 1;
        self.at(slot.level).push_back(slot);
    }

    pub fn push_front(&mut self, slot: Slot) {
        self.len += 1;
        self.at(slot.level).push_front(slot);
    }

    /// The last message of `level` (the one just pushed there), taken out if `take` says so.
    pub fn pop_back_if(&mut self, level: u8, take: impl FnOnce(&Slot) -> bool) -> Option<Slot> {
        let q = self.at(level);
        if !q.back().is_some_and(take) {
            return None;
        }
        let slot = q.pop_back();
        self.len -= usize::from(slot.is_some());
        slot
    }

    /// Puts a message back at its position (by `seq`) in its level; usually the front, so
    /// the search starts there.
    pub fn insert_by_seq(&mut self, slot: Slot) {
        let q = self.at(slot.level);
        let pos = q.partition_point(|r| r.seq < slot.seq);
        q.insert(pos, slot);
        self.len += 1;
    }

    /// In delivery order: highest level first, FIFO within.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.levels[..=self.high].iter().rev().flatten()
    }

    /// As [`Ready::iter`].
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.levels[..=self.high].iter_mut().rev().flatten()
    }

    pub fn clear(&mut self) {
        self.levels.iter_mut().for_each(|q| *q = VecDeque::new());
        self.len = 0;
        self.high = 0;
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Slot) -> bool) {
        for q in &mut self.levels {
            q.retain(&mut keep);
        }
        self.len = self.levels.iter().map(VecDeque::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_backlog_gives_its_memory_back() {
        let mut r = Ready::new(0);
        for seq in 0..100_000 {
            r.push_back(slot(seq, 0));
        }
        let full = r.levels[0].capacity();
        while r.len() > 10 {
            r.pop_front();
        }
        assert!(r.levels[0].capacity() <= SHRINK_FROM * 2, "{full} -> {}", r.levels[0].capacity());
        assert_eq!(r.pop_front().map(|s| s.seq), Some(99_990));
    }
    use crate::queue::paging::Body;
    use warren_store::Location;

    fn slot(seq: u64, level: u8) -> Slot {
        Slot {
            seq,
            body: Body::Paged(Location { seg: 0, offset: 0, len: 0 }),
            redelivered: false,
            stored: false,
            size: 0,
            expires: u64::MAX,
            level,
            returns: 0,
        }
    }

    fn seqs(r: &Ready) -> Vec<u64> {
        r.iter().map(|s| s.seq).collect()
    }

    #[test]
    fn highest_level_first_fifo_within_and_requeue_to_the_same_place() {
        let mut r = Ready::new(5);
        for (seq, p) in [(0, None), (1, Some(3)), (2, Some(9)), (3, Some(3)), (4, Some(1))] {
            let level = r.level(p);
            r.push_back(slot(seq, level));
        }
        assert_eq!(r.level(Some(9)), 5, "capped at the highest level");
        assert_eq!(seqs(&r), [2, 1, 3, 4, 0]);
        assert_eq!(r.len(), 5);
        let first = r.pop_front().unwrap();
        let second = r.pop_front().unwrap();
        assert_eq!((first.seq, second.seq), (2, 1));
        r.insert_by_seq(second);
        r.insert_by_seq(first);
        assert_eq!(seqs(&r), [2, 1, 3, 4, 0]);
        assert!(r.pop_back_if(1, |s| s.seq == 4).is_some());
        assert!(r.pop_back_if(3, |s| s.seq == 1).is_none(), "not the last of its level");
        r.retain(|s| s.seq != 3);
        assert_eq!(seqs(&r), [2, 1, 0]);
        assert_eq!(r.len(), 3);
        r.clear();
        assert!(r.is_empty() && r.front().is_none());
    }

    #[test]
    fn a_plain_queue_is_one_fifo() {
        let mut r = Ready::new(0);
        for seq in 0..4 {
            let level = r.level(Some(7));
            r.push_back(slot(seq, level));
        }
        assert_eq!(seqs(&r), [0, 1, 2, 3]);
    }
}

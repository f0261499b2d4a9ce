//! The event queue on virtual time: events ordered by (time, insertion sequence), so two events
//! at the same microsecond run in the order they were scheduled. Owns the heap, the slab of
//! pending events and the sequence counter; calls nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Pending events of type `E`, earliest first, FIFO among equal times.
pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slab: Vec<Option<E>>,
    free: Vec<usize>,
    seq: u64,
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        EventQueue { heap: BinaryHeap::new(), slab: Vec::new(), free: Vec::new(), seq: 0 }
    }

    /// Schedules `ev` at virtual time `at` (us).
    pub(crate) fn schedule(&mut self, at: u64, ev: E) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s] = Some(ev);
                s
            }
            None => {
                self.slab.push(Some(ev));
                self.slab.len() - 1
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, slot)));
    }

    /// The earliest event and its time (`None` inside: an emptied slot, skipped by callers).
    pub(crate) fn pop(&mut self) -> Option<(u64, Option<E>)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        let ev = self.slab[slot].take();
        self.free.push(slot);
        Some((at, ev))
    }
}

//! The event queue on virtual time: events ordered by (time, insertion sequence), so two events
//! at the same microsecond run in the order they were scheduled. Owns the timing wheel, the
//! heap of far events, the slab those wait in and the sequence counter; calls nothing.
//!
//! Most events are due within a few milliseconds (messages, mesh hops), and a 1000-node run
//! schedules ~23 M of them per simulated second: a binary heap over millions of pending events
//! cost ~9 % of the run in cache misses (`perf record`). So events due within
//! [`WHEEL`] microseconds of the cursor go to a wheel with one FIFO bucket per microsecond, and
//! only later ones (timers) wait in the heap, moving to the wheel as the cursor comes within
//! reach of them. The order is exactly the heap's: a far event for time t moves to its bucket
//! the moment t comes within reach, before any event for t can be scheduled directly there
//! (that needs t within reach too, and the cursor only moves forward), so it comes first, as
//! its lower sequence number says it should.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Microseconds covered by the wheel (one bucket each).
const WHEEL: usize = 1 << 14;

/// Pending events of type `E`, earliest first, FIFO among equal times.
pub(crate) struct EventQueue<E> {
    /// Events due in `[cursor, cursor + WHEEL)`, bucket `time % WHEEL`, FIFO within a bucket,
    /// as their `slab` slots (a bucket keeps its peak capacity: slots, not events, keep that
    /// small).
    wheel: Vec<VecDeque<u32>>,
    /// One bit per bucket: set while the bucket holds an event.
    occupied: Vec<u64>,
    /// Events in the wheel.
    in_wheel: usize,
    /// The time of the event popped last (0 before the first).
    cursor: u64,
    /// Events due at or after `cursor + WHEEL` when scheduled, and any due before the cursor,
    /// by (time, sequence).
    far: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Every pending event, wheel and far.
    slab: Vec<Option<E>>,
    free: Vec<usize>,
    seq: u64,
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        EventQueue {
            wheel: (0..WHEEL).map(|_| VecDeque::new()).collect(),
            occupied: vec![0; WHEEL / 64],
            in_wheel: 0,
            cursor: 0,
            far: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }

    /// (events pending, slab slots): what the queue holds (`--census`).
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.slab.len() - self.free.len(), self.slab.capacity())
    }

    /// Schedules `ev` at virtual time `at` (us).
    pub(crate) fn schedule(&mut self, at: u64, ev: E) {
        self.seq += 1;
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
        if at >= self.cursor && at - self.cursor < WHEEL as u64 {
            self.to_wheel(at, slot);
        } else {
            self.far.push(Reverse((at, self.seq, slot)));
        }
    }

    /// The earliest event and its time (`None` inside: an emptied slot, skipped by callers).
    pub(crate) fn pop(&mut self) -> Option<(u64, Option<E>)> {
        // An event scheduled in the past (before the cursor) comes before everything else.
        if self.far.peek().is_some_and(|Reverse((at, _, _))| *at < self.cursor) {
            return self.pop_far();
        }
        loop {
            if self.in_wheel > 0 {
                let bucket = self.next_occupied();
                let offset = (bucket + WHEEL - (self.cursor as usize % WHEEL)) % WHEEL;
                let at = self.cursor + offset as u64;
                let slot = self.wheel[bucket].pop_front().expect("an occupied bucket holds a slot") as usize;
                let ev = self.slab[slot].take();
                self.free.push(slot);
                if self.wheel[bucket].is_empty() {
                    self.occupied[bucket / 64] &= !(1u64 << (bucket % 64));
                }
                self.in_wheel -= 1;
                if at != self.cursor {
                    self.cursor = at;
                    self.migrate();
                }
                return Some((at, ev));
            }
            let Reverse((at, _, _)) = *self.far.peek()?;
            self.cursor = at;
            self.migrate();
        }
    }

    /// The time of the earliest event, without taking it.
    pub(crate) fn peek_time(&self) -> Option<u64> {
        if let Some(Reverse((at, _, _))) = self.far.peek() {
            if *at < self.cursor || self.in_wheel == 0 {
                return Some(*at);
            }
        }
        if self.in_wheel == 0 {
            return None;
        }
        let bucket = self.next_occupied();
        let offset = (bucket + WHEEL - (self.cursor as usize % WHEEL)) % WHEEL;
        Some(self.cursor + offset as u64)
    }

    fn pop_far(&mut self) -> Option<(u64, Option<E>)> {
        let Reverse((at, _, slot)) = self.far.pop()?;
        let ev = self.slab[slot].take();
        self.free.push(slot);
        Some((at, ev))
    }

    fn to_wheel(&mut self, at: u64, slot: usize) {
        let bucket = at as usize % WHEEL;
        self.wheel[bucket].push_back(u32::try_from(slot).expect("fewer than 2^32 pending events"));
        self.occupied[bucket / 64] |= 1u64 << (bucket % 64);
        self.in_wheel += 1;
    }

    /// Moves the far events now within reach of the cursor to the wheel, in (time, sequence)
    /// order.
    fn migrate(&mut self) {
        while let Some(&Reverse((at, _, slot))) = self.far.peek() {
            debug_assert!(at >= self.cursor, "an event before the cursor is popped first");
            if at >= self.cursor + WHEEL as u64 {
                break;
            }
            self.far.pop();
            self.to_wheel(at, slot);
        }
    }

    /// The first occupied bucket from the cursor's, wrapping: the earliest event (all wheel
    /// events are within `WHEEL` of the cursor). Call only with `in_wheel > 0`.
    fn next_occupied(&self) -> usize {
        let start = self.cursor as usize % WHEEL;
        let words = self.occupied.len();
        let (w0, b0) = (start / 64, start % 64);
        let first = self.occupied[w0] & (!0u64 << b0);
        if first != 0 {
            return w0 * 64 + first.trailing_zeros() as usize;
        }
        for i in 1..=words {
            let w = (w0 + i) % words;
            // Back at the starting word: only its bits below the start are left.
            let bits = if w == w0 { self.occupied[w] & !(!0u64 << b0) } else { self.occupied[w] };
            if bits != 0 {
                return w * 64 + bits.trailing_zeros() as usize;
            }
        }
        unreachable!("in_wheel > 0 but no bucket is occupied")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The wheel pops exactly what a plain (time, sequence) heap pops, for a random mix of
    /// near, far, same-time and past events scheduled between pops.
    #[test]
    fn pops_in_the_order_of_a_time_and_sequence_heap() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut q: EventQueue<u64> = EventQueue::new();
        let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
        let (mut seq, mut now) = (0u64, 0u64);
        for _ in 0..200_000 {
            if rng.random_range(0..3) > 0 || heap.is_empty() {
                let at = match rng.random_range(0..10) {
                    0 => now.saturating_sub(rng.random_range(0..50)),
                    1..=2 => now + rng.random_range(WHEEL as u64 - 5..3 * WHEEL as u64),
                    3 => now,
                    _ => now + rng.random_range(0..2_000),
                };
                seq += 1;
                q.schedule(at, seq);
                heap.push(Reverse((at, seq)));
            } else {
                let Reverse((at, s)) = heap.pop().unwrap();
                assert_eq!(q.peek_time(), Some(at));
                assert_eq!(q.pop(), Some((at, Some(s))));
                now = at;
            }
        }
        while let Some(Reverse((at, s))) = heap.pop() {
            assert_eq!(q.pop(), Some((at, Some(s))));
        }
        assert_eq!(q.pop(), None);
    }
}

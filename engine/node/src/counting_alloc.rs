//! The engine's global allocator: mimalloc, with the bytes the Rust heap holds in use counted.
//!
//! Why: mimalloc reports the memory it has committed (`pqdag_heap_bytes{kind=
//! "mimalloc_committed"}`, a high-water mark on Linux, where a purge keeps the commit) but, in a
//! release build, not the bytes allocated in it. Without them a rise of RSS cannot be told apart:
//! more live data (a table or a queue that grew) or the same data spread over more pages
//! (fragmentation). `kind="rust_in_use"` is that count, beside jemalloc's `libc_in_use` for the
//! C heap.
//!
//! Cost: each allocation and free adds its size to a counter of the calling thread, a
//! thread-local lookup and a relaxed load and store on a cache line no other thread writes
//! (no read-modify-write, no lock). A scrape sums the counters. A block freed by another thread
//! than the one that allocated it is subtracted from the freeing thread's counter, so single
//! counters may go negative; the sum is exact. Threads beyond the first `SLOTS - 1` share the
//! last counter with an atomic add.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};

/// mimalloc, counting the bytes in use.
pub struct CountingMiMalloc;

/// Per-thread counters; the last one is shared by any thread past the others.
const SLOTS: usize = 128;

/// One counter per cache line, so that threads do not invalidate each other's lines.
#[repr(align(64))]
struct Slot(AtomicIsize);

static COUNTERS: [Slot; SLOTS] = [const { Slot(AtomicIsize::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
/// Set by the first allocation through [`CountingMiMalloc`]: the count means something.
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's counter, assigned at its first allocation.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn count(delta: isize) {
    if !INSTALLED.load(Relaxed) {
        INSTALLED.store(true, Relaxed);
    }
    // `try_with` fails only while the thread's locals are being torn down: the shared counter.
    let slot = SLOT
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_SLOT.fetch_add(1, Relaxed).min(SLOTS - 1);
                s.set(i);
            }
            i
        })
        .unwrap_or(SLOTS - 1);
    let c = &COUNTERS[slot].0;
    if slot < SLOTS - 1 {
        // Only this thread writes this counter.
        c.store(c.load(Relaxed).wrapping_add(delta), Relaxed);
    } else {
        c.fetch_add(delta, Relaxed);
    }
}

// SAFETY: every call is forwarded to mimalloc unchanged; the counting touches no memory the
// caller owns and never allocates.
unsafe impl GlobalAlloc for CountingMiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator gave out, with its layout.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's block, layout and new size, forwarded.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Bytes the Rust heap holds in use (requested sizes, not mimalloc's size classes), or `None`
/// where [`CountingMiMalloc`] is not the global allocator (a test binary, the `alloc-trace`
/// build).
pub fn rust_heap_in_use() -> Option<usize> {
    if !INSTALLED.load(Relaxed) {
        return None;
    }
    let sum: isize = COUNTERS.iter().map(|c| c.0.load(Relaxed)).sum();
    Some(sum.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: CountingMiMalloc = CountingMiMalloc;

    /// An allocation shows in the count while it lives, whether it grows in place or moves, and
    /// leaves it when freed, also by another thread.
    #[test]
    fn the_count_follows_allocations_across_threads() {
        const BYTES: usize = 8 << 20;
        // Other tests allocate and free meanwhile: a margin of a quarter.
        let margin = BYTES / 4;
        let before = rust_heap_in_use().expect("the counting allocator is installed in this test binary");
        let mut v: Vec<u8> = Vec::with_capacity(BYTES);
        v.resize(BYTES, 1);
        let during = rust_heap_in_use().unwrap();
        assert!(during + margin >= before + BYTES, "in use {before} -> {during} with {BYTES} more allocated");
        v.reserve_exact(2 * BYTES);
        let grown = rust_heap_in_use().unwrap();
        assert!(grown + margin >= before + 3 * BYTES, "after realloc to {}: {grown}", 3 * BYTES);
        // Freed on another thread than the one that allocated it.
        std::thread::spawn(move || drop(v)).join().unwrap();
        let after = rust_heap_in_use().unwrap();
        assert!(after <= before + margin, "freed elsewhere: {before} -> {after}");
    }
}

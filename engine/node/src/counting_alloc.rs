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
//! counters may go negative; the sum is exact. Threads beyond the first `SLOTS - 1` (255) share the
//! last counter with an atomic add.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering::Relaxed};

/// mimalloc, counting the bytes in use.
pub struct CountingMiMalloc;

/// Per-thread counters; the last one is shared by any thread past the others.
const SLOTS: usize = 256;

/// One counter per cache line, so that threads do not invalidate each other's lines.
#[repr(align(64))]
struct Slot(AtomicIsize);

static COUNTERS: [Slot; SLOTS] = [const { Slot(AtomicIsize::new(0)) }; SLOTS];
/// Counters handed out so far: 0 until a thread allocates through [`CountingMiMalloc`].
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's counter, assigned at its first allocation.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn count(delta: isize) {
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
/// where [`CountingMiMalloc`] is not the global allocator (the `alloc-trace` build, a test
/// binary of another crate).
pub fn rust_heap_in_use() -> Option<usize> {
    if NEXT_SLOT.load(Relaxed) == 0 {
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

    /// This thread's counter, or `None` if it shares the last one. Other threads never write a
    /// private counter, so its changes are this thread's allocations and frees, exactly.
    fn this_thread_count() -> Option<isize> {
        count(0);
        let slot = SLOT.with(|s| s.get());
        (slot < SLOTS - 1).then(|| COUNTERS[slot].0.load(Relaxed))
    }

    /// An allocation counts on the thread that made it, a realloc by the difference, and a free
    /// on the thread that frees it, also when that is another thread; the scrape sums them.
    #[test]
    fn the_count_follows_allocations_across_threads() {
        const BYTES: usize = 32 << 20;
        assert!(rust_heap_in_use().is_some(), "the counting allocator is installed in this test binary");
        let (v, counts) = std::thread::spawn(|| {
            let start = this_thread_count().expect("a private counter (raise SLOTS)");
            let mut v: Vec<u8> = Vec::with_capacity(BYTES);
            v.resize(BYTES, 1);
            let allocated = this_thread_count().unwrap();
            v.reserve_exact(2 * BYTES);
            let grown = this_thread_count().unwrap();
            (v, [allocated - start, grown - start])
        })
        .join()
        .unwrap();
        assert_eq!(counts, [BYTES as isize, 3 * BYTES as isize], "allocated, then grown to three times");
        // Freed on another thread than the one that allocated it.
        let freed = std::thread::spawn(move || {
            let start = this_thread_count().expect("a private counter (raise SLOTS)");
            drop(v);
            this_thread_count().unwrap() - start
        })
        .join()
        .unwrap();
        assert_eq!(freed, -3 * BYTES as isize, "the freeing thread's counter");
    }
}

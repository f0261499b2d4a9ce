//! A diagnostic allocator (feature `alloc-trace`, off in every normal build): mimalloc, plus a
//! line and a backtrace on stderr for every allocation or reallocation of at least
//! `PQDAG_ALLOC_TRACE_BYTES` (default 1 MiB), with the seconds since the first one. Why: a
//! step of the Rust heap that stays (`pqdag_heap_bytes{kind="mimalloc_committed"}`) is most
//! often one table's growth; this names the table and the line that grew it
//! (`docs/benchmark.md`, "The heap's steps, found"). Capturing a backtrace
//! loads the binary's debug info, ~70 MiB of RSS: do not read memory levels from such a run.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

/// mimalloc with large allocations reported.
pub(crate) struct TracingAlloc;

thread_local! {
    /// Set while this thread reports (the report allocates too).
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}
static START: OnceLock<Instant> = OnceLock::new();
static THRESHOLD: OnceLock<usize> = OnceLock::new();

fn report(kind: &str, old: usize, new: usize) {
    // The threshold is read once; reading the environment allocates, so guard it as a report.
    if new < (1 << 16) {
        return;
    }
    let _ = REPORTING.try_with(|r| {
        if r.get() {
            return;
        }
        r.set(true);
        let threshold = *THRESHOLD.get_or_init(|| std::env::var("PQDAG_ALLOC_TRACE_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 20));
        if new >= threshold {
            let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
            let bt = std::backtrace::Backtrace::force_capture();
            eprintln!("ALLOC-TRACE t={t:.1} {kind} {old} -> {new}\n{bt}\nALLOC-TRACE-END");
        }
        r.set(false);
    });
}

// SAFETY: every call is forwarded unchanged to mimalloc; the report only reads sizes.
unsafe impl GlobalAlloc for TracingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        report("alloc", 0, l.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        report("alloc_zeroed", 0, l.size());
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        report("realloc", l.size(), new);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.realloc(p, l, new) }
    }
}

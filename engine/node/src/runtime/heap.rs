//! The C heap (glibc malloc) under RocksDB: a fixed mmap threshold, so that large blocks the
//! store frees (filter and index blocks, compaction buffers) go back to the system instead of
//! leaving holes in the heap that are reused only in part.
//!
//! Rust allocations go to mimalloc (`#[global_allocator]`); RocksDB is C++ and allocates with
//! glibc. In two 20-minute benches at 1200/s glibc's in-use bytes grew 0.1-0.2 MiB/min per node
//! while its held bytes grew 0.8-1.2 MiB/min, to 128-136 MiB held for 77-89 MiB in use
//! (`pqdag_heap_bytes{kind="libc_in_use"|"libc_held"}`). glibc's mmap threshold is dynamic: once
//! a mapped block is freed, blocks up to its size are carved from the heap instead. Fixed at
//! 128 KiB, the same run held 89-91 MiB (slope 0.5 MiB/min) and each node's RSS at 20 minutes
//! was ~40 MiB lower (`docs/benchmark.md`, "Memory by part").
//!
//! What was left growing (0.5 MiB/min of held bytes) is free memory inside the heaps that glibc
//! keeps: holes below the top of an arena, and one arena per thread that ever allocated (up to
//! 8 per core). So the node also caps the arenas ([`ARENA_MAX`]) and hands the free pages back
//! every [`TRIM_EVERY`] (`malloc_trim(0)`, which since glibc 2.8 releases whole free pages in
//! the middle of a heap too, not only its top), on a thread of its own, off the hot path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// glibc arenas at most: the shard threads allocate from mimalloc, so the C heap serves
/// RocksDB's own threads and its calls from the shards, which two arenas carry without
/// contention worth measuring; the default (8 per core) keeps a held heap per thread.
pub(crate) const ARENA_MAX: i32 = 2;
/// How often the free pages of the C heap are given back.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Blocks at least this large get a mapping of their own, returned whole on free (glibc's
/// default starts here too, then rises with every mapped block freed, up to 32 MiB).
pub(crate) const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes glibc's mmap threshold before the store starts its threads. A value the operator set
/// in the environment (`MALLOC_MMAP_THRESHOLD_`, or `glibc.malloc.mmap_threshold` in
/// `GLIBC_TUNABLES`, which glibc reads itself) wins: then this does nothing.
pub(crate) fn tune_c_heap() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() || tunables.contains("glibc.malloc.mmap_threshold") {
        return;
    }
    // SAFETY: mallopt only sets a tunable of the allocator; the value is positive and below
    // glibc's maximum (32 MiB on 64-bit).
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } != 1 {
        tracing::warn!(value = MMAP_THRESHOLD, "mallopt(M_MMAP_THRESHOLD) refused; the C heap keeps glibc's dynamic threshold");
    }
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tunables.contains("glibc.malloc.arena_max") {
        // SAFETY: as above; a positive arena count.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) } != 1 {
            tracing::warn!(value = ARENA_MAX, "mallopt(M_ARENA_MAX) refused; glibc keeps its default arena count");
        }
    }
}

/// Starts the thread that gives the C heap's free pages back every [`TRIM_EVERY`] until `stop`
/// is set. `PQDAG_MALLOC_TRIM=0` in the environment turns it off (to measure without it).
pub(crate) fn spawn_trimmer(stop: Arc<AtomicBool>) {
    if std::env::var("PQDAG_MALLOC_TRIM").is_ok_and(|v| v == "0") {
        return;
    }
    let spawned = std::thread::Builder::new().name("pqdag-heap-trim".into()).spawn(move || {
        let mut next = Instant::now() + TRIM_EVERY;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500));
            if Instant::now() >= next {
                // SAFETY: malloc_trim takes each arena's lock in turn and returns free pages
                // with madvise; it touches no memory the program holds.
                unsafe { libc::malloc_trim(0) };
                next = Instant::now() + TRIM_EVERY;
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("heap trimmer not started: {e}");
    }
}

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
}

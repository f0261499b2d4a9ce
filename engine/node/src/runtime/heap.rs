//! The two heaps of a node. The C heap (glibc malloc) under RocksDB: a fixed mmap threshold, so
//! that large blocks the store frees (filter and index blocks, compaction buffers) go back to
//! the system instead of leaving holes in the heap that are reused only in part. The Rust heap
//! (mimalloc): freed pages go back to the system at once, not after a delay
//! ([`tune_rust_heap`]).
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

/// mimalloc's option numbers (`mi_option_e` in the mimalloc v3 header vendored by
/// `libmimalloc-sys` 0.1.49; the crate exports only some of them).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give freed pages back to the system at once (`purge_delay` 0, default 1 s)
/// and commit new arenas only as they are used (`arena_eager_commit` 0). Measured in the
/// 20-minute bench at 1200/s (docs/benchmark.md, run H): RSS slope 0.71-0.74 MiB/min on every
/// node and 257 MiB at most, against 0.74-1.78 and 284 MiB with the defaults (run G), at the
/// same CPU per vertex. An operator's `MIMALLOC_PURGE_DELAY` / `MIMALLOC_ARENA_EAGER_COMMIT`
/// (read by mimalloc itself, before `main`) wins: then the option is left alone.
pub(crate) fn tune_rust_heap() {
    for (env, option) in [("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY), ("MIMALLOC_ARENA_EAGER_COMMIT", MI_OPTION_ARENA_EAGER_COMMIT)] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mi_option_set stores an integer option; both numbers are valid options
            // of the vendored mimalloc, and 0 is a valid value for each.
            unsafe { libmimalloc_sys::mi_option_set(option, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option numbers name the options meant: mimalloc's defaults for them are 1000 (ms) and
    /// 2, and after tuning both read 0.
    #[test]
    fn the_rust_heap_purges_at_once() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() || std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some() {
            return;
        }
        // SAFETY: reads of integer options.
        let (purge, eager) = unsafe { (libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT)) };
        if (purge, eager) != (0, 0) {
            // Not tuned yet in this process.
            assert_eq!((purge, eager), (1000, 2), "mimalloc's defaults at these option numbers");
        }
        tune_rust_heap();
        // SAFETY: as above.
        let (purge, eager) = unsafe { (libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT)) };
        assert_eq!((purge, eager), (0, 0));
    }
}

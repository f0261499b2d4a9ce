//! The two heaps of a node, and how each gives freed memory back to the system.
//!
//! - Rust allocations go to mimalloc (`#[global_allocator]`). It returns freed pages at once,
//!   not after a delay, commits new arenas as they are used, and the kernel does not fold its
//!   arena into transparent huge pages ([`tune_rust_heap`]).
//! - C and C++ allocations (RocksDB, linked as a shared library, and liboqs) go to jemalloc:
//!   `tikv-jemalloc-sys` with its unprefixed symbols defines `malloc`, `free` and the rest in
//!   the executable, and the dynamic linker binds RocksDB's calls to them instead of glibc's.
//!   jemalloc purges freed pages on a decay schedule, from background threads
//!   ([`tune_c_heap`]).
//!
//! Why jemalloc under RocksDB (docs/benchmark.md, "Memory by part", runs D to Z): with glibc's
//! malloc the C heap's held bytes grew 0.34-0.6 MiB/min on every node of the 20-minute bench
//! at 1200/s while its bytes in use grew 0.02-0.1: fragmentation, from RocksDB's blocks of
//! many sizes and lifetimes (block cache entries, memtable arenas, filter partitions) freed by
//! other threads than the ones that allocated them. A fixed 128 KiB mmap threshold halved it;
//! two arenas and `malloc_trim` did not help; mimalloc for both heaps (its `override`) made it
//! worse. With jemalloc (run Z) the C heap's resident bytes grew 0.01-0.08 MiB/min.

/// Starts jemalloc's background purge threads, so that pages the C heap freed go back to the
/// system on jemalloc's decay schedule (`dirty_decay_ms`, 10 s) even when no thread of that
/// arena allocates. An operator's `MALLOC_CONF` (read by jemalloc itself) comes first: a
/// `background_thread` set there is left alone.
pub(crate) fn tune_c_heap() {
    if std::env::var("MALLOC_CONF").is_ok_and(|c| c.contains("background_thread")) {
        return;
    }
    let on = true;
    // SAFETY: a write of a bool option through jemalloc's control interface; the name is
    // NUL-terminated and the new value points to a live bool of the size given.
    let rc = unsafe { tikv_jemalloc_sys::mallctl(c"background_thread".as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), (&on as *const bool).cast_mut().cast(), std::mem::size_of::<bool>()) };
    if rc != 0 {
        tracing::warn!(rc, "jemalloc refused background_thread; freed C-heap pages go back only as its arenas allocate");
    }
}

/// The C heap's bytes in use by RocksDB (`stats.allocated`) and held resident by jemalloc
/// for it (`stats.resident`: in use, freed but not yet purged, and its own metadata), after
/// refreshing jemalloc's statistics. `None` if jemalloc refuses a read.
pub(crate) fn c_heap_bytes() -> Option<(usize, usize)> {
    let mut epoch: u64 = 1;
    let mut len = std::mem::size_of::<u64>();
    // SAFETY: jemalloc's control interface with NUL-terminated names and out-pointers to live
    // locals of the sizes given (`epoch` is a u64, the statistics are size_t).
    unsafe {
        let e = (&mut epoch as *mut u64).cast();
        if tikv_jemalloc_sys::mallctl(c"epoch".as_ptr(), e, &mut len, e, len) != 0 {
            return None;
        }
        let read = |name: &std::ffi::CStr| {
            let mut v: usize = 0;
            let mut len = std::mem::size_of::<usize>();
            (tikv_jemalloc_sys::mallctl(name.as_ptr(), (&mut v as *mut usize).cast(), &mut len, std::ptr::null_mut(), 0) == 0).then_some(v)
        };
        Some((read(c"stats.allocated")?, read(c"stats.resident")?))
    }
}

/// mimalloc's option numbers (`mi_option_e` in the mimalloc v3 header vendored by
/// `libmimalloc-sys` 0.1.49; the crate exports only some of them).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before it gives them back to the system, ms.
///
/// 100, not mimalloc's 1 000 nor the 0 set from 2026-12-03 to 2026-12-07. At 0 every freed
/// page went back at once and was faulted in again moments later: at one payload per vertex,
/// page faults and `madvise` were ~7.5 % of a node's CPU. Measured (`bench --nodes 3 --rate
/// 2500 --max-batch 1 --duration 30`, alternated 0, 100, 0, 100): 2 386 / 2 448 payloads/s at
/// 0 (saturated, p95 4.0 / 3.5 s, 828 / 799 us of CPU per vertex, max RSS 349 / 340 MiB), all
/// 2 500 at 100 (p95 0.76 / 1.19 s, 721 / 724 us, 299 / 311 MiB). What 0 was chosen for, the
/// 20-minute bench's RSS slope, was mostly the kernel folding the heap into huge pages, turned
/// off since (`disable_transparent_huge_pages`); 100 ms of freed pages is a few MiB.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Sets mimalloc's purge delay ([`PURGE_DELAY_MS`], default 1 s) and makes it commit new arenas
/// only as they are used (`arena_eager_commit` 0). An operator's `MIMALLOC_PURGE_DELAY` /
/// `MIMALLOC_ARENA_EAGER_COMMIT` (read by mimalloc itself, before `main`) wins: then the option
/// is left alone.
pub(crate) fn tune_rust_heap() {
    for (env, option, value) in [("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS), ("MIMALLOC_ARENA_EAGER_COMMIT", MI_OPTION_ARENA_EAGER_COMMIT, 0)] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mi_option_set stores an integer option; both numbers are valid options
            // of the vendored mimalloc, and a delay in ms and 0 are valid values.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        disable_transparent_huge_pages();
    }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), as mimalloc's
/// `allow_thp = 0` would if it were read before the heap's first arena.
///
/// Why: mimalloc reserves its 1 GiB arena with `MADV_HUGEPAGE` (its default `allow_thp`), so
/// with the common `madvise` (or `always`) system setting the kernel's khugepaged folds any
/// 2 MiB stretch of the arena that has one page resident into a whole huge page, at whatever
/// minute its scan gets there: the pages mimalloc had purged come back resident, and RSS steps
/// up 2 MiB per fold without one byte more allocated. That was the last of the RSS slope in the
/// 20-minute bench (docs/benchmark.md, run C1: 12-14 MiB on one node per run, at a different
/// minute each time, while `rust_in_use` stayed flat). An operator who wants huge pages for the
/// heap anyway sets `MIMALLOC_ALLOW_THP=1` in the unit's environment: then nothing is changed.
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "PR_SET_THP_DISABLE refused: the kernel may fold the Rust heap into huge pages, and RSS rise with no more allocated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `malloc` in this process is jemalloc's: 8 MiB from the C heap show up in jemalloc's
    /// bytes in use, and leave them when freed (with glibc's malloc they would not).
    #[test]
    fn c_allocations_go_to_jemalloc() {
        const BYTES: usize = 8 << 20;
        let (before, _) = c_heap_bytes().expect("jemalloc statistics");
        // SAFETY: a plain C allocation, checked for NULL, written, and freed once below.
        // `black_box`: an optimised build may otherwise drop a malloc/free pair nobody reads.
        let p = std::hint::black_box(unsafe { libc::malloc(BYTES) });
        assert!(!p.is_null());
        // SAFETY: `p` points to BYTES writable bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, BYTES) };
        let (during, held) = c_heap_bytes().expect("jemalloc statistics");
        // Other tests' threads allocate and free meanwhile: a margin of a quarter.
        assert!(during >= before + BYTES * 3 / 4, "in use {before} -> {during}: malloc is not jemalloc's");
        assert!(held >= during, "resident {held} covers in use {during}");
        // SAFETY: `p` came from malloc and is freed once.
        unsafe { libc::free(p) };
        let (after, _) = c_heap_bytes().expect("jemalloc statistics");
        assert!(after + BYTES * 3 / 4 <= during, "freed: {during} -> {after}");
    }

    /// The option numbers name the options meant: mimalloc's defaults for them are 1000 (ms) and
    /// 2, and after tuning they read PURGE_DELAY_MS and 0.
    #[test]
    fn the_rust_heap_purges_soon() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() || std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_some() {
            return;
        }
        // SAFETY: reads of integer options.
        let (purge, eager) = unsafe { (libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT)) };
        if (purge, eager) != (PURGE_DELAY_MS, 0) {
            // Not tuned yet in this process.
            assert_eq!((purge, eager), (1000, 2), "mimalloc's defaults at these option numbers");
        }
        tune_rust_heap();
        // SAFETY: as above.
        let (purge, eager) = unsafe { (libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT)) };
        assert_eq!((purge, eager), (PURGE_DELAY_MS, 0));
    }

    /// After tuning, the kernel will not back this process with transparent huge pages: no
    /// mapping of it is eligible any more, the heap's included.
    #[test]
    fn transparent_huge_pages_are_off_after_tuning() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        tune_rust_heap();
        // SAFETY: prctl with PR_GET_THP_DISABLE takes no pointers.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
        assert_eq!(flag, 1, "PR_GET_THP_DISABLE after tuning");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let eligible = smaps.lines().filter(|l| l.starts_with("THPeligible:") && l.split_whitespace().nth(1) == Some("1")).count();
        assert_eq!(eligible, 0, "mappings still eligible for huge pages");
    }
}

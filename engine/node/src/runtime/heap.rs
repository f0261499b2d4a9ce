//! The C heap (glibc malloc) under RocksDB: fewer arenas and a periodic trim, so that the
//! store's churn (memtables filled and freed, compaction buffers) is returned to the system
//! instead of accumulating as free-but-resident pages.
//!
//! Rust allocations go to mimalloc (`#[global_allocator]`); RocksDB is C++ and allocates with
//! glibc. In 20-minute benches glibc's in-use bytes stayed flat while its held bytes grew by
//! ~1 MiB/min per node: fragmentation across glibc's default 8-per-core arenas, each keeping its
//! freed pages. `pqdag_heap_bytes{kind="libc_in_use"|"libc_held"}` show the two apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// glibc arenas the process may use; RocksDB's allocations are few and large (memtable arena
/// blocks, table blocks), so two arenas cost little contention and bound fragmentation.
pub(crate) const ARENA_MAX: i32 = 2;

/// How often free pages in every arena are handed back (`malloc_trim` walks all arenas; at
/// ~100 MiB of C heap one pass takes about a millisecond, on a thread of its own).
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Caps glibc's arena count before the store starts its threads. An operator's
/// `MALLOC_ARENA_MAX` in the environment wins (glibc reads it itself), so this is skipped.
pub(crate) fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a tunable of the allocator; M_ARENA_MAX takes a positive count.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
    if ok != 1 {
        tracing::warn!(arena_max = ARENA_MAX, "mallopt(M_ARENA_MAX) refused; the C heap keeps glibc's default arenas");
    }
}

/// Starts the thread that trims the C heap every [`TRIM_EVERY`] until `stop` is set.
pub(crate) fn spawn_trimmer(stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("pqdag-heap-trim".into()).spawn(move || {
        let tick = Duration::from_millis(200);
        let mut waited = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(tick);
            waited += tick;
            if waited >= TRIM_EVERY {
                waited = Duration::ZERO;
                // SAFETY: malloc_trim takes the arena locks itself; 0 keeps no pad at the top.
                unsafe { libc::malloc_trim(0) };
            }
        }
    })
}

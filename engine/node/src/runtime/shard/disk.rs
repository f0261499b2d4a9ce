//! The free-space floor of the data directory (`[storage] min_free_bytes`). A store write that
//! fails stops the node (exit 1, [`super::setup::Fatal`]), and on a full disk RocksDB itself
//! aborted a node in a bench (`docs/benchmark.md`, "Ten minutes at 1200/s"). So once a second
//! the stats tick reads the filesystem's free bytes (`statvfs`), and below the floor the
//! gateway refuses client submissions with a clear message: the node's own clients cannot
//! fill its disk, while peers' vertices are still stored and consensus goes on (retention, or
//! an operator freeing space, brings it back). Owns the last reading only.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The floor and the last reading of the filesystem that holds the store.
pub(super) struct DiskFloor {
    dir: PathBuf,
    min_free: u64,
    /// Free bytes at the last reading (unprivileged: `f_bavail`); `None` before the first or
    /// when the reading failed (then nothing is refused on its account).
    free: Option<u64>,
}

impl DiskFloor {
    /// A floor of `min_free` bytes (0: none) on the filesystem of `dir`; not read yet.
    pub(super) fn new(dir: PathBuf, min_free: u64) -> Self {
        Self { dir, min_free, free: None }
    }

    /// Reads the free bytes (the stats tick, once a second); logs when the floor is crossed
    /// either way. Returns the reading for the metric.
    pub(super) fn refresh(&mut self) -> Option<u64> {
        let was_low = self.is_low();
        self.free = match free_bytes(&self.dir) {
            Ok(free) => Some(free),
            Err(e) => {
                if self.free.is_some() {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "statvfs of the data directory failed; the free-space floor is not applied");
                }
                None
            }
        };
        match (was_low, self.is_low()) {
            (false, true) => tracing::error!(free = self.free, min_free_bytes = self.min_free, dir = %self.dir.display(), "disk nearly full: refusing client submissions until space is freed"),
            (true, false) => tracing::warn!(free = self.free, min_free_bytes = self.min_free, "disk space back above the floor: accepting client submissions"),
            _ => {}
        }
        self.free
    }

    /// Whether the last reading is under the floor.
    pub(super) fn is_low(&self) -> bool {
        self.free.is_some_and(|free| free < self.min_free)
    }

    /// Why a submission is refused now, if it is (the client's message).
    pub(super) fn refusal(&self) -> Option<String> {
        let free = self.free.filter(|_| self.is_low())?;
        Some(format!(
            "disk nearly full: {} MiB free on the node's data directory, under its floor of {} MiB ([storage] min_free_bytes); submit to another node",
            free >> 20,
            self.min_free >> 20
        ))
    }
}

/// Bytes an unprivileged process may still write on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a valid NUL-terminated string and `st` a writable statvfs record;
    // statvfs only writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_refuses_and_none_does_not() {
        let dir = std::env::temp_dir();
        let mut none = DiskFloor::new(dir.clone(), 0);
        assert!(none.refresh().is_some_and(|free| free > 0));
        assert!(!none.is_low() && none.refusal().is_none());

        let mut huge = DiskFloor::new(dir.clone(), u64::MAX);
        assert!(huge.refusal().is_none(), "nothing refused before the first reading");
        huge.refresh();
        assert!(huge.is_low());
        assert!(huge.refusal().is_some_and(|m| m.contains("disk nearly full") && m.contains("min_free_bytes")));

        let mut missing = DiskFloor::new(dir.join("pqdag-no-such-dir-for-statvfs"), u64::MAX);
        assert_eq!(missing.refresh(), None);
        assert!(!missing.is_low(), "an unreadable filesystem refuses nothing");
    }
}

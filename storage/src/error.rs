//! Storage errors.

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB reported an error (I/O, corruption, lock held by another process...).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored record could not be decoded: the data dir is corrupt or from another version.
    #[error("corrupt record in {cf}: {reason}")]
    Corrupt {
        /// Column family.
        cf: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A write would change a final decision (a bug upstream: refused, never applied).
    #[error("refused to change final vertex {id}: {reason}")]
    FinalityViolation {
        /// The vertex.
        id: String,
        /// What the write tried.
        reason: String,
    },
    /// A status was set for a vertex that is neither stored nor in the same batch.
    #[error("status for unknown vertex {0}")]
    UnknownVertex(String),
}

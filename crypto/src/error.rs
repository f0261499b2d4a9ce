//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Inputs from outside (files, network bytes) are
/// always answered with one of these, never with a panic.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A key or signature had the wrong length for ML-DSA-87.
    #[error("{what}: expected {expected} bytes, got {got}")]
    BadLength {
        /// Which object was being parsed.
        what: &'static str,
        /// The ML-DSA-87 size.
        expected: usize,
        /// What was supplied.
        got: usize,
    },
    /// A signature did not verify.
    #[error("signature verification failed")]
    InvalidSignature,
    /// liboqs reported an internal failure (e.g. the algorithm is disabled in the build).
    #[error("liboqs: {0}")]
    Oqs(String),
    /// An identity file could not be read or written.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An identity file was read but its contents are not a valid identity.
    #[error("identity file {path}: {reason}")]
    BadIdentityFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An identity file holds a key of another algorithm.
    #[error("identity file {path}: algorithm 0x{found:02x} is not ML-DSA-87 (0x{expected:02x})")]
    WrongAlgorithm {
        /// The file.
        path: PathBuf,
        /// The algorithm byte found.
        found: u8,
        /// The ML-DSA-87 algorithm byte.
        expected: u8,
    },
    /// The public key stored beside a secret key does not belong to it.
    #[error("identity file {path}: public key does not match the secret key")]
    KeyMismatch {
        /// The file.
        path: PathBuf,
    },
}

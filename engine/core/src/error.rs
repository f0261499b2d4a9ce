//! One structured error enum for the core (spec 6.3, adapted: no transport errors in a sans-IO
//! core).

use std::time::Duration;

/// Result alias used across the core.
pub type ConsensusResult<T> = Result<T, ConsensusError>;

/// Why an operation of the core failed. The shell logs it and, for peer-caused errors, the core
/// has already scored the peer.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ConsensusError {
    /// The DAG refused an operation (unknown parent, conflicting own submission, full buffer).
    #[error("DAG error: {0}")]
    Dag(String),
    /// A signature failed verification (reported by the shell).
    #[error("signature verification failed")]
    InvalidSignature,
    /// A query timed out.
    #[error("query timeout after {0:?}")]
    Timeout(Duration),
    /// Fewer responses than alpha.
    #[error("insufficient responses: got {got}, need {need}")]
    InsufficientResponses {
        /// Responses received.
        got: usize,
        /// Alpha.
        need: usize,
    },
    /// A peer misbehaved.
    #[error("Byzantine behavior detected from {0}")]
    Byzantine(String),
    /// More than half of the recent queries timed out.
    #[error("network partition suspected")]
    Partition,
    /// Parameters break a rule of spec 3.2.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// A configured bound was reached.
    #[error("capacity exhausted: {0}")]
    Capacity(&'static str),
}

//! One error type for every client call, so callers match on what happened, not on strings.

use std::time::Duration;

/// What went wrong. Variants that name a `node` say which cluster member answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The node does not accept this client's key (it closed the connection at connect with
    /// QUIC application code 7, `NOT_AUTHORIZED`). Never failed over: every node of a cluster
    /// is normally given the same `client_keys`, and the fix is the operator's.
    #[error("{node}: not authorized: {message}")]
    NotAuthorized {
        /// The refusing node.
        node: String,
        /// Its reason.
        message: String,
    },
    /// Every node tried was overloaded; retry after `retry_after`.
    #[error("overloaded ({node}: {message}); retry after {retry_after:?}")]
    Overloaded {
        /// The last node that refused.
        node: String,
        /// Its reason.
        message: String,
        /// How long to wait before retrying (the node sends no hint today: this is the
        /// client's configured back-off).
        retry_after: Duration,
    },
    /// The payload spends a conflict key a vertex the node knows already spends. Never retried:
    /// another node would refuse it too, or sign a double spend consensus must reject.
    #[error("{node}: conflict: {message}")]
    Conflict {
        /// The refusing node.
        node: String,
        /// Its reason (names the key).
        message: String,
    },
    /// The node is starting or catching up (retried on another node first).
    #[error("{node}: not ready: {message}")]
    NotReady {
        /// The refusing node.
        node: String,
        /// Its reason.
        message: String,
    },
    /// The feed cursor points before the node's retained history (its retention pruned those
    /// decisions). Never retried: resume with a fresh cursor, or read an archive
    /// (`engine export`).
    #[error("{node}: pruned: {message}")]
    Pruned {
        /// The refusing node.
        node: String,
        /// Its reason (names the shard and the first decision still held).
        message: String,
    },
    /// A request the node refused as malformed, a reply this client cannot read, or a request
    /// this client refuses to send (out of the protocol's bounds).
    #[error("malformed: {0}")]
    Malformed(String),
    /// The node failed internally (storage...).
    #[error("{node}: internal error: {message}")]
    Server {
        /// The failing node.
        node: String,
        /// Its reason.
        message: String,
    },
    /// The node at `addr` does not hold the ML-DSA-87 key it is configured with. Never failed
    /// over: a wrong key is a misconfiguration or an impersonation, and must be seen.
    #[error("{node}: identity mismatch: {reason}")]
    IdentityMismatch {
        /// The node whose proof failed.
        node: String,
        /// What failed.
        reason: String,
    },
    /// A deadline passed (connecting, a request, or waiting for a decision).
    #[error("timed out after {0:?}: {1}")]
    Timeout(Duration, String),
    /// No node could be reached; one line per attempt.
    #[error("all nodes unavailable: {}", .attempts.join("; "))]
    AllNodesUnavailable {
        /// `node: reason` of each failed attempt.
        attempts: Vec<String>,
    },
    /// A subscription fell behind and events were dropped (subscribe again, and use `status`
    /// for the ids it may have missed).
    #[error("subscription lagged: events were dropped")]
    Lagged,
    /// The server does not support this yet (see the method's doc).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// TLS or QUIC configuration failed (a build problem, not a network one).
    #[error("tls: {0}")]
    Tls(String),
    /// A cluster file or node list that cannot be used.
    #[error("config: {0}")]
    Config(String),
    /// A socket or connection failure.
    #[error("io: {0}")]
    Io(String),
}

impl ClientError {
    /// Whether another node may succeed where this one failed.
    pub(crate) fn fails_over(&self) -> bool {
        matches!(self, ClientError::Io(_) | ClientError::Timeout(..) | ClientError::NotReady { .. } | ClientError::Server { .. } | ClientError::Overloaded { .. })
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e.to_string())
    }
}

//! The crate's one error type.

use std::time::Duration;

/// Everything the transport can fail with. Bytes from the network are answered with one of
/// these (or a stream reset and a counter), never with a panic.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket or executor operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration could not be built (certificate generation, provider, suites).
    #[error("tls: {0}")]
    Tls(String),
    /// The peer (or we) refused the handshake: e.g. it offered no X25519MLKEM768 key share.
    #[error("handshake refused: {reason}")]
    HandshakeRefused {
        /// Why, in words an operator can act on.
        reason: String,
    },
    /// The peer index or node id is not in the configured cluster.
    #[error("unknown peer")]
    UnknownPeer,
    /// The peer's channel-binding proof did not verify against the expected ML-DSA-87 key.
    #[error("peer identity mismatch: {0}")]
    IdentityMismatch(String),
    /// The node does not accept our client key (it closed with
    /// [`crate::close_code::NOT_AUTHORIZED`]): add the key to the node's `client_keys`.
    #[error("not authorized: the node does not accept this client key ({0})")]
    NotAuthorized(String),
    /// A frame exceeds [`crate::MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the {max} byte cap")]
    FrameTooLarge {
        /// Offending length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// No answer within the caller's deadline.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection closed before the operation completed.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The per-peer send queue is full; the message was not queued.
    #[error("send queue full")]
    QueueFull,
    /// The peer reset the stream or answered without a frame.
    #[error("stream reset by peer (code {0})")]
    StreamReset(u64),
    /// The configuration is unusable (bad address, no peers, ...).
    #[error("config: {0}")]
    Config(String),
    /// The ML-DSA-87 layer failed (signing our proof).
    #[error("crypto: {0}")]
    Crypto(#[from] pqdag_crypto::CryptoError),
    /// The peer is banned (disconnected for proven misbehaviour) until its cool-off ends:
    /// nothing is sent to it and its connections are refused.
    #[error("peer is banned for misbehaviour")]
    Banned,
    /// The transport was shut down.
    #[error("transport closed")]
    Closed,
}

impl From<glommio::GlommioError<()>> for TransportError {
    fn from(e: glommio::GlommioError<()>) -> Self {
        match e {
            glommio::GlommioError::IoError(io) => TransportError::Io(io),
            other => TransportError::Io(std::io::Error::other(other.to_string())),
        }
    }
}

//! Decoding errors.

/// Why a frame was refused. Each variant maps to a metric label in the engine, and a peer that
/// sends frames which fail here is charged Byzantine evidence (malformed message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the two-byte header.
    #[error("frame truncated: {0} bytes")]
    Truncated(usize),
    /// Longer than [`crate::limits::FRAME_BYTES_MAX`].
    #[error("frame of {got} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Frame length.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A protocol version this build does not speak.
    #[error("unsupported wire version {0}")]
    Version(u8),
    /// An unknown message kind byte.
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The archive failed bytecheck validation (garbage, truncation, out-of-range pointers).
    #[error("invalid {kind} archive: {reason}")]
    Invalid {
        /// The message kind the header claimed.
        kind: &'static str,
        /// bytecheck's reason.
        reason: String,
    },
    /// A structurally valid message broke a protocol bound.
    #[error("{what} is {got}, limit {max}")]
    Bound {
        /// Which field.
        what: &'static str,
        /// Its value.
        got: usize,
        /// The bound.
        max: usize,
    },
    /// A field holds a value outside its domain (e.g. a vote byte, a signature length).
    #[error("bad field {what}: {reason}")]
    BadField {
        /// Which field.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Encoding failed (only on messages that break the bounds; honest code never sees it).
    #[error("encode failed: {0}")]
    Encode(String),
}

//! Domain separation for signatures.

/// The kind of message a signature is made for.
///
/// Each kind signs under its own FIPS 204 context string (`ctx`), which ML-DSA binds into the
/// signature itself: a signature on a response can never verify as a vertex signature, even if
/// an attacker finds a response whose bytes equal some vertex's signed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A vertex: signed bytes are its 32-byte id.
    Vertex,
    /// A batched poll response: signed bytes are its canonical encoding.
    Response,
    /// A batched poll query (signed so a query can be attributed in evidence).
    Query,
    /// The transport handshake: signed bytes are the TLS exporter (channel binding).
    TransportBinding,
    /// A request on the client API.
    ClientRequest,
    /// A Byzantine alert carrying evidence.
    Alert,
}

impl Domain {
    /// All kinds, for tests that check the contexts are distinct.
    pub const ALL: [Domain; 6] = [
        Domain::Vertex,
        Domain::Response,
        Domain::Query,
        Domain::TransportBinding,
        Domain::ClientRequest,
        Domain::Alert,
    ];

    /// The FIPS 204 context string for this kind (at most 255 bytes by the standard).
    pub const fn context(self) -> &'static [u8] {
        match self {
            Domain::Vertex => b"pqdag/v1/vertex",
            Domain::Response => b"pqdag/v1/response",
            Domain::Query => b"pqdag/v1/query",
            Domain::TransportBinding => b"pqdag/v1/transport-binding",
            Domain::ClientRequest => b"pqdag/v1/client-request",
            Domain::Alert => b"pqdag/v1/alert",
        }
    }
}

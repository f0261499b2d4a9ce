//! Channel binding: each side proves its ML-DSA-87 identity over the TLS exporter.
//!
//! After the QUIC handshake both ends derive `EXPORTER_BYTES` bytes from the TLS exporter with
//! label [`EXPORTER_LABEL`] and a per-role context ([`CONTEXT_DIALER`] for a node dialing a
//! node, [`CONTEXT_CLIENT`] for a client, [`CONTEXT_ACCEPTOR`] for the accepting node), sign
//! them under `Domain::TransportBinding` and send the proof as the single frame of their first
//! unidirectional stream (stream type [`crate::frame::STREAM_IDENTITY`]). The exporter is
//! unique to this TLS session, so a proof cannot be replayed on another connection, and a
//! man in the middle (who terminates two TLS sessions) cannot forward one. The role context
//! stops a proof being reflected back to its sender, and a client proof being taken for a
//! node's.
//!
//! Order (ALPN version 2): the dialer proves first; the acceptor verifies that proof (it must
//! name a configured peer, or an accepted client key) and only then signs and sends its own.
//! An unproven connection costs the acceptor at most one verification, never a signature. The
//! dialer's proof is bound to the TLS session, so sending it to a server not yet verified gives
//! that server nothing it could use elsewhere.
//!
//! Proof layout: `magic "PQID"` (4) · version 1 (1) · node id (32) · ML-DSA-87 signature (4627).

use pqdag_crypto::{Domain, Keypair, PublicKey, SIGNATURE_BYTES};

/// TLS exporter label of the binding (RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-pqdag-transport-binding-v1";
/// Exporter context of the proof signed by the dialing side.
pub const CONTEXT_DIALER: &[u8] = b"dialer";
/// Exporter context of the proof signed by a client (client endpoint, ALPN `pqdag-client/2`).
pub const CONTEXT_CLIENT: &[u8] = b"client";
/// Exporter context of the proof signed by the accepting side.
pub const CONTEXT_ACCEPTOR: &[u8] = b"acceptor";
/// Exporter output length.
pub const EXPORTER_BYTES: usize = 32;
/// Proof magic.
pub const PROOF_MAGIC: &[u8; 4] = b"PQID";
/// Proof format version.
pub const PROOF_VERSION: u8 = 1;
/// Exact size of a proof frame.
pub const PROOF_BYTES: usize = 4 + 1 + 32 + SIGNATURE_BYTES;

/// A parsed (not yet verified) proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof<'a> {
    /// The node id the sender claims.
    pub node_id: [u8; 32],
    /// Its signature over the exporter.
    pub signature: &'a [u8],
}

/// Builds our proof over `exporter`.
pub fn make_proof(keypair: &Keypair, exporter: &[u8]) -> Result<Vec<u8>, pqdag_crypto::CryptoError> {
    let sig = keypair.sign(Domain::TransportBinding, exporter)?;
    let mut out = Vec::with_capacity(PROOF_BYTES);
    out.extend_from_slice(PROOF_MAGIC);
    out.push(PROOF_VERSION);
    out.extend_from_slice(&keypair.public().node_id());
    out.extend_from_slice(sig.as_bytes());
    Ok(out)
}

/// Parses a proof frame; `None` if it is malformed.
pub fn parse_proof(bytes: &[u8]) -> Option<Proof<'_>> {
    if bytes.len() != PROOF_BYTES || &bytes[..4] != PROOF_MAGIC || bytes[4] != PROOF_VERSION {
        return None;
    }
    let mut node_id = [0u8; 32];
    node_id.copy_from_slice(&bytes[5..37]);
    Some(Proof { node_id, signature: &bytes[37..] })
}

/// Verifies `proof` against the expected key.
pub fn verify_proof(expected: &PublicKey, exporter: &[u8], proof: &Proof<'_>) -> bool {
    proof.node_id == expected.node_id()
        && expected.verify(Domain::TransportBinding, exporter, proof.signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_round_trip_and_rejections() {
        let a = Keypair::generate().expect("keygen");
        let b = Keypair::generate().expect("keygen");
        let exp = [7u8; EXPORTER_BYTES];
        let p = make_proof(&a, &exp).expect("sign");
        let parsed = parse_proof(&p).expect("parse");
        assert!(verify_proof(a.public(), &exp, &parsed));
        assert!(!verify_proof(b.public(), &exp, &parsed));
        assert!(!verify_proof(a.public(), &[8u8; EXPORTER_BYTES], &parsed));
        assert!(parse_proof(&p[..p.len() - 1]).is_none());
        let mut bad = p.clone();
        bad[0] = b'X';
        assert!(parse_proof(&bad).is_none());
    }
}

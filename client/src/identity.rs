//! The channel binding of the client endpoint (ALPN `pqdag-client/2`): the client proves its
//! ML-DSA-87 client key first, then checks the node's.
//!
//! After the QUIC handshake the client opens a unidirectional stream of type
//! [`STREAM_IDENTITY`] carrying one length-prefixed proof: `magic "PQID" · version 1 · key id
//! (32) · ML-DSA-87 signature (4627)` over [`EXPORTER_BYTES`] bytes of the TLS exporter with label
//! [`EXPORTER_LABEL`] and context [`CONTEXT_CLIENT`], signed under `Domain::TransportBinding`.
//! A node that does not list the key closes the connection with [`CLOSE_NOT_AUTHORIZED`]
//! ([`crate::ClientError::NotAuthorized`]) without signing anything. Otherwise it answers on its
//! own first unidirectional stream with its proof over context [`CONTEXT_ACCEPTOR`]. The
//! exporter is unique to this TLS session, so a proof cannot be replayed on another
//! connection, and a man in the middle (terminating two TLS sessions) cannot forward one; the
//! client's proof, sent before the node is verified, is useless to anyone else for the same
//! reason. These constants equal `pqdag_transport::identity`'s (a test checks it).
//!
//! Key files: `engine keygen --client --out DIR` writes `DIR/client.key` (load it with
//! [`load_client_key`]) and `DIR/client.pub` (the node's `client_keys` lists it); `engine
//! testnet` writes one at `client/client.key` beside `cluster.toml` ([`testnet_client_key`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pqdag_crypto::{Domain, Keypair, PublicKey, SIGNATURE_BYTES};

/// TLS exporter label of the binding (RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-pqdag-transport-binding-v1";
/// Exporter context of the proof signed by the client.
pub const CONTEXT_CLIENT: &[u8] = b"client";
/// QUIC application close code of a node that does not accept the client's key
/// (`close_code::NOT_AUTHORIZED`).
pub const CLOSE_NOT_AUTHORIZED: u32 = 7;
/// Exporter context of the proof signed by the accepting side (the node).
pub const CONTEXT_ACCEPTOR: &[u8] = b"acceptor";
/// Exporter output length.
pub const EXPORTER_BYTES: usize = 32;
/// Proof magic.
pub const PROOF_MAGIC: &[u8; 4] = b"PQID";
/// Proof format version.
pub const PROOF_VERSION: u8 = 1;
/// Exact size of a proof frame.
pub const PROOF_BYTES: usize = 4 + 1 + 32 + SIGNATURE_BYTES;
/// First byte of the node's identity stream.
pub const STREAM_IDENTITY: u8 = 0x01;

/// Loads a client identity (a `client.key` written by `engine keygen --client`).
pub fn load_client_key(path: &Path) -> Result<Arc<Keypair>, crate::ClientError> {
    pqdag_crypto::identity::load_keypair_file(path)
        .map(Arc::new)
        .map_err(|e| crate::ClientError::Config(format!("client key: {e}")))
}

/// Where `engine testnet` puts its client key: `client/client.key` beside `cluster.toml`.
pub fn testnet_client_key(cluster_file: &Path) -> PathBuf {
    cluster_file.parent().unwrap_or(Path::new(".")).join("client").join(pqdag_crypto::identity::CLIENT_SECRET_KEY_FILE)
}

/// Our proof over `exporter` (context [`CONTEXT_CLIENT`]), framed as the identity stream's
/// bytes: type, length, proof.
pub(crate) fn proof_stream(key: &Keypair, exporter: &[u8]) -> Result<Vec<u8>, crate::ClientError> {
    let sig = key.sign(Domain::TransportBinding, exporter).map_err(|e| crate::ClientError::Tls(format!("signing the identity proof: {e}")))?;
    let mut out = Vec::with_capacity(5 + PROOF_BYTES);
    out.push(STREAM_IDENTITY);
    out.extend_from_slice(&(PROOF_BYTES as u32).to_le_bytes());
    out.extend_from_slice(PROOF_MAGIC);
    out.push(PROOF_VERSION);
    out.extend_from_slice(&key.public().node_id());
    out.extend_from_slice(sig.as_bytes());
    Ok(out)
}

/// Why a proof was refused (the text of [`crate::ClientError::IdentityMismatch`]).
pub(crate) fn check_proof(expected: &PublicKey, exporter: &[u8], proof: &[u8]) -> Result<(), String> {
    if proof.len() != PROOF_BYTES || &proof[..4] != PROOF_MAGIC || proof[4] != PROOF_VERSION {
        return Err(format!("malformed identity proof ({} bytes)", proof.len()));
    }
    if proof[5..37] != expected.node_id() {
        return Err(format!(
            "the node claims id {}, the expected key has id {}",
            hex::encode(&proof[5..13]),
            hex::encode(&expected.node_id()[..8])
        ));
    }
    expected
        .verify(Domain::TransportBinding, exporter, &proof[37..])
        .map_err(|_| "identity proof does not verify against the expected ML-DSA-87 key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pqdag_crypto::Keypair;

    #[test]
    fn constants_match_the_node() {
        use pqdag_transport::{frame, identity, tls};
        assert_eq!(EXPORTER_LABEL, identity::EXPORTER_LABEL);
        assert_eq!(CONTEXT_ACCEPTOR, identity::CONTEXT_ACCEPTOR);
        assert_eq!(CONTEXT_CLIENT, identity::CONTEXT_CLIENT);
        assert_eq!(CLOSE_NOT_AUTHORIZED, pqdag_transport::close_code::NOT_AUTHORIZED);
        assert_eq!(EXPORTER_BYTES, identity::EXPORTER_BYTES);
        assert_eq!(PROOF_BYTES, identity::PROOF_BYTES);
        assert_eq!(STREAM_IDENTITY, frame::STREAM_IDENTITY);
        assert_eq!(crate::tls::CLIENT_ALPN, tls::CLIENT_ALPN);
        assert_eq!(crate::tls::SERVER_NAME, tls::SERVER_NAME);
        assert_eq!(crate::conn::STREAM_SUBMIT, frame::STREAM_SUBMIT);
        assert_eq!(crate::conn::STREAM_EVENTS, frame::STREAM_EVENTS);
        assert_eq!(crate::conn::MAX_CLIENT_FRAME_BYTES, frame::MAX_CLIENT_FRAME_BYTES);
    }

    #[test]
    fn proofs_made_by_the_node_code_verify_and_others_do_not() {
        let a = Keypair::generate().expect("keygen");
        let b = Keypair::generate().expect("keygen");
        let x = [7u8; EXPORTER_BYTES];
        let p = pqdag_transport::identity::make_proof(&a, &x).expect("sign");
        assert_eq!(check_proof(a.public(), &x, &p), Ok(()));
        assert!(check_proof(b.public(), &x, &p).is_err());
        assert!(check_proof(a.public(), &[8u8; EXPORTER_BYTES], &p).is_err());
        assert!(check_proof(a.public(), &x, &p[..p.len() - 1]).is_err());
        // Right id, wrong signer.
        let mut forged = pqdag_transport::identity::make_proof(&b, &x).expect("sign");
        forged[5..37].copy_from_slice(&a.public().node_id());
        assert!(check_proof(a.public(), &x, &forged).expect_err("forged").contains("does not verify"));
        // Our proof is the node's format: the node's parser and verifier accept it.
        let ours = proof_stream(&a, &x).expect("proof");
        let parsed = pqdag_transport::identity::parse_proof(&ours[5..]).expect("node parses it");
        assert!(pqdag_transport::identity::verify_proof(a.public(), &x, &parsed));
    }
}

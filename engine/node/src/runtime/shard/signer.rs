//! The core's signer: ML-DSA-87 with this node's key. Owns nothing but the key handle.

use std::sync::Arc;

use pqdag_core::Signer;
use pqdag_crypto::{Domain, Keypair};
use tracing::warn;

/// ML-DSA-87 signer the core uses for own vertices, queries and responses.
pub struct MlDsaSigner(pub Arc<Keypair>);

impl Signer for MlDsaSigner {
    fn sign(&self, domain: Domain, msg: &[u8]) -> Vec<u8> {
        match self.0.sign(domain, msg) {
            Ok(s) => s.into_bytes(),
            // liboqs only fails on an internal error; an empty signature is refused by every
            // receiver, which is the safe outcome.
            Err(e) => {
                warn!(error = %e, "ML-DSA-87 signing failed");
                Vec::new()
            }
        }
    }
}

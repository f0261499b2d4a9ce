//! ML-DSA-87 (FIPS 204) through liboqs.

use std::fmt;
use std::sync::{Arc, OnceLock};

use oqs::sig::{Algorithm, Sig};

use crate::prepared::Prepared;
use crate::prepared_sign::PreparedSecret;
use crate::{hash, CryptoError, Domain, PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, SIGNATURE_BYTES};

/// The process-wide liboqs ML-DSA-87 handle. `Sig` is `Send + Sync` and stateless between calls.
pub(crate) fn scheme() -> Result<&'static Sig, CryptoError> {
    static SCHEME: OnceLock<Result<Sig, String>> = OnceLock::new();
    SCHEME
        .get_or_init(|| {
            oqs::init();
            Sig::new(Algorithm::MlDsa87).map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| CryptoError::Oqs(e.clone()))
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), CryptoError> {
    if expected == got {
        Ok(())
    } else {
        Err(CryptoError::BadLength { what, expected, got })
    }
}

/// An ML-DSA-87 public key (2592 bytes). Cheap to clone (one heap copy; clones share the
/// key's expansion).
///
/// The first verify with a key expands it once ([`crate::prepared`]: `tr`, the matrix `Â`,
/// `NTT(t1 · 2^d)`, ~64 KiB held as long as the key or a clone of it lives); every later
/// verify skips that work, ~80 % of a liboqs verify (criterion: 80-91 us -> 14-15 us). Where the CPU cannot run liboqs's
/// AVX2 code, keys verify through liboqs's public API as before.
#[derive(Clone)]
pub struct PublicKey {
    bytes: Box<[u8]>,
    prepared: Arc<OnceLock<Option<Box<Prepared>>>>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl PublicKey {
    /// Parses a public key, checking its length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("ML-DSA-87 public key", PUBLIC_KEY_BYTES, bytes.len())?;
        Ok(Self { bytes: bytes.into(), prepared: Arc::default() })
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The node id this key names (BLAKE3, see [`hash::node_id`]).
    pub fn node_id(&self) -> [u8; 32] {
        hash::node_id(&self.bytes)
    }

    /// Verifies `signature` over `message` in `domain`, with the key's expansion computed at
    /// the first call and kept.
    pub fn verify(&self, domain: Domain, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        check_len("ML-DSA-87 signature", SIGNATURE_BYTES, signature.len())?;
        match self.prepared.get_or_init(|| Prepared::new(&self.bytes)) {
            Some(p) if p.verify(domain.context(), message, signature) => Ok(()),
            Some(_) => Err(CryptoError::InvalidSignature),
            None => self.verify_without_preparation(domain, message, signature),
        }
    }

    /// Verifies through liboqs's public API, which expands the key at every call: the reference
    /// the prepared path is tested against, and what `bench` measures the ML-DSA floor with.
    pub fn verify_without_preparation(&self, domain: Domain, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        check_len("ML-DSA-87 signature", SIGNATURE_BYTES, signature.len())?;
        let s = scheme()?;
        let pk = s.public_key_from_bytes(&self.bytes).ok_or(CryptoError::BadLength {
            what: "ML-DSA-87 public key",
            expected: PUBLIC_KEY_BYTES,
            got: self.bytes.len(),
        })?;
        let sig = s.signature_from_bytes(signature).ok_or(CryptoError::BadLength {
            what: "ML-DSA-87 signature",
            expected: SIGNATURE_BYTES,
            got: signature.len(),
        })?;
        s.verify_with_ctx_str(message, sig, domain.context(), pk)
            .map_err(|_| CryptoError::InvalidSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.node_id()[..8]))
    }
}

/// An ML-DSA-87 secret key. Its bytes are zeroed on drop and never printed.
pub struct SecretKey(Box<[u8]>);

impl SecretKey {
    /// Parses a secret key, checking its length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("ML-DSA-87 secret key", SECRET_KEY_BYTES, bytes.len())?;
        Ok(Self(bytes.into()))
    }

    /// The raw key bytes (for writing the identity file only).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        crate::prepared_sign::zero(&mut self.0[..]);
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// An ML-DSA-87 signature (4627 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

impl Signature {
    /// Parses a signature, checking its length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("ML-DSA-87 signature", SIGNATURE_BYTES, bytes.len())?;
        Ok(Self(bytes.to_vec()))
    }

    /// The raw signature bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Takes the bytes out.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..self.0.len().min(8)]))
    }
}

/// A node's signing identity: an ML-DSA-87 key pair.
///
/// The first signature expands the secret key once ([`crate::prepared_sign`], ~80 KiB, zeroed
/// on drop); every later one skips that work. Where the CPU cannot run liboqs's AVX2 code, it
/// signs through liboqs's public API as before.
pub struct Keypair {
    public: PublicKey,
    secret: SecretKey,
    prepared: OnceLock<Option<Box<PreparedSecret>>>,
}

impl Keypair {
    /// Generates a fresh key pair from the OS RNG (liboqs' `randombytes`).
    pub fn generate() -> Result<Self, CryptoError> {
        let (pk, sk) = scheme()?.keypair().map_err(|e| CryptoError::Oqs(e.to_string()))?;
        Ok(Self {
            public: PublicKey::from_bytes(pk.as_ref())?,
            secret: SecretKey::from_bytes(sk.as_ref())?,
            prepared: OnceLock::new(),
        })
    }

    /// Joins a secret key with its public key, checking that they belong together by signing
    /// and verifying a probe message.
    pub fn from_parts(public: PublicKey, secret: SecretKey) -> Result<Self, CryptoError> {
        let kp = Self { public, secret, prepared: OnceLock::new() };
        let probe = b"pqdag key pair consistency probe";
        let sig = kp.sign(Domain::Alert, probe)?;
        kp.public.verify(Domain::Alert, probe, sig.as_bytes())?;
        Ok(kp)
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The secret half.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// Signs `message` in `domain` (hedged/randomised signing, as FIPS 204 recommends), with
    /// the secret key's expansion computed at the first call and kept.
    pub fn sign(&self, domain: Domain, message: &[u8]) -> Result<Signature, CryptoError> {
        match self.prepared.get_or_init(|| PreparedSecret::new(&self.secret.0)) {
            Some(p) => p
                .sign(domain.context(), message)
                .map(Signature)
                .ok_or_else(|| CryptoError::Oqs("ML-DSA-87 context string over 255 bytes".into())),
            None => self.sign_without_preparation(domain, message),
        }
    }

    /// Signs through liboqs's public API, which expands the secret key at every call (the
    /// reference the prepared path is tested against).
    pub fn sign_without_preparation(&self, domain: Domain, message: &[u8]) -> Result<Signature, CryptoError> {
        let s = scheme()?;
        let sk = s.secret_key_from_bytes(&self.secret.0).ok_or(CryptoError::BadLength {
            what: "ML-DSA-87 secret key",
            expected: SECRET_KEY_BYTES,
            got: self.secret.0.len(),
        })?;
        let sig = s
            .sign_with_ctx_str(message, domain.context(), sk)
            .map_err(|e| CryptoError::Oqs(e.to_string()))?;
        Ok(Signature(sig.into_vec()))
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("public", &self.public).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_fips_204() {
        let kp = Keypair::generate().expect("keygen");
        assert_eq!(kp.public().as_bytes().len(), PUBLIC_KEY_BYTES);
        assert_eq!(kp.secret().as_bytes().len(), SECRET_KEY_BYTES);
        let sig = kp.sign(Domain::Vertex, b"m").expect("sign");
        assert_eq!(sig.as_bytes().len(), SIGNATURE_BYTES);
    }

    #[test]
    fn sign_verify_and_reject_tampering() {
        let kp = Keypair::generate().expect("keygen");
        let msg = b"a vertex id, say";
        let sig = kp.sign(Domain::Vertex, msg).expect("sign");
        kp.public().verify(Domain::Vertex, msg, sig.as_bytes()).expect("valid");
        assert!(kp.public().verify(Domain::Vertex, b"another message", sig.as_bytes()).is_err());
        let mut bad = sig.as_bytes().to_vec();
        bad[100] ^= 1;
        assert!(kp.public().verify(Domain::Vertex, msg, &bad).is_err());
        assert!(matches!(
            kp.public().verify(Domain::Vertex, msg, &bad[..10]),
            Err(CryptoError::BadLength { .. })
        ));
    }

    #[test]
    fn a_signature_does_not_cross_domains() {
        let kp = Keypair::generate().expect("keygen");
        let msg = [42u8; 32];
        for d in Domain::ALL {
            let sig = kp.sign(d, &msg).expect("sign");
            for other in Domain::ALL {
                let ok = kp.public().verify(other, &msg, sig.as_bytes()).is_ok();
                assert_eq!(ok, d == other, "signed as {d:?}, checked as {other:?}");
            }
        }
    }

    #[test]
    fn another_keys_signature_fails() {
        let a = Keypair::generate().expect("keygen");
        let b = Keypair::generate().expect("keygen");
        let sig = a.sign(Domain::Response, b"x").expect("sign");
        assert!(b.public().verify(Domain::Response, b"x", sig.as_bytes()).is_err());
        assert!(Keypair::from_parts(b.public().clone(), SecretKey::from_bytes(a.secret().as_bytes()).expect("sk")).is_err());
    }
}

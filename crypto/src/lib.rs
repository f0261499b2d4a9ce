//! Post-quantum cryptography for pqdag: every primitive the protocol names, in one place.
//!
//! * [`hash`]: BLAKE3 ids (vertex ids, node ids, digests), each under its own derivation context.
//! * [`Domain`]: the FIPS 204 context string each signed message kind is signed under, so a
//!   signature made for one kind can never be replayed as another.
//! * ML-DSA-87 ([`Keypair`], [`PublicKey`], [`Signature`], feature `mldsa`, on by default)
//!   through liboqs, plus a [`BatchVerifier`] and identity files ([`identity`]).
//!
//! With `default-features = false` the crate is pure Rust (BLAKE3 only): the consensus core and
//! the wire format depend on it that way and never link liboqs.

mod domain;
mod error;
pub mod hash;

#[cfg(feature = "mldsa")]
mod batch;
#[cfg(feature = "mldsa")]
pub mod identity;
#[cfg(feature = "mldsa")]
mod mldsa;
#[cfg(feature = "mldsa")]
mod prepared;
#[cfg(feature = "mldsa")]
mod prepared_sign;

pub use domain::Domain;
pub use error::CryptoError;

#[cfg(feature = "mldsa")]
pub use batch::{BatchItem, BatchVerifier};
#[cfg(feature = "mldsa")]
pub use mldsa::{Keypair, PublicKey, SecretKey, Signature};

/// ML-DSA-87 public key length in bytes (FIPS 204, table 2).
pub const PUBLIC_KEY_BYTES: usize = 2592;
/// ML-DSA-87 secret key length in bytes as liboqs stores it.
pub const SECRET_KEY_BYTES: usize = 4896;
/// ML-DSA-87 signature length in bytes.
pub const SIGNATURE_BYTES: usize = 4627;

//! The crate's deterministic hasher: every `HashMap`/`HashSet` of the core uses it, so no
//! per-process `RandomState` can make two replays of one seed differ. Owns nothing else and
//! calls nothing.

use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for 32-byte BLAKE3-derived keys: the bytes are already uniform, so fold them.
/// Deterministic (no per-process random state), which keeps simulations replayable.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// `HashMap` with [`IdHasher`]: the only map type the core uses.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// `HashSet` with [`IdHasher`]: the only set type the core uses.
pub(crate) type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<IdHasher>>;

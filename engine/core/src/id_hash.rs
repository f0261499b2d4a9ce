//! The crate's deterministic hasher: every `HashMap`/`HashSet` of the core uses it, so no
//! per-process `RandomState` can make two replays of one seed differ. Owns nothing else and
//! calls nothing.

use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for 32-byte BLAKE3-derived keys: the bytes are already uniform, so fold them.
/// Deterministic (no per-process random state), which keeps simulations replayable.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Ids and keys (32 bytes) take the fast path: four whole words, the same fold as below
        // (no chunk iterator; that one cost a third of a debug build's CPU in `HashMap` lookups).
        if let Ok(w) = <&[u8; 32]>::try_from(bytes) {
            for i in 0..4 {
                let x = u64::from_le_bytes([w[8 * i], w[8 * i + 1], w[8 * i + 2], w[8 * i + 3], w[8 * i + 4], w[8 * i + 5], w[8 * i + 6], w[8 * i + 7]]);
                self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
            return;
        }
        for c in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// `HashMap` with [`IdHasher`]: the only map type the core uses (and the simulator's).
pub type HashMap<K, V> = hashbrown::HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// `HashSet` with [`IdHasher`]: the only set type the core uses (and the simulator's).
pub type HashSet<K> = hashbrown::HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use std::hash::Hasher;

    use super::IdHasher;

    /// The 32-byte fast path folds exactly as the general path: map orders (and so simulation
    /// traces) do not depend on which one ran.
    #[test]
    fn the_fast_path_hashes_like_the_general_one() {
        let bytes: Vec<u8> = (0u8..40).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
        for seed in [0u64, 1, 0xdead_beef] {
            let mut fast = IdHasher(seed);
            fast.write(&bytes[..32]);
            let mut slow = IdHasher(seed);
            slow.write(&bytes[..16]);
            slow.write(&bytes[16..32]);
            assert_eq!(fast.finish(), slow.finish());
        }
        let mut odd = IdHasher(0);
        odd.write(&bytes[..33]);
        assert_ne!(odd.finish(), 0);
    }
}

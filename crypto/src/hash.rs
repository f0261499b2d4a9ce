//! BLAKE3 identifiers. Each kind of id is derived under its own context string
//! (`blake3::derive_key`), so a vertex id can never collide with a node id by construction.

/// Derivation context of vertex ids: `BLAKE3-derive_key(ctx, canonical vertex bytes)`.
pub const VERTEX_ID_CONTEXT: &str = "pqdag 2026-11 vertex id v1";
/// Derivation context of node ids: `BLAKE3-derive_key(ctx, ML-DSA-87 public key bytes)`.
pub const NODE_ID_CONTEXT: &str = "pqdag 2026-11 node id v1";
/// Derivation context of digests over lists of ids (e.g. a query's ids, a finalized set).
pub const ID_LIST_CONTEXT: &str = "pqdag 2026-11 id list digest v1";

/// Derivation context of transaction ids: `BLAKE3-derive_key(ctx, canonical transaction bytes)`.
pub const TX_ID_CONTEXT: &str = "pqdag 2026-12 transaction id v1";
/// Derivation context of the inner nodes of a vertex's transaction Merkle tree.
pub const TX_NODE_CONTEXT: &str = "pqdag 2026-12 transaction tree node v1";

/// The 32-byte id of a transaction from its canonical bytes.
pub fn tx_id(canonical_bytes: &[u8]) -> [u8; 32] {
    blake3::derive_key(TX_ID_CONTEXT, canonical_bytes)
}

/// An inner node of the transaction Merkle tree: the hash of its two children, in order.
pub fn tx_node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(TX_NODE_CONTEXT);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// The 32-byte id of a vertex from its canonical bytes (signature excluded).
pub fn vertex_id(canonical_bytes: &[u8]) -> [u8; 32] {
    blake3::derive_key(VERTEX_ID_CONTEXT, canonical_bytes)
}

/// The 32-byte id of a node from its ML-DSA-87 public key.
pub fn node_id(public_key_bytes: &[u8]) -> [u8; 32] {
    blake3::derive_key(NODE_ID_CONTEXT, public_key_bytes)
}

/// A digest of an ordered list of 32-byte ids (a query binds its response to it).
pub fn id_list_digest<'a>(ids: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(ID_LIST_CONTEXT);
    for id in ids {
        hasher.update(id);
    }
    *hasher.finalize().as_bytes()
}

/// An order-independent digest of a set of ids: the XOR of each id's BLAKE3 hash.
///
/// Two nodes with the same finalized set report the same value however they reached it;
/// operators compare `/status` of nodes at a glance with it. Insert and remove are both `add`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetDigest([u8; 32]);

impl SetDigest {
    /// Toggles `id` in the set.
    pub fn add(&mut self, id: &[u8; 32]) {
        let h = blake3::hash(id);
        for (d, b) in self.0.iter_mut().zip(h.as_bytes()) {
            *d ^= b;
        }
    }

    /// Adds a whole set given by its digest (disjoint from this one): the two XORed.
    pub fn merge(&mut self, other: &[u8; 32]) {
        self.0.iter_mut().zip(other).for_each(|(d, b)| *d ^= b);
    }

    /// The digest as bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_separate_id_kinds() {
        let bytes = [7u8; 64];
        assert_ne!(vertex_id(&bytes), node_id(&bytes));
        assert_ne!(vertex_id(&bytes), tx_id(&bytes));
    }

    #[test]
    fn set_digest_is_order_independent() {
        let ids: Vec<[u8; 32]> = (0u8..20).map(|i| [i; 32]).collect();
        let mut a = SetDigest::default();
        let mut b = SetDigest::default();
        ids.iter().for_each(|id| a.add(id));
        ids.iter().rev().for_each(|id| b.add(id));
        assert_eq!(a, b);
        b.add(&ids[3]);
        assert_ne!(a, b);
    }
}

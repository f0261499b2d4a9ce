//! Transactions: what a client submits. A vertex carries a batch of them (one signature and one
//! poll pay for many payloads) and commits to them with a BLAKE3 Merkle root in its canonical
//! bytes, so one transaction can be proven part of a signed vertex without the others
//! ([`tx_proof`], [`verify_tx_proof`]).

use rkyv::{Archive, Deserialize, Serialize};

use crate::limits::{CONFLICT_KEYS_MAX, PAYLOAD_BYTES_MAX};
use crate::messages::{bound, Vertex};
use crate::types::{ConflictKey, TxId};
use crate::WireError;

/// One client payload and what it spends. Its id is the BLAKE3 of [`Transaction::canonical_bytes`]:
/// the same payload and keys submitted twice are the same transaction.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[rkyv(derive(Debug))]
pub struct Transaction {
    /// Application bytes, at most [`PAYLOAD_BYTES_MAX`].
    pub payload: Vec<u8>,
    /// What the payload spends, at most [`CONFLICT_KEYS_MAX`], distinct; transactions sharing a
    /// key conflict, and so do the vertices carrying them.
    pub conflict_keys: Vec<ConflictKey>,
}

/// Canonical transaction bytes: `n_keys u16 · keys (32 each) · payload_len u32 · payload`
/// (little-endian).
fn canonical_tx<'a>(keys: impl ExactSizeIterator<Item = &'a [u8; 32]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 32 * keys.len() + 4 + payload.len());
    out.extend_from_slice(&u16::try_from(keys.len()).unwrap_or(u16::MAX).to_le_bytes());
    keys.for_each(|k| out.extend_from_slice(k));
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

impl Transaction {
    /// A transaction; see [`Transaction::check_bounds`] for what a node accepts.
    pub fn new(payload: Vec<u8>, conflict_keys: Vec<ConflictKey>) -> Self {
        Self { payload, conflict_keys }
    }

    /// The bytes its id hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_tx(self.conflict_keys.iter().map(|k| &k.0), &self.payload)
    }

    /// BLAKE3 id (its own derivation context: never equal to a vertex id).
    pub fn id(&self) -> TxId {
        TxId(pqdag_crypto::hash::tx_id(&self.canonical_bytes()))
    }

    /// Payload and key bounds (per transaction).
    pub fn check_bounds(&self) -> Result<(), WireError> {
        bound("payload bytes", self.payload.len(), PAYLOAD_BYTES_MAX)?;
        bound("conflict keys", self.conflict_keys.len(), CONFLICT_KEYS_MAX)
    }

    /// Bytes it adds to a vertex's budget ([`crate::limits::VERTEX_TX_BYTES_MAX`]).
    pub fn budget_bytes(&self) -> usize {
        tx_budget(self.payload.len(), self.conflict_keys.len())
    }
}

/// Bytes one transaction adds to a vertex's budget: payload, its keys twice (in the transaction
/// and in the vertex's key list) and the per-transaction framing.
pub fn tx_budget(payload: usize, keys: usize) -> usize {
    payload + 64 * keys + 16
}

/// Eight transactions filling a vertex's transaction budget
/// ([`crate::limits::VERTEX_TX_BYTES_MAX`]) with no keys, each payload starting with `stamp`
/// (so each batch is new): the largest vertex a member can sign. For tests and the attack tools
/// (`fat-flood` in the simulator and in `engine run --byzantine`).
pub fn largest_batch(stamp: &[u8]) -> Vec<Transaction> {
    let size = crate::limits::VERTEX_TX_BYTES_MAX / 8 - tx_budget(0, 0);
    (0..8u8)
        .map(|t| {
            let mut payload = vec![t; size];
            let n = stamp.len().min(size);
            payload[..n].copy_from_slice(&stamp[..n]);
            Transaction::new(payload, Vec::new())
        })
        .collect()
}

impl ArchivedTransaction {
    /// BLAKE3 id straight from the archive.
    pub fn id(&self) -> TxId {
        TxId(pqdag_crypto::hash::tx_id(&canonical_tx(self.conflict_keys.iter().map(|k| &k.0), self.payload.as_slice())))
    }

    /// Deserializes into the owned form.
    pub fn to_owned(&self) -> Transaction {
        Transaction { payload: self.payload.as_slice().to_vec(), conflict_keys: self.conflict_keys.iter().map(|k| ConflictKey(k.0)).collect() }
    }
}

/// The Merkle root of a vertex's transaction ids, in order: leaves are the ids; an inner node
/// hashes its two children; an odd node at the end of a level moves up unchanged. No
/// transactions: all zeros.
pub fn tx_root(ids: &[TxId]) -> [u8; 32] {
    let mut level: Vec<[u8; 32]> = ids.iter().map(|t| t.0).collect();
    if level.is_empty() {
        return [0; 32];
    }
    while level.len() > 1 {
        level = level.chunks(2).map(|c| if c.len() == 2 { pqdag_crypto::hash::tx_node(&c[0], &c[1]) } else { c[0] }).collect();
    }
    level[0]
}

/// The sibling hashes proving `ids[index]` under [`tx_root`]`(ids)`, bottom-up (levels where the
/// node moves up alone contribute none). `None` when `index` is out of range.
pub fn tx_proof(ids: &[TxId], index: usize) -> Option<Vec<[u8; 32]>> {
    if index >= ids.len() {
        return None;
    }
    let mut level: Vec<[u8; 32]> = ids.iter().map(|t| t.0).collect();
    let mut i = index;
    let mut proof = Vec::new();
    while level.len() > 1 {
        let sibling = i ^ 1;
        if sibling < level.len() {
            proof.push(level[sibling]);
        }
        level = level.chunks(2).map(|c| if c.len() == 2 { pqdag_crypto::hash::tx_node(&c[0], &c[1]) } else { c[0] }).collect();
        i /= 2;
    }
    Some(proof)
}

/// Whether `proof` shows transaction `tx` at `index` of `count` transactions under `root` (the
/// root a signed vertex's id commits to; see `Vertex::tx_root`).
pub fn verify_tx_proof(root: &[u8; 32], tx: &TxId, index: usize, count: usize, proof: &[[u8; 32]]) -> bool {
    if index >= count {
        return false;
    }
    let (mut node, mut i, mut width, mut used) = (tx.0, index, count, 0usize);
    while width > 1 {
        let sibling = i ^ 1;
        if sibling < width {
            let Some(s) = proof.get(used) else { return false };
            used += 1;
            node = if i % 2 == 0 { pqdag_crypto::hash::tx_node(&node, s) } else { pqdag_crypto::hash::tx_node(s, &node) };
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    used == proof.len() && node == *root
}

/// Whether two vertices spend some key with DIFFERENT transactions: what makes two vertices of
/// one creator an equivocation. A creator that re-issues a rejected vertex's innocent
/// transaction in a new vertex spends its keys again with the same transaction, which is not.
pub fn spends_apart(a: &Vertex, b: &Vertex) -> bool {
    // Linear in both vertices, and no hashing: transactions are compared by content (the same
    // content is the same id). A re-issue of a full batch is checked against its first vertex
    // once per shared key, so this must stay cheap.
    let by_key: std::collections::BTreeMap<&[u8; 32], &Transaction> = a.txs.iter().flat_map(|t| t.conflict_keys.iter().map(move |k| (&k.0, t))).collect();
    b.txs.iter().any(|t| t.conflict_keys.iter().any(|k| by_key.get(&k.0).is_some_and(|other| *other != t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<TxId> {
        (0..n).map(|i| Transaction::new(vec![i], vec![]).id()).collect()
    }

    #[test]
    fn every_leaf_proves_and_no_other_does() {
        for n in 1..=13u8 {
            let ids = ids(n);
            let root = tx_root(&ids);
            for i in 0..ids.len() {
                let proof = tx_proof(&ids, i).unwrap();
                assert!(verify_tx_proof(&root, &ids[i], i, ids.len(), &proof), "n={n} i={i}");
                let other = ids[(i + 1) % ids.len()];
                if other != ids[i] {
                    assert!(!verify_tx_proof(&root, &other, i, ids.len(), &proof), "n={n} i={i}: a foreign leaf proved");
                }
            }
        }
    }

    #[test]
    fn the_root_commits_to_order_and_content() {
        let a = ids(4);
        let mut b = a.clone();
        b.swap(0, 1);
        assert_ne!(tx_root(&a), tx_root(&b));
        assert_ne!(tx_root(&a), tx_root(&a[..3]));
        assert_eq!(tx_root(&[]), [0; 32]);
    }

    #[test]
    fn only_different_transactions_on_a_key_are_apart() {
        let k = ConflictKey([5; 32]);
        let t = Transaction::new(vec![1], vec![k]);
        let other = Transaction::new(vec![2], vec![k]);
        let free = Transaction::new(vec![3], vec![]);
        let a = Vertex::with_txs(vec![], vec![t.clone(), free.clone()], 1, Default::default());
        let twin = Vertex::with_txs(vec![], vec![free, t], 2, Default::default());
        let double = Vertex::with_txs(vec![], vec![other], 3, Default::default());
        assert!(!spends_apart(&a, &twin) && !spends_apart(&twin, &a));
        assert!(spends_apart(&a, &double) && spends_apart(&double, &a));
    }

    #[test]
    fn the_id_covers_keys_and_payload() {
        let t = Transaction::new(vec![1, 2], vec![ConflictKey([9; 32])]);
        assert_ne!(t.id(), Transaction::new(vec![1, 2], vec![]).id());
        assert_ne!(t.id(), Transaction::new(vec![1], vec![ConflictKey([9; 32])]).id());
        assert_eq!(t.id(), t.clone().id());
    }
}

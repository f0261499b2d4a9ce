//! Batch verification: what a shard calls on every batch of incoming signed messages.
//!
//! ML-DSA has no algebraic batch verification; the gain of a batch is amortising per-call
//! overhead and, for large batches, spreading the work over several threads. A shard of the
//! engine owns its core, so by default a batch is verified on the calling thread; the engine
//! may hand large batches to [`BatchVerifier::verify_parallel`] when a core is idle.

use crate::{Domain, PublicKey, SIGNATURE_BYTES};

/// One signed message to check.
#[derive(Debug, Clone, Copy)]
pub struct BatchItem<'a> {
    /// The signer's key.
    pub public_key: &'a PublicKey,
    /// The domain the message claims to be signed in.
    pub domain: Domain,
    /// The signed bytes.
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a [u8],
}

/// Verifies many signatures in one call and reports which failed.
#[derive(Debug, Default)]
pub struct BatchVerifier {
    verified_total: u64,
    failed_total: u64,
}

impl BatchVerifier {
    /// A verifier with zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies every item; `result[i]` is true iff item `i` verified. Never panics on bad input:
    /// a wrong-length key or signature is a failed item.
    pub fn verify(&mut self, items: &[BatchItem<'_>]) -> Vec<bool> {
        let out: Vec<bool> = items.iter().map(verify_one).collect();
        self.count(&out);
        out
    }

    /// Like [`verify`](Self::verify) but splits the batch over `threads` scoped threads.
    pub fn verify_parallel(&mut self, items: &[BatchItem<'_>], threads: usize) -> Vec<bool> {
        let threads = threads.clamp(1, 64);
        if threads == 1 || items.len() < 2 * threads {
            return self.verify(items);
        }
        let chunk = items.len().div_ceil(threads);
        let mut out = vec![false; items.len()];
        std::thread::scope(|s| {
            for (inp, res) in items.chunks(chunk).zip(out.chunks_mut(chunk)) {
                s.spawn(move || {
                    for (i, r) in inp.iter().zip(res.iter_mut()) {
                        *r = verify_one(i);
                    }
                });
            }
        });
        self.count(&out);
        out
    }

    fn count(&mut self, out: &[bool]) {
        let ok = out.iter().filter(|b| **b).count() as u64;
        self.verified_total += ok;
        self.failed_total += out.len() as u64 - ok;
    }

    /// Signatures that verified since creation.
    pub fn verified_total(&self) -> u64 {
        self.verified_total
    }

    /// Signatures that failed since creation.
    pub fn failed_total(&self) -> u64 {
        self.failed_total
    }
}

fn verify_one(item: &BatchItem<'_>) -> bool {
    item.signature.len() == SIGNATURE_BYTES && item.public_key.verify(item.domain, item.message, item.signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn reports_exactly_the_bad_items() {
        let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate().expect("keygen")).collect();
        let msgs: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 50 + i as usize]).collect();
        let mut sigs: Vec<Vec<u8>> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| keys[i % 3].sign(Domain::Response, m).expect("sign").into_bytes())
            .collect();
        let bad = [3usize, 17, 39];
        sigs[3][0] ^= 0x80;
        sigs[17].truncate(100);
        let items: Vec<BatchItem<'_>> = msgs
            .iter()
            .zip(&sigs)
            .enumerate()
            .map(|(i, (m, s))| BatchItem {
                public_key: keys[i % 3].public(),
                // Item 39 claims the wrong domain.
                domain: if i == 39 { Domain::Vertex } else { Domain::Response },
                message: m,
                signature: s,
            })
            .collect();
        let mut v = BatchVerifier::new();
        for out in [v.verify(&items), v.verify_parallel(&items, 2)] {
            for (i, ok) in out.iter().enumerate() {
                assert_eq!(*ok, !bad.contains(&i), "item {i}");
            }
        }
        assert_eq!(v.failed_total(), 6);
        assert_eq!(v.verified_total(), 74);
    }
}

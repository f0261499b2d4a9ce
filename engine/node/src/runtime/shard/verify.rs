//! Batch verify, the second stage: every signature of the turn (vertices, queries, responses,
//! fetched vertices, alerts and their proofs) checked as one ML-DSA-87 batch. Owns the verifier
//! and the members' public keys; calls only the crypto crate and the batch-size metric. Its
//! output is a verdict per item, in the order given: only a passed item may reach the core.

use std::collections::HashMap;
use std::sync::Arc;

use pqdag_crypto::{BatchItem, BatchVerifier, Domain, PublicKey};
use pqdag_wire::NodeId;

use super::super::metrics::Metrics;
use super::ingress::Unverified;

/// A verified item, or the sender to charge for a failed one.
// Carries an `Unverified` by value, as that enum does its vertices (moved once per item).
#[allow(clippy::large_enum_variant)]
pub(super) enum Verdict {
    /// Every signature of the item verified.
    Passed(Unverified),
    /// A signature failed (or its signer is unknown): charge `from`.
    Failed { from: NodeId, why: &'static str },
}

/// The turn's batch verifier.
pub(super) struct Verify {
    verifier: BatchVerifier,
    keys: HashMap<NodeId, PublicKey>,
    metrics: Arc<Metrics>,
}

impl Verify {
    /// A verifier that knows the members' `keys`.
    pub(super) fn new(keys: HashMap<NodeId, PublicKey>, metrics: Arc<Metrics>) -> Self {
        Self { verifier: BatchVerifier::new(), keys, metrics }
    }

    /// Verifies every signature of `items` in one batch; one verdict per item, same order.
    pub(super) fn verify(&mut self, items: Vec<Unverified>) -> Vec<Verdict> {
        if items.is_empty() {
            return Vec::new();
        }
        // Signed bytes that are not borrowed from the message itself.
        let owned_msgs: Vec<Vec<Vec<u8>>> = items
            .iter()
            .map(|u| match u {
                Unverified::Query { query, .. } => vec![query.signed_bytes()],
                Unverified::Response { response, .. } => vec![response.signed_bytes()],
                Unverified::Alert { alert, .. } => {
                    let mut v = vec![alert.signed_bytes()];
                    if let pqdag_wire::Evidence::ConflictingResponses { a, b } = &alert.evidence {
                        v.push(a.signed_bytes());
                        v.push(b.signed_bytes());
                    }
                    v
                }
                _ => Vec::new(),
            })
            .collect();
        // (signer, domain, signed bytes, signature) per signature, borrowed from the items.
        let mut wanted: Vec<(NodeId, Domain, &[u8], &[u8])> = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(items.len());
        for (i, u) in items.iter().enumerate() {
            let start = wanted.len();
            match u {
                Unverified::Vertex { vertex, .. } => wanted.push((vertex.creator, Domain::Vertex, vertex.signed_bytes(), &vertex.signature)),
                Unverified::Query { from, query, .. } => wanted.push((*from, Domain::Query, &owned_msgs[i][0], &query.signature)),
                Unverified::Response { from, response } => wanted.push((*from, Domain::Response, &owned_msgs[i][0], &response.signature)),
                Unverified::Alert { from, alert } => {
                    wanted.push((*from, Domain::Alert, &owned_msgs[i][0], &alert.signature));
                    match &alert.evidence {
                        pqdag_wire::Evidence::ConflictingResponses { a, b } => {
                            wanted.push((alert.accused, Domain::Response, &owned_msgs[i][1], &a.signature));
                            wanted.push((alert.accused, Domain::Response, &owned_msgs[i][2], &b.signature));
                        }
                        pqdag_wire::Evidence::Equivocation { a, b } => {
                            wanted.push((alert.accused, Domain::Vertex, a.signed_bytes(), &a.signature));
                            wanted.push((alert.accused, Domain::Vertex, b.signed_bytes(), &b.signature));
                        }
                    }
                }
                Unverified::Reply { vertices, .. } => {
                    for v in vertices {
                        wanted.push((v.creator, Domain::Vertex, v.signed_bytes(), &v.signature));
                    }
                }
            }
            spans.push((start, wanted.len()));
        }
        let keys = &self.keys;
        let known: Vec<bool> = wanted.iter().map(|(signer, ..)| keys.contains_key(signer)).collect();
        let batch: Vec<BatchItem<'_>> = wanted
            .iter()
            .filter_map(|(signer, domain, message, signature)| {
                keys.get(signer).map(|public_key| BatchItem { public_key, domain: *domain, message, signature })
            })
            .collect();
        self.metrics.verify_batch.observe(batch.len() as f64);
        let verified = self.verifier.verify(&batch);
        drop(batch);
        // Re-expand to one slot per wanted signature (unknown signers fail).
        let mut it = verified.into_iter();
        let ok: Vec<bool> = known.iter().map(|k| *k && it.next().unwrap_or(false)).collect();
        drop(wanted);
        items
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let (a, b) = spans[i];
                if ok[a..b].iter().all(|x| *x) {
                    return Verdict::Passed(u);
                }
                match u {
                    // A proof that does not verify is a false accusation: charge the reporter.
                    Unverified::Alert { from, .. } => Verdict::Failed { from, why: "false_alert" },
                    // A relayed vertex may be signed by a third party: charge the relay only for
                    // a bad signature, which an honest relay never forwards (it verifies first).
                    Unverified::Vertex { from, .. } | Unverified::Reply { from, .. } => Verdict::Failed { from, why: "invalid_signature" },
                    Unverified::Query { from, .. } | Unverified::Response { from, .. } => Verdict::Failed { from, why: "invalid_signature" },
                }
            })
            .collect()
    }
}

//! Batch verify, the second stage: every signature of the turn (vertices, queries, responses,
//! fetched vertices, alerts and their proofs) checked as one ML-DSA-87 batch. Owns the verifier
//! and the members' public keys; calls only the crypto crate and the batch-size metric. Its
//! output is a verdict per item, in the order given: only a passed item may reach the core.
//!
//! Before an item joins the batch, [`Verify::dedupe`] drops what would change nothing (an
//! ML-DSA verify costs ~60 us, a BLAKE3 id and a map lookup well under 1 us): a vertex the
//! core holds, has forgotten as final, or that is in this turn's batch already; a response to a
//! query that no longer waits for it; an alert this reporter sent already (a replay). Each drop is
//! counted in `pqdag_duplicates_dropped_total{kind}`. So is a vertex whose creator holds its
//! bound of processing vertices at the core and that the core does not need
//! (`Core::admits_creator`, kind `creator_over_bound`): the core would drop it after the verify.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pqdag_core::Core;
use pqdag_crypto::{BatchItem, BatchVerifier, Domain, PublicKey};
use pqdag_wire::{NodeId, Vertex, VertexId};

use super::super::metrics::{KindLabel, Metrics};
use super::ingress::Unverified;
use super::signer::MlDsaSigner;

/// A verified item, or the sender to charge for a failed one.
// Carries an `Unverified` by value, as that enum does its vertices (moved once per item).
#[allow(clippy::large_enum_variant)]
pub(super) enum Verdict {
    /// Every signature of the item verified.
    Passed(Unverified),
    /// A signature failed (or its signer is unknown): charge `from`.
    Failed { from: NodeId, why: &'static str },
}

/// A 64-bit hash of a signature (SipHash, fixed keys: ~2 us for 4627 bytes).
fn signature_hash(sig: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    sig.hash(&mut h);
    h.finish()
}

/// The turn's batch verifier.
pub(super) struct Verify {
    verifier: BatchVerifier,
    keys: HashMap<NodeId, PublicKey>,
    metrics: Arc<Metrics>,
    /// (id, hash of the signature) of the vertices in this turn's batch (cleared by `verify`).
    /// A copy with another signature is kept: a forged copy arriving first must not crowd out
    /// the genuine one (honest relays forward the creator's bytes, so genuine copies match).
    batch_ids: HashSet<(VertexId, u64)>,
    /// (reporter, hash of its signature, false) of the alerts verified already, or (this node,
    /// hash of the accused, true) once the accused is convicted here: one per accused
    /// (cleared when full).
    seen_alerts: HashSet<(NodeId, u64, bool)>,
}

/// Alerts remembered against replays.
const SEEN_ALERTS_MAX: usize = 4096;

impl Verify {
    /// A verifier that knows the members' `keys`.
    pub(super) fn new(keys: HashMap<NodeId, PublicKey>, metrics: Arc<Metrics>) -> Self {
        Self { verifier: BatchVerifier::new(), keys, metrics, batch_ids: HashSet::new(), seen_alerts: HashSet::new() }
    }

    /// The item, unless its signature need not be checked because it would change nothing:
    /// see the module doc. Fetch replies keep only their new vertices. Call on every item before
    /// [`Self::verify`], against the core as it is before this turn's events.
    pub(super) fn dedupe(&mut self, core: &Core<MlDsaSigner>, item: Unverified) -> Option<Unverified> {
        match item {
            Unverified::Vertex { from, vertex } => {
                if !core.admits_creator(&vertex) {
                    self.dropped("creator_over_bound", 1);
                    None
                } else if self.is_new(core, &vertex) {
                    Some(Unverified::Vertex { from, vertex })
                } else {
                    self.dropped("vertex", 1);
                    None
                }
            }
            Unverified::Reply { from, mut vertices } => {
                let before = vertices.len();
                vertices.retain(|v| core.admits_creator(v));
                let over = before - vertices.len();
                self.dropped("creator_over_bound", over as u64);
                vertices.retain(|v| self.is_new(core, v));
                self.dropped("reply_vertex", (before - over - vertices.len()) as u64);
                (!vertices.is_empty()).then_some(Unverified::Reply { from, vertices })
            }
            Unverified::Response { from, response } => {
                if core.awaits_response(&from, response.query_id) {
                    Some(Unverified::Response { from, response })
                } else {
                    self.dropped("response", 1);
                    None
                }
            }
            Unverified::Alert { from, alert } => {
                // A proof against a peer this core already convicted changes nothing in the
                // core; one is verified per accused (the metric `alerts_verified` shows the
                // honest peers' gossip arriving), never more: a reporter signing fresh alerts
                // against a convicted colluder (or itself) as fast as it can cost up to three
                // verifies each before (keyed by the alert's signature, every new one was new),
                // and once per reporter, every honest node's own broadcast of each proof cost
                // the others three verifies each (20 equivocators of 100 nodes in the
                // simulator: ~0.9 s of every honest core in the first second, polls unanswered
                // meanwhile). The per-peer alert budget bounds the rest; a replay is never
                // verified twice.
                if self.seen_alerts.len() >= SEEN_ALERTS_MAX {
                    self.seen_alerts.clear();
                }
                // Keyed by the accused alone once it is convicted, else by (reporter, signature).
                let (reporter, key, convicted) = if core.is_convicted(&alert.accused) { (core.me(), signature_hash(&alert.accused.0), true) } else { (from, signature_hash(&alert.signature), false) };
                if alert.accused == core.me() || !self.seen_alerts.insert((reporter, key, convicted)) {
                    self.dropped("alert", 1);
                    None
                } else {
                    Some(Unverified::Alert { from, alert })
                }
            }
            // Past the query budget: the ids are hashed here, once, for the signature check and
            // the core's response alike.
            Unverified::Query { from, query, reply, .. } => {
                let ids_digest = Some(query.ids_digest());
                Some(Unverified::Query { from, query, ids_digest, reply })
            }
        }
    }

    /// Whether `v` is worth a verify: not held, not forgotten, not genesis, of this shard, and
    /// not in this turn's batch yet (it then joins it).
    fn is_new(&mut self, core: &Core<MlDsaSigner>, v: &Vertex) -> bool {
        !v.parents.is_empty()
            && pqdag_core::shard_of_vertex(&v.id, core.shard_count()) == core.shard()
            && !core.contains(&v.id)
            && self.batch_ids.insert((v.id, signature_hash(&v.signature)))
    }

    fn dropped(&self, kind: &str, n: u64) {
        if n > 0 {
            self.metrics.duplicates_dropped.get_or_create(&KindLabel { kind: kind.to_owned() }).inc_by(n);
        }
    }

    /// Verifies every signature of `items` in one batch; one verdict per item, same order.
    pub(super) fn verify(&mut self, items: Vec<Unverified>) -> Vec<Verdict> {
        self.batch_ids.clear();
        if items.is_empty() {
            return Vec::new();
        }
        // Signed bytes that are not borrowed from the message itself.
        let owned_msgs: Vec<Vec<Vec<u8>>> = items
            .iter()
            .map(|u| match u {
                Unverified::Query { query, ids_digest, .. } => vec![match ids_digest {
                    Some(d) => query.signed_bytes_with_digest(d),
                    None => query.signed_bytes(),
                }],
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

#[cfg(test)]
mod tests {
    use super::*;
    use pqdag_core::{Config, Event, Params};
    use pqdag_crypto::Keypair;
    use pqdag_wire::{Response, Vertex};

    fn dropped(m: &Metrics, kind: &str) -> u64 {
        m.duplicates_dropped.get_or_create(&KindLabel { kind: kind.to_owned() }).get()
    }

    /// Duplicates are dropped before the batch verify: a vertex the core holds, a second copy in
    /// one turn, a fetch reply's known vertices, a response no poll awaits. A copy with another
    /// signature is kept (it may be the genuine one).
    #[test]
    fn duplicates_are_dropped_before_verify() {
        let me = Arc::new(Keypair::generate().expect("ok"));
        let peer = Keypair::generate().expect("ok");
        let (me_id, peer_id) = (NodeId(me.public().node_id()), NodeId(peer.public().node_id()));
        let cfg = Config { me: me_id, nodes: vec![me_id, peer_id], params: Params::lan_default(), seed: 1, shard: 0, shard_count: 1 };
        let mut core = Core::new(cfg, MlDsaSigner(me.clone())).expect("ok");
        let metrics = Arc::new(Metrics::new());
        let keys: HashMap<NodeId, PublicKey> = [(me_id, me.public().clone()), (peer_id, peer.public().clone())].into_iter().collect();
        let mut verify = Verify::new(keys, metrics.clone());
        let vertex = |n: u8| {
            let mut v = Vertex::new_unsigned(vec![core.genesis_id()], vec![n], vec![], 1, peer_id);
            v.signature = peer.sign(Domain::Vertex, v.signed_bytes()).expect("ok").into_bytes();
            v
        };
        let (a, b) = (vertex(1), vertex(2));

        // One turn: a, a again (dropped), a forged copy of a (kept, fails), b.
        let mut forged = a.clone();
        forged.signature[0] ^= 1;
        let mut batch = Vec::new();
        for v in [a.clone(), a.clone(), forged, b.clone()] {
            batch.extend(verify.dedupe(&core, Unverified::Vertex { from: peer_id, vertex: v }));
        }
        assert_eq!(batch.len(), 3);
        assert_eq!(dropped(&metrics, "vertex"), 1);
        let verdicts = verify.verify(batch);
        let passed: Vec<Vertex> = verdicts
            .into_iter()
            .filter_map(|v| match v {
                Verdict::Passed(Unverified::Vertex { vertex, .. }) => Some(vertex),
                _ => None,
            })
            .collect();
        assert_eq!(passed.len(), 2, "a and b pass, the forged copy fails");
        core.handle(1, Event::Vertex { from: peer_id, vertex: Arc::new(a.clone()) }).expect("ok");
        while core.poll_action().is_some() {}

        // Next turn: a is held now; a fetch reply of [a, b] keeps only b.
        assert!(verify.dedupe(&core, Unverified::Vertex { from: peer_id, vertex: a.clone() }).is_none());
        assert_eq!(dropped(&metrics, "vertex"), 2);
        match verify.dedupe(&core, Unverified::Reply { from: peer_id, vertices: vec![a.clone(), b.clone()] }) {
            Some(Unverified::Reply { vertices, .. }) => assert_eq!(vertices.iter().map(|v| v.id).collect::<Vec<_>>(), vec![b.id]),
            _ => panic!("b is new"),
        }
        assert_eq!(dropped(&metrics, "reply_vertex"), 1);

        // A response to a query never made (or no longer open) is not verified.
        let response = Response { query_id: 77 << 8, responder: peer_id, ids_digest: [0; 32], votes: vec![], round: 0, lock_ages: Vec::new(), signature: vec![0; 10] };
        assert!(verify.dedupe(&core, Unverified::Response { from: peer_id, response }).is_none());
        assert_eq!(dropped(&metrics, "response"), 1);
    }

    /// Alerts: a replay is never verified twice; distinct proofs against a peer not yet
    /// convicted are; once the accused is convicted here, one alert about it is verified (the
    /// gossip is seen to arrive), the rest dropped unverified, whoever reports them. Before, an
    /// alert keyed by its own signature was new every time: a reporter signing fresh alerts
    /// against a convicted colluder cost up to three ML-DSA verifies each, without end; and
    /// once per reporter, every honest node's own broadcast of a proof cost every other node
    /// three verifies (the per-peer alert budget of `mod.rs` bounds what is left).
    #[test]
    fn alerts_about_a_convicted_peer_are_verified_once_per_accused() {
        let me = Arc::new(Keypair::generate().expect("ok"));
        let ids: Vec<NodeId> = std::iter::once(NodeId(me.public().node_id())).chain((1..4u8).map(|i| NodeId([i; 32]))).collect();
        let (me_id, reporter, other, accused) = (ids[0], ids[1], ids[2], ids[3]);
        let cfg = Config { me: me_id, nodes: ids.clone(), params: Params::lan_default(), seed: 1, shard: 0, shard_count: 1 };
        let mut core = Core::new(cfg, MlDsaSigner(me.clone())).expect("ok");
        let metrics = Arc::new(Metrics::new());
        let mut verify = Verify::new(HashMap::new(), metrics.clone());
        let key = pqdag_wire::ConflictKey([9; 32]);
        let spend = |n: u8| Vertex::new_unsigned(vec![core.genesis_id()], vec![n], vec![key], 1, accused);
        let evidence = pqdag_wire::Evidence::Equivocation { a: spend(1), b: spend(2) };
        let alert = |from: NodeId, sig: u8| Unverified::Alert { from, alert: pqdag_wire::Alert { reporter: from, accused, evidence: evidence.clone(), signature: vec![sig; 8] } };
        let passes = |verify: &mut Verify, core: &Core<MlDsaSigner>, from: NodeId, sig: u8| verify.dedupe(core, alert(from, sig)).is_some();

        // Not convicted yet: every distinct proof is verified, a replay is not.
        assert!(passes(&mut verify, &core, reporter, 1));
        assert!(passes(&mut verify, &core, reporter, 2));
        assert!(!passes(&mut verify, &core, reporter, 1), "a replay");
        // The proof verified: the core convicts the accused.
        core.handle(1, Event::Alert { from: reporter, accused, evidence: evidence.clone() }).expect("ok");
        while core.poll_action().is_some() {}
        assert!(core.is_convicted(&accused));
        // Convicted: one more about it, from anyone, then nothing.
        assert!(passes(&mut verify, &core, reporter, 3), "the first about a convicted peer");
        assert!(!passes(&mut verify, &core, reporter, 4), "a fresh signature changes nothing now");
        assert!(!passes(&mut verify, &core, reporter, 5));
        assert!(!passes(&mut verify, &core, other, 6), "another reporter's proof adds nothing either");
        assert!(!passes(&mut verify, &core, other, 7));
        assert_eq!(dropped(&metrics, "alert"), 5, "a replay and four after conviction");
    }
}

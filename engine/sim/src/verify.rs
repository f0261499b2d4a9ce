//! What the engine's shell checks before a peer message reaches a core (`engine/node`'s
//! `ingress` and `verify`): vertex ids and bounds, every signature against its signer's key
//! (vertex creator, query and response sender, the accused of an alert's proof), and that an
//! alert's proof is well formed. A message that fails is refused and charged to its sender as
//! [`Misbehaviour::InvalidSignature`] or [`Misbehaviour::Malformed`], never handed to the core.
//!
//! Owns nothing; calls only the signers (keyed MACs) of the run.

use pqdag_core::{Domain, Misbehaviour, NodeId};
use pqdag_wire::{Evidence, Vertex};

use crate::network::Msg;
use crate::shell::MacSigner;

/// Checks one vertex: bounds, id, its creator's signature.
fn vertex_ok<'a>(v: &Vertex, key_of: &impl Fn(&NodeId) -> Option<&'a MacSigner>) -> Result<(), Misbehaviour> {
    // The wire bounds (`Vertex::check_bounds` less the ML-DSA signature length: MACs are 32 B).
    let bounded = v.check_shape().is_ok();
    if !bounded || v.compute_id() != v.id {
        return Err(Misbehaviour::Malformed);
    }
    signed_by(key_of, &v.creator, Domain::Vertex, v.signed_bytes(), &v.signature)
}

fn signed_by<'a>(key_of: &impl Fn(&NodeId) -> Option<&'a MacSigner>, who: &NodeId, domain: Domain, msg: &[u8], sig: &[u8]) -> Result<(), Misbehaviour> {
    match key_of(who) {
        Some(k) if k.verifies(domain, msg, sig) => Ok(()),
        _ => Err(Misbehaviour::InvalidSignature),
    }
}

/// The shell's verdict on `msg` from `from`: `Err(kind)` refuses it. `check_evidence: false`
/// skips the proof checks of alerts (a deliberately broken shell, for the checker's self-test).
pub(crate) fn check<'a>(msg: &Msg, from: &NodeId, key_of: impl Fn(&NodeId) -> Option<&'a MacSigner>, check_evidence: bool) -> Result<(), Misbehaviour> {
    match msg {
        Msg::Vertex(v) => vertex_ok(v, &key_of),
        Msg::Reply(vs) => vs.iter().try_for_each(|v| vertex_ok(v, &key_of)),
        Msg::Query(q, digest) => signed_by(&key_of, from, Domain::Query, &q.signed_bytes_with_digest(digest), &q.signature),
        Msg::Response(r) => signed_by(&key_of, from, Domain::Response, &r.signed_bytes(), &r.signature),
        Msg::Alert(accused, ev) if check_evidence => match &**ev {
            Evidence::Equivocation { a, b } => {
                let formed = a.creator == *accused && b.creator == *accused && a.id != b.id && a.conflict_keys.iter().any(|k| b.conflict_keys.contains(k));
                if !formed {
                    return Err(Misbehaviour::Malformed);
                }
                vertex_ok(a, &key_of)?;
                vertex_ok(b, &key_of)
            }
            Evidence::ConflictingResponses { a, b } => {
                let formed = a.responder == *accused && b.responder == *accused && a.query_id == b.query_id && a.ids_digest == b.ids_digest && a.votes != b.votes;
                if !formed {
                    return Err(Misbehaviour::Malformed);
                }
                signed_by(&key_of, accused, Domain::Response, &a.signed_bytes(), &a.signature)?;
                signed_by(&key_of, accused, Domain::Response, &b.signed_bytes(), &b.signature)
            }
        },
        Msg::Alert(..) | Msg::Request(_) | Msg::Frontier(_) | Msg::Garbage(..) => Ok(()),
    }
}

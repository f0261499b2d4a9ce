//! Fuzz every message handler of the consensus core: the input is a sequence of wire frames
//! (any bytes), each decoded with the real validating decoder and, if it decodes, fed to a core
//! as if its signatures had verified (the adversary is a Byzantine peer with valid keys). The core
//! must never panic, whatever the sequence; its debug assertions check its invariants.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pqdag_core::{Config, Core, Domain, Event, NodeId, Params, Signer};
use pqdag_wire::{decode, FrameRef};

struct NoSign;

impl Signer for NoSign {
    fn sign(&self, _domain: Domain, _msg: &[u8]) -> Vec<u8> {
        vec![0; pqdag_wire::limits::SIGNATURE_BYTES]
    }
}

fuzz_target!(|data: &[u8]| {
    let nodes: Vec<NodeId> = (1..=4u8).map(|i| NodeId([i; 32])).collect();
    let cfg = Config { me: nodes[0], nodes: nodes.clone(), params: Params::lan_default().scaled_to(4), seed: 7, shard: 0, shard_count: 1 };
    let Ok(mut core) = Core::new(cfg, NoSign) else { return };
    let mut now = 1_000u64;
    // Frames are length-prefixed (u16 LE) inside the input; the byte after the length picks the
    // sending peer.
    let mut rest = data;
    let mut steps = 0;
    while rest.len() >= 3 && steps < 64 {
        steps += 1;
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let from = nodes[1 + usize::from(rest[2]) % 3];
        rest = &rest[3..];
        let frame = &rest[..len.min(rest.len())];
        rest = &rest[len.min(rest.len())..];
        now += 10_000;
        let event = match decode(frame) {
            Ok(FrameRef::Vertex(v)) => Event::Vertex { from, vertex: Arc::new(v.to_owned()) },
            Ok(FrameRef::Query(q)) => Event::query(from, Arc::new(q.to_owned())),
            Ok(FrameRef::Response(r)) => Event::Response { from, response: r.to_owned() },
            Ok(FrameRef::VertexReply(r)) => Event::VertexReply { from, vertices: r.vertices.iter().map(|v| Arc::new(v.to_owned())).collect() },
            Ok(FrameRef::VertexRequest(r)) => match rkyv::deserialize::<pqdag_wire::VertexRequest, rkyv::rancor::Error>(r) {
                Ok(request) => Event::VertexRequest { from, request },
                Err(_) => continue,
            },
            Ok(FrameRef::Frontier(f)) => match rkyv::deserialize::<pqdag_wire::Frontier, rkyv::rancor::Error>(f) {
                Ok(frontier) => Event::Frontier { from, frontier },
                Err(_) => continue,
            },
            Ok(FrameRef::Alert(a)) => match rkyv::deserialize::<pqdag_wire::Alert, rkyv::rancor::Error>(a) {
                Ok(alert) => Event::Alert { from, accused: alert.accused, evidence: alert.evidence },
                Err(_) => continue,
            },
            Ok(FrameRef::ClientRequest(_)) | Ok(FrameRef::ClientReply(_)) | Ok(FrameRef::SyncRequest(_)) | Ok(FrameRef::SyncReply(_)) => Event::Timer,
            Err(_) => Event::Submit { payload: frame.to_vec(), conflict_keys: vec![], client_tag: steps, timestamp_ms: now / 1000 },
        };
        let _ = core.handle(now, event);
        while core.poll_action().is_some() {}
        let _ = core.handle(now, Event::Timer);
        while core.poll_action().is_some() {}
    }
});

//! Fuzz the frame decoder: any bytes must give a value or a `WireError`, never a panic, and a
//! decoded vertex's derived bytes must be computable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pqdag_wire::{decode, FrameRef};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode(data) {
        match frame {
            FrameRef::Vertex(v) => {
                let _ = v.id_matches();
                let _ = v.to_owned();
            }
            FrameRef::Query(q) => {
                let _ = q.signed_bytes();
            }
            FrameRef::Response(r) => {
                let _ = r.signed_bytes();
            }
            FrameRef::VertexReply(r) => {
                for v in r.vertices.iter() {
                    let _ = v.id_matches();
                }
            }
            _ => {}
        }
    }
});

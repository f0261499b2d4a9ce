//! rkyv encode and validated (bytecheck + bounds) decode of the two hot messages.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pqdag_wire::limits::SIGNATURE_BYTES;
use pqdag_wire::{decode, encode, ConflictKey, FrameRef, NodeId, Query, Vertex, VertexId};
use std::hint::black_box;

fn vertex() -> Vertex {
    let mut v = Vertex::new_unsigned(
        vec![VertexId([1; 32]), VertexId([2; 32])],
        vec![0x5a; 512],
        vec![ConflictKey([3; 32])],
        1_764_000_000_000,
        NodeId([4; 32]),
    );
    v.signature = vec![0xee; SIGNATURE_BYTES];
    v
}

fn wire(c: &mut Criterion) {
    let v = vertex();
    let vbytes = encode(&v).expect("encode");
    let q = Query {
        query_id: 9,
        requester: NodeId([5; 32]),
        ids: (0..1000u32).map(|i| VertexId([(i % 251) as u8; 32])).collect(),
        signature: vec![0xee; SIGNATURE_BYTES],
    };
    let qbytes = encode(&q).expect("encode");

    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(vbytes.len() as u64));
    g.bench_function("encode vertex (~5.3 KB)", |b| b.iter(|| encode(black_box(&v)).expect("encode")));
    g.bench_function("decode+validate vertex", |b| {
        b.iter(|| matches!(decode(black_box(&vbytes)), Ok(FrameRef::Vertex(_))))
    });
    g.bench_function("decode+validate vertex + id check", |b| {
        b.iter(|| match decode(black_box(&vbytes)) {
            Ok(FrameRef::Vertex(a)) => a.id_matches(),
            _ => false,
        })
    });
    g.throughput(Throughput::Bytes(qbytes.len() as u64));
    g.bench_function("encode query (1000 ids)", |b| b.iter(|| encode(black_box(&q)).expect("encode")));
    g.bench_function("decode+validate query (1000 ids)", |b| {
        b.iter(|| matches!(decode(black_box(&qbytes)), Ok(FrameRef::Query(_))))
    });
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);

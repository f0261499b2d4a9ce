//! ML-DSA-87 sign / verify / batch verify and BLAKE3 vertex ids: the per-vertex CPU floor.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pqdag_crypto::{hash, BatchItem, BatchVerifier, Domain, Keypair};
use std::hint::black_box;

fn mldsa(c: &mut Criterion) {
    let kp = Keypair::generate().expect("keygen");
    let id = [7u8; 32];
    let sig = kp.sign(Domain::Vertex, &id).expect("sign");

    let mut g = c.benchmark_group("ml-dsa-87");
    g.bench_function("keygen", |b| b.iter(|| Keypair::generate().expect("keygen")));
    g.bench_function("sign (32-byte vertex id, prepared key)", |b| b.iter(|| kp.sign(Domain::Vertex, black_box(&id)).expect("sign")));
    g.bench_function("sign (32-byte vertex id, liboqs API: key expanded per call)", |b| {
        b.iter(|| kp.sign_without_preparation(Domain::Vertex, black_box(&id)).expect("sign"))
    });
    g.bench_function("verify (32-byte vertex id, prepared key)", |b| {
        b.iter(|| kp.public().verify(Domain::Vertex, black_box(&id), sig.as_bytes()).expect("verify"))
    });
    g.bench_function("verify (32-byte vertex id, liboqs API: key expanded per call)", |b| {
        b.iter(|| kp.public().verify_without_preparation(Domain::Vertex, black_box(&id), sig.as_bytes()).expect("verify"))
    });
    for n in [64usize, 1024] {
        let msgs: Vec<[u8; 32]> = (0..n).map(|i| [(i % 251) as u8; 32]).collect();
        let sigs: Vec<_> = msgs.iter().map(|m| kp.sign(Domain::Vertex, m).expect("sign")).collect();
        let items: Vec<BatchItem<'_>> = msgs
            .iter()
            .zip(&sigs)
            .map(|(m, s)| BatchItem { public_key: kp.public(), domain: Domain::Vertex, message: m, signature: s.as_bytes() })
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.sample_size(10);
        g.bench_function(format!("batch verify {n} (1 thread)"), |b| {
            let mut v = BatchVerifier::new();
            b.iter(|| assert!(v.verify(&items).iter().all(|ok| *ok)))
        });
        g.bench_function(format!("batch verify {n} (2 threads)"), |b| {
            let mut v = BatchVerifier::new();
            b.iter(|| assert!(v.verify_parallel(&items, 2).iter().all(|ok| *ok)))
        });
    }
    g.finish();
}

fn blake3_ids(c: &mut Criterion) {
    let bytes = vec![0x42u8; 5 * 1024];
    let mut g = c.benchmark_group("blake3");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("vertex id of 5 KiB", |b| b.iter(|| hash::vertex_id(black_box(&bytes))));
    g.bench_function("set digest add", |b| {
        b.iter_batched(hash::SetDigest::default, |mut d| d.add(black_box(&[3u8; 32])), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, mldsa, blake3_ids);
criterion_main!(benches);

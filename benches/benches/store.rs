//! The store's write path as a node drives it under batched load: a received vertex of 64
//! transactions (512-byte payloads, one conflict key each), and the 64 winners its decision
//! writes (one per conflict key, uniform like BLAKE3 keys). Written without fsync
//! (`WalNoSync`): this measures the CPU of the WAL append and the memtable inserts, a fifth of
//! a node's CPU at 13 000 payloads/s (`perf/flamegraph.sh`; docs/benchmark.md, "Where a
//! payload's CPU goes"). Flushes and compactions run in the background as in a node, so
//! samples spread: compare medians of runs on an idle machine.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pqdag_storage::{RocksStore, Store, StoreBatch, SyncPolicy};
use pqdag_wire::limits::SIGNATURE_BYTES;
use pqdag_wire::{ConflictKey, NodeId, Transaction, Vertex, VertexId};

const TXS: usize = 64;

/// Key `i` of batch `n`: uniform bytes, like the BLAKE3-derived keys of real payloads.
fn key(n: u64, i: u64) -> ConflictKey {
    ConflictKey(*blake3::hash(&[n.to_le_bytes(), i.to_le_bytes()].concat()).as_bytes())
}

/// Vertex `n`: `TXS` transactions, each spending a key no other vertex spends.
fn vertex(n: u64) -> Vertex {
    let txs = (0..TXS as u64).map(|i| Transaction::new(vec![0x5a; 512], vec![key(n, i)])).collect();
    let mut v = Vertex::with_txs(vec![VertexId([1; 32]), VertexId([2; 32])], txs, 1_764_000_000_000 + n, NodeId([4; 32]));
    v.signature = vec![0xee; SIGNATURE_BYTES];
    v
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = RocksStore::open(dir.path(), SyncPolicy::WalNoSync).expect("open");
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(TXS as u64));
    let mut n = 0u64;
    g.bench_function("write a received 64-tx vertex (33 KB)", |b| {
        b.iter_batched(
            || {
                n += 1;
                vertex(n)
            },
            |v| {
                let mut batch = StoreBatch::new();
                batch.put_vertex(v);
                batch.mark_deferrable();
                store.write(batch).expect("write");
            },
            BatchSize::SmallInput,
        )
    });
    let mut m = 0u64;
    g.bench_function("write the 64 winners of a decision", |b| {
        b.iter_batched(
            || {
                m += 1;
                (0..TXS as u64).map(|i| key(u64::MAX - m, i)).collect::<Vec<_>>()
            },
            |keys| {
                let mut batch = StoreBatch::new();
                for k in keys {
                    batch.set_winner(k, VertexId([9; 32]));
                }
                store.write(batch).expect("write");
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);

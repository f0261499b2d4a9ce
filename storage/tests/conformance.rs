//! One conformance suite, run against both stores (raft-rs style): RocksDB must behave exactly
//! like the in-memory model, including across a reopen.

use pqdag_storage::*;
use pqdag_wire::limits::SIGNATURE_BYTES;
use pqdag_wire::{ConflictKey, NodeId, Vertex, VertexId};

fn vertex(n: u8) -> Vertex {
    let mut v = Vertex::new_unsigned(vec![VertexId([n.wrapping_sub(1); 32])], vec![n; 100], vec![ConflictKey([n; 32])], 1000 + n as u64, NodeId([1; 32]));
    v.signature = vec![n; SIGNATURE_BYTES];
    v
}

fn suite(store: &mut dyn Store) {
    let (a, b, c) = (vertex(1), vertex(2), vertex(3));
    let mut batch = StoreBatch::new();
    batch.put_vertex(a.clone());
    batch.put_vertex(b.clone());
    batch.put_meta("node_id", vec![7; 32]);
    store.write(batch).expect("write");
    assert_eq!(store.get(&a.id).expect("get").expect("present").status, Status::Processing);
    assert_eq!(store.get_meta("node_id").expect("meta"), Some(vec![7; 32]));
    assert_eq!(store.get(&c.id).expect("get"), None);

    // Final, in the same batch as the vertex itself.
    let mut batch = StoreBatch::new();
    batch.put_vertex(c.clone());
    batch.set_status(c.id, Status::Final { position: 0 });
    batch.set_status(a.id, Status::Final { position: 1 });
    batch.set_status(b.id, Status::Rejected);
    store.write(batch).expect("write");
    assert_eq!(store.finalized_range(0, 10).expect("range"), vec![(0, c.id), (1, a.id)]);
    assert_eq!(store.finalized_range(1, 10).expect("range"), vec![(1, a.id)]);
    // A restart streams every vertex with its status, once.
    let mut visited = Vec::new();
    store.visit_all(&mut |sv| visited.push((sv.vertex.id, sv.status))).expect("visit");
    visited.sort_by_key(|(id, _)| id.0);
    let mut expected = vec![(a.id, Status::Final { position: 1 }), (b.id, Status::Rejected), (c.id, Status::Final { position: 0 })];
    expected.sort_by_key(|(id, _)| id.0);
    assert_eq!(visited, expected);

    // Decided is forever: a write that changes it is refused whole.
    let mut batch = StoreBatch::new();
    batch.put_vertex(vertex(9));
    batch.set_status(a.id, Status::Rejected);
    assert!(matches!(store.write(batch), Err(StorageError::FinalityViolation { .. })));
    assert_eq!(store.get(&vertex(9).id).expect("get"), None, "refused batch must not half-apply");
    let mut batch = StoreBatch::new();
    batch.set_status(a.id, Status::Final { position: 1 });
    store.write(batch).expect("idempotent re-write of the same decision");
    // Re-putting a decided vertex keeps its decision.
    let mut batch = StoreBatch::new();
    batch.put_vertex(b.clone());
    store.write(batch).expect("write");
    assert_eq!(store.get(&b.id).expect("get").expect("present").status, Status::Rejected);

    let mut batch = StoreBatch::new();
    batch.set_status(VertexId([0xee; 32]), Status::Processing);
    assert!(matches!(store.write(batch), Err(StorageError::UnknownVertex(_))));

    // The decision log: every decision once, in write order, with dense sequence numbers; the
    // idempotent re-write above added nothing.
    let log = store.decisions(0, 10).expect("decisions");
    let got: Vec<(u64, VertexId, Status)> = log.iter().map(|d| (d.seq, d.id, d.status)).collect();
    assert_eq!(got, vec![(1, c.id, Status::Final { position: 0 }), (2, a.id, Status::Final { position: 1 }), (3, b.id, Status::Rejected)]);
    assert_eq!(store.decisions(3, 10).expect("decisions").len(), 1);
    assert_eq!(store.next_decision_seq(), 4);
    assert_ne!(store.decision_log_id(), 0);
    let mut batch = StoreBatch::new();
    batch.set_client(a.id, [5; 32]);
    store.write(batch).expect("client");
    assert_eq!(store.client_of(&a.id).expect("client"), Some([5; 32]));
    assert_eq!(store.client_of(&b.id).expect("client"), None);

    let mut all = store.load_all().expect("load");
    all.sort_by_key(|s| s.vertex.id);
    assert_eq!(all.len(), 3);
    assert!(all.iter().any(|s| s.vertex == a && s.status == Status::Final { position: 1 }));
}

#[test]
fn mem_store_conforms() {
    suite(&mut MemStore::new());
}

#[test]
fn rocks_store_conforms_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = RocksStore::open(dir.path(), SyncPolicy::EveryBatch).expect("open");
        suite(&mut s);
    }
    let log_id = RocksStore::open(dir.path(), SyncPolicy::EveryBatch).expect("reopen").decision_log_id();
    let s = RocksStore::open(dir.path(), SyncPolicy::EveryBatch).expect("reopen");
    assert_eq!(s.decision_log_id(), log_id, "the log identity survives a reopen");
    assert_eq!(s.next_decision_seq(), 4, "the decision sequence survives a reopen");
    assert_eq!(s.decisions(1, 10).expect("decisions").len(), 3);
    assert_eq!(s.load_all().expect("load").len(), 3);
    assert_eq!(s.finalized_range(0, 10).expect("range").len(), 2);
    let backup = dir.path().join("backup");
    s.checkpoint(&backup).expect("checkpoint");
    drop(s);
    let b = RocksStore::open(&backup, SyncPolicy::WalNoSync).expect("open backup");
    assert_eq!(b.load_all().expect("load").len(), 3);
}

#[test]
fn corrupt_records_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = RocksStore::open(dir.path(), SyncPolicy::WalNoSync).expect("open");
    let mut batch = StoreBatch::new();
    batch.put_vertex(vertex(1));
    s.write(batch).expect("write");
    drop(s);
    // Overwrite the vertex record with garbage behind the store's back.
    {
        let cfs = ["vertices", "status", "finalized", "meta", "decisions", "clients"];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), cfs).expect("raw open");
        let cf = db.cf_handle("vertices").expect("cf");
        db.put_cf(cf, vertex(1).id.0, b"\x01\x01garbage").expect("put");
    }
    let s = RocksStore::open(dir.path(), SyncPolicy::WalNoSync).expect("open");
    assert!(matches!(s.get(&vertex(1).id), Err(StorageError::Corrupt { .. })));
    assert!(matches!(s.load_all(), Err(StorageError::Corrupt { .. })));
}

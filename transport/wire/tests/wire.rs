//! Wire format tests: round trips of every message (proptest), every-byte corruption of a
//! vertex, and garbage input. Decoding must return a clean error or a value, never panic.

use pqdag_wire::limits::*;
use pqdag_wire::*;
use proptest::prelude::*;

fn id() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn sig() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), any::<u8>()).prop_map(|(a, b)| (0..SIGNATURE_BYTES).map(|i| a.wrapping_add(b.wrapping_mul(i as u8))).collect())
}

prop_compose! {
    fn vertex()(
        parents in proptest::collection::btree_set(id(), PARENTS_MIN..=PARENTS_MAX),
        keys in proptest::collection::btree_set(id(), 0..=CONFLICT_KEYS_MAX),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 1..6),
        ts in any::<u64>(),
        creator in id(),
        signature in sig(),
    ) -> Vertex {
        // The keys dealt out over the transactions (no key spent twice).
        let n = payloads.len();
        let mut per_tx: Vec<Vec<ConflictKey>> = vec![Vec::new(); n];
        for (i, k) in keys.into_iter().enumerate() {
            per_tx[i % n].push(ConflictKey(k));
        }
        let txs = payloads.into_iter().zip(per_tx).map(|(p, k)| Transaction::new(p, k)).collect();
        let mut v = Vertex::with_txs(parents.into_iter().map(VertexId).collect(), txs, ts, NodeId(creator));
        v.signature = signature;
        v
    }
}

prop_compose! {
    fn response()(query_id in any::<u64>(), responder in id(), digest in id(),
                  votes in proptest::collection::vec(0u8..3, 0..600), round in any::<u64>(), aged in any::<bool>(),
                  signature in sig()) -> Response {
        let lock_ages = if aged { votes.iter().map(|v| v.wrapping_mul(37)).collect() } else { Vec::new() };
        Response { query_id, responder: NodeId(responder), ids_digest: digest, votes, round, lock_ages, signature }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn vertex_round_trips(v in vertex()) {
        let bytes = encode(&v).unwrap();
        let FrameRef::Vertex(a) = decode(&bytes).unwrap() else { panic!("kind") };
        prop_assert!(a.id_matches());
        prop_assert_eq!(a.canonical_bytes(), v.canonical_bytes());
        prop_assert_eq!(a.to_owned(), v);
    }

    #[test]
    fn query_round_trips(qid in any::<u64>(), req in id(), ids in proptest::collection::vec(id(), 0..1200), s in sig()) {
        let q = Query { query_id: qid, requester: NodeId(req), ids: ids.into_iter().map(VertexId).collect(), signature: s };
        let bytes = encode(&q).unwrap();
        let FrameRef::Query(a) = decode(&bytes).unwrap() else { panic!("kind") };
        prop_assert_eq!(a.signed_bytes(), q.signed_bytes());
        prop_assert_eq!(a.to_owned(), q);
    }

    #[test]
    fn response_round_trips(r in response()) {
        let bytes = encode(&r).unwrap();
        let FrameRef::Response(a) = decode(&bytes).unwrap() else { panic!("kind") };
        prop_assert_eq!(a.signed_bytes(), r.signed_bytes());
        prop_assert_eq!(a.to_owned(), r);
    }

    #[test]
    fn request_reply_frontier_alert_round_trip(
        rid in any::<u64>(),
        ids in proptest::collection::vec(id(), 0..REQUEST_IDS_MAX),
        vs in proptest::collection::vec(vertex(), 0..4),
        r1 in response(), r2 in response(), s in sig(),
    ) {
        let req = VertexRequest { request_id: rid, ids: ids.iter().copied().map(VertexId).collect() };
        let buf = encode(&req).unwrap();
        let FrameRef::VertexRequest(a) = decode(&buf).unwrap() else { panic!("kind") };
        prop_assert_eq!(a.request_id.to_native(), rid);
        prop_assert_eq!(a.ids.len(), ids.len());

        let rep = VertexReply { request_id: rid, vertices: vs.clone() };
        let buf = encode(&rep).unwrap();
        let FrameRef::VertexReply(a) = decode(&buf).unwrap() else { panic!("kind") };
        let back: Vec<Vertex> = a.vertices.iter().map(|v| v.to_owned()).collect();
        prop_assert_eq!(back, vs.clone());

        let tips: Vec<VertexId> = ids.iter().take(FRONTIER_IDS_MAX).copied().map(VertexId).collect();
        let f = Frontier { sender: NodeId([1; 32]), finalized_count: rid, tips: tips.clone() };
        let buf = encode(&f).unwrap();
        let FrameRef::Frontier(a) = decode(&buf).unwrap() else { panic!("kind") };
        prop_assert_eq!(a.tips.len(), tips.len());

        let evidences = [
            Evidence::ConflictingResponses { a: r1, b: r2 },
        ].into_iter().chain(vs.first().map(|v| Evidence::Equivocation { a: v.clone(), b: v.clone() }));
        for evidence in evidences {
            let al = Alert { reporter: NodeId([2; 32]), accused: NodeId([3; 32]), evidence, signature: s.clone() };
            let buf = encode(&al).unwrap();
        let FrameRef::Alert(a) = decode(&buf).unwrap() else { panic!("kind") };
            prop_assert_eq!(a.accused.0, [3; 32]);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096), kind in 1u8..8) {
        let mut framed = vec![WIRE_VERSION, kind];
        framed.extend_from_slice(&bytes);
        let _ = decode(&framed);
        let _ = decode(&bytes);
    }
}

fn sample_vertex() -> Vertex {
    let mut v = Vertex::new_unsigned(
        vec![VertexId([1; 32]), VertexId([2; 32])],
        (0..512u32).map(|i| i as u8).collect(),
        vec![ConflictKey([9; 32])],
        1_764_000_000_000,
        NodeId([7; 32]),
    );
    v.signature = vec![0xab; SIGNATURE_BYTES];
    v
}

/// Flipping any single byte of an encoded vertex yields a clean decode error, or a vertex whose
/// content no longer matches its id (caught before the signature check), or, for bytes of the
/// signature itself, a vertex whose signature would fail. Never a panic, never the same vertex.
#[test]
fn every_flipped_byte_is_detected() {
    let v = sample_vertex();
    let good = encode(&v).unwrap();
    let (mut errors, mut id_mismatch, mut sig_changed) = (0, 0, 0);
    for i in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            match decode(&bad) {
                Err(_) => errors += 1,
                Ok(FrameRef::Vertex(a)) => {
                    let owned = a.to_owned();
                    assert_ne!(owned, v, "byte {i} mask {mask:#x} decoded to the original vertex");
                    if !a.id_matches() {
                        id_mismatch += 1;
                    } else {
                        // Content and id agree, so the flip hit the signature: an ML-DSA check
                        // over the unchanged id now sees a different signature.
                        assert_eq!(owned.id, v.id);
                        assert_ne!(owned.signature, v.signature, "byte {i}");
                        sig_changed += 1;
                    }
                }
                Ok(other) => panic!("byte {i}: flipped into another kind {:?}", other.kind()),
            }
        }
    }
    assert!(errors > 0 && id_mismatch > 0 && sig_changed > 0, "{errors} {id_mismatch} {sig_changed}");
}

#[test]
fn bounds_are_enforced_both_ways() {
    let mut v = sample_vertex();
    v.parents = (0..=PARENTS_MAX as u8).map(|i| VertexId([i; 32])).collect();
    assert!(matches!(encode(&v), Err(WireError::Bound { what: "parents", .. })));
    v.parents = vec![VertexId([1; 32]), VertexId([1; 32])];
    assert!(matches!(encode(&v), Err(WireError::BadField { what: "parents", .. })));
    v.parents = vec![];
    assert!(encode(&v).is_err());
    v.parents = vec![VertexId([1; 32])];
    v.txs[0].payload = vec![0; PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(encode(&v), Err(WireError::Bound { .. })));
    v.txs[0].payload = vec![];
    v.signature = vec![1; 10];
    assert!(matches!(encode(&v), Err(WireError::BadField { what: "signature", .. })));

    let q = Query { query_id: 1, requester: NodeId([0; 32]), ids: vec![VertexId([0; 32]); QUERY_IDS_MAX + 1], signature: vec![0; SIGNATURE_BYTES] };
    assert!(encode(&q).is_err());

    // A hand-built frame that passes bytecheck but breaks a bound is refused on decode.
    let r = Response { query_id: 1, responder: NodeId([0; 32]), ids_digest: [0; 32], votes: vec![1, 0, 7], round: 9, lock_ages: Vec::new(), signature: vec![0; SIGNATURE_BYTES] };
    let bytes = encode(&r).unwrap();
    assert!(matches!(decode(&bytes), Err(WireError::BadField { what: "vote", .. })));

    // Lock ages: none, or one per vote; any other count is refused on encode.
    let mut r = Response { query_id: 1, responder: NodeId([0; 32]), ids_digest: [0; 32], votes: vec![1, 3], round: 9, lock_ages: vec![0], signature: vec![0; SIGNATURE_BYTES] };
    assert!(matches!(encode(&r), Err(WireError::BadField { what: "lock ages", .. })));
    r.lock_ages = vec![0, 4];
    let bytes = encode(&r).unwrap();
    let FrameRef::Response(a) = decode(&bytes).unwrap() else { panic!("kind") };
    assert_eq!(a.to_owned(), r);
    // The round and the ages are signed: another round is another message to sign.
    let mut other = r.clone();
    other.round = 10;
    assert_ne!(other.signed_bytes(), r.signed_bytes());
    other.round = 9;
    other.lock_ages = vec![0, 5];
    assert_ne!(other.signed_bytes(), r.signed_bytes());
}

#[test]
fn a_vertex_batch_is_checked_whole() {
    let k = ConflictKey([7; 32]);
    let parents = vec![VertexId([1; 32])];
    let sign = |mut v: Vertex| {
        v.signature = vec![0; SIGNATURE_BYTES];
        v
    };
    let ok = sign(Vertex::with_txs(parents.clone(), vec![Transaction::new(vec![1], vec![k]), Transaction::new(vec![2], vec![])], 1, NodeId([0; 32])));
    let bytes = encode(&ok).unwrap();
    let FrameRef::Vertex(a) = decode(&bytes).unwrap() else { panic!("kind") };
    assert!(a.id_matches());
    assert_eq!(a.to_owned(), ok);
    // Every transaction is provable under the root the id commits to.
    let ids = ok.tx_ids();
    for (i, t) in ids.iter().enumerate() {
        assert!(verify_tx_proof(&ok.tx_root(), t, i, ids.len(), &tx_proof(&ids, i).unwrap()));
    }
    // A vertex spending one key with two transactions.
    let twice = sign(Vertex::with_txs(parents.clone(), vec![Transaction::new(vec![1], vec![k]), Transaction::new(vec![2], vec![k])], 1, NodeId([0; 32])));
    assert!(matches!(encode(&twice), Err(WireError::BadField { what: "conflict_keys", .. })));
    // A key list that is not the transactions' keys.
    let mut lying = ok.clone();
    lying.conflict_keys = vec![ConflictKey([9; 32])];
    assert!(matches!(encode(&lying), Err(WireError::BadField { what: "conflict_keys", .. })));
    lying.conflict_keys = vec![];
    assert!(matches!(encode(&lying), Err(WireError::BadField { what: "conflict_keys", .. })));
    // Too many transactions, too many bytes.
    let many = sign(Vertex::with_txs(parents.clone(), (0..=TXS_MAX).map(|i| Transaction::new((i as u32).to_le_bytes().to_vec(), vec![])).collect(), 1, NodeId([0; 32])));
    assert!(matches!(encode(&many), Err(WireError::Bound { what: "transactions", .. })));
    let heavy = sign(Vertex::with_txs(parents, (0..9).map(|i| Transaction::new(vec![i; PAYLOAD_BYTES_MAX], vec![])).collect(), 1, NodeId([0; 32])));
    assert!(matches!(encode(&heavy), Err(WireError::Bound { what: "vertex transaction bytes", .. })));
}

#[test]
fn header_errors_are_typed() {
    assert_eq!(decode(&[]).unwrap_err(), WireError::Truncated(0));
    assert_eq!(decode(&[9, 1, 0]).unwrap_err(), WireError::Version(9));
    assert_eq!(decode(&[WIRE_VERSION, 0x77]).unwrap_err(), WireError::UnknownKind(0x77));
    assert!(matches!(decode(&vec![WIRE_VERSION; FRAME_BYTES_MAX + 1]), Err(WireError::TooLarge { .. })));
    assert!(matches!(decode(&[WIRE_VERSION, 1, 0, 0]), Err(WireError::Invalid { kind: "vertex", .. })));
}

#[test]
fn client_messages_round_trip_and_are_bounded() {
    let req = ClientRequest::Submit { tag: 5, payload: vec![1, 2, 3], conflict_keys: vec![ConflictKey([4; 32])] };
    let buf = encode(&req).unwrap();
    let FrameRef::ClientRequest(a) = decode(&buf).unwrap() else { panic!("kind") };
    assert!(matches!(a, ArchivedClientRequest::Submit { .. }));
    let rep = ClientReply::Events {
        events: vec![FinalityEvent { tx: TxId([2; 32]), id: VertexId([1; 32]), status: ClientStatus::Final { shard: 0, position: 9 }, latency_us: 1234 }],
    };
    let buf = encode(&rep).unwrap();
    let FrameRef::ClientReply(ArchivedClientReply::Events { events }) = decode(&buf).unwrap() else { panic!("kind") };
    assert_eq!(events[0].latency_us.to_native(), 1234);
    let big = ClientRequest::Submit { tag: 1, payload: vec![0; PAYLOAD_BYTES_MAX + 1], conflict_keys: vec![] };
    assert!(encode(&big).is_err());
}

#[test]
fn feed_messages_round_trip_and_are_bounded() {
    let req = ClientRequest::Feed { tag: 3, from: vec![1; 27], max: 100 };
    let buf = encode(&req).unwrap();
    let FrameRef::ClientRequest(ArchivedClientRequest::Feed { from, max, .. }) = decode(&buf).unwrap() else { panic!("kind") };
    assert_eq!((from.len(), max.to_native()), (27, 100));
    assert!(encode(&ClientRequest::Feed { tag: 3, from: vec![0; FEED_CURSOR_BYTES_MAX + 1], max: 1 }).is_err());
    let entry = FeedEntry {
        id: VertexId([1; 32]),
        decision: ClientStatus::Final { shard: 0, position: 7 },
        txs: vec![FeedTx { tx: TxId([8; 32]), payload: vec![9; 10], conflict_keys: vec![ConflictKey([2; 32])], client: [0; 32] }],
        parents: vec![VertexId([3; 32])],
        creator: NodeId([4; 32]),
        cursor: vec![5; 27],
    };
    let rep = ClientReply::FeedBatch { tag: 3, entries: vec![entry.clone(); 3], next_cursor: vec![5; 27] };
    let buf = encode(&rep).unwrap();
    let FrameRef::ClientReply(ArchivedClientReply::FeedBatch { entries, .. }) = decode(&buf).unwrap() else { panic!("kind") };
    assert_eq!(entries.len(), 3);
    assert!(encode(&ClientReply::FeedBatch { tag: 3, entries: vec![entry.clone(); FEED_ENTRIES_MAX + 1], next_cursor: vec![] }).is_err());
    // An entry must carry a decision: a hand-made frame with `Processing` is refused on decode.
    let bad = ClientReply::FeedBatch { tag: 3, entries: vec![FeedEntry { decision: ClientStatus::Processing, ..entry }], next_cursor: vec![] };
    let buf = encode(&bad).unwrap();
    assert!(decode(&buf).is_err());
}

//! Cross-shard messaging: a full mesh of bounded SPSC channels between the shards of one node
//! (glommio `channel_mesh`), one per ordered pair, so no locks anywhere. Per-pair FIFO order is
//! kept (the core requires in-order delivery of `ShardMsg`s): each target has one outbound queue
//! drained by one task, which moves what waits in batches of up to [`MESH_BATCH_MAX`] (one
//! channel operation per batch, not per message).
//!
//! Nothing is ever dropped (a lost `ShardMsg` would break the core's in-order contract and leave
//! a vertex waiting forever on a parent's decision); the queues are bounded by backpressure
//! instead: a receive task stops pulling once its shard's inbox holds [`MESH_INBOX_MAX`], the SPSC
//! channel then fills, the sender's outbound queue grows, and above [`MESH_QUEUE_HIGH`] the sender
//! stops taking network input ([`ShardMesh::congested`]) until it drains, so QUIC flow control
//! pushes back on the peers that caused the traffic. Cross-shard messages are always processed,
//! so two congested shards still drain each other.
//!
//! Lost wake-ups: glommio 0.9's shared channels wake the other executor through a notifier
//! that can miss under contention (DataDog/glommio#555, open), so no task here waits on the
//! channel's wake-up alone: a receiver also looks every [`MESH_RECHECK`], a sender of a full
//! channel retries every [`MESH_FULL_RETRY`] (both timers are the shard's own, a local
//! wake-up), and a channel full for [`MESH_FULL_WARN`] is logged. What this guards against
//! was seen twice in the first 24 runs of a 4 x 2 bench (1 500 payloads/s, a crash, double
//! spends, 10 ms polls) and is not explained yet: on the restarted node, 2-3.9 million messages queued from
//! shard 1 to shard 0 while shard 0's inbox was empty; shard 1's claims went unanswered and
//! the cluster once stalled on a double spend that needed that node's vote. The second time
//! was with the timers above, so a lost wake-up is not the whole story; the shard loop now
//! yields every turn (`Shard::run`: a loop with work every turn never returned `Pending`, and
//! these tasks run on its executor), and the 30 runs since had no jam (`docs/operations.md`,
//! "Known limitations").

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::{GlommioError, ResourceType};
use pqdag_core::ShardMsg;
use pqdag_wire::{ClientStatus, FeedEntry, TxId, VertexId};

use super::mailbox::Mailbox;

/// Capacity of each SPSC channel of the mesh, in batches of at most [`MESH_BATCH_MAX`].
pub const MESH_CHANNEL_CAPACITY: usize = 64;
/// Most messages one channel item carries. One item per message cost a cross-thread channel
/// operation (and often a wake-up) each: at 2 500 payloads/s on 3 nodes x 2 shards the shards
/// sent each other ~500 000 `Success` messages a second, the flush task fell behind, its
/// queue grew by millions and the cluster stopped finalizing. A batch costs one operation.
pub const MESH_BATCH_MAX: usize = 1024;
/// Messages queued towards one shard above which this shard stops taking network input.
pub const MESH_QUEUE_HIGH: usize = 1 << 16;
/// Messages waiting in a shard's inbox above which its receive tasks stop pulling.
pub const MESH_INBOX_MAX: usize = 1 << 16;
/// Longest a batch waits in a channel for its receiver when the channel's wake-up was lost.
pub const MESH_RECHECK: Duration = Duration::from_millis(5);
/// Pause before a sender tries a full channel again.
pub const MESH_FULL_RETRY: Duration = Duration::from_micros(500);
/// How long a channel stays full before its sender logs that the receiver is not draining.
pub const MESH_FULL_WARN: Duration = Duration::from_secs(1);

/// What shards of one node tell each other.
#[derive(Debug)]
pub enum MeshMsg {
    /// A consensus fact for the target's core.
    Core(ShardMsg),
    /// An own vertex (created through shard 0's client endpoint) was decided on its owner shard:
    /// shard 0 tells the client.
    Decided {
        /// The vertex.
        id: VertexId,
        /// Final (with position) or rejected.
        status: ClientStatus,
    },
    /// A submission made on shard 0 became a vertex adopted by another shard: shard 0 holds the
    /// client's request and answers it.
    Created {
        /// Shard 0's internal submission tag.
        client_tag: u64,
        /// The vertex.
        id: VertexId,
        /// The transaction the submission became.
        tx: TxId,
    },
    /// A submission of a rejected own vertex is final in another vertex carrying the same
    /// transaction (see `Action::TxFinal`): shard 0 tells the client.
    TxFinal {
        /// Shard 0's internal submission tag.
        client_tag: u64,
        /// The final vertex.
        id: VertexId,
        /// The transaction.
        tx: TxId,
    },
    /// An own vertex is being rejected on its owner shard and these submissions of it move to a
    /// new vertex (re-issue): shard 0 must not report them rejected with it.
    Reissued {
        /// The rejected vertex.
        id: VertexId,
        /// Shard 0's internal submission tags.
        client_tags: Vec<u64>,
    },
    /// Shard 0 asks the shard owning these conflict keys whether any is spent by a vertex it
    /// knows (a client submission's double-spend check; `Gateway::request`).
    KeyCheck {
        /// Correlation id.
        req: u64,
        /// The keys this shard owns.
        keys: Vec<pqdag_wire::ConflictKey>,
    },
    /// The answer: the first of the keys already spent, if any.
    KeyCheckReply {
        /// Correlation id.
        req: u64,
        /// The answering shard.
        shard: usize,
        /// A spent key.
        spent: Option<pqdag_wire::ConflictKey>,
    },
    /// Shard 0 asks the owner shard for statuses (client `Status` request).
    StatusQuery {
        /// Correlation id.
        req: u64,
        /// The ids this shard owns.
        ids: Vec<VertexId>,
    },
    /// The answer, in query order.
    StatusReply {
        /// Correlation id.
        req: u64,
        /// The answering shard.
        shard: usize,
        /// One per id.
        statuses: Vec<ClientStatus>,
    },
    /// Shard 0 asks a shard for its part of a client's feed batch (its own decision log).
    FeedQuery {
        /// Correlation id.
        req: u64,
        /// The decision log the cursor points into (0: any, a fresh cursor).
        log_id: u64,
        /// The last sequence the client has (0: none).
        after_seq: u64,
        /// Most entries.
        max_entries: u32,
        /// Most payload bytes.
        max_bytes: u32,
    },
    /// The answer: the shard's log id and its entries with their sequence numbers, or why not.
    FeedReply {
        /// Correlation id.
        req: u64,
        /// The answering shard.
        shard: usize,
        /// `(log_id, [(seq, entry)])`, or the refusal (its client error code and reason).
        result: Result<(u64, Vec<(u64, FeedEntry)>), (pqdag_wire::ClientErrorCode, String)>,
    },
}

/// How a node's shards find each other: the mesh builder plus the mesh peer id of every shard
/// (peer ids are assigned in join order, not by shard index).
#[derive(Clone)]
pub struct MeshSetup {
    /// Shared builder (one per node).
    pub builder: MeshBuilder<Vec<MeshMsg>, Full>,
    /// `peer_ids[shard]` = mesh peer id, `usize::MAX` until that shard joined.
    pub peer_ids: Arc<Vec<AtomicUsize>>,
}

impl MeshSetup {
    /// A mesh for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            builder: MeshBuilder::full(shards, MESH_CHANNEL_CAPACITY),
            peer_ids: Arc::new((0..shards).map(|_| AtomicUsize::new(usize::MAX)).collect()),
        }
    }
}

/// One shard's end of the mesh.
pub struct ShardMesh {
    senders: Rc<Senders<Vec<MeshMsg>>>,
    peer_of_shard: Vec<usize>,
    queues: Vec<Rc<RefCell<VecDeque<MeshMsg>>>>,
    wake: Vec<Mailbox<()>>,
}

impl ShardMesh {
    /// Joins the mesh as `shard`, starts one receive task per source shard (pushing into
    /// `inbox`) and one flush task per target shard.
    pub(crate) async fn join(setup: MeshSetup, shard: u16, inbox: Mailbox<MeshMsg>) -> Result<ShardMesh, String> {
        let (senders, mut receivers) = setup.builder.join().await.map_err(|e| format!("mesh join failed: {e}"))?;
        setup.peer_ids[usize::from(shard)].store(senders.peer_id(), Ordering::Release);
        // Wait until every shard has published its peer id (all joined before join returned).
        let mut peer_of_shard = vec![usize::MAX; setup.peer_ids.len()];
        for _ in 0..1000 {
            peer_of_shard = setup.peer_ids.iter().map(|a| a.load(Ordering::Acquire)).collect();
            if peer_of_shard.iter().all(|p| *p != usize::MAX) {
                break;
            }
            glommio::timer::Timer::new(Duration::from_millis(1)).await;
        }
        if peer_of_shard.iter().any(|p| *p == usize::MAX) {
            return Err("mesh: a shard never published its id".into());
        }
        for (from_peer, rx) in receivers.streams() {
            let inbox = inbox.clone();
            glommio::spawn_local(async move {
                loop {
                    // Never parked on the channel's cross-thread wake-up alone: it can be lost
                    // (module doc, "Lost wake-ups"), so the channel is looked at again every
                    // `MESH_RECHECK`. Dropping a pending `recv` loses nothing (it holds no item).
                    let got = futures_lite::future::or(async { Some(rx.recv().await) }, async {
                        glommio::timer::Timer::new(MESH_RECHECK).await;
                        None
                    })
                    .await;
                    let batch = match got {
                        Some(Some(batch)) => batch,
                        Some(None) => {
                            // The sending shard closed: the node is stopping.
                            tracing::info!(shard, from_peer, "mesh: a sending shard closed its channel");
                            return;
                        }
                        None => continue,
                    };
                    for m in batch {
                        inbox.push(m);
                    }
                    while inbox.len() >= MESH_INBOX_MAX {
                        glommio::timer::Timer::new(Duration::from_millis(1)).await;
                    }
                }
            })
            .detach();
        }
        let senders = Rc::new(senders);
        let mut queues = Vec::new();
        let mut wake = Vec::new();
        for (target, &peer) in peer_of_shard.iter().enumerate() {
            let q: Rc<RefCell<VecDeque<MeshMsg>>> = Rc::new(RefCell::new(VecDeque::new()));
            let w: Mailbox<()> = Mailbox::new();
            if target != usize::from(shard) {
                let (q2, w2, s2) = (q.clone(), w.clone(), senders.clone());
                glommio::spawn_local(async move {
                    loop {
                        w2.ready().await;
                        while w2.pop().is_some() {}
                        loop {
                            // Oldest first, in order: FIFO per target holds across batches.
                            let batch: Vec<MeshMsg> = {
                                let mut q = q2.borrow_mut();
                                let n = q.len().min(MESH_BATCH_MAX);
                                q.drain(..n).collect()
                            };
                            if batch.is_empty() {
                                break;
                            }
                            // `try_send_to` and a timer, not `send_to`, whose wait for room
                            // rests on the receiver's wake-up (module doc, "Lost wake-ups").
                            let mut batch = batch;
                            let mut full_since: Option<std::time::Instant> = None;
                            let mut warned = false;
                            loop {
                                match s2.try_send_to(peer, batch) {
                                    Ok(()) => {
                                        if warned {
                                            tracing::warn!(shard, target, "mesh: the channel drains again");
                                        }
                                        break;
                                    }
                                    Err(GlommioError::WouldBlock(ResourceType::Channel(back))) => {
                                        batch = back;
                                        let since = *full_since.get_or_insert_with(std::time::Instant::now);
                                        if !warned && since.elapsed() >= MESH_FULL_WARN {
                                            warned = true;
                                            let queued = q2.borrow().len();
                                            tracing::warn!(shard, target, queued, "mesh: the channel has been full for a second: its receiving shard is not draining it");
                                        }
                                        glommio::timer::Timer::new(MESH_FULL_RETRY).await;
                                    }
                                    Err(e) => {
                                        // The mesh is closing: the node is stopping.
                                        // Not `{e:?}`: the error carries the whole batch back.
                                        let why = if matches!(e, GlommioError::Closed(_)) { "closed" } else { "unexpected error" };
                                        tracing::info!(shard, target, why, "mesh: a flush task stopped");
                                        return;
                                    }
                                }
                            }
                        }
                    }
                })
                .detach();
            }
            queues.push(q);
            wake.push(w);
        }
        Ok(ShardMesh { senders, peer_of_shard, queues, wake })
    }

    /// Queues `msg` for `shard` (FIFO per target), always: false only for a shard that does not
    /// exist. Optional traffic (client reads fanned out) checks [`Self::congested`] first.
    pub fn send(&self, shard: usize, msg: MeshMsg) -> bool {
        let Some(q) = self.queues.get(shard) else { return false };
        q.borrow_mut().push_back(msg);
        // One wake-up pending is enough: the flush task empties the queue before it waits.
        if self.wake[shard].len() == 0 {
            self.wake[shard].push(());
        }
        true
    }

    /// Whether a target's queue is above [`MESH_QUEUE_HIGH`]: the shard loop then takes no
    /// network input until it drains.
    pub fn congested(&self) -> bool {
        self.queues.iter().any(|q| q.borrow().len() > MESH_QUEUE_HIGH)
    }

    /// Messages queued towards the other shards, not yet handed to the mesh channels.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(|q| q.borrow().len()).sum()
    }

    /// Number of shards in the mesh.
    pub fn shards(&self) -> usize {
        self.peer_of_shard.len()
    }

    /// Closes the sending side (at shutdown).
    pub fn close(&self) {
        self.senders.close();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    /// A target shard that stops draining its inbox: the sender's queue grows past the
    /// high-water mark (congested: its loop would stop taking network input), nothing is
    /// dropped, and once the target drains every message arrives, in order, and the sender is
    /// no longer congested. (The old mesh dropped message 1 048 577 and on.)
    #[test]
    fn a_slow_shard_backpressures_its_sender_and_loses_nothing() {
        // The inbox, the channel's batches and the batch the flush task holds, then past the mark.
        let total = MESH_QUEUE_HIGH + MESH_INBOX_MAX + (MESH_CHANNEL_CAPACITY + 1) * MESH_BATCH_MAX + 1_000;
        let template = MeshSetup::new(2);
        let (b0, b1) = (template.builder.clone(), template.builder);
        let (ids0, ids1) = (template.peer_ids.clone(), template.peer_ids);
        let sent = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (s1, d1) = (sent.clone(), done.clone());
        let receiver = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let inbox: Mailbox<MeshMsg> = Mailbox::new();
                let _mesh = ShardMesh::join(MeshSetup { builder: b1, peer_ids: ids1 }, 1, inbox.clone()).await.expect("join 1");
                while !s1.load(Ordering::Acquire) {
                    glommio::timer::Timer::new(Duration::from_millis(1)).await;
                }
                // Not drained yet: the receive task stopped at the inbox bound.
                glommio::timer::Timer::new(Duration::from_millis(50)).await;
                assert!(inbox.len() <= MESH_INBOX_MAX, "inbox grew past its bound: {}", inbox.len());
                let mut next = 0u64;
                while next < total as u64 {
                    match inbox.pop() {
                        Some(MeshMsg::Created { client_tag, .. }) => {
                            assert_eq!(client_tag, next, "out of order or lost");
                            next += 1;
                        }
                        Some(_) => panic!("unexpected message"),
                        None => {
                            glommio::timer::Timer::new(Duration::from_millis(1)).await;
                        }
                    }
                }
                d1.store(true, Ordering::Release);
                next
            })
            .expect("executor 1");
        let sender = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let inbox: Mailbox<MeshMsg> = Mailbox::new();
                let mesh = ShardMesh::join(MeshSetup { builder: b0, peer_ids: ids0 }, 0, inbox).await.expect("join 0");
                for i in 0..total as u64 {
                    assert!(mesh.send(1, MeshMsg::Created { client_tag: i, id: VertexId([0; 32]), tx: TxId([0; 32]) }));
                }
                // Let the flush task move what the channel and the inbox take.
                glommio::timer::Timer::new(Duration::from_millis(100)).await;
                let congested = mesh.congested();
                sent.store(true, Ordering::Release);
                while !done.load(Ordering::Acquire) {
                    glommio::timer::Timer::new(Duration::from_millis(1)).await;
                }
                (congested, mesh.congested())
            })
            .expect("executor 0");
        let (was, still) = sender.join().expect("sender");
        let received = receiver.join().expect("receiver");
        assert!(was, "the sender never saw its queue above the high-water mark");
        assert!(!still, "still congested after the target drained");
        assert_eq!(received, total as u64);
    }
}

//! Cross-shard messaging: a full mesh of bounded SPSC channels between the shards of one node
//! (glommio `channel_mesh`), one per ordered pair, so no locks anywhere. Per-pair FIFO order is
//! kept (the core requires in-order delivery of `ShardMsg`s): each target has one outbound queue
//! drained by one task.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use pqdag_core::ShardMsg;
use pqdag_wire::{ClientStatus, FeedEntry, VertexId};

use super::mailbox::Mailbox;

/// Capacity of each SPSC channel of the mesh.
pub const MESH_CHANNEL_CAPACITY: usize = 4096;
/// Most messages queued towards one shard before the sender's turn blocks on the channel.
pub const MESH_QUEUE_MAX: usize = 1 << 20;

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
    pub builder: MeshBuilder<MeshMsg, Full>,
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
    senders: Rc<Senders<MeshMsg>>,
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
        for (_, rx) in receivers.streams() {
            let inbox = inbox.clone();
            glommio::spawn_local(async move {
                while let Some(m) = rx.recv().await {
                    inbox.push(m);
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
                            let Some(m) = q2.borrow_mut().pop_front() else { break };
                            if s2.send_to(peer, m).await.is_err() {
                                return; // the mesh is closing: the node is stopping
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

    /// Queues `msg` for `shard` (FIFO per target).
    pub fn send(&self, shard: usize, msg: MeshMsg) -> bool {
        let Some(q) = self.queues.get(shard) else { return false };
        if q.borrow().len() >= MESH_QUEUE_MAX {
            return false;
        }
        q.borrow_mut().push_back(msg);
        self.wake[shard].push(());
        true
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

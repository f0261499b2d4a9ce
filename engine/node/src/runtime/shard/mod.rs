//! One shard: a pinned glommio executor owning a consensus core, a QUIC endpoint and a RocksDB
//! store outright. This module owns the [`Shard`] (one field per stage) and its turn loop; the
//! turn is a one-way pipeline:
//!
//! 1. [`ingress`] decodes every frame of the turn and checks identities, routing what is not
//!    consensus traffic to the [`gateway`] (clients), the [`sync_server`] (fetch and history
//!    sync requests), the [`sync_client`] (history-sync replies) and the [`guard`] (refusals);
//! 2. [`verify`] checks every signature of the turn as one batch;
//! 3. [`step`] feeds the verified events to the core and drains its actions;
//! 4. [`persist`] makes the turn's persists durable in one write batch;
//! 5. [`effects`] releases the sends (through the [`tamper`] decorator in a Byzantine test mode).
//!
//! Steps 4 and 5 overlap the next turn: the write (and its fsync) runs on the blocking thread
//! while the next turn decodes and verifies; the sends leave when it is durable, before that
//! turn's step (persist before send, and one write at a time).
//!
//! Then [`telemetry`] publishes the state. [`restore`] rebuilds the core at start, [`dialer`]
//! keeps connections up, [`outbound`] owns the requests this shard made.

mod admission;
mod archive;
mod dialer;
mod effects;
mod feed;
mod gateway;
mod guard;
mod ingress;
mod holds;
mod limits;
mod quotas;
mod outbound;
mod persist;
mod restore;
mod retention;
mod disk;
mod roster;
mod setup;
mod signer;
mod step;
mod sync_client;
mod sync_server;
mod tamper;
mod telemetry;
mod verify;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqdag_core::{Config as CoreConfig, Core, Misbehaviour, RequestKind};
use pqdag_storage::RocksStore;
use pqdag_transport::{Incoming, PeerConfig, ShardTransport, TransportConfig};
use pqdag_wire::NodeId;
use tracing::info;

use super::mailbox::Mailbox;
use super::mesh::{MeshMsg, MeshSetup, ShardMesh};
use effects::{Effects, Stages};
use gateway::{ClientEvents, Gateway};
use guard::Guard;
use ingress::{Decoded, Unverified};
use limits::Limits;
use outbound::{Outbound, Reply};
use persist::Persist;
use roster::Roster;
use step::Step;
use sync_client::SyncClient;
use tamper::Tamper;
use telemetry::Telemetry;
use verify::{Verdict, Verify};

pub use gateway::{ADMIT_UNDECIDED_MAX, CLIENT_INFLIGHT_MAX, OWN_KEYS_MAX};
pub use guard::{proven_misbehaviour, BAN_COOL_OFF};
pub use outbound::PENDING_REPLIES_MAX;
pub use retention::{RetentionPolicy, PRUNE_CHUNK_MAX, RETAIN_DECISIONS_MIN};
pub use setup::{ShardError, ShardSetup, WinnerStores};
pub(crate) use setup::Fatal;
pub use signer::MlDsaSigner;

/// Most incoming items handled per loop turn (bounds a turn's latency).
pub const TURN_INCOMING_MAX: usize = 1024;
/// Processing vertices described in the log when a shard stops with some undecided.
const STOP_DIAGNOSE_MAX: usize = 8;
/// Longest sleep of an idle loop (how fast a stop request is seen).
const IDLE_WAIT_MAX: Duration = Duration::from_millis(50);

/// The shard's time base: microseconds since the shard opened (the core's `now`).
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
}

impl Clock {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// The time base of every shard of the process (the core's clock reads microseconds since it),
/// with the wall-clock time it stands for: lock rounds are slots of wall-clock time and must
/// read alike on every shard of a node (`pqdag_core` `lock_rounds`), and never repeat across a
/// restart.
fn clock_base() -> (Instant, u64) {
    static BASE: std::sync::OnceLock<(Instant, u64)> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let unix_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        (Instant::now(), unix_us)
    })
}

/// The one counter behind every tag this shard makes up (internal submission tags, request
/// ids, status-query ids, flood seeds): one sequence, so no two collide.
struct Tags {
    next: u64,
}

impl Tags {
    /// The current tag; the counter moves on.
    fn take(&mut self) -> u64 {
        let t = self.next;
        self.next += 1;
        t
    }

    /// Moves the counter on and returns the new tag.
    fn bump(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// One shard: the stages of its turn, each owning its own state.
struct Shard {
    shard: u16,
    stop: Arc<AtomicBool>,
    turn_interval_min_us: u64,
    clock: Clock,
    roster: Rc<Roster>,
    transport: Rc<ShardTransport>,
    core: Core<MlDsaSigner>,
    tags: Tags,
    /// This shard's end of the node's shard mesh (S > 1).
    mesh: Option<ShardMesh>,
    /// Messages from other shards.
    cross: Mailbox<MeshMsg>,
    outbound: Outbound,
    verify: Verify,
    step: Step,
    persist: Persist,
    /// The previous turn's store write, still running, and the actions that wait for it.
    writing: Option<(persist::Writing, Vec<pqdag_core::Action>)>,
    /// Set with a reason when a store operation failed (the shard then returns an error).
    fatal: Fatal,
    effects: Effects,
    gateway: Gateway,
    sync: SyncClient,
    guard: Guard,
    /// Per-peer budgets of queries, fetches and history-sync requests.
    limits: Limits,
    holds: holds::Holds,
    telemetry: Telemetry,
    /// When and how far the store is pruned (`[storage]`).
    retention: retention::Retention,
}

/// Longest a shard waits at start for the other shards to open their stores.
const STORES_OPEN_WAIT_MAX: Duration = Duration::from_secs(120);

/// Runs one shard until `setup.stop` is set. Call inside the shard's glommio executor.
pub async fn run_shard(setup: ShardSetup) -> Result<(), ShardError> {
    let (mut shard, mesh) = Shard::open(setup)?;
    super::sharded_histogram::set_shard_slot(shard.shard);
    if let Some(m) = mesh {
        shard.mesh = Some(ShardMesh::join(m, shard.shard, shard.cross.clone()).await.map_err(ShardError::Mesh)?);
    }
    shard.run().await;
    match shard.fatal.reason() {
        Some(reason) => Err(ShardError::Fatal(reason.clone())),
        None => Ok(()),
    }
}

impl Shard {
    /// Opens the endpoint and the store and restores the core; returns the mesh still to join.
    fn open(setup: ShardSetup) -> Result<(Self, Option<MeshSetup>), ShardError> {
        let node_ids: Vec<NodeId> = setup.members.iter().map(|(_, pk, _)| NodeId(pk.node_id())).collect();
        let keys: HashMap<_, _> = node_ids.iter().copied().zip(setup.members.iter().map(|(_, pk, _)| pk.clone())).collect();
        let me_id = node_ids[setup.me];
        let names = setup.members.iter().map(|(name, _, _)| name.clone()).collect();
        let roster = Rc::new(Roster::new(setup.me, node_ids.clone(), names));
        let peers = setup.members.iter().map(|(_, pk, addr)| PeerConfig { public_key: pk.clone(), addr: *addr }).collect();
        let mut tcfg = TransportConfig::new(setup.keypair.clone(), peers, setup.shard, setup.bind);
        tcfg.client_bind = setup.client_bind;
        tcfg.client_keys = setup.client_keys.clone();
        let transport = Rc::new(ShardTransport::new(tcfg)?);

        let mut store = RocksStore::open(&setup.store_dir, setup.sync)?;
        // Stores from before the `winners` column family: once, streamed (the core's archive
        // answers decided keys from it).
        let backfilled = store.backfill_winners()?;
        if backfilled > 0 {
            info!(shard = setup.shard, keys = backfilled, "conflict-key winners written for an older store");
        }
        let core_cfg = CoreConfig {
            me: node_ids[setup.me],
            nodes: node_ids,
            params: setup.params.clone(),
            seed: setup.seed,
            shard: u32::from(setup.shard),
            shard_count: u32::from(setup.shard_count),
        };
        let mut core = Core::new(core_cfg, MlDsaSigner(setup.keypair.clone()))?;
        if let Some(slot) = setup.winner_stores.get(usize::from(setup.shard)) {
            let _ = slot.set(store.reader());
        }
        // Restoring joins this shard's conflict keys, and a key's winner may sit in another
        // shard's store (`archive.rs`): wait until every shard has opened its store (each does
        // first thing; a shard that cannot open stops the node, and the wait with it).
        let waited = Instant::now();
        while setup.winner_stores.iter().any(|s| s.get().is_none()) && !setup.stop.load(Ordering::Relaxed) {
            if waited.elapsed() > STORES_OPEN_WAIT_MAX {
                tracing::warn!(shard = setup.shard, "another shard's store is not open after {:?}; restoring without it", STORES_OPEN_WAIT_MAX);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let fatal = Fatal::new(setup.stop.clone());
        core.set_archive(Box::new(archive::StoreArchive::new(store.reader(), setup.winner_stores.clone(), usize::from(setup.shard), fatal.clone())));
        let (start, unix_us) = clock_base();
        core.set_round_clock(unix_us);
        let clock = Clock { start };
        core.restore_remote_facts(setup.remote_facts.iter().copied());
        restore::restore(&mut core, &mut store, setup.shard)?;
        let metrics = setup.metrics;
        let query_timeout_us = setup.params.query_timeout_us;
        let tamper = setup.byzantine.map(|mode| {
            let ctx = tamper::AttackCtx { transport: transport.clone(), metrics: metrics.clone(), stop: setup.stop.clone(), genesis: core.genesis_id() };
            Tamper::new(mode, setup.keypair.clone(), roster.clone(), start, ctx)
        });
        let me = core.me();
        let shard = Shard {
            shard: setup.shard,
            stop: setup.stop.clone(),
            turn_interval_min_us: setup.turn_interval_min_us,
            clock,
            core,
            tags: Tags { next: 1 },
            mesh: None,
            cross: Mailbox::new(),
            outbound: Outbound::new(transport.clone(), metrics.clone()),
            verify: Verify::new(keys, metrics.clone()),
            step: Step::new(metrics.clone(), clock),
            persist: Persist::new(store, me, metrics.clone(), fatal.clone()),
            writing: None,
            fatal,
            effects: Effects::new(transport.clone(), roster.clone(), metrics.clone(), setup.shard, query_timeout_us, tamper),
            gateway: Gateway::new(me_id, setup.shard, setup.shard_count, transport.clone(), metrics.clone(), disk::DiskFloor::new(setup.store_dir.clone(), setup.min_free_bytes)),
            sync: SyncClient::new(roster.len(), start, query_timeout_us, metrics.clone()),
            limits: Limits::new(roster.len(), metrics.clone(), transport.clone()),
            holds: holds::Holds::new(transport.clone()),
            guard: Guard::new(transport.clone(), metrics.clone(), roster.clone(), setup.keypair, clock),
            telemetry: Telemetry::new(setup.status, metrics, setup.shard, roster.clone(), transport.clone(), start),
            retention: retention::Retention::new(setup.retention),
            roster,
            transport,
        };
        Ok((shard, setup.mesh))
    }

    async fn run(&mut self) {
        self.telemetry.set_running(true);
        self.publish();
        dialer::spawn_dialer(self.transport.clone(), self.roster.me, self.roster.len(), self.stop.clone());
        // Turn pacing: a turn starts at most every `turn_interval_min_us`, so one store batch
        // (fsync) and one wake-up serve more messages; see `NodeConfig::turn_interval_min_us`.
        let turn_min = Duration::from_micros(self.turn_interval_min_us);
        let mut last_turn = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            // Cooperative scheduling: with work every turn and no store write to wait for, this
            // loop never returns `Pending` by itself, and the shard's other tasks (the mesh's
            // flush and receive tasks, the transport's) would wait behind it; glommio switches
            // tasks only where one yields (`mesh`, "Lost wake-ups": a jammed mesh queue).
            glommio::yield_if_needed().await;
            if last_turn.elapsed() < turn_min && self.writing.is_some() {
                // The pause is the write's to overlap: its sends leave as soon as it is durable.
                self.finish_writing().await;
                self.publish();
            }
            let since = last_turn.elapsed();
            if since < turn_min {
                glommio::timer::Timer::new(turn_min - since).await;
            }
            self.sync.maybe_sync(&mut self.core, &self.roster, &self.guard, &mut self.tags, &mut self.outbound);
            // Never waiting: collect a finished background prune, start the next (`retention`).
            self.persist.prune_step(&mut self.retention, self.shard);
            let now = self.clock.now();
            self.limits.charge_starved(&mut self.core, &self.roster, &mut self.guard, now);
            self.holds.release_due(&self.core, &self.roster);
            let mut incoming = Vec::new();
            // Backpressure (`mesh`): while a cross-shard queue is above its high-water mark, take
            // no network input; peers are held back by QUIC flow control, nothing is dropped.
            let congested = self.mesh.as_ref().is_some_and(|m| m.congested());
            if congested {
                // The mesh's flush tasks drain the queue only when this task lets them run.
                futures_lite::future::yield_now().await;
            }
            while !congested && incoming.len() < TURN_INCOMING_MAX {
                match self.transport.try_recv() {
                    Some(i) => incoming.push(i),
                    None => break,
                }
            }
            let mut replies = Vec::new();
            while let Some(r) = self.outbound.mailbox().pop() {
                replies.push(r);
            }
            let mut cross = Vec::new();
            while let Some(m) = self.cross.pop() {
                cross.push(m);
            }
            let now = self.clock.now();
            let due = self.core.poll_timeout().is_some_and(|t| t <= now);
            if incoming.is_empty() && replies.is_empty() && cross.is_empty() && !due {
                if self.writing.is_some() {
                    // Nothing new to overlap the write with: wait for it and send what it held.
                    self.finish_writing().await;
                    self.publish();
                    continue;
                }
                if congested {
                    glommio::timer::Timer::new(Duration::from_millis(1)).await;
                    continue;
                }
                let wait = self
                    .core
                    .poll_timeout()
                    .map(|t| Duration::from_micros(t.saturating_sub(now)))
                    .unwrap_or(IDLE_WAIT_MAX)
                    .min(IDLE_WAIT_MAX);
                let transport = self.transport.clone();
                let woke = futures_lite::future::or(
                    async { Some(transport.recv().await) },
                    futures_lite::future::or(
                        async {
                            futures_lite::future::or(self.outbound.mailbox().ready(), self.cross.ready()).await;
                            None
                        },
                        async {
                            glommio::timer::Timer::new(wait).await;
                            None
                        },
                    ),
                )
                .await;
                if let Some(i) = woke {
                    incoming.push(i);
                } else {
                    continue;
                }
            }
            last_turn = Instant::now();
            self.turn(incoming, replies, cross).await;
        }
        self.finish_writing().await;
        // What is left undecided, and why (a stall shows here first): the oldest few.
        let left = self.core.diagnose_processing(STOP_DIAGNOSE_MAX);
        if !left.is_empty() {
            info!(shard = self.shard, processing = self.core.status().processing, "stopping with vertices processing; the oldest:\n  {}", left.join("\n  "));
        }
        info!(shard = self.shard, "shard stopping: closing connections");
        self.transport.shutdown();
        if let Some(m) = &self.mesh {
            m.close();
        }
        self.telemetry.set_running(false);
    }

    /// One turn: decode and verify (while the previous turn's store write runs), then that
    /// write's sends and the published state, then step and start this turn's write.
    async fn turn(&mut self, incoming: Vec<Incoming>, replies: Vec<Reply>, cross: Vec<MeshMsg>) {
        let mut unverified = Vec::new();
        let mut events = Vec::new();
        // Items that read the store wait until the previous write has handed it back.
        let mut later = Vec::new();
        for inc in incoming {
            if let Some(d) = ingress::decode_incoming(&self.roster.node_ids, inc) {
                if d.reads_store() {
                    later.push(d);
                } else {
                    self.route(d, &mut unverified, &mut events);
                }
            }
        }
        for r in replies {
            self.outbound.settle(&r);
            if let Some(d) = ingress::decode_reply(&self.roster.node_ids, r) {
                if d.reads_store() {
                    later.push(d);
                } else {
                    self.route(d, &mut unverified, &mut events);
                }
            }
        }
        // Signatures are checked while the previous turn's write (and fsync) runs.
        let verdicts = self.verify.verify(std::mem::take(&mut unverified));
        // Persist before send: the previous turn's sends leave once its write is durable, and
        // before anything of this turn reaches the core.
        self.finish_writing().await;
        // Published with the store in hand (the decision feed's counter reads it).
        self.publish();
        self.effects.before_turn(&mut self.tags);
        for d in later {
            self.route(d, &mut unverified, &mut events);
        }
        let mut verdicts = verdicts;
        if !unverified.is_empty() {
            verdicts.extend(self.verify.verify(unverified));
        }
        for verdict in verdicts {
            match verdict {
                Verdict::Passed(item) => {
                    self.effects.observe(&item);
                    self.step.admit(item, &mut events)
                }
                Verdict::Failed { from, why } => self.guard.invalid(&mut self.core, Some(from), why, Misbehaviour::InvalidSignature),
            }
        }
        let mut decided = ClientEvents::new();
        for m in cross {
            self.gateway.on_mesh(&self.core, self.persist.store(), self.mesh.as_ref(), m, &mut events, &mut decided);
        }
        self.gateway.send_client_events(decided);
        let actions = self.step.feed(&mut self.core, events, &mut self.gateway);
        if !actions.is_empty() {
            // Durability first: every persist of the turn in one atomic batch, before any send.
            // The submitting client of each transaction of each vertex created this turn is
            // stored with the vertex (one record: retention prunes it with the vertex).
            let mut clients: Vec<(pqdag_wire::VertexId, Vec<[u8; 32]>)> = Vec::new();
            for a in &actions {
                if let pqdag_core::Action::Created { client_tag, id, .. } = a {
                    let key = self.gateway.submitter(*client_tag).unwrap_or([0; 32]);
                    match clients.last_mut() {
                        Some((last, keys)) if last == id => keys.push(key),
                        _ => clients.push((*id, vec![key])),
                    }
                }
            }
            clients.retain(|(_, keys)| keys.iter().any(|k| *k != [0; 32]));
            if let Some(writing) = self.persist.begin(&actions, clients).await {
                self.writing = Some((writing, actions));
            }
        }
    }

    /// Waits for the write in flight (if any) and releases the sends of its turn.
    async fn finish_writing(&mut self) {
        let Some((writing, actions)) = self.writing.take() else { return };
        if let Some(positions) = self.persist.finish(writing).await {
            let stages = Stages {
                gateway: &mut self.gateway,
                guard: &mut self.guard,
                responders: self.step.responders(),
                outbound: &mut self.outbound,
                mesh: self.mesh.as_ref(),
            };
            self.effects.apply(actions, &positions, stages);
        }
    }

    /// Sends one decoded item where it goes, at once (so the turn keeps its order).
    fn route(&mut self, d: Decoded, unverified: &mut Vec<Unverified>, events: &mut Vec<pqdag_core::Event>) {
        match d {
            Decoded::Unverified(u) => {
                // A query costs a signature to answer (and its own to verify), an alert up to
                // three verifies: budget first.
                let kind = match &u {
                    Unverified::Query { from, .. } => Some((*from, RequestKind::Query)),
                    Unverified::Alert { from, .. } => Some((*from, RequestKind::Alert)),
                    _ => None,
                };
                if let Some((from, kind)) = kind {
                    if !self.admit(from, kind, 1) {
                        return;
                    }
                }
                if let Unverified::Vertex { from, vertex } = &u {
                    self.holds.on_push(&self.core, &self.roster, from, vertex);
                }
                unverified.extend(self.verify.dedupe(&self.core, u));
            }
            Decoded::Event(e) => events.push(e),
            Decoded::Fetch { from, request_id, ids, reply } => {
                if self.admit(from, RequestKind::Fetch, ids.len().max(1) as u64) {
                    sync_server::serve_fetch(&self.core, self.persist.store(), request_id, &ids, reply);
                }
            }
            Decoded::SyncRequest { from, request_id, from_position, max, reply } => {
                if self.admit(from, RequestKind::Sync, 1) {
                    sync_server::serve_sync(self.persist.store(), request_id, from_position, max, reply);
                }
            }
            Decoded::Client(frame) => self.gateway.request(&self.core, self.persist.store(), self.mesh.as_ref(), &mut self.tags, frame, events),
            Decoded::SyncReply { peer, result } => {
                if let Some((from, why)) = self.sync.on_reply(&mut self.core, &self.roster, &mut self.tags, &mut self.outbound, peer, result) {
                    self.guard.invalid(&mut self.core, Some(from), why, Misbehaviour::Malformed);
                }
            }
            Decoded::Invalid { from, why } => self.guard.invalid(&mut self.core, Some(from), why, Misbehaviour::Malformed),
        }
    }

    /// Whether `from`'s request fits its budget (see [`limits`]); else dropped and counted.
    fn admit(&mut self, from: NodeId, kind: RequestKind, cost: u64) -> bool {
        let now = self.clock.now();
        self.limits.admit(&mut self.core, &self.roster, &mut self.guard, from, kind, cost, now)
    }

    /// Publishes the core's state every turn; once a second also the stats tick, in which the
    /// guard reports reachability to the core and re-bans repeat offenders.
    fn publish(&mut self) {
        let s = self.core.status();
        self.gateway.set_undecided(s.processing + s.pending);
        let ready = self.sync.caught_up(&self.core, &self.roster, &self.guard);
        self.gateway.set_ready(ready);
        self.telemetry.publish_feed(ready, self.persist.store());
        self.telemetry.publish_status(&s, &self.core);
        if self.telemetry.stats_due() {
            self.telemetry.publish_records(self.persist.store(), &self.core);
            self.telemetry.publish_held(&self.gateway.held());
            self.gateway.shrink_sparse();
            self.telemetry.publish_disk_free(self.gateway.refresh_disk());
            self.telemetry.publish_held(&[
                ("sync_refetch_ids", self.sync.refetch_len() as u64),
                ("replies_awaited", self.outbound.outstanding() as u64),
                ("queries_unanswered", self.step.responders().len() as u64),
                ("mesh_queued", self.mesh.as_ref().map_or(0, |m| m.queued()) as u64),
                ("mesh_inbox", self.cross.len() as u64),
            ]);
            let connected = self.guard.report_reachability(&mut self.core);
            self.telemetry.publish_connected(connected);
            self.guard.reban_repeat_offenders(&self.core);
            self.telemetry.publish_peers(connected, &self.core);
        }
    }
}

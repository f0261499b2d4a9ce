//! Byzantine test modes (hidden `--byzantine`), as a decorator on the effects' outbox plus, for
//! the real attacks, an attacker of its own: the honest effects produce their messages and
//! `Tamper` decides what actually leaves (a tampered own vertex split across two halves of the
//! peers, a tampered, re-signed or withheld response), adds its junk traffic (`flood`), reads the
//! verified traffic its node receives (conflict keys and ids of honest vertices: `set-spam`,
//! `backdate`, `query-flood`), and runs an attacker task on the shard's executor that makes,
//! signs and sends well-formed messages of its own (`replay-queries`, `set-spam`,
//! `vertex-flood`, `query-flood`), polling honest nodes itself and keeping their answers (they
//! never reach its core). Owns the mode, the flood pacing and what the attacker learnt; the
//! messages themselves are built by [`crate::runtime::byzantine`]. Every message it makes is
//! counted in `pqdag_byzantine_sent_total{kind}`. Never present on an honest node.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pqdag_crypto::Keypair;
use pqdag_transport::{PeerId, ShardTransport};
use pqdag_wire::{decode, encode, ConflictKey, Evidence, FrameRef, NodeId, Response, Vertex, VertexId, Vote};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tracing::{info, warn};

use super::super::byzantine::{self, ByzantineMode, Recipient};
use super::super::metrics::{KindLabel, Metrics};
use super::effects::{Outgoing, Wire};
use super::ingress::Unverified;
use super::roster::Roster;
use super::Tags;

/// Honest conflict keys remembered (each attacked once); beyond, the memory starts over.
const SEEN_KEYS_MAX: usize = 1 << 16;
/// Keys received and not attacked yet (set spam takes the newest).
const FRESH_KEYS_MAX: usize = 1024;
/// Ids of recently received vertices (query flood: known ids cost the victim a vote each).
const RECENT_IDS_MAX: usize = 256;
/// Framing: the poll timeout, and the wait between feeding the victim and replaying the query.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(1);
const REPLAY_FEED_WAIT: Duration = Duration::from_millis(300);
/// Framing: pause between attempts (the simulator's 100 ms tick).
const REPLAY_PERIOD: Duration = Duration::from_millis(100);
/// Query flood: how long a flooded query's answer is awaited.
const FLOOD_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the attacker needs besides the mode and the key: the shard's transport, metrics, stop
/// flag and genesis.
pub(super) struct AttackCtx {
    /// The shard's transport.
    pub(super) transport: Rc<ShardTransport>,
    /// The node's metrics (`byzantine_sent`).
    pub(super) metrics: Arc<Metrics>,
    /// The node's stop flag (the attacker task ends with it).
    pub(super) stop: Arc<AtomicBool>,
    /// The genesis id (parent of the attacker's vertices).
    pub(super) genesis: VertexId,
}

/// What the attacker learnt from the verified traffic its node received.
#[derive(Default)]
struct Seen {
    /// Honest conflict keys seen (each attacked once).
    keys: HashSet<ConflictKey>,
    /// Of those, not attacked yet, oldest first.
    fresh: VecDeque<ConflictKey>,
    /// Ids of vertices recently received.
    recent: VecDeque<VertexId>,
}

/// The Byzantine decorator of one shard's outbox, and the attacker's state.
pub(super) struct Tamper {
    mode: ByzantineMode,
    keypair: Arc<Keypair>,
    roster: Rc<Roster>,
    last_flood: Instant,
    seen: Rc<RefCell<Seen>>,
    metrics: Arc<Metrics>,
    genesis: VertexId,
    rng: SmallRng,
}

fn seed(me: NodeId) -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ me.prefix_u64()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn count(metrics: &Metrics, kind: &str, n: usize) {
    metrics.byzantine_sent.get_or_create(&KindLabel { kind: kind.to_owned() }).inc_by(n as u64);
}

impl Tamper {
    /// Misbehaves as `mode`, signing with `keypair`; the first flood is due 10 ms after `start`.
    /// A mode that attacks on its own starts its attacker task now (on the shard's executor).
    pub(super) fn new(mode: ByzantineMode, keypair: Arc<Keypair>, roster: Rc<Roster>, start: Instant, ctx: AttackCtx) -> Self {
        let seen = Rc::new(RefCell::new(Seen::default()));
        let me = roster.me_id();
        if matches!(mode, ByzantineMode::ReplayQueries | ByzantineMode::SetSpam | ByzantineMode::VertexFlood | ByzantineMode::FatFlood | ByzantineMode::QueryFlood) {
            let attacker = Attacker {
                mode,
                keypair: keypair.clone(),
                roster: roster.clone(),
                transport: ctx.transport,
                metrics: ctx.metrics.clone(),
                stop: ctx.stop,
                genesis: ctx.genesis,
                seen: seen.clone(),
                rng: SmallRng::seed_from_u64(seed(me) ^ 0x5eed),
            };
            glommio::spawn_local(attacker.run()).detach();
        }
        Self { mode, keypair, roster, last_flood: start, seen, metrics: ctx.metrics, genesis: ctx.genesis, rng: SmallRng::seed_from_u64(seed(me)) }
    }

    /// `Flood`: junk vertices to every peer, at most every 10 ms.
    pub(super) fn before_turn(&mut self, wire: &Wire, tags: &mut Tags) {
        if self.mode == ByzantineMode::Flood && self.last_flood.elapsed() >= Duration::from_millis(10) {
            self.last_flood = Instant::now();
            let junk = byzantine::flood(self.roster.me_id(), tags.bump());
            let peers: Vec<PeerId> = self.roster.others();
            for j in &junk {
                wire.broadcast(&peers, j);
            }
            count(&self.metrics, "junk_vertex", junk.len() * peers.len());
        }
    }

    /// A verified item its node received: the keys and ids of other creators' vertices are
    /// noted; `Backdate` double-spends every new key at once.
    pub(super) fn observe(&mut self, wire: &Wire, item: &Unverified) {
        let vertices: &[Vertex] = match item {
            Unverified::Vertex { vertex, .. } => std::slice::from_ref(vertex),
            Unverified::Reply { vertices, .. } => vertices,
            _ => return,
        };
        let me = self.roster.me_id();
        let mut spend = Vec::new();
        {
            let mut seen = self.seen.borrow_mut();
            for v in vertices.iter().filter(|v| v.creator != me) {
                if seen.recent.len() >= RECENT_IDS_MAX {
                    seen.recent.pop_front();
                }
                seen.recent.push_back(v.id);
                for k in &v.conflict_keys {
                    if seen.keys.len() >= SEEN_KEYS_MAX {
                        seen.keys.clear();
                    }
                    if seen.keys.insert(*k) {
                        if seen.fresh.len() >= FRESH_KEYS_MAX {
                            seen.fresh.pop_front();
                        }
                        seen.fresh.push_back(*k);
                        spend.push(*k);
                    }
                }
            }
            if self.mode == ByzantineMode::Backdate {
                seen.fresh.clear();
            }
        }
        if self.mode != ByzantineMode::Backdate {
            return;
        }
        let peers = self.roster.others();
        for key in spend {
            let payload: Vec<u8> = (0..16).map(|_| self.rng.random()).collect();
            // Stamped at the epoch: the earliest possible timestamp (the simulator's backdate).
            let Some(v) = byzantine::signed_vertex(&self.keypair, me, vec![self.genesis], payload, vec![key], 0) else { continue };
            let Ok(bytes) = encode(&v) else { continue };
            wire.broadcast(&peers, &bytes);
            count(&self.metrics, "backdated_vertex", peers.len());
        }
    }

    /// Sends `out` as the mode would: tampered, split, withheld, or (when the mode leaves it
    /// alone) unchanged through `wire`.
    pub(super) fn send(&mut self, wire: &Wire, out: Outgoing) {
        match out {
            Outgoing::Vertex { to, vertex } => {
                if vertex.creator == self.roster.me_id() {
                    if let Some((first, second)) = byzantine::tamper_own_vertex(self.mode, &self.keypair, &vertex) {
                        // Split every peer in two halves so each half sees a different story.
                        let peers: Vec<PeerId> = self.roster.others();
                        let (a, b) = peers.split_at(peers.len() / 2);
                        wire.broadcast(a, &first);
                        wire.broadcast(b, &second);
                        return;
                    }
                }
                wire.send(Outgoing::Vertex { to, vertex });
            }
            Outgoing::Response { to, reply, response } => {
                let others = self.roster.others();
                let rank = self.roster.index_of(&to).and_then(|i| others.iter().position(|p| p.0 == i)).unwrap_or(0);
                let recipient = Recipient { favoured: rank < others.len() / 2, coin: self.rng.random_bool(0.5) };
                let kind = match self.mode {
                    ByzantineMode::VoteUnknown => Some("unknown_response"),
                    ByzantineMode::FlipVotes => Some("flipped_response"),
                    ByzantineMode::Selective if recipient.favoured => Some("honest_response"),
                    ByzantineMode::Selective if recipient.coin => Some("flipped_response"),
                    ByzantineMode::Selective | ByzantineMode::Withhold => Some("withheld_response"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    count(&self.metrics, kind, 1);
                }
                // Withholding drops the responder: the asker's stream is reset.
                if let Some(bytes) = byzantine::tamper_response(self.mode, &self.keypair, recipient, response) {
                    let _ = reply.send(bytes);
                }
            }
        }
    }
}

/// The attacker task of the modes that attack on their own: it shares the shard's executor
/// (it yields between bursts) and transport, signs with the node's key, and reads what the
/// decorator noted ([`Seen`]).
struct Attacker {
    mode: ByzantineMode,
    keypair: Arc<Keypair>,
    roster: Rc<Roster>,
    transport: Rc<ShardTransport>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    genesis: VertexId,
    seen: Rc<RefCell<Seen>>,
    rng: SmallRng,
}

impl Attacker {
    async fn run(mut self) {
        info!(mode = ?self.mode, "Byzantine attacker task started");
        match self.mode {
            ByzantineMode::ReplayQueries => self.replay_queries().await,
            ByzantineMode::SetSpam => self.set_spam().await,
            ByzantineMode::VertexFlood => self.vertex_flood(false).await,
            ByzantineMode::FatFlood => self.vertex_flood(true).await,
            ByzantineMode::QueryFlood => self.query_flood().await,
            _ => {}
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn count(&self, kind: &str, n: usize) {
        count(&self.metrics, kind, n);
    }

    /// Every other member with a verified connection now.
    fn connected(&self) -> Vec<PeerId> {
        self.roster.others().into_iter().filter(|p| self.transport.is_connected(*p)).collect()
    }

    fn random_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.rng.random()).collect()
    }

    /// Polls `peer` with the frame `query`; its decoded answer.
    async fn ask(&self, peer: PeerId, query: Vec<u8>) -> Option<Response> {
        let reply = self.transport.send_query(peer, query, REPLAY_TIMEOUT).await.ok()?;
        match decode(&reply) {
            Ok(FrameRef::Response(r)) => Some(r.to_owned()),
            _ => None,
        }
    }

    /// Framing by replay (the simulator's `ReplayQueries`), one victim after another: a fresh
    /// own vertex the victim lacks, polled (signed `Unknown`), fed to it, polled again with the
    /// same query id (a signed different answer), and both answers gossiped to every other
    /// member as `ConflictingResponses` evidence against the victim.
    async fn replay_queries(&mut self) {
        let me = self.roster.me_id();
        let (mut next, mut seq) = (0usize, 0u64);
        while !self.stopped() {
            glommio::timer::Timer::new(REPLAY_PERIOD).await;
            let peers = self.connected();
            if peers.is_empty() {
                continue;
            }
            let victim = peers[next % peers.len()];
            next += 1;
            seq += 1;
            let payload = self.random_bytes(16);
            let Some(vertex) = byzantine::signed_vertex(&self.keypair, me, vec![self.genesis], payload, Vec::new(), now_ms()) else { continue };
            let Some(query) = byzantine::signed_query(&self.keypair, me, (1 << 62) | (seq << 8), vec![vertex.id]) else { continue };
            let (Ok(qbytes), Ok(vbytes)) = (encode(&query), encode(&vertex)) else { continue };
            self.count("replay_query", 1);
            let Some(first) = self.ask(victim, qbytes.clone()).await else { continue };
            if !first.votes.iter().all(|&b| b == Vote::Unknown as u8) {
                continue;
            }
            let _ = self.transport.send_vertex(victim, vbytes);
            self.count("replay_vertex", 1);
            glommio::timer::Timer::new(REPLAY_FEED_WAIT).await;
            self.count("replay_query", 1);
            let Some(second) = self.ask(victim, qbytes).await else { continue };
            if second.votes == first.votes {
                continue;
            }
            let accused = self.roster.node_ids[victim.0];
            let evidence = Evidence::ConflictingResponses { a: first, b: second };
            let Some(alert) = byzantine::signed_alert(&self.keypair, me, accused, evidence) else { continue };
            let Ok(bytes) = encode(&alert) else { continue };
            let to: Vec<PeerId> = self.roster.others().into_iter().filter(|p| *p != victim).collect();
            self.transport.broadcast_vertex(&to, &bytes);
            self.count("framing_alert", to.len());
            let name = self.roster.name(victim.0).unwrap_or_default();
            warn!(victim = %name, "Byzantine replay-queries: two signed answers to one query id gossiped as conflicting responses");
        }
    }

    /// Conflict-set spam (the simulator's `SetSpam`): at most one key per [`byzantine::SPAM_PERIOD`],
    /// the newest honest key received (most likely still undecided), [`byzantine::SPAM_MEMBERS`]
    /// own members on it, shuffled anew for every peer.
    async fn set_spam(&mut self) {
        let me = self.roster.me_id();
        let mut last: Option<Instant> = None;
        while !self.stopped() {
            glommio::timer::Timer::new(Duration::from_millis(5)).await;
            if last.is_some_and(|t| t.elapsed() < byzantine::SPAM_PERIOD) {
                continue;
            }
            let key = {
                let mut seen = self.seen.borrow_mut();
                let k = seen.fresh.pop_back();
                seen.fresh.clear();
                k
            };
            let Some(key) = key else { continue };
            last = Some(Instant::now());
            let now = now_ms();
            let mut members: Vec<Vec<u8>> = Vec::with_capacity(byzantine::SPAM_MEMBERS);
            for i in 0..byzantine::SPAM_MEMBERS as u64 {
                let payload = self.random_bytes(16);
                // Timestamps spread around now, as the simulator's.
                let ts = (now + i % 7).saturating_sub(3);
                if let Some(bytes) = byzantine::signed_vertex(&self.keypair, me, vec![self.genesis], payload, vec![key], ts).and_then(|v| encode(&v).ok()) {
                    members.push(bytes);
                }
            }
            let peers = self.connected();
            for p in &peers {
                members.shuffle(&mut self.rng);
                for m in &members {
                    let _ = self.transport.send_vertex(*p, m.clone());
                }
            }
            self.count("spam_vertex", members.len() * peers.len());
            self.count("spam_key", 1);
        }
    }

    /// Vertex flood (the simulator's `VertexFlood`, at the signing rate): valid own vertices,
    /// alternately on genesis and on its last one, to every connected peer; `fat`: of the
    /// largest size (the simulator's `FatFlood`).
    async fn vertex_flood(&mut self, fat: bool) {
        let me = self.roster.me_id();
        let mut tip = self.genesis;
        let mut i = 0u64;
        while !self.stopped() {
            let peers = self.connected();
            if peers.is_empty() {
                glommio::timer::Timer::new(Duration::from_millis(50)).await;
                continue;
            }
            let start = Instant::now();
            let mut frames = Vec::new();
            while start.elapsed() < byzantine::FLOOD_SIGN_SLICE {
                let parent = if i % 2 == 0 { self.genesis } else { tip };
                i += 1;
                let payload = self.random_bytes(64);
                let made = if fat {
                    byzantine::signed_fat_vertex(&self.keypair, me, vec![parent], &payload, now_ms())
                } else {
                    byzantine::signed_vertex(&self.keypair, me, vec![parent], payload, Vec::new(), now_ms())
                };
                let Some(v) = made else { break };
                tip = v.id;
                if let Ok(bytes) = encode(&v) {
                    frames.push(bytes);
                }
            }
            for f in &frames {
                self.transport.broadcast_vertex(&peers, f);
            }
            self.count(if fat { "fat_vertex" } else { "flood_vertex" }, frames.len() * peers.len());
            glommio::timer::Timer::new(byzantine::FLOOD_YIELD).await;
        }
    }

    /// Query flood (the simulator's `QueryFlood`, at the signing rate): signed queries of
    /// [`byzantine::FLOOD_QUERY_IDS`] ids (recently received ones and made-up ones) to every
    /// connected peer, each answer awaited in its own task (at most
    /// [`byzantine::FLOOD_QUERIES_INFLIGHT_MAX`] at once).
    async fn query_flood(&mut self) {
        let me = self.roster.me_id();
        let inflight = Rc::new(Cell::new(0usize));
        while !self.stopped() {
            let peers = self.connected();
            if peers.is_empty() {
                glommio::timer::Timer::new(Duration::from_millis(50)).await;
                continue;
            }
            let start = Instant::now();
            'slice: while start.elapsed() < byzantine::FLOOD_SIGN_SLICE {
                for p in &peers {
                    if inflight.get() >= byzantine::FLOOD_QUERIES_INFLIGHT_MAX {
                        break 'slice;
                    }
                    let mut ids = Vec::with_capacity(byzantine::FLOOD_QUERY_IDS);
                    {
                        let seen = self.seen.borrow();
                        for _ in 0..byzantine::FLOOD_QUERY_IDS {
                            if !seen.recent.is_empty() && self.rng.random_bool(0.5) {
                                ids.push(seen.recent[self.rng.random_range(0..seen.recent.len())]);
                            } else {
                                ids.push(VertexId(self.rng.random()));
                            }
                        }
                    }
                    ids.sort_unstable_by_key(|i| i.0);
                    ids.dedup();
                    let qid = self.rng.random::<u64>() | (1 << 63);
                    let Some(bytes) = byzantine::signed_query(&self.keypair, me, qid, ids).and_then(|q| encode(&q).ok()) else { continue };
                    inflight.set(inflight.get() + 1);
                    let (t, m, n, peer) = (self.transport.clone(), self.metrics.clone(), inflight.clone(), *p);
                    glommio::spawn_local(async move {
                        let answered = t.send_query(peer, bytes, FLOOD_QUERY_TIMEOUT).await.is_ok();
                        n.set(n.get() - 1);
                        if answered {
                            count(&m, "flood_query_answered", 1);
                        }
                    })
                    .detach();
                    self.count("flood_query", 1);
                }
            }
            glommio::timer::Timer::new(byzantine::FLOOD_YIELD).await;
        }
    }
}

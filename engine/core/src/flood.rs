//! Per-creator admission bound (issue 14, hole 5: a member creating VALID signed vertices as
//! fast as it can sign). Owns [`Flood`]: how many processing vertices each creator holds in
//! this node's DAG, the ids this node needs whatever their creator's load, and the counters.
//! Called by `dag` (admission, counts), `finality` (counts), `votes` (queried ids) and `submit`
//! (parent choice); calls `peers` (the `Flooding` strike).
//!
//! Rule: a vertex of creator C (not this node) is admitted only while C holds fewer than its
//! bound of processing vertices here ([`Core::creator_bound`]: [`CREATOR_PROCESSING_MAX`],
//! shared out of [`HEAVY_CREATORS_PROCESSING_MAX`] when more than two creators are over their
//! fair share, or twice the median count when higher). Over the bound it is dropped and
//! counted (`creator_dropped`), and C gets a [`Misbehaviour::Flooding`] strike at most once
//! per [`STRIKE_INTERVAL_US`]. Dropping is losing a message: nothing is decided on it, the
//! vertex can arrive again later (gossip, fetch, frontier sync) and is then judged afresh.
//!
//! Bypass (liveness): a vertex this node NEEDS is admitted over the bound:
//! - a missing parent of an admitted vertex of another creator (honest vertices that picked a
//!   flood vertex as parent would otherwise wait forever), and transitively the missing
//!   parents of a vertex admitted that way;
//! - a vertex a peer other than its creator queried us about (that peer admitted it and polls
//!   it; without our vote it could not finalize there).
//!
//! The flooder's own queries and its own chains never bypass, so what it occupies here is at
//! most the bound plus what the honest nodes admitted (each at most the bound) and built on.
//! Deterministic: id-hashed maps, time passed in.

use std::collections::{BTreeMap, VecDeque};

use pqdag_wire::{NodeId, Vertex, VertexId};

use crate::core::Core;
use crate::id_hash::HashMap;
use crate::peers::Misbehaviour;
use crate::pending::PENDING_MAX;
use crate::types::{shard_of_vertex, Signer, VertexStatus};

/// Processing vertices one creator may hold at this node before its new ones are dropped.
/// An honest node creates one vertex per submission: on the 3-node testnet at 1200/s that is
/// ~400/s per creator, final in ~0.3 s (median): ~120 undecided per creator, 2x under it. At
/// the 5000 vertices/s target over 3 nodes (~1700/s per creator) an honest creator can go over
/// it; its extra vertices then cost a fetch (every peer that admitted one queries the others,
/// which bypass the bound for it), never their finality. 1024 was too loose on real processes:
/// with the query bypass a flooder held ~2 500 processing vertices per honest node and honest
/// payloads still missed the 25 s deadline; at 256 it holds <= ~270 and they all finalize.
pub const CREATOR_PROCESSING_MAX: u32 = 256;
/// Bytes (`Vertex::heap_bytes`) per vertex of a creator's count bound: its processing vertices
/// here may weigh at most its bound times this (8 MiB at the bound of 256). By count alone a
/// member signing vertices of the largest size (512 KiB of transactions, the `fat-flood`
/// simulator strategy) made every honest node hold 256 x 512 KiB = 128 MiB of them. At 128 KiB
/// (32 MiB) the flooder's vertices were still decided as fast as consensus ran, ~100 a second
/// of 512 KiB at each honest node, and their hashing, checks and store writes took the honest
/// nodes' CPU (`sim-soak --strategies fat-flood`: honest p95 up to 10.3 s; 1.6 s at 32 KiB;
/// `docs/simulator.md`, "Fat vertices"). Honest vertices stay far under it: 35 payloads of
/// 512 B at 10 000/s on 3 nodes are ~23 KB, ~130 KB at 4 x 90 000/s offered, where no honest
/// vertex was dropped; and the count bound grows with honest load (twice the median), so does
/// this. Parent choice uses the same bytes per vertex of its tighter share
/// (`Core::parent_creator_ok`): with 128 KiB there, honest vertices built on the flooder's fat
/// ones while peers dropped or held them, and honest p95 was 7.4-9.1 s on 4 real nodes
/// (`bench --byzantine 3:fat-flood`) against 0.53-0.74 s.
pub const CREATOR_PROCESSING_VERTEX_BYTES: u64 = 32 * 1024;
/// Processing vertices all the creators over their fair share (more than twice the median
/// count) may hold here together: each gets this divided among them, at most
/// [`CREATOR_PROCESSING_MAX`] and at least [`PARENT_SHARE_MIN`]. One or two heavy creators keep
/// the full [`CREATOR_PROCESSING_MAX`]; six flooders (20 % of 30 nodes) get 85 each instead of
/// 256, so what a coalition can make an honest node hold and poll no longer grows with its
/// size: at 256 each, six flooders kept ~1 500 of their vertices in every honest node's polls
/// and finalized ~1 600 of them per second, and the signatures and bytes of that took the honest
/// nodes' CPU (`sim --nodes 30 --byzantine 0.2 --strategy vertex-flood`, seeds 1-5: honest
/// p95 1.08-1.19 s; with 85 each, 0.59-0.63 s on four of them).
pub(crate) const HEAVY_CREATORS_PROCESSING_MAX: u32 = 512;
/// Floor of [`Core::parent_share`]: a creator's processing vertices up to this many are always
/// fine as parents.
pub(crate) const PARENT_SHARE_MIN: u32 = 16;
/// Ids remembered as needed (oldest forgotten first).
pub(crate) const WANTED_MAX: usize = 65_536;
/// A need not met within this time is forgotten (the id is asked for again when needed again):
/// ids that never arrive would otherwise fill [`WANTED_MAX`] slowly, ~8 MB of a node's RSS.
pub(crate) const WANTED_TTL_US: u64 = 60_000_000;
/// At most one `Flooding` strike per creator in this time.
pub(crate) const STRIKE_INTERVAL_US: u64 = 1_000_000;

/// Per-creator occupancy and the needed ids.
#[derive(Default)]
pub(crate) struct Flood {
    /// Creator -> its processing vertices in this DAG.
    pub(crate) processing: HashMap<NodeId, u32>,
    /// Creator -> their bytes (`Vertex::heap_bytes`); the same keys as `processing`.
    pub(crate) bytes: HashMap<NodeId, u64>,
    /// Nonzero processing count -> how many members (peers and this node) hold exactly it: the
    /// median in [`Core::creator_bound`] walks this (a few distinct counts) instead of sorting
    /// every member's count on each received vertex (12 % of a 1000-node simulation).
    pub(crate) histogram: BTreeMap<u32, u32>,
    /// Members with a nonzero count (the sum of `histogram`'s values).
    pub(crate) busy_members: u32,
    /// The same for bytes, in units of [`CREATOR_PROCESSING_VERTEX_BYTES`] (rounded down):
    /// nonzero units -> members holding exactly that many. A member of fat vertices holds few
    /// of them, so the count histogram never names it heavy; this does.
    pub(crate) units: BTreeMap<u32, u32>,
    /// Members with nonzero units (the sum of `units`' values).
    pub(crate) busy_units: u32,
    /// Needed id -> who needs it: `Some(c)` bypasses unless the vertex's creator is `c` (a
    /// creator's own chain never unlocks itself); `None` always bypasses.
    wanted: HashMap<VertexId, Option<NodeId>>,
    /// (time first needed, id), oldest first.
    wanted_order: VecDeque<(u64, VertexId)>,
    /// Creator -> time of its last strike.
    last_strike: HashMap<NodeId, u64>,
    /// Vertices dropped over the bound.
    pub(crate) dropped: u64,
    /// Vertices admitted over the bound because they were needed.
    pub(crate) bypassed: u64,
}

impl Flood {
    /// Processing vertices of `creator` here.
    pub(crate) fn count(&self, creator: &NodeId) -> u32 {
        self.processing.get(creator).copied().unwrap_or(0)
    }

    /// Bytes of `creator`'s processing vertices here.
    pub(crate) fn bytes(&self, creator: &NodeId) -> u64 {
        self.bytes.get(creator).copied().unwrap_or(0)
    }

    /// A vertex of `creator` weighing `bytes` became processing; `member`: `creator` is a peer
    /// or this node (counted in the median).
    pub(crate) fn entered(&mut self, creator: NodeId, member: bool, bytes: u64) {
        let b = self.bytes.entry(creator).or_default();
        let (before, after) = (*b, *b + bytes);
        *b = after;
        if member {
            self.units_move(units(before), units(after));
        }
        let c = self.processing.entry(creator).or_default();
        let old = *c;
        *c += 1;
        if member {
            self.histogram_move(old, old + 1);
        }
    }

    /// A vertex of `creator` left processing (final or rejected); `member` and `bytes` as in
    /// `entered`.
    pub(crate) fn left(&mut self, creator: &NodeId, member: bool, bytes: u64) {
        let Some(c) = self.processing.get_mut(creator) else { return };
        let old = *c;
        *c = c.saturating_sub(1);
        let new = *c;
        if let Some(b) = self.bytes.get_mut(creator) {
            debug_assert!(*b >= bytes, "a creator's bytes cover each of its vertices");
            let (before, after) = (*b, b.saturating_sub(bytes));
            *b = after;
            if member {
                self.units_move(units(before), units(after));
            }
        }
        if new == 0 {
            self.processing.remove(creator);
            let left = self.bytes.remove(creator);
            debug_assert!(left.is_none_or(|b| b == 0), "no processing vertex weighs nothing");
        }
        if member && old != new {
            self.histogram_move(old, new);
        }
    }

    /// One member's bytes went from `old` to `new` units.
    fn units_move(&mut self, old: u32, new: u32) {
        if old == new {
            return;
        }
        move_in(&mut self.units, &mut self.busy_units, old, new);
    }

    /// The `mid`-th smallest byte units (0-based) among `members` members (see `nth_count`).
    pub(crate) fn nth_units(&self, members: u32, mid: u32) -> u32 {
        nth(&self.units, self.busy_units, members, mid)
    }

    /// Members holding more than `u` byte units.
    pub(crate) fn members_above_units(&self, u: u32) -> u32 {
        self.units.range(u.saturating_add(1)..).map(|(_, &n)| n).sum()
    }

    /// One member's count went from `old` to `new`.
    fn histogram_move(&mut self, old: u32, new: u32) {
        move_in(&mut self.histogram, &mut self.busy_members, old, new);
    }

    /// The `mid`-th smallest count (0-based) among `members` members, those without a
    /// processing vertex counting 0: what sorting every member's count would give.
    pub(crate) fn nth_count(&self, members: u32, mid: u32) -> u32 {
        nth(&self.histogram, self.busy_members, members, mid)
    }

    /// Members (peers and this node) holding more than `count` processing vertices.
    pub(crate) fn members_above(&self, count: u32) -> u32 {
        self.histogram.range(count.saturating_add(1)..).map(|(_, &n)| n).sum()
    }

    /// Remembers that `id` is needed by `by` (see [`Flood::wanted`]). True when that changed
    /// what is known of it: a new need, or one that now bypasses whoever its creator is.
    pub(crate) fn want(&mut self, id: VertexId, by: Option<NodeId>, now: u64) -> bool {
        let changed = match self.wanted.get_mut(&id) {
            Some(old) => {
                let widened = old.is_some() && *old != by;
                if widened {
                    *old = None; // two different needers: at least one is not its creator
                }
                widened
            }
            None => {
                while self.wanted_order.len() >= WANTED_MAX {
                    if let Some((_, o)) = self.wanted_order.pop_front() {
                        self.wanted.remove(&o);
                    }
                }
                self.wanted.insert(id, by);
                self.wanted_order.push_back((now, id));
                true
            }
        };
        if self.wanted_order.len() > 2 * self.wanted.len() + 64 {
            let w = &self.wanted;
            self.wanted_order.retain(|(_, i)| w.contains_key(i));
        }
        changed
    }

    /// Forgets needs older than [`WANTED_TTL_US`].
    pub(crate) fn expire_wanted(&mut self, now: u64) {
        while let Some(&(at, id)) = self.wanted_order.front() {
            if at.saturating_add(WANTED_TTL_US) > now {
                break;
            }
            self.wanted_order.pop_front();
            self.wanted.remove(&id);
        }
    }

    /// Ids held as needed.
    pub(crate) fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    /// Whether `v` is needed whatever its creator's load (keeps the mark).
    fn is_needed(&self, v: &Vertex) -> bool {
        self.wanted.get(&v.id).is_some_and(|by| by.is_none_or(|c| c != v.creator))
    }

    /// Whether `v` is needed whatever its creator's load (consumes the mark).
    fn needed(&mut self, v: &Vertex) -> bool {
        match self.wanted.remove(&v.id) {
            Some(None) => true,
            Some(Some(by)) => by != v.creator,
            None => false,
        }
    }
}

/// Byte units of `bytes`: whole [`CREATOR_PROCESSING_VERTEX_BYTES`] (saturating).
fn units(bytes: u64) -> u32 {
    u32::try_from(bytes / CREATOR_PROCESSING_VERTEX_BYTES).unwrap_or(u32::MAX)
}

/// Moves one member from value `old` to `new` in `histogram` (value -> members holding it,
/// nonzero values only; `busy` counts them).
fn move_in(histogram: &mut BTreeMap<u32, u32>, busy: &mut u32, old: u32, new: u32) {
    if old > 0 {
        if let Some(n) = histogram.get_mut(&old) {
            *n -= 1;
            if *n == 0 {
                histogram.remove(&old);
            }
        }
    } else {
        *busy += 1;
    }
    if new > 0 {
        *histogram.entry(new).or_default() += 1;
    } else {
        *busy = busy.saturating_sub(1);
    }
}

/// The `mid`-th smallest value (0-based) of `histogram` among `members` members, those not in
/// it counting 0: what sorting every member's value would give.
fn nth(histogram: &BTreeMap<u32, u32>, busy: u32, members: u32, mid: u32) -> u32 {
    let zeros = members.saturating_sub(busy);
    if mid < zeros {
        return 0;
    }
    let mut left = mid - zeros;
    for (&value, &n) in histogram {
        if left < n {
            return value;
        }
        left -= n;
    }
    histogram.keys().next_back().copied().unwrap_or(0)
}

impl<S: Signer> Core<S> {
    /// Admission of a received vertex `v` (its parents may be missing). `None`: dropped. On
    /// admission, marks its missing parents as needed by it, and returns the ids that became
    /// needed below parents already buffered (see [`Core::pass_need_down`]): the caller asks
    /// for them again at once.
    pub(crate) fn admit_creator(&mut self, now: u64, v: &Vertex) -> Option<Vec<VertexId>> {
        let needed = self.flood.needed(v);
        if self.over_bound(&v.creator, v.heap_bytes() as u64) {
            if !needed {
                self.flood.dropped += 1;
                self.flood_strike(now, v.creator);
                return None;
            }
            self.flood.bypassed += 1;
        }
        let by = if needed { None } else { Some(v.creator) };
        // Only this shard's parents: another shard's arrives there (this shard learns its
        // status), so a mark here would never be met and would sit for `WANTED_TTL_US` (~120
        // a second at 2 000 payloads/s on two shards, `needed_ids` growing to thousands).
        let mut buffered = Vec::new();
        for p in self.missing_parents(v) {
            if shard_of_vertex(&p, self.shard_count) == self.shard && self.flood.want(p, by, now) && self.pending.entries.contains_key(&p) {
                buffered.push((p, by));
            }
        }
        Some(if buffered.is_empty() { Vec::new() } else { self.pass_need_down(now, buffered) })
    }

    /// A missing parent already buffered (pending) was admitted under its own creator's need
    /// only, and so were the parents it waits for. Now that a vertex of another creator needs
    /// it, that need passes down the buffered chain to the ids missing at its root: they are
    /// marked needed whatever their creator's load, and returned when that creator is at its
    /// bound here now (a copy asked for before was dropped on arrival, so the caller asks
    /// again at once; below the bound the usual retry brings it, and it is admitted then
    /// even if the creator has reached its bound meanwhile). Without this a flooder's vertex
    /// that an honest vertex built on stayed pending: its own missing parent was needed by its
    /// creator alone, so every fetched copy was dropped over the bound again (`vertex-flood`,
    /// 30 nodes, seed 3: honest vertices pending 2.2 s at 3 of 24 honest nodes, fetched every
    /// 0.5 s and dropped; `sim-faults` seed 3950, N = 5: the chain was buffered while the
    /// flooder was still under its bound, p95 1.4 s -> 4.5 s when only chains at the bound
    /// were walked). Marks change nothing while nobody is over its bound, so an honest run is
    /// unchanged. Each entry is walked once per widened need (`Flood::want`), at most
    /// [`PENDING_MAX`] entries per call.
    fn pass_need_down(&mut self, now: u64, mut stack: Vec<(VertexId, Option<NodeId>)>) -> Vec<VertexId> {
        let mut roots = Vec::new();
        let bound = self.creator_bound();
        let bytes_bound = self.creator_bytes_bound(bound);
        let mut steps = 0;
        while let Some((p, by)) = stack.pop() {
            steps += 1;
            if steps > PENDING_MAX {
                break;
            }
            let Some(e) = self.pending.entries.get(&p) else { continue };
            if by.is_some_and(|c| c == e.v.creator) {
                continue; // its own creator's need: what its admission marked already
            }
            let over = e.v.creator != self.me && (self.flood.count(&e.v.creator) >= bound || self.flood.bytes(&e.v.creator) >= bytes_bound);
            let v = e.v.clone();
            for q in self.missing_parents(&v) {
                if shard_of_vertex(&q, self.shard_count) != self.shard || !self.flood.want(q, None, now) {
                    continue;
                }
                if self.pending.entries.contains_key(&q) {
                    stack.push((q, None));
                } else if over {
                    roots.push(q);
                }
            }
        }
        roots
    }

    /// A `Flooding` strike against `creator`, at most one per [`STRIKE_INTERVAL_US`].
    fn flood_strike(&mut self, now: u64, creator: NodeId) {
        let Some(&i) = self.peers.index.get(&creator) else { return };
        let last = self.flood.last_strike.get(&creator).copied();
        if last.is_some_and(|t| now < t + STRIKE_INTERVAL_US) {
            return;
        }
        self.flood.last_strike.insert(creator, now);
        self.incident(now, i, Misbehaviour::Flooding, None);
    }

    /// Whether the core would admit `v` now as far as its creator's bound goes. The shell asks
    /// before verifying the signature and skips the verify of a vertex it would drop (a flood
    /// then costs a lookup per vertex, not an ML-DSA verify). Its creator field is unchecked
    /// then, so such a drop is never held against the creator: it only spares the verify of
    /// what the core would refuse anyway (the creator really holds the bound, verified).
    pub fn admits_creator(&self, v: &Vertex) -> bool {
        !self.over_bound(&v.creator, v.heap_bytes() as u64) || self.flood.is_needed(v)
    }

    /// Whether a new vertex of `creator` weighing `extra` bytes would take it over its bound
    /// here: [`Self::creator_bound`] processing vertices, or that many times
    /// [`CREATOR_PROCESSING_VERTEX_BYTES`]. This node's own vertices never are.
    fn over_bound(&self, creator: &NodeId, extra: u64) -> bool {
        if *creator == self.me {
            return false;
        }
        let bound = self.creator_bound();
        self.flood.count(creator) >= bound || self.flood.bytes(creator).saturating_add(extra) > self.creator_bytes_bound(bound)
    }

    /// Whether `creator` (not this node) holds its bound of processing vertices here, so that
    /// its new vertices are dropped unless needed: the shell then holds the pushes of a peer
    /// sending its own vertices over the bound (the transport stops them unread), and releases
    /// them when this turns false.
    pub fn creator_over_bound(&self, creator: &NodeId) -> bool {
        // By bytes: once a vertex of the largest size would no longer fit (its next one's size
        // is unknown until it is read).
        self.over_bound(creator, pqdag_wire::limits::VERTEX_TX_BYTES_MAX as u64)
    }

    /// The shell fetches `ids` because `by`'s finality log names them (history sync): they are
    /// needed unless `by` is their creator (a flooder's log of its own vertices unlocks nothing;
    /// an honest peer's log names what it finalized). Without it a node catching up would admit
    /// only the first `CREATOR_PROCESSING_MAX` of each creator's history and pull the rest in
    /// one fetch round trip per level, through the children that name them.
    pub fn wanted_by(&mut self, ids: &[VertexId], by: NodeId) {
        let now = self.now;
        for id in ids {
            self.flood.want(*id, Some(by), now);
        }
    }

    /// Whether an own vertex may take a processing vertex of `creator` as parent, under the
    /// current `bound` ([`Self::parent_share`], computed once by the caller).
    pub(crate) fn parent_creator_ok(&self, creator: &NodeId, bound: u32) -> bool {
        // By bytes too: vertices of a creator holding more than its share in bytes may be
        // dropped over its byte bound at other nodes, and an own vertex built on one would
        // wait for them there.
        *creator == self.me || (self.flood.count(creator) < bound && self.flood.bytes(creator) < u64::from(bound) * CREATOR_PROCESSING_VERTEX_BYTES)
    }

    /// The per-creator bound now: [`CREATOR_PROCESSING_MAX`] (shared out of
    /// [`HEAVY_CREATORS_PROCESSING_MAX`] when more than two creators hold over their fair share),
    /// or twice the median of every node's processing count here when that is higher (a fair
    /// share). A fixed 256 dropped honest vertices whenever honest load ran the cluster slower
    /// than ~0.2 s per vertex
    /// (3 nodes at 1200/s on a busy machine: 4 841 honest vertices dropped in 20 s at one node,
    /// each refetched, p95 5.6 s), a spiral: drops slow finality, which raises the counts. The
    /// median is an honest node's count while fewer than half the nodes flood (f < N/3), so a
    /// flooder still holds at most twice what an honest creator holds.
    pub(crate) fn creator_bound(&self) -> u32 {
        let fair = self.median_processing().saturating_mul(2);
        // Heavy by count, or by bytes: a member signing vertices of the largest size holds
        // few of them (15 at 8 MiB), so by count alone each of k such members kept the whole
        // byte side, k x 8 MiB here; in one pool with the count-heavy ones, a coalition holds
        // HEAVY_CREATORS_PROCESSING_MAX units of bytes (16 MiB) whatever its size.
        let fair_units = self.median_units().saturating_mul(2);
        let heavy = (self.flood.members_above(fair.max(PARENT_SHARE_MIN)) + self.flood.members_above_units(fair_units.max(PARENT_SHARE_MIN))).max(1);
        let floor = (HEAVY_CREATORS_PROCESSING_MAX / heavy).clamp(PARENT_SHARE_MIN, CREATOR_PROCESSING_MAX);
        floor.max(fair)
    }

    /// Processing vertices of another creator an own vertex may build on: twice the median
    /// count ([`PARENT_SHARE_MIN`] at least), tighter than the admission bound. Admission must
    /// stay loose (a node whose clients all talk to it alone creates far more than the median
    /// and must not be dropped), but building on a creator that holds more than its share ties
    /// our finality to its backlog: under `vertex-flood` at 300/s (4 real nodes) honest vertices
    /// picked the flooder's childless tips as parents, every peer that had dropped them fetched
    /// them first, and honest p95 was 9.2 s. Its vertices still finalize on their own.
    pub(crate) fn parent_share(&self) -> u32 {
        PARENT_SHARE_MIN.max(self.median_processing().saturating_mul(2))
    }

    /// Caps what one poll asks directly about each creator other than this node at its share of
    /// the undecided DAG ([`Core::parent_share`]): half of it the creator's oldest tips, the
    /// rest a window that moves on by one share each poll (`turn`), so every tip is asked about
    /// within a few polls and none is starved behind older ones that cannot be decided yet.
    /// Only tips that carry no other creator's undecided vertex are capped (below). An honest
    /// creator's processing vertices are mostly covered by their children and so never reach
    /// the cap; a flooder's are childless, and before this each honest query
    /// carried ~500 of them to k peers (`vertex-flood`, 20 of 100 nodes: ~21 KB per query,
    /// 18 MB of query bytes per honest vertex, honest p95 1.13 s; 0.76-0.84 s with the cap). This
    /// node's own tips are never capped: what it created is what its clients wait for.
    pub(crate) fn cap_polled_tips(&self, tips: &mut Vec<VertexId>, turn: u64) {
        let cap = self.parent_share() as usize;
        if tips.len() <= cap {
            return;
        }
        // Only a tip that carries no other creator's undecided vertex: one built on another
        // creator's processing vertex carries that vertex's credit (a Yes on it is a Yes on
        // its ancestry), so leaving it out could starve those ancestors; a flooder that builds
        // on honest vertices gets the uncapped polls of before.
        let creator = |id: &VertexId| {
            let r = self.dag.vertices.get(id)?;
            let c = r.v.creator;
            let carries = r.v.parents.iter().any(|p| self.dag.vertices.get(p).is_some_and(|pr| pr.status == VertexStatus::Processing && pr.v.creator != c));
            (c != self.me && !carries).then_some(c)
        };
        // Each tip's capped creator, worked out once (in tip order, read back by `retain`).
        let creators: Vec<Option<NodeId>> = tips.iter().map(creator).collect();
        // Creator -> (its tips here, how many of them the walk below has passed).
        let mut per: HashMap<NodeId, (usize, usize)> = HashMap::default();
        for c in creators.iter().flatten() {
            per.entry(*c).or_default().0 += 1;
        }
        if per.values().all(|(n, _)| *n <= cap) {
            return;
        }
        let oldest = cap / 2;
        let window = cap - oldest;
        let mut at = creators.into_iter();
        tips.retain(|_| {
            let Some(Some(c)) = at.next() else { return true };
            let Some((n, seen)) = per.get_mut(&c) else { return true };
            let i = *seen;
            *seen += 1;
            if *n <= cap || i < oldest {
                return true;
            }
            let rest = *n - oldest;
            let start = (turn as usize).wrapping_mul(window) % rest;
            (i - oldest + rest - start) % rest < window
        });
    }

    /// Bytes one creator's processing vertices may weigh here under count bound `bound`:
    /// `bound` units of [`CREATOR_PROCESSING_VERTEX_BYTES`], or twice the median member's
    /// units when higher (honest vertices grow with batching under load, as counts do).
    pub(crate) fn creator_bytes_bound(&self, bound: u32) -> u64 {
        u64::from(bound.max(self.median_units().saturating_mul(2))) * CREATOR_PROCESSING_VERTEX_BYTES
    }

    /// The median member's byte units (see `median_processing`).
    fn median_units(&self) -> u32 {
        let members = self.peers.ids.len() as u32 + 1;
        self.flood.nth_units(members, members / 2)
    }

    /// The median of every node's processing count here (this node's own included).
    fn median_processing(&self) -> u32 {
        let members = self.peers.ids.len() as u32 + 1;
        let median = self.flood.nth_count(members, members / 2);
        debug_assert_eq!(median, {
            let mut counts: Vec<u32> = self.peers.ids.iter().map(|p| self.flood.count(p)).collect();
            counts.push(self.flood.count(&self.me));
            let mid = counts.len() / 2;
            *counts.select_nth_unstable(mid).1
        });
        median
    }

    /// Whether `creator` is counted in the median: a peer or this node.
    pub(crate) fn flood_member(&self, creator: &NodeId) -> bool {
        *creator == self.me || self.peers.index.contains_key(creator)
    }
}

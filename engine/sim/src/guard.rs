//! The shell's judgement of its peers, mirrored from the engine (`engine/node`'s
//! `runtime/shard/guard.rs`), and what the checker learns from it: which honest nodes an honest
//! node convicted or would ban, how long an honest node stays excluded without proof, and the
//! most bytes an honest node holds on behalf of one peer.
//!
//! The ban rule is the engine's: a peer is banned when its core excludes it (`Action::Alert`)
//! on proof (`proven_misbehaviour`: evidence, or an equivocation / bad signature / malformed
//! frame), when an excluded peer sends a proven-bad frame again, and when a convicted, excluded
//! peer's incidents grow. The simulated shell only counts bans (it does not disconnect), so
//! runs keep their trace hashes; a ban of an honest node by an honest node is a safety
//! violation.
//!
//! Bytes held for peer `p` at node `h`: the vertices created by `p` that `h`'s cores hold in
//! memory (DAG or pending buffer, `Core::vertex`), at their heap size, plus the messages `p` has
//! in flight to `h` (what would sit in `h`'s receive queue), at their wire size.
//!
//! Owns the bans, exclusion intervals and the held-bytes bookkeeping; reads the shells' cores;
//! reports violations to the checker.

use pqdag_core::{IdHashMap as HashMap, IdHashSet as HashSet};

use pqdag_core::{Misbehaviour, NodeId};

use crate::checker::Checker;
use crate::shell::Shell;

/// How often the guard looks at every honest core's peer scores, virtual us.
pub(crate) const SCAN_US: u64 = 200_000;

/// The engine's rule (`guard::proven_misbehaviour`): whether an exclusion rests on proof.
pub(crate) fn proven_misbehaviour(reason: Misbehaviour, has_evidence: bool) -> bool {
    has_evidence || matches!(reason, Misbehaviour::Equivocation | Misbehaviour::InvalidSignature | Misbehaviour::Malformed)
}

/// The simulated shells' guard and its observations.
pub(crate) struct Guard {
    honest: usize,
    bans: HashSet<(usize, usize)>,
    /// Per (honest node, shard): per position in the core's peer list, the peer's node index
    /// and its incident count at the last scan (`u32::MAX`: not seen yet). Flat rows, not a map
    /// keyed by triples: at 1000 nodes a scan reads 4 million scores.
    incidents_seen: HashMap<(usize, u32), (Vec<usize>, Vec<u32>)>,
    convicted_honest: HashSet<usize>,
    banned_honest: HashSet<usize>,
    excluded_since: HashMap<(usize, usize), u64>,
    excluded_max_us: u64,
    /// Per honest node `to`: wire bytes in flight to it, by sender (indexed by `to`, so a scan
    /// reads one node's row, not every pair: at 1000 nodes the pairs were 6 % of the run).
    in_flight: Vec<Vec<u64>>,
    max_held: u64,
    next_scan: u64,
}

impl Guard {
    /// Nothing seen yet; nodes `0..honest` of `nodes` are the honest ones.
    pub(crate) fn new(honest: usize, nodes: usize) -> Self {
        Guard {
            honest,
            bans: HashSet::default(),
            incidents_seen: HashMap::default(),
            convicted_honest: HashSet::default(),
            banned_honest: HashSet::default(),
            excluded_since: HashMap::default(),
            excluded_max_us: 0,
            in_flight: vec![vec![0; nodes]; honest],
            max_held: 0,
            next_scan: 0,
        }
    }

    fn ban(&mut self, by: usize, peer: usize, why: &str, checker: &mut Checker) {
        if by >= self.honest || !self.bans.insert((by, peer)) {
            return;
        }
        if peer < self.honest && self.banned_honest.insert(peer) {
            checker.violation(format!("honest node {peer} banned by honest node {by} ({why})"));
        }
    }

    /// Honest-or-not node `by`'s core excluded `peer` (`Action::Alert`).
    pub(crate) fn excluded(&mut self, by: usize, peer: usize, reason: Misbehaviour, has_evidence: bool, checker: &mut Checker) {
        if proven_misbehaviour(reason, has_evidence) {
            self.ban(by, peer, &format!("excluded for {reason:?}"), checker);
        }
    }

    /// Node `by`'s shell refused a frame of `peer` as `kind`; `was_excluded`: before the refusal.
    pub(crate) fn refused(&mut self, by: usize, peer: usize, kind: Misbehaviour, was_excluded: bool, checker: &mut Checker) {
        if was_excluded && proven_misbehaviour(kind, false) {
            self.ban(by, peer, "proven misbehaviour while excluded", checker);
        }
    }

    /// `bytes` left `from` for `to` (counted while in flight to an honest node).
    pub(crate) fn in_flight(&mut self, from: usize, to: usize, bytes: usize) {
        if let Some(b) = self.in_flight.get_mut(to).and_then(|row| row.get_mut(from)) {
            *b += bytes as u64;
        }
    }

    /// `bytes` from `from` reached (or were dropped at) `to`.
    pub(crate) fn landed(&mut self, from: usize, to: usize, bytes: usize) {
        if let Some(b) = self.in_flight.get_mut(to).and_then(|row| row.get_mut(from)) {
            *b = b.saturating_sub(bytes as u64);
        }
    }

    /// Whether a scan is due at `now`.
    pub(crate) fn due(&self, now: u64) -> bool {
        now >= self.next_scan
    }

    /// Looks at every honest core's peer scores and holdings at `now` (see the module docs).
    pub(crate) fn scan(&mut self, now: u64, shells: &[Shell], index: &HashMap<NodeId, usize>, checker: &mut Checker) {
        self.next_scan = now + SCAN_US;
        for (h, shell) in shells.iter().enumerate().take(self.honest) {
            if !shell.is_up() {
                continue;
            }
            let mut excluded_now: HashSet<usize> = HashSet::default();
            for c in shell.cores() {
                let scores = c.peer_scores();
                // Taken out while the row is read, so a ban can be applied in scan order.
                let (pis, mut seen_row) = self.incidents_seen.remove(&(h, c.shard())).unwrap_or_else(|| {
                    let pis = scores.iter().map(|(p, _)| index.get(p).copied().unwrap_or(usize::MAX)).collect();
                    (pis, vec![u32::MAX; scores.len()])
                });
                debug_assert_eq!(pis.len(), scores.len(), "a core's peer list is fixed for the run");
                for (pos, (_, sc)) in scores.iter().enumerate() {
                    let Some(&pi) = pis.get(pos) else { continue };
                    if pi == usize::MAX {
                        continue;
                    }
                    let seen = match seen_row[pos] {
                        u32::MAX => sc.incidents,
                        s => s,
                    };
                    seen_row[pos] = sc.incidents;
                    if sc.convicted && sc.excluded && sc.incidents > seen {
                        self.ban(h, pi, "convicted peer misbehaved again", checker);
                    }
                    if pi >= self.honest {
                        continue;
                    }
                    if sc.convicted && self.convicted_honest.insert(pi) {
                        checker.violation(format!("honest node {pi} convicted by honest node {h}"));
                    }
                    if sc.excluded && !sc.convicted {
                        excluded_now.insert(pi);
                    }
                }
                self.incidents_seen.insert((h, c.shard()), (pis, seen_row));
            }
            for p in 0..self.honest {
                if excluded_now.contains(&p) {
                    self.excluded_since.entry((h, p)).or_insert(now);
                } else if let Some(since) = self.excluded_since.remove(&(h, p)) {
                    self.excluded_max_us = self.excluded_max_us.max(now - since);
                }
            }
            // What its cores hold now, by creator (read from the cores at each scan: a table
            // of every vertex delivered to each node held ~0.7 GB at 1000 nodes).
            let mut per_peer: HashMap<usize, u64> = HashMap::default();
            for c in shell.cores() {
                for v in c.held_vertices() {
                    if let Some(&p) = index.get(&v.creator) {
                        *per_peer.entry(p).or_insert(0) += v.heap_bytes() as u64;
                    }
                }
            }
            for (from, &b) in self.in_flight[h].iter().enumerate() {
                if b > 0 {
                    *per_peer.entry(from).or_insert(0) += b;
                }
            }
            let top = per_peer.iter().filter(|(p, _)| **p != h).map(|(_, b)| *b).max().unwrap_or(0);
            self.max_held = self.max_held.max(top);
        }
    }

    /// Honest nodes some honest core convicted.
    pub(crate) fn honest_convicted(&self) -> usize {
        self.convicted_honest.len()
    }

    /// Honest nodes some honest shell would ban.
    pub(crate) fn honest_banned(&self) -> usize {
        self.banned_honest.len()
    }

    /// Longest exclusion (without proof) of an honest node by an honest node, ms, counting the
    /// exclusions still open at `now`.
    pub(crate) fn honest_excluded_max_ms(&self, now: u64) -> f64 {
        let open = self.excluded_since.values().map(|&s| now.saturating_sub(s)).max().unwrap_or(0);
        self.excluded_max_us.max(open) as f64 / 1000.0
    }

    /// Most bytes an honest node held on behalf of one peer at any scan.
    pub(crate) fn max_bytes_held_for_one_peer(&self) -> u64 {
        self.max_held
    }
}

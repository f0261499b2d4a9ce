//! Polls (3.4): choosing the aged frontier, sampling, collecting responses, closing polls and
//! the congestion window. Owns [`Polls`] (open and recently closed polls, query ids, window,
//! counters); calls `credit` (the transitive credit walk), `snowball`, `finality`, `peers`
//! (timeouts and vote contradictions), `stand_ins` (re-asks and stand-ins) and `poll_votes`
//! (own vote, lock round of the answers).

use std::collections::BTreeMap;
use std::sync::Arc;

use pqdag_crypto::Domain;
use pqdag_wire::{NodeId, Query, Response, VertexId, Vote};
use pqdag_wire::limits::QUERY_IDS_MAX;
use rand::Rng;

use crate::core::Core;
use crate::credit::{Credited, Round, credit};
use crate::node_polls::PollPart;
use crate::poll_votes::Masks;
use crate::params::Params;
use crate::peers::{Misbehaviour, PEER_TIMEOUT_WINDOW};
use crate::lock_rounds::{AGE_UNKNOWN, FRESH_AGE_MAX};
use crate::types::{Action, Signer, VertexStatus};

/// Closed polls kept until their timeout to tell late answers from timeouts.
pub const POLL_CLOSED_MAX: usize = 256;

/// A poll in flight.
pub(crate) struct Poll {
    pub(crate) sent_us: u64,
    pub(crate) deadline_us: u64,
    pub(crate) sample: Vec<usize>,
    pub(crate) ids: Vec<VertexId>,
    pub(crate) digest: [u8; 32],
    pub(crate) yes: Vec<u64>,
    pub(crate) no: Vec<u64>,
    /// Per id, who answered `LockedYes` or `Final` (also set in `yes`).
    pub(crate) locked: Vec<u64>,
    /// Per id, who answered `Final`.
    pub(crate) finals: Vec<u64>,
    /// Per id, who answered `LockedYes` of age at most `FRESH_AGE_MAX` (a lock of the answer's
    /// round or the one before) or `Final`;
    /// at the close, only those of the poll's round stay (`lock_rounds`; all of `locked`
    /// without lock rounds).
    pub(crate) fresh: Vec<u64>,
    /// The lock round of the poll: at the close, the round most answers were cast in.
    pub(crate) round: u64,
    /// Per id, the Yes that do not abstain from their round; at the close, only those of the
    /// poll's round stay: the Yes that certify (`lock_rounds`; all of `yes` without lock
    /// rounds).
    pub(crate) cert: Vec<u64>,
    /// Each responder's round (by sample position).
    pub(crate) labels: Vec<u64>,
    /// Peers' claimed lock rounds by id position (`lock_rounds`).
    pub(crate) claims: Vec<(u32, u64)>,
    pub(crate) responded: u64,
    /// Yes votes a success needs (this node's own vote included when `own`).
    pub(crate) alpha: usize,
    /// The sample is the whole network: this node's own vote counts (bit `sample.len()`).
    pub(crate) own: bool,
    /// When the answers so far decided the round (alpha Yes on some id, or alpha out of reach
    /// for every id): the grace period for late answers starts (see `Core::on_response`).
    pub(crate) alpha_at: Option<u64>,
    /// When half the sample had answered: the round-trip signal of the poll window.
    pub(crate) half_at: Option<u64>,
    /// The signed query, kept to re-ask silent peers once (`Core::reask_silent`).
    pub(crate) query: Arc<Query>,
    pub(crate) reasked: bool,
    /// A node poll asking for every shard (`node_polls`).
    pub(crate) together: bool,
    /// Avalanche mode: the sample size k the poll started with; `sample` grows past it by one
    /// stand-in per answer that was mostly `Unknown` and per peer still silent at the re-ask
    /// (see `Core::replace_uninformative`). 0 in whole-network polls, whose sample is every peer.
    pub(crate) base_k: usize,
}

impl Poll {
    /// When the poll closes at the latest: its deadline, or the moment its answers decided
    /// the round plus a grace period as long again.
    pub(crate) fn due(&self, now: u64) -> bool {
        now >= self.deadline_us || self.alpha_at.is_some_and(|a| now >= a + (a - self.sent_us).max(1_000))
    }
}

/// A closed poll waiting for its deadline (late answers are not timeouts).
pub(crate) struct Closed {
    pub(crate) deadline_us: u64,
    pub(crate) sample: Vec<usize>,
    pub(crate) missing: u64,
}

/// Poll state of one shard.
pub(crate) struct Polls {
    pub(crate) open: BTreeMap<u64, Poll>,
    pub(crate) closed: BTreeMap<u64, Closed>,
    pub(crate) next_query_seq: u64,
    pub(crate) next_poll_at: u64,
    /// Last polls: true = closed short of alpha answers (timed out).
    pub(crate) outcomes: u8,
    /// Polls allowed in flight now (1..=polls_in_flight_max): delay-based AIMD, see `adapt_window`.
    pub(crate) window: usize,
    pub(crate) completed: u64,
    pub(crate) short: u64,
    /// Conflicting vertices that had a quorum of Yes but not yet of `LockedYes`, by arrival
    /// sequence: every poll asks about them directly (a `LockedYes` on a descendant says
    /// nothing about the vertex's own sets), until they have it or are decided.
    pub(crate) lock_wanted: BTreeMap<u64, VertexId>,
    /// One poll per node (`node_polls`, several shards): the latest ids offered by each other
    /// shard.
    pub(crate) parts: Vec<Vec<VertexId>>,
    /// This shard's aged frontier, as of its last offer tick.
    pub(crate) frontier: Vec<VertexId>,
    /// This shard's ids as the other shards hold them (its frontier, or nothing while it polls
    /// on its own).
    pub(crate) offered: Vec<VertexId>,
    /// When this shard next offers its ids.
    pub(crate) next_offer_at: u64,
    /// Before this time this shard polls on its own (a node poll of it was slow).
    pub(crate) together_after: u64,
    /// Queries waiting for the other shards' votes, by gather number.
    pub(crate) gathers: BTreeMap<u64, crate::node_polls::Gather>,
    /// Gathers held per asking peer (`GATHERS_PER_PEER_MAX`).
    pub(crate) gathers_by_peer: crate::id_hash::HashMap<NodeId, u32>,
    pub(crate) next_gather: u64,
}

impl Polls {
    /// No poll before `first_poll_at`; the window starts fully open.
    pub(crate) fn new(window: usize, first_poll_at: u64) -> Self {
        Polls { open: BTreeMap::new(), closed: BTreeMap::new(), next_query_seq: 1, next_poll_at: first_poll_at, outcomes: 0, window, completed: 0, short: 0, lock_wanted: BTreeMap::new(), parts: Vec::new(), frontier: Vec::new(), offered: Vec::new(), next_offer_at: 0, together_after: 0, gathers: BTreeMap::new(), gathers_by_peer: Default::default(), next_gather: 0 }
    }

    /// Whether another shard offered ids for the node's next poll.
    pub(crate) fn has_parts(&self) -> bool {
        self.parts.iter().any(|p| !p.is_empty())
    }

    /// Poll congestion control. A round costs every responder a verify and a signature whatever
    /// it carries, so N nodes with W polls in flight each queue N x W x k of them. When the
    /// machines cannot keep up, answers slow down, and more rounds in flight only lengthen the
    /// queues until queries time out and no round succeeds. So the window halves when half the
    /// sample took longer than a quarter of the query timeout to answer, and grows by one per
    /// prompt poll (TCP's AIMD, on delay as in Vegas). Missing answers are not a signal:
    /// withholders and partitions leave fast answers from the rest, and must not slow polling.
    pub(crate) fn adapt_window(&mut self, params: &Params, poll: &Poll) {
        let Some(half) = poll.half_at else { return };
        let slow = half.saturating_sub(poll.sent_us) > params.query_timeout_us / 4;
        self.window = if slow { (self.window / 2).max(1) } else { (self.window + 1).min(params.polls_in_flight_max) };
        debug_assert!((1..=params.polls_in_flight_max).contains(&self.window));
        if slow && poll.together {
            // A slow node poll: poll per shard for a while (`Core::polls_together`).
            self.together_after = half + crate::node_polls::TOGETHER_BACKOFF_US;
        }
    }
}

impl<S: Signer> Core<S> {
    /// Whether polls sample the whole network (k = N-1, small clusters). Then a poll is a
    /// quorum count over all nodes, this node's own vote included, with a BFT quorum as its
    /// threshold (see [`Self::quorum`]); otherwise the Avalanche sample of k peers with alpha.
    pub(crate) fn whole_network(&self) -> bool {
        let peers = self.peers.ids.len();
        peers > 0 && peers < 64 && self.params.sample_size >= peers
    }

    /// The BFT quorum of N nodes with f = (N-1)/3 faulty: q = floor((N+f)/2)+1. Two quorums
    /// share at least 2q-N >= f+1 nodes, so at least one honest node; and q <= N-f, so the
    /// honest nodes alone form one when every faulty node lies or is silent. Never scaled down
    /// when peers are excluded or unreachable: a poll with fewer than q possible voters fails.
    pub(crate) fn quorum(&self) -> usize {
        let n = self.peers.ids.len() + 1;
        (n + self.faults_tolerated()) / 2 + 1
    }

    /// f = (N-1)/3: the faulty nodes the thresholds of whole-network polls are built for.
    pub(crate) fn faults_tolerated(&self) -> usize {
        self.peers.ids.len() / 3
    }

    /// Alpha for a sample of `k` of the eligible peers (Avalanche mode): alpha scaled to the
    /// sample, never below a strict majority of it.
    pub(crate) fn eligible_alpha(&self, k: usize) -> usize {
        if k >= self.params.sample_size {
            self.params.alpha
        } else {
            let scaled = (self.params.alpha * k).div_ceil(self.params.sample_size);
            scaled.max(k / 2 + 1).min(k)
        }
    }

    /// Aged frontier: processing vertices older than `poll_min_age` with no aged processing
    /// child. Returns (ids, any aged processing vertex).
    pub(crate) fn aged_frontier(&mut self, now: u64) -> Vec<VertexId> {
        let cutoff = now.saturating_sub(self.params.poll_min_age_us);
        let mut last_aged = 0u64;
        let mut cands: Vec<(u64, VertexId)> = Vec::new();
        for (&seq, e) in &self.dag.processing {
            if e.arrival_us > cutoff {
                break;
            }
            last_aged = seq;
            cands.push((e.min_child_seq, e.id));
        }
        let mut tips: Vec<VertexId> = if self.conflicts.contested == 0 && self.shard_count == 1 {
            // Fast path: without contested sets every processing vertex is strongly preferred.
            cands.into_iter().filter(|(c, _)| *c > last_aged).map(|(_, id)| id).collect()
        } else {
            // The strongly-preferred frontier: a vertex is covered only by an aged, strongly
            // preferred child. Otherwise ancestors whose every child descends from a losing
            // conflict member would never be credited (and never finalize).
            let mark = self.dag.next_mark();
            let mut out = Vec::new();
            let mut parents: Vec<VertexId> = Vec::new();
            for (_, id) in cands.into_iter().rev() {
                // One lookup when the strong preference is decided or cached for this epoch (most
                // vertices): whether it is covered, that preference, and its parents to cover.
                parents.clear();
                let epoch = self.votes.epoch;
                let (covered, strong) = match self.dag.vertices.get(&id) {
                    None => (false, Some(false)),
                    Some(r) => {
                        let strong = match r.status {
                            VertexStatus::Final => Some(true),
                            VertexStatus::Rejected => Some(false),
                            VertexStatus::Processing => (r.strong_epoch == epoch).then_some(r.strong),
                        };
                        if strong == Some(true) {
                            parents.extend_from_slice(&r.v.parents);
                        }
                        (r.mark == mark, strong)
                    }
                };
                if !covered {
                    out.push(id);
                }
                if strong.is_none() && self.strongly_preferred(&id) {
                    if let Some(r) = self.dag.vertices.get(&id) {
                        parents.extend_from_slice(&r.v.parents);
                    }
                }
                for p in &parents {
                    if let Some(pr) = self.dag.vertices.get_mut(p) {
                        pr.mark = mark;
                    }
                }
            }
            out.reverse();
            out
        };
        // Avalanche mode only: a whole-network poll asks every peer (at most 20), and there
        // the cap slowed honest vertices, for a cause not found (`sim-faults` seed 3079,
        // N = 7: p95 1.5 s -> 4.7 s).
        if !self.whole_network() {
            self.cap_polled_tips(&mut tips, self.polls.next_query_seq);
        }
        if !self.polls.lock_wanted.is_empty() {
            let dag = &self.dag;
            self.polls.lock_wanted.retain(|_, id| dag.vertices.get(id).is_some_and(|r| r.status == VertexStatus::Processing && !r.lock_quorum));
            for id in self.polls.lock_wanted.values() {
                if !tips.contains(id) {
                    tips.push(*id);
                }
            }
        }
        if tips.len() > QUERY_IDS_MAX {
            tips.drain(..tips.len() - QUERY_IDS_MAX);
        }
        tips
    }

    pub(crate) fn launch_poll(&mut self, now: u64) {
        let joint = self.joint_polls();
        let together = joint && self.polls_together();
        if joint {
            self.offer_poll_ids(now, together);
        }
        if self.polls.open.len() >= self.polls.window || now < self.polls.next_poll_at || (self.dag.processing.is_empty() && !(together && self.polls.has_parts())) {
            return;
        }
        if now >= self.peers.refresh_at {
            self.peers.refresh_exclusions(now);
        }
        // A node poll: the shards take turns, so the node polls once per interval.
        self.polls.next_poll_at = now + self.params.poll_interval_us * if together { u64::from(self.shard_count) } else { 1 };
        // A whole-network poll asks every peer, excluded ones too, and counts their Yes (see
        // `on_response`): its threshold is a BFT quorum, whose intersection argument holds
        // whoever votes, so an exclusion is never needed for safety there. Leaving excluded
        // honest peers out left a node with one crashed peer and one honest peer excluded on
        // timeouts polling a bare quorum, where any lost message failed the round (`sim-faults`
        // seed 34: 192 of 383 final).
        let whole = self.whole_network();
        let k = if whole { self.peers.ids.len() } else { self.params.sample_size.min(self.peers.eligible.len()) };
        if k == 0 {
            return;
        }
        let ids = if together {
            self.node_poll_ids()
        } else if joint {
            self.polls.frontier.clone()
        } else {
            self.aged_frontier(now)
        };
        if ids.is_empty() {
            if joint {
                // Nothing aged yet: this shard's turn is not spent.
                self.polls.next_poll_at = now + self.params.poll_interval_us;
            }
            return;
        }
        // Uniform sample without replacement (partial Fisher-Yates).
        let mut pool: Vec<usize> = if whole { (0..self.peers.ids.len()).collect() } else { self.peers.eligible.clone() };
        for i in 0..k {
            let j = self.rng.random_range(i..pool.len());
            pool.swap(i, j);
        }
        pool.truncate(k);
        let query_id = (self.polls.next_query_seq << 8) | u64::from(self.shard);
        self.polls.next_query_seq += 1;
        let mut query = Query { query_id, requester: self.me, ids, signature: Vec::new() };
        query.signature = self.signer.sign(Domain::Query, &query.signed_bytes());
        let digest = query.ids_digest();
        let n = query.ids.len();
        let own = whole;
        let alpha = if own { self.quorum() } else { self.eligible_alpha(k) };
        let to = pool.iter().map(|&i| self.peers.ids[i]).collect();
        let ids = query.ids.clone();
        let pool_len = pool.len();
        let query = Arc::new(query);
        self.polls.open.insert(
            query_id,
            Poll {
                sent_us: now,
                deadline_us: now + self.params.query_timeout_us,
                sample: pool,
                ids,
                digest,
                yes: vec![0; n],
                no: vec![0; n],
                locked: vec![0; n],
                finals: vec![0; n],
                fresh: vec![0; n],
                round: self.rounds.current,
                cert: vec![0; n],
                labels: vec![0; pool_len],
                claims: Vec::new(),
                responded: 0,
                alpha,
                own,
                alpha_at: None,
                half_at: None,
                query: query.clone(),
                reasked: false,
                together,
                base_k: if own { 0 } else { k },
            },
        );
        self.push(Action::SendQuery { to, query });
    }

    pub(crate) fn on_response(&mut self, now: u64, from: NodeId, resp: Response) {
        let Some(&pi) = self.peers.index.get(&from) else { return };
        let rounds = self.rounds_on();
        let excluded = self.peers.scores[pi].excluded;
        let qid = resp.query_id;
        if excluded && !self.whole_network() {
            // 3.7.3: responses of excluded peers are ignored (Avalanche-mode polls). In
            // whole-network mode they count, and a late one clears its timeout like any other
            // (else an excluded honest peer's timeouts could never fade).
            return;
        }
        let Some(poll) = self.polls.open.get_mut(&qid) else {
            if let Some(c) = self.polls.closed.get_mut(&qid) {
                if let Some(pos) = c.sample.iter().position(|&s| s == pi) {
                    c.missing &= !(1u64 << pos);
                }
            }
            return;
        };
        let Some(pos) = poll.sample.iter().position(|&s| s == pi) else { return };
        let bit = 1u64 << pos;
        if resp.ids_digest != poll.digest || resp.votes.len() != poll.ids.len() || resp.votes.iter().any(|&b| Vote::from_u8(b).is_none()) || !(resp.lock_ages.is_empty() || resp.lock_ages.len() == resp.votes.len()) {
            self.incident(now, pi, Misbehaviour::Malformed, None);
            return;
        }
        if poll.responded & bit != 0 {
            // A second answer (a duplicated query, or a replay): the first one counts. Different
            // votes are not evidence (see `on_alert`).
            return;
        }
        poll.responded |= bit;
        // Lock rounds: the answer's round, kept for the close (only Yes of the poll's round make
        // a certificate or a fresh lock); age `AGE_UNKNOWN` on a Yes abstains from its round.
        if let Some(l) = poll.labels.get_mut(pos) {
            *l = if rounds { resp.round } else { 0 };
        }
        let mut unknown = 0usize;
        for (i, &b) in resp.votes.iter().enumerate() {
            match Vote::from_u8(b) {
                Some(v) if v.is_yes() => {
                    poll.yes[i] |= bit;
                    if v == Vote::Final || resp.lock_age(i) != AGE_UNKNOWN {
                        poll.cert[i] |= bit;
                    }
                    if v != Vote::Yes {
                        poll.locked[i] |= bit;
                        let age = resp.lock_age(i);
                        if v == Vote::Final || age <= FRESH_AGE_MAX {
                            poll.fresh[i] |= bit;
                        }
                        if rounds {
                            let claim = if v == Vote::Final { Some(resp.round) } else { (age < AGE_UNKNOWN).then(|| resp.round.saturating_sub(u64::from(age))) };
                            if let Some(c) = claim {
                                poll.claims.push((i as u32, c));
                            }
                        }
                    }
                    if v == Vote::Final {
                        poll.finals[i] |= bit;
                    }
                }
                // An excluded peer in a whole-network poll: its Yes counts toward the quorum
                // (safe whoever casts it), its No does not drag confidence (a flip-voter's
                // would hold every vertex below the finality threshold).
                Some(Vote::No) if !excluded => poll.no[i] |= bit,
                Some(Vote::Unknown) => unknown += 1,
                _ => {}
            }
        }
        // Mostly `Unknown`: a lagging honest node lacks a few of the newest ids, and standing
        // in for it on every such answer added half again as many queries under `vertex-flood`
        // (p95 up 10 %); a node withholding its vote lacks most or all of them.
        if !poll.own && 2 * unknown > resp.votes.len() && poll.alpha_at.is_none() {
            self.replace_uninformative(qid);
        }
        let Some(poll) = self.polls.open.get_mut(&qid) else { return };
        let got = poll.responded.count_ones() as usize;
        let own = usize::from(poll.own);
        if got + own >= poll.alpha && poll.alpha_at.is_none() {
            // The grace period starts once the answers decide the round: some id has alpha Yes
            // (a success), or no id can reach alpha any more. Not on the bare count of answers:
            // a Byzantine peer's instant `Unknown` (or `No`) then counted toward alpha, the poll
            // closed before a slow honest answer and never re-asked a lost one, and with N = 5
            // and one such peer the round needs every honest answer, so one lost message in
            // beta rounds reset the streak (`sim-faults` seed 7174: 133 of 380 final in 24 s).
            let best_yes = poll.yes.iter().map(|m| m.count_ones() as usize).max().unwrap_or(0);
            // Excluded peers still to answer are not counted on: a peer excluded for invalid
            // or malformed answers never sends a valid one, and counting its slot kept every
            // poll whose ids split the honest votes open until its deadline (1 s): at N = 10
            // with 2 such peers, those excluded within 44 ms, the first 0.4 s of vertices took
            // ~1 s (`sim-soak` seed 702, `invalid-signatures` and `malformed` at 20 %: p95 once
            // detected 1 105 ms). An excluded peer's late Yes still counts during the grace
            // period this starts.
            let live = poll.sample.iter().enumerate().filter(|&(p, &pi)| poll.responded & (1u64 << p) == 0 && !self.peers.scores[pi].excluded).count();
            let reachable = best_yes + own + live >= poll.alpha;
            if best_yes + own >= poll.alpha || !reachable {
                poll.alpha_at = Some(now);
            }
        }
        if 2 * got >= poll.sample.len() && poll.half_at.is_none() {
            poll.half_at = Some(now);
        }
        if got == poll.sample.len() {
            self.close_poll(now, qid);
        }
    }

    pub(crate) fn close_poll(&mut self, now: u64, qid: u64) {
        let Some(mut poll) = self.polls.open.remove(&qid) else { return };
        self.polls.completed += 1;
        self.polls.adapt_window(&self.params, &poll);
        let k = poll.sample.len();
        let mut got = poll.responded.count_ones() as usize;
        // One shard: this node's own vote, as of now, in the spare bit after the sample. A node
        // poll (several shards) leaves it to each shard's part (`close_part`).
        let joint = self.joint_polls();
        self.settle_poll_round(&mut poll);
        if poll.own {
            debug_assert!(k < 64);
            if !joint {
                let masks = Masks { yes: &mut poll.yes, no: &mut poll.no, locked: &mut poll.locked, fresh: &mut poll.fresh, cert: &mut poll.cert };
                self.add_own_votes(&poll.ids, masks, 1u64 << k, poll.round);
            }
            got += 1;
        }
        let short = got < poll.alpha;
        if short {
            self.polls.short += 1;
        }
        self.polls.outcomes = (self.polls.outcomes << 1) | u8::from(short);
        // Late answers are not timeouts: remember who is missing until the deadline.
        // Stand-ins (`replace_uninformative`) were asked late, with less than a query timeout
        // left: their silence is not held against them (under overload honest stand-ins timed
        // out and were excluded). Only the sample the poll started with is accounted.
        let accounted = if poll.base_k > 0 { poll.base_k.min(k) } else { k };
        let missing = !poll.responded & if accounted >= 64 { u64::MAX } else { (1u64 << accounted) - 1 };
        if self.polls.closed.len() >= POLL_CLOSED_MAX {
            if let Some((&old, _)) = self.polls.closed.iter().next() {
                self.expire_closed(old);
            }
        }
        self.polls.closed.insert(qid, Closed { deadline_us: poll.deadline_us, sample: poll.sample[..accounted].to_vec(), missing });
        let part = PollPart {
            runner: self.shard,
            ids: poll.ids,
            yes: poll.yes,
            no: poll.no,
            locked: poll.locked,
            finals: poll.finals,
            fresh: poll.fresh,
            round: poll.round,
            cert: poll.cert,
            claims: poll.claims,
            sample: poll.sample,
            responded: poll.responded,
            alpha: poll.alpha,
            own: poll.own,
            base_k: poll.base_k,
            own_counted: !joint,
        };
        if joint {
            self.split_poll(now, part);
        } else {
            self.close_part(now, part);
        }
    }

    /// The per-id half of closing a poll, on the shard that owns the ids: Snowball's sample,
    /// transitive credit, finality, final claims and the vote-contradiction detector.
    pub(crate) fn close_part(&mut self, now: u64, mut poll: PollPart) {
        let k = poll.sample.len();
        if poll.own && !poll.own_counted {
            let masks = Masks { yes: &mut poll.yes, no: &mut poll.no, locked: &mut poll.locked, fresh: &mut poll.fresh, cert: &mut poll.cert };
            self.add_own_votes(&poll.ids, masks, 1u64 << k, poll.round);
        }
        // Snowball's preference threshold (Snowman's `alphaPreference`): a strict majority of
        // the sample in Avalanche mode too, below alpha (the confidence threshold, which alone
        // counts toward finality). With both at alpha = 15 of 20, honest nodes split 13:11
        // between two members (after a partition, or a `mixed` liar's votes, once the liars
        // were excluded) never moved: neither side could ever show 15 Yes, and the set stayed
        // undecided for good (`sim` at 30 nodes: `mixed` at 0.25 seeds 15 and 19, `withhold`
        // and `vote-unknown` with a 5|25 partition, 5 of 20 seeds each). A majority of the
        // sample moves the minority over, as Snowball's sampling does.
        let (alpha_pref, pref_mask) = if poll.own { self.preference_sample(k) } else { ((poll.base_k / 2 + 1).min(poll.alpha), u64::MAX) };
        let own_bit = if poll.own { 1u64 << k } else { 0 };
        let base_k = if poll.own { None } else { Some(poll.base_k) };
        let round = Round { ids: &poll.ids, yes: &poll.yes, no: &poll.no, locked: &poll.locked, fresh: &poll.fresh, cert: &poll.cert, poll_round: poll.round, claims: &poll.claims, claim_at: self.claim_threshold(), own_bit, locks: poll.own, alpha: poll.alpha, alpha_pref, pref_mask, base_k, beta: self.params.beta, max_rounds: self.params.max_rounds, follow_at: if poll.own { self.lock_follow_threshold() } else { 0 } };
        let credited = credit(&mut self.dag, &round);
        self.finality.stalled += credited.stalled;
        let Credited { successes, candidates, lock_wanted, .. } = credited;
        self.polls.lock_wanted.extend(lock_wanted);
        for tally in successes {
            self.snowball_success(tally);
        }
        // Finality (FR-005), ancestors first.
        for id in candidates {
            self.try_finalize(now, id);
        }
        if poll.own {
            self.count_final_claims(now, &poll.ids, &poll.finals, &poll.sample);
        }
        // Vote-contradiction detection: a responder voting No where alpha said Yes on
        // conflict-free vertices, on most such ids, is flipping votes; one answering Unknown on
        // most such ids that this node has held for longer than a query timeout is withholding
        // its vote (an honest responder fetches an unknown polled id from the asker at once).
        let mut decided_ids: Vec<(usize, bool)> = Vec::new();
        for (i, id) in poll.ids.iter().enumerate() {
            // Ids with no contested set in their undecided history here, or ids final here by
            // now (the network decided them): an honest responder votes No on those only
            // transiently. In whole-network mode a processing id that is, or descends from, a
            // member of a contested set is left out too: an honest peer that prefers (or is
            // locked on) another member votes No on it for as long as the set is undecided.
            // Counting those let a liar that sided with the majority frame the honest node on
            // the other side as the flipper: at N = 4 (`sim --nodes 4 --byzantine 0.25
            // --strategy selective --conflict-ratio 0.2 --seed 81`) both other honest nodes
            // excluded it for the whole run (522 incidents) and kept sampling the liar.
            if poll.yes[i].count_ones() as usize >= poll.alpha && self.votes_on_it_are_settled(id) {
                if let Some(r) = self.dag.vertices.get(id) {
                    let old = now.saturating_sub(r.arrival_us) > self.params.query_timeout_us;
                    decided_ids.push((i, old));
                }
            }
        }
        if !decided_ids.is_empty() {
            for (pos, &pi) in poll.sample.iter().enumerate() {
                let bit = 1u64 << pos;
                if poll.responded & bit == 0 {
                    continue;
                }
                let against = decided_ids.iter().filter(|&&(i, old)| poll.no[i] & bit != 0 || (old && (poll.yes[i] | poll.no[i]) & bit == 0)).count();
                if against * 2 > decided_ids.len() {
                    self.contradicted(now, pi, poll.runner);
                }
            }
        }
    }

    /// Whether every honest peer's vote on `id` ends up the same whatever its preferences: final
    /// here, or processing (or rejected) with no contested set in it or, while processing and
    /// polling the whole network, in its undecided ancestry (`Rec::contested`, cached with the
    /// strong preference).
    fn votes_on_it_are_settled(&mut self, id: &VertexId) -> bool {
        let Some(r) = self.dag.vertices.get(id) else { return false };
        match r.status {
            VertexStatus::Final => true,
            VertexStatus::Rejected => !r.in_conflict,
            VertexStatus::Processing if r.in_conflict => false,
            // Sampled polls (large N) keep the plain rule: there the detector is what excludes
            // flip-voters before they stall finality, and with contested ancestry left out it
            // missed them (`sim-soak --sizes 30 --strategies flip-votes`: 4 of 20 runs not
            // live at 0.2-0.25), while one liar cannot make an honest node the minority of a
            // sample of 20 the way it does among 3 peers.
            VertexStatus::Processing if !self.whole_network() => true,
            VertexStatus::Processing => {
                self.strongly_preferred(id); // fills `contested` unless cached this epoch
                self.dag.vertices.get(id).is_some_and(|r| !r.contested)
            }
        }
    }

    /// Snowball's sample in a whole-network poll of `k` peers: a random subset of about two
    /// thirds of them (all of them below 4 peers) and a strict majority of it. With
    /// every peer as the sample, the honest nodes' views are identical: a 3:3 split of 6 honest
    /// nodes (two partition sides that each voted, and so pinned, their own first-seen member)
    /// gave no member a majority, ever (`sim-faults` seed 3). A random subset breaks the
    /// symmetry as Avalanche's sampling does; finality still needs the full quorum.
    pub(crate) fn preference_sample(&mut self, k: usize) -> (usize, u64) {
        let m = if k < 4 { k } else { (2 * k).div_ceil(3) };
        let mut bits: Vec<usize> = (0..k).collect();
        for i in 0..m {
            let j = self.rng.random_range(i..k);
            bits.swap(i, j);
        }
        let mask = bits[..m].iter().fold(0u64, |acc, &b| acc | (1u64 << b));
        (m / 2 + 1, mask)
    }

    /// Polls allowed in flight now (the congestion window; `polls_in_flight_max` at most).
    pub fn poll_window(&self) -> usize {
        self.polls.window
    }

    pub(crate) fn expire_closed(&mut self, qid: u64) {
        let Some(c) = self.polls.closed.remove(&qid) else { return };
        let now = self.now;
        // Only the peer-level signal (most peers silent) gates timeout penalties: polls also
        // come up short when a minority withholds answers, and withholders must be excluded.
        let suspected = self.peers.most_queries_timed_out();
        for (pos, &pi) in c.sample.iter().enumerate() {
            let timed_out = c.missing & (1u64 << pos) != 0;
            self.peers.record_outcome(timed_out);
            let s = &mut self.peers.scores[pi];
            s.window_queries += 1;
            s.window_timeouts += u32::from(timed_out);
            if s.window_queries >= PEER_TIMEOUT_WINDOW {
                let excessive = s.window_timeouts * 2 > s.window_queries;
                s.window_queries = 0;
                s.window_timeouts = 0;
                // A partition times out honest peers too: do not punish them for it.
                if excessive && !suspected {
                    self.incident(now, pi, Misbehaviour::ExcessiveTimeouts, None);
                }
            }
        }
    }
}

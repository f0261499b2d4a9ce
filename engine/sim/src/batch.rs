//! Several threads (`sim --threads N`, N > 1): the events of different honest nodes that fall
//! within one network latency of each other run at once, each on its own node's state
//! (`node_step`), and what they did to the rest of the run is applied afterwards in event order
//! (`dispatch.rs`).
//!
//! Why it is safe: a message takes at least [`crate::network::Network::min_latency_us`] to
//! arrive, so nothing one node does in `[t, t + latency)` can reach another node within that
//! window; a node's own follow-ups (timers, mesh messages) stay in the queue for the next
//! batch; and a batch holds one event per node, so each node's time only moves forward.
//!
//! Why it is deterministic: which events form a batch depends only on the queue, each node's
//! step depends only on its own state, and the effects are applied in the batch's order. The
//! number of threads changes nothing but the wall time (test
//! `batches_give_the_same_run_on_any_number_of_threads`). The runs differ from the sequential
//! simulator's (`--threads 1`): a receiver's transport checks (stream credit, held pushes) read
//! its state at the end of the batch, and strikes land at the batch's pace.
//!
//! Owns the rayon pool and the per-node batch marks; events of Byzantine nodes and of the
//! whole run (submissions, crashes, restarts, history sync, adversary ticks) run sequentially
//! between batches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use pqdag_core::{IdHashSet as HashSet, NodeId};

use crate::cost::NodeCpu;
use crate::node_step::{shared_of, Effect, NodeCtx};
use crate::shell::Shell;
use crate::{Ev, Sim};

/// Most events in one batch (bounds the effects held at once).
const BATCH_MAX: usize = 4096;

/// Below this many events a batch runs on the calling thread (no hand-off).
const PARALLEL_MIN: usize = 8;

/// The thread pool and the scratch of forming batches.
pub(crate) struct Batcher {
    pool: rayon::ThreadPool,
    /// Per node: whether it has an event in the batch being formed.
    in_batch: Vec<bool>,
    /// Events popped while forming a batch that wait for a later one, earliest first (they
    /// come before the queue's events of the same time: `Sim::next_event`).
    pub(crate) carry: std::collections::VecDeque<(u64, Ev)>,
    /// Scratch: the events set aside while forming one batch.
    deferred: Vec<(u64, Ev)>,
    threads: usize,
}

impl Batcher {
    /// A pool of `threads` threads for `nodes` nodes.
    pub(crate) fn new(threads: usize, nodes: usize) -> Result<Self, String> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads - 1).thread_name(|i| format!("sim-{i}")).build().map_err(|e| format!("thread pool: {e}"))?;
        Ok(Batcher { pool, in_batch: vec![false; nodes], carry: Default::default(), deferred: Vec::new(), threads })
    }
}

/// One event of a batch, with the node state it runs on.
struct Job<'a> {
    at: u64,
    node: usize,
    ev: Option<Ev>,
    shell: &'a mut Shell,
    cpu: &'a mut NodeCpu,
    seen_alerts: &'a mut HashSet<NodeId>,
    fx: Vec<Effect>,
}

impl Sim {
    /// Whether `ev` may join a batch: one honest node's delivery, timer, mesh message or strike.
    fn batchable(&self, ev: &Ev) -> bool {
        ev.node().is_some_and(|n| !self.byzantine[n])
    }

    /// Runs `first` (popped at `at`) and, if it may, the events that can run beside it: one
    /// per node, before `at` plus the network's least latency and `budget_us`. `Err` hands
    /// `first` back when it cannot start a batch (one thread, or not one honest node's event):
    /// the caller runs it sequentially.
    pub(crate) fn run_batch(&mut self, at: u64, first: Ev, budget_us: u64) -> Result<(), Ev> {
        if !self.batchable(&first) {
            return Err(first);
        }
        let Some(mut b) = self.batcher.take() else { return Err(first) };
        b.deferred.clear();
        let horizon = at + self.network.min_latency_us();
        let mut items: Vec<(u64, Ev)> = vec![(at, first)];
        b.in_batch[items[0].1.node().unwrap_or(0)] = true;
        self.batcher = Some(b);
        while let Some((t, ev)) = self.next_event() {
            let Some(ev) = ev else { continue };
            let joins = t < horizon && t <= budget_us && self.batchable(&ev) && items.len() < BATCH_MAX;
            let b = self.batcher.as_mut().expect("set above");
            if !joins {
                b.deferred.push((t, ev));
                break;
            }
            let node = ev.node().unwrap_or(0);
            if b.in_batch[node] {
                b.deferred.push((t, ev));
                continue;
            }
            b.in_batch[node] = true;
            items.push((t, ev));
        }
        let mut b = self.batcher.take().expect("set above");
        // Carried to the next batch: all of them are no later than what is left of the carry.
        while let Some(e) = b.deferred.pop() {
            b.carry.push_front(e);
        }
        self.now = at;
        if self.guard.due(self.now) {
            self.guard.scan(self.now, &self.shells, &self.node_index, &mut self.checker);
        }
        self.metrics.events += items.len() as u64;
        let done = self.run_jobs(&b, items);
        for &(_, node, _) in &done {
            b.in_batch[node] = false;
        }
        self.batcher = Some(b);
        for (t, node, fx) in done {
            self.now = t;
            self.node_clock[node] = t;
            self.apply(node, fx.into_iter());
        }
        Ok(())
    }

    /// Runs the batch's events on the pool; returns each one's (time, node, effects), in order.
    fn run_jobs(&mut self, b: &Batcher, items: Vec<(u64, Ev)>) -> Vec<(u64, usize, Vec<Effect>)> {
        let shared = shared_of!(self);
        // Each batch node's state, borrowed apart from the others'.
        let mut slot = vec![usize::MAX; self.shells.len()];
        for (i, (_, ev)) in items.iter().enumerate() {
            slot[ev.node().unwrap_or(0)] = i;
        }
        let mut parts: Vec<Option<(&mut Shell, &mut NodeCpu, &mut HashSet<NodeId>)>> = (0..items.len()).map(|_| None).collect();
        let nodes = self.shells.iter_mut().zip(self.cost.nodes.iter_mut()).zip(self.seen_alerts.iter_mut());
        for (node, ((shell, cpu), seen)) in nodes.enumerate() {
            if slot[node] != usize::MAX {
                parts[slot[node]] = Some((shell, cpu, seen));
            }
        }
        let owners: Vec<usize> = items.iter().map(|(_, ev)| ev.node().unwrap_or(0)).collect();
        let jobs: Vec<Mutex<Job<'_>>> = items
            .into_iter()
            .zip(parts)
            .map(|((at, ev), part)| {
                let (shell, cpu, seen_alerts) = part.expect("every batch node's state was borrowed");
                Mutex::new(Job { at, node: ev.node().unwrap_or(0), ev: Some(ev), shell, cpu, seen_alerts, fx: Vec::new() })
            })
            .collect();
        let run = |job: &Mutex<Job<'_>>| {
            let mut j = job.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let j = &mut *j;
            let Some(ev) = j.ev.take() else { return };
            debug_assert!(j.at >= self.node_clock[j.node], "node {}'s time runs forward", j.node);
            let mut ctx = NodeCtx { node: j.node, now: j.at, shell: &mut *j.shell, cpu: &mut *j.cpu, host_free: &mut [], seen_alerts: &mut *j.seen_alerts, w: &shared, fx: Vec::new() };
            ctx.step(ev);
            j.fx = ctx.fx;
        };
        if jobs.len() < PARALLEL_MIN {
            jobs.iter().for_each(run);
        } else {
            // Node i belongs to thread i * N / nodes (contiguous ranges: neighbours in the
            // per-node arrays share cache lines), so its records mostly stay in one core's
            // cache and are freed by the thread that allocated them. A thread done with its
            // own range takes what is left of the others' (the same counters: no job runs
            // twice). This thread owns the first range, the pool's threads the others.
            let (threads, nodes) = (b.threads, b.in_batch.len());
            let mut ranges: Vec<Vec<usize>> = vec![Vec::new(); threads];
            for (i, &n) in owners.iter().enumerate() {
                ranges[n * threads / nodes].push(i);
            }
            let next: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            let work = |p: usize| {
                for q in (0..threads).map(|k| (p + k) % threads) {
                    loop {
                        let i = next[q].fetch_add(1, Ordering::Relaxed);
                        let Some(&job) = ranges[q].get(i) else { break };
                        run(&jobs[job]);
                    }
                }
            };
            b.pool.in_place_scope(|s| {
                for p in 1..threads {
                    let work = &work;
                    s.spawn(move |_| work(p));
                }
                work(0);
            });
        }
        jobs.into_iter()
            .map(|m| {
                let j = m.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
                (j.at, j.node, j.fx)
            })
            .collect()
    }

    /// The next event: the queue's earliest, or the batches' carried one if that is no later.
    pub(crate) fn next_event(&mut self) -> Option<(u64, Option<Ev>)> {
        if let Some(b) = &mut self.batcher {
            if let Some(&(t, _)) = b.carry.front() {
                if self.queue.peek_time().is_none_or(|q| t <= q) {
                    return b.carry.pop_front().map(|(t, ev)| (t, Some(ev)));
                }
            }
        }
        self.queue.pop()
    }
}

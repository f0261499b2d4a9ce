//! The host cost model: how long each node shard's CPU is busy, calibrated from real processes
//! (`calibrate`, `docs/simulator.md`). Every sign and verify costs `sign_us` / `verify_us`, every
//! byte sent or received `byte_ns` (QUIC, AEAD, syscalls), every store batch `batch_us` (a node
//! groups the persists of `batch_window_us` into one batch, as the real shell's group commit
//! does), and every open connection `conn_us_per_s` (keep-alives). With `host_cores` > 0 all
//! nodes share that many cores, as N processes on one machine do.
//!
//! Owns every node shard's CPU queue (when free, how long busy), the connection upkeep and
//! group-commit clocks and the shared host cores. Calls only the byte model of
//! `crate::network`.

use pqdag_core::Action;

use crate::network::action_bytes;
use crate::SimConfig;

// The calibrated CPU cost model (defaults of [`SimConfig`]), for one 2-vCPU AMD EPYC VM core.
// Sign / verify: the criterion benches (`cargo bench -p benches --bench crypto`). The rest: the
// least-squares fit of per-node CPU over real `bench` runs at 3, 10, 20 and 100 processes, after
// subtracting the signatures (`target/release/calibrate DIR...`, docs/simulator.md
// "Calibration").
/// CPU of one ML-DSA-87 signature, us.
pub const COST_SIGN_US: u64 = 122;
/// CPU of one ML-DSA-87 verification, us.
pub const COST_VERIFY_US: u64 = 62;
/// CPU per network byte sent or received, ns.
pub const COST_BYTE_NS: f64 = 8.6;
/// CPU per store batch (event-loop turn that persists), us.
pub const COST_BATCH_US: u64 = 434;
/// Group-commit window: the real shell's mean store write time (fsync) on the VM, us.
pub const COST_BATCH_WINDOW_US: u64 = 800;
/// CPU per open connection per second, us.
pub const COST_CONN_US_PER_S: u64 = 25;

/// One node's CPU state: what one event of that node charges (`NodeCpu::charge`), so the
/// nodes of a batch (`crate::batch`) are charged on their own threads.
pub(crate) struct NodeCpu {
    /// Per shard: when its core is next free (virtual us).
    free: Vec<u64>,
    /// Per shard: total busy time (us).
    busy: Vec<u64>,
    /// When this node's connection upkeep was last charged (virtual us).
    upkeep_at: u64,
    /// Until when this node's current store batch (group commit) takes more persists.
    batch_open_until: u64,
}

/// The calibrated costs of a run (read-only while it runs).
#[derive(Clone, Copy)]
pub(crate) struct CostParams {
    sign_us: u64,
    verify_us: u64,
    byte_ns: f64,
    batch_us: u64,
    batch_window_us: u64,
    conn_us_per_s: u64,
    node_count: usize,
}

/// The CPU of every node shard (and of the shared host, if any).
pub(crate) struct CpuModel {
    pub(crate) params: CostParams,
    pub(crate) nodes: Vec<NodeCpu>,
    /// With `host_cores` > 0: when each shared host core is next free (virtual us).
    pub(crate) host_free: Vec<u64>,
}

impl CpuModel {
    /// Idle CPUs for the nodes and shards of `cfg`.
    pub(crate) fn new(cfg: &SimConfig) -> Self {
        let shards = cfg.shards as usize;
        CpuModel {
            params: CostParams {
                sign_us: cfg.sign_us,
                verify_us: cfg.verify_us,
                byte_ns: cfg.byte_ns,
                batch_us: cfg.batch_us,
                batch_window_us: cfg.batch_window_us,
                conn_us_per_s: cfg.conn_us_per_s,
                node_count: cfg.nodes,
            },
            nodes: (0..cfg.nodes).map(|_| NodeCpu { free: vec![0; shards], busy: vec![0; shards], upkeep_at: 0, batch_open_until: 0 }).collect(),
            host_free: vec![0; cfg.host_cores],
        }
    }

    /// Busy time of the busiest shard of any node (us).
    pub(crate) fn busy_max(&self) -> u64 {
        self.nodes.iter().flat_map(|n| n.busy.iter().copied()).max().unwrap_or(0)
    }

    /// Busy time of every shard of every node (us).
    pub(crate) fn busy_total(&self) -> u64 {
        self.nodes.iter().flat_map(|n| n.busy.iter().copied()).sum::<u64>()
    }
}

impl CostParams {
    /// CPU of one signature verification, us.
    pub(crate) fn verify_us(&self) -> u64 {
        self.verify_us
    }

    /// The shell's cost of verifying and receiving an input of `bytes` (us).
    pub(crate) fn receive_us(&self, bytes: usize) -> u64 {
        self.verify_us + (bytes as f64 * self.byte_ns / 1000.0) as u64
    }
}

impl NodeCpu {
    /// When shard `shard` is next free (virtual us).
    pub(crate) fn free_at(&self, shard: usize) -> u64 {
        self.free[shard]
    }

    /// Charges one job of shard `shard` arriving at `now`: the input's cost `input_us`,
    /// connection upkeep, a signature per signed output, the bytes of `out`, a store batch if it
    /// persists outside the open batch; with shared host cores (`host_free` not empty) the job
    /// also waits for one of them. Returns when the job is done (its outputs leave then).
    pub(crate) fn charge(&mut self, p: &CostParams, host_free: &mut [u64], shard: usize, now: u64, input_us: u64, out: &[Action]) -> u64 {
        let mut start = now.max(self.free[shard]);
        let mut cpu = input_us + 2;
        // Connection upkeep accrues with time; the next job of the node pays it.
        if p.conn_us_per_s > 0 && now > self.upkeep_at {
            let conns = (p.node_count - 1) as u64;
            cpu += (now - self.upkeep_at) * conns * p.conn_us_per_s / 1_000_000;
            self.upkeep_at = now;
        }
        let mut bytes = 0usize;
        let mut persists = false;
        for a in out {
            cpu += match a {
                Action::SendQuery { .. } | Action::SendResponse { .. } | Action::Created { .. } => p.sign_us,
                Action::Alert { .. } => p.sign_us,
                _ => 0,
            };
            persists |= matches!(a, Action::Persist { .. });
            bytes += action_bytes(a, p.node_count);
        }
        cpu += (bytes as f64 * p.byte_ns / 1000.0) as u64;
        if persists && start >= self.batch_open_until {
            // A new store batch; persists of the next window join it (group commit).
            cpu += p.batch_us;
            self.batch_open_until = start + p.batch_window_us;
        }
        if !host_free.is_empty() {
            // One machine: the job also needs one of its shared cores (earliest free).
            let (h, free) = host_free.iter().copied().enumerate().min_by_key(|&(_, f)| f).unwrap_or((0, 0));
            start = start.max(free);
            host_free[h] = start + cpu;
        }
        let done = start + cpu;
        self.free[shard] = done;
        self.busy[shard] += cpu;
        done
    }
}

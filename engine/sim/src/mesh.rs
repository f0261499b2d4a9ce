//! The cross-shard mesh of a simulated node. In the engine a node's shards are threads joined
//! by bounded channels: a shard's message to another shard arrives later, in order per
//! channel, and is lost with the process when the node crashes. Delivered at once (as the
//! simulator did before), no vote could ever be computed from a remote conflict set's stale
//! preference, and the window in which a node votes Yes on two members of one set at once
//! (one per shard, issue 14) could not be found. Owns the delay RNG and the per-channel clock;
//! calls nothing.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use pqdag_core::{IdHashMap as HashMap};

/// Default most delay of a cross-shard message (us): a cross-thread wake-up on an idle machine
/// is tens of microseconds, a loaded shard's turn a millisecond or more.
pub const MESH_DELAY_MAX_US: u64 = 1_000;

/// Delays of cross-shard messages.
pub(crate) struct Mesh {
    max_delay_us: u64,
    rng: ChaCha8Rng,
    /// (node, from shard, to shard) -> arrival time of the channel's last message.
    last: HashMap<(usize, u32, u32), u64>,
}

impl Mesh {
    /// Delays uniform in 0..=`max_delay_us`, drawn from their own stream of `seed` (the other
    /// draws of a run are unchanged by it).
    pub(crate) fn new(seed: u64, max_delay_us: u64) -> Self {
        Mesh { max_delay_us, rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_7368_0000_0000), last: HashMap::default() }
    }

    /// Whether messages between shards take a delay (else they arrive at once, in the job).
    pub(crate) fn delays(&self) -> bool {
        self.max_delay_us > 0
    }

    /// When a message sent at `now` from shard `from` to shard `to` of node `node` arrives:
    /// never before the channel's previous message (FIFO). `None`: at once (no delay set).
    pub(crate) fn arrival(&mut self, now: u64, node: usize, from: u32, to: u32) -> Option<u64> {
        if self.max_delay_us == 0 {
            return None;
        }
        let at = now + self.rng.random_range(0..=self.max_delay_us);
        let last = self.last.entry((node, from, to)).or_insert(0);
        *last = (*last).max(at);
        Some(*last)
    }
}

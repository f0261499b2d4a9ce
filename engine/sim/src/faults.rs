//! Environmental faults: crashes (which node goes down when, and when it comes back) and
//! partitions (which groups cannot talk, when). Owns the fault plan of a run; calls nothing.
//! What a crash and a restart do to a node's state is the shell's job (`crate::shell`); which
//! messages a partition drops is decided here and applied by `crate::network`.

/// A partition: groups of node indices that cannot talk to each other in [start, end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Group of every node (nodes not listed are group 0).
    pub groups: Vec<Vec<usize>>,
    /// Start, virtual microseconds.
    pub start_us: u64,
    /// Heal time.
    pub end_us: u64,
}

impl Partition {
    /// Parses `0-2|3-5@START-END` (seconds; ranges or comma lists). Without `@`, the partition
    /// spans the second quarter to the half of the run.
    pub fn parse(spec: &str, duration_s: f64) -> Result<Self, String> {
        let (groups_s, window) = match spec.split_once('@') {
            Some((g, w)) => (g, Some(w)),
            None => (spec, None),
        };
        let mut groups = Vec::new();
        for g in groups_s.split('|') {
            let mut nodes = Vec::new();
            for part in g.split(',') {
                let part = part.trim();
                if let Some((a, b)) = part.split_once('-') {
                    let a: usize = a.parse().map_err(|e| format!("{part}: {e}"))?;
                    let b: usize = b.parse().map_err(|e| format!("{part}: {e}"))?;
                    nodes.extend(a..=b);
                } else if !part.is_empty() {
                    nodes.push(part.parse().map_err(|e| format!("{part}: {e}"))?);
                }
            }
            groups.push(nodes);
        }
        let (s, e) = match window {
            Some(w) => {
                let (a, b) = w.split_once('-').ok_or("window is START-END")?;
                (a.parse::<f64>().map_err(|e| e.to_string())?, b.parse::<f64>().map_err(|e| e.to_string())?)
            }
            None => (duration_s / 4.0, duration_s / 2.0),
        };
        Ok(Partition { groups, start_us: (s * 1e6) as u64, end_us: (e * 1e6) as u64 })
    }

    fn group_of(&self, node: usize) -> usize {
        self.groups.iter().position(|g| g.contains(&node)).map(|g| g + 1).unwrap_or(0)
    }
}

/// A crash: node `node` goes down at `at_us` and restarts at `back_us` (virtual us).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crash {
    /// The node.
    pub(crate) node: usize,
    /// When it goes down.
    pub(crate) at_us: u64,
    /// When it restarts from its storage.
    pub(crate) back_us: u64,
}

/// The fault plan of a run.
pub(crate) struct Faults {
    partition: Option<Partition>,
    crash: Option<Crash>,
}

impl Faults {
    /// The plan: an optional partition and an optional crash `(node, at, back)`.
    pub(crate) fn new(partition: Option<Partition>, crash: Option<(usize, u64, u64)>) -> Self {
        Faults { partition, crash: crash.map(|(node, at_us, back_us)| Crash { node, at_us, back_us }) }
    }

    /// The planned crash, if any.
    pub(crate) fn crash(&self) -> Option<Crash> {
        self.crash
    }

    /// Whether node `node` keeps storage to restart from (only the node that will crash).
    pub(crate) fn keeps_storage(&self, node: usize) -> bool {
        self.crash.is_some_and(|c| c.node == node)
    }

    /// Whether the run has a partition at all.
    pub(crate) fn has_partition(&self) -> bool {
        self.partition.is_some()
    }

    /// When the partition heals, if there is one.
    pub(crate) fn heal_at(&self) -> Option<u64> {
        self.partition.as_ref().map(|p| p.end_us)
    }

    /// Whether `a` and `b` are on different sides of a partition at `now`.
    pub(crate) fn partitioned(&self, a: usize, b: usize, now: u64) -> bool {
        match &self.partition {
            Some(p) if now >= p.start_us && now < p.end_us => p.group_of(a) != p.group_of(b),
            _ => false,
        }
    }
}

//! `sim --census-every-ms`: what the run holds, summed over every core (`Core::census`) and the
//! simulator's own tables, printed to stderr as the virtual time passes. Finds the structure
//! that grows with the history when the RSS keeps rising (a heap profiler slows a 1000-node
//! run too much to use).

use std::collections::BTreeMap;

use crate::Sim;

impl Sim {
    /// One stderr line per collection: entries and slots summed over all cores.
    pub(crate) fn print_census(&self) {
        let mut sums: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
        for shell in &self.shells {
            for core in shell.cores() {
                for l in core.census() {
                    let e = sums.entry(l.name).or_default();
                    e.0 += l.len;
                    e.1 += l.capacity;
                }
            }
        }
        sums.insert("sim.queue", self.queue.sizes());
        sums.insert("sim.archive", (self.archive.len(), self.archive.len()));
        let t = self.now as f64 / 1e6;
        let line: Vec<String> = sums.iter().map(|(k, (n, c))| format!("{k}={n}/{c}")).collect();
        eprintln!("census t={t:.1}s {}", line.join(" "));
    }
}

//! Timers: what `tick` runs after every event (retention, poll deadlines, frontier, fetch
//! retries, the next poll) and when the shell must call again (`poll_timeout`). Owns no state;
//! calls `retention`, `polls`, `sync` and `pending`.

use crate::core::Core;
use crate::types::Signer;

impl<S: Signer> Core<S> {
    /// When the shell must call `handle(t, Event::Timer)` next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.sync.next_frontier_at;
        if let Some(b) = self.batch_close_at() {
            t = t.min(b);
        }
        if !self.pending.waiting.is_empty() {
            t = t.min(self.sync.next_fetch_retry_at.max(self.now + 1));
        }
        if !self.dag.processing.is_empty() {
            let poll_at = if self.polls.open.len() < self.polls.window {
                // The next aged vertex may only become pollable later.
                let first_age = self.dag.processing.values().next().map(|e| e.arrival_us + self.params.poll_min_age_us).unwrap_or(0);
                // A node poll is also for the other shards' offers.
                if self.polls.has_parts() { self.polls.next_poll_at } else { self.polls.next_poll_at.max(first_age) }
            } else {
                u64::MAX
            };
            t = t.min(poll_at);
        } else if self.polls.has_parts() && self.polls.open.len() < self.polls.window {
            // A node poll: this shard's turn comes for the other shards' offers too.
            t = t.min(self.polls.next_poll_at);
        }
        if self.joint_polls() && (!self.dag.processing.is_empty() || !self.polls.offered.is_empty() || !self.polls.frontier.is_empty()) {
            // Offers (`node_polls`); a shard that offered ids withdraws them once it has
            // nothing left.
            t = t.min(self.polls.next_offer_at);
        }
        if let Some(g) = self.next_gather_deadline() {
            t = t.min(g);
        }
        if self.conflicts.contested > 0 {
            t = t.min(self.conflicts.next_unblock_at);
        }
        if self.cross.scan_due {
            t = t.min(self.cross.next_scan_at);
        }
        for p in self.polls.open.values() {
            t = t.min(p.deadline_us);
            if !p.reasked && p.alpha_at.is_none() {
                t = t.min(p.sent_us.saturating_add(self.params.query_timeout_us / 4));
            }
            if let Some(a) = p.alpha_at {
                t = t.min(a + (a - p.sent_us).max(1_000));
            }
        }
        // Deadlines grow with the query id (constant timeout), so the first closed poll is due first.
        if let Some(c) = self.polls.closed.values().next().map(|c| c.deadline_us) {
            t = t.min(c);
        }
        Some(t.max(self.now))
    }

    pub(crate) fn tick(&mut self, now: u64) {
        self.retention.strip_old_finals(&mut self.dag, self.params.strip_final_after_us, self.params.strip_final_bytes_max, now);
        self.forget_old_finals(now);
        self.forget_old_rejects(now);
        self.forget_remote_facts(now);
        self.sweep_fetch_state(now);
        self.forget_cross_sets(now);
        self.dag.forgotten.evict(self.params.archive_after_us, self.params.archive_entries_max, now);
        self.shrink_sparse_maps(now);
        self.reask_silent(now);
        if !self.polls.gathers.is_empty() {
            self.expire_gathers(now);
        }
        self.unblock_preferences(now);
        // Close polls that timed out, or whose answers decided the round a grace period ago.
        let due: Vec<u64> = self.polls.open.iter().filter(|(_, p)| p.due(now)).map(|(q, _)| *q).collect();
        for q in due {
            self.close_poll(now, q);
        }
        let expired: Vec<u64> = self.polls.closed.iter().take_while(|(_, c)| now >= c.deadline_us).map(|(q, _)| *q).collect();
        for q in expired {
            self.expire_closed(q);
        }
        if now >= self.sync.next_frontier_at {
            self.send_frontier(now);
        }
        if !self.pending.waiting.is_empty() && now >= self.sync.next_fetch_retry_at {
            self.retry_fetches(now);
        }
        self.requeue_reissued(now);
        if self.batch_due(now) {
            self.close_batch(now);
        }
        self.launch_poll(now);
        self.scan_watchers(now);
        self.pending.compact();
    }
}

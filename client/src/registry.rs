//! Decisions the nodes pushed, shared by every connection of one client: waiters of `wait` and a
//! bounded cache (an event may arrive before its submission's reply). Subscriptions read the
//! nodes' decision feed instead ([`crate::feed`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use pqdag_wire::{ClientStatus, FinalityEvent, VertexId};
use tokio::sync::oneshot;

use crate::proto::to_status;
use crate::types::{Decision, Status};

/// Decisions remembered for a later `wait` (oldest forgotten first).
pub(crate) const DECIDED_CACHE_MAX: usize = 1 << 16;

#[derive(Default)]
struct Inner {
    decided: HashMap<VertexId, Decision>,
    order: VecDeque<VertexId>,
    waiters: HashMap<VertexId, Vec<oneshot::Sender<Decision>>>,
}

/// See the module doc.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

/// Either a decision already known or a receiver for it.
pub(crate) enum Waiter {
    Known(Decision),
    Pending(oneshot::Receiver<Decision>),
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A decision from `node`'s event stream.
    pub(crate) fn record_event(&self, node: &str, ev: FinalityEvent) {
        let Status::Decided(decision) = to_status(ev.status) else {
            tracing::warn!(%node, id = %ev.id, "event without a decision: ignored");
            return;
        };
        self.lock().remember(ev.id, decision);
    }

    /// A decision learned by polling (not an event: subscribers do not see it).
    pub(crate) fn record_polled(&self, id: VertexId, s: ClientStatus) {
        if let Status::Decided(d) = to_status(s) {
            self.lock().remember(id, d);
        }
    }

    pub(crate) fn waiter(&self, id: VertexId) -> Waiter {
        let mut g = self.lock();
        if let Some(d) = g.decided.get(&id) {
            return Waiter::Known(*d);
        }
        let (tx, rx) = oneshot::channel();
        let w = g.waiters.entry(id).or_default();
        w.retain(|t| !t.is_closed());
        w.push(tx);
        Waiter::Pending(rx)
    }

    /// Drops the waiters of `id` that gave up.
    pub(crate) fn forget_waiter(&self, id: &VertexId) {
        let mut g = self.lock();
        if let Some(w) = g.waiters.get_mut(id) {
            w.retain(|t| !t.is_closed());
            if w.is_empty() {
                g.waiters.remove(id);
            }
        }
    }
}

impl Inner {
    fn remember(&mut self, id: VertexId, d: Decision) {
        if let Some(ws) = self.waiters.remove(&id) {
            for w in ws {
                let _ = w.send(d);
            }
        }
        let prev = self.decided.insert(id, d);
        // An event (with a position) replaces a polled decision; the order is kept once.
        if prev.is_none() {
            self.order.push_back(id);
            while self.order.len() > DECIDED_CACHE_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.decided.remove(&old);
                }
            }
        }
    }
}

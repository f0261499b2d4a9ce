//! Decisions the nodes pushed, shared by every connection of one client: waiters of `wait` and a
//! bounded cache (an event may arrive before its submission's reply). Subscriptions read the
//! nodes' decision feed instead ([`crate::feed`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use pqdag_wire::{FinalityEvent, TxId, VertexId};
use tokio::sync::oneshot;

use crate::proto::to_status;
use crate::types::{Decision, Status};

/// Decisions remembered for a later `wait` (oldest forgotten first).
pub(crate) const DECIDED_CACHE_MAX: usize = 1 << 16;

#[derive(Default)]
struct Inner {
    decided: HashMap<TxId, Decision>,
    order: VecDeque<TxId>,
    waiters: HashMap<TxId, Vec<oneshot::Sender<Decision>>>,
    /// The vertex now carrying an undecided transaction, when a re-issue moved it (bounded
    /// like `decided`: entries leave on the decision or with the oldest).
    moved: HashMap<TxId, VertexId>,
    moved_order: VecDeque<TxId>,
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

    /// An event from `node`'s event stream: a decision, or a re-issue into another vertex.
    pub(crate) fn record_event(&self, node: &str, ev: FinalityEvent) {
        match to_status(ev.status) {
            Status::Decided(decision) => self.lock().remember(ev.tx, decision),
            Status::Processing => {
                tracing::debug!(%node, tx = %ev.tx, vertex = %ev.id, "transaction re-issued");
                let mut g = self.lock();
                if g.moved.insert(ev.tx, ev.id).is_none() {
                    g.moved_order.push_back(ev.tx);
                    while g.moved_order.len() > DECIDED_CACHE_MAX {
                        if let Some(old) = g.moved_order.pop_front() {
                            g.moved.remove(&old);
                        }
                    }
                }
            }
            Status::Unknown => tracing::warn!(%node, tx = %ev.tx, "event without a status: ignored"),
        }
    }

    /// The vertex carrying `tx` now: `submitted` unless an event said it moved.
    pub(crate) fn vertex_of(&self, tx: &TxId, submitted: VertexId) -> VertexId {
        self.lock().moved.get(tx).copied().unwrap_or(submitted)
    }

    pub(crate) fn waiter(&self, id: TxId) -> Waiter {
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
    pub(crate) fn forget_waiter(&self, id: &TxId) {
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
    fn remember(&mut self, id: TxId, d: Decision) {
        self.moved.remove(&id);
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

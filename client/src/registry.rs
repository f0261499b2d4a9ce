//! Decisions the nodes pushed, shared by every connection of one client: waiters of `wait`, a
//! bounded cache (an event may arrive before its submission's reply), and subscribers.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use pqdag_wire::{ClientStatus, FinalityEvent, VertexId};
use tokio::sync::{mpsc, oneshot};

use crate::proto::to_status;
use crate::types::{Decision, DecisionEvent, Status};
use crate::ClientError;

/// Decisions remembered for a later `wait` (oldest forgotten first).
pub(crate) const DECIDED_CACHE_MAX: usize = 1 << 16;
/// Events buffered per subscriber before it counts as lagging.
pub(crate) const SUBSCRIPTION_BUFFER_MAX: usize = 4096;

#[derive(Default)]
struct Inner {
    decided: HashMap<VertexId, Decision>,
    order: VecDeque<VertexId>,
    waiters: HashMap<VertexId, Vec<oneshot::Sender<Decision>>>,
    subscribers: Vec<(mpsc::Sender<DecisionEvent>, Arc<AtomicBool>)>,
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
        let mut g = self.lock();
        g.remember(ev.id, decision);
        let out = DecisionEvent { id: ev.id, decision, latency_us: ev.latency_us, node: node.to_string(), cursor: None };
        g.subscribers.retain(|(tx, lagged)| match tx.try_send(out.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                lagged.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
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

    pub(crate) fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER_MAX);
        let lagged = Arc::new(AtomicBool::new(false));
        self.lock().subscribers.push((tx, lagged.clone()));
        Subscription { rx, lagged, done: false }
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

/// A stream of the decisions nodes push to this client (see [`crate::Client::subscribe`] for
/// what today's nodes send). Ends after yielding [`ClientError::Lagged`] if the consumer fell
/// [`SUBSCRIPTION_BUFFER_MAX`] events behind. Use it as a `futures_core::Stream`, or call
/// [`Subscription::next`].
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<DecisionEvent>,
    lagged: Arc<AtomicBool>,
    done: bool,
}

impl Subscription {
    /// The next event; `None` once the client is dropped.
    pub async fn next(&mut self) -> Option<Result<DecisionEvent, ClientError>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<DecisionEvent, ClientError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(e)) => Poll::Ready(Some(Ok(e))),
            Poll::Ready(None) => {
                self.done = true;
                if self.lagged.load(Ordering::Acquire) {
                    Poll::Ready(Some(Err(ClientError::Lagged)))
                } else {
                    Poll::Ready(None)
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Result<DecisionEvent, ClientError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

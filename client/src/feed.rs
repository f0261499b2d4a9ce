//! Subscriptions: a task that pulls one node's decision feed (`Feed` requests, one bounded batch
//! at a time) and hands the entries to a [`Subscription`] through a small bounded channel, so
//! the node is asked for more only as fast as the application consumes. A failure of the node
//! (connection lost, timeout, restart, not ready) is retried on the same node from the last
//! cursor handed out: the feed of another node is in another order, so moving there would
//! break "no gap, no duplicate".

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pqdag_wire::{ClientErrorCode, ClientReply, ClientStatus, FeedEntry};
use tokio::sync::mpsc;

use crate::types::{Cursor, DecidedTx, Decision, DecisionEvent};
use crate::{Client, ClientError};

/// Events buffered between the feed task and the consumer.
const SUBSCRIPTION_BUFFER: usize = 256;
/// Longest pause between retries while the node is unreachable.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A stream of one node's decisions (see [`crate::Client::subscribe`]). Use it as a
/// `futures_core::Stream`, or call [`Subscription::next`]. Ends (after yielding the error) only
/// on an error retrying cannot fix, such as a cursor the node refuses. Dropping it stops the
/// feed task.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Result<DecisionEvent, ClientError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// The next event; `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Result<DecisionEvent, ClientError>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for Subscription {
    type Item = Result<DecisionEvent, ClientError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

/// Starts the feed task of node `node` after `from` (`None`: the start of its feed).
pub(crate) fn spawn(client: Client, node: usize, from: Option<Cursor>) -> Subscription {
    let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
    let task = tokio::spawn(run(client, node, from.map(|c| c.as_bytes().to_vec()).unwrap_or_default(), tx));
    Subscription { rx, task }
}

async fn run(client: Client, node: usize, mut cursor: Vec<u8>, tx: mpsc::Sender<Result<DecisionEvent, ClientError>>) {
    let name = client.nodes()[node].name.clone();
    let opts = client.options().clone();
    let mut backoff = opts.overload_backoff;
    loop {
        let pause = match client.feed_request(node, &cursor, opts.feed_batch).await {
            Ok(ClientReply::FeedBatch { entries, next_cursor, .. }) => {
                backoff = opts.overload_backoff;
                let empty = entries.is_empty();
                for e in entries {
                    let ev = event(&name, e);
                    let next = ev.cursor.as_bytes().to_vec();
                    if tx.send(Ok(ev)).await.is_err() {
                        return; // the subscription was dropped
                    }
                    cursor = next;
                }
                if !next_cursor.is_empty() {
                    cursor = next_cursor;
                }
                if empty {
                    opts.feed_poll_interval
                } else {
                    Duration::ZERO
                }
            }
            Ok(ClientReply::Error { code: ClientErrorCode::Pruned, message, .. }) => {
                let _ = tx.send(Err(ClientError::Pruned { node: name.clone(), message })).await;
                return;
            }
            Ok(ClientReply::Error { code: ClientErrorCode::Malformed, message, .. }) => {
                let _ = tx.send(Err(ClientError::Malformed(format!("{name} refused the feed request: {message}")))).await;
                return;
            }
            Ok(ClientReply::Error { message, .. }) => {
                tracing::debug!(node = %name, "feed refused, retrying: {message}");
                next_backoff(&mut backoff)
            }
            Ok(other) => {
                let _ = tx.send(Err(ClientError::Malformed(format!("{name}: unexpected reply to a feed request: {other:?}")))).await;
                return;
            }
            Err(e @ ClientError::IdentityMismatch { .. }) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Err(e) => {
                tracing::debug!(node = %name, "feed request failed, retrying the same node: {e}");
                next_backoff(&mut backoff)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

fn next_backoff(backoff: &mut Duration) -> Duration {
    let now = *backoff;
    *backoff = (*backoff * 2).min(RETRY_BACKOFF_MAX);
    now
}

fn event(node: &str, e: FeedEntry) -> DecisionEvent {
    let decision = match e.decision {
        ClientStatus::Final { shard, position } => Decision::Final { shard, position },
        _ => Decision::Rejected,
    };
    DecisionEvent {
        id: e.id,
        decision,
        txs: e.txs.into_iter().map(|t| DecidedTx { tx: t.tx, payload: t.payload, conflict_keys: t.conflict_keys, client: t.client }).collect(),
        parents: e.parents,
        creator: e.creator.0,
        node: node.to_string(),
        cursor: Cursor::from_bytes(e.cursor),
    }
}

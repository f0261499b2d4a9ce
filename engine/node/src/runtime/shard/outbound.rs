//! Requests this shard makes of peers (queries, vertex fetches, history-sync walks): owns the
//! reply mailbox the awaiting tasks push into and the count of replies still outstanding.
//! Calls only the transport (in spawned tasks) and the query-RTT metric.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqdag_transport::{PeerId, ShardTransport, TransportError};

use super::super::mailbox::Mailbox;
use super::super::metrics::Metrics;

/// Most outstanding query/fetch replies awaited; beyond it new requests are answered Overloaded.
pub const PENDING_REPLIES_MAX: usize = 16_384;

/// Replies of requests this shard made, pushed by the tasks awaiting them.
pub(super) enum Reply {
    /// A history-sync reply.
    Sync { peer: PeerId, result: Result<Vec<u8>, TransportError> },
    /// A query's response, with when the query left.
    Response { peer: PeerId, sent: Instant, result: Result<Vec<u8>, TransportError> },
    /// A vertex fetch's reply.
    Vertices { peer: PeerId, result: Result<Vec<u8>, TransportError> },
}

/// The shard's outstanding requests.
pub(super) struct Outbound {
    transport: Rc<ShardTransport>,
    mailbox: Mailbox<Reply>,
    metrics: Arc<Metrics>,
    outstanding: usize,
}

impl Outbound {
    /// No request outstanding yet.
    pub(super) fn new(transport: Rc<ShardTransport>, metrics: Arc<Metrics>) -> Self {
        Self { transport, mailbox: Mailbox::new(), metrics, outstanding: 0 }
    }

    /// The mailbox replies arrive in (the loop drains and awaits it).
    pub(super) fn mailbox(&self) -> &Mailbox<Reply> {
        &self.mailbox
    }

    /// Whether [`PENDING_REPLIES_MAX`] replies are awaited already.
    pub(super) fn is_full(&self) -> bool {
        self.outstanding >= PENDING_REPLIES_MAX
    }

    /// Replies awaited (queries, fetches and sync requests sent, not yet answered or timed out).
    pub(super) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// A reply arrived: one fewer outstanding, and a query's round trip is measured.
    pub(super) fn settle(&mut self, reply: &Reply) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if let Reply::Response { sent, result: Ok(_), .. } = reply {
            self.metrics.query_rtt.observe(sent.elapsed().as_secs_f64());
        }
    }

    /// Sends a poll query to `peer`; its response comes back as [`Reply::Response`].
    pub(super) fn query(&mut self, peer: PeerId, bytes: Vec<u8>, timeout: Duration) {
        self.outstanding += 1;
        let (t, mb) = (self.transport.clone(), self.mailbox.clone());
        glommio::spawn_local(async move {
            let sent = Instant::now();
            let result = t.send_query(peer, bytes, timeout).await;
            mb.push(Reply::Response { peer, sent, result });
        })
        .detach();
    }

    /// Asks `peer` for vertices; its answer comes back as [`Reply::Vertices`].
    pub(super) fn fetch(&mut self, peer: PeerId, bytes: Vec<u8>, timeout: Duration) {
        self.outstanding += 1;
        let (t, mb) = (self.transport.clone(), self.mailbox.clone());
        glommio::spawn_local(async move {
            let result = t.request_vertices(peer, bytes, timeout).await;
            mb.push(Reply::Vertices { peer, result });
        })
        .detach();
    }

    /// Asks `peer` for a stretch of its finality log; the answer comes back as [`Reply::Sync`].
    pub(super) fn sync(&mut self, peer: PeerId, bytes: Vec<u8>, timeout: Duration) {
        self.outstanding += 1;
        let (t, mb) = (self.transport.clone(), self.mailbox.clone());
        glommio::spawn_local(async move {
            let result = t.request_vertices(peer, bytes, timeout).await;
            mb.push(Reply::Sync { peer, result });
        })
        .detach();
    }
}

//! The async client: connections to the cluster's nodes, failover, and the API calls.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pqdag_crypto::Keypair;
use pqdag_wire::limits::{CONFLICT_KEYS_MAX, PAYLOAD_BYTES_MAX};
use pqdag_wire::{ClientErrorCode, ClientReply, ClientRequest, CLIENT_STATUS_IDS_MAX};
use tokio::sync::Mutex;

use crate::cluster::{load_cluster_file, NodeTarget};
use crate::conn::{request, NodeConn};
use crate::proto::to_status;
use crate::feed::Subscription;
use crate::registry::{Registry, Waiter};
use crate::types::{ConflictKey, Cursor, Decision, Receipt, Status, VertexId};
use crate::ClientError;

/// The client key, timeouts and retry policy. `Default` suits a LAN cluster (and, through
/// [`Client::from_cluster_file`], a testnet: its `client/client.key` is used when `key` is
/// `None`).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The ML-DSA-87 client identity proven to every node (the nodes' `client_keys` must list
    /// its public key). `None`: [`Client::from_cluster_file`] loads `client/client.key` beside
    /// the cluster file (what `engine testnet` writes); [`Client::connect`] fails.
    pub key: Option<Arc<Keypair>>,
    /// Index (in the node list) of the node tried first; the others follow round robin.
    pub preferred: usize,
    /// QUIC handshake plus identity proof, per node.
    pub connect_timeout: Duration,
    /// One request and its reply, per node.
    pub request_timeout: Duration,
    /// How long [`Client::wait`] waits for a decision.
    pub decision_timeout: Duration,
    /// How often [`Client::wait`] asks `Status` while no pushed event arrived.
    pub status_poll_interval: Duration,
    /// Back-off before an `Overloaded` refusal is retried on the next node (the nodes send no
    /// retry hint today; this is the hint [`ClientError::Overloaded`] reports).
    pub overload_backoff: Duration,
    /// How long a request is retried while every node answers `NotReady` (catching up).
    pub ready_timeout: Duration,
    /// Pause of a subscription whose node had no new decision.
    pub feed_poll_interval: Duration,
    /// Entries a subscription asks per feed request (the node caps it at 256).
    pub feed_batch: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            key: None,
            preferred: 0,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            decision_timeout: Duration::from_secs(60),
            status_poll_interval: Duration::from_millis(500),
            overload_backoff: Duration::from_millis(200),
            ready_timeout: Duration::from_secs(30),
            feed_poll_interval: Duration::from_millis(100),
            feed_batch: 256,
        }
    }
}

impl ClientOptions {
    /// These options proving `key`.
    pub fn with_key(mut self, key: Arc<Keypair>) -> Self {
        self.key = Some(key);
        self
    }
}

/// A client of a pqdag cluster (cheap to clone: clones share connections and decisions).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inner.nodes.iter().map(|n| n.name.as_str()).collect();
        write!(f, "Client({names:?}, current {})", self.inner.current.load(Ordering::Relaxed))
    }
}

struct Inner {
    nodes: Vec<NodeTarget>,
    key: Arc<Keypair>,
    opts: ClientOptions,
    endpoint: quinn::Endpoint,
    conns: Vec<Mutex<Option<NodeConn>>>,
    /// The node requests go to first (moves on failure, sticks on success).
    current: AtomicUsize,
    registry: Arc<Registry>,
    next_tag: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"client done");
    }
}

/// What a reply became: accepted, or retry on the next node with this attempt's reason.
enum Outcome {
    Done(ClientReply),
    Next(ClientError),
}

impl Client {
    /// Connects to the cluster, proving `opts.key` (required here): to the preferred node, or
    /// the next one that answers. Fails with [`ClientError::NotAuthorized`] if a node does not
    /// accept the key, [`ClientError::IdentityMismatch`] if a node does not hold its configured
    /// key, and with
    /// [`ClientError::AllNodesUnavailable`] if none can be reached. Must run inside a Tokio
    /// runtime (with the `time` and `net` drivers enabled).
    pub async fn connect(nodes: Vec<NodeTarget>, opts: ClientOptions) -> Result<Client, ClientError> {
        if nodes.is_empty() {
            return Err(ClientError::Config("no nodes".into()));
        }
        let key = opts.key.clone().ok_or_else(|| ClientError::Config("no client key (ClientOptions::key; `engine keygen --client` makes one)".into()))?;
        let v6 = nodes.iter().all(|n| n.addr.is_ipv6());
        let bind: SocketAddr = if v6 { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() } else { (std::net::Ipv4Addr::UNSPECIFIED, 0).into() };
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(crate::tls::quic_client_config()?);
        let n = nodes.len();
        let client = Client {
            inner: Arc::new(Inner {
                conns: (0..n).map(|_| Mutex::new(None)).collect(),
                current: AtomicUsize::new(opts.preferred % n),
                nodes,
                key,
                opts,
                endpoint,
                registry: Arc::new(Registry::default()),
                next_tag: AtomicU64::new(1),
            }),
        };
        let mut attempts = Vec::new();
        for k in 0..n {
            let i = (client.inner.opts.preferred + k) % n;
            match client.connection(i).await {
                Ok(_) => {
                    client.inner.current.store(i, Ordering::Relaxed);
                    return Ok(client);
                }
                Err(e @ (ClientError::IdentityMismatch { .. } | ClientError::NotAuthorized { .. })) => return Err(e),
                Err(e) => attempts.push(format!("{}: {e}", client.inner.nodes[i].name)),
            }
        }
        Err(ClientError::AllNodesUnavailable { attempts })
    }

    /// [`Client::connect`] to the nodes of a `cluster.toml` (see [`crate::cluster`]); without
    /// `opts.key`, proves the testnet's `client/client.key` beside it.
    pub async fn from_cluster_file(path: &Path, mut opts: ClientOptions) -> Result<Client, ClientError> {
        if opts.key.is_none() {
            opts.key = Some(crate::identity::load_client_key(&crate::identity::testnet_client_key(path))?);
        }
        Self::connect(load_cluster_file(path)?, opts).await
    }

    /// The nodes, in the order failover walks them.
    pub fn nodes(&self) -> &[NodeTarget] {
        &self.inner.nodes
    }

    /// The node requests currently go to first.
    pub fn current_node(&self) -> &NodeTarget {
        &self.inner.nodes[self.inner.current.load(Ordering::Relaxed)]
    }

    /// Submits a payload spending `conflict_keys`; returns the transaction the node made of it
    /// and the vertex that carries it (the node batches submissions into vertices).
    ///
    /// A node that cannot be reached, times out, is not ready or is overloaded is skipped for
    /// the next one. A reply lost to a failure may hide a submission the node did accept: the
    /// retry on another node is then the same transaction in a second vertex (a
    /// [`ClientError::Conflict`] if the node already knows the first one's keys).
    pub async fn submit(&self, payload: Vec<u8>, conflict_keys: Vec<ConflictKey>) -> Result<Receipt, ClientError> {
        if payload.len() > PAYLOAD_BYTES_MAX || conflict_keys.len() > CONFLICT_KEYS_MAX {
            return Err(ClientError::Malformed(format!(
                "payload of {} bytes with {} conflict keys (at most {PAYLOAD_BYTES_MAX} bytes and {CONFLICT_KEYS_MAX} keys)",
                payload.len(),
                conflict_keys.len()
            )));
        }
        let tag = self.tag();
        let req = ClientRequest::Submit { tag, payload, conflict_keys };
        match self.call(&req, tag).await? {
            ClientReply::Submitted { tx, id, .. } => Ok(Receipt { tx, vertex: id }),
            other => Err(ClientError::Malformed(format!("unexpected reply to a submission: {other:?}"))),
        }
    }

    /// Waits until the transaction of `receipt` is decided: by the event the node it was
    /// submitted to pushes (following it when a re-issue moves it to a new vertex), or, if that
    /// does not come, by polling `Status` of its vertex every `status_poll_interval` on any node
    /// (a decision found that way reports position 0). Fails with [`ClientError::Timeout`]
    /// after `decision_timeout`.
    pub async fn wait(&self, receipt: Receipt) -> Result<Decision, ClientError> {
        let timeout = self.inner.opts.decision_timeout;
        let r = tokio::time::timeout(timeout, self.wait_inner(receipt)).await;
        self.inner.registry.forget_waiter(&receipt.tx);
        r.map_err(|_| ClientError::Timeout(timeout, format!("waiting for the decision of transaction {}", receipt.tx)))?
    }

    async fn wait_inner(&self, receipt: Receipt) -> Result<Decision, ClientError> {
        let tx = receipt.tx;
        let mut rx = match self.inner.registry.waiter(tx) {
            Waiter::Known(d) => return Ok(d),
            Waiter::Pending(rx) => rx,
        };
        let mut polled: Option<Decision> = None;
        loop {
            tokio::select! {
                d = &mut rx => return d.map_err(|_| ClientError::Io("client closed".into())),
                _ = tokio::time::sleep(self.inner.opts.status_poll_interval) => {}
            }
            // A polled decision is its vertex's: give the pushed event (with a position, or a
            // re-issue that moves a rejected vertex's innocent transaction) one more interval.
            if let Some(d) = polled {
                return Ok(d);
            }
            let vertex = self.inner.registry.vertex_of(&tx, receipt.vertex);
            match self.status(&[vertex]).await {
                Ok(s) => {
                    if let Some(Status::Decided(d)) = s.first() {
                        polled = Some(*d);
                    }
                }
                // Transient: keep trying until the deadline.
                Err(e) if e.fails_over() || matches!(e, ClientError::AllNodesUnavailable { .. }) => {
                    tracing::debug!(%tx, "status poll failed: {e}");
                }
                Err(e) => return Err(e),
            }
            if polled.is_some() && self.inner.registry.vertex_of(&tx, receipt.vertex) != vertex {
                polled = None;
            }
        }
    }

    /// [`Client::submit`], then [`Client::wait`].
    pub async fn submit_and_wait(&self, payload: Vec<u8>, conflict_keys: Vec<ConflictKey>) -> Result<(Receipt, Decision), ClientError> {
        let receipt = self.submit(payload, conflict_keys).await?;
        Ok((receipt, self.wait(receipt).await?))
    }

    /// The statuses of `ids` (in order) as the current node sees them.
    pub async fn status(&self, ids: &[VertexId]) -> Result<Vec<Status>, ClientError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CLIENT_STATUS_IDS_MAX) {
            let tag = self.tag();
            let req = ClientRequest::Status { tag, ids: chunk.to_vec() };
            match self.call(&req, tag).await? {
                ClientReply::Statuses { statuses, .. } if statuses.len() == chunk.len() => {
                    for s in statuses {
                        out.push(to_status(s));
                    }
                }
                other => return Err(ClientError::Malformed(format!("unexpected reply to a status request: {other:?}"))),
            }
        }
        Ok(out)
    }

    /// A stream of **every** decision (final or rejected) of one node's decision feed,
    /// resuming just after `from` (`None`: from the feed's first decision). Each event carries
    /// its [`Cursor`]. The feed is pulled from the node in bounded batches, at the consumer's
    /// pace (a stream not polled asks for nothing).
    ///
    /// The node: the one `from` belongs to, or the current node for `None`. A cursor belongs to
    /// its node (each node orders decisions its own way), so when that node fails the stream
    /// reconnects to **the same node** and resumes from the last cursor it yielded (no gap, no
    /// duplicate, across node restarts too), instead of moving to another node. Use
    /// [`Client::subscribe_node`] to pick the node.
    pub async fn subscribe(&self, from: Option<Cursor>) -> Result<Subscription, ClientError> {
        let node = match &from {
            Some(c) => self.node_of_cursor(c)?,
            None => self.inner.current.load(Ordering::Relaxed),
        };
        self.subscribe_node(node, from).await
    }

    /// [`Client::subscribe`] on node `node` (an index into [`Client::nodes`]).
    pub async fn subscribe_node(&self, node: usize, from: Option<Cursor>) -> Result<Subscription, ClientError> {
        if node >= self.inner.nodes.len() {
            return Err(ClientError::Config(format!("no node {node}")));
        }
        if let Some(c) = &from {
            if self.node_of_cursor(c)? != node {
                return Err(ClientError::Malformed(format!("the cursor belongs to another node than {}", self.inner.nodes[node].name)));
            }
        }
        Ok(crate::feed::spawn(self.clone(), node, from))
    }

    /// The node a cursor belongs to.
    fn node_of_cursor(&self, c: &Cursor) -> Result<usize, ClientError> {
        let prefix = c.node_prefix().ok_or_else(|| ClientError::Malformed("not a feed cursor".into()))?;
        self.inner
            .nodes
            .iter()
            .position(|n| n.public_key.node_id()[..8] == prefix)
            .ok_or_else(|| ClientError::Malformed("the cursor belongs to no node of this cluster".into()))
    }

    /// One `Feed` request to node `node` (no failover: a cursor is the node's own).
    pub(crate) async fn feed_request(&self, node: usize, from: &[u8], max: u32) -> Result<ClientReply, ClientError> {
        let tag = self.tag();
        let req = ClientRequest::Feed { tag, from: from.to_vec(), max };
        let name = &self.inner.nodes[node].name;
        let conn = self.connection(node).await?;
        match request(&conn, name, &req, self.inner.opts.request_timeout).await {
            Ok(reply) => Ok(reply),
            Err(e) => {
                if e.fails_over() {
                    self.drop_connection(node).await;
                }
                Err(e)
            }
        }
    }

    /// The options this client was made with.
    pub(crate) fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    fn tag(&self) -> u64 {
        self.inner.next_tag.fetch_add(1, Ordering::Relaxed)
    }

    /// The open connection to node `i`, (re)connecting if needed.
    async fn connection(&self, i: usize) -> Result<quinn::Connection, ClientError> {
        let mut slot = self.inner.conns[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(c.conn.clone());
        }
        let t = &self.inner.nodes[i];
        let c = NodeConn::connect(&self.inner.endpoint, t, &self.inner.key, self.inner.opts.connect_timeout, self.inner.registry.clone()).await?;
        let conn = c.conn.clone();
        *slot = Some(c);
        Ok(conn)
    }

    /// Drops node `i`'s connection (after a failure: the next use reconnects).
    async fn drop_connection(&self, i: usize) {
        self.inner.conns[i].lock().await.take();
    }

    /// Sends `req` to the current node, failing over round robin; see [`Client::submit`]. A
    /// round in which every node answered `NotReady` is tried again after `overload_backoff`,
    /// until `ready_timeout`.
    async fn call(&self, req: &ClientRequest, tag: u64) -> Result<ClientReply, ClientError> {
        let deadline = tokio::time::Instant::now() + self.inner.opts.ready_timeout;
        loop {
            match self.call_round(req, tag).await {
                Err(ClientError::AllNodesUnavailable { attempts }) if attempts.iter().all(|a| a.contains("not ready")) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.inner.opts.overload_backoff).await;
                }
                r => return r,
            }
        }
    }

    /// One round of [`Client::call`]: each node once.
    async fn call_round(&self, req: &ClientRequest, tag: u64) -> Result<ClientReply, ClientError> {
        let n = self.inner.nodes.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut attempts = Vec::new();
        let mut overloaded = None;
        for k in 0..n {
            let i = (start + k) % n;
            let name = &self.inner.nodes[i].name;
            if k > 0 {
                if let Some(ClientError::Overloaded { retry_after, .. }) = &overloaded {
                    tokio::time::sleep(*retry_after).await;
                }
            }
            let result = match self.connection(i).await {
                Ok(conn) => request(&conn, name, req, self.inner.opts.request_timeout).await,
                Err(e) => Err(e),
            };
            let outcome = match result {
                Ok(reply) => self.judge(name, reply, tag)?,
                Err(e @ ClientError::IdentityMismatch { .. }) => return Err(e),
                Err(e) if e.fails_over() => {
                    self.drop_connection(i).await;
                    Outcome::Next(e)
                }
                Err(e) => return Err(e),
            };
            match outcome {
                Outcome::Done(reply) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Ok(reply);
                }
                Outcome::Next(e) => {
                    tracing::debug!(node = %name, "failing over: {e}");
                    attempts.push(format!("{name}: {e}"));
                    let next = (i + 1) % n;
                    let _ = self.inner.current.compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
                    overloaded = matches!(e, ClientError::Overloaded { .. }).then_some(e);
                }
            }
        }
        // Overloaded everywhere (the last refusal says so): the caller should back off.
        match overloaded {
            Some(e) if attempts.iter().all(|a| a.contains("overloaded")) => Err(e),
            _ => Err(ClientError::AllNodesUnavailable { attempts }),
        }
    }

    /// Maps a node's reply: refusals become errors, retried elsewhere or not.
    fn judge(&self, node: &str, reply: ClientReply, tag: u64) -> Result<Outcome, ClientError> {
        let node = node.to_string();
        Ok(match reply {
            ClientReply::Error { code, message, .. } => match code {
                ClientErrorCode::Overloaded => Outcome::Next(ClientError::Overloaded {
                    node,
                    message,
                    retry_after: self.inner.opts.overload_backoff,
                }),
                ClientErrorCode::NotReady => Outcome::Next(ClientError::NotReady { node, message }),
                ClientErrorCode::Internal => Outcome::Next(ClientError::Server { node, message }),
                ClientErrorCode::Conflict => return Err(ClientError::Conflict { node, message }),
                ClientErrorCode::Malformed => return Err(ClientError::Malformed(format!("{node} refused the request: {message}"))),
                ClientErrorCode::Pruned => return Err(ClientError::Pruned { node, message }),
            },
            ClientReply::Submitted { tag: t, .. } | ClientReply::Statuses { tag: t, .. } | ClientReply::FeedBatch { tag: t, .. } if t != tag => {
                return Err(ClientError::Malformed(format!("{node} answered tag {t} to request {tag}")));
            }
            other => Outcome::Done(other),
        })
    }
}

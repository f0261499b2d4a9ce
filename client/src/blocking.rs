//! A blocking client for programs without an async runtime: [`Client`] owns a small Tokio
//! runtime (one worker thread, which keeps the QUIC connections alive between calls) and
//! blocks on the async [`crate::Client`]'s calls. Do not call it from inside a Tokio runtime.

use std::path::Path;

use crate::cluster::NodeTarget;
use crate::types::{ConflictKey, Cursor, Decision, DecisionEvent, Receipt, Status, VertexId};
use crate::{ClientError, ClientOptions};

/// The blocking twin of [`crate::Client`]; see its methods for the semantics.
#[derive(Debug)]
pub struct Client {
    // Field order: the async client (and its connections) drops before the runtime.
    inner: crate::Client,
    rt: tokio::runtime::Runtime,
}

fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("pqdag-client")
        .enable_all()
        .build()
        .map_err(ClientError::from)
}

impl Client {
    /// Connects to the cluster (see [`crate::Client::connect`]).
    pub fn connect(nodes: Vec<NodeTarget>, opts: ClientOptions) -> Result<Client, ClientError> {
        let rt = runtime()?;
        let inner = rt.block_on(crate::Client::connect(nodes, opts))?;
        Ok(Client { inner, rt })
    }

    /// Connects to the nodes of a `cluster.toml` (see [`crate::cluster`]).
    pub fn from_cluster_file(path: &Path, opts: ClientOptions) -> Result<Client, ClientError> {
        let rt = runtime()?;
        let inner = rt.block_on(crate::Client::from_cluster_file(path, opts))?;
        Ok(Client { inner, rt })
    }

    /// The async client inside (shares connections with this one).
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// See [`crate::Client::submit`].
    pub fn submit(&self, payload: Vec<u8>, conflict_keys: Vec<ConflictKey>) -> Result<Receipt, ClientError> {
        self.rt.block_on(self.inner.submit(payload, conflict_keys))
    }

    /// See [`crate::Client::wait`].
    pub fn wait(&self, receipt: Receipt) -> Result<Decision, ClientError> {
        self.rt.block_on(self.inner.wait(receipt))
    }

    /// See [`crate::Client::submit_and_wait`].
    pub fn submit_and_wait(&self, payload: Vec<u8>, conflict_keys: Vec<ConflictKey>) -> Result<(Receipt, Decision), ClientError> {
        self.rt.block_on(self.inner.submit_and_wait(payload, conflict_keys))
    }

    /// See [`crate::Client::status`].
    pub fn status(&self, ids: &[VertexId]) -> Result<Vec<Status>, ClientError> {
        self.rt.block_on(self.inner.status(ids))
    }

    /// See [`crate::Client::subscribe`]; the result is an iterator.
    pub fn subscribe(&self, from: Option<Cursor>) -> Result<Subscription<'_>, ClientError> {
        let inner = self.rt.block_on(self.inner.subscribe(from))?;
        Ok(Subscription { rt: &self.rt, inner })
    }

    /// See [`crate::Client::subscribe_node`]; the result is an iterator.
    pub fn subscribe_node(&self, node: usize, from: Option<Cursor>) -> Result<Subscription<'_>, ClientError> {
        let inner = self.rt.block_on(self.inner.subscribe_node(node, from))?;
        Ok(Subscription { rt: &self.rt, inner })
    }
}

/// A blocking iterator over a [`crate::Subscription`].
#[derive(Debug)]
pub struct Subscription<'a> {
    rt: &'a tokio::runtime::Runtime,
    inner: crate::Subscription,
}

impl Subscription<'_> {
    /// The next event, or `None` if none came within `timeout` (or the stream ended).
    pub fn next_timeout(&mut self, timeout: std::time::Duration) -> Option<Result<DecisionEvent, ClientError>> {
        self.rt.block_on(async { tokio::time::timeout(timeout, self.inner.next()).await.ok().flatten() })
    }
}

impl Iterator for Subscription<'_> {
    type Item = Result<DecisionEvent, ClientError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rt.block_on(self.inner.next())
    }
}

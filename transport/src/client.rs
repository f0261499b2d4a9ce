//! Client connector for the client endpoint (load generators, operators).
//!
//! Runs on a glommio executor like the node side (a load generator spawns one executor per
//! connection thread). It proves its own ML-DSA-87 client key first (the node accepts only the
//! keys its config lists), then authenticates the server by its ML-DSA-87 key through the same
//! exporter binding nodes use.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use pqdag_crypto::{Keypair, PublicKey};

use crate::driver::{reply_pair, Driver, DriverParams, Mode, Out, Shared};
use crate::tls::{self, KxLog};
use crate::{frame, recv_incoming, with_timeout, Incoming, TransportError, INCOMING_QUEUE_MAX, SEND_QUEUE_FRAMES_MAX};

/// A verified connection to one node's client endpoint.
pub struct ClientConnection {
    drv: Rc<Driver>,
    shared: Rc<Shared>,
    kx: Arc<KxLog>,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientConnection({})", self.drv.local_addr)
    }
}

impl ClientConnection {
    /// Connects to `server`, proves `key` and verifies the server holds `server_key`. Fails
    /// with [`TransportError::NotAuthorized`] if the node does not accept `key`, and with
    /// [`TransportError::IdentityMismatch`] if the server is not `server_key`.
    pub async fn connect(server: SocketAddr, server_key: PublicKey, key: Arc<Keypair>, timeout: Duration) -> Result<Self, TransportError> {
        let kx = Arc::new(KxLog::default());
        let provider = tls::hybrid_only_provider(kx.clone());
        let shared = Shared::new(INCOMING_QUEUE_MAX, 1);
        let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .map_err(|e: std::net::AddrParseError| TransportError::Config(e.to_string()))?;
        let drv = Driver::new(
            DriverParams {
                mode: Mode::ClientDialer,
                bind,
                server_cfg: None,
                client_cfg: Some(crate::quic_client_config(provider, None, tls::CLIENT_ALPN)?),
                keypair: key,
                client_keys: Vec::new(),
                peers: vec![(server_key, server)],
                frames_max: SEND_QUEUE_FRAMES_MAX,
            },
            shared.clone(),
        )?;
        drv.start();
        drv.dial_now(0);
        let d = drv.clone();
        with_timeout(timeout, async move { d.wait_verified(0).await }).await?;
        Ok(Self { drv, shared, kx })
    }

    /// Submits a payload; resolves with the node's acknowledgement frame.
    pub async fn submit(&self, bytes: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, TransportError> {
        if bytes.is_empty() || bytes.len() > frame::MAX_CLIENT_FRAME_BYTES {
            return Err(TransportError::FrameTooLarge { len: bytes.len(), max: frame::MAX_CLIENT_FRAME_BYTES });
        }
        let (tx, rx) = reply_pair();
        self.drv.enqueue(0, Out::Bi { ty: frame::STREAM_SUBMIT, frame: bytes, reply: tx })?;
        with_timeout(timeout, rx).await
    }

    /// The next event the node pushed, or `None` after `timeout`.
    pub async fn next_event(&self, timeout: Duration) -> Option<Vec<u8>> {
        let shared = self.shared.clone();
        let r = with_timeout(timeout, async move {
            loop {
                if let Incoming::Event { bytes } = recv_incoming(&shared).await {
                    return Ok(bytes);
                }
            }
        })
        .await;
        r.ok()
    }

    /// Key exchanges by group.
    pub fn kx_log(&self) -> &KxLog {
        &self.kx
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.drv.shutdown();
    }
}

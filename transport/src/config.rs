//! Configuration, peer ids and counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pqdag_crypto::{Keypair, PublicKey};

/// Largest number of frames queued for one peer before vertices are dropped (oldest first)
/// and queries are refused.
pub const SEND_QUEUE_FRAMES_MAX: usize = 8192;
/// Largest number of bytes queued for one peer (same policy as the frame cap).
pub const SEND_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Frames delivered to the shard but not yet taken; beyond this, new frames are dropped and
/// counted (a query then fails at the asker by reset, so nothing waits forever).
pub const INCOMING_QUEUE_MAX: usize = 65_536;
/// Bytes of frames delivered to the shard but not yet taken; beyond, new frames are dropped.
pub const INCOMING_BYTES_MAX: usize = 512 << 20;
/// Bytes of frames of one peer delivered but not yet taken (~13 000 typical 5 KB vertices: a
/// peer's share of two seconds of a 5000 vertices/s cluster); beyond, its new frames are
/// dropped, so a flooding peer cannot crowd the others out of the queue.
pub const INCOMING_PEER_BYTES_MAX: usize = 64 << 20;
/// Bytes of one peer's frames waiting for the shard at which the driver stops reading that
/// peer's streams (QUIC flow control then holds the peer back; what it already sent, at most
/// one connection window, [`CONNECTION_WINDOW_BYTES`], still fits under
/// [`INCOMING_PEER_BYTES_MAX`]). Reading resumes when the shard has taken it below again.
pub const INCOMING_PEER_PAUSE_BYTES: usize = INCOMING_PEER_BYTES_MAX - CONNECTION_WINDOW_BYTES as usize;
/// Bytes of vertex frames packed into one unidirectional stream.
pub const UNI_BATCH_BYTES_MAX: usize = 256 << 10;
/// Connections one endpoint holds at most (peers, duplicates being retired, clients).
pub const CONNECTIONS_MAX: usize = 1024;
/// Concurrent unidirectional streams a peer may open (vertex batches, events).
pub const UNI_STREAMS_MAX: u32 = 256;
/// Concurrent bidirectional streams a peer may open (outstanding queries and fetches).
pub const BI_STREAMS_MAX: u32 = 1024;
/// Bidirectional streams a connection may open before its identity proof verifies (they are
/// parked until then). Raised to [`BI_STREAMS_MAX`] on verification, unless the peer is
/// metered: a flooder that reconnected would otherwise get a fresh [`BI_STREAMS_MAX`] of stream
/// credit per handshake, which QUIC cannot take back, around its meter.
pub const PRE_AUTH_BI_STREAMS: u32 = 16;
/// Per-stream receive window: must exceed one maximal frame.
pub const STREAM_WINDOW_BYTES: u32 = 2 << 20;
/// Per-connection receive window.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// Per-connection receive window until the peer's ML-DSA proof verifies: an unauthenticated
/// connection can make us buffer at most this much (the proof itself is ~4.7 KiB).
pub const PRE_AUTH_WINDOW_BYTES: u32 = 64 << 10;
/// A connection silent this long is dead. Short, so consensus notices a lost peer quickly.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive interval: five keep-alives fit in one idle timeout, so a few lost packets never
/// close an idle but healthy connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Time a dialer has, from its handshake's completion, to receive the acceptor's proof (the
/// acceptor answers only after verifying ours: one verify and one signature on its side).
pub const IDENTITY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time an accepted connection has, from its first packet, to complete TLS and prove its
/// identity. Short: until then it holds a pre-auth slot (see [`PRE_AUTH_SHARED_MAX`]). An honest
/// dialer needs one or two round trips and one ML-DSA-87 signature.
pub const PRE_AUTH_TIMEOUT: Duration = Duration::from_secs(3);
/// Pre-auth slots reserved for each configured peer: taken by a connection whose (validated)
/// source address is that peer's configured address, so a flood from elsewhere cannot lock
/// the cluster out. Two: a reconnect may overlap a dying attempt.
pub const PRE_AUTH_RESERVED_PER_PEER: usize = 2;
/// Pre-auth slots shared by every other source (unknown addresses, clients, a peer whose own
/// reserved slots are busy). Beyond it new connections are refused (`pre_auth_full_refusals`).
pub const PRE_AUTH_SHARED_MAX: usize = 64;
/// Once this many shared slots are held, a new connection from an unvalidated address is sent a
/// stateless Retry first, so a flood from spoofed addresses holds no slot at all.
pub const PRE_AUTH_RETRY_ABOVE: usize = PRE_AUTH_SHARED_MAX / 2;
/// First re-dial delay after a failed or lost connection.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Re-dial delay cap.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a duplicate connection (both sides dialed at once) lingers before it is closed,
/// so frames already in flight on it still arrive.
pub const DUPLICATE_GRACE: Duration = Duration::from_secs(2);
/// Kernel socket buffer requested each way (SO_RCVBUF/SO_SNDBUF).
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;
/// UDP datagrams sent concurrently by the I/O loop.
pub const SENDS_IN_FLIGHT_MAX: usize = 32;
/// Most datagrams of one connection handed to the kernel in one `sendmsg` with generic
/// segmentation offload (`UDP_SEGMENT`): 32 x 1 452 bytes (quinn-proto's largest probed MTU)
/// stays under the 64 KiB a UDP send may carry. 1 where the kernel has no UDP GSO.
pub const GSO_SEGMENTS_MAX: usize = 32;

/// A peer: index into the configured peer list (the cluster file's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub usize);

/// A connected client of the client endpoint (unique per shard for the process lifetime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

/// Which client key a client connection proved: BLAKE3 of its ML-DSA-87 public key (the same
/// derivation as a node id). What per-client accounting (quotas, the feed) is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKeyId(pub [u8; 32]);

impl std::fmt::Display for ClientKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Its ML-DSA-87 key: the only thing that identifies it.
    pub public_key: PublicKey,
    /// Its base address; shard `s` listens on `port + s`.
    pub addr: SocketAddr,
}

/// Everything one shard's transport needs.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Our ML-DSA-87 identity (shared by the shards of this node).
    pub keypair: Arc<Keypair>,
    /// The cluster, in cluster-file order (may include ourselves; that entry is never dialed).
    pub peers: Vec<PeerConfig>,
    /// Our shard index: we bind `bind.port() + shard` and talk to the peers' same shard.
    pub shard: u16,
    /// Base bind address of the node endpoint.
    pub bind: SocketAddr,
    /// Base bind address of the client endpoint (`None`: no client endpoint). Loopback by default.
    pub client_bind: Option<SocketAddr>,
    /// ML-DSA-87 keys of the clients the client endpoint accepts; a client proving any other
    /// key is closed with [`crate::close_code::NOT_AUTHORIZED`] before anything it sent is read.
    pub client_keys: Vec<PublicKey>,
    /// Per-peer send queue cap in frames (see [`SEND_QUEUE_FRAMES_MAX`]).
    pub send_queue_frames_max: usize,
    /// Incoming queue cap (see [`INCOMING_QUEUE_MAX`]).
    pub incoming_queue_max: usize,
}

impl TransportConfig {
    /// A config with default caps, no client endpoint.
    pub fn new(keypair: Arc<Keypair>, peers: Vec<PeerConfig>, shard: u16, bind: SocketAddr) -> Self {
        Self {
            keypair,
            peers,
            shard,
            bind,
            client_bind: None,
            client_keys: Vec::new(),
            send_queue_frames_max: SEND_QUEUE_FRAMES_MAX,
            incoming_queue_max: INCOMING_QUEUE_MAX,
        }
    }
}

/// Adds `shard` to an address's port (shard `s` of a node listens on `base + s`).
pub fn shard_addr(base: SocketAddr, shard: u16) -> SocketAddr {
    let mut a = base;
    if a.port() != 0 {
        a.set_port(a.port().wrapping_add(shard));
    }
    a
}

/// Per-peer counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Frames received from the peer.
    pub frames_in: u64,
    /// Frames sent to the peer.
    pub frames_out: u64,
    /// Frame bytes received.
    pub bytes_in: u64,
    /// Frame bytes sent.
    pub bytes_out: u64,
    /// Streams of this peer we reset or stopped (garbage, over cap).
    pub streams_reset: u64,
    /// Frames to this peer dropped because its queue was full.
    pub queue_drops: u64,
    /// Connections to/from this peer lost after verification.
    pub connections_lost: u64,
}

/// Counters of one shard's transport (plain numbers, for the engine's Prometheus export).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Handshakes completed with a verified ML-DSA identity (both endpoints).
    pub handshakes_ok: u64,
    /// Handshakes that failed (TLS error, refused identity, timeout).
    pub handshakes_failed: u64,
    /// Handshakes refused because the peer offered only classical key exchange.
    pub classical_only_refusals: u64,
    /// Connections closed for an unknown or mismatched ML-DSA identity.
    pub identity_refusals: u64,
    /// Dial attempts.
    pub dials: u64,
    /// ML-DSA-87 identity proofs we signed (an acceptor signs only after the dialer's verified).
    pub proofs_signed: u64,
    /// Identity proofs we verified (at most one per connection).
    pub proofs_verified: u64,
    /// New connections refused because every pre-auth slot they may take was held.
    pub pre_auth_full_refusals: u64,
    /// New connections refused because the connection table was full.
    pub connections_full_refusals: u64,
    /// New connections refused because the endpoint is shutting down (or never accepts).
    pub closing_refusals: u64,
    /// Stateless Retries sent to validate a source address before it may hold a slot.
    pub retries_sent: u64,
    /// Accepted connections closed because no identity was proven within [`PRE_AUTH_TIMEOUT`].
    pub pre_auth_timeouts: u64,
    /// Client connections refused because their key is not in the accepted list.
    pub client_refusals: u64,
    /// Frames received (all peers and clients).
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Frame bytes received.
    pub bytes_in: u64,
    /// Frame bytes sent.
    pub bytes_out: u64,
    /// Streams reset or stopped for misbehaviour.
    pub streams_reset: u64,
    /// Unidirectional (push) streams of a held peer stopped unread (`ShardTransport::hold_pushes`).
    pub push_streams_stopped: u64,
    /// Frames dropped because a send queue was full.
    pub queue_drops: u64,
    /// Frames dropped because the shard did not take incoming frames fast enough.
    pub incoming_drops: u64,
    /// Verified connections lost.
    pub connections_lost: u64,
    /// Peers banned by [`crate::ShardTransport::ban_peer`] (each ban counted once).
    pub bans: u64,
    /// Connections of a banned peer refused or closed while its ban lasts (its reconnects).
    pub ban_refusals: u64,
    /// UDP datagrams received / sent.
    pub datagrams_in: u64,
    /// UDP datagrams sent.
    pub datagrams_out: u64,
    /// Send calls that carried several datagrams at once (GSO, `UDP_SEGMENT`); with
    /// `datagrams_out` this gives the datagrams per system call.
    pub gso_sends: u64,
    /// Datagrams that went out through GSO sends (part of `datagrams_out`).
    pub gso_datagrams: u64,
    /// Receive calls that returned several datagrams at once (GRO, `UDP_GRO`): the kernel
    /// kept a GSO send (or coalesced a flow) whole; with `datagrams_in` this gives the
    /// datagrams per system call.
    pub gro_receives: u64,
    /// Datagrams that arrived through GRO receives (part of `datagrams_in`).
    pub gro_datagrams: u64,
    /// Per peer, indexed by [`PeerId`].
    pub peers: Vec<PeerStats>,
}

//! Identity on a connection: after the handshake each side proves its ML-DSA-87 key over the
//! TLS exporter (the proof format is in [`crate::identity`]). The dialer proves first; the
//! acceptor verifies that proof and only then signs its own, so an unproven connection costs
//! it at most one verification and never a signature. This module sends our proof and judges
//! the other side's.
//!
//! Owns: our identity ([`Auth`]: keypair, node id, the client keys a client endpoint accepts).
//! May call: identity (make, parse, verify), streams (to write the proof), the peer table
//! (read-only: whom a proof names), stats.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use pqdag_crypto::{Keypair, PublicKey};
use quinn_proto::{Dir, VarInt};

use super::connection::{close_code, Conn};
use super::peers::Peers;
use super::stats::Stats;
use super::Mode;
use crate::config::*;
use crate::frame::STREAM_IDENTITY;
use crate::identity;

/// Our identity on one endpoint.
pub(crate) struct Auth {
    /// Our identity (a node's key, or a client connector's client key).
    keypair: Arc<Keypair>,
    /// Our node id (BLAKE3 of our key).
    pub(crate) own_id: [u8; 32],
    /// Client keys a client endpoint accepts, by key id (empty elsewhere).
    client_keys: HashMap<[u8; 32], PublicKey>,
}

/// Whom a verified proof names.
pub(crate) enum Proven {
    /// A configured peer (Node), or the server we dialed (ClientDialer: index 0).
    Peer(usize),
    /// An accepted client (ClientServer), by key id.
    Client([u8; 32]),
}

impl Auth {
    /// Our identity from `keypair`; a client endpoint accepts the clients holding `client_keys`.
    pub(crate) fn new(keypair: Arc<Keypair>, client_keys: Vec<PublicKey>) -> Self {
        let own_id = keypair.public().node_id();
        let client_keys = client_keys.into_iter().map(|k| (k.node_id(), k)).collect();
        Self { keypair, own_id, client_keys }
    }

    /// The handshake of `c` completed. A dialer sends its proof now and waits for the
    /// acceptor's until [`IDENTITY_TIMEOUT`]; an acceptor waits for the dialer's proof (its
    /// pre-auth deadline runs since the connection arrived) and signs nothing yet.
    pub(crate) fn on_connected(&self, mode: Mode, c: &mut Conn, now: Instant, stats: &Stats) {
        c.connected = true;
        if c.dialer {
            c.identity_deadline = now + IDENTITY_TIMEOUT;
            let ctx = if mode == Mode::ClientDialer { identity::CONTEXT_CLIENT } else { identity::CONTEXT_DIALER };
            self.send_proof(c, ctx, now, stats);
        }
    }

    /// Signs the exporter of `c` under `ctx` and writes the proof on a new uni stream; closes
    /// `c` if it cannot. Returns whether the proof went out.
    fn send_proof(&self, c: &mut Conn, ctx: &[u8], now: Instant, stats: &Stats) -> bool {
        let proof = exporter(c, ctx).and_then(|x| identity::make_proof(&self.keypair, &x).ok());
        if proof.is_some() {
            stats.get().proofs_signed += 1;
        }
        match (proof, c.conn.streams().open(Dir::Uni)) {
            (Some(proof), Some(id)) => {
                let mut data = vec![STREAM_IDENTITY];
                data.extend_from_slice(&(proof.len() as u32).to_le_bytes());
                data.extend_from_slice(&proof);
                c.streams.write_all(&mut c.conn, id, data);
                true
            }
            _ => {
                c.close(now, close_code::BAD_PROOF, "cannot make proof");
                false
            }
        }
    }

    /// The dialer's proof on `c` verified: the acceptor answers with its own. Returns whether
    /// it went out (else `c` is closed).
    pub(crate) fn answer(&self, c: &mut Conn, now: Instant, stats: &Stats) -> bool {
        debug_assert!(!c.dialer);
        self.send_proof(c, identity::CONTEXT_ACCEPTOR, now, stats)
    }

    /// Judges the other side's `proof` on `c` (`mode`: our endpoint): whom it proves, or the
    /// close code and reason. A dialer expects the peer it dialed; a node acceptor looks the
    /// claimed node id up among the peers, a client endpoint among the accepted client keys.
    /// An unknown id is refused without verifying; at most one signature check is made.
    pub(crate) fn check_proof(&self, mode: Mode, c: &Conn, proof: &[u8], peers: &Peers, stats: &Stats) -> Result<Proven, (u32, String)> {
        let ctx = match (c.dialer, mode) {
            (true, _) => identity::CONTEXT_ACCEPTOR,
            (false, Mode::ClientServer) => identity::CONTEXT_CLIENT,
            (false, _) => identity::CONTEXT_DIALER,
        };
        let (Some(pr), Some(x)) = (identity::parse_proof(proof), exporter(c, ctx)) else {
            return Err((close_code::BAD_PROOF, "malformed identity proof".into()));
        };
        let mismatch = || (close_code::IDENTITY_MISMATCH, "identity proof does not verify against the expected ML-DSA-87 key".to_string());
        if mode == Mode::ClientServer {
            let Some(key) = self.client_keys.get(&pr.node_id) else {
                return Err((close_code::NOT_AUTHORIZED, format!("client key {} is not accepted", short_id(&pr.node_id))));
            };
            stats.get().proofs_verified += 1;
            return if identity::verify_proof(key, &x, &pr) { Ok(Proven::Client(pr.node_id)) } else { Err(mismatch()) };
        }
        let who = if c.dialer { c.expected } else { peers.by_node_id(&pr.node_id) };
        match who {
            None => Err((close_code::UNKNOWN_PEER, "unknown ML-DSA identity".into())),
            Some(p) if peers.get(p).is_some_and(|s| s.is_self) => Err((close_code::UNKNOWN_PEER, "peer claims our own identity".into())),
            Some(p) => {
                let Some(slot) = peers.get(p) else { return Err(mismatch()) };
                stats.get().proofs_verified += 1;
                if identity::verify_proof(&slot.public_key, &x, &pr) {
                    Ok(Proven::Peer(p))
                } else {
                    Err(mismatch())
                }
            }
        }
    }
}

/// The first 8 bytes of a key id, in hex (for logs).
pub(crate) fn short_id(id: &[u8; 32]) -> String {
    id[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The TLS exporter of `c`'s session under context `ctx` (what identity proofs sign).
fn exporter(c: &Conn, ctx: &[u8]) -> Option<[u8; identity::EXPORTER_BYTES]> {
    let mut out = [0u8; identity::EXPORTER_BYTES];
    c.conn.crypto_session().export_keying_material(&mut out, identity::EXPORTER_LABEL, ctx).ok()?;
    Some(out)
}

/// Closes `c` (handle `h`) because its proof was refused with `code`.
pub(crate) fn refuse(c: &mut Conn, h: usize, now: Instant, code: u32, reason: &str, stats: &Stats) {
    tracing::warn!(conn = h, remote = %c.conn.remote_address(), "refusing connection: {reason}");
    let msg: &'static str = match code {
        close_code::UNKNOWN_PEER => "unknown identity",
        close_code::IDENTITY_MISMATCH => "identity mismatch",
        close_code::NOT_AUTHORIZED => "client key not authorized",
        _ => "bad identity proof",
    };
    c.close(now, code, msg);
    c.lost_reason = Some(format!("identity refused: {reason}"));
    let mut s = stats.get();
    s.identity_refusals += 1;
    if code == close_code::NOT_AUTHORIZED {
        s.client_refusals += 1;
    }
}

/// Marks `c` verified (as `who`) and opens its full receive window.
pub(crate) fn accept(c: &mut Conn, who: &Proven, stats: &Stats) {
    c.verified = true;
    match who {
        Proven::Peer(p) => c.peer = Some(*p),
        Proven::Client(id) => c.client_key = Some(*id),
    }
    c.pre_auth = None;
    c.conn.set_receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES));
    stats.get().handshakes_ok += 1;
}

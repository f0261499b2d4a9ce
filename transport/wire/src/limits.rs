//! Hard bounds on everything a peer can send. Every count and length in a received frame is
//! checked against these before use; a frame over any of them is refused whole.

/// Largest frame, header included. The transport refuses longer length prefixes before reading.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// Most parents a vertex may reference.
pub const PARENTS_MAX: usize = 8;
/// Fewest parents a non-genesis vertex references.
pub const PARENTS_MIN: usize = 1;
/// Largest payload of one transaction.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Most conflict keys one transaction may declare.
pub const CONFLICT_KEYS_MAX: usize = 16;
/// Most transactions one vertex carries.
pub const TXS_MAX: usize = 4096;
/// Most conflict keys one vertex carries (its transactions' keys together).
pub const VERTEX_KEYS_MAX: usize = 4096;
/// Budget of one vertex's transactions (payloads, keys, framing: `tx_budget`), so a vertex with
/// its signature always fits a frame and a reply of a few vertices stays bounded by bytes.
pub const VERTEX_TX_BYTES_MAX: usize = 512 * 1024;
/// Most vertex ids one query may ask about (one signed response answers them all).
pub const QUERY_IDS_MAX: usize = 4096;
/// Most ids one vertex request may name.
pub const REQUEST_IDS_MAX: usize = 1024;
/// Most vertices in one reply (also bounded by [`FRAME_BYTES_MAX`]).
pub const REPLY_VERTICES_MAX: usize = 128;
/// Most ids in a frontier announcement.
pub const FRONTIER_IDS_MAX: usize = 1024;
/// Length of every signature field (ML-DSA-87).
pub const SIGNATURE_BYTES: usize = 4627;
/// Most ids in one sync reply.
pub const SYNC_IDS_MAX: usize = 4096;

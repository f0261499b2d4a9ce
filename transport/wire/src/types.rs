//! Fixed-size identifiers.

use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[rkyv(derive(Debug, PartialEq, Eq, Hash))]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lowercase hex of all 32 bytes.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 bytes as a number: a cheap, uniform shard or bucket key.
            pub fn prefix_u64(&self) -> u64 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.0[..8]);
                u64::from_le_bytes(b)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(&self.0[..6]))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(&self.0[..8]))
            }
        }

        impl From<&$name> for $name {
            fn from(v: &$name) -> Self {
                *v
            }
        }

        impl From<&rkyv::Archived<$name>> for $name {
            fn from(v: &rkyv::Archived<$name>) -> Self {
                $name(v.0)
            }
        }
    };
}

id32!(
    /// A vertex id: BLAKE3 of the vertex's canonical bytes (see `Vertex::canonical_bytes`).
    VertexId
);
id32!(
    /// A node id: BLAKE3 of the node's ML-DSA-87 public key.
    NodeId
);
id32!(
    /// A conflict key a payload declares (think: an input it spends). Vertices that share a key
    /// form a conflict set, of which at most one is ever finalized.
    ConflictKey
);
id32!(
    /// A transaction id: BLAKE3 of the transaction's canonical bytes (see
    /// `Transaction::canonical_bytes`). Stable when a transaction moves to a new vertex (re-issue).
    TxId
);

//! Record encodings.

use pqdag_wire::{decode, encode, FrameRef, Vertex};

use crate::StorageError;

/// A vertex's consensus status as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepted into the DAG, not decided.
    Processing,
    /// Finalized, at this position of the shard's finality order. Never changes again.
    Final {
        /// 0-based position in the shard's finality order.
        position: u64,
    },
    /// Rejected (lost its conflict set, or descends from a rejected vertex). Never changes again.
    Rejected,
}

impl Status {
    pub(crate) fn encode(self) -> [u8; 9] {
        let mut out = [0u8; 9];
        match self {
            Status::Processing => out[0] = 0,
            Status::Final { position } => {
                out[0] = 1;
                out[1..].copy_from_slice(&position.to_be_bytes());
            }
            Status::Rejected => out[0] = 2,
        }
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Status, StorageError> {
        let corrupt = |r: &str| StorageError::Corrupt { cf: "status", reason: r.to_owned() };
        if b.len() != 9 {
            return Err(corrupt("length"));
        }
        match b[0] {
            0 => Ok(Status::Processing),
            1 => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&b[1..]);
                Ok(Status::Final { position: u64::from_be_bytes(p) })
            }
            2 => Ok(Status::Rejected),
            _ => Err(corrupt("tag")),
        }
    }

    /// True for `Final` and `Rejected`: decided, immutable.
    pub fn is_decided(self) -> bool {
        !matches!(self, Status::Processing)
    }
}

/// A vertex with its stored status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVertex {
    /// The signed vertex, exactly as received.
    pub vertex: Vertex,
    /// Its status.
    pub status: Status,
}

pub(crate) fn encode_vertex(v: &Vertex) -> Result<Vec<u8>, StorageError> {
    encode(v).map_err(|e| StorageError::Corrupt { cf: "vertices", reason: e.to_string() })
}

/// Decodes with the same validation as network input: the disk is not trusted either.
pub(crate) fn decode_vertex(b: &[u8]) -> Result<Vertex, StorageError> {
    match decode(b) {
        Ok(FrameRef::Vertex(a)) if a.id_matches() => Ok(a.to_owned()),
        Ok(_) => Err(StorageError::Corrupt { cf: "vertices", reason: "not a vertex or id mismatch".into() }),
        Err(e) => Err(StorageError::Corrupt { cf: "vertices", reason: e.to_string() }),
    }
}

/// Checks that a status transition keeps decided vertices decided the same way.
pub(crate) fn check_transition(id: &pqdag_wire::VertexId, old: Option<Status>, new: Status) -> Result<(), StorageError> {
    match old {
        Some(o) if o.is_decided() && o != new => Err(StorageError::FinalityViolation {
            id: id.to_hex(),
            reason: format!("{o:?} -> {new:?}"),
        }),
        _ => Ok(()),
    }
}

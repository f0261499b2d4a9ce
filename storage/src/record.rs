//! Record encodings.

use pqdag_wire::{decode, encode, FrameRef, Vertex};

use crate::{StorageError, StoredLock};

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

/// A lock record: member (32) · round u64 BE · gate u64 BE.
pub(crate) fn encode_lock(l: &StoredLock) -> [u8; 48] {
    let mut out = [0u8; 48];
    out[..32].copy_from_slice(&l.member.0);
    out[32..40].copy_from_slice(&l.round.to_be_bytes());
    out[40..].copy_from_slice(&l.gate.to_be_bytes());
    out
}

/// [`encode_lock`]'s record, or a 32-byte one written before lock rounds (round 0, gate
/// `u64::MAX`: the restart's round).
pub(crate) fn decode_lock(v: &[u8]) -> Result<StoredLock, StorageError> {
    match v.len() {
        32 => Ok(StoredLock { member: lock_member(v)?, round: 0, gate: u64::MAX }),
        48 => {
            let u = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
            Ok(StoredLock { member: lock_member(&v[..32])?, round: u(&v[32..40]), gate: u(&v[40..]) })
        }
        n => Err(StorageError::Corrupt { cf: "locks", reason: format!("lock record of {n} bytes") }),
    }
}

#[cfg(test)]
mod lock_record_tests {
    use super::*;
    use pqdag_wire::VertexId;

    /// A lock record round-trips with its round and gate; one written before lock rounds (the
    /// member alone) reads as round 0 with the restart's gate; any other length is corrupt.
    #[test]
    fn lock_records_old_and_new() {
        let l = StoredLock { member: VertexId([3; 32]), round: 5_811_222_333, gate: 5_811_222_334 };
        assert_eq!(decode_lock(&encode_lock(&l)).expect("new"), l);
        assert_eq!(decode_lock(&[3; 32]).expect("old"), StoredLock { member: VertexId([3; 32]), round: 0, gate: u64::MAX });
        assert!(decode_lock(&[3; 40]).is_err());
    }
}

fn lock_member(b: &[u8]) -> Result<pqdag_wire::VertexId, StorageError> {
    let id: [u8; 32] = b.try_into().map_err(|_| StorageError::Corrupt { cf: "locks", reason: "member length".into() })?;
    Ok(pqdag_wire::VertexId(id))
}

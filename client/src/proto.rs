//! Conversions between the wire's archived client messages and this crate's owned values.

use pqdag_wire::{
    decode, ArchivedClientErrorCode, ArchivedClientReply, ArchivedClientStatus, ArchivedFeedEntry, ArchivedFinalityEvent, ClientErrorCode,
    ClientReply, ClientStatus, ConflictKey, FeedEntry, FeedTx, FinalityEvent, FrameRef, NodeId, TxId, VertexId,
};

use crate::types::{Decision, Status};

/// Decodes (validating) a reply frame into the owned message.
pub(crate) fn reply(frame: &[u8]) -> Result<ClientReply, String> {
    let r = match decode(frame).map_err(|e| e.to_string())? {
        FrameRef::ClientReply(r) => r,
        other => return Err(format!("unexpected {} frame", other.kind().name())),
    };
    Ok(match r {
        ArchivedClientReply::Submitted { tag, tx, id } => ClientReply::Submitted { tag: tag.to_native(), tx: TxId::from(tx), id: VertexId::from(id) },
        ArchivedClientReply::Statuses { tag, statuses } => {
            ClientReply::Statuses { tag: tag.to_native(), statuses: statuses.iter().map(status).collect() }
        }
        ArchivedClientReply::Events { events } => ClientReply::Events { events: events.iter().map(event).collect() },
        ArchivedClientReply::FeedBatch { tag, entries, next_cursor } => ClientReply::FeedBatch {
            tag: tag.to_native(),
            entries: entries.iter().map(feed_entry).collect(),
            next_cursor: next_cursor.as_slice().to_vec(),
        },
        ArchivedClientReply::Error { tag, code, message } => ClientReply::Error {
            tag: tag.to_native(),
            code: match code {
                ArchivedClientErrorCode::Malformed => ClientErrorCode::Malformed,
                ArchivedClientErrorCode::Overloaded => ClientErrorCode::Overloaded,
                ArchivedClientErrorCode::NotReady => ClientErrorCode::NotReady,
                ArchivedClientErrorCode::Internal => ClientErrorCode::Internal,
                ArchivedClientErrorCode::Conflict => ClientErrorCode::Conflict,
                ArchivedClientErrorCode::Pruned => ClientErrorCode::Pruned,
            },
            message: message.as_str().to_string(),
        },
    })
}

fn status(s: &ArchivedClientStatus) -> ClientStatus {
    match s {
        ArchivedClientStatus::Unknown => ClientStatus::Unknown,
        ArchivedClientStatus::Processing => ClientStatus::Processing,
        ArchivedClientStatus::Rejected => ClientStatus::Rejected,
        ArchivedClientStatus::Final { shard, position } => ClientStatus::Final { shard: shard.to_native(), position: position.to_native() },
    }
}

fn feed_entry(e: &ArchivedFeedEntry) -> FeedEntry {
    FeedEntry {
        id: VertexId::from(&e.id),
        decision: status(&e.decision),
        txs: e
            .txs
            .iter()
            .map(|t| FeedTx {
                tx: TxId::from(&t.tx),
                payload: t.payload.as_slice().to_vec(),
                conflict_keys: t.conflict_keys.iter().map(ConflictKey::from).collect(),
                client: t.client,
            })
            .collect(),
        parents: e.parents.iter().map(VertexId::from).collect(),
        creator: NodeId(e.creator.0),
        cursor: e.cursor.as_slice().to_vec(),
    }
}

/// An archived pushed event, owned.
pub(crate) fn event(e: &ArchivedFinalityEvent) -> FinalityEvent {
    FinalityEvent { tx: TxId::from(&e.tx), id: VertexId::from(&e.id), status: status(&e.status), latency_us: e.latency_us.to_native() }
}

/// The API's view of a wire status.
pub(crate) fn to_status(s: ClientStatus) -> Status {
    match s {
        ClientStatus::Unknown => Status::Unknown,
        ClientStatus::Processing => Status::Processing,
        ClientStatus::Final { shard, position } => Status::Decided(Decision::Final { shard, position }),
        ClientStatus::Rejected => Status::Decided(Decision::Rejected),
    }
}

//! Conversions between the wire's archived client messages and this crate's owned values.

use pqdag_wire::{
    decode, ArchivedClientErrorCode, ArchivedClientReply, ArchivedClientStatus, ArchivedFinalityEvent, ClientErrorCode,
    ClientReply, ClientStatus, FinalityEvent, FrameRef, VertexId,
};

use crate::types::{Decision, Status};

/// Decodes (validating) a reply frame into the owned message.
pub(crate) fn reply(frame: &[u8]) -> Result<ClientReply, String> {
    let r = match decode(frame).map_err(|e| e.to_string())? {
        FrameRef::ClientReply(r) => r,
        other => return Err(format!("unexpected {} frame", other.kind().name())),
    };
    Ok(match r {
        ArchivedClientReply::Submitted { tag, id } => ClientReply::Submitted { tag: tag.to_native(), id: VertexId::from(id) },
        ArchivedClientReply::Statuses { tag, statuses } => {
            ClientReply::Statuses { tag: tag.to_native(), statuses: statuses.iter().map(status).collect() }
        }
        ArchivedClientReply::Events { events } => ClientReply::Events { events: events.iter().map(event).collect() },
        ArchivedClientReply::Error { tag, code, message } => ClientReply::Error {
            tag: tag.to_native(),
            code: match code {
                ArchivedClientErrorCode::Malformed => ClientErrorCode::Malformed,
                ArchivedClientErrorCode::Overloaded => ClientErrorCode::Overloaded,
                ArchivedClientErrorCode::NotReady => ClientErrorCode::NotReady,
                ArchivedClientErrorCode::Internal => ClientErrorCode::Internal,
                ArchivedClientErrorCode::Conflict => ClientErrorCode::Conflict,
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

/// An archived pushed event, owned.
pub(crate) fn event(e: &ArchivedFinalityEvent) -> FinalityEvent {
    FinalityEvent { id: VertexId::from(&e.id), status: status(&e.status), latency_us: e.latency_us.to_native() }
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

//! `update.lua`: writes a fenced field (progress, data) of a running job's record.

use redis::{Value, aio::ConnectionLike};

use super::reply::int;
use super::{Caller, DeliveryRef};
use crate::error::Result;
use crate::keys::GROUP;

script!("update.lua");

/// Which field of a job record [`update`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordField {
    /// Progress reported by the handler.
    Progress,
    /// New job data for the next retry.
    Data,
}

/// One [`update`] call.
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The delivery writing.
    pub delivery: DeliveryRef<'a>,
    /// Its job id.
    pub job_id: &'a str,
    /// Which field.
    pub field: RecordField,
    /// The CBOR value.
    pub value: &'a [u8],
    /// Lifetime of the record after this write, ms.
    pub ttl_ms: u64,
}

/// Writes a fenced field of a running job's record. `true` = written, `false` = stale.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn update<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    call: Update<'_>,
) -> Result<bool> {
    let field = match call.field {
        RecordField::Progress => "progress",
        RecordField::Data => "data",
    };
    let v: Value = SCRIPT
        .key(caller.stream())
        .key(caller.keys.job(call.job_id))
        .arg(GROUP)
        .arg(caller.consumer)
        .arg(call.delivery.entry_id)
        .arg(call.delivery.token)
        .arg(field)
        .arg(call.value)
        .arg(call.ttl_ms.max(1))
        .invoke_async(con)
        .await?;
    Ok(int(&v, "update.lua")? == 1)
}

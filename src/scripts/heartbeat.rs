//! `heartbeat.lua`: registers or refreshes a worker's record and appends its beat.

use redis::{Value, aio::ConnectionLike};

use super::reply::string;
use crate::error::Result;
use crate::keys::QueueKeys;

script!("heartbeat.lua");

/// Registers or refreshes a worker and appends its beat (`now_ms` 0 = the server's clock). Returns the beat's
/// entry id.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn heartbeat<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    consumer: &str,
    now_ms: u64,
    maxlen: u64,
    record_ttl_ms: u64,
    fields: &[(String, String)],
) -> Result<String> {
    let mut inv = SCRIPT.key(&keys.workers);
    inv.key(keys.worker(consumer)).key(&keys.heartbeats);
    inv.arg(consumer)
        .arg(now_ms)
        .arg(maxlen.max(1))
        .arg(record_ttl_ms.max(1));
    for (k, v) in fields {
        inv.arg(k).arg(v);
    }
    let v: Value = inv.invoke_async(con).await?;
    string(&v, "heartbeat.lua")
}

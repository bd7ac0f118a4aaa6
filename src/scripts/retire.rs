//! `retire.lua`: removes a consumer from the group if it has nothing pending.

use redis::{Value, aio::ConnectionLike};

use super::reply::int;
use crate::error::Result;
use crate::keys::{GROUP, QueueKeys};

script!("retire.lua");

/// Removes a consumer from the group of priority level `level`'s stream if it has nothing pending there.
/// `true` = removed.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn retire<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    level: u8,
    consumer: &str,
) -> Result<bool> {
    let v: Value = SCRIPT
        .key(keys.level(level))
        .arg(GROUP)
        .arg(consumer)
        .invoke_async(con)
        .await?;
    Ok(int(&v, "retire.lua")? == 1)
}

//! `extend.lua`: renews the leases of a batch of deliveries (fenced).

use redis::{Value, aio::ConnectionLike};

use super::reply::codes;
use super::{Caller, DeliveryRef};
use crate::error::Result;
use crate::keys::GROUP;

script!("extend.lua");

/// Extends leases: one flag per delivery, `true` = extended, `false` = lost.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn extend<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    deliveries: &[DeliveryRef<'_>],
) -> Result<Vec<bool>> {
    let mut inv = SCRIPT.key(caller.stream());
    inv.arg(GROUP).arg(caller.consumer);
    for d in deliveries {
        inv.arg(d.entry_id).arg(d.token);
    }
    let v: Value = inv.invoke_async(con).await?;
    Ok(codes(&v, "extend.lua", deliveries.len())?
        .into_iter()
        .map(|c| c == 1)
        .collect())
}

//! `park.lua`: parks a running delivery whose job was paused (fenced); it waits, holding no worker, until
//! resumed.

use redis::{Value, aio::ConnectionLike};

use super::release::HandBack;
use super::reply::int;
use super::{Caller, DeliveryRef};
use crate::error::Result;
use crate::keys::GROUP;

script!("park.lua");

/// Parks a running delivery (a paused session). [`HandBack::Done`] = parked.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn park<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    delivery: DeliveryRef<'_>,
    now_ms: u64,
) -> Result<HandBack> {
    let keys = caller.keys;
    let v: Value = SCRIPT
        .key(caller.stream())
        .key(&keys.scheduled)
        .key(&keys.parked)
        .key(&keys.index)
        .key(&keys.events)
        .arg(GROUP)
        .arg(caller.consumer)
        .arg(delivery.entry_id)
        .arg(delivery.token)
        .arg(now_ms)
        .arg(caller.events_maxlen)
        .invoke_async(con)
        .await?;
    HandBack::from_code(int(&v, "park.lua")?, "park.lua")
}

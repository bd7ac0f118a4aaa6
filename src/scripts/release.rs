//! `release.lua`: hands deliveries back for immediate redelivery without counting the attempt (fenced).

use redis::{Value, aio::ConnectionLike};

use super::reply::{codes, unknown_code};
use super::{Caller, DeliveryRef};
use crate::error::Result;
use crate::keys::GROUP;

script!("release.lua");

/// What handing one delivery back did ([`release`], and [`park`](super::park::park)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBack {
    /// Handed back: on the ready stream again (release) or parked (park).
    Done,
    /// Not owned by this delivery; nothing changed.
    Stale,
    /// The entry was gone; its pending entry was acked.
    Gone,
}

impl HandBack {
    pub(super) fn from_code(code: i64, what: &'static str) -> Result<Self> {
        match code {
            1 => Ok(HandBack::Done),
            0 => Ok(HandBack::Stale),
            -1 => Ok(HandBack::Gone),
            c => Err(unknown_code(what, c)),
        }
    }
}

/// Hands deliveries back for immediate redelivery: one outcome per delivery.
///
/// # Errors
/// [`crate::Error::Redis`] or [`crate::Error::Protocol`].
pub async fn release<C: ConnectionLike + Send>(
    con: &mut C,
    caller: &Caller<'_>,
    now_ms: u64,
    deliveries: &[DeliveryRef<'_>],
) -> Result<Vec<HandBack>> {
    let keys = caller.keys;
    let mut inv = SCRIPT.key(caller.stream());
    inv.key(&keys.index).key(&keys.events);
    inv.arg(GROUP)
        .arg(caller.consumer)
        .arg(now_ms)
        .arg(caller.events_maxlen);
    for d in deliveries {
        inv.arg(d.entry_id).arg(d.token);
    }
    let v: Value = inv.invoke_async(con).await?;
    codes(&v, "release.lua", deliveries.len())?
        .into_iter()
        .map(|c| HandBack::from_code(c, "release.lua"))
        .collect()
}

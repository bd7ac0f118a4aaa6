//! `levels.lua`: sets a queue's priority levels, creating each level's stream and group.

use redis::{Value, aio::ConnectionLike};

use super::LevelKeys;
use super::reply::{Reply, unknown_code};
use crate::error::{Error, Result};
use crate::keys::{GROUP, QueueKeys};
use crate::priority::Priorities;

script!("levels.lua");

/// Sets the queue's priority levels.
///
/// # Errors
/// [`Error::LevelInUse`] when fewer levels are asked for while a level that would go holds a job (nothing is
/// changed); [`Error::Redis`] or [`Error::Protocol`].
pub async fn set_levels<C: ConnectionLike + Send>(
    con: &mut C,
    keys: &QueueKeys,
    priorities: &Priorities,
) -> Result<()> {
    // KEYS are exactly the level tail: the priorities hash, then the streams of levels 1 to 15.
    let mut inv = SCRIPT.prepare_invoke();
    let v: Value = inv
        .level_keys(keys)
        .arg(GROUP)
        .arg(priorities.levels())
        .arg(priorities.weights_field())
        .invoke_async(con)
        .await?;
    let mut r = Reply::new(&v, "levels.lua", 2)?;
    match r.int()? {
        1 => Ok(()),
        0 => Err(Error::LevelInUse {
            queue: keys.queue.clone(),
            level: u8::try_from(r.int()?).unwrap_or(u8::MAX),
        }),
        c => Err(unknown_code("levels.lua", c)),
    }
}

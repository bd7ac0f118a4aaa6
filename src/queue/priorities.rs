//! A queue's priority levels ([`Priorities`]): set them, read them. Jobs pick theirs with
//! [`Enqueue::priority`](super::Enqueue::priority).

use serde::{Serialize, de::DeserializeOwned};

use super::Queue;
use crate::error::Result;
use crate::priority::Priorities;
use crate::scripts;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Gives the queue `priorities.levels()` priority levels, numbered from 0 (taken first); jobs without a
    /// priority are level 0, as in BullMQ. Workers see the change within a second. Fewer levels than before are
    /// refused while a level that would go still holds a job; `Priorities::default()` (one level) removes them.
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// // Three levels: 0 urgent, 1 normal, 2 bulk; bulk still gets 1 read in 10 while the others are busy.
    /// queue.set_priorities(&rill::Priorities::weighted(&[6, 3, 1])?).await?;
    /// queue.enqueue_with(&"report".to_owned(), rill::Enqueue::new().priority(2)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`crate::Error::LevelInUse`] (nothing changed), Redis errors.
    pub async fn set_priorities(&self, priorities: &Priorities) -> Result<()> {
        self.refuse_partitioned("priority levels").await?;
        let mut conn = self.client.conn().await?;
        scripts::set_levels(&mut conn, &self.keys, priorities).await
    }

    /// The queue's priority levels (one level when it has none).
    ///
    /// # Errors
    /// Redis errors; [`crate::Error::Protocol`] if the stored levels are not valid.
    pub async fn priorities(&self) -> Result<Priorities> {
        let mut conn = self.client.conn().await?;
        read_priorities(&mut conn, &self.keys).await
    }
}

/// Reads a queue's priority levels.
pub(crate) async fn read_priorities<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &crate::keys::QueueKeys,
) -> Result<Priorities> {
    let (levels, weights): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(&keys.priorities)
        .arg("levels")
        .arg("weights")
        .query_async(conn)
        .await?;
    Priorities::from_fields(
        levels.as_deref().unwrap_or(""),
        weights.as_deref().unwrap_or(""),
    )
}

//! A partitioned queue (SPEC §2a) seen as one: partitioning a queue, the handles on its partitions, where a
//! job goes, and which partition holds a job. The operator calls of the other files ask here first and, on a
//! partitioned queue, run on the partition that holds the job or on every partition and combine the answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Serialize, de::DeserializeOwned};

use super::{JobInfo, JobState, Queue};
use crate::error::{Error, Result};
use crate::partition::Partitions;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Spreads this queue over `n` partitions (SPEC §2a), each its own hash tag, so on a Redis Cluster the queue
    /// uses every master (`rill queue create QUEUE --partitions N`). Do it before producers and workers start:
    /// they read the partitions once. Jobs already on the queue stay in partition 0 and run as before. Calling it
    /// again with the same `n` changes nothing; a queue cannot be re-partitioned.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for `n` outside 2 to 256, or when the queue already has another number of
    /// partitions; a Redis error.
    pub async fn set_partitions(&self, n: usize) -> Result<Arc<Partitions>> {
        if self.one_partition {
            return Err(Error::InvalidOption {
                option: "partitions",
                reason: "a partition cannot be partitioned",
            });
        }
        let plan = Partitions::plan(&self.keys.queue, n)?;
        let mut conn = self.client.conn().await?;
        self.client.list_queue(&mut conn, &self.keys).await?;
        // HSETNX: of two operators partitioning at once, one plan wins and both read it back.
        let _: () = redis::pipe()
            .cmd("HSETNX")
            .arg(&self.keys.config)
            .arg("partition_tags")
            .arg(plan.tag_list())
            .ignore()
            .cmd("HSETNX")
            .arg(&self.keys.config)
            .arg("partitions")
            .arg(n)
            .ignore()
            .query_async(&mut conn)
            .await?;
        match self.client.read_partitions(&self.keys).await? {
            Some(p) if p.len() == n => {
                for q in self.partition_handles(&p) {
                    q.create_group().await?;
                }
                let p = Arc::new(p);
                self.client.remember_partitions(&self.keys, Some(p.clone()));
                Ok(p)
            }
            _ => Err(Error::InvalidOption {
                option: "partitions",
                reason: "the queue already has another number of partitions (it cannot be re-partitioned)",
            }),
        }
    }

    /// Creates the queue's consumer group(s) and lists the queue, so operators see it before any job (`rill queue
    /// create`). Idempotent.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn create(&self) -> Result<()> {
        let mut conn = self.client.conn().await?;
        self.client.list_queue(&mut conn, &self.keys).await?;
        match self.partition_queues().await? {
            Some(parts) => {
                for q in parts {
                    q.create_group().await?;
                }
                Ok(())
            }
            None => self.create_group().await,
        }
    }

    /// The queue's partitions, `None` if it is not partitioned (read once per process).
    ///
    /// # Errors
    /// A Redis error; [`Error::Protocol`] for partitions stored in a shape SPEC §2a does not allow.
    pub async fn partitions(&self) -> Result<Option<Arc<Partitions>>> {
        if self.one_partition {
            return Ok(None);
        }
        self.client.partitions_of(&self.keys).await
    }

    /// Handles on each partition (each a plain queue), partition 0 first; `None` when the queue is not
    /// partitioned.
    pub(crate) async fn partition_queues(&self) -> Result<Option<Vec<Queue<T>>>> {
        Ok(self.partitions().await?.map(|p| self.partition_handles(&p)))
    }

    fn partition_handles(&self, p: &Partitions) -> Vec<Queue<T>> {
        p.tags()
            .iter()
            .map(|tag| self.partition_handle(tag))
            .collect()
    }

    /// A handle on the partition with hash tag `tag`.
    fn partition_handle(&self, tag: &str) -> Queue<T> {
        let mut q = Queue::new(self.client.clone(), self.keys.partition(tag));
        q.one_partition = true;
        q
    }

    /// Where a new job goes: `None` on a queue that is not partitioned; else the partition's handle and, for a
    /// job without an id of its own, the id it gets (routed to the next partition in turn).
    pub(super) async fn route(
        &self,
        id: Option<&str>,
        dedup_key: Option<&str>,
    ) -> Result<Option<(Queue<T>, Option<String>)>> {
        let Some(p) = self.partitions().await? else {
            return Ok(None);
        };
        let (index, generated) = match (dedup_key, id) {
            (Some(key), Some(_)) => (p.of_key(key), None),
            (Some(key), None) => {
                let i = p.of_key(key);
                (i, Some(p.id_in(i, crate::identity::now_ms())))
            }
            (None, Some(id)) => (p.of_key(id), None),
            (None, None) => {
                let i = self.turn.fetch_add(1, Ordering::Relaxed) % p.len();
                (i, Some(p.id_in(i, crate::identity::now_ms())))
            }
        };
        Ok(Some((self.partition_handle(&p.tags()[index]), generated)))
    }

    /// The partitions in the order to look for job `id`: the one its id routes to first; `None` on a queue that is
    /// not partitioned.
    async fn search_order(&self, id: &str) -> Result<Option<Vec<Queue<T>>>> {
        let Some(p) = self.partitions().await? else {
            return Ok(None);
        };
        let mut all = self.partition_handles(&p);
        all.rotate_left(p.of_key(id));
        Ok(Some(all))
    }

    /// The partition that holds job `id`: `None` on a queue that is not partitioned; else the partition its id
    /// routes to if the job is there (or is nowhere), or the one that has it (a job routed by a dedup key other
    /// than its id).
    pub(crate) async fn holder(&self, id: &str) -> Result<Option<Queue<T>>> {
        let Some(all) = self.search_order(id).await? else {
            return Ok(None);
        };
        for q in &all {
            if Box::pin(q.job(id)).await?.state != JobState::Unknown {
                return Ok(Some(q.clone()));
            }
        }
        Ok(all.into_iter().next())
    }

    /// Job `id`'s record on a partitioned queue, from the partition that holds it (`None`: not partitioned).
    pub(super) async fn find_job(&self, id: &str) -> Result<Option<JobInfo>> {
        let Some(all) = self.search_order(id).await? else {
            return Ok(None);
        };
        let mut first = None;
        for q in &all {
            let info = Box::pin(q.job(id)).await?;
            if info.state != JobState::Unknown {
                return Ok(Some(info));
            }
            first.get_or_insert(info);
        }
        Ok(first)
    }

    /// One page from each partition, merged by entry id (time order across partitions): `count` entries, and
    /// past them any other partition's entries with the last one's id. Partitions' streams make their ids
    /// independently, so two may share one; the next page starts after that id, so cutting between them would
    /// skip the rest.
    pub(super) fn merge_pages<X>(
        pages: Vec<Vec<X>>,
        count: usize,
        entry_id: impl Fn(&X) -> &str,
    ) -> Vec<X> {
        let mut all: Vec<X> = pages.into_iter().flatten().collect();
        all.sort_by(|a, b| crate::wire::entry_id_order(entry_id(a), entry_id(b)));
        let mut end = count.min(all.len());
        if end > 0 {
            while end < all.len() && entry_id(&all[end]) == entry_id(&all[end - 1]) {
                end += 1;
            }
        }
        all.truncate(end);
        all
    }

    /// Fails with [`Error::Partitioned`] on a partitioned queue, for what partitioned queues do not offer yet.
    pub(super) async fn refuse_partitioned(&self, what: &'static str) -> Result<()> {
        if self.partitions().await?.is_none() {
            return Ok(());
        }
        Err(Error::Partitioned {
            queue: self.keys.queue.clone(),
            what,
        })
    }

    /// Creates the consumer group on this queue's ready stream (and the stream).
    async fn create_group(&self) -> Result<()> {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.ready)
            .arg(crate::keys::GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.client.conn().await?)
            .await;
        match r {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;

    fn merged(pages: &[&[&'static str]], count: usize) -> Vec<&'static str> {
        let pages = pages.iter().map(|p| p.to_vec()).collect();
        Queue::<u32>::merge_pages(pages, count, |id| id)
    }

    #[test]
    fn merged_pages_are_in_id_order_and_never_cut_between_equal_ids() {
        assert_eq!(
            merged(&[&["1-0", "3-0"], &["2-0", "4-0"]], 3),
            ["1-0", "2-0", "3-0"]
        );
        // Two partitions' entries share 2-0: both come, or the next page (after 2-0) would skip one.
        assert_eq!(
            merged(&[&["1-0", "2-0"], &["2-0", "3-0"], &["2-0"]], 2),
            ["1-0", "2-0", "2-0", "2-0"]
        );
        assert_eq!(merged(&[&["10-0"], &["9-1"]], 5), ["9-1", "10-0"]);
        assert!(merged(&[&[], &[]], 5).is_empty());
        assert!(merged(&[&["1-0"]], 0).is_empty());
    }
}

//! Dead letters: list them ([`DeadLetter`]), put them back as fresh jobs (`requeue.lua`, [`Requeue`]), or purge
//! them (`purge.lua`).

use std::collections::HashMap;

use serde::{Serialize, de::DeserializeOwned};

use super::Queue;
use super::events::DEFAULT_EVENTS_MAXLEN;
use crate::error::Result;
use crate::identity::now_ms;
use crate::scripts;

/// What [`Queue::retry_dead`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Requeue {
    /// Job ids put back on the ready stream.
    pub requeued: Vec<String>,
    /// Job ids not found among the dead letters.
    pub missing: Vec<String>,
    /// Job ids left dead because the job id is live again (re-enqueued since it died).
    pub live: Vec<String>,
}

impl Requeue {
    /// Two partitions' outcomes as one queue's.
    pub(super) fn plus(mut self, o: Requeue) -> Requeue {
        self.requeued.extend(o.requeued);
        self.missing.extend(o.missing);
        self.live.extend(o.live);
        self
    }

    fn record(&mut self, code: scripts::Requeued, job_id: &str) {
        let list = match code {
            scripts::Requeued::Ready => &mut self.requeued,
            scripts::Requeued::Missing => &mut self.missing,
            scripts::Requeued::Live => &mut self.live,
        };
        list.push(job_id.to_owned());
    }
}

/// One dead-letter entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Dead-letter stream entry id.
    pub entry_id: String,
    /// Job id.
    pub job_id: String,
    /// `failed`, `exhausted`, `malformed` or `too_large`.
    pub reason: String,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u64,
    /// When it died, ms since the Unix epoch.
    pub dead_ms: u64,
    /// The job's original fields (payload and all), as they were.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts dead letters back on the ready stream by job id, each as a fresh job (full attempts, the error it
    /// died with as `last_error`), like a BullMQ `retry` or Sidekiq's "retry now" (`requeue.lua`).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn retry_dead(&self, job_ids: &[&str]) -> Result<Requeue> {
        if let Some(parts) = self.partition_queues().await? {
            let all = futures::future::try_join_all(
                parts.iter().map(|q| Box::pin(q.retry_dead(job_ids))),
            )
            .await?;
            let mut out = all.into_iter().fold(Requeue::default(), Requeue::plus);
            // Missing means missing from every partition.
            out.missing = job_ids
                .iter()
                .filter(|id| !out.requeued.iter().chain(&out.live).any(|r| r == *id))
                .map(|id| (*id).to_owned())
                .collect();
            return Ok(out);
        }
        let mut out = Requeue::default();
        if job_ids.is_empty() {
            return Ok(out);
        }
        let mut conn = self.client.conn().await?;
        let entries: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.keys.dead_index)
            .arg(job_ids)
            .query_async(&mut conn)
            .await?;
        let mut found = Vec::new();
        for (jid, entry) in job_ids.iter().zip(entries) {
            match entry {
                Some(e) => found.push((*jid, e)),
                None => out.missing.push((*jid).to_owned()),
            }
        }
        let ids: Vec<&str> = found.iter().map(|(_, e)| e.as_str()).collect();
        let codes = self.requeue_entries(&ids).await?;
        for ((jid, _), code) in found.into_iter().zip(codes) {
            out.record(code, jid);
        }
        Ok(out)
    }

    async fn requeue_entries(&self, dead_entry_ids: &[&str]) -> Result<Vec<scripts::Requeued>> {
        let mut conn = self.client.conn().await?;
        // The events stream is trimmed as the workers' default does (an operator call has no worker config).
        scripts::requeue(
            &mut conn,
            &self.keys,
            now_ms(),
            DEFAULT_EVENTS_MAXLEN,
            dead_entry_ids,
        )
        .await
    }

    /// Puts every dead letter there is when it is called back on the ready stream (see [`Queue::retry_dead`]),
    /// oldest first, in batches. Dead letters written while it runs (a requeued job that fails again at once,
    /// say) stay for the next call: it never chases its own.
    ///
    /// # Errors
    /// Redis errors; dead letters already requeued stay requeued.
    pub async fn retry_all_dead(&self) -> Result<Requeue> {
        if let Some(parts) = self.partition_queues().await? {
            let all =
                futures::future::try_join_all(parts.iter().map(|q| Box::pin(q.retry_all_dead())))
                    .await?;
            return Ok(all.into_iter().fold(Requeue::default(), Requeue::plus));
        }
        const BATCH: usize = 500;
        let mut out = Requeue::default();
        let newest: Vec<redis::streams::StreamId> = {
            let mut conn = self.client.conn().await?;
            let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&self.keys.dead)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await?;
            reply.ids
        };
        let Some(newest) = newest.into_iter().next().map(|e| e.id) else {
            return Ok(out);
        };
        let mut after: Option<String> = None;
        loop {
            let mut page = self.dead_letters(after.as_deref(), BATCH).await?;
            let beyond = |d: &DeadLetter| crate::wire::entry_id_order(&d.entry_id, &newest).is_gt();
            let done = page.iter().any(beyond);
            page.retain(|d| !beyond(d));
            let Some(last) = page.last() else {
                return Ok(out);
            };
            after = Some(last.entry_id.clone());
            let ids: Vec<&str> = page.iter().map(|d| d.entry_id.as_str()).collect();
            let codes = self.requeue_entries(&ids).await?;
            for (d, code) in page.iter().zip(codes) {
                out.record(code, &d.job_id);
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Deletes dead letters for good (`purge.lua`): those that died more than `older_than` ago, or every one.
    /// Returns how many went.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn purge_dead(&self, older_than: Option<std::time::Duration>) -> Result<u64> {
        if let Some(parts) = self.partition_queues().await? {
            let all = futures::future::try_join_all(
                parts.iter().map(|q| Box::pin(q.purge_dead(older_than))),
            )
            .await?;
            return Ok(all.into_iter().sum());
        }
        const BATCH: usize = 1000;
        let cutoff = older_than.map_or(0, |d| now_ms().saturating_sub(d.as_millis() as u64).max(1));
        let mut conn = self.client.conn().await?;
        let mut total = 0;
        loop {
            let n = scripts::purge(&mut conn, &self.keys, cutoff, BATCH).await?;
            total += n;
            if n < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Up to `count` dead letters, oldest first, starting after entry id `after` (`None` = from the start). On a
    /// partitioned queue a page can hold a few more, when partitions share its last entry id (SPEC §2a).
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// let mut after: Option<String> = None;
    /// loop {
    ///     let page = queue.dead_letters(after.as_deref(), 100).await?;
    ///     let Some(last) = page.last() else { break };
    ///     after = Some(last.entry_id.clone());
    ///     for d in &page {
    ///         println!("{} died ({}, {} attempts): {}", d.job_id, d.reason, d.attempts, d.error);
    ///     }
    /// }
    /// queue.retry_all_dead().await?; // back on the queue, each with a full set of attempts
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dead_letters(&self, after: Option<&str>, count: usize) -> Result<Vec<DeadLetter>> {
        if let Some(parts) = self.partition_queues().await? {
            let pages = futures::future::try_join_all(
                parts.iter().map(|q| Box::pin(q.dead_letters(after, count))),
            )
            .await?;
            return Ok(Self::merge_pages(pages, count, |x| &x.entry_id));
        }
        Ok(self
            .entries_after(&self.keys.dead, after, count)
            .await?
            .into_iter()
            .map(|raw| {
                let mut meta: HashMap<&str, String> = HashMap::new();
                let mut fields = Vec::new();
                for (k, v) in raw.fields.iter().flatten() {
                    match k.strip_prefix(b"dead_") {
                        Some(name) => {
                            let name = match name {
                                b"reason" => "reason",
                                b"error" => "error",
                                b"attempts" => "attempts",
                                b"ms" => "ms",
                                b"job" => "job",
                                _ => continue,
                            };
                            meta.insert(name, String::from_utf8_lossy(v).into_owned());
                        }
                        None => fields.push((k.clone(), v.clone())),
                    }
                }
                let num = |m: &HashMap<&str, String>, k: &str| {
                    m.get(k).and_then(|s| s.parse().ok()).unwrap_or(0)
                };
                DeadLetter {
                    job_id: meta.get("job").cloned().unwrap_or_else(|| raw.id.clone()),
                    reason: meta.get("reason").cloned().unwrap_or_default(),
                    error: meta.get("error").cloned().unwrap_or_default(),
                    attempts: num(&meta, "attempts"),
                    dead_ms: num(&meta, "ms"),
                    entry_id: raw.id,
                    fields,
                }
            })
            .collect())
    }
}

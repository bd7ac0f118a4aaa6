//! Producing jobs: [`Enqueue`] options and `Queue::enqueue*`. A plain job is one `XADD` (pipelined for bulk);
//! a job with an id, a dedup key or a delay goes through `enqueue.lua`.

use std::time::{Duration, SystemTime};

use serde::{Serialize, de::DeserializeOwned};

use super::Queue;
use crate::error::{Error, Result};
use crate::identity::{now_ms, random_id};
use crate::keys;
use crate::scripts::{self, Enqueued, NewJob};
use crate::wire::{self, field};

/// Default lifetime of a dedup record: a second enqueue with the same id or key within this time is a no-op.
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);

/// The furthest a job may be delayed: a due time past it is a mistake (an overflowing duration, say).
const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Jobs per pipeline in [`Queue::enqueue_many`].
const BULK_CHUNK: usize = 1000;

/// Why `name` cannot be a header, if it cannot.
pub(crate) fn header_name_problem(name: &str) -> Option<&'static str> {
    if !name.starts_with(field::EXTENSION_PREFIX) || name.len() <= field::EXTENSION_PREFIX.len() {
        Some("a header name starts with `x-` and names something after it")
    } else if name.len() > 128 {
        Some("a header name is at most 128 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("a header name holds only ASCII letters, digits, '-', '_' and '.'")
    } else {
        None
    }
}

/// Options for one enqueue.
///
/// ```
/// use std::time::Duration;
/// let opts = rill::Enqueue::new().id("order-42").delay(Duration::from_secs(30)).max_attempts(5);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Enqueue {
    id: Option<String>,
    dedup_key: Option<String>,
    dedup_ttl: Option<Duration>,
    run_at: Option<SystemTime>,
    delay: Option<Duration>,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    priority: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl Enqueue {
    /// No options: a plain job.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this job id. It also dedups, by one rule: enqueueing the same id again adds nothing and returns the id
    /// while the job is live (waiting, delayed, running, failed awaiting a retry, parked) and, after that, until
    /// the dedup TTL (default 24 h, [`Enqueue::dedup_ttl`]) since the first enqueue runs out.
    /// [`Queue::enqueue_outcome`] tells a duplicate apart.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Dedup by this key (an idempotency key) while letting rill choose the job id.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// How long the dedup record lives (default 24 h).
    pub fn dedup_ttl(mut self, ttl: Duration) -> Self {
        self.dedup_ttl = Some(ttl);
        self
    }

    /// Run no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Run no earlier than `at`.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Most attempts (deliveries that fail or stall) before the job is dead-lettered. At least 1.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Longest one attempt may run (overrides the worker's [`Worker::timeout`](crate::Worker::timeout)): at the
    /// deadline the handler's [`Job::cancelled`](crate::Job::cancelled) token fires, and a handler still running
    /// shortly after is dropped; the attempt fails with a `timeout:` error and is retried like any failure. At
    /// least 1 ms, at most 366 days.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The job's priority level: 0 (the default) is taken first, then 1, and so on, up to the queue's
    /// [`Priorities`](crate::Priorities) (set with [`Queue::set_priorities`]). A level the queue does not have is
    /// refused with [`Error::NoSuchPriority`]. An unnamed job above level 0 has the id `<entry id>@<level>`
    /// (entry ids repeat across the levels' streams).
    pub fn priority(mut self, level: u8) -> Self {
        self.priority = level;
        self
    }

    /// Carries header `name` with the job: an `x-*` field of its entry (SPEC.md §3), such as a W3C trace context
    /// (`x-traceparent`) or a tenant; kept across retries, read with [`crate::Job::header`]. The name must start
    /// with `x-`; a name given twice keeps the last value.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let name = name.into();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    fn is_plain(&self) -> bool {
        self.id.is_none() && self.dedup_key.is_none() && self.due_ms(0) == 0
    }

    fn due_ms(&self, now_ms: u64) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let at = self
            .run_at
            .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, ms));
        let after = self.delay.map(|d| now_ms.saturating_add(ms(d)));
        match (at, after) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => 0,
        }
    }
}

/// What [`Queue::enqueue_outcome`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnqueueOutcome {
    /// Added, with this job id.
    Added(String),
    /// Nothing added: a job with this id (or dedup key) is live, or was enqueued within the dedup TTL; this is
    /// its id.
    Duplicate(String),
}

impl EnqueueOutcome {
    /// The job id, either way.
    pub fn id(&self) -> &str {
        match self {
            EnqueueOutcome::Added(id) | EnqueueOutcome::Duplicate(id) => id,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Adds a job to run as soon as a worker is free. Returns its id (its stream entry id).
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`], [`Error::Encode`], or a Redis error.
    pub async fn enqueue(&self, job: &T) -> Result<String> {
        self.enqueue_with(job, Enqueue::new()).await
    }

    /// Adds a job with options. With an id or dedup key, a duplicate returns the existing job's id (see
    /// [`Enqueue::id`] for the rule; [`Queue::enqueue_outcome`] says whether it was one).
    ///
    /// # Errors
    /// [`Error::InvalidJobId`], [`Error::PayloadTooLarge`], [`Error::Encode`], [`Error::NoSuchPriority`], or a
    /// Redis error.
    pub async fn enqueue_with(&self, job: &T, opts: Enqueue) -> Result<String> {
        Ok(match self.enqueue_outcome(job, opts).await? {
            EnqueueOutcome::Added(id) | EnqueueOutcome::Duplicate(id) => id,
        })
    }

    /// Adds a job with options, saying whether it was added or was a duplicate of an earlier job with the same id
    /// or dedup key (the rule: [`Enqueue::id`]).
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// let opts = rill::Enqueue::new().id("invoice-42");
    /// if let rill::EnqueueOutcome::Duplicate(id) = queue.enqueue_outcome(&"send".into(), opts).await? {
    ///     println!("{id} was enqueued already");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::enqueue_with`].
    pub async fn enqueue_outcome(&self, job: &T, opts: Enqueue) -> Result<EnqueueOutcome> {
        let payload = self.payload(job)?;
        if let Some(id) = &opts.id {
            keys::validate_job_id(id)?;
        }
        if let Some(k) = &opts.dedup_key {
            keys::validate_job_id(k)?;
        }
        if opts.due_ms(now_ms()) > now_ms().saturating_add(MAX_DELAY.as_millis() as u64) {
            return Err(Error::InvalidOption {
                option: "delay",
                reason: "the job would be due more than 100 years from now",
            });
        }
        if opts.max_attempts == Some(0) {
            return Err(Error::InvalidOption {
                option: "max_attempts",
                reason: "must be at least 1",
            });
        }
        if opts.priority >= crate::priority::MAX_LEVELS {
            return Err(Error::InvalidOption {
                option: "priority",
                reason: "levels are 0 to 15",
            });
        }
        if let Some(t) = opts.timeout
            && (t < Duration::from_millis(1) || t.as_millis() > u128::from(wire::MAX_TIMEOUT_MS))
        {
            return Err(Error::InvalidOption {
                option: "timeout",
                reason: "must be from 1 ms to 366 days",
            });
        }
        // The producer's trace, unless the caller set one itself.
        #[cfg(feature = "otel")]
        let opts = {
            let mut opts = opts;
            if !opts
                .headers
                .iter()
                .any(|(n, _)| n == crate::otel::TRACEPARENT)
            {
                opts.headers.extend(crate::otel::current_context_headers());
            }
            opts
        };
        if let Some((_, reason)) = opts
            .headers
            .iter()
            .find_map(|(n, _)| header_name_problem(n).map(|r| (n, r)))
        {
            return Err(Error::InvalidOption {
                option: "header",
                reason,
            });
        }
        match self
            .route(opts.id.as_deref(), opts.dedup_key.as_deref())
            .await?
        {
            // The partition's keys carry the queue's name, so `add` lists the queue by it.
            Some((partition, id)) => partition.add(payload, opts, id).await,
            None => self.add(payload, opts, None).await,
        }
    }

    /// Adds a checked job to this key set; `generated`: the id a partitioned queue gave a job without one (it
    /// gets no dedup record).
    async fn add(
        &self,
        payload: Vec<u8>,
        opts: Enqueue,
        generated: Option<String>,
    ) -> Result<EnqueueOutcome> {
        let mut conn = self.client.conn().await?;
        self.client.list_queue(&mut conn, &self.keys).await?;
        let max = opts.max_attempts.map(|m| m.to_string());
        let timeout = opts.timeout.map(|t| t.as_millis().to_string());
        if opts.is_plain() && opts.priority == 0 && generated.is_none() {
            let mut cmd = redis::cmd("XADD");
            cmd.arg(&self.keys.ready)
                .arg("*")
                .arg(field::V)
                .arg(wire::FORMAT_VERSION)
                .arg(field::PAYLOAD)
                .arg(&payload);
            if let Some(m) = &max {
                cmd.arg(field::MAX_ATTEMPTS).arg(m);
            }
            if let Some(t) = &timeout {
                cmd.arg(field::TIMEOUT_MS).arg(t);
            }
            for (name, value) in &opts.headers {
                cmd.arg(name).arg(value);
            }
            return Ok(EnqueueOutcome::Added(cmd.query_async(&mut conn).await?));
        }
        let now = now_ms();
        // An unnamed job above level 0 stays unnamed (`<entry id>@<level>`): enqueue.lua checks the level.
        let job_id = match (&opts.id, generated) {
            (Some(id), _) => id.clone(),
            (None, Some(id)) => id,
            (None, None) if opts.is_plain() => String::new(),
            (None, None) => random_id(),
        };
        let dedup = opts.dedup_key.as_deref().unwrap_or(&job_id).to_owned();
        let ttl = opts.dedup_ttl.unwrap_or(DEFAULT_DEDUP_TTL).as_millis() as u64;
        let dedup_ttl = if job_id.is_empty() {
            0
        } else if opts.id.is_some() || opts.dedup_key.is_some() {
            ttl.max(1)
        } else {
            0
        };
        let now_s = now.to_string();
        let mut fields: Vec<(&str, &[u8])> = vec![
            (field::V, wire::FORMAT_VERSION.as_bytes()),
            (field::PAYLOAD, &payload),
        ];
        // A job added at once is timed by its entry id (SPEC §3); a delayed one gets a new entry when promoted.
        if opts.due_ms(now) > now {
            fields.push((field::ENQUEUED_MS, now_s.as_bytes()));
        }
        if let Some(m) = &max {
            fields.push((field::MAX_ATTEMPTS, m.as_bytes()));
        }
        if let Some(t) = &timeout {
            fields.push((field::TIMEOUT_MS, t.as_bytes()));
        }
        let priority = opts.priority.to_string();
        if opts.priority > 0 {
            fields.push((field::PRIORITY, priority.as_bytes()));
        }
        for (name, value) in &opts.headers {
            fields.push((name, value));
        }
        let job = NewJob {
            job_id: &job_id,
            dedup_key: &dedup,
            dedup_ttl_ms: dedup_ttl,
            due_ms: opts.due_ms(now),
            now_ms: now,
            fields: &fields,
            priority: opts.priority,
        };
        match scripts::enqueue(&mut conn, &self.keys, job).await? {
            Enqueued::Duplicate(id) => {
                tracing::debug!(queue = %self.keys.queue, job = %id, "duplicate enqueue ignored");
                Ok(EnqueueOutcome::Duplicate(id))
            }
            Enqueued::NoSuchLevel(levels) => Err(Error::NoSuchPriority {
                queue: self.keys.queue.clone(),
                priority: opts.priority,
                levels,
            }),
            Enqueued::Ready(id) | Enqueued::Delayed(id) => Ok(EnqueueOutcome::Added(id)),
        }
    }

    /// Adds many plain jobs, pipelined (1,000 per round trip). Returns their ids in order. On error some jobs
    /// may have been added; the error says which call failed, not which jobs landed. With feature `otel`, each
    /// job carries the current span's trace context, as [`Queue::enqueue`] does.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] (checked for every job before anything is sent), [`Error::Encode`], or a Redis
    /// error.
    pub async fn enqueue_many(&self, jobs: &[T]) -> Result<Vec<String>> {
        // Every payload encoded (and checked) before anything is sent, into one buffer.
        let limit = self.client.config().max_payload_bytes;
        let mut encoded = Vec::with_capacity(jobs.len() * 128);
        let mut ends = Vec::with_capacity(jobs.len());
        for j in jobs {
            wire::encode_into(j, &mut encoded, limit)?;
            ends.push(encoded.len());
        }
        if self.partitions().await?.is_some() {
            // Each job through its partition's enqueue.lua (it needs an id there), many in flight at once.
            use futures::{StreamExt, TryStreamExt};
            return futures::stream::iter(jobs)
                .map(|j| self.enqueue(j))
                .buffered(BULK_CHUNK)
                .try_collect()
                .await;
        }
        #[cfg(feature = "otel")]
        let headers = crate::otel::current_context_headers();
        #[cfg(not(feature = "otel"))]
        let headers: Vec<(String, Vec<u8>)> = Vec::new();
        let mut conn = self.client.conn().await?;
        self.client.list_queue(&mut conn, &self.keys).await?;
        // The XADDs of jobs `from..to` (indexes into `ends`), as one pipeline.
        let pipeline = |from: usize, to: usize| {
            let mut pipe = redis::pipe();
            let mut start = if from == 0 { 0 } else { ends[from - 1] };
            for &end in &ends[from..to] {
                pipe.cmd("XADD")
                    .arg(&self.keys.ready)
                    .arg("*")
                    .arg(field::V)
                    .arg(wire::FORMAT_VERSION)
                    .arg(field::PAYLOAD)
                    .arg(&encoded[start..end]);
                for (name, value) in &headers {
                    pipe.arg(name).arg(value);
                }
                start = end;
            }
            pipe
        };
        // One chunk on the wire at a time, so the entries keep the order of `jobs`; the next chunk is built while
        // Redis adds the current one.
        let mut ids = Vec::with_capacity(jobs.len());
        let mut from = 0;
        let mut pipe = pipeline(0, jobs.len().min(BULK_CHUNK));
        while from < jobs.len() {
            let to = (from + BULK_CHUNK).min(jobs.len());
            let next_to = (to + BULK_CHUNK).min(jobs.len());
            let (got, next) = tokio::join!(pipe.query_async::<Vec<String>>(&mut conn), async {
                pipeline(to, next_to)
            });
            ids.extend(got?);
            pipe = next;
            from = to;
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_time_takes_the_later_of_delay_and_run_at() {
        let now = 1_000_000;
        assert_eq!(Enqueue::new().due_ms(now), 0);
        assert_eq!(
            Enqueue::new().delay(Duration::from_secs(2)).due_ms(now),
            1_002_000
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(5_000_000);
        assert_eq!(Enqueue::new().run_at(at).due_ms(now), 5_000_000);
        assert_eq!(
            Enqueue::new()
                .run_at(at)
                .delay(Duration::from_secs(1))
                .due_ms(now),
            5_000_000
        );
        assert!(Enqueue::new().is_plain());
        assert!(!Enqueue::new().id("x").is_plain());
        assert!(Enqueue::new().max_attempts(3).is_plain());
        assert!(Enqueue::new().timeout(Duration::from_secs(3)).is_plain());
        assert!(Enqueue::new().priority(1).is_plain());
        assert_eq!(
            Enqueue::new()
                .delay(Duration::from_secs(u64::MAX))
                .due_ms(now),
            u64::MAX,
            "no overflow"
        );
    }

    #[tokio::test]
    async fn nonsense_options_are_refused_before_any_io() {
        let q = crate::Client::new("redis://127.0.0.1:1")
            .unwrap()
            .queue::<u32>("q")
            .unwrap();
        let far = Enqueue::new().delay(Duration::from_secs(u64::MAX));
        assert!(matches!(
            q.enqueue_with(&1, far).await,
            Err(Error::InvalidOption {
                option: "delay",
                ..
            })
        ));
        assert!(matches!(
            q.enqueue_with(&1, Enqueue::new().max_attempts(0)).await,
            Err(Error::InvalidOption {
                option: "max_attempts",
                ..
            })
        ));
        assert!(matches!(
            q.enqueue_with(&1, Enqueue::new().priority(16)).await,
            Err(Error::InvalidOption {
                option: "priority",
                ..
            })
        ));
        for t in [Duration::ZERO, Duration::from_secs(367 * 24 * 3600)] {
            assert!(matches!(
                q.enqueue_with(&1, Enqueue::new().timeout(t)).await,
                Err(Error::InvalidOption {
                    option: "timeout",
                    ..
                })
            ));
        }
    }
}

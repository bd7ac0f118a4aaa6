//! What a handler receives ([`Job`]) and what it returns ([`JobResult`], [`JobError`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CheckpointPolicy;
pub use crate::checkpoint::{CheckpointSettings, PreviousEnd, Resume};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::keys::QueueKeys;
use crate::scripts::{
    self, Caller, CheckpointWrite, Checkpointed, DeliveryRef, RecordField, Update,
};
use crate::wire;

/// One delivery of a job: which stream entry, to which consumer, with which fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Stream entry id.
    pub entry_id: String,
    /// Consumer (worker) name that holds it.
    pub consumer: String,
    /// Delivery count of the entry when this delivery began; every ack, fail and lease extension must present
    /// it, and fails once someone else has taken the entry.
    pub token: u64,
    /// The priority level whose stream holds the entry (0: the ready stream).
    pub level: u8,
}

impl Delivery {
    pub(crate) fn as_ref(&self) -> DeliveryRef<'_> {
        DeliveryRef {
            entry_id: &self.entry_id,
            token: self.token,
        }
    }
}

pub(crate) struct JobContext {
    pub(crate) client: Client,
    pub(crate) keys: QueueKeys,
    pub(crate) record_ttl_ms: u64,
    pub(crate) checkpoints: CheckpointSettings,
    /// Fires when the worker starts shutting down.
    pub(crate) stopping: CancellationToken,
}

/// A job handed to a handler.
pub struct Job<T> {
    data: T,
    id: String,
    attempt: u32,
    max_attempts: u32,
    timeout: Option<std::time::Duration>,
    enqueued_ms: u64,
    last_error: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    delivery: Delivery,
    cancel: CancellationToken,
    ctx: Arc<JobContext>,
    touched: Arc<std::sync::atomic::AtomicBool>,
    stopping: CancellationToken,
}

impl<T> std::fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

/// What a worker hands a new [`Job`] besides its data and entry.
pub(crate) struct JobStart {
    pub(crate) token: u64,
    /// The priority level the entry was read from.
    pub(crate) level: u8,
    pub(crate) consumer: String,
    pub(crate) max_attempts: u32,
    /// The worker's default timeout (the entry's own wins).
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) cancel: CancellationToken,
    pub(crate) stopping: CancellationToken,
    /// Set when the job writes its record or a checkpoint (the ack must then clean up after it).
    pub(crate) touched: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) ctx: Arc<JobContext>,
}

impl<T> Job<T> {
    pub(crate) fn new(data: T, env: wire::Envelope, start: JobStart) -> Self {
        Job {
            data,
            attempt: env
                .attempts
                .saturating_add(start.token.min(u64::from(u32::MAX)) as u32),
            id: env.job_id,
            max_attempts: start.max_attempts,
            timeout: env
                .timeout_ms
                .map(std::time::Duration::from_millis)
                .or(start.timeout),
            enqueued_ms: env.enqueued_ms,
            last_error: env.last_error,
            headers: env.headers,
            delivery: Delivery {
                entry_id: env.entry_id,
                consumer: start.consumer,
                token: start.token,
                level: start.level,
            },
            cancel: start.cancel,
            ctx: start.ctx,
            touched: start.touched,
            stopping: start.stopping,
        }
    }

    /// The job data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// Takes the job data.
    pub fn into_data(self) -> T {
        self.data
    }

    /// Job id (stable across retries; use it with the attempt number to make handlers idempotent).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Attempt number of this delivery, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Most attempts this job gets.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// For a job a schedule enqueued: the schedule's name and the fire time it ran for (ms since the Unix
    /// epoch), from the `x-schedule` and `x-fire-ms` headers.
    pub fn schedule(&self) -> Option<(&str, u64)> {
        let name = std::str::from_utf8(self.header("x-schedule")?).ok()?;
        let at = std::str::from_utf8(self.header("x-fire-ms")?)
            .ok()?
            .parse()
            .ok()?;
        Some((name, at))
    }

    /// Longest this attempt may run (the job's own timeout, else the worker's), counted from when its handler
    /// started; `None`: no limit.
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.timeout
    }

    /// The value of header `name` (an `x-*` field of the job's entry, set with
    /// [`Enqueue::header`](crate::Enqueue::header) or by a producer in another language), if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Every header of the job, in entry order.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// When the job was first enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.enqueued_ms)
    }

    /// Error of the previous attempt, if this is a retry.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// This delivery (entry, consumer, fencing token).
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Fires when this delivery should stop: the job was cancelled by a signal (it then ends as cancelled when
    /// the handler returns an error), its lease was lost (another worker may be running the job now), its
    /// [`timeout`](Job::timeout) passed (an error returned then fails the attempt as a timeout), or the worker's
    /// shutdown deadline passed. Long handlers should `select!` on it.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Fires when this job is asked to checkpoint and yield: the worker begins a graceful shutdown, the queue is
    /// paused, the worker is quieted, or this job is paused by a signal. A long job should checkpoint and return
    /// [`JobError::interrupted`]: it then resumes elsewhere at once (shutdown), when the queue resumes, or, paused
    /// on its own, it is parked without holding a worker until resumed.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Saves `state` as the job's next checkpoint (version = newest + 1) and returns the version. Fenced: a
    /// delivery that lost the job cannot write.
    ///
    /// # Errors
    /// [`Error::Stale`], [`Error::PayloadTooLarge`] (over the worker's checkpoint limit), encode or Redis errors.
    pub async fn checkpoint<S: Serialize + ?Sized>(&self, state: &S) -> Result<u64> {
        self.checkpoint_as(state, 0, "").await
    }

    /// Like [`Job::checkpoint`] with an explicit version (must be newer than every earlier one; 0 = next) and a
    /// label.
    ///
    /// # Errors
    /// As [`Job::checkpoint`], plus [`Error::CheckpointNotNewer`].
    pub async fn checkpoint_as<S: Serialize + ?Sized>(
        &self,
        state: &S,
        version: u64,
        label: &str,
    ) -> Result<u64> {
        let limits = self.ctx.checkpoints;
        let bytes = wire::encode_within(state, limits.max_bytes)?;
        self.touched
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.ctx.client.conn().await?;
        let write = CheckpointWrite {
            version,
            label,
            state: &bytes,
            keep: limits.keep,
            ttl_ms: limits.ttl.as_millis() as u64,
            max_bytes: limits.max_bytes,
        };
        let out = scripts::checkpoint(
            &mut conn,
            &self.caller(),
            self.delivery.as_ref(),
            &self.id,
            crate::identity::now_ms(),
            write,
        )
        .await?;
        match out {
            Checkpointed::Written(version) => Ok(version),
            Checkpointed::Stale => Err(Error::Stale {
                job: self.id.clone(),
                entry: self.delivery.entry_id.clone(),
            }),
            Checkpointed::NotNewer(newest) => Err(Error::CheckpointNotNewer {
                job: self.id.clone(),
                version,
                newest,
            }),
            Checkpointed::TooLarge => Err(Error::PayloadTooLarge {
                size: bytes.len(),
                limit: limits.max_bytes,
            }),
        }
    }

    /// The newest checkpoint, if the job has one: the state to continue from, who wrote it and why the
    /// previous delivery ended. `None` means start from the beginning.
    ///
    /// # Errors
    /// Redis errors, or [`Error::Decode`] if the state is not an `S`.
    pub async fn resume<S: DeserializeOwned>(&self) -> Result<Option<Resume<S>>> {
        let newest =
            crate::checkpoint::read_checkpoints(&self.ctx.client, &self.ctx.keys, &self.id, 1)
                .await?;
        let Some(c) = newest.into_iter().next() else {
            return Ok(None);
        };
        let previous_end = if self.delivery.token > 1 {
            PreviousEnd::Stalled
        } else if let Some(e) = &self.last_error {
            PreviousEnd::Failed(e.clone())
        } else {
            PreviousEnd::HandedBack
        };
        Ok(Some(Resume {
            state: wire::decode(&c.state)?,
            version: c.version,
            written_by: c.written_by,
            label: c.label,
            written_ms: c.written_ms,
            previous_end,
        }))
    }

    /// Reports progress (any serde value), readable with [`crate::Queue::job`]. Fenced.
    ///
    /// # Errors
    /// [`Error::Stale`] if this delivery no longer owns the job; encode or Redis errors.
    pub async fn progress<P: Serialize + ?Sized>(&self, progress: &P) -> Result<()> {
        self.write(RecordField::Progress, &wire::encode(progress)?)
            .await
    }

    /// Replaces the job data that a retry of this job will receive. Fenced.
    ///
    /// # Errors
    /// [`Error::Stale`] if this delivery no longer owns the job; encode or Redis errors.
    pub async fn update_data(&self, data: &T) -> Result<()>
    where
        T: Serialize,
    {
        let bytes = wire::encode_within(data, self.ctx.client.config().max_payload_bytes)?;
        self.write(RecordField::Data, &bytes).await
    }

    /// How this delivery's fenced writes identify it.
    fn caller(&self) -> Caller<'_> {
        Caller {
            keys: &self.ctx.keys,
            consumer: &self.delivery.consumer,
            events_maxlen: crate::queue::DEFAULT_EVENTS_MAXLEN,
            max_attempts: self.max_attempts,
            level: self.delivery.level,
        }
    }

    async fn write(&self, field: RecordField, value: &[u8]) -> Result<()> {
        self.touched
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.ctx.client.conn().await?;
        let call = Update {
            delivery: self.delivery.as_ref(),
            job_id: &self.id,
            field,
            value,
            ttl_ms: self.ctx.record_ttl_ms,
        };
        let ok = scripts::update(&mut conn, &self.caller(), call).await?;
        if ok {
            Ok(())
        } else {
            Err(Error::Stale {
                job: self.id.clone(),
                entry: self.delivery.entry_id.clone(),
            })
        }
    }
}

impl CheckpointPolicy {
    /// Whether the job should checkpoint after `step`: the step or time interval has passed, or the worker is
    /// stopping, or this delivery was cancelled (its lease is in doubt; the write is fenced anyway).
    pub fn due<T>(&self, step: u64, job: &Job<T>) -> bool {
        self.due_at(
            step,
            std::time::Instant::now(),
            job.stopping().is_cancelled() || job.cancelled().is_cancelled(),
        )
    }
}

/// What a handler returns: `Ok(result)` completes the job (a result that encodes to CBOR `null`, such as `()`,
/// stores no result), `Err(JobError)` retries or dead-letters it.
pub type JobResult<R = ()> = std::result::Result<R, JobError>;

/// A handler's failure and what to do about it. Any error converts into a retryable one, so `?` works in
/// handlers: every `std::error::Error` (its `source()` chain joined into the message), `anyhow::Error` and
/// others that convert into `Box<dyn Error>`, and `&str` / `String`.
#[derive(Debug)]
pub struct JobError {
    pub(crate) message: String,
    pub(crate) action: FailAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailAction {
    Retry(Option<Duration>),
    Permanent,
    Interrupt,
    Cancelled,
}

impl JobError {
    /// Retry with the worker's backoff (exponential with jitter).
    pub fn retry(message: impl std::fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            action: FailAction::Retry(None),
        }
    }

    /// Retry after `delay` instead of the backoff.
    pub fn retry_after(message: impl std::fmt::Display, delay: Duration) -> Self {
        JobError {
            message: message.to_string(),
            action: FailAction::Retry(Some(delay)),
        }
    }

    /// Hand the job back for immediate redelivery without counting an attempt (after saving a checkpoint when
    /// [`Job::stopping`] fired, say).
    pub fn interrupted(message: impl std::fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            action: FailAction::Interrupt,
        }
    }

    pub(crate) fn cancelled_by_signal(message: String) -> Self {
        JobError {
            message,
            action: FailAction::Cancelled,
        }
    }

    /// Never retry: dead-letter now with reason `failed`.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            action: FailAction::Permanent,
        }
    }

    /// The error text that will be stored.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the job will be retried (attempts permitting).
    pub fn is_retry(&self) -> bool {
        matches!(self.action, FailAction::Retry(_))
    }
}

impl<E: Into<Box<dyn std::error::Error>>> From<E> for JobError {
    fn from(e: E) -> Self {
        let e: Box<dyn std::error::Error> = e.into();
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let text = s.to_string();
            // Many errors already print their source (`#[error("...: {0}")]`): say it once.
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        JobError::retry(message)
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_error_says_what_happens_next() {
        let e = JobError::retry("flaky");
        assert!(e.is_retry());
        assert_eq!((e.message(), e.to_string().as_str()), ("flaky", "flaky"));
        assert!(JobError::retry_after("later", Duration::from_secs(1)).is_retry());
        assert!(!JobError::permanent("bad input").is_retry());
        assert!(!JobError::interrupted("maintenance").is_retry());
        // Any error converts with `?` and means "retry".
        let io: JobError = std::io::Error::other("disk").into();
        assert!(io.is_retry());
        assert_eq!(io.message(), "disk");
    }

    /// `?` in a handler-shaped function, for each kind of error a handler meets.
    fn fails_with<E>(e: E) -> JobResult
    where
        JobError: From<E>,
    {
        Err(e)?;
        Ok(())
    }

    #[test]
    fn question_mark_converts_anyhow_text_and_error_chains_into_retries() {
        let any =
            fails_with(anyhow::anyhow!("disk full").context("writing thumbnail")).unwrap_err();
        assert!(any.is_retry());
        assert_eq!(any.message(), "writing thumbnail: disk full");
        assert_eq!(
            fails_with("plain text").unwrap_err().message(),
            "plain text"
        );
        assert_eq!(
            fails_with(String::from("owned")).unwrap_err().message(),
            "owned"
        );
        // A source already in the error's own text is not repeated; one that is not is appended.
        #[derive(Debug)]
        struct Outer(std::io::Error, bool);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if self.1 {
                    write!(f, "upload failed: {}", self.0)
                } else {
                    f.write_str("upload failed")
                }
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = || std::io::Error::other("timed out");
        assert_eq!(
            fails_with(Outer(inner(), true)).unwrap_err().message(),
            "upload failed: timed out"
        );
        assert_eq!(
            fails_with(Outer(inner(), false)).unwrap_err().message(),
            "upload failed: timed out"
        );
    }
}

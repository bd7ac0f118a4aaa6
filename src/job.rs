//! What a handler receives ([`Job`]) and what it returns ([`JobResult`], [`JobError`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::keys::QueueKeys;
use crate::scripts::{self, DeliveryRef, RecordField};
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
    /// Set when a delivery writes the job record, so its completion knows to clean it up.
    pub(crate) client: Client,
    pub(crate) keys: QueueKeys,
    pub(crate) record_ttl_ms: u64,
}

/// A job handed to a handler.
pub struct Job<T> {
    data: T,
    id: String,
    attempt: u32,
    max_attempts: u32,
    enqueued_ms: u64,
    last_error: Option<String>,
    delivery: Delivery,
    cancel: CancellationToken,
    ctx: Arc<JobContext>,
    touched: Arc<std::sync::atomic::AtomicBool>,
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

impl<T> Job<T> {
    pub(crate) fn new(
        data: T,
        env: wire::Envelope,
        token: u64,
        consumer: String,
        max_attempts: u32,
        cancel: CancellationToken,
        ctx: Arc<JobContext>,
        touched: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Job {
            data,
            attempt: env
                .attempts
                .saturating_add(token.min(u64::from(u32::MAX)) as u32),
            id: env.job_id,
            max_attempts,
            enqueued_ms: env.enqueued_ms,
            last_error: env.last_error,
            delivery: Delivery {
                entry_id: env.entry_id,
                consumer,
                token,
            },
            cancel,
            ctx,
            touched,
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

    /// Fires when this delivery should stop: its lease was lost (another worker may be running the job now), or
    /// the worker's shutdown deadline passed. Long handlers should `select!` on it.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
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
        let bytes = wire::encode(data)?;
        let limit = self.ctx.client.config().max_payload_bytes;
        if bytes.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: bytes.len(),
                limit,
            });
        }
        self.write(RecordField::Data, &bytes).await
    }

    async fn write(&self, field: RecordField, value: &[u8]) -> Result<()> {
        self.touched
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut conn = self.ctx.client.conn().await?;
        let ok = scripts::update(
            &mut conn,
            &self.ctx.keys,
            &self.delivery.consumer,
            self.delivery.as_ref(),
            &self.id,
            field,
            value,
            self.ctx.record_ttl_ms,
        )
        .await?;
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

/// What a handler returns: `Ok(result)` completes the job (a result that encodes to CBOR `null`, such as `()`,
/// stores no result), `Err(JobError)` retries or dead-letters it.
pub type JobResult<R = ()> = std::result::Result<R, JobError>;

/// A handler's failure and what to do about it. Any `std::error::Error` converts into a retryable one, so `?`
/// works in handlers.
#[derive(Debug)]
pub struct JobError {
    pub(crate) message: String,
    pub(crate) action: FailAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailAction {
    Retry(Option<Duration>),
    Permanent,
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

impl<E: std::error::Error> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::retry(e)
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

//! The library's error type. Handler outcomes (retry, discard) are not errors of the library: see
//! [`crate::JobError`].

/// Everything that can go wrong in rill itself (not in a job handler).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A queue name or namespace that would not make a safe key (see SPEC.md, "Names").
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A caller-supplied job id or dedup key that is not allowed.
    #[error("invalid job id {id:?}: {reason}")]
    InvalidJobId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An option given to a call that is out of its range (such as `max_attempts` 0).
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A queue cannot be removed while workers are registered on it (they would recreate its keys).
    #[error("queue {queue:?} has live workers ({}): stop them first, or force it", workers.join(", "))]
    QueueInUse {
        /// The queue.
        queue: String,
        /// Consumer names of the workers that are not judged crashed.
        workers: Vec<String>,
    },
    /// A call that partitioned queues (SPEC §2a) do not offer yet.
    #[error("queue {queue:?} is partitioned: {what} is not available on partitioned queues")]
    Partitioned {
        /// The queue.
        queue: String,
        /// What was asked.
        what: &'static str,
    },
    /// The Redis URL could not be parsed.
    #[error("invalid Redis URL {url:?}: {source}")]
    InvalidUrl {
        /// The rejected URL.
        url: String,
        /// The parser's complaint.
        source: redis::RedisError,
    },
    /// An encoded payload is larger than the client's limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Encoded size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A value could not be encoded to CBOR.
    #[error("cannot encode as CBOR: {0}")]
    Encode(String),
    /// Stored bytes could not be decoded (a result, a progress value).
    #[error("cannot decode CBOR: {0}")]
    Decode(String),
    /// This delivery no longer owns the job: its lease expired and the job was reclaimed, or it finished
    /// elsewhere. The operation had no effect.
    #[error("stale delivery of job {job} (entry {entry}): another delivery owns it now")]
    Stale {
        /// Job id.
        job: String,
        /// Stream entry id of the stale delivery.
        entry: String,
    },
    /// A checkpoint's version is not newer than the job's newest checkpoint.
    #[error("checkpoint version {version} of job {job} is not newer than {newest}")]
    CheckpointNotNewer {
        /// Job id.
        job: String,
        /// The refused version.
        version: u64,
        /// The newest stored version.
        newest: u64,
    },
    /// Redis answered with an error, or the connection failed. (Not a `source`: the message already holds all
    /// of it, and error reporters that walk the chain would print it twice.)
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    /// A script or command answered in a shape rill does not expect (a server that does not follow SPEC.md).
    #[error("unexpected reply from {what}: {detail}")]
    Protocol {
        /// Which script or command.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A job asked for a priority level its queue does not have ([`crate::Priorities`]).
    #[error("queue {queue:?} has no priority level {priority}: it has {levels} (0 to {})", levels.saturating_sub(1))]
    NoSuchPriority {
        /// The queue.
        queue: String,
        /// The level asked for.
        priority: u8,
        /// The queue's number of levels.
        levels: u8,
    },
    /// Fewer priority levels were asked for while a level that would go still holds a job.
    #[error(
        "queue {queue:?}: priority level {level} still holds jobs; let them finish (or move them) first"
    )]
    LevelInUse {
        /// The queue.
        queue: String,
        /// The level.
        level: u8,
    },
    /// The client was closed with [`crate::Client::close`].
    #[error("the rill client is closed")]
    Closed,
    /// The Redis user may not run a command rill needs (README, "ACL rules").
    #[error(
        "this Redis user may not run {command}, which a rill worker needs: grant it (README, \"ACL rules\")"
    )]
    Permission {
        /// The command refused (with the key it was checked on, if any).
        command: String,
    },
    /// Redis may evict keys under memory pressure, which silently loses jobs (see
    /// [`crate::ClientConfig::allow_eviction`]).
    #[error(
        "Redis may evict keys under memory pressure (maxmemory-policy {policy}), which loses jobs silently: set maxmemory-policy noeviction, or allow it explicitly (ClientConfig::allow_eviction, rill --allow-eviction)"
    )]
    EvictingRedis {
        /// The server's `maxmemory-policy`.
        policy: String,
    },
    /// A worker could not start a thread of its own (the lease keeper's, or its own with
    /// [`crate::WorkerConfig::dedicated_thread`]), or that thread ended without a report.
    #[error("worker thread: {0}")]
    Thread(std::io::Error),
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Redis(e)
    }
}

impl Error {
    /// Whether trying the same operation again later can succeed (connection trouble, timeouts, a Redis that
    /// is loading or failing over). Invalid input, stale deliveries and a closed client are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Redis(e) => {
                self.is_out_of_memory()
                    || e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::ClusterDown
                                | redis::ServerErrorKind::MasterDown
                                | redis::ServerErrorKind::ReadOnly
                        )
                    )
            }
            _ => false,
        }
    }

    /// Whether Redis refused a write because it is at `maxmemory` (policy `noeviction`): retry later, once
    /// memory is freed (completing jobs and purging dead letters free it; rill's completion scripts still run).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, Error::Redis(e) if e.code() == Some("OOM"))
    }

    /// Whether this is a fencing rejection: the caller's delivery was superseded.
    pub fn is_stale(&self) -> bool {
        matches!(self, Error::Stale { .. })
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates() {
        let io: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into();
        assert!(Error::Redis(io).is_retryable());
        let stale = Error::Stale {
            job: "j".into(),
            entry: "1-0".into(),
        };
        assert!(stale.is_stale() && !stale.is_retryable());
        assert!(!Error::Closed.is_retryable());
        assert!(
            !Error::InvalidName {
                name: "a:b".into(),
                reason: "x"
            }
            .is_retryable()
        );
        let busy = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
            "loading",
        ));
        assert!(Error::Redis(busy).is_retryable());
        assert!(stale.to_string().contains("another delivery owns it"));
    }
}

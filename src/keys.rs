//! The one place that builds Redis keys. Every key of a queue carries the hash tag `{queue}`, so all of a
//! queue's keys live in one Redis Cluster slot and every script runs unchanged on a cluster. SPEC.md has the
//! same table.

use crate::error::{Error, Result};

/// The consumer group every worker of a queue joins.
pub const GROUP: &str = "workers";

/// Default key namespace (the first key segment).
pub const DEFAULT_NAMESPACE: &str = "rill";

/// Longest queue name or namespace, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Longest caller-supplied job id or dedup key, in bytes.
pub const MAX_JOB_ID_LEN: usize = 256;

/// Checks a queue name or namespace: 1–128 bytes of ASCII letters, digits, `.`, `_` and `-`. Braces would
/// move the hash tag, `:` would collide with the key layout, and whitespace breaks `redis-cli`.
///
/// # Errors
/// [`Error::InvalidName`] with the reason.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 128 bytes")
    } else if name.contains(['{', '}']) {
        Some("contains a brace, which would change the Redis Cluster hash tag")
    } else if name.contains(':') {
        Some("contains ':', the key separator")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
    }
}

/// The set of queue names in `namespace` (`<ns>:queues`), added to by producers and workers so operators can
/// list queues without scanning the keyspace.
///
/// # Errors
/// [`Error::InvalidName`] for an invalid namespace.
pub fn queues_key(namespace: &str) -> Result<String> {
    validate_name(namespace)?;
    Ok(format!("{namespace}:queues"))
}

/// The stream of message-bus topic `topic` in `namespace` (`<ns>:bus:{<topic>}`; the topic is its own hash tag).
///
/// # Errors
/// [`Error::InvalidName`] for an invalid namespace or topic name.
pub fn topic_key(namespace: &str, topic: &str) -> Result<String> {
    validate_name(namespace)?;
    validate_name(topic)?;
    Ok(format!("{namespace}:bus:{{{topic}}}"))
}

/// A `SCAN MATCH` pattern for every key of `namespace` (names hold no glob characters, see [`validate_name`]).
///
/// # Errors
/// [`Error::InvalidName`].
pub fn namespace_pattern(namespace: &str) -> Result<String> {
    validate_name(namespace)?;
    Ok(format!("{namespace}:*"))
}

/// Checks a caller-supplied job id or dedup key: 1–256 bytes of UTF-8 without control characters or
/// whitespace. (It follows the hash tag in a key, so braces and `:` are harmless there.)
///
/// # Errors
/// [`Error::InvalidJobId`] with the reason.
pub fn validate_job_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("empty")
    } else if id.len() > MAX_JOB_ID_LEN {
        Some("longer than 256 bytes")
    } else if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("contains whitespace or a control character")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidJobId {
            id: id.to_owned(),
            reason,
        }),
    }
}

/// All the keys of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// Queue name.
    pub queue: String,
    /// Stream of jobs ready to run (consumer group [`GROUP`]).
    pub ready: String,
    /// Sorted set of delayed job ids, score = due time (ms).
    pub delayed: String,
    /// Stream holding the bodies of delayed jobs.
    pub scheduled: String,
    /// Hash: job id -> current entry id, for jobs whose id is not their ready entry's id.
    pub index: String,
    /// Dead-letter stream.
    pub dead: String,
    /// Hash: job id -> dead-letter entry id.
    pub dead_index: String,
    /// Lifecycle events stream (trimmed by MAXLEN).
    pub events: String,
    /// Control signals stream (history, trimmed by MAXLEN).
    pub signals: String,
    /// Outcomes of signals, as their receivers recorded them.
    pub outcomes: String,
    /// Exists while the queue is paused (hash: signal, sender, ms).
    pub paused: String,
    /// Sorted set of parked (paused) job ids, score = parked at (ms); bodies in `scheduled`.
    pub parked: String,
    /// Worker registry: sorted set of consumer names, score = last heartbeat (ms).
    pub workers: String,
    /// Heartbeats stream (trimmed by MAXLEN).
    pub heartbeats: String,
    /// Sorted set of schedule names, score = next fire time (ms; `+inf` while paused).
    pub schedules: String,
    /// The queue's limits (hash: rate, period_ms, concurrency; seq and used kept here).
    pub limit: String,
    /// Sorted set of the reads within the rate limit's window (member = `<seq>:<count>`, score = time, ms).
    pub limit_starts: String,
    /// Per-key limits (SPEC §6h): entries set aside because their key had no room (sorted set: address, score =
    /// the entry id's ms). They stay on their stream, acked, and are waiting jobs.
    pub held: String,
    /// Per-key limits: keys with held jobs, score = their turn (sorted set).
    pub key_ring: String,
    /// Per-key limits: each key's held jobs in order (sorted set by member, `<len>:<key>\0<seq>\0<address>`).
    pub key_queued: String,
    /// Per-key limits: jobs handed out per key (sorted set by member, `<len>:<key>\0<address>`).
    pub key_running: String,
    /// Per-key limits: starts per key in the rate's window (sorted set by member, `<len>:<key>\0<ms>:<seq>`).
    pub key_starts: String,
    /// The queue's priority levels (hash: levels, weights; absent = one level).
    pub priorities: String,
    /// Settings every worker of the queue follows (hash: `lease_ms`).
    pub config: String,
    /// The streams of priority levels 0 to 15 (level 0 is `ready`), see [`QueueKeys::level`].
    levels: Vec<String>,
    /// The namespace's set of queue names (not under the queue's hash tag: it spans queues).
    pub queues: String,
    prefix: String,
}

impl QueueKeys {
    /// Keys of `queue` under `namespace`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] if either name is not allowed.
    pub fn new(namespace: &str, queue: &str) -> Result<Self> {
        validate_name(namespace)?;
        validate_name(queue)?;
        Ok(Self::tagged(namespace, queue, queue))
    }

    /// Keys of one partition of partitioned queue `queue` (SPEC §2a): the same layout under the partition's hash
    /// tag; [`QueueKeys::queue`] stays the queue's name. The tag comes from [`crate::partition::Partitions`].
    pub(crate) fn partition(&self, tag: &str) -> Self {
        let namespace = self.queues.strip_suffix(":queues").unwrap_or_default();
        Self::tagged(namespace, &self.queue, tag)
    }

    fn tagged(namespace: &str, queue: &str, tag: &str) -> Self {
        let prefix = format!("{namespace}:{{{tag}}}");
        QueueKeys {
            queue: queue.to_owned(),
            ready: format!("{prefix}:ready"),
            delayed: format!("{prefix}:delayed"),
            scheduled: format!("{prefix}:scheduled"),
            index: format!("{prefix}:index"),
            dead: format!("{prefix}:dead"),
            dead_index: format!("{prefix}:dead:index"),
            events: format!("{prefix}:events"),
            signals: format!("{prefix}:signals"),
            outcomes: format!("{prefix}:signals:outcomes"),
            paused: format!("{prefix}:paused"),
            parked: format!("{prefix}:parked"),
            workers: format!("{prefix}:workers"),
            heartbeats: format!("{prefix}:heartbeats"),
            schedules: format!("{prefix}:schedules"),
            limit: format!("{prefix}:limit"),
            limit_starts: format!("{prefix}:limit:starts"),
            held: format!("{prefix}:held"),
            key_ring: format!("{prefix}:keys:ring"),
            key_queued: format!("{prefix}:keys:queued"),
            key_running: format!("{prefix}:keys:running"),
            key_starts: format!("{prefix}:keys:starts"),
            priorities: format!("{prefix}:priorities"),
            config: format!("{prefix}:config"),
            levels: (0..crate::priority::MAX_LEVELS)
                .map(|p| match p {
                    0 => format!("{prefix}:ready"),
                    p => format!("{prefix}:ready:{p}"),
                })
                .collect(),
            queues: format!("{namespace}:queues"),
            prefix,
        }
    }

    /// The stream of priority level `level` (0 is [`QueueKeys::ready`]; levels past the last are the last's).
    pub fn level(&self, level: u8) -> &str {
        &self.levels[usize::from(level).min(self.levels.len() - 1)]
    }

    /// The streams of priority levels 1 to 15, as the scripts that route or find jobs by level take them after
    /// the priorities hash.
    pub fn level_streams(&self) -> &[String] {
        &self.levels[1..]
    }

    /// Record hash of one job: progress, data updates, and its result once completed.
    pub fn job(&self, job_id: &str) -> String {
        format!("{}:job:{job_id}", self.prefix)
    }

    /// Registry record of one worker (hash).
    pub fn worker(&self, consumer: &str) -> String {
        format!("{}:worker:{consumer}", self.prefix)
    }

    /// Checkpoint stream of one job (newest last).
    pub fn checkpoints(&self, job_id: &str) -> String {
        format!("{}:ckpt:{job_id}", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every key of this queue (names hold no glob characters, see
    /// [`validate_name`]); the namespace's queue set is not among them.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// Definition of one schedule (hash).
    pub fn schedule(&self, name: &str) -> String {
        format!("{}:schedule:{name}", self.prefix)
    }

    /// Dedup record of one key (a string holding the job id).
    pub fn dedup(&self, key: &str) -> String {
        format!("{}:dedup:{key}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_spec() {
        let k = QueueKeys::new("rill", "emails").unwrap();
        assert_eq!(k.ready, "rill:{emails}:ready");
        assert_eq!(k.delayed, "rill:{emails}:delayed");
        assert_eq!(k.scheduled, "rill:{emails}:scheduled");
        assert_eq!(k.index, "rill:{emails}:index");
        assert_eq!(k.dead, "rill:{emails}:dead");
        assert_eq!(k.dead_index, "rill:{emails}:dead:index");
        assert_eq!(k.events, "rill:{emails}:events");
        assert_eq!(k.signals, "rill:{emails}:signals");
        assert_eq!(k.outcomes, "rill:{emails}:signals:outcomes");
        assert_eq!(k.paused, "rill:{emails}:paused");
        assert_eq!(k.parked, "rill:{emails}:parked");
        assert_eq!(k.workers, "rill:{emails}:workers");
        assert_eq!(k.heartbeats, "rill:{emails}:heartbeats");
        assert_eq!(k.schedules, "rill:{emails}:schedules");
        assert_eq!(k.limit, "rill:{emails}:limit");
        assert_eq!(k.priorities, "rill:{emails}:priorities");
        assert_eq!(k.config, "rill:{emails}:config");
        assert_eq!(k.level(0), "rill:{emails}:ready");
        assert_eq!(k.level(1), "rill:{emails}:ready:1");
        assert_eq!(k.level(15), "rill:{emails}:ready:15");
        assert_eq!(k.level(200), "rill:{emails}:ready:15");
        assert_eq!(k.level_streams().len(), 15);
        assert_eq!(k.level_streams()[0], "rill:{emails}:ready:1");
        assert_eq!(k.limit_starts, "rill:{emails}:limit:starts");
        assert_eq!(k.held, "rill:{emails}:held");
        assert_eq!(k.key_ring, "rill:{emails}:keys:ring");
        assert_eq!(k.key_queued, "rill:{emails}:keys:queued");
        assert_eq!(k.key_running, "rill:{emails}:keys:running");
        assert_eq!(k.key_starts, "rill:{emails}:keys:starts");
        assert_eq!(k.schedule("nightly"), "rill:{emails}:schedule:nightly");
        assert_eq!(k.queues, "rill:queues");
        assert_eq!(k.pattern(), "rill:{emails}:*");
        assert_eq!(namespace_pattern("rill").unwrap(), "rill:*");
        assert!(namespace_pattern("a*b").is_err());
        assert_eq!(k.worker("w-1"), "rill:{emails}:worker:w-1");
        assert_eq!(k.job("order-42"), "rill:{emails}:job:order-42");
        assert_eq!(k.dedup("k1"), "rill:{emails}:dedup:k1");
        assert_eq!(k.checkpoints("j1"), "rill:{emails}:ckpt:j1");
        assert_eq!(topic_key("rill", "orders").unwrap(), "rill:bus:{orders}");
        assert!(topic_key("rill", "a:b").is_err());
    }

    #[test]
    fn every_key_shares_the_hash_tag() {
        let k = QueueKeys::new("ns", "q.1").unwrap();
        for key in [
            &k.ready,
            &k.delayed,
            &k.scheduled,
            &k.index,
            &k.dead,
            &k.dead_index,
            &k.events,
            &k.signals,
            &k.outcomes,
            &k.paused,
            &k.parked,
            &k.workers,
            &k.heartbeats,
            &k.schedules,
            &k.schedule("n"),
            &k.limit,
            &k.limit_starts,
            &k.held,
            &k.key_ring,
            &k.key_queued,
            &k.key_running,
            &k.key_starts,
            &k.worker("w"),
            &k.job("a{b}"),
            &k.dedup("x}y"),
            &k.checkpoints("a:b"),
        ] {
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            assert_eq!(&key[open + 1..close], "q.1", "{key}");
        }
    }

    #[test]
    fn names_are_validated() {
        for bad in [
            "",
            "a{b",
            "a}b",
            "a:b",
            "a b",
            "a\tb",
            "é",
            "a\nb",
            &"x".repeat(129),
        ] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        for good in ["emails", "a", "A-b_c.9", &"x".repeat(128)] {
            validate_name(good).unwrap();
        }
        assert!(QueueKeys::new("ns", "bad:name").is_err());
        assert!(QueueKeys::new("bad ns", "q").is_err());
    }

    #[test]
    fn job_ids_are_validated() {
        for bad in ["", "a b", "a\u{0}b", "tab\t", &"x".repeat(257)] {
            assert!(validate_job_id(bad).is_err(), "{bad:?}");
        }
        for good in ["order-42", "a:b{c}", "ünï", &"x".repeat(256)] {
            validate_job_id(good).unwrap();
        }
    }
}

//! Control signals with history: cancel a job (running, waiting or delayed), pause / resume a queue, quiet or
//! stop a worker or a whole queue, and custom signals with a payload. Every signal is an entry of the queue's
//! signals stream; its receivers record outcomes (applied, ignored with a reason) on the outcomes stream.
//! Workers follow the signals stream with a blocking read, so a running job's cancellation token fires within
//! milliseconds of the signal.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};
use crate::identity::now_ms;
pub use crate::identity::sender_name;
use crate::queue::Queue;
use crate::scripts::{self, SignalApplied, SignalSend};
use crate::wire;

/// Approximate length the signals and outcomes streams are trimmed to.
pub const HISTORY_MAXLEN: u64 = 10_000;

/// What a signal asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignalKind {
    /// Stop a job: a waiting or delayed one never runs; a running one's cancellation token fires.
    Cancel,
    /// Stop taking jobs until resumed (target: the queue; persists across worker restarts).
    Pause,
    /// Undo a pause.
    Resume,
    /// Stop taking new jobs, finish the running ones, stay up (target: a worker or the queue).
    Quiet,
    /// Shut down gracefully (target: a worker or the queue).
    Stop,
    /// An application signal.
    Custom(String),
}

impl SignalKind {
    /// The wire name (`custom:<name>` for custom signals).
    pub fn to_wire(&self) -> String {
        match self {
            SignalKind::Cancel => "cancel".into(),
            SignalKind::Pause => "pause".into(),
            SignalKind::Resume => "resume".into(),
            SignalKind::Quiet => "quiet".into(),
            SignalKind::Stop => "stop".into(),
            SignalKind::Custom(name) => format!("custom:{name}"),
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "cancel" => SignalKind::Cancel,
            "pause" => SignalKind::Pause,
            "resume" => SignalKind::Resume,
            "quiet" => SignalKind::Quiet,
            "stop" => SignalKind::Stop,
            other => SignalKind::Custom(other.strip_prefix("custom:")?.to_owned()),
        })
    }
}

/// Whom a signal is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// Every worker of the queue.
    Queue,
    /// One worker, by consumer name.
    Worker(String),
    /// One job, by id.
    Job(String),
}

impl Target {
    /// The wire form: `queue`, `worker:<consumer>`, `job:<id>`.
    pub fn to_wire(&self) -> String {
        match self {
            Target::Queue => "queue".into(),
            Target::Worker(c) => format!("worker:{c}"),
            Target::Job(j) => format!("job:{j}"),
        }
    }

    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "queue" {
            return Some(Target::Queue);
        }
        if let Some(c) = s.strip_prefix("worker:") {
            return Some(Target::Worker(c.to_owned()));
        }
        s.strip_prefix("job:").map(|j| Target::Job(j.to_owned()))
    }
}

/// What one receiver did with a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcome {
    /// `queue` (applied by the script that recorded it) or a worker's consumer name.
    pub receiver: String,
    /// `applied`, `ignored` or `delivered`.
    pub result: String,
    /// Why, in words.
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub ms: u64,
}

/// One signal and, when read from the history, its outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Signal {
    /// Signal id (its entry id).
    pub id: String,
    /// What it asks.
    pub kind: SignalKind,
    /// For whom.
    pub target: Target,
    /// Who sent it.
    pub sender: String,
    /// When, ms since the Unix epoch.
    pub ms: u64,
    /// Raw CBOR payload, if any.
    pub payload: Option<Vec<u8>>,
    /// What receivers did with it (filled by [`Queue::signal_history`]).
    pub outcomes: Vec<Outcome>,
}

impl Signal {
    /// The payload decoded as `P`.
    ///
    /// # Errors
    /// [`Error::Decode`].
    pub fn payload<P: DeserializeOwned>(&self) -> Result<Option<P>> {
        self.payload.as_deref().map(wire::decode).transpose()
    }
}

/// Which signals [`Queue::signal_history`] returns.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct SignalFilter {
    target: Option<Target>,
    kind: Option<SignalKind>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
}

impl SignalFilter {
    /// Every signal.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only signals for `target`.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }
    /// Only signals of `kind`.
    pub fn kind(mut self, kind: SignalKind) -> Self {
        self.kind = Some(kind);
        self
    }
    /// Only signals sent at or after `ms` (ms since the Unix epoch).
    pub fn since_ms(mut self, ms: u64) -> Self {
        self.since_ms = Some(ms);
        self
    }
    /// Only signals sent at or before `ms`.
    pub fn until_ms(mut self, ms: u64) -> Self {
        self.until_ms = Some(ms);
        self
    }
}

fn field(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> Option<String> {
    wire::field(fields, name).map(|v| String::from_utf8_lossy(v).into_owned())
}

pub(crate) fn parse_signal(raw: wire::RawEntry) -> Option<Signal> {
    let fields = raw.fields?;
    let payload = wire::field(&fields, "payload")
        .filter(|p| !p.is_empty())
        .map(<[u8]>::to_vec);
    Some(Signal {
        kind: SignalKind::parse(&field(&fields, "kind")?)?,
        target: Target::parse(&field(&fields, "target")?)?,
        sender: field(&fields, "sender").unwrap_or_default(),
        ms: field(&fields, "ms")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0),
        payload,
        outcomes: Vec::new(),
        id: raw.id,
    })
}

/// Appends an outcome for `signal` from `receiver`.
pub(crate) async fn record_outcome<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &crate::keys::QueueKeys,
    signal: &str,
    receiver: &str,
    result: &str,
    reason: &str,
) -> Result<()> {
    let _: String = redis::cmd("XADD")
        .arg(&keys.outcomes)
        .arg("MAXLEN")
        .arg("~")
        .arg(HISTORY_MAXLEN)
        .arg("*")
        .arg("signal")
        .arg(signal)
        .arg("receiver")
        .arg(receiver)
        .arg("outcome")
        .arg(result)
        .arg("reason")
        .arg(reason)
        .arg("ms")
        .arg(now_ms())
        .query_async(conn)
        .await?;
    Ok(())
}

/// The result of [`Queue::pause_job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PauseOutcome {
    /// It had not started: parked now.
    Parked,
    /// It is running: its `stopping()` token fired; it is parked when it yields after its checkpoint.
    Signalled,
    /// No waiting, delayed or running job has this id (or it is parked already).
    NotFound,
}

/// The result of [`Queue::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job had not started: it was removed and recorded as cancelled; it will never run.
    Removed,
    /// The job is running: the worker holding it fires its cancellation token and records it as cancelled.
    Signalled,
    /// No waiting, delayed or running job has this id.
    NotFound,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Sends a signal; returns its id.
    ///
    /// # Errors
    /// Encode or Redis errors.
    pub async fn send_signal<P: Serialize>(
        &self,
        kind: SignalKind,
        target: Target,
        payload: Option<&P>,
    ) -> Result<String> {
        Ok(self.signal_raw(&kind, &target, payload).await?.id)
    }

    async fn signal_raw<P: Serialize>(
        &self,
        kind: &SignalKind,
        target: &Target,
        payload: Option<&P>,
    ) -> Result<scripts::SignalSent> {
        // A partitioned queue (SPEC §2a): a job's signal runs where the job is; what is left for workers is copied
        // to partition 0's signals stream, the one they listen on.
        if let Target::Job(id) = target
            && let Some(q) = self.holder(id).await?
        {
            let sent = Box::pin(q.signal_raw(kind, target, payload)).await?;
            if sent.applied == SignalApplied::ForWorkers {
                let payload = payload.map(wire::encode).transpose()?.unwrap_or_default();
                let _: () = redis::cmd("XADD")
                    .arg(&self.keys.signals)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(HISTORY_MAXLEN)
                    .arg("*")
                    .arg("kind")
                    .arg(kind.to_wire())
                    .arg("target")
                    .arg(target.to_wire())
                    .arg("sender")
                    .arg(sender_name())
                    .arg("ms")
                    .arg(now_ms())
                    .arg("payload")
                    .arg(payload)
                    .query_async(&mut self.client.conn().await?)
                    .await?;
            }
            return Ok(sent);
        }
        let payload = payload.map(wire::encode).transpose()?.unwrap_or_default();
        let mut conn = self.client.conn().await?;
        let call = SignalSend {
            kind: &kind.to_wire(),
            target: &target.to_wire(),
            sender: &sender_name(),
            now_ms: now_ms(),
            payload: &payload,
            maxlen: HISTORY_MAXLEN,
            retention_ms: Duration::from_secs(24 * 3600).as_millis() as u64,
        };
        scripts::signal(&mut conn, &self.keys, call).await
    }

    /// Cancels job `id`: a waiting or delayed job never runs; a running one's cancellation token fires.
    ///
    /// ```no_run
    /// # async fn f(queue: rill::Queue<String>) -> rill::Result<()> {
    /// match queue.cancel("order-42").await? {
    ///     rill::CancelOutcome::Removed => println!("it had not started: it never will"),
    ///     rill::CancelOutcome::Signalled => println!("its worker stops it and records it as cancelled"),
    ///     _ => println!("nothing to cancel"),
    /// }
    /// queue.pause().await?; // every worker of the queue stops taking jobs until `resume`
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Redis errors.
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome> {
        let sent = self
            .signal_raw::<()>(&SignalKind::Cancel, &Target::Job(id.to_owned()), None)
            .await?;
        Ok(match sent.applied {
            SignalApplied::Applied => CancelOutcome::Removed,
            SignalApplied::ForWorkers => CancelOutcome::Signalled,
            _ => CancelOutcome::NotFound,
        })
    }

    /// Pauses one job (a session): a waiting or delayed one is parked at once; a running one is asked, through
    /// [`crate::Job::stopping`], to checkpoint and yield, and is then parked without holding a worker.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn pause_job(&self, id: &str) -> Result<PauseOutcome> {
        let sent = self
            .signal_raw::<()>(&SignalKind::Pause, &Target::Job(id.to_owned()), None)
            .await?;
        Ok(match sent.applied {
            SignalApplied::Applied => PauseOutcome::Parked,
            SignalApplied::ForWorkers => PauseOutcome::Signalled,
            _ => PauseOutcome::NotFound,
        })
    }

    /// Resumes a parked job: it goes back to the ready stream and continues from its checkpoint. Returns false
    /// if it was not parked.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn resume_job(&self, id: &str) -> Result<bool> {
        let sent = self
            .signal_raw::<()>(&SignalKind::Resume, &Target::Job(id.to_owned()), None)
            .await?;
        Ok(sent.applied == SignalApplied::Applied)
    }

    /// Pauses the queue: every worker stops taking jobs (running ones finish) until [`Queue::resume`]. The pause
    /// persists across worker restarts.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn pause(&self) -> Result<String> {
        self.send_signal::<()>(SignalKind::Pause, Target::Queue, None)
            .await
    }

    /// Resumes a paused queue.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn resume(&self) -> Result<String> {
        self.send_signal::<()>(SignalKind::Resume, Target::Queue, None)
            .await
    }

    /// Whether the queue is paused.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn is_paused(&self) -> Result<bool> {
        let mut conn = self.client.conn().await?;
        Ok(redis::cmd("EXISTS")
            .arg(&self.keys.paused)
            .query_async::<bool>(&mut conn)
            .await?)
    }

    /// Signals sent in a time range (newest last, at most `count`), with their outcomes.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn signal_history(&self, filter: SignalFilter, count: usize) -> Result<Vec<Signal>> {
        let mut conn = self.client.conn().await?;
        let start = filter
            .since_ms
            .map_or("-".to_owned(), |ms| format!("{ms}-0"));
        let end = filter
            .until_ms
            .map_or("+".to_owned(), |ms| format!("{ms}-18446744073709551615"));
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&self.keys.signals)
            .arg(&start)
            .arg(&end)
            .query_async(&mut conn)
            .await?;
        let mut signals: Vec<Signal> = wire::parse_entries(v)?
            .into_iter()
            .filter_map(parse_signal)
            .filter(|s| filter.target.as_ref().is_none_or(|t| *t == s.target))
            .filter(|s| filter.kind.as_ref().is_none_or(|k| *k == s.kind))
            .collect();
        if signals.len() > count {
            signals.drain(..signals.len() - count);
        }
        if let Some(first) = signals.first() {
            let v: redis::Value = redis::cmd("XRANGE")
                .arg(&self.keys.outcomes)
                .arg(&first.id)
                .arg("+")
                .query_async(&mut conn)
                .await?;
            let mut by_signal: HashMap<String, Vec<Outcome>> = HashMap::new();
            for raw in wire::parse_entries(v)? {
                let Some(fields) = raw.fields else { continue };
                let Some(sig) = field(&fields, "signal") else {
                    continue;
                };
                by_signal.entry(sig).or_default().push(Outcome {
                    receiver: field(&fields, "receiver").unwrap_or_default(),
                    result: field(&fields, "outcome").unwrap_or_default(),
                    reason: field(&fields, "reason").unwrap_or_default(),
                    ms: field(&fields, "ms")
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(0),
                });
            }
            for s in &mut signals {
                s.outcomes = by_signal.remove(&s.id).unwrap_or_default();
            }
        }
        Ok(signals)
    }

    /// A collector of the signals for `target` (`None` = all) sent from now on.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn collect_signals(&self, target: Option<Target>) -> Result<SignalCollector> {
        let block = Duration::from_secs(1);
        let mut conn = self.client.blocking_conn(block).await?;
        // Start after the newest signal (a literal `$` would skip signals sent between two reads).
        let last = crate::queue::newest_entry_id(&mut conn, &self.keys.signals).await?;
        Ok(SignalCollector {
            conn,
            key: self.keys.signals.clone(),
            last,
            target,
            block,
            buffered: std::collections::VecDeque::new(),
        })
    }
}

/// Receives signals as they are sent (its own connection, blocking reads).
pub struct SignalCollector {
    conn: crate::client::BlockingConn,
    key: String,
    last: String,
    target: Option<Target>,
    block: Duration,
    buffered: std::collections::VecDeque<Signal>,
}

impl std::fmt::Debug for SignalCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalCollector")
            .field("key", &self.key)
            .field("last", &self.last)
            .finish()
    }
}

impl SignalCollector {
    /// The next signal for this collector's target, waiting up to `timeout`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<Signal>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.buffered.pop_front() {
                return Ok(Some(s));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let v: redis::Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(100)
                .arg("BLOCK")
                .arg(left.min(self.block).as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&self.last)
                .query_async(&mut self.conn)
                .await
                .map_err(Error::from)?;
            for raw in wire::parse_read_reply(v)? {
                self.last = raw.id.clone();
                if let Some(s) = parse_signal(raw)
                    && self.target.as_ref().is_none_or(|t| *t == s.target)
                {
                    self.buffered.push_back(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in [
            SignalKind::Cancel,
            SignalKind::Pause,
            SignalKind::Resume,
            SignalKind::Quiet,
            SignalKind::Stop,
            SignalKind::Custom("x:y".into()),
        ] {
            assert_eq!(SignalKind::parse(&k.to_wire()), Some(k));
        }
        assert_eq!(SignalKind::parse("nap"), None);
        for t in [
            Target::Queue,
            Target::Worker("w-1".into()),
            Target::Job("a:b".into()),
        ] {
            assert_eq!(Target::parse(&t.to_wire()), Some(t));
        }
        assert_eq!(Target::parse("fleet"), None);
    }
}

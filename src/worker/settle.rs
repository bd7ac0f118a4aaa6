//! How a delivery ends. Every delivery that started ends here: [`Ending::decide`] turns what the handler did
//! into an [`Ending`], and [`Settler::settle`] carries it out (completions go on to the acker, failures through
//! `fail.lua`, hand-backs through `release.lua` / `park.lua`), counts it and stops holding the delivery.
//! [`hand_back_pending`] ends the deliveries pending to this consumer that no job task will end.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::acker::Completion;
use super::config::{WorkerConfig, backoff};
use super::control::Impairment;
use super::retries::Retries;
use super::shared::Shared;
use crate::identity::now_ms;
use crate::job::{FailAction, JobError};
use crate::keys::GROUP;
use crate::priority::{address, split_address};
use crate::scripts::Call;
use crate::scripts::{self, DeliveryRef, Fail, FailMode, FailOutcome, HandBack};
use crate::wire::{self, DeadReason};

/// What happened to a handler call.
pub(super) enum Outcome<R> {
    /// It returned.
    Returned(std::result::Result<R, JobError>),
    /// It panicked, with this payload.
    Panicked(Box<dyn Any + Send>),
    /// It was dropped at the shutdown deadline.
    Dropped,
    /// It ran past its timeout (this long) and then failed (with this message) or, still running a grace later,
    /// was dropped (`None`).
    TimedOut(Duration, Option<String>),
}

/// How a delivery ends.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Ending {
    /// Completed: the acker acks it (with the CBOR result; empty = none).
    Complete { result: Vec<u8>, touched: bool },
    /// Failed: retried after `delay` if attempts remain, dead-lettered as exhausted otherwise.
    Retry { delay: Duration },
    /// Dead-lettered now.
    Dead(DeadReason),
    /// Ended as cancelled (a cancel signal reached it).
    Cancel,
    /// Handed back for immediate redelivery, the attempt not counted.
    HandBack,
    /// Parked until resumed (its job was paused), the attempt not counted.
    Park,
    /// Left pending: dropped at the shutdown deadline, handed back by the final sweep.
    Abandon,
}

impl Ending {
    /// The ending for a handler's `outcome` and its error text. `cancelled` / `parked`: a signal asked to cancel
    /// or park this delivery. `jitter` in [0, 1) spreads retry delays.
    pub(super) fn decide<R: Serialize + 'static>(
        outcome: Outcome<R>,
        cancelled: bool,
        parked: bool,
        attempt: u32,
        config: &WorkerConfig,
        jitter: f64,
    ) -> (Ending, String) {
        let retry = || Ending::Retry {
            delay: backoff(attempt, config.backoff_base, config.backoff_max, jitter),
        };
        let e = match outcome {
            Outcome::Dropped => return (Ending::Abandon, String::new()),
            Outcome::TimedOut(..) if cancelled => {
                return (Ending::Cancel, "cancelled by signal".into());
            }
            Outcome::TimedOut(after, said) => {
                let mut msg = format!("timeout: the attempt ran past its {after:?} limit");
                if let Some(said) = said {
                    msg = format!("{msg} ({said})");
                }
                return (retry(), msg);
            }
            Outcome::Panicked(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                return (retry(), format!("handler panicked: {msg}"));
            }
            // It finished before a cancellation reached it: it completes.
            // `()`, what most handlers return, stores no result: known without encoding it (an allocation).
            Outcome::Returned(Ok(_))
                if std::any::TypeId::of::<R>() == std::any::TypeId::of::<()>() =>
            {
                let ending = Ending::Complete {
                    result: Vec::new(),
                    touched: false,
                };
                return (ending, String::new());
            }
            Outcome::Returned(Ok(value)) => match wire::encode(&value) {
                Ok(bytes) => {
                    let result = if bytes == [0xf6] { Vec::new() } else { bytes };
                    let ending = Ending::Complete {
                        result,
                        touched: false,
                    };
                    return (ending, String::new());
                }
                Err(e) => JobError::permanent(format!("result cannot be encoded: {e}")),
            },
            Outcome::Returned(Err(e)) if cancelled => JobError::cancelled_by_signal(e.message),
            Outcome::Returned(Err(e)) => e,
        };
        let ending = match e.action {
            FailAction::Cancelled => Ending::Cancel,
            FailAction::Interrupt if parked => Ending::Park,
            FailAction::Interrupt => Ending::HandBack,
            FailAction::Permanent => Ending::Dead(DeadReason::Failed),
            FailAction::Retry(Some(delay)) => Ending::Retry { delay },
            FailAction::Retry(None) => retry(),
        };
        (ending, e.message)
    }
}

/// The delivery that ends.
pub(super) struct Finished {
    /// Its address ([`crate::priority::address`]: the entry id, with its level above 0).
    pub(super) entry_id: Arc<str>,
    pub(super) token: u64,
    pub(super) job_id: Arc<str>,
    pub(super) attempt: u32,
}

/// Carries out endings.
pub(super) struct Settler {
    shared: Arc<Shared>,
    acks: mpsc::UnboundedSender<Completion>,
}

impl Settler {
    pub(super) fn new(shared: Arc<Shared>, acks: mpsc::UnboundedSender<Completion>) -> Self {
        Settler { shared, acks }
    }

    /// Ends delivery `d` as `ending`; `message` is the error text stored with a failure. A completion ends here
    /// at once (the acker takes it); every other ending returns the Redis call that ends it, boxed: its future
    /// is kilobytes, and a job task that held it inline would copy that much at every spawn and poll.
    pub(super) fn settle<'a>(
        &'a self,
        d: Finished,
        ending: Ending,
        message: &'a str,
    ) -> Option<futures::future::BoxFuture<'a, ()>> {
        match ending {
            Ending::Complete { result, touched } => {
                self.complete(d, result, touched);
                None
            }
            ending => Some(Box::pin(self.end(d, ending, message))),
        }
    }

    /// Hands a completed delivery to the acker, which counts it and stops holding it once the ack is in.
    fn complete(&self, d: Finished, result: Vec<u8>, touched: bool) {
        let _ = self.acks.send(Completion {
            entry_id: d.entry_id,
            token: d.token,
            job_id: d.job_id,
            attempt: d.attempt,
            result,
            touched,
        });
    }

    /// Ends delivery `d` as `ending` (not a completion) through Redis.
    async fn end(&self, d: Finished, ending: Ending, message: &str) {
        let shared = &*self.shared;
        let mode = match ending {
            Ending::Complete { result, touched } => return self.complete(d, result, touched),
            Ending::Abandon => {
                shared.deliveries.forget(&d.entry_id, d.token);
                return;
            }
            Ending::HandBack | Ending::Park => {
                hand_back(shared, &d, message, ending == Ending::Park).await;
                shared.deliveries.forget(&d.entry_id, d.token);
                return;
            }
            Ending::Retry { delay } => FailMode::Retry {
                delay_ms: delay.as_millis() as u64,
            },
            Ending::Dead(reason) => FailMode::Dead(reason),
            Ending::Cancel => FailMode::Cancel {
                retention_ms: shared.config.retention.as_millis().max(1) as u64,
            },
        };
        match record_failure(shared, &d, mode, message).await {
            Some(FailOutcome::RetryScheduled { .. }) => {
                shared.stats.add_retried();
                shared.control.delayed_added();
            }
            Some(FailOutcome::Requeued { .. }) => shared.stats.add_retried(),
            Some(FailOutcome::Dead { .. }) => shared.stats.add_dead(),
            Some(FailOutcome::Cancelled) => shared.stats.add_cancelled(),
            Some(FailOutcome::Stale) => {
                shared.stats.add_stale();
                tracing::warn!(queue = %shared.keys.queue, job = %d.job_id, "failure not recorded: delivery is stale");
            }
            Some(FailOutcome::Gone) | None => {}
        }
        shared.deliveries.forget(&d.entry_id, d.token);
    }

    /// Dead-letters an entry that cannot run (malformed, too large, undecodable), with the reason, under `job_id`
    /// (the id its `id` field names, if a valid one, else the entry id: [`wire::job_id_of`]).
    pub(super) async fn quarantine(
        &self,
        entry_id: Arc<str>,
        job_id: Arc<str>,
        token: u64,
        m: wire::Malformed,
    ) {
        let shared = &*self.shared;
        tracing::warn!(queue = %shared.keys.queue, entry = %entry_id, job = %job_id, reason = m.reason.as_str(), detail = %m.detail, "quarantining entry");
        let d = Finished {
            job_id,
            entry_id,
            token,
            attempt: 0,
        };
        let out = record_failure(shared, &d, FailMode::Dead(m.reason), &m.detail).await;
        if let Some(FailOutcome::Dead { .. }) = out {
            shared.stats.add_malformed();
            shared.stats.add_dead();
        }
    }
}

/// Calls `fail.lua`, retried as [`Retries`] says. `None`: it gave up (at shutdown).
async fn record_failure(
    shared: &Shared,
    d: &Finished,
    mode: FailMode,
    error: &str,
) -> Option<FailOutcome> {
    let mut retries = Retries::new(shared, Impairment::Failures, "fail.lua");
    loop {
        let (level, entry_id) = split_address(&d.entry_id);
        let r = async {
            let mut c = shared.client.conn().await?;
            let call = Fail {
                delivery: DeliveryRef {
                    entry_id,
                    token: d.token,
                },
                job_id: &d.job_id,
                now_ms: now_ms(),
                mode,
                error,
            };
            shared
                .stats
                .timed(
                    Call::Fail,
                    scripts::fail(&mut c, &shared.caller().at(level), call),
                )
                .await
        }
        .await;
        match r {
            Ok(out) => {
                retries.landed();
                return Some(out);
            }
            Err(e) if retries.again(&e).await => {}
            Err(e) => {
                tracing::error!(error = %e, job = %d.job_id, "could not record a failure; the job will be reclaimed");
                return None;
            }
        }
    }
}

/// Releases one delivery for immediate redelivery, or parks it (`park`: its job was paused), without counting
/// the attempt.
async fn hand_back(shared: &Shared, d: &Finished, why: &str, park: bool) {
    let (level, entry_id) = split_address(&d.entry_id);
    let delivery = DeliveryRef {
        entry_id,
        token: d.token,
    };
    let r = async {
        let mut c = shared.client.conn().await?;
        let caller = shared.caller().at(level);
        if park {
            shared
                .stats
                .timed(
                    Call::Park,
                    scripts::park(&mut c, &caller, delivery, now_ms()),
                )
                .await
        } else {
            let one = [delivery];
            let release = scripts::release(&mut c, &caller, now_ms(), &one);
            let codes = shared.stats.timed(Call::Release, release).await?;
            Ok(codes.first().copied().unwrap_or(HandBack::Stale))
        }
    }
    .await;
    match r {
        Ok(HandBack::Done) => {
            shared.stats.add_released();
            tracing::info!(queue = %shared.keys.queue, job = %d.job_id, reason = %why, parked = park, "job handed back");
        }
        Ok(_) => shared.stats.add_stale(),
        // Still pending to us: the final sweep (or the lease expiry) hands it back.
        Err(e) => tracing::warn!(error = %e, job = %d.job_id, "could not hand the job back"),
    }
}

/// Pending entries read per page by [`hand_back_pending`].
const PENDING_PAGE: usize = 500;

/// Hands back every entry pending to this consumer that is not running here (`only_orphans`: after a read the
/// client gave up on, a pause mid-read, or deliveries given up), or all of them (at shutdown, after every job task
/// ended). Returns whether it got through the whole pending list.
pub(super) async fn hand_back_pending(shared: &Shared, only_orphans: bool) -> bool {
    let _claiming = shared.deliveries.claiming().await;
    let mut conn = match shared.client.conn().await {
        Ok(c) => c,
        Err(e) => {
            warn_throttled!(error = %e, "sweep: cannot connect");
            return false;
        }
    };
    for level in 0..shared.control.levels() {
        if !hand_back_level(shared, &mut conn, level, only_orphans).await {
            return false;
        }
    }
    true
}

/// [`hand_back_pending`] on one priority level's stream.
async fn hand_back_level(
    shared: &Shared,
    conn: &mut crate::client::Connection,
    level: u8,
    only_orphans: bool,
) -> bool {
    let mut start = "-".to_owned();
    // Bounded: at most 100 pages.
    for _ in 0..100 {
        let page: redis::RedisResult<Vec<(String, String, u64, u64)>> = redis::cmd("XPENDING")
            .arg(shared.keys.level(level))
            .arg(GROUP)
            .arg(&start)
            .arg("+")
            .arg(PENDING_PAGE)
            .arg(&shared.consumer)
            .query_async(conn)
            .await;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                warn_throttled!(error = %e, "sweep: XPENDING failed");
                return false;
            }
        };
        let Some(last) = page.last() else {
            return true;
        };
        start = format!("({}", last.0);
        let mine: Vec<DeliveryRef<'_>> = page
            .iter()
            .filter(|(id, ..)| !(only_orphans && shared.deliveries.contains(&address(level, id))))
            .map(|(id, _, _, count)| DeliveryRef {
                entry_id: id,
                token: *count,
            })
            .collect();
        if !mine.is_empty() {
            let caller = shared.caller().at(level);
            let release = scripts::release(conn, &caller, now_ms(), &mine);
            match shared.stats.timed(Call::Release, release).await {
                Ok(codes) => {
                    let n = codes.iter().filter(|c| **c == HandBack::Done).count();
                    for _ in 0..n {
                        shared.stats.add_released();
                    }
                    if n > 0 {
                        tracing::info!(queue = %shared.keys.queue, released = n, entries = ?mine, "handed deliveries back for redelivery");
                    }
                }
                Err(e) => {
                    warn_throttled!(error = %e, "sweep: release failed");
                    return false;
                }
            }
        }
        if page.len() < PENDING_PAGE {
            return true;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(outcome: Outcome<u32>, cancelled: bool, parked: bool) -> (Ending, String) {
        Ending::decide(outcome, cancelled, parked, 2, &WorkerConfig::default(), 1.0)
    }

    #[test]
    fn a_result_that_encodes_to_null_stores_none() {
        let stored = |ending: (Ending, String)| match ending.0 {
            Ending::Complete { result, .. } => result,
            other => panic!("not a completion: {other:?}"),
        };
        let config = WorkerConfig::default();
        let unit = Ending::decide(Outcome::Returned(Ok(())), false, false, 1, &config, 0.0);
        assert_eq!(stored(unit), Vec::<u8>::new());
        let none = Outcome::Returned(Ok(None::<u32>));
        assert_eq!(
            stored(Ending::decide(none, false, false, 1, &config, 0.0)),
            Vec::<u8>::new()
        );
        let some = Outcome::Returned(Ok(Some(7u32)));
        assert_eq!(
            stored(Ending::decide(some, false, false, 1, &config, 0.0)),
            vec![7]
        );
    }

    #[test]
    fn what_a_handler_did_decides_the_ending() {
        let ok = |v| Outcome::Returned(Ok(v));
        let err = |e| Outcome::Returned(Err(e));
        assert!(
            matches!(decide(ok(7), false, false).0, Ending::Complete { result, .. } if result == [7])
        );
        assert!(
            matches!(decide(ok(7), true, false).0, Ending::Complete { .. }),
            "finished before the cancellation reached it"
        );
        assert_eq!(
            decide(err(JobError::retry("x")), false, false),
            (
                Ending::Retry {
                    delay: Duration::from_secs(2)
                },
                "x".into()
            )
        );
        assert_eq!(
            decide(err(JobError::retry("x")), true, false).0,
            Ending::Cancel
        );
        assert_eq!(
            decide(
                err(JobError::retry_after("x", Duration::from_millis(5))),
                false,
                false
            )
            .0,
            Ending::Retry {
                delay: Duration::from_millis(5)
            }
        );
        assert_eq!(
            decide(err(JobError::permanent("x")), false, false).0,
            Ending::Dead(DeadReason::Failed)
        );
        assert_eq!(
            decide(err(JobError::interrupted("x")), false, false).0,
            Ending::HandBack
        );
        assert_eq!(
            decide(err(JobError::interrupted("x")), false, true).0,
            Ending::Park
        );
        assert_eq!(decide(Outcome::Dropped, false, false).0, Ending::Abandon);
        let (ending, msg) = decide(Outcome::Panicked(Box::new("boom")), false, false);
        assert!(matches!(ending, Ending::Retry { .. }));
        assert_eq!(msg, "handler panicked: boom");
        let (ending, msg) = decide(
            Outcome::TimedOut(Duration::from_secs(3), None),
            false,
            false,
        );
        assert!(matches!(ending, Ending::Retry { .. }));
        assert_eq!(msg, "timeout: the attempt ran past its 3s limit");
        let said = Some("stopped at row 7".to_owned());
        let (_, msg) = decide(
            Outcome::TimedOut(Duration::from_secs(3), said),
            false,
            false,
        );
        assert_eq!(
            msg,
            "timeout: the attempt ran past its 3s limit (stopped at row 7)"
        );
        assert_eq!(
            decide(Outcome::TimedOut(Duration::from_secs(3), None), true, false).0,
            Ending::Cancel,
            "a cancel asked for meanwhile wins"
        );
    }

    #[test]
    fn a_unit_result_stores_none() {
        let (ending, _) = Ending::decide(
            Outcome::Returned(Ok(())),
            false,
            false,
            1,
            &WorkerConfig::default(),
            0.5,
        );
        assert_eq!(
            ending,
            Ending::Complete {
                result: Vec::new(),
                touched: false
            }
        );
    }
}

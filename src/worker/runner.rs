//! The runner: starts one task per delivery (on a current-thread runtime, one per read). It parses and decodes
//! the entry (quarantining what cannot run), tracks the delivery, runs the handler, and hands what the handler
//! did to the settler. At shutdown it waits for running jobs, then cancels and finally drops them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::deliveries::Tracked;
use super::settle::{Ending, Finished, Outcome, Settler};
use super::shared::Shared;
use super::slots::Ticket;
use crate::job::{Job, JobContext, JobError, JobStart};
use crate::wire::{self, DeadReason, RawEntry};

/// A job handler: any `Fn(Job<T>) -> impl Future<Output = Result<R, JobError>>` where `R` (the result) is
/// serializable; a result that encodes to CBOR `null` (such as `()`) stores none.
pub(super) trait Handler<T>: Send + Sync + 'static {
    /// The result type.
    type Output: Serialize + Send + 'static;
    /// Runs the handler on one job.
    fn call(
        &self,
        job: Job<T>,
    ) -> futures::future::BoxFuture<'static, std::result::Result<Self::Output, JobError>>;
}

impl<T, R, F, Fut> Handler<T> for F
where
    T: Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<R, JobError>> + Send + 'static,
{
    type Output = R;
    fn call(
        &self,
        job: Job<T>,
    ) -> futures::future::BoxFuture<'static, std::result::Result<R, JobError>> {
        Box::pin(self(job))
    }
}

/// Everything a job task needs.
pub(super) struct Runner<T, H> {
    shared: Arc<Shared>,
    handler: H,
    _job: std::marker::PhantomData<fn(T)>,
    ctx: Arc<JobContext>,
    settler: Settler,
    tasks: TaskTracker,
    /// Start a read's deliveries in one task rather than one each (see [`Runner::dispatch_read`]).
    one_task_per_read: bool,
    /// Fires when jobs still running after the shutdown deadline and its grace second are dropped.
    abort: CancellationToken,
}

impl<T, H> Runner<T, H>
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    pub(super) fn new(
        shared: Arc<Shared>,
        handler: H,
        ctx: Arc<JobContext>,
        settler: Settler,
    ) -> Self {
        Runner {
            shared,
            handler,
            _job: std::marker::PhantomData,
            ctx,
            settler,
            tasks: TaskTracker::new(),
            one_task_per_read: tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread),
            abort: CancellationToken::new(),
        }
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Starts one delivery (or quarantines it) in its own task, which frees `place` (its room, see
    /// [`Shared::room`]) when the delivery ends. It waits for a handler slot in line, at the `front` for a stalled
    /// delivery taken back.
    pub(super) fn dispatch(
        self: &Arc<Self>,
        raw: RawEntry,
        level: u8,
        token: u64,
        place: OwnedSemaphorePermit,
        front: bool,
    ) {
        if let Some(job) = self.prepare(raw, level, token, place, front) {
            self.tasks.spawn(job);
        }
    }

    /// Starts the new deliveries of one read (delivery count 1), in the order read, as [`Runner::dispatch`]
    /// does. On a multi-threaded runtime each job has a task of its own, so handlers run in parallel; on a
    /// current-thread runtime (such as [`dedicated_thread`](super::WorkerConfig::dedicated_thread)'s), where
    /// nothing runs in parallel anyway, the read's jobs share one task: there a spawn per job cost more than the
    /// rest of a no-op job's start.
    pub(super) fn dispatch_read(
        self: &Arc<Self>,
        entries: impl Iterator<Item = (u8, RawEntry, OwnedSemaphorePermit)>,
    ) {
        if !self.one_task_per_read {
            for (level, raw, place) in entries {
                self.dispatch(raw, level, 1, place, false);
            }
            return;
        }
        let jobs: futures::stream::FuturesUnordered<_> = entries
            .filter_map(|(level, raw, place)| self.prepare(raw, level, 1, place, false))
            .collect();
        if !jobs.is_empty() {
            use futures::StreamExt;
            self.tasks.spawn(jobs.for_each(|()| std::future::ready(())));
        }
    }

    /// Tracks one delivery and gives the future that runs it, or quarantines it (or dead-letters it, its
    /// attempts used up) in a task of its own and gives nothing.
    fn prepare(
        self: &Arc<Self>,
        raw: RawEntry,
        level: u8,
        token: u64,
        place: OwnedSemaphorePermit,
        front: bool,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let shared = &self.shared;
        let limit = shared.client.config().max_payload_bytes;
        // Its address here: entry ids repeat across priority levels. Shared by everything that follows the
        // delivery (held deliveries, its ending, the acker), as its job id is: one allocation each per job.
        let entry_id: Arc<str> = Arc::from(&*crate::priority::address(level, &raw.id));
        let named = wire::job_id_of(&raw);
        let decoded =
            wire::parse_entry(raw, limit).and_then(|env| match wire::decode::<T>(&env.payload) {
                Ok(data) => Ok((env, data)),
                Err(e) => Err(wire::Malformed {
                    reason: DeadReason::Malformed,
                    detail: format!(
                        "payload does not decode as {}: {e}",
                        std::any::type_name::<T>()
                    ),
                }),
            });
        let (mut env, data) = match decoded {
            Ok(ok) => ok,
            Err(m) => {
                // Held while it is dead-lettered, so the orphan sweep leaves it alone.
                let job_id: Arc<str> = named.map_or_else(|| entry_id.clone(), Arc::from);
                shared.deliveries.track(Tracked {
                    entry_id: entry_id.clone(),
                    token,
                    job_id: job_id.clone(),
                    stopping: CancellationToken::new(),
                    cancel: CancellationToken::new(),
                });
                let me = self.clone();
                self.tasks.spawn(async move {
                    me.settler
                        .quarantine(entry_id.clone(), job_id, token, m)
                        .await;
                    me.shared.deliveries.forget(&entry_id, token);
                    drop(place);
                });
                return None;
            }
        };
        let job_id = if named.is_none() {
            // Unnamed: on level 0 its entry id, above it `<entry id>@<level>` (SPEC §1).
            if *env.job_id != *entry_id {
                env.job_id = entry_id.to_string();
            }
            entry_id.clone()
        } else {
            Arc::from(env.job_id.as_str())
        };
        let max_attempts = env.max_attempts.unwrap_or(shared.config.max_attempts);
        let cancel = CancellationToken::new();
        // Not a child of the worker's token (children share one lock across every running job): shutdown fires
        // each held job's token instead, and a job started after that fires at once (below).
        let stopping = CancellationToken::new();
        let fence = shared.deliveries.track(Tracked {
            entry_id: entry_id.clone(),
            token,
            job_id: job_id.clone(),
            stopping: stopping.clone(),
            cancel: cancel.clone(),
        });
        if self.ctx.stopping.is_cancelled() {
            stopping.cancel();
        }
        let touched = Arc::new(AtomicBool::new(false));
        let start = JobStart {
            token,
            level,
            consumer: shared.consumer.clone(),
            max_attempts,
            timeout: shared.config.timeout,
            cancel,
            stopping,
            touched: touched.clone(),
            ctx: self.ctx.clone(),
        };
        let job = Job::new(data, env, start);
        let d = Finished {
            entry_id,
            token,
            job_id,
            attempt: job.attempt(),
        };
        if job.attempt() > max_attempts {
            // Its attempts were used up before this delivery (attempts recorded on the entry by another client,
            // say): dead-letter it without running it.
            let me = self.clone();
            let why = format!(
                "attempts used up before this delivery ran (attempt {} of {max_attempts})",
                job.attempt()
            );
            drop(job);
            self.tasks.spawn(async move {
                if let Some(end) = me
                    .settler
                    .settle(d, Ending::Dead(DeadReason::Exhausted), &why)
                {
                    end.await;
                }
                drop(place);
            });
            return None;
        }
        // In line now, in dispatch order: prefetched jobs start in the order they were read.
        let ticket = shared.slots.queue(front);
        let me = self.clone();
        Some(async move { me.run_one(job, d, touched, fence, place, ticket).await })
    }

    /// Waits for a handler slot, runs the handler on `job`, decides how the delivery ends and settles it. A
    /// fenced delivery (given up by this worker) ends without a write, and its handler is dropped if it runs on
    /// past the fence's grace. A delivery asked to stop, cancelled or fenced before it got a slot ends without
    /// running (handed back, parked or cancelled; the attempt not counted).
    async fn run_one(
        self: Arc<Self>,
        job: Job<T>,
        d: Finished,
        touched: Arc<AtomicBool>,
        fence: CancellationToken,
        place: OwnedSemaphorePermit,
        ticket: Ticket,
    ) {
        let shared = &self.shared;
        // The slot first: a free one is taken without registering a waiter on each token (three locks and list
        // operations per job); what fired meanwhile is checked right after.
        let slot = tokio::select! {
            biased;
            s = ticket.slot() => Some(s),
            _ = fence.cancelled() => None,
            _ = job.cancelled().cancelled() => None,
            _ = job.stopping().cancelled() => None,
        };
        let unwanted =
            fence.is_cancelled() || job.cancelled().is_cancelled() || job.stopping().is_cancelled();
        let Some(slot) = slot.filter(|_| !unwanted) else {
            drop(job);
            // Boxed: rare, and its future would otherwise make every job task's larger.
            Box::pin(self.end_unstarted(d, &fence)).await;
            drop(place);
            return;
        };
        let span = job_span(shared, &d, &job);
        let timeout = job.timeout();
        let cancel = job.cancelled().clone();
        let mut run = AssertUnwindSafe(self.handler.call(job).instrument(span)).catch_unwind();
        shared.control.job_started();
        shared.deliveries.started(&d.entry_id, d.token);
        let started = std::time::Instant::now();
        let grace = shared.config.fence_grace();
        // A handler done at its first poll needs no watching; one that waits is watched in a future of its own
        // (its timers and selects are most of a job task's size, which every spawn copies).
        let outcome = match futures::poll!(&mut run) {
            std::task::Poll::Ready(r) => returned(r),
            std::task::Poll::Pending => {
                Box::pin(self.watch(run, &fence, timeout, &cancel, grace)).await
            }
        };
        shared.control.job_ended();
        let took = started.elapsed();
        shared.control.record_run(took);
        #[cfg(feature = "metrics")]
        {
            // Waited since its entry was added (the entry id's time), as far as the clocks agree.
            let waited = wire::entry_id_ms(crate::priority::split_address(&d.entry_id).1)
                .map_or(0, |ms| {
                    crate::identity::now_ms().saturating_sub(ms + took.as_millis() as u64)
                });
            shared
                .stats
                .observe_run(took, std::time::Duration::from_millis(waited));
        }
        drop(slot);
        if fence.is_cancelled() {
            shared.stats.add_fenced();
            self.let_go_fenced(&d);
            tracing::warn!(queue = %shared.keys.queue, job = %d.job_id, "delivery given up (fenced): not ended here");
            return;
        }
        // Taken whatever the outcome, so no request outlives its delivery.
        let cancelled = shared.deliveries.take_cancel(&d.entry_id, d.token);
        let parked = shared.deliveries.take_park(&d.entry_id, d.token);
        let (mut ending, message) = Ending::decide(
            outcome,
            cancelled,
            parked,
            d.attempt,
            &shared.config,
            rand::random::<f64>(),
        );
        if let Ending::Complete { touched: t, .. } = &mut ending {
            *t = touched.load(Ordering::Relaxed);
        }
        if let Some(end) = self.settler.settle(d, ending, &message) {
            end.await;
        }
        drop(place);
    }

    /// Runs a started handler to its outcome: what it returned, or dropped at the shutdown deadline or past the
    /// fence's grace, or timed out. At the `timeout` its `cancel` token fires; what it returns within `grace`
    /// after still counts if it completed (the work is done), and anything else, or still running then, is a
    /// timeout.
    async fn watch<R>(
        &self,
        run: impl Future<Output = std::thread::Result<std::result::Result<R, JobError>>>,
        fence: &CancellationToken,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
        grace: Duration,
    ) -> Outcome<R> {
        let fenced = async {
            fence.cancelled().await;
            tokio::time::sleep(grace).await
        };
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(run, fenced);
        // The deadline first: a handler that gives up at its time limit too (its own timer of the same length,
        // as `rill work` has) is a timeout, not its own error; one that returns a value then still completes
        // (below). Then what it returned, over an abort or a fence that fired at the same time (a fenced result
        // is not written: `run_one` checks the fence).
        tokio::select! {
            biased;
            _ = deadline => {}
            r = &mut run => return returned(r),
            _ = self.abort.cancelled() => return Outcome::Dropped,
            _ = &mut fenced => return Outcome::Dropped,
        }
        let after = timeout.unwrap_or_default();
        cancel.cancel();
        tokio::select! {
            r = &mut run => match r {
                Ok(Ok(value)) => Outcome::Returned(Ok(value)),
                Ok(Err(e)) => Outcome::TimedOut(after, Some(e.message)),
                Err(_) => Outcome::TimedOut(after, Some("handler panicked".into())),
            },
            _ = self.abort.cancelled() => Outcome::Dropped,
            _ = &mut fenced => Outcome::Dropped,
            _ = tokio::time::sleep(grace) => Outcome::TimedOut(after, None),
        }
    }

    /// Ends a delivery that never got a handler slot: fenced (another worker may own it: write nothing, hand it
    /// back once Redis answers), cancelled by a signal, parked by one, or handed back (shutdown, pause, quiet).
    async fn end_unstarted(&self, d: Finished, fence: &CancellationToken) {
        let shared = &self.shared;
        if fence.is_cancelled() {
            self.let_go_fenced(&d);
            return;
        }
        let (ending, why) = if shared.deliveries.take_cancel(&d.entry_id, d.token) {
            (Ending::Cancel, "cancelled before it started")
        } else if shared.deliveries.take_park(&d.entry_id, d.token) {
            (Ending::Park, "paused before it started")
        } else {
            (
                Ending::HandBack,
                "not started: the worker is stopping or paused",
            )
        };
        if let Some(end) = self.settler.settle(d, ending, why) {
            end.await;
        }
    }

    /// A fenced delivery whose handler has stopped (or never started): another worker may own it now, so nothing
    /// is written for it; its requests are dropped and, once Redis answers, its entry is handed back rather than
    /// left to wait out its lease.
    fn let_go_fenced(&self, d: &Finished) {
        let shared = &self.shared;
        shared.deliveries.take_cancel(&d.entry_id, d.token);
        shared.deliveries.take_park(&d.entry_id, d.token);
        shared.deliveries.let_go(&d.entry_id, d.token);
        shared.control.request_sweep();
    }
}

/// What a handler's run came to: its result, or its panic.
fn returned<R>(r: std::thread::Result<std::result::Result<R, JobError>>) -> Outcome<R> {
    match r {
        Ok(returned) => Outcome::Returned(returned),
        Err(panic) => Outcome::Panicked(panic),
    }
}

/// The span a handler runs in, naming its job, so whatever it logs says which job and attempt it was; it records
/// the W3C trace context the producer sent along (and, with feature `otel`, continues that trace as a messaging
/// `process` span).
fn job_span<T>(shared: &Shared, d: &Finished, job: &Job<T>) -> tracing::Span {
    let text = |name| job.header(name).and_then(|v| std::str::from_utf8(v).ok());
    #[cfg(not(feature = "otel"))]
    let span = tracing::info_span!(
        "rill.job",
        queue = %shared.keys.queue,
        job = %d.job_id,
        attempt = d.attempt,
        entry = %d.entry_id,
        traceparent = tracing::field::Empty,
    );
    #[cfg(feature = "otel")]
    let span = tracing::info_span!(
        "rill.job",
        otel.name = %format_args!("process {}", shared.keys.queue),
        otel.kind = "consumer",
        messaging.system = "rill",
        messaging.operation.type = "process",
        messaging.destination.name = %shared.keys.queue,
        messaging.message.id = %d.job_id,
        queue = %shared.keys.queue,
        job = %d.job_id,
        attempt = d.attempt,
        entry = %d.entry_id,
        traceparent = tracing::field::Empty,
    );
    if let Some(tp) = text("x-traceparent") {
        span.record("traceparent", tracing::field::display(tp));
        #[cfg(feature = "otel")]
        crate::otel::continue_trace(&span, tp, text(crate::otel::TRACESTATE));
    }
    span
}

impl<T, H> Runner<T, H> {
    /// Waits up to `timeout` for running jobs; then cancels them (their cancellation tokens fire) and, one second
    /// later, drops those still running (their deliveries stay pending for the final sweep).
    pub(super) async fn finish(&self, timeout: Duration) {
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(queue = %self.shared.keys.queue, running = self.shared.control.running(), "shutdown timeout: cancelling running jobs");
        self.shared.deliveries.cancel_all();
        if tokio::time::timeout(Duration::from_secs(1), self.tasks.wait())
            .await
            .is_err()
        {
            self.abort.cancel();
            self.tasks.wait().await;
        }
    }
}

//! Whether a worker takes new jobs and how it reports itself: the gate (queue paused, worker quiet, worker
//! impaired), a stop request, the draining flag and the count of running handlers. The signal listener,
//! shutdown and the parts that end deliveries change it; the fetch loop waits on the gate; the heartbeat reads
//! the status.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::priority::Priorities;
use crate::scripts::Limits;

/// How far ahead a worker prefetches: the deliveries it expects to start within this time.
pub(super) const PREFETCH_HORIZON: Duration = Duration::from_millis(100);

/// What holds the fetch loop back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Gate {
    paused: bool,
    quiet: bool,
    /// Deliveries cannot be ended (completions or failures refused): taking more would only strand them.
    impaired: bool,
}

impl Gate {
    /// Whether new jobs may be taken.
    pub(super) fn is_open(self) -> bool {
        !self.paused && !self.quiet && !self.impaired
    }

    /// Whether it is closed because the worker is impaired.
    pub(super) fn is_impaired(self) -> bool {
        self.impaired
    }
}

/// What cannot be done while a worker is impaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Impairment {
    /// Completions (`ack.lua`) fail.
    Acks,
    /// Failures, retries and dead letters (`fail.lua`) fail.
    Failures,
}

/// The worker's run state, changed by signals and shutdown.
#[derive(Debug)]
pub(super) struct Control {
    gate: watch::Sender<Gate>,
    stop_requested: CancellationToken,
    draining: AtomicBool,
    running: AtomicU64,
    /// Why the worker is impaired, per [`Impairment`] (acks, failures).
    impairments: std::sync::Mutex<[Option<String>; 2]>,
    /// When the last heartbeat that landed was sent: how long others have had no sign of life from this worker
    /// is at most the time since then.
    last_beat: std::sync::Mutex<Instant>,
    /// Deliveries were given up: hand back whatever is pending to this consumer once Redis answers again.
    sweep_requested: AtomicBool,
    /// When a read was last abandoned (failed or dropped after it was sent): Redis may still execute it later.
    abandoned_read: std::sync::Mutex<Option<Instant>>,
    /// Other workers the last heartbeat found silent past the crash threshold, not yet looked at.
    crashed: std::sync::Mutex<Vec<String>>,
    /// This worker put a job on the delayed set (a retry): the promoter looks at the set again.
    delayed_added: tokio::sync::Notify,
    /// The queue's limits ([`Limits`] as a number): new jobs are read through `limit.lua` under any.
    limits: std::sync::atomic::AtomicU8,
    /// Moving average of how long handlers run, µs (0 = none has finished yet).
    run_us: AtomicU64,
    /// The queue's priority levels (learnt at start and by every promoter pass), and a count of changes so the
    /// fetch loop notices one.
    priorities: std::sync::Mutex<(u64, Priorities)>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            gate: watch::Sender::new(Gate::default()),
            stop_requested: CancellationToken::new(),
            draining: AtomicBool::new(false),
            running: AtomicU64::new(0),
            impairments: Default::default(),
            last_beat: std::sync::Mutex::new(Instant::now()),
            sweep_requested: AtomicBool::new(false),
            abandoned_read: std::sync::Mutex::new(None),
            crashed: std::sync::Mutex::new(Vec::new()),
            delayed_added: tokio::sync::Notify::new(),
            limits: Default::default(),
            run_us: AtomicU64::new(0),
            priorities: Default::default(),
        }
    }
}

impl Control {
    /// Follows the gate (the fetch loop).
    pub(super) fn gate(&self) -> watch::Receiver<Gate> {
        self.gate.subscribe()
    }

    /// Sets whether the queue is paused, waking the fetch loop only if that changes anything.
    pub(super) fn set_paused(&self, paused: bool) {
        self.change(|g| g.paused = paused);
    }

    /// Stops taking new jobs for good (running ones go on).
    pub(super) fn quiet(&self) {
        self.change(|g| g.quiet = true);
    }

    fn change(&self, f: impl FnOnce(&mut Gate)) {
        self.gate.send_if_modified(|g| {
            let before = *g;
            f(g);
            *g != before
        });
    }

    /// Records that `what` fails (`reason`): the gate closes and the status says `degraded` until
    /// [`Control::restore`].
    pub(super) fn impair(&self, what: Impairment, reason: String) {
        self.impairments.lock().expect("impairments lock")[what as usize] = Some(reason);
        self.change(|g| g.impaired = true);
    }

    /// Records that `what` works again; the gate reopens once nothing is impaired.
    pub(super) fn restore(&self, what: Impairment) {
        let any = {
            let mut imp = self.impairments.lock().expect("impairments lock");
            if imp[what as usize].take().is_none() {
                return;
            }
            imp.iter().any(Option::is_some)
        };
        self.change(|g| g.impaired = any);
    }

    /// Why the worker is impaired, if it is.
    pub(super) fn impairment(&self) -> Option<String> {
        let imp = self.impairments.lock().expect("impairments lock");
        let reasons: Vec<&str> = imp.iter().flatten().map(String::as_str).collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// Asks the worker to shut down gracefully (a `stop` signal).
    pub(super) fn request_stop(&self) {
        self.stop_requested.cancel();
    }

    /// Fires when a stop was requested.
    pub(super) fn stop_requested(&self) -> CancellationToken {
        self.stop_requested.clone()
    }

    /// Shutdown has begun.
    pub(super) fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// A heartbeat sent at `sent` landed, and found `crashed` silent.
    pub(super) fn beat_landed(&self, sent: Instant, crashed: Vec<String>) {
        *self.last_beat.lock().expect("beat lock") = sent;
        *self.crashed.lock().expect("crashed lock") = crashed;
    }

    /// The workers the last beat found silent (each handed out once: the next beat lists them again if they are
    /// still in the registry).
    pub(super) fn take_crashed(&self) -> Vec<String> {
        std::mem::take(&mut *self.crashed.lock().expect("crashed lock"))
    }

    /// The queue's limits (learnt at start and by every promoter pass).
    pub(super) fn set_limits(&self, limits: Limits) {
        self.limits.store(limits as u8, Ordering::Relaxed);
    }

    /// The queue's priority levels, as last read.
    pub(super) fn set_priorities(&self, p: Priorities) {
        let mut cur = self.priorities.lock().expect("priorities lock");
        if cur.1 != p {
            *cur = (cur.0 + 1, p);
        }
    }

    /// The queue's priority levels and how many times they changed, unless that count is still `seen`.
    pub(super) fn priorities_since(&self, seen: u64) -> Option<(u64, Priorities)> {
        let p = self.priorities.lock().expect("priorities lock");
        (p.0 != seen).then(|| p.clone())
    }

    /// How many priority levels the queue has (1: none).
    pub(super) fn levels(&self) -> u8 {
        self.priorities.lock().expect("priorities lock").1.levels()
    }

    /// The queue has a rate or concurrency limit: new jobs are read through `limit.lua`.
    pub(super) fn limited(&self) -> bool {
        self.limits.load(Ordering::Relaxed) != Limits::None as u8
    }

    /// This worker scheduled a retry: wake the promoter, which may be sleeping past its due time.
    pub(super) fn delayed_added(&self) {
        self.delayed_added.notify_one();
    }

    /// Resolves once [`Control::delayed_added`] is called (at once if it was called since the last wait).
    pub(super) async fn delayed_added_wait(&self) {
        self.delayed_added.notified().await;
    }

    /// A read was sent and then given up on (an error, or dropped mid-read).
    pub(super) fn read_abandoned(&self) {
        *self.abandoned_read.lock().expect("read lock") = Some(Instant::now());
    }

    /// Whether a read was abandoned within `window`: Redis may still run it late (it was queued behind a stall)
    /// and assign entries nobody here will start.
    pub(super) fn abandoned_read_within(&self, window: Duration) -> bool {
        self.abandoned_read
            .lock()
            .expect("read lock")
            .is_some_and(|t| t.elapsed() < window)
    }

    /// Time since the last heartbeat that landed was sent.
    pub(super) fn since_last_beat(&self) -> Duration {
        self.last_beat.lock().expect("beat lock").elapsed()
    }

    /// Asks the fetch loop to hand back this consumer's orphaned pending entries after its next good read.
    pub(super) fn request_sweep(&self) {
        self.sweep_requested.store(true, Ordering::Relaxed);
    }

    /// Whether a sweep was asked for (and forgets the request).
    pub(super) fn take_sweep(&self) -> bool {
        self.sweep_requested.swap(false, Ordering::Relaxed)
    }

    /// Whether shutdown has begun.
    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A handler starts running.
    pub(super) fn job_started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// A handler has returned (or was dropped).
    pub(super) fn job_ended(&self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records how long a handler ran (a moving average over about the last eight runs).
    pub(super) fn record_run(&self, took: Duration) {
        let us = (took.as_micros() as u64).max(1);
        // One writer at a time in practice (job tasks finish at different moments); a lost update only delays
        // the average by one sample.
        let old = self.run_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { old - old / 8 + us / 8 };
        self.run_us.store(new.max(1), Ordering::Relaxed);
    }

    /// How many deliveries beyond `concurrency` may wait here for a slot: as many as `concurrency` handlers are
    /// expected to start within [`PREFETCH_HORIZON`], at most `max`, and none before a handler has finished
    /// (nothing is known of how long jobs take). Long jobs thus get no prefetch, and wait in Redis where any
    /// worker can take them.
    pub(super) fn prefetch_allowed(&self, concurrency: usize, max: usize) -> usize {
        let us = self.run_us.load(Ordering::Relaxed);
        // Under a rate limit a job is read only when it can start: a start is counted when it is read. (Under a
        // concurrency limit alone a prefetched job counts as handed out, which is what that limit counts.)
        if us == 0 || max == 0 || self.limits.load(Ordering::Relaxed) == Limits::Rate as u8 {
            return 0;
        }
        let starts = PREFETCH_HORIZON.as_micros() as u64 * concurrency as u64 / us;
        (starts.min(max as u64)) as usize
    }

    /// Handlers running now: not the held deliveries, which include finished jobs whose ack is on its way.
    pub(super) fn running(&self) -> u64 {
        self.running.load(Ordering::Relaxed)
    }

    /// The registry status: `draining`, `degraded` (impaired: it cannot end deliveries), `paused` (paused queue
    /// or quiet worker), `busy` or `idle`.
    pub(super) fn status(&self) -> &'static str {
        if self.draining.load(Ordering::Relaxed) {
            "draining"
        } else if self.gate.borrow().is_impaired() {
            "degraded"
        } else if !self.gate.borrow().is_open() {
            "paused"
        } else if self.running() > 0 {
            "busy"
        } else {
            "idle"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_follows_how_long_handlers_run() {
        let c = Control::default();
        assert_eq!(c.prefetch_allowed(1, 64), 0, "nothing known yet");
        c.record_run(Duration::from_micros(10));
        assert_eq!(c.prefetch_allowed(1, 64), 64, "short jobs: the whole bound");
        assert_eq!(c.prefetch_allowed(1, 0), 0, "disabled");
        let c = Control::default();
        c.record_run(Duration::from_millis(10));
        assert_eq!(c.prefetch_allowed(1, 64), 10, "100 ms of 10 ms jobs");
        assert_eq!(c.prefetch_allowed(4, 64), 40);
        for _ in 0..50 {
            c.record_run(Duration::from_secs(1));
        }
        assert_eq!(
            c.prefetch_allowed(16, 64),
            1,
            "the average moved to the long jobs"
        );
        c.record_run(Duration::from_secs(60));
        assert_eq!(c.prefetch_allowed(16, 64), 0);
    }

    #[test]
    fn status_follows_the_gate_and_the_running_count() {
        let c = Control::default();
        let mut gate = c.gate();
        assert_eq!(c.status(), "idle");
        c.job_started();
        assert_eq!(c.status(), "busy");
        c.set_paused(true);
        assert!(gate.has_changed().unwrap());
        assert!(!gate.borrow_and_update().is_open());
        assert_eq!(c.status(), "paused");
        c.set_paused(true);
        assert!(!gate.has_changed().unwrap(), "no change, no wake-up");
        c.set_paused(false);
        assert!(gate.borrow_and_update().is_open());
        c.impair(Impairment::Acks, "acks refused".into());
        c.impair(Impairment::Failures, "fails refused".into());
        assert_eq!(c.status(), "degraded");
        assert_eq!(c.impairment().unwrap(), "acks refused; fails refused");
        c.restore(Impairment::Acks);
        assert!(
            !gate.borrow_and_update().is_open(),
            "failures still impaired"
        );
        c.restore(Impairment::Failures);
        assert!(gate.borrow_and_update().is_open());
        assert_eq!(c.impairment(), None);
        c.quiet();
        assert!(!gate.borrow_and_update().is_open());
        c.begin_draining();
        assert_eq!(c.status(), "draining");
        c.job_ended();
        assert_eq!(c.running(), 0);
    }
}

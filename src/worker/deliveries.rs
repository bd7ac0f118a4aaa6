//! The deliveries a worker holds: one owner for the map of held deliveries and for the requests signals make
//! of them (cancel a job, park a job). Everything else asks through methods; nothing outside this file locks
//! the map.
//!
//! A delivery is keyed by its entry id and identified by its token (the delivery count when it began): if this
//! worker takes back an entry it was still running, the newer delivery replaces the older one, and every method
//! that names a token leaves a newer delivery alone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// One held delivery: what the lease keeper renews and what signals reach.
#[derive(Debug)]
struct Held {
    token: u64,
    job_id: Arc<str>,
    /// The job's `stopping()` token: asked to checkpoint and yield (shutdown, pause, quiet).
    stopping: CancellationToken,
    /// The job's `cancelled()` token: stop now (cancel signal, lease lost, shutdown deadline).
    cancel: CancellationToken,
    /// Fires when this worker gives the delivery up (fenced): its handler is stopped and nothing is written for
    /// it, because another worker may own it now or soon.
    fence: CancellationToken,
    /// When the last renewal that succeeded was sent (or when the delivery was taken).
    renewed: Instant,
    /// When its handler started, ms since the Unix epoch (0: waiting for a handler slot).
    started_ms: u64,
}

/// A delivery by entry id and token.
pub(super) type DeliveryKey = (String, u64);

/// What [`Deliveries::track`] needs of a new delivery.
pub(super) struct Tracked {
    pub(super) entry_id: Arc<str>,
    pub(super) token: u64,
    pub(super) job_id: Arc<str>,
    pub(super) stopping: CancellationToken,
    pub(super) cancel: CancellationToken,
}

/// The held deliveries of one worker and the signals' requests about them.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    held: Mutex<HashMap<Arc<str>, Held>>,
    /// Deliveries whose job a signal cancelled: they end as cancelled when the handler returns an error.
    cancel_requested: Mutex<HashSet<DeliveryKey>>,
    /// Deliveries whose job a signal paused: parked instead of handed back when they yield.
    park_requested: Mutex<HashSet<DeliveryKey>>,
    /// Deliveries given up (fenced) whose handlers may still be running: not held, but not orphans either.
    letting_go: Mutex<HashSet<DeliveryKey>>,
    /// Held while taking entries and tracking them, and while handing back this consumer's pending entries, so
    /// a hand-back never takes an entry that is about to run here.
    claim: tokio::sync::Mutex<()>,
}

impl Deliveries {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Held>> {
        self.held.lock().expect("held deliveries lock")
    }

    /// Serialises taking entries (and tracking them) against handing back pending ones.
    pub(super) async fn claiming(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.claim.lock().await
    }

    /// Starts holding a delivery; returns its fence (see [`Deliveries::fence_all`]). If this worker still held
    /// the same entry under an older token (its lease had expired and it took the entry back), that older delivery
    /// is stale now: it is fenced.
    pub(super) fn track(&self, t: Tracked) -> CancellationToken {
        let fence = CancellationToken::new();
        let previous = self.held().insert(
            t.entry_id,
            Held {
                token: t.token,
                job_id: t.job_id,
                stopping: t.stopping,
                cancel: t.cancel,
                fence: fence.clone(),
                renewed: Instant::now(),
                started_ms: 0,
            },
        );
        if let Some(old) = previous {
            old.give_up();
        }
        fence
    }

    /// Stops holding one delivery (a newer delivery of the same entry stays).
    pub(super) fn forget(&self, entry_id: &str, token: u64) {
        self.forget_many([(entry_id, token)]);
    }

    /// Stops holding several deliveries under one lock (and forgets any of them that had been given up: they
    /// have ended after all).
    pub(super) fn forget_many<'a>(&self, deliveries: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut held = self.held();
        let mut letting_go = self.letting_go.lock().expect("letting-go lock");
        for (entry_id, token) in deliveries {
            if held.get(entry_id).is_some_and(|h| h.token == token) {
                held.remove(entry_id);
            }
            // Almost always empty: no allocation per job on the hot path.
            if !letting_go.is_empty() {
                letting_go.remove(&(entry_id.to_owned(), token));
            }
        }
    }

    /// Its handler started now (what the registry shows as running, and since when).
    pub(super) fn started(&self, entry_id: &str, token: u64) {
        if let Some(h) = self.held().get_mut(entry_id).filter(|h| h.token == token) {
            h.started_ms = crate::identity::now_ms();
        }
    }

    /// Up to `limit` jobs whose handlers run now, longest-running first: (started, ms since the Unix epoch; job
    /// id).
    pub(super) fn running(&self, limit: usize) -> Vec<(u64, String)> {
        let mut running: Vec<(u64, String)> = self
            .held()
            .values()
            .filter(|h| h.started_ms > 0)
            .map(|h| (h.started_ms, h.job_id.to_string()))
            .collect();
        running.sort_unstable();
        running.truncate(limit);
        running
    }

    /// Every held delivery, for renewal.
    pub(super) fn snapshot(&self) -> Vec<DeliveryKey> {
        self.held()
            .iter()
            .map(|(e, h)| (e.to_string(), h.token))
            .collect()
    }

    /// Whether this worker holds (any delivery of) the entry, or gave it up and its handler has not ended yet:
    /// either way it is not an orphan to hand back.
    pub(super) fn contains(&self, entry_id: &str) -> bool {
        self.held().contains_key(entry_id)
            || self
                .letting_go
                .lock()
                .expect("letting-go lock")
                .iter()
                .any(|(e, _)| e == entry_id)
    }

    /// The handler of a given-up delivery has ended: from now on its entry is an orphan to hand back.
    pub(super) fn let_go(&self, entry_id: &str, token: u64) {
        let mut letting_go = self.letting_go.lock().expect("letting-go lock");
        if !letting_go.is_empty() {
            letting_go.remove(&(entry_id.to_owned(), token));
        }
    }

    fn give_up(&self, entry_id: &str, h: &Held) {
        self.letting_go
            .lock()
            .expect("letting-go lock")
            .insert((entry_id.to_owned(), h.token));
        h.give_up();
    }

    /// Records a renewal round sent at `sent`: renewed deliveries are good for another lease from then; lost ones
    /// (taken by another worker) are fenced. Returns the entry ids lost.
    pub(super) fn renewals(
        &self,
        checked: &[DeliveryKey],
        renewed: &[bool],
        sent: Instant,
    ) -> Vec<String> {
        let mut held = self.held();
        let mut lost = Vec::new();
        for ((entry, token), &ok) in checked.iter().zip(renewed) {
            let Some(h) = held.get_mut(entry.as_str()) else {
                continue;
            };
            if h.token != *token {
                continue;
            }
            if ok {
                h.renewed = sent;
            } else if let Some(h) = held.remove(entry.as_str()) {
                self.give_up(entry, &h);
                lost.push(entry.clone());
            }
        }
        lost
    }

    /// Fences the deliveries whose last successful renewal was sent more than `limit` ago (set below the lease,
    /// so this worker lets go before others may reclaim them). Returns their entry ids.
    pub(super) fn fence_overdue(&self, limit: Duration) -> Vec<String> {
        let mut held = self.held();
        let overdue: Vec<String> = held
            .iter()
            .filter(|(_, h)| h.renewed.elapsed() > limit)
            .map(|(entry, _)| entry.to_string())
            .collect();
        for entry in &overdue {
            if let Some(h) = held.remove(entry.as_str()) {
                self.give_up(entry, &h);
            }
        }
        overdue
    }

    /// Fences every held delivery (this worker lost contact with Redis long enough that others may soon judge
    /// it crashed and adopt them). Returns how many.
    pub(super) fn fence_all(&self) -> usize {
        let mut held = self.held();
        let n = held.len();
        for (entry, h) in held.drain() {
            self.give_up(&entry, &h);
        }
        n
    }

    /// A cancel signal for job `job_id`: every held delivery of it is cancelled and will end as cancelled.
    /// Returns whether this worker held one.
    pub(super) fn cancel_job(&self, job_id: &str) -> bool {
        self.request(job_id, &self.cancel_requested, |h| h.cancel.cancel())
    }

    /// A pause signal for job `job_id`: every held delivery of it is asked to yield and will be parked.
    /// Returns whether this worker held one.
    pub(super) fn park_job(&self, job_id: &str) -> bool {
        self.request(job_id, &self.park_requested, |h| h.stopping.cancel())
    }

    fn request(
        &self,
        job_id: &str,
        requests: &Mutex<HashSet<DeliveryKey>>,
        fire: impl Fn(&Held),
    ) -> bool {
        let held = self.held();
        let mut hit = false;
        for (entry, h) in held.iter().filter(|(_, h)| &*h.job_id == job_id) {
            requests
                .lock()
                .expect("requests lock")
                .insert((entry.to_string(), h.token));
            fire(h);
            hit = true;
        }
        hit
    }

    /// Whether a signal cancelled this delivery's job (and forgets the request).
    pub(super) fn take_cancel(&self, entry_id: &str, token: u64) -> bool {
        take(&self.cancel_requested, entry_id, token)
    }

    /// Whether a signal paused this delivery's job (and forgets the request).
    pub(super) fn take_park(&self, entry_id: &str, token: u64) -> bool {
        take(&self.park_requested, entry_id, token)
    }

    /// Asks every held job to checkpoint and yield (shutdown, queue paused, worker quieted).
    pub(super) fn stop_all(&self) {
        for h in self.held().values() {
            h.stopping.cancel();
        }
    }

    /// Cancels every held job (the shutdown deadline passed).
    pub(super) fn cancel_all(&self) {
        for h in self.held().values() {
            h.cancel.cancel();
        }
    }
}

impl Held {
    /// Gives the delivery up: its handler is told to stop (`cancelled()`), and fenced (dropped after a grace,
    /// ended without a write).
    fn give_up(&self) {
        self.cancel.cancel();
        self.fence.cancel();
    }
}

fn take(requests: &Mutex<HashSet<DeliveryKey>>, entry_id: &str, token: u64) -> bool {
    let mut requested = requests.lock().expect("requests lock");
    // Almost always empty: no allocation per job on the hot path.
    !requested.is_empty() && requested.remove(&(entry_id.to_owned(), token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(
        d: &Deliveries,
        entry: &str,
        token: u64,
        job: &str,
    ) -> (CancellationToken, CancellationToken) {
        track_fenced(d, entry, token, job).0
    }

    /// ((stopping, cancel), fence).
    fn track_fenced(
        d: &Deliveries,
        entry: &str,
        token: u64,
        job: &str,
    ) -> ((CancellationToken, CancellationToken), CancellationToken) {
        let (stopping, cancel) = (CancellationToken::new(), CancellationToken::new());
        let fence = d.track(Tracked {
            entry_id: entry.into(),
            token,
            job_id: job.into(),
            stopping: stopping.clone(),
            cancel: cancel.clone(),
        });
        ((stopping, cancel), fence)
    }

    #[test]
    fn a_newer_delivery_replaces_and_cancels_the_older() {
        let d = Deliveries::default();
        let (_, old) = track(&d, "1-0", 1, "a");
        let (_, new) = track(&d, "1-0", 2, "a");
        assert!(old.is_cancelled() && !new.is_cancelled());
        d.forget("1-0", 1);
        assert!(
            d.contains("1-0"),
            "forgetting the older token leaves the newer"
        );
        d.forget("1-0", 2);
        assert!(!d.contains("1-0"));
    }

    #[test]
    fn renewals_keep_or_lose_by_token() {
        let d = Deliveries::default();
        let (_, a) = track(&d, "1-0", 1, "a");
        let (_, b) = track(&d, "2-0", 1, "b");
        let snap = {
            let mut s = d.snapshot();
            s.sort();
            s
        };
        let lost = d.renewals(&snap, &[true, false], Instant::now());
        assert_eq!(lost, vec!["2-0".to_owned()]);
        assert!(!a.is_cancelled() && b.is_cancelled());
        assert_eq!(d.snapshot(), vec![("1-0".to_owned(), 1)]);
        assert!(d.fence_overdue(Duration::from_secs(60)).is_empty());
        assert_eq!(d.fence_overdue(Duration::ZERO), vec!["1-0".to_owned()]);
        assert!(a.is_cancelled());
        assert!(
            d.snapshot().is_empty(),
            "a fenced delivery is no longer held"
        );
    }

    #[test]
    fn fencing_all_lets_every_delivery_go() {
        let d = Deliveries::default();
        let ((_, cancel), fence) = track_fenced(&d, "1-0", 1, "a");
        let (_, newer_fence) = track_fenced(&d, "2-0", 1, "b");
        assert_eq!(d.fence_all(), 2);
        assert!(cancel.is_cancelled() && fence.is_cancelled() && newer_fence.is_cancelled());
        assert!(d.snapshot().is_empty());
        assert_eq!(d.fence_all(), 0);
        // Given up but not yet ended: not an orphan. Its handler ends (or its ack lands): it is.
        assert!(d.contains("1-0") && d.contains("2-0"));
        d.let_go("1-0", 1);
        d.forget("2-0", 1);
        assert!(!d.contains("1-0") && !d.contains("2-0"));
    }

    #[test]
    fn signals_reach_the_job_and_are_taken_once() {
        let d = Deliveries::default();
        let (stopping, cancel) = track(&d, "1-0", 3, "job");
        assert!(!d.cancel_job("other"));
        assert!(d.park_job("job"));
        assert!(stopping.is_cancelled() && !cancel.is_cancelled());
        assert!(d.cancel_job("job"));
        assert!(cancel.is_cancelled());
        assert!(!d.take_cancel("1-0", 2), "another token");
        assert!(d.take_cancel("1-0", 3));
        assert!(!d.take_cancel("1-0", 3), "taken once");
        assert!(d.take_park("1-0", 3));
        assert!(!d.take_park("1-0", 3));
    }
}

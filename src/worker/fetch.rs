//! The fetch loop: takes room for deliveries, recovers stalled jobs once per `reclaim_interval`, and reads new
//! entries with `XREADGROUP ... BLOCK` on its own connection, never more than it has room for; each entry goes to
//! the runner, where it waits for a handler slot. The room is `concurrency` plus a prefetch that follows how long
//! handlers run ([`WorkerConfig::prefetch`](super::WorkerConfig::prefetch)). A paused queue or a quiet worker
//! holds it at the gate.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use super::levels::read_levels;
use super::reclaim;
use super::runner::{Handler, Runner};
use super::settle::hand_back_pending;
use super::shared::Shared;
use super::{ensure_group, ensure_level_groups};
use crate::priority::ReadOrder;
use crate::scripts;
use crate::wire::RawEntry;

/// Longest wait for more room before a read while there is a backlog.
const COALESCE: Duration = Duration::from_millis(1);

/// How long after a read was given up on the reclaim passes still look for entries it assigned late (a command
/// queued behind a stalled Redis runs when the stall ends).
const LATE_READS: Duration = Duration::from_secs(60);

/// Most entries one read asks for.
const MAX_READ: usize = 512;

/// Why a read returned no entries to start.
enum Read {
    /// Entries read, with the priority level each came from, in the order to start them, and room borrowed for
    /// entries beyond what was asked (see [`Fetcher::borrowed`]).
    Entries(Vec<(u8, RawEntry)>, Vec<OwnedSemaphorePermit>),
    /// Nothing to start now (an error was handled, or the gate closed mid-read): go round again.
    Again,
    Shutdown,
}

/// Reads new entries while there is room for them, until `shutdown`.
pub(super) async fn run<T, H>(runner: &Arc<Runner<T, H>>, shutdown: impl Future<Output = ()>)
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    let shared = runner.shared().clone();
    // Stalled jobs are looked for between reads, so a read never blocks past the next reclaim.
    let block = shared.config.block.min(shared.config.reclaim_interval);
    let mut f = Fetcher {
        max_batch: shared.config.concurrency.min(MAX_READ),
        prefetch: 0,
        block,
        conn: None,
        pause: Duration::from_millis(50),
        cursors: vec!["0-0".to_owned(); usize::from(crate::priority::MAX_LEVELS)],
        order: ReadOrder::default(),
        order_seen: 0,
        next_reclaim: Instant::now() + shared.config.reclaim_interval,
        backlog: false,
        drained: [false; crate::priority::MAX_LEVELS as usize],
        borrowed: 0,
        gate: shared.control.gate(),
        shared,
    };
    tokio::pin!(shutdown);
    // Entries read but not started yet: they start while the next read is on its way, so the round trip of one
    // read overlaps the dispatch of the one before (and the jobs, which run when this loop waits).
    let mut unstarted: Option<Batch> = None;
    loop {
        // A paused queue or a quiet worker takes nothing new (running ones go on).
        if !f.gate.borrow().is_open() {
            start(runner, unstarted.take());
        }
        while !f.gate.borrow_and_update().is_open() {
            tokio::select! {
                biased;
                _ = &mut shutdown => return,
                r = f.gate.changed() => if r.is_err() { return },
            }
        }
        f.adjust_prefetch();
        // With entries waiting to start, read on only if half a read's worth of room is free at once (batches
        // stay big, which keeps per-call costs down); otherwise start them and wait for room as usual.
        let mut room = match unstarted.as_ref().and_then(|_| f.free_room()) {
            Some(room) => room,
            None => {
                start(runner, unstarted.take());
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return,
                    s = f.take_room() => match s { Some(s) => s, None => return },
                }
            }
        };
        if f.shared.client.is_closed() {
            start(runner, unstarted.take());
            return;
        }
        if Instant::now() >= f.next_reclaim {
            start(runner, unstarted.take());
            // Stalled jobs have waited a lease already: take as many as can start at once (at least one, which
            // starts at the next free slot, ahead of prefetched jobs), before anything new is read.
            let free = room.len().min(f.shared.slots.available().max(1));
            f.recover(runner, &mut room, free).await;
            if room.is_empty() {
                continue;
            }
        }
        let requested = room.len();
        let read = {
            let read = f.read(requested, &mut shutdown);
            tokio::pin!(read);
            // The first poll sends the read; the entries before it start meanwhile. They are tracked before
            // this loop waits again, so a hand-back the read may run first (a sweep, a pause mid-read) sees them
            // as held: it looks at what is held only once its own `XPENDING` answers.
            let first = futures::poll!(&mut read);
            start(runner, unstarted.take());
            match first {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => read.await,
            }
        };
        let entries = match read {
            Read::Entries(e, extra) => {
                room.extend(extra);
                e
            }
            Read::Again => continue,
            Read::Shutdown => return,
        };
        f.backlog = entries.len() == requested;
        unstarted = Some(Batch { entries, room });
    }
}

/// Entries read, with the room they take.
struct Batch {
    entries: Vec<(u8, RawEntry)>,
    room: Vec<OwnedSemaphorePermit>,
}

/// Hands `batch`'s entries to the runner, in the order they were read.
fn start<T, H>(runner: &Arc<Runner<T, H>>, batch: Option<Batch>)
where
    T: DeserializeOwned + Send + 'static,
    H: Handler<T>,
{
    let Some(Batch { entries, mut room }) = batch else {
        return;
    };
    if entries.len() > room.len() {
        tracing::error!("fetch: more entries than requested");
    }
    // Each entry takes a place; `room` is in no order.
    let places = std::iter::from_fn(move || room.pop());
    runner.dispatch_read(
        entries
            .into_iter()
            .zip(places)
            .map(|((level, raw), place)| (level, raw, place)),
    );
}

/// The fetch loop's state between rounds.
struct Fetcher {
    shared: Arc<Shared>,
    /// Most entries one read asks for (`concurrency` plus the prefetch in effect, at most [`MAX_READ`]).
    max_batch: usize,
    /// Room beyond `concurrency` added to [`Shared::room`] now.
    prefetch: usize,
    block: Duration,
    /// The blocking read's own connection (dropped after an error, reopened on the next read).
    conn: Option<crate::client::BlockingConn>,
    /// Backoff after connection errors.
    pause: Duration,
    /// Stalled-job recovery's XAUTOCLAIM position on each priority level.
    cursors: Vec<String>,
    /// The order the queue's priority levels are read in, read after read.
    order: ReadOrder,
    /// How many changes of the priority levels `order` follows ([`Control::priorities`]).
    ///
    /// [`Control::priorities`]: super::control::Control::priorities
    order_seen: u64,
    next_reclaim: Instant,
    /// The last read was full: more is waiting.
    backlog: bool,
    /// Priority levels whose last read found nothing new (or less than asked): the next read asks them and the
    /// next level in one round trip, rather than one level after the other.
    drained: [bool; crate::priority::MAX_LEVELS as usize],
    /// Room added for entries read beyond what was asked (a level thought drained had new entries): the extra
    /// deliveries are kept, as prefetched ones, rather than handed back; the room is taken away again as it frees.
    borrowed: usize,
    gate: tokio::sync::watch::Receiver<super::control::Gate>,
}

impl Fetcher {
    /// Sets the room for prefetched deliveries to what [`Control::prefetch_allowed`] says now. Room is removed
    /// only as it frees (a delivery already taken keeps its place).
    ///
    /// [`Control::prefetch_allowed`]: super::control::Control::prefetch_allowed
    fn adjust_prefetch(&mut self) {
        let config = &self.shared.config;
        // The room is the worker's: on a partitioned queue one member's loop sizes it.
        let want = if self.shared.prefetch_adjuster {
            self.shared
                .control
                .prefetch_allowed(config.concurrency, config.prefetch)
        } else {
            0
        };
        if want > self.prefetch {
            self.shared.room.add_permits(want - self.prefetch);
            self.prefetch = want;
        } else if want < self.prefetch {
            self.prefetch -= self.shared.room.forget_permits(self.prefetch - want);
        }
        // Half the room: one read can be on its way while the entries of the one before start.
        self.max_batch = (config.concurrency + self.prefetch)
            .div_ceil(2)
            .min(MAX_READ);
        if self.borrowed > 0 {
            self.borrowed -= self.shared.room.forget_permits(self.borrowed);
        }
    }

    /// The room free now (up to a read's worth), if it is at least half a read's worth.
    fn free_room(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        let sem = &self.shared.room;
        let want = (self.max_batch / 2).max(1);
        if sem.available_permits() < want {
            return None;
        }
        let take = sem.available_permits().min(self.max_batch);
        sem.clone()
            .try_acquire_many_owned(take as u32)
            .ok()
            .map(one_each)
    }

    /// Waits for room for a delivery, then takes all the room free (up to a read's worth). With a backlog (the
    /// last read was full), it waits briefly for half a read's worth so reads (and the acks that follow) come in batches:
    /// per-call costs in Redis and in the client are paid once per batch, not per job. Without one, it reads at
    /// once with whatever is free, so latency stays low. `None`: the worker is shutting down.
    async fn take_room(&self) -> Option<Vec<OwnedSemaphorePermit>> {
        let sem = &self.shared.room;
        let first = sem.clone().acquire_owned().await.ok()?;
        let mut room = vec![first];
        while room.len() < self.max_batch {
            match sem.clone().try_acquire_owned() {
                Ok(p) => room.push(p),
                Err(_) => break,
            }
        }
        let half = self.max_batch / 2;
        if self.backlog && room.len() < half {
            let want = (half - room.len()) as u32;
            if let Ok(Ok(more)) =
                tokio::time::timeout(COALESCE, sem.clone().acquire_many_owned(want)).await
            {
                room.extend(one_each(more));
            }
        }
        Some(room)
    }

    /// Recovers up to `free` stalled deliveries into `room` and starts them, first in line for handler slots.
    async fn recover<T, H>(
        &mut self,
        runner: &Arc<Runner<T, H>>,
        room: &mut Vec<OwnedSemaphorePermit>,
        free: usize,
    ) where
        T: DeserializeOwned + Send + 'static,
        H: Handler<T>,
    {
        let shared = &self.shared;
        // Entries pending to this consumer that no handler here ever saw (assigned by a read the client gave up
        // on, executed late by Redis) go back at once, before their lease expires and counts them as an attempt.
        // Only a read given up on lately can do that: otherwise the look would cost a round trip every pass.
        if shared.control.abandoned_read_within(LATE_READS) {
            hand_back_pending(shared, true).await;
        }
        let _claiming = shared.deliveries.claiming().await;
        let found = reclaim::reclaim(shared, free, &mut self.cursors).await;
        for (level, raw, token) in found.taken {
            let Some(place) = room.pop() else { break };
            // First in line: a slot it was counted on may have gone to a prefetched job meanwhile.
            runner.dispatch(raw, level, token, place, true);
        }
        // Stalled jobs come before new ones: while a pass stops short for want of slots, look again at once.
        self.next_reclaim = if found.more {
            Instant::now()
        } else {
            Instant::now() + shared.config.reclaim_interval
        };
    }

    /// One blocking read of up to `count` new entries; on a queue with more partitions than the worker keeps
    /// blocking reads, in a turn (and on a connection) of the worker's [`ReadPool`](super::shared::ReadPool).
    async fn read(
        &mut self,
        count: usize,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Read {
        let Some(pool) = self.shared.reads.clone() else {
            return self.read_once(count, shutdown, self.block).await;
        };
        let turn = tokio::select! {
            biased;
            _ = shutdown.as_mut() => return Read::Shutdown,
            t = pool.turn() => t,
        };
        let Some((_turn, conn)) = turn else {
            return Read::Shutdown;
        };
        if conn.is_some() {
            self.conn = conn;
        }
        let read = self
            .read_once(count, shutdown, pool.block(self.block))
            .await;
        if let Some(c) = self.conn.take() {
            pool.put_back(c);
        }
        read
    }

    async fn read_once(
        &mut self,
        count: usize,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        block: Duration,
    ) -> Read {
        let shared = self.shared.clone();
        if self.conn.is_none() {
            match shared.client.blocking_conn(self.block).await {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    warn_throttled!(error = %e, "fetch: cannot connect; retrying");
                    return self.back_off(shutdown).await;
                }
            }
        }
        // Deliveries given up while Redis was out of reach: hand them back now (before this read, so nothing it
        // returns is mistaken for an orphan), or at the next read if Redis is still away.
        if shared.control.take_sweep() && !hand_back_pending(&shared, true).await {
            shared.control.request_sweep();
        }
        if let Some((seen, priorities)) = shared.control.priorities_since(self.order_seen) {
            self.order_seen = seen;
            // A level added since the worker started has its group (set with the levels), unless Redis lost it.
            if let Err(e) =
                ensure_level_groups(&shared.client, &shared.keys, priorities.levels()).await
            {
                warn_throttled!(error = %e, "cannot create the priority levels' consumer groups");
            }
            self.order = ReadOrder::new(priorities);
        }
        let order = self.order.next();
        if shared.control.limited() {
            return self.read_limited(count, &order, shutdown).await;
        }
        let c = self.conn.as_mut().expect("connection set above");
        let block = block.as_millis().max(1) as u64;
        let read = read_levels(
            c,
            &shared.keys,
            &shared.consumer,
            &order,
            count,
            block,
            &mut self.drained,
        );
        let reply = tokio::select! {
            biased;
            // Dropping the connection (with the worker) makes the server unblock this client, so nothing is
            // assigned to us after we stop; anything assigned meanwhile is handed back by the final sweep.
            _ = shutdown.as_mut() => return Read::Shutdown,
            // Paused or quieted mid-read: drop the blocked read and hand back anything it was assigned.
            _ = self.gate.changed() => {
                self.conn = None;
                shared.control.read_abandoned();
                hand_back_pending(&shared, true).await;
                return Read::Again;
            }
            r = read => r,
        };
        match reply {
            Ok((mut entries, blocked)) => {
                self.pause = Duration::from_millis(50);
                let mut extra = Vec::new();
                if entries.len() > count {
                    let over = entries.len() - count;
                    // Levels read in one round trip: a level thought drained had new entries. Keep them.
                    let borrowed = (!blocked)
                        .then(|| {
                            shared.room.add_permits(over);
                            shared.room.clone().try_acquire_many_owned(over as u32).ok()
                        })
                        .flatten();
                    if let Some(permits) = borrowed {
                        self.borrowed += over;
                        extra = one_each(permits);
                    } else {
                        // A blocking read over several levels can bring up to `count` from each.
                        let excess = entries.split_off(count);
                        hand_back_unread(&shared, excess).await;
                    }
                }
                Read::Entries(entries, extra)
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                self.conn = None;
                tracing::info!(queue = %shared.keys.queue, "consumer group missing (Redis restarted or stream deleted): creating it");
                // The queue set may be gone with it: list the queue again.
                shared.client.forget_listed(&shared.keys);
                if let Err(e) = ensure_group(&shared.client, &shared.keys).await {
                    warn_throttled!(error = %e, "cannot create consumer group");
                }
                // A level may have gone (its stream deleted with it): read the levels again, and have the next read
                // create the groups of the levels there are (not of the ones this worker last knew).
                let levels = async {
                    let mut c = shared.client.conn().await?;
                    crate::queue::read_priorities(&mut c, &shared.keys).await
                }
                .await;
                match levels {
                    Ok(p) => shared.control.set_priorities(p),
                    Err(e) => {
                        warn_throttled!(error = %e, "cannot read the queue's priority levels")
                    }
                }
                self.order_seen = u64::MAX;
                Read::Again
            }
            Err(e) => {
                self.conn = None;
                shared.control.read_abandoned();
                warn_throttled!(error = %e, "fetch: read failed; reconnecting");
                if let Read::Shutdown = self.back_off(shutdown).await {
                    return Read::Shutdown;
                }
                // A read the client gave up on may still have assigned entries to us: hand them back.
                hand_back_pending(&shared, true).await;
                Read::Again
            }
        }
    }

    /// One read under the queue's limits: `limit.lua` reads at most what the rate and the concurrency allow now,
    /// counting it, in one step. With nothing read it waits without a busy loop: until a start is allowed (the
    /// rate), until a job ends somewhere (an event; at most a second, since completions may write none), or for
    /// new entries (an `XREAD`, which hands out nothing, so idle workers hold no share).
    async fn read_limited(
        &mut self,
        count: usize,
        order: &[u8],
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Read {
        let shared = self.shared.clone();
        let c = self.conn.as_mut().expect("connection set by read");
        let streams: Vec<&str> = order.iter().map(|&l| shared.keys.level(l)).collect();
        let read = scripts::read_limited(c, &shared.keys, &streams, &shared.consumer, count).await;
        let (streams, after, block) = match read {
            Err(e) => {
                self.conn = None;
                shared.control.read_abandoned();
                warn_throttled!(error = %e, "fetch: limited read failed; reconnecting");
                return self.back_off(shutdown).await;
            }
            Ok(scripts::LimitedRead::Unlimited) => {
                shared.control.set_limits(scripts::Limits::None);
                return Read::Again;
            }
            Ok(scripts::LimitedRead::Entries(e)) => {
                return Read::Entries(
                    e.into_iter()
                        .map(|(at, raw)| (order.get(at).copied().unwrap_or(0), raw))
                        .collect(),
                    Vec::new(),
                );
            }
            Ok(scripts::LimitedRead::Rate(wait)) => {
                return tokio::select! {
                    biased;
                    _ = shutdown.as_mut() => Read::Shutdown,
                    _ = self.gate.changed() => Read::Again,
                    _ = tokio::time::sleep(wait) => Read::Again,
                };
            }
            Ok(scripts::LimitedRead::Room { after_event }) => (
                vec![shared.keys.events.as_str()],
                vec![after_event],
                self.block.min(Duration::from_secs(1)),
            ),
            Ok(scripts::LimitedRead::Empty { after }) => (streams, after, self.block),
            Ok(scripts::LimitedRead::Again) => return Read::Again,
            // Held keys wait for a job of theirs to end (an event; at most a second, since completions may write
            // none), for their rate's window, or for a new entry that may start.
            Ok(scripts::LimitedRead::Keys {
                after_event,
                after,
                wake,
            }) => {
                let mut all = vec![shared.keys.events.as_str()];
                all.extend(streams);
                let mut ids = vec![after_event];
                ids.extend(after);
                let block = self.block.min(Duration::from_secs(1));
                (all, ids, wake.map_or(block, |w| w.min(block)))
            }
        };
        let wait = async {
            let blocked: redis::RedisResult<redis::Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(block.as_millis().max(1) as u64)
                .arg("STREAMS")
                .arg(&streams)
                .arg(&after)
                .query_async(c)
                .await;
            if let Err(e) = blocked {
                warn_throttled!(error = %e, "fetch: waiting under the queue's limits failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => Read::Shutdown,
            _ = self.gate.changed() => Read::Again,
            _ = wait => Read::Again,
        }
    }

    /// Sleeps the current backoff (doubling it, up to 2 s) unless shutdown comes first.
    async fn back_off(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Read {
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => return Read::Shutdown,
            _ = tokio::time::sleep(self.pause) => {}
        }
        self.pause = (self.pause * 2).min(Duration::from_secs(2));
        Read::Again
    }
}

/// `permits` as one permit per entry, as dispatch expects.
fn one_each(mut permits: OwnedSemaphorePermit) -> Vec<OwnedSemaphorePermit> {
    let mut out = Vec::with_capacity(permits.num_permits());
    while permits.num_permits() > 1 {
        out.extend(permits.split(1));
    }
    out.push(permits);
    out
}

/// Hands back entries read beyond the room for them, at once (they were never tracked or started).
async fn hand_back_unread(shared: &Shared, mut excess: Vec<(u8, RawEntry)>) {
    excess.sort_by_key(|(l, _)| *l);
    for same in excess.chunk_by(|a, b| a.0 == b.0) {
        let refs: Vec<scripts::DeliveryRef<'_>> = same
            .iter()
            .map(|(_, e)| scripts::DeliveryRef {
                entry_id: &e.id,
                token: 1,
            })
            .collect();
        let r = async {
            let mut c = shared.client.conn().await?;
            let caller = shared.caller().at(same[0].0);
            scripts::release(&mut c, &caller, crate::identity::now_ms(), &refs).await
        }
        .await;
        for _ in r
            .iter()
            .flatten()
            .filter(|c| **c == scripts::HandBack::Done)
        {
            shared.stats.add_released();
        }
        if let Err(e) = r {
            // Still pending to us: the orphan sweep (or their leases) hands them back.
            warn_throttled!(error = %e, "fetch: could not hand back entries read beyond the room");
            shared.control.request_sweep();
        }
    }
}

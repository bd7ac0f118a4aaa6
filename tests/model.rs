//! Model-based property test of the delivery semantics. Random sequences of operations (enqueue, claim, ack,
//! fail, extend, crash, lease expiry, reclaim, stale and forged completions, promotion, shutdown) run against a
//! real private Redis through the scripts, and after every step Redis is compared with a small reference model.
//! Some cases put the queue under a concurrency limit and a rate limit (one window for the whole case): every
//! claim then goes through `limit.lua`, which must read exactly what the model leaves room for. Some give the
//! queue two or three priority levels: jobs go on random levels, claims read level by level (strict), and every
//! delivery is acked, failed, extended, reclaimed and handed back on its level's stream.
//!
//! Staleness is made deterministic by back-dating pending entries with `XCLAIM ... IDLE` and the clock is passed
//! to the scripts, so there are no sleeps. `PROPTEST_CASES` raises the number of cases for a soak run, e.g.
//! `PROPTEST_CASES=5000 cargo test --release --test model`.

mod support;

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use redis::AsyncCommands;
use rill::keys::{GROUP, QueueKeys};
use rill::scripts::{
    self, Ack, AckItem, Caller, DeliveryRef, Enqueued, Fail, FailMode, FailOutcome, HandBack,
    LimitedRead, NewJob, Reclaim, Retention,
};
use rill::wire::DeadReason;
use support::{TestRedis, caller};

/// Lease used by the reclaim pass: entries not back-dated are never this idle during a case.
const LEASE_MS: u64 = 600_000;
const DEFAULT_MAX: u32 = 3;
const WORKERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        key: Option<u8>,
        delay: Option<u16>,
        max: Option<u8>,
        level: u8,
    },
    Claim {
        worker: usize,
        count: u8,
    },
    Ack {
        worker: usize,
        pick: usize,
    },
    ForgedAck {
        worker: usize,
        pick: usize,
    },
    Fail {
        worker: usize,
        pick: usize,
        permanent: bool,
        delay: u16,
    },
    Extend {
        worker: usize,
        pick: usize,
    },
    Crash {
        worker: usize,
    },
    Expire {
        pick: usize,
    },
    Reclaim {
        worker: usize,
    },
    Promote {
        advance: u16,
    },
    Shutdown {
        worker: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WORKERS;
    prop_oneof![
        4 => (proptest::option::of(0u8..4), proptest::option::weighted(0.3, 1u16..500), proptest::option::of(1u8..4), 0u8..3)
            .prop_map(|(key, delay, max, level)| Op::Enqueue { key, delay, max, level }),
        4 => (w.clone(), 1u8..4).prop_map(|(worker, count)| Op::Claim { worker, count }),
        3 => (w.clone(), any::<usize>()).prop_map(|(worker, pick)| Op::Ack { worker, pick }),
        1 => (w.clone(), any::<usize>()).prop_map(|(worker, pick)| Op::ForgedAck { worker, pick }),
        2 => (w.clone(), any::<usize>(), any::<bool>(), prop_oneof![Just(0u16), 1u16..300])
            .prop_map(|(worker, pick, permanent, delay)| Op::Fail { worker, pick, permanent, delay }),
        1 => (w.clone(), any::<usize>()).prop_map(|(worker, pick)| Op::Extend { worker, pick }),
        1 => w.clone().prop_map(|worker| Op::Crash { worker }),
        2 => any::<usize>().prop_map(|pick| Op::Expire { pick }),
        2 => w.clone().prop_map(|worker| Op::Reclaim { worker }),
        2 => (0u16..400).prop_map(|advance| Op::Promote { advance }),
        1 => w.prop_map(|worker| Op::Shutdown { worker }),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Delayed {
        due: u64,
    },
    Active {
        consumer: String,
        token: u64,
        expired: bool,
    },
    Completed,
    Dead,
}

#[derive(Debug, Clone)]
struct JobModel {
    state: State,
    /// Current entry: in `ready` while waiting or active, in `scheduled` while delayed.
    entry: String,
    /// Deliveries that ended without success (failed or stalled).
    made: u32,
    max: u32,
    /// Its priority level.
    level: u8,
}

#[derive(Debug, Clone)]
struct Held {
    entry: String,
    token: u64,
    job: String,
    level: u8,
}

struct Model {
    jobs: BTreeMap<String, JobModel>,
    dedup: HashMap<String, String>,
    /// Each worker's consumer name (a new one after a crash or shutdown) and what it believes it holds.
    consumers: Vec<String>,
    held: Vec<Vec<Held>>,
    generation: usize,
    now: u64,
    delayed_ids: u64,
}

fn entry_key(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').expect("stream id");
    (a.parse().unwrap(), b.parse().unwrap())
}

/// A worker's script caller for deliveries of `level`.
fn caller_at<'a>(keys: &'a QueueKeys, consumer: &'a str, level: u8) -> Caller<'a> {
    Caller {
        max_attempts: DEFAULT_MAX,
        ..caller(keys, consumer).at(level)
    }
}

struct Harness {
    conn: redis::aio::MultiplexedConnection,
    keys: QueueKeys,
    model: Model,
    limits: Limits,
    /// The queue's priority levels (1: none).
    levels: u8,
}

/// The queue's limits in a case: claims go through `limit.lua` when either is set.
#[derive(Debug, Clone, Copy, Default)]
struct Limits {
    /// Most jobs active at once.
    cap: Option<u8>,
    /// Most starts in the case (a window of an hour).
    rate: Option<u8>,
    /// Starts granted so far.
    started: u64,
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        1 => Just(Limits::default()),
        1 => (proptest::option::of(1u8..4), proptest::option::of(1u8..20)).prop_map(|(cap, rate)| Limits {
            cap,
            rate,
            started: 0,
        }),
    ]
}

impl Harness {
    async fn new(conn: redis::aio::MultiplexedConnection, limits: Limits, levels: u8) -> Self {
        let keys = QueueKeys::new(&support::namespace(), "model").unwrap();
        let mut conn = conn;
        support::create_group(&mut conn, &keys).await;
        scripts::set_levels(&mut conn, &keys, &rill::Priorities::strict(levels).unwrap())
            .await
            .unwrap();
        if let Some(cap) = limits.cap {
            let _: () = conn.hset(&keys.limit, "concurrency", cap).await.unwrap();
        }
        if let Some(rate) = limits.rate {
            let _: () = conn
                .hset_multiple(
                    &keys.limit,
                    &[("rate", u64::from(rate)), ("period_ms", 3_600_000)],
                )
                .await
                .unwrap();
        }
        Harness {
            limits,
            levels,
            conn,
            keys,
            model: Model {
                jobs: BTreeMap::new(),
                dedup: HashMap::new(),
                consumers: (0..WORKERS).map(|w| format!("w{w}-0")).collect(),
                held: vec![Vec::new(); WORKERS],
                generation: 0,
                now: 1_000_000,
                delayed_ids: 0,
            },
        }
    }

    async fn index(&mut self, job: &str) -> String {
        self.conn.hget(&self.keys.index, job).await.unwrap()
    }

    fn pick(&self, worker: usize, pick: usize) -> Option<Held> {
        let h = &self.model.held[worker];
        (!h.is_empty()).then(|| h[pick % h.len()].clone())
    }

    /// Whether this delivery is the job's current one.
    fn current(&self, h: &Held, consumer: &str) -> bool {
        matches!(&self.model.jobs[&h.job].state,
            State::Active { consumer: c, token, .. } if c == consumer && *token == h.token && self.model.jobs[&h.job].entry == h.entry)
    }

    fn drop_held(&mut self, worker: usize, h: &Held) {
        self.model.held[worker]
            .retain(|x| !(x.entry == h.entry && x.token == h.token && x.level == h.level));
    }

    async fn apply(&mut self, op: &Op) {
        let now = self.model.now;
        match *op {
            Op::Enqueue {
                key,
                delay,
                max,
                level,
            } => {
                let level = level % self.levels;
                let payload = rill::wire::encode(&7u8).unwrap();
                let max_s = max.map(|m| m.to_string());
                let level_s = level.to_string();
                let mut fields: Vec<(&str, &[u8])> = vec![("v", b"1"), ("payload", &payload)];
                if let Some(m) = &max_s {
                    fields.push(("max_attempts", m.as_bytes()));
                }
                if level > 0 {
                    fields.push(("priority", level_s.as_bytes()));
                }
                let max = max.map_or(DEFAULT_MAX, u32::from);
                // Unnamed above level 0: enqueue.lua checks the level; its id is `<entry id>@<level>` (SPEC §6g).
                if key.is_none() && delay.is_none() && level > 0 {
                    let out = scripts::enqueue(
                        &mut self.conn,
                        &self.keys,
                        NewJob {
                            job_id: "",
                            dedup_key: "",
                            dedup_ttl_ms: 0,
                            due_ms: 0,
                            now_ms: now,
                            fields: &fields,
                            priority: level,
                        },
                    )
                    .await
                    .unwrap();
                    let Enqueued::Ready(id) = out else {
                        panic!("{out:?}")
                    };
                    let (entry, at) = id.split_once('@').expect("an unnamed level job's id");
                    assert_eq!(at, level.to_string());
                    self.model.jobs.insert(
                        id.clone(),
                        JobModel {
                            state: State::Waiting,
                            entry: entry.to_owned(),
                            made: 0,
                            max,
                            level,
                        },
                    );
                    return;
                }
                if key.is_none() && delay.is_none() {
                    let mut cmd = redis::cmd("XADD");
                    cmd.arg(&self.keys.ready).arg("*");
                    for (k, v) in &fields {
                        cmd.arg(*k).arg(*v);
                    }
                    let id: String = cmd.query_async(&mut self.conn).await.unwrap();
                    self.model.jobs.insert(
                        id.clone(),
                        JobModel {
                            state: State::Waiting,
                            entry: id,
                            made: 0,
                            max,
                            level: 0,
                        },
                    );
                    return;
                }
                let (job, ttl) = match key {
                    Some(k) => (format!("k{k}"), 3_600_000),
                    None => {
                        self.model.delayed_ids += 1;
                        (format!("d{}", self.model.delayed_ids), 0)
                    }
                };
                let due = delay.map_or(0, |d| now + u64::from(d));
                let out = scripts::enqueue(
                    &mut self.conn,
                    &self.keys,
                    NewJob {
                        job_id: &job,
                        dedup_key: &job,
                        dedup_ttl_ms: ttl,
                        due_ms: due,
                        now_ms: now,
                        fields: &fields,
                        priority: level,
                    },
                )
                .await
                .unwrap();
                if let Some(existing) =
                    key.and_then(|k| self.model.dedup.get(&format!("k{k}")).cloned())
                {
                    assert_eq!(
                        out,
                        Enqueued::Duplicate(existing),
                        "a dedup key never yields two jobs"
                    );
                    return;
                }
                if ttl > 0 {
                    self.model.dedup.insert(job.clone(), job.clone());
                }
                let entry = self.index(&job).await;
                let state = if due > now {
                    assert_eq!(out, Enqueued::Delayed(job.clone()));
                    State::Delayed { due }
                } else {
                    assert_eq!(out, Enqueued::Ready(job.clone()));
                    State::Waiting
                };
                self.model.jobs.insert(
                    job,
                    JobModel {
                        state,
                        entry,
                        made: 0,
                        max,
                        level,
                    },
                );
            }
            Op::Claim { worker, count } => {
                let consumer = self.model.consumers[worker].clone();
                let (count, got) = self.read(&consumer, count).await;
                // The model's view: waiting jobs by level, then in entry order.
                let mut waiting: Vec<(u8, String, String)> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.state == State::Waiting)
                    .map(|(id, j)| (j.level, j.entry.clone(), id.clone()))
                    .collect();
                waiting.sort_by_key(|(l, e, _)| (*l, entry_key(e)));
                let want: Vec<(u8, String, String)> =
                    waiting.into_iter().take(usize::from(count)).collect();
                self.limits.started += got.len() as u64;
                assert_eq!(
                    got,
                    want.iter()
                        .map(|(l, e, _)| (*l, e.clone()))
                        .collect::<Vec<_>>(),
                    "claim order"
                );
                for (level, entry, job) in want {
                    self.model.jobs.get_mut(&job).unwrap().state = State::Active {
                        consumer: consumer.clone(),
                        token: 1,
                        expired: false,
                    };
                    self.model.held[worker].push(Held {
                        entry,
                        token: 1,
                        job,
                        level,
                    });
                }
            }
            Op::Ack { worker, pick } | Op::ForgedAck { worker, pick } => {
                let Some(h) = self.pick(worker, pick) else {
                    return;
                };
                let forged = matches!(op, Op::ForgedAck { .. });
                // A token no delivery ever had (token + 1 may be this consumer's own newer delivery).
                let token = if forged { h.token + 1_000_000 } else { h.token };
                let consumer = self.model.consumers[worker].clone();
                let item = AckItem {
                    delivery: DeliveryRef {
                        entry_id: &h.entry,
                        token,
                    },
                    job_id: &h.job,
                    attempt: 1,
                    result: b"",
                    touched: false,
                };
                let retention = Retention {
                    ms: 3_600_000,
                    keep_all: true,
                };
                let ok = scripts::ack(
                    &mut self.conn,
                    &caller(&self.keys, &consumer).at(h.level),
                    Ack {
                        now_ms: now,
                        retention,
                        completed_event: true,
                        items: &[item],
                        xackdel: true,
                    },
                )
                .await
                .unwrap()[0];
                let expected = !forged && self.current(&h, &consumer);
                assert_eq!(
                    ok, expected,
                    "ack accepted iff the delivery is current: {h:?}"
                );
                if ok {
                    self.model.jobs.get_mut(&h.job).unwrap().state = State::Completed;
                }
                if !forged {
                    self.drop_held(worker, &h);
                }
            }
            Op::Fail {
                worker,
                pick,
                permanent,
                delay,
            } => {
                let Some(h) = self.pick(worker, pick) else {
                    return;
                };
                let consumer = self.model.consumers[worker].clone();
                let mode = if permanent {
                    FailMode::Dead(DeadReason::Failed)
                } else {
                    FailMode::Retry {
                        delay_ms: u64::from(delay),
                    }
                };
                let out = scripts::fail(
                    &mut self.conn,
                    &caller_at(&self.keys, &consumer, h.level),
                    Fail {
                        delivery: DeliveryRef {
                            entry_id: &h.entry,
                            token: h.token,
                        },
                        job_id: &h.job,
                        now_ms: now,
                        mode,
                        error: "boom",
                    },
                )
                .await
                .unwrap();
                self.drop_held(worker, &h);
                if !self.current(&h, &consumer) {
                    assert_eq!(out, FailOutcome::Stale, "a stale failure changes nothing");
                    return;
                }
                let job = self.model.jobs.get_mut(&h.job).unwrap();
                job.made += 1;
                let made = job.made;
                if permanent || made >= job.max {
                    assert_eq!(out, FailOutcome::Dead { attempts: made });
                    job.state = State::Dead;
                } else if delay == 0 {
                    assert_eq!(out, FailOutcome::Requeued { attempts: made });
                    job.state = State::Waiting;
                    let e = self.index(&h.job).await;
                    self.model.jobs.get_mut(&h.job).unwrap().entry = e;
                } else {
                    assert_eq!(out, FailOutcome::RetryScheduled { attempts: made });
                    job.state = State::Delayed {
                        due: now + u64::from(delay),
                    };
                    let e = self.index(&h.job).await;
                    self.model.jobs.get_mut(&h.job).unwrap().entry = e;
                }
            }
            Op::Extend { worker, pick } => {
                let Some(h) = self.pick(worker, pick) else {
                    return;
                };
                let consumer = self.model.consumers[worker].clone();
                let ok = scripts::extend(
                    &mut self.conn,
                    &caller(&self.keys, &consumer).at(h.level),
                    &[DeliveryRef {
                        entry_id: &h.entry,
                        token: h.token,
                    }],
                )
                .await
                .unwrap()[0];
                assert_eq!(
                    ok,
                    self.current(&h, &consumer),
                    "extend accepted iff current"
                );
                if ok {
                    if let State::Active { expired, .. } =
                        &mut self.model.jobs.get_mut(&h.job).unwrap().state
                    {
                        *expired = false;
                    }
                } else {
                    self.drop_held(worker, &h);
                }
            }
            Op::Crash { worker } => {
                // The process is gone: it forgets what it held; Redis still has those entries pending to it.
                self.model.held[worker].clear();
                self.model.generation += 1;
                self.model.consumers[worker] = format!("w{worker}-{}", self.model.generation);
            }
            Op::Expire { pick } => {
                let active: Vec<(String, String, String, u8)> = self
                    .model
                    .jobs
                    .iter()
                    .filter_map(|(id, j)| match &j.state {
                        State::Active { consumer, .. } => {
                            Some((id.clone(), j.entry.clone(), consumer.clone(), j.level))
                        }
                        _ => None,
                    })
                    .collect();
                if active.is_empty() {
                    return;
                }
                let (job, entry, consumer, level) = active[pick % active.len()].clone();
                let _: redis::Value = redis::cmd("XCLAIM")
                    .arg(self.keys.level(level))
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg(0)
                    .arg(&entry)
                    .arg("IDLE")
                    .arg(LEASE_MS * 10)
                    .arg("JUSTID")
                    .query_async(&mut self.conn)
                    .await
                    .unwrap();
                if let State::Active { expired, .. } =
                    &mut self.model.jobs.get_mut(&job).unwrap().state
                {
                    *expired = true;
                }
            }
            Op::Reclaim { worker } => {
                let consumer = self.model.consumers[worker].clone();
                let mut taken = Vec::new();
                let mut dead = 0;
                for level in 0..self.levels {
                    let mut cursor = "0-0".to_owned();
                    for _ in 0..100 {
                        let page = scripts::reclaim(
                            &mut self.conn,
                            &caller_at(&self.keys, &consumer, level),
                            Reclaim {
                                min_idle_ms: LEASE_MS,
                                cursor: &cursor,
                                count: 1000,
                                now_ms: now,
                            },
                        )
                        .await
                        .unwrap();
                        taken.extend(page.taken.into_iter().map(|(e, t)| (level, e.id, t)));
                        dead += page.dead_lettered;
                        cursor = page.cursor;
                        if cursor == "0-0" {
                            break;
                        }
                    }
                }
                let mut expired: Vec<(u8, String, String)> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| matches!(j.state, State::Active { expired: true, .. }))
                    .map(|(id, j)| (j.level, j.entry.clone(), id.clone()))
                    .collect();
                expired.sort_by_key(|(l, e, _)| (*l, entry_key(e)));
                let mut want_taken = Vec::new();
                let mut want_dead = 0;
                for (level, entry, job) in expired {
                    let j = self.model.jobs.get_mut(&job).unwrap();
                    let State::Active { token, .. } = j.state.clone() else {
                        unreachable!()
                    };
                    j.made += 1;
                    assert!(j.made <= j.max, "attempts never exceed the maximum");
                    if j.made >= j.max {
                        j.state = State::Dead;
                        want_dead += 1;
                    } else {
                        j.state = State::Active {
                            consumer: consumer.clone(),
                            token: token + 1,
                            expired: false,
                        };
                        want_taken.push((level, entry.clone(), token + 1));
                        self.model.held[worker].push(Held {
                            entry,
                            token: token + 1,
                            job,
                            level,
                        });
                    }
                }
                assert_eq!(
                    taken, want_taken,
                    "reclaim takes exactly the expired deliveries"
                );
                assert_eq!(dead, want_dead);
            }
            Op::Promote { advance } => {
                self.model.now += u64::from(advance);
                let now = self.model.now;
                let moved = scripts::promote(&mut self.conn, &self.keys, now, 1000, 100)
                    .await
                    .unwrap()
                    .moved;
                let due: Vec<String> = self
                    .model
                    .jobs
                    .iter()
                    .filter(|(_, j)| matches!(j.state, State::Delayed { due } if due <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                assert_eq!(moved as usize, due.len(), "promotes exactly the due jobs");
                for job in due {
                    let e = self.index(&job).await;
                    let j = self.model.jobs.get_mut(&job).unwrap();
                    j.state = State::Waiting;
                    j.entry = e;
                }
            }
            Op::Shutdown { worker } => {
                let consumer = self.model.consumers[worker].clone();
                let mut held = std::mem::take(&mut self.model.held[worker]);
                held.sort_by_key(|h| h.level);
                let mut codes = Vec::new();
                for same in held.chunk_by(|a, b| a.level == b.level) {
                    let refs: Vec<DeliveryRef<'_>> = same
                        .iter()
                        .map(|h| DeliveryRef {
                            entry_id: &h.entry,
                            token: h.token,
                        })
                        .collect();
                    let c = caller(&self.keys, &consumer).at(same[0].level);
                    codes.extend(
                        scripts::release(&mut self.conn, &c, now, &refs)
                            .await
                            .unwrap(),
                    );
                }
                for (h, code) in held.iter().zip(codes) {
                    if self.current(h, &consumer) {
                        assert_eq!(code, HandBack::Done);
                        let e = self.index(&h.job).await;
                        let j = self.model.jobs.get_mut(&h.job).unwrap();
                        j.state = State::Waiting;
                        j.entry = e;
                    } else {
                        assert_eq!(code, HandBack::Stale);
                    }
                }
                // Leaving a level's group only works with nothing pending there; a crashed predecessor's entries
                // may still be.
                for level in 0..self.levels {
                    let still_pending = self.model.jobs.values().any(|j| {
                        j.level == level
                            && matches!(&j.state, State::Active { consumer: c, .. } if *c == consumer)
                    });
                    let retired = scripts::retire(&mut self.conn, &self.keys, level, &consumer)
                        .await
                        .unwrap();
                    assert_eq!(retired, !still_pending, "retire only an idle consumer");
                }
                self.model.generation += 1;
                self.model.consumers[worker] = format!("w{worker}-{}", self.model.generation);
            }
        }
    }

    /// Reads up to `count` new entries for `consumer`: with `XREADGROUP` without limits; through `limit.lua`
    /// with them, which must read exactly as many as the room the model leaves (and the waiting jobs) allow.
    /// Returns the count the model allows and the entry ids read.
    async fn read(&mut self, consumer: &str, count: u8) -> (u8, Vec<(u8, String)>) {
        if self.limits.cap.is_none() && self.limits.rate.is_none() {
            // Level by level, as a worker reads (SPEC §6g).
            let mut got = Vec::new();
            for level in 0..self.levels {
                let left = usize::from(count) - got.len();
                if left == 0 {
                    break;
                }
                let v: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(left)
                    .arg("STREAMS")
                    .arg(self.keys.level(level))
                    .arg(">")
                    .query_async(&mut self.conn)
                    .await
                    .unwrap();
                let read = rill::wire::parse_read_reply(v).unwrap();
                got.extend(read.into_iter().map(|e| (level, e.id)));
            }
            return (count, got);
        }
        let active = self
            .model
            .jobs
            .values()
            .filter(|j| matches!(j.state, State::Active { .. }))
            .count() as u64;
        let waiting = self
            .model
            .jobs
            .values()
            .filter(|j| j.state == State::Waiting)
            .count() as u64;
        let mut room = u64::from(count);
        let mut why = "";
        if let Some(rate) = self.limits.rate {
            let left = u64::from(rate).saturating_sub(self.limits.started);
            if left == 0 {
                why = "rate";
            }
            room = room.min(left);
        }
        if let Some(cap) = self.limits.cap {
            assert!(
                active <= u64::from(cap),
                "{active} active over the limit of {cap}"
            );
            let left = u64::from(cap) - active;
            if left == 0 && why.is_empty() {
                why = "room";
            }
            room = room.min(left);
        }
        let streams: Vec<&str> = (0..self.levels).map(|l| self.keys.level(l)).collect();
        let r = scripts::read_limited(
            &mut self.conn,
            &self.keys,
            &streams,
            consumer,
            usize::from(count),
        )
        .await
        .unwrap();
        let got: Vec<(u8, String)> = match r {
            LimitedRead::Entries(e) => e.into_iter().map(|(at, e)| (at as u8, e.id)).collect(),
            LimitedRead::Rate(_) => {
                assert_eq!(why, "rate", "refused for the rate");
                Vec::new()
            }
            LimitedRead::Room { .. } => {
                assert_eq!(why, "room", "refused for the room");
                Vec::new()
            }
            LimitedRead::Empty { .. } => {
                assert!(
                    room > 0 && waiting == 0,
                    "nothing read though {waiting} wait and room is {room}"
                );
                Vec::new()
            }
            LimitedRead::Unlimited => panic!("the limits were set"),
        };
        assert_eq!(
            got.len() as u64,
            room.min(waiting),
            "read what the model leaves room for"
        );
        (room as u8, got)
    }

    /// Lifts the case's limits (for the final drain).
    async fn lift_limits(&mut self) {
        let _: () = self.conn.del(&self.keys.limit).await.unwrap();
        self.limits = Limits::default();
    }

    /// Every job the model holds is in Redis in the same state, and Redis holds nothing else.
    async fn check(&mut self) {
        let mut counts = (0u64, 0u64, 0u64, 0u64);
        for (id, j) in &self.model.jobs {
            let scripts::StateRow {
                state,
                entry_id: entry,
                attempts: made,
                owner,
                deliveries,
                level,
                ..
            } = scripts::state(&mut self.conn, &self.keys, id)
                .await
                .unwrap();
            match &j.state {
                State::Waiting => {
                    assert_eq!(
                        (state.as_str(), entry.as_str(), level),
                        ("waiting", j.entry.as_str(), j.level),
                        "{id}"
                    );
                    counts.0 += 1;
                }
                State::Active {
                    consumer, token, ..
                } => {
                    assert_eq!(
                        (state.as_str(), owner.as_str(), deliveries, level),
                        ("active", consumer.as_str(), *token, j.level),
                        "{id}"
                    );
                    assert_eq!(
                        made + deliveries - 1,
                        u64::from(j.made),
                        "{id}: attempts made"
                    );
                    counts.1 += 1;
                }
                State::Delayed { .. } => {
                    let want = if j.made > 0 { "failed" } else { "delayed" };
                    assert_eq!((state.as_str(), made), (want, u64::from(j.made)), "{id}");
                    counts.2 += 1;
                }
                State::Completed => assert_eq!(state, "completed", "{id}"),
                State::Dead => {
                    assert_eq!(state, "dead", "{id}");
                    counts.3 += 1;
                }
            }
            assert!(j.made <= j.max, "{id}: attempts never exceed the maximum");
        }
        // Nothing extra: pending, lag, delayed and dead sizes match the model exactly, summed over the levels.
        let (mut waiting, mut pending) = (0, 0);
        for level in 0..self.levels {
            let stream = self.keys.level(level).to_owned();
            let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&stream)
                .query_async(&mut self.conn)
                .await
                .unwrap();
            let int = |v: &redis::Value| match v {
                redis::Value::Int(n) => *n as u64,
                other => panic!("{other:?}"),
            };
            // Undelivered entries: everything after the group's last-delivered id (`lag` is nil after some
            // deletions).
            let last = match &groups[0]["last-delivered-id"] {
                redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
                other => panic!("{other:?}"),
            };
            let after: redis::Value = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(format!("({last}"))
                .arg("+")
                .query_async(&mut self.conn)
                .await
                .unwrap();
            waiting += rill::wire::parse_entries(after).unwrap().len() as u64;
            pending += int(&groups[0]["pending"]);
        }
        assert_eq!(waiting, counts.0, "waiting entries");
        assert_eq!(pending, counts.1, "pending entries");
        let delayed: u64 = self.conn.zcard(&self.keys.delayed).await.unwrap();
        let scheduled: u64 = self.conn.xlen(&self.keys.scheduled).await.unwrap();
        assert_eq!((delayed, scheduled), (counts.2, counts.2), "delayed jobs");
        let dead: u64 = self.conn.xlen(&self.keys.dead).await.unwrap();
        assert_eq!(dead, counts.3, "dead letters");
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

#[test]
fn delivery_semantics_match_the_model() {
    let redis = TestRedis::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(redis.aconn());
    let config = ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    };
    proptest!(config, |(limits in limits(), levels in prop_oneof![2 => Just(1u8), 1 => 2u8..4], ops in proptest::collection::vec(op(), 1..60))| {
        rt.block_on(async {
            let mut h = Harness::new(conn.clone(), limits, levels).await;
            for op in &ops {
                h.apply(op).await;
                h.check().await;
            }
            h.lift_limits().await;
            // Every job reaches exactly one terminal state once the fleet drains: recover, promote, run all.
            for step in 0..200 {
                let open = h.model.jobs.values().any(|j| !matches!(j.state, State::Completed | State::Dead));
                if !open {
                    break;
                }
                assert!(step < 199, "jobs never finished");
                for op in [Op::Crash { worker: 0 }, Op::Promote { advance: 1000 }, Op::Expire { pick: step }, Op::Reclaim { worker: 1 }, Op::Claim { worker: 2, count: 3 }] {
                    h.apply(&op).await;
                }
                for w in 0..WORKERS {
                    while !h.model.held[w].is_empty() {
                        h.apply(&Op::Ack { worker: w, pick: 0 }).await;
                    }
                }
                h.check().await;
            }
        });
    });
}

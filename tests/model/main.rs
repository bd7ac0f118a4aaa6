//! Model-based property test of the delivery semantics. Random sequences of operations (enqueue, claim, ack,
//! fail, extend, crash, lease expiry, reclaim, stale and forged completions, promotion, shutdown) run against a
//! real private Redis through the scripts, and after every step Redis is compared with a small reference model.
//! Some cases put the queue under a concurrency limit and a rate limit (one window for the whole case): every
//! claim then goes through `limit.lua`, which must read exactly what the model leaves room for. Some give the
//! queue two or three priority levels: jobs go on random levels, claims read level by level (strict), and every
//! delivery is acked, failed, extended, reclaimed and handed back on its level's stream. Some give each job one
//! of three tenants (header `x-t`) under a per-key concurrency (SPEC §6h): a claim then hands out exactly as
//! many as the tenants' room allows, held jobs stay waiting to `state.lua`, and no tenant ever runs over it.
//!
//! Staleness is made deterministic by back-dating pending entries with `XCLAIM ... IDLE` and the clock is passed
//! to the scripts, so there are no sleeps. `PROPTEST_CASES` raises the number of cases for a soak run, e.g.
//! `PROPTEST_CASES=5000 cargo test --release --test model`.

#[path = "../support/mod.rs"]
mod support;

mod apply;
mod harness;

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
        tenant: u8,
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
        4 => (proptest::option::of(0u8..4), proptest::option::weighted(0.3, 1u16..500), proptest::option::of(1u8..4), 0u8..3, 0u8..4)
            .prop_map(|(key, delay, max, level, tenant)| Op::Enqueue { key, delay, max, level, tenant }),
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
    /// Its tenant (header `x-t`), in a case with per-key limits; 3 = none.
    tenant: u8,
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
    conn: support::AConn,
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
    /// Most jobs of one tenant active at once (per-key limits on header `x-t`).
    per_key: Option<u8>,
    /// Per-key limits were set in this case: held jobs may wait even after the limits are lifted.
    keyed: bool,
    /// Starts granted so far.
    started: u64,
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        1 => Just(Limits::default()),
        1 => (proptest::option::of(1u8..4), proptest::option::of(1u8..20)).prop_map(|(cap, rate)| Limits {
            cap,
            rate,
            ..Limits::default()
        }),
        1 => (proptest::option::weighted(0.3, 2u8..6), 1u8..3).prop_map(|(cap, per_key)| Limits {
            cap,
            per_key: Some(per_key),
            keyed: true,
            ..Limits::default()
        }),
    ]
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

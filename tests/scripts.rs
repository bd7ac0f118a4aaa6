//! Every Lua script run directly: seed keys, run it, assert the raw Redis state and the return code.

mod support;

use redis::AsyncCommands;
use rill::keys::{GROUP, QueueKeys};
use rill::scripts::{
    self, Ack, AckItem, Adopt, Caller, DeliveryRef, Enqueued, Fail, FailMode, FailOutcome,
    HandBack, NewJob, Reclaim, RecordField, Retention, SignalApplied, SignalSend, Update,
};
use rill::wire::DeadReason;
use support::TestRedis;

type Conn = redis::aio::MultiplexedConnection;

struct Fixture {
    _redis: TestRedis,
    conn: Conn,
    keys: QueueKeys,
}

async fn fixture() -> Fixture {
    let redis = TestRedis::start_cluster();
    let mut conn = redis.aconn().await;
    let keys = QueueKeys::new(&support::namespace(), "q").unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    Fixture {
        _redis: redis,
        conn,
        keys,
    }
}

impl Fixture {
    async fn add(&mut self, extra: &[(&str, &str)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.ready)
            .arg("*")
            .arg("v")
            .arg("1")
            .arg("payload")
            .arg(&b"\xf6"[..]);
        for (k, v) in extra {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut self.conn).await.unwrap()
    }

    /// Delivers up to `n` new entries to `consumer`.
    async fn read(&mut self, consumer: &str, n: usize) -> Vec<String> {
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(n)
            .arg("STREAMS")
            .arg(&self.keys.ready)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .unwrap();
        rill::wire::parse_read_reply(v)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect()
    }

    /// Back-dates a pending entry to idle `ms` under `consumer` (XCLAIM IDLE; bumps nothing with JUSTID).
    async fn age(&mut self, consumer: &str, id: &str, ms: u64) {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg(&self.keys.ready)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(id)
            .arg("IDLE")
            .arg(ms)
            .arg("JUSTID")
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }

    /// (owner, idle ms, deliveries) of a pending entry.
    async fn pending(&mut self, id: &str) -> Option<(String, u64, u64)> {
        let v: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.keys.ready)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        v.into_iter().next().map(|(_, c, idle, n)| (c, idle, n))
    }

    async fn exists_in(&mut self, stream: &str, id: &str) -> bool {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(id)
            .arg(id)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        !rill::wire::parse_entries(v).unwrap().is_empty()
    }

    async fn fields(
        &mut self,
        stream: &str,
        id: &str,
    ) -> std::collections::HashMap<String, Vec<u8>> {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(id)
            .arg(id)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        let e = rill::wire::parse_entries(v).unwrap().remove(0);
        e.fields
            .unwrap()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), v))
            .collect()
    }

    async fn xlen(&mut self, stream: &str) -> u64 {
        self.conn.xlen(stream).await.unwrap()
    }
}

fn d(entry_id: &str, token: u64) -> DeliveryRef<'_> {
    DeliveryRef { entry_id, token }
}

#[tokio::test]
async fn ack_completes_owned_deliveries_and_rejects_stale_ones() {
    let mut f = fixture().await;
    let a = f.add(&[]).await;
    let b = f.add(&[("id", "job-b")]).await;
    let c = f.add(&[]).await;
    f.read("w1", 3).await;
    let _: () = f.conn.hset(&f.keys.index, "job-b", &b).await.unwrap();
    // c is taken over by w2 (delivery 2): w1's token 1 is stale.
    f.age("w1", &c, 100_000).await;
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&f.keys.ready)
        .arg(GROUP)
        .arg("w2")
        .arg(0)
        .arg(&c)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let items = [
        AckItem {
            delivery: d(&a, 1),
            job_id: &a,
            attempt: 1,
            result: b"\x01",
            touched: false,
        },
        AckItem {
            delivery: d(&b, 1),
            job_id: "job-b",
            attempt: 1,
            result: b"",
            touched: false,
        },
        AckItem {
            delivery: d(&c, 1),
            job_id: &c,
            attempt: 1,
            result: b"",
            touched: false,
        },
    ];
    let keys = f.keys.clone();
    let codes = scripts::ack(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Ack {
            now_ms: 1234,
            retention: Retention {
                ms: 60_000,
                keep_all: false,
            },
            completed_event: true,
            items: &items,
        },
    )
    .await
    .unwrap();
    assert_eq!(codes, vec![true, true, false]);
    // a and b are gone from stream and PEL; c is untouched and still owned by w2 with 2 deliveries.
    assert!(!f.exists_in(&keys.ready, &a).await);
    assert!(!f.exists_in(&keys.ready, &b).await);
    assert!(f.pending(&a).await.is_none());
    assert_eq!(f.pending(&c).await.unwrap().0, "w2");
    assert!(f.exists_in(&keys.ready, &c).await);
    // Records: a has its result; b has none; c has no record; b's index entry is gone.
    let rec: std::collections::HashMap<String, Vec<u8>> =
        f.conn.hgetall(keys.job(&a)).await.unwrap();
    assert_eq!(rec["state"], b"completed");
    assert_eq!(rec["result"], b"\x01");
    assert_eq!(rec["finished_ms"], b"1234");
    let ttl: i64 = f.conn.pttl(keys.job(&a)).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000);
    let rec_b: std::collections::HashMap<String, Vec<u8>> =
        f.conn.hgetall(keys.job("job-b")).await.unwrap();
    assert!(!rec_b.contains_key("result"));
    let c_exists: bool = f.conn.exists(keys.job(&c)).await.unwrap();
    assert!(!c_exists);
    let idx: bool = f.conn.hexists(&keys.index, "job-b").await.unwrap();
    assert!(!idx);
    // One completed event lists the batch's completed jobs.
    assert_eq!(f.xlen(&keys.events).await, 1);
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(&keys.events)
        .arg("-")
        .arg("+")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let ev = rill::wire::parse_entries(v)
        .unwrap()
        .remove(0)
        .fields
        .unwrap();
    let get = |name: &str| {
        ev.iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(get("event").as_deref(), Some("completed"));
    assert_eq!(get("ids").unwrap(), format!("{a} job-b"));
    assert_eq!(get("count").as_deref(), Some("2"));
}

#[tokio::test]
async fn ack_without_retention_or_events_keeps_nothing() {
    let mut f = fixture().await;
    let a = f.add(&[]).await;
    f.read("w1", 1).await;
    let keys = f.keys.clone();
    let _: () = f.conn.hset(keys.job(&a), "progress", "x").await.unwrap();
    let items = [AckItem {
        delivery: d(&a, 1),
        job_id: &a,
        attempt: 1,
        result: b"\x01",
        touched: true,
    }];
    let codes = scripts::ack(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 0,
            max_attempts: 5,
        },
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 0,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
        },
    )
    .await
    .unwrap();
    assert_eq!(codes, vec![true]);
    let exists: bool = f.conn.exists(keys.job(&a)).await.unwrap();
    assert!(
        !exists,
        "retention 0 deletes the record this delivery wrote"
    );
    assert_eq!(f.xlen(&keys.events).await, 0);
    // A second ack of the same delivery is stale (it is no longer pending).
    let codes = scripts::ack(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 0,
            max_attempts: 5,
        },
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 0,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
        },
    )
    .await
    .unwrap();
    assert_eq!(codes, vec![false]);
}

#[tokio::test]
async fn extend_resets_the_lease_without_changing_the_token() {
    let mut f = fixture().await;
    let a = f.add(&[]).await;
    let b = f.add(&[]).await;
    f.read("w1", 2).await;
    f.age("w1", &a, 50_000).await;
    f.age("w1", &b, 50_000).await;
    // b now belongs to w2.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&f.keys.ready)
        .arg(GROUP)
        .arg("w2")
        .arg(0)
        .arg(&b)
        .arg("IDLE")
        .arg(50_000)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let keys = f.keys.clone();
    let flags = scripts::extend(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        &[d(&a, 1), d(&b, 1), d(&a, 7)],
    )
    .await
    .unwrap();
    assert_eq!(flags, vec![true, false, false]);
    let (owner, idle, n) = f.pending(&a).await.unwrap();
    assert_eq!((owner.as_str(), n), ("w1", 1));
    assert!(idle < 5_000, "idle reset, got {idle}");
    let (owner, idle, _) = f.pending(&b).await.unwrap();
    assert_eq!(owner, "w2");
    assert!(idle >= 50_000, "w2's entry untouched");
}

#[tokio::test]
async fn fail_schedules_retries_then_dead_letters() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[("max_attempts", "2"), ("x-trace", "t1")]).await;
    f.read("w1", 1).await;
    let _: () = f
        .conn
        .hset(keys.job(&a), "data", &b"\x02"[..])
        .await
        .unwrap();
    let out = scripts::fail(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Fail {
            delivery: d(&a, 1),
            job_id: &a,
            now_ms: 10_000,
            mode: FailMode::Retry { delay_ms: 500 },
            error: "boom",
        },
    )
    .await
    .unwrap();
    assert_eq!(out, FailOutcome::RetryScheduled { attempts: 1 });
    assert!(!f.exists_in(&keys.ready, &a).await);
    assert!(f.pending(&a).await.is_none());
    let due: Option<f64> = f.conn.zscore(&keys.delayed, &a).await.unwrap();
    assert_eq!(due, Some(10_500.0));
    let sid: String = f.conn.hget(&keys.index, &a).await.unwrap();
    let fields = f.fields(&keys.scheduled, &sid).await;
    assert_eq!(fields["id"], a.as_bytes());
    assert_eq!(fields["attempts"], b"1");
    assert_eq!(fields["last_error"], b"boom");
    assert_eq!(
        fields["payload"], b"\x02",
        "updated data replaces the payload"
    );
    assert_eq!(
        fields["x-trace"], b"t1",
        "extension fields travel with the job"
    );

    // Promote it, deliver it again, fail again: attempts (2) reach max_attempts (2) -> dead, exhausted.
    let (moved, next) = scripts::promote(&mut f.conn, &keys, 10_500, 10, 100)
        .await
        .unwrap();
    assert_eq!((moved, next), (1, None));
    let eid = f.read("w1", 1).await.remove(0);
    let out = scripts::fail(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Fail {
            delivery: d(&eid, 1),
            job_id: &a,
            now_ms: 11_000,
            mode: FailMode::Retry { delay_ms: 0 },
            error: "boom2",
        },
    )
    .await
    .unwrap();
    assert_eq!(out, FailOutcome::Dead { attempts: 2 });
    let did: String = f.conn.hget(&keys.dead_index, &a).await.unwrap();
    let dead = f.fields(&keys.dead, &did).await;
    assert_eq!(dead["dead_reason"], b"exhausted");
    assert_eq!(dead["dead_error"], b"boom2");
    assert_eq!(dead["dead_attempts"], b"2");
    assert_eq!(dead["dead_job"], a.as_bytes());
    assert_eq!(dead["payload"], b"\x02");
    let idx: bool = f.conn.hexists(&keys.index, &a).await.unwrap();
    assert!(!idx);
    assert_eq!(f.xlen(&keys.ready).await, 0);
}

#[tokio::test]
async fn fail_requeues_at_once_dead_letters_permanent_and_rejects_stale() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[]).await;
    let b = f.add(&[]).await;
    f.read("w1", 2).await;
    let out = scripts::fail(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Fail {
            delivery: d(&a, 1),
            job_id: &a,
            now_ms: 1,
            mode: FailMode::Retry { delay_ms: 0 },
            error: "e",
        },
    )
    .await
    .unwrap();
    assert_eq!(out, FailOutcome::Requeued { attempts: 1 });
    let nid: String = f.conn.hget(&keys.index, &a).await.unwrap();
    assert_eq!(f.fields(&keys.ready, &nid).await["attempts"], b"1");
    // Stale: w2 does not own b.
    let out = scripts::fail(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w2",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Fail {
            delivery: d(&b, 1),
            job_id: &b,
            now_ms: 1,
            mode: FailMode::Dead(DeadReason::Failed),
            error: "e",
        },
    )
    .await
    .unwrap();
    assert_eq!(out, FailOutcome::Stale);
    assert!(f.exists_in(&keys.ready, &b).await);
    let out = scripts::fail(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Fail {
            delivery: d(&b, 1),
            job_id: &b,
            now_ms: 1,
            mode: FailMode::Dead(DeadReason::Failed),
            error: "bad input",
        },
    )
    .await
    .unwrap();
    assert_eq!(out, FailOutcome::Dead { attempts: 1 });
    let did: String = f.conn.hget(&keys.dead_index, &b).await.unwrap();
    assert_eq!(f.fields(&keys.dead, &did).await["dead_reason"], b"failed");
    // An entry deleted by someone else while pending: acked, reported gone.
    let c = f.add(&[]).await;
    assert_eq!(f.read("w1", 2).await.len(), 2, "the requeued job and c");
    let _: () = f.conn.xdel(&keys.ready, &[&c]).await.unwrap();
    let out = scripts::fail(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Fail {
            delivery: d(&c, 1),
            job_id: &c,
            now_ms: 1,
            mode: FailMode::Retry { delay_ms: 0 },
            error: "e",
        },
    )
    .await
    .unwrap();
    assert_eq!(out, FailOutcome::Gone);
    assert!(f.pending(&c).await.is_none());
}

#[tokio::test]
async fn reclaim_takes_only_expired_leases_and_dead_letters_exhausted_jobs() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let fresh = f.add(&[]).await;
    let stale = f.add(&[]).await;
    let last_try = f.add(&[("max_attempts", "1")]).await;
    let deleted = f.add(&[]).await;
    f.read("w1", 4).await;
    for id in [&stale, &last_try, &deleted] {
        f.age("w1", id, 60_000).await;
    }
    let _: () = f.conn.xdel(&keys.ready, &[&deleted]).await.unwrap();
    let page = scripts::reclaim(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w2",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Reclaim {
            min_idle_ms: 30_000,
            cursor: "0-0",
            count: 10,
            now_ms: 99,
        },
    )
    .await
    .unwrap();
    assert_eq!(page.cursor, "0-0");
    assert_eq!(page.taken.len(), 1);
    assert_eq!(page.taken[0].0.id, stale);
    assert_eq!(
        page.taken[0].1, 2,
        "the new token is the new delivery count"
    );
    assert_eq!(page.dead_lettered, 1);
    assert_eq!(page.gone, 1);
    assert_eq!(f.pending(&stale).await.unwrap().0, "w2");
    assert_eq!(f.pending(&fresh).await.unwrap().0, "w1");
    assert!(f.pending(&deleted).await.is_none());
    let did: String = f.conn.hget(&keys.dead_index, &last_try).await.unwrap();
    let dead = f.fields(&keys.dead, &did).await;
    assert_eq!(dead["dead_reason"], b"exhausted");
    assert_eq!(dead["dead_attempts"], b"1");
    // w1's old token no longer completes the reclaimed job.
    let items = [AckItem {
        delivery: d(&stale, 1),
        job_id: &stale,
        attempt: 1,
        result: b"",
        touched: false,
    }];
    assert_eq!(
        scripts::ack(
            &mut f.conn,
            &Caller {
                keys: &keys,
                consumer: "w1",
                events_maxlen: 0,
                max_attempts: 5
            },
            Ack {
                now_ms: 1,
                retention: Retention {
                    ms: 0,
                    keep_all: false
                },
                completed_event: false,
                items: &items
            }
        )
        .await
        .unwrap(),
        vec![false]
    );
}

#[tokio::test]
async fn reclaim_follows_the_cursor_in_bounded_pages() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(f.add(&[]).await);
    }
    f.read("w1", 25).await;
    for id in &ids {
        f.age("w1", id, 60_000).await;
    }
    let mut cursor = "0-0".to_owned();
    let mut taken = 0;
    let mut calls = 0;
    loop {
        let page = scripts::reclaim(
            &mut f.conn,
            &Caller {
                keys: &keys,
                consumer: "w2",
                events_maxlen: 100,
                max_attempts: 5,
            },
            Reclaim {
                min_idle_ms: 30_000,
                cursor: &cursor,
                count: 10,
                now_ms: 1,
            },
        )
        .await
        .unwrap();
        assert!(page.taken.len() <= 10);
        taken += page.taken.len();
        calls += 1;
        cursor = page.cursor;
        if cursor == "0-0" {
            break;
        }
        assert!(calls < 10);
    }
    assert_eq!(taken, 25);
    assert!(calls >= 3);
}

#[tokio::test]
async fn release_hands_back_without_counting_the_attempt() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[("attempts", "2"), ("id", "job-a")]).await;
    let b = f.add(&[]).await;
    f.read("w1", 2).await;
    let codes = scripts::release(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        5,
        &[d(&a, 1), d(&b, 9)],
    )
    .await
    .unwrap();
    assert_eq!(codes, vec![HandBack::Done, HandBack::Stale]);
    assert!(!f.exists_in(&keys.ready, &a).await);
    assert!(f.pending(&a).await.is_none());
    let nid: String = f.conn.hget(&keys.index, "job-a").await.unwrap();
    let fields = f.fields(&keys.ready, &nid).await;
    assert_eq!(fields["attempts"], b"2");
    assert_eq!(fields["id"], b"job-a");
    // It is delivered again as a new entry.
    assert_eq!(f.read("w2", 10).await, vec![nid]);
    assert_eq!(f.pending(&b).await.unwrap().0, "w1");
}

#[tokio::test]
async fn promote_moves_due_jobs_in_bounded_batches() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let fields: [(&str, &[u8]); 2] = [("v", b"1"), ("payload", b"\xf6")];
    for i in 0..5u64 {
        let out = scripts::enqueue(
            &mut f.conn,
            &keys,
            NewJob {
                job_id: &format!("j{i}"),
                dedup_key: &format!("j{i}"),
                dedup_ttl_ms: 0,
                due_ms: 1_000 + i,
                now_ms: 0,
                fields: &fields,
            },
        )
        .await
        .unwrap();
        assert_eq!(out, Enqueued::Delayed(format!("j{i}")));
    }
    let (moved, next) = scripts::promote(&mut f.conn, &keys, 1_002, 2, 100)
        .await
        .unwrap();
    assert_eq!((moved, next), (2, Some(1_002)));
    let (moved, next) = scripts::promote(&mut f.conn, &keys, 1_002, 10, 100)
        .await
        .unwrap();
    assert_eq!((moved, next), (1, Some(1_003)));
    assert_eq!(f.xlen(&keys.ready).await, 3);
    assert_eq!(f.xlen(&keys.scheduled).await, 2);
    let left: u64 = f.conn.zcard(&keys.delayed).await.unwrap();
    assert_eq!(left, 2);
    // Promoted entries carry their job id; the index points at the ready entry.
    let nid: String = f.conn.hget(&keys.index, "j0").await.unwrap();
    assert_eq!(f.fields(&keys.ready, &nid).await["id"], b"j0");
    // A delayed id whose body vanished is dropped, not promoted.
    let _: () = f.conn.zadd(&keys.delayed, "ghost", 1).await.unwrap();
    let (moved, _) = scripts::promote(&mut f.conn, &keys, 1_002, 10, 100)
        .await
        .unwrap();
    assert_eq!(moved, 0);
    let ghost: Option<f64> = f.conn.zscore(&keys.delayed, "ghost").await.unwrap();
    assert!(ghost.is_none());
}

#[tokio::test]
async fn enqueue_dedups_by_key_and_by_live_id() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let fields: [(&str, &[u8]); 2] = [("v", b"1"), ("payload", b"\xf6")];
    let first = scripts::enqueue(
        &mut f.conn,
        &keys,
        NewJob {
            job_id: "order-1",
            dedup_key: "order-1",
            dedup_ttl_ms: 60_000,
            due_ms: 0,
            now_ms: 5,
            fields: &fields,
        },
    )
    .await
    .unwrap();
    assert!(matches!(first, Enqueued::Ready(ref id) if id == "order-1"));
    let again = scripts::enqueue(
        &mut f.conn,
        &keys,
        NewJob {
            job_id: "other",
            dedup_key: "order-1",
            dedup_ttl_ms: 60_000,
            due_ms: 0,
            now_ms: 5,
            fields: &fields,
        },
    )
    .await
    .unwrap();
    assert_eq!(again, Enqueued::Duplicate("order-1".into()));
    let ttl: i64 = f.conn.pttl(keys.dedup("order-1")).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000);
    // Without a dedup record, a live id is still never added twice.
    let live = scripts::enqueue(
        &mut f.conn,
        &keys,
        NewJob {
            job_id: "order-1",
            dedup_key: "order-1x",
            dedup_ttl_ms: 0,
            due_ms: 0,
            now_ms: 5,
            fields: &fields,
        },
    )
    .await
    .unwrap();
    assert_eq!(live, Enqueued::Duplicate("order-1".into()));
    assert_eq!(f.xlen(&keys.ready).await, 1);
    let nid: String = f.conn.hget(&keys.index, "order-1").await.unwrap();
    assert_eq!(f.fields(&keys.ready, &nid).await["id"], b"order-1");
}

#[tokio::test]
async fn update_is_fenced() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[]).await;
    f.read("w1", 1).await;
    assert!(
        scripts::update(
            &mut f.conn,
            &Caller {
                keys: &keys,
                consumer: "w1",
                events_maxlen: 100,
                max_attempts: 5
            },
            Update {
                delivery: d(&a, 1),
                job_id: &a,
                field: RecordField::Progress,
                value: b"\x18\x32",
                ttl_ms: 10_000
            }
        )
        .await
        .unwrap()
    );
    assert!(
        !scripts::update(
            &mut f.conn,
            &Caller {
                keys: &keys,
                consumer: "w2",
                events_maxlen: 100,
                max_attempts: 5
            },
            Update {
                delivery: d(&a, 1),
                job_id: &a,
                field: RecordField::Progress,
                value: b"\x00",
                ttl_ms: 10_000
            }
        )
        .await
        .unwrap()
    );
    assert!(
        !scripts::update(
            &mut f.conn,
            &Caller {
                keys: &keys,
                consumer: "w1",
                events_maxlen: 100,
                max_attempts: 5
            },
            Update {
                delivery: d(&a, 2),
                job_id: &a,
                field: RecordField::Data,
                value: b"\x00",
                ttl_ms: 10_000
            }
        )
        .await
        .unwrap()
    );
    let p: Vec<u8> = f.conn.hget(keys.job(&a), "progress").await.unwrap();
    assert_eq!(p, b"\x18\x32");
    let data: bool = f.conn.hexists(keys.job(&a), "data").await.unwrap();
    assert!(!data);
}

#[tokio::test]
async fn retire_never_drops_a_consumer_with_pending_entries() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[]).await;
    f.read("w1", 1).await;
    assert!(!scripts::retire(&mut f.conn, &keys, "w1").await.unwrap());
    assert_eq!(f.pending(&a).await.unwrap().0, "w1");
    let items = [AckItem {
        delivery: d(&a, 1),
        job_id: &a,
        attempt: 1,
        result: b"",
        touched: false,
    }];
    scripts::ack(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 0,
            max_attempts: 5,
        },
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 0,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
        },
    )
    .await
    .unwrap();
    assert!(scripts::retire(&mut f.conn, &keys, "w1").await.unwrap());
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&keys.ready)
        .arg(GROUP)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(consumers, redis::Value::Array(vec![]));
}

#[tokio::test]
async fn every_script_declares_the_shebang_so_undeclared_keys_fail() {
    for (name, src) in scripts::SOURCES {
        assert!(src.starts_with("#!lua"), "{name} must start with #!lua");
        for section in ["-- KEYS[1]", "-- ARGV[1]", "Returns"] {
            assert!(src.contains(section), "{name}: header lacks {section}");
        }
    }
    // And the test server enforces slots: a shebang script touching a key outside its declared keys' slot
    // errors, so the fixture above would catch such a script.
    let redis = TestRedis::start_cluster();
    let mut conn = redis.aconn().await;
    let r: redis::RedisResult<()> =
        redis::Script::new("#!lua\nreturn redis.call('GET', 'undeclared')")
            .key("{q}:x")
            .invoke_async(&mut conn)
            .await;
    assert!(r.is_err());
}

async fn ack_one(f: &mut Fixture, id: &str) -> bool {
    let keys = f.keys.clone();
    let items = [AckItem {
        delivery: d(id, 1),
        job_id: id,
        attempt: 1,
        result: b"",
        touched: false,
    }];
    let retention = Retention {
        ms: 0,
        keep_all: false,
    };
    scripts::ack(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 0,
            max_attempts: 5,
        },
        Ack {
            now_ms: 1,
            retention,
            completed_event: false,
            items: &items,
        },
    )
    .await
    .unwrap()[0]
}

async fn add_at(f: &mut Fixture, id: &str) -> String {
    redis::cmd("XADD")
        .arg(&f.keys.ready)
        .arg(id)
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(&b"\xf6"[..])
        .query_async(&mut f.conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn ack_trims_finished_entries_below_the_oldest_unfinished_one() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    // Close together in entry-id time (within the lazy window).
    let old = add_at(&mut f, "5000-0").await;
    let a = add_at(&mut f, "5001-0").await;
    let b = add_at(&mut f, "5002-0").await;
    let waiting = add_at(&mut f, "5003-0").await;
    f.read("w1", 3).await;
    assert!(ack_one(&mut f, &a).await);
    assert!(ack_one(&mut f, &b).await);
    // `old` is still pending: a and b linger, finished, behind it; the undelivered entry waits.
    assert_eq!(f.xlen(&keys.ready).await, 4);
    let state = scripts_state(&mut f, &a).await.0;
    assert_eq!(
        state, "unknown",
        "a finished entry awaiting the trim is not waiting"
    );
    assert_eq!(scripts_state(&mut f, &waiting).await.0, "waiting");
    // Finishing `old` trims everything finished, up to the first undelivered entry.
    assert!(ack_one(&mut f, &old).await);
    assert_eq!(f.xlen(&keys.ready).await, 1);
    assert!(f.exists_in(&keys.ready, &waiting).await);
}

#[tokio::test]
async fn ack_deletes_at_once_when_an_old_delivery_pins_the_head() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    // `old` is far behind in entry-id time (past the lazy window): a long job holding the head.
    add_at(&mut f, "1000-0").await;
    let a = add_at(&mut f, "900000-0").await;
    let b = add_at(&mut f, "900001-0").await;
    f.read("w1", 3).await;
    assert!(ack_one(&mut f, &a).await);
    assert!(ack_one(&mut f, &b).await);
    assert_eq!(
        f.xlen(&keys.ready).await,
        1,
        "only the pinned entry is left"
    );
}

/// Runs state.lua: (state, entry id, attempts made, owner, deliveries).
async fn scripts_state(f: &mut Fixture, id: &str) -> (String, String, u64, String, u64) {
    let keys = f.keys.clone();
    let r = scripts::state(&mut f.conn, &keys, id).await.unwrap();
    (r.state, r.entry_id, r.attempts, r.owner, r.deliveries)
}

#[tokio::test]
async fn state_reports_every_state() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let fields: [(&str, &[u8]); 2] = [("v", b"1"), ("payload", b"\xf6")];
    assert_eq!(scripts_state(&mut f, "nope").await.0, "unknown");
    scripts::enqueue(
        &mut f.conn,
        &keys,
        NewJob {
            job_id: "later",
            dedup_key: "later",
            dedup_ttl_ms: 0,
            due_ms: 10_000,
            now_ms: 5,
            fields: &fields,
        },
    )
    .await
    .unwrap();
    let s = scripts_state(&mut f, "later").await;
    assert_eq!((s.0.as_str(), s.2), ("delayed", 0));
    let w = f.add(&[]).await;
    let r = f.add(&[]).await;
    let x = f.add(&[]).await;
    assert_eq!(scripts_state(&mut f, &w).await.0, "waiting");
    f.read("w1", 1).await;
    let s = scripts_state(&mut f, &w).await;
    assert_eq!((s.0.as_str(), s.3.as_str(), s.4), ("active", "w1", 1));
    // A failed attempt waiting for its retry.
    f.read("w1", 2).await;
    scripts::fail(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Fail {
            delivery: d(&r, 1),
            job_id: &r,
            now_ms: 1,
            mode: FailMode::Retry { delay_ms: 60_000 },
            error: "e",
        },
    )
    .await
    .unwrap();
    let s = scripts_state(&mut f, &r).await;
    assert_eq!((s.0.as_str(), s.2), ("failed", 1));
    scripts::fail(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Fail {
            delivery: d(&x, 1),
            job_id: &x,
            now_ms: 1,
            mode: FailMode::Dead(DeadReason::Failed),
            error: "e",
        },
    )
    .await
    .unwrap();
    assert_eq!(scripts_state(&mut f, &x).await.0, "dead");
    let items = [AckItem {
        delivery: d(&w, 1),
        job_id: &w,
        attempt: 1,
        result: b"\x01",
        touched: false,
    }];
    scripts::ack(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 0,
            max_attempts: 5,
        },
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 60_000,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
        },
    )
    .await
    .unwrap();
    let s = scripts_state(&mut f, &w).await;
    assert_eq!((s.0.as_str(), s.2), ("completed", 1));
}

#[tokio::test]
async fn checkpoint_is_fenced_versioned_bounded_and_expires_after_completion() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[]).await;
    f.read("w1", 1).await;
    let write = |version: u64, state: &'static [u8]| scripts::CheckpointWrite {
        version,
        label: "",
        state,
        keep: 3,
        ttl_ms: 600_000,
        max_bytes: 8,
    };
    use scripts::Checkpointed;
    let ck =
        |f: &mut Fixture, who: &'static str, token: u64, w: scripts::CheckpointWrite<'static>| {
            let keys = keys.clone();
            let a = a.clone();
            let conn = f.conn.clone();
            async move {
                let mut conn = conn;
                scripts::checkpoint(
                    &mut conn,
                    &Caller {
                        keys: &keys,
                        consumer: who,
                        events_maxlen: 100,
                        max_attempts: 5,
                    },
                    d(&a, token),
                    &a,
                    5,
                    w,
                )
                .await
                .unwrap()
            }
        };
    // Auto versions count up from the newest.
    assert_eq!(
        ck(&mut f, "w1", 1, write(0, b"\x01")).await,
        Checkpointed::Written(1)
    );
    assert_eq!(
        ck(&mut f, "w1", 1, write(0, b"\x02")).await,
        Checkpointed::Written(2)
    );
    // An explicit version must be newer.
    assert_eq!(
        ck(&mut f, "w1", 1, write(2, b"\x03")).await,
        Checkpointed::NotNewer(2)
    );
    assert_eq!(
        ck(&mut f, "w1", 1, write(10, b"\x04")).await,
        Checkpointed::Written(10)
    );
    // Fenced: another consumer, or an older token, cannot write.
    assert_eq!(
        ck(&mut f, "w2", 1, write(11, b"\x05")).await,
        Checkpointed::Stale
    );
    assert_eq!(
        ck(&mut f, "w1", 2, write(11, b"\x05")).await,
        Checkpointed::Stale
    );
    // Bounded size.
    assert_eq!(
        ck(&mut f, "w1", 1, write(11, b"123456789")).await,
        Checkpointed::TooLarge
    );
    assert_eq!(
        ck(&mut f, "w1", 1, write(0, b"\x06")).await,
        Checkpointed::Written(11)
    );
    // Keeps the newest 3: versions 2, 10, 11.
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(keys.checkpoints(&a))
        .arg("-")
        .arg("+")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let versions: Vec<String> = rill::wire::parse_entries(v)
        .unwrap()
        .into_iter()
        .map(|e| {
            let fields = e.fields.unwrap();
            String::from_utf8(
                fields
                    .iter()
                    .find(|(k, _)| k == b"version")
                    .unwrap()
                    .1
                    .clone(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(versions, vec!["2", "10", "11"]);
    let ttl: i64 = f.conn.pttl(keys.checkpoints(&a)).await.unwrap();
    assert!(ttl > 500_000);
    // Completing a delivery that checkpointed shortens their life to the retention.
    let items = [AckItem {
        delivery: d(&a, 1),
        job_id: &a,
        attempt: 1,
        result: b"",
        touched: true,
    }];
    scripts::ack(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w1",
            events_maxlen: 0,
            max_attempts: 5,
        },
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 1_000,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
        },
    )
    .await
    .unwrap();
    let ttl: i64 = f.conn.pttl(keys.checkpoints(&a)).await.unwrap();
    assert!(ttl > 0 && ttl <= 1_000, "ttl {ttl}");
}

#[tokio::test]
async fn signal_records_history_and_applies_what_the_queue_can() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let signal_conn = f.conn.clone();
    let sig = |kind: &'static str, target: String| {
        let keys = keys.clone();
        let conn = signal_conn.clone();
        async move {
            let mut conn = conn;
            scripts::signal(
                &mut conn,
                &keys,
                SignalSend {
                    kind,
                    target: &target,
                    sender: "tester",
                    now_ms: 7,
                    payload: b"",
                    maxlen: 100,
                    retention_ms: 60_000,
                },
            )
            .await
            .unwrap()
        }
    };
    // pause / resume set and clear the persistent flag.
    assert_eq!(
        sig("pause", "queue".into()).await.applied,
        SignalApplied::Applied
    );
    let paused: bool = f.conn.exists(&keys.paused).await.unwrap();
    assert!(paused);
    assert_eq!(
        sig("resume", "queue".into()).await.applied,
        SignalApplied::Applied
    );
    let paused: bool = f.conn.exists(&keys.paused).await.unwrap();
    assert!(!paused);
    // cancel: a waiting job is removed and recorded; a running one is left to its worker; unknown is ignored.
    let delivered = f.add(&[]).await;
    let undelivered = f.add(&[]).await;
    assert_eq!(f.read("w1", 1).await, vec![delivered.clone()]);
    assert_eq!(
        sig("cancel", format!("job:{delivered}")).await.applied,
        SignalApplied::ForWorkers,
        "a running job: left to its worker"
    );
    assert_eq!(
        sig("cancel", format!("job:{undelivered}")).await.applied,
        SignalApplied::Applied
    );
    assert!(!f.exists_in(&keys.ready, &undelivered).await);
    let state: String = f.conn.hget(keys.job(&undelivered), "state").await.unwrap();
    assert_eq!(state, "cancelled");
    assert_eq!(
        sig("cancel", "job:nope".into()).await.applied,
        SignalApplied::Ignored
    );
    // A delayed job is removed from the set and its body from the scheduled stream.
    let fields: [(&str, &[u8]); 2] = [("v", b"1"), ("payload", b"\xf6")];
    scripts::enqueue(
        &mut f.conn,
        &keys,
        NewJob {
            job_id: "later",
            dedup_key: "later",
            dedup_ttl_ms: 0,
            due_ms: 99_999,
            now_ms: 5,
            fields: &fields,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        sig("cancel", "job:later".into()).await.applied,
        SignalApplied::Applied
    );
    let left: u64 = f.conn.zcard(&keys.delayed).await.unwrap();
    assert_eq!((left, f.xlen(&keys.scheduled).await), (0, 0));
    // Everything is in the history; what the queue applied has an outcome.
    assert_eq!(
        sig("custom:reload", "worker:w1".into()).await.applied,
        SignalApplied::ForWorkers
    );
    assert_eq!(f.xlen(&keys.signals).await, 7);
    assert_eq!(f.xlen(&keys.outcomes).await, 5);
}

#[tokio::test]
async fn park_and_resume_a_session() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[("attempts", "1"), ("last_error", "old")]).await;
    f.read("w1", 1).await;
    // Fenced.
    assert_eq!(
        scripts::park(
            &mut f.conn,
            &Caller {
                keys: &keys,
                consumer: "w2",
                events_maxlen: 100,
                max_attempts: 5
            },
            d(&a, 1),
            50
        )
        .await
        .unwrap(),
        HandBack::Stale
    );
    assert_eq!(
        scripts::park(
            &mut f.conn,
            &Caller {
                keys: &keys,
                consumer: "w1",
                events_maxlen: 100,
                max_attempts: 5
            },
            d(&a, 1),
            50
        )
        .await
        .unwrap(),
        HandBack::Done
    );
    assert!(!f.exists_in(&keys.ready, &a).await);
    assert!(f.pending(&a).await.is_none());
    let score: Option<f64> = f.conn.zscore(&keys.parked, &a).await.unwrap();
    assert_eq!(score, Some(50.0));
    let sid: String = f.conn.hget(&keys.index, &a).await.unwrap();
    let body = f.fields(&keys.scheduled, &sid).await;
    assert_eq!(body["attempts"], b"1", "parking does not count an attempt");
    assert!(!body.contains_key("last_error"));
    assert_eq!(scripts_state(&mut f, &a).await.0, "parked");
    // Nothing promotes a parked job.
    assert_eq!(
        scripts::promote(&mut f.conn, &keys, u64::MAX / 2, 10, 100)
            .await
            .unwrap()
            .0,
        0
    );
    // A resume signal puts it back on the ready stream.
    let sent = scripts::signal(
        &mut f.conn,
        &keys,
        SignalSend {
            kind: "resume",
            target: &format!("job:{a}"),
            sender: "t",
            now_ms: 60,
            payload: b"",
            maxlen: 100,
            retention_ms: 1000,
        },
    )
    .await
    .unwrap();
    assert_eq!(sent.applied, SignalApplied::Applied);
    let nid: String = f.conn.hget(&keys.index, &a).await.unwrap();
    assert_eq!(f.fields(&keys.ready, &nid).await["id"], a.as_bytes());
    assert_eq!(scripts_state(&mut f, &a).await.0, "waiting");
    // A pause signal parks a waiting job directly; resuming twice is ignored the second time.
    let sent = scripts::signal(
        &mut f.conn,
        &keys,
        SignalSend {
            kind: "pause",
            target: &format!("job:{a}"),
            sender: "t",
            now_ms: 70,
            payload: b"",
            maxlen: 100,
            retention_ms: 1000,
        },
    )
    .await
    .unwrap();
    assert_eq!(sent.applied, SignalApplied::Applied);
    assert_eq!(scripts_state(&mut f, &a).await.0, "parked");
    let resume = |c: redis::aio::MultiplexedConnection, keys: QueueKeys, a: String| async move {
        let mut c = c;
        scripts::signal(
            &mut c,
            &keys,
            SignalSend {
                kind: "resume",
                target: &format!("job:{a}"),
                sender: "t",
                now_ms: 80,
                payload: b"",
                maxlen: 100,
                retention_ms: 1000,
            },
        )
        .await
        .unwrap()
        .applied
    };
    assert_eq!(
        resume(f.conn.clone(), keys.clone(), a.clone()).await,
        SignalApplied::Applied
    );
    assert_eq!(
        resume(f.conn.clone(), keys.clone(), a.clone()).await,
        SignalApplied::Ignored
    );
}

#[tokio::test]
async fn heartbeat_registers_and_adopt_takes_over_only_crashed_workers() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let fields = vec![
        ("status".to_owned(), "busy".to_owned()),
        ("host".to_owned(), "h1".to_owned()),
    ];
    scripts::heartbeat(&mut f.conn, &keys, "w1", 1_000, 100, 60_000, &fields)
        .await
        .unwrap();
    let rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(keys.worker("w1")).await.unwrap();
    assert_eq!(
        (
            rec["status"].as_str(),
            rec["host"].as_str(),
            rec["last_beat_ms"].as_str()
        ),
        ("busy", "h1", "1000")
    );
    let score: Option<f64> = f.conn.zscore(&keys.workers, "w1").await.unwrap();
    assert_eq!(score, Some(1000.0));
    assert_eq!(
        f.xlen(&keys.heartbeats).await,
        1,
        "the beat is on the stream; host is not"
    );
    // With now = 0 the server's clock stamps the beat (hosts with skewed clocks still agree).
    scripts::heartbeat(&mut f.conn, &keys, "w0", 0, 100, 60_000, &fields)
        .await
        .unwrap();
    let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut f.conn).await.unwrap();
    let stamped: f64 = f.conn.zscore(&keys.workers, "w0").await.unwrap();
    assert!(
        (stamped as i64 - (secs * 1000) as i64).abs() < 5_000,
        "{stamped} vs {secs}"
    );
    let _: () = f.conn.zrem(&keys.workers, "w0").await.unwrap();
    // w1 holds two jobs, one on its last attempt.
    let a = f.add(&[]).await;
    let b = f.add(&[("max_attempts", "1")]).await;
    f.read("w1", 2).await;
    // Beat 2 s ago with crash_after 3 s: alive, nothing adopted.
    let alive = scripts::adopt(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w2",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Adopt {
            crashed: "w1",
            now_ms: 3_000,
            crash_after_ms: 3_000,
            count: 10,
        },
    )
    .await
    .unwrap();
    assert!(!alive.crashed && alive.taken.is_empty());
    assert_eq!(f.pending(&a).await.unwrap().0, "w1");
    // Past it: crashed. `a` is adopted with its next token; `b` is out of attempts and dead-lettered.
    let out = scripts::adopt(
        &mut f.conn,
        &Caller {
            keys: &keys,
            consumer: "w2",
            events_maxlen: 100,
            max_attempts: 5,
        },
        Adopt {
            crashed: "w1",
            now_ms: 5_000,
            crash_after_ms: 3_000,
            count: 10,
        },
    )
    .await
    .unwrap();
    assert!(out.crashed && out.removed);
    assert_eq!(
        out.taken
            .iter()
            .map(|(e, t)| (e.id.clone(), *t))
            .collect::<Vec<_>>(),
        vec![(a.clone(), 2)]
    );
    assert_eq!(out.dead_lettered, 1);
    assert_eq!(f.pending(&a).await.unwrap().0, "w2");
    let dead: bool = f.conn.hexists(&keys.dead_index, &b).await.unwrap();
    assert!(dead);
    // Its pending list empty, w1 is gone from the group and the registry.
    let rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(keys.worker("w1")).await.unwrap();
    assert!(rec.is_empty());
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&keys.ready)
        .arg(GROUP)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(consumers.len(), 1);
}

impl Fixture {
    /// Seeds one dead letter the way fail.lua writes it; returns its dead-letter entry id.
    async fn seed_dead(&mut self, dead_id: &str, job: &str, extra: &[(&str, &str)]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.keys.dead).arg(dead_id);
        for (k, v) in [
            ("dead_reason", "failed"),
            ("dead_error", "boom"),
            ("dead_ms", "1"),
            ("dead_entry", "1-1"),
            ("dead_attempts", "3"),
            ("dead_job", job),
            ("v", "1"),
            ("attempts", "2"),
            ("last_error", "older"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            cmd.arg(k).arg(v);
        }
        cmd.arg("payload").arg(&b"\xf6"[..]);
        let did: String = cmd.query_async(&mut self.conn).await.unwrap();
        let _: () = self
            .conn
            .hset(&self.keys.dead_index, job, &did)
            .await
            .unwrap();
        did
    }
}

#[tokio::test]
async fn requeue_puts_dead_letters_back_as_fresh_jobs() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.seed_dead("*", "job-a", &[("x-trace", "t1")]).await;
    let b = f.seed_dead("*", "job-b", &[]).await;
    // job-b was enqueued again since it died: it must not run twice.
    let _: () = f.conn.hset(&keys.index, "job-b", "9-9").await.unwrap();
    let out = scripts::requeue(&mut f.conn, &keys, 5_000, 100, &[&a, &b, "1-0"])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            scripts::Requeued::Ready,
            scripts::Requeued::Live,
            scripts::Requeued::Missing
        ]
    );
    // job-a: a new ready entry with its job id, full attempts, the error it died with; no dead_* fields.
    let nid: String = f.conn.hget(&keys.index, "job-a").await.unwrap();
    let fields = f.fields(&keys.ready, &nid).await;
    assert_eq!(fields["id"], b"job-a");
    assert_eq!(fields["last_error"], b"boom");
    assert_eq!(fields["x-trace"], b"t1");
    assert!(!fields.contains_key("attempts"));
    assert!(fields.keys().all(|k| !k.starts_with("dead_")));
    let raw = rill::wire::RawEntry {
        id: nid.clone(),
        fields: Some(
            fields
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), v))
                .collect(),
        ),
    };
    assert!(rill::wire::parse_entry(raw, 1 << 20).is_ok());
    assert!(!f.exists_in(&keys.dead, &a).await);
    let still: bool = f.conn.hexists(&keys.dead_index, "job-a").await.unwrap();
    assert!(!still);
    // job-b stays dead, untouched.
    assert!(f.exists_in(&keys.dead, &b).await);
    let idx: String = f.conn.hget(&keys.dead_index, "job-b").await.unwrap();
    assert_eq!(idx, b);
    let events: redis::Value = redis::cmd("XRANGE")
        .arg(&keys.events)
        .arg("-")
        .arg("+")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let events = rill::wire::parse_entries(events).unwrap();
    assert_eq!(events.len(), 1);
    let ev: std::collections::HashMap<_, _> =
        events[0].fields.clone().unwrap().into_iter().collect();
    assert_eq!(ev[&b"event".to_vec()], b"requeued");
    assert_eq!(ev[&b"id".to_vec()], b"job-a");
}

#[tokio::test]
async fn purge_deletes_dead_letters_older_than_the_cutoff() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    for (i, ms) in [1000, 2000, 3000].iter().enumerate() {
        f.seed_dead(&format!("{ms}-0"), &format!("j{i}"), &[]).await;
    }
    // A dead-index entry pointing at a newer death of the same job stays.
    let _: () = f.conn.hset(&keys.dead_index, "j0", "3000-0").await.unwrap();
    assert_eq!(
        scripts::purge(&mut f.conn, &keys, 2500, 10).await.unwrap(),
        2
    );
    let left: Vec<String> = f.conn.hkeys(&keys.dead_index).await.unwrap();
    let mut left = left;
    left.sort();
    assert_eq!(left, vec!["j0", "j2"]);
    assert!(f.exists_in(&keys.dead, "3000-0").await);
    // Nothing older left; 0 = every entry, in batches.
    assert_eq!(
        scripts::purge(&mut f.conn, &keys, 2500, 10).await.unwrap(),
        0
    );
    assert_eq!(scripts::purge(&mut f.conn, &keys, 0, 10).await.unwrap(), 1);
    let len: u64 = f.conn.xlen(&keys.dead).await.unwrap();
    assert_eq!(len, 0);
}

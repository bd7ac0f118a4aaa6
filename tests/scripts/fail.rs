//! fail.lua: retries, dead letters, stale failures.

use super::*;

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
        &caller(&keys, "w1"),
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
    // The new entry's id is the retry's time: the job keeps its enqueue time, the old entry id's.
    assert_eq!(
        fields["enqueued_ms"],
        a.split('-').next().unwrap().as_bytes()
    );
    assert_eq!(
        fields["payload"], b"\x02",
        "updated data replaces the payload"
    );
    assert_eq!(
        fields["x-trace"], b"t1",
        "extension fields travel with the job"
    );

    // Promote it, deliver it again, fail again: attempts (2) reach max_attempts (2) -> dead, exhausted.
    let p = scripts::promote(&mut f.conn, &keys, 10_500, 10, 100)
        .await
        .unwrap();
    assert_eq!((p.moved, p.next_due), (1, None));
    let eid = f.read("w1", 1).await.remove(0);
    let out = scripts::fail(
        &mut f.conn,
        &caller(&keys, "w1"),
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
        &caller(&keys, "w1"),
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
        &caller(&keys, "w2"),
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
        &caller(&keys, "w1"),
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
        &caller(&keys, "w1"),
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

/// An events MAXLEN of 0 means events are off, here as in every script: no event, and the stream kept as it is
/// (an `XADD MAXLEN ~ 0` would have trimmed it to nothing).
#[tokio::test]
async fn an_events_maxlen_of_zero_adds_no_event_and_trims_nothing() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    for _ in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg(&keys.events)
            .arg("*")
            .arg("event")
            .arg("completed")
            .query_async(&mut f.conn)
            .await
            .unwrap();
    }
    let a = f.add(&[("max_attempts", "1")]).await;
    f.read("w1", 1).await;
    let mut quiet = caller(&keys, "w1");
    quiet.events_maxlen = 0;
    let out = scripts::fail(
        &mut f.conn,
        &quiet,
        Fail {
            delivery: d(&a, 1),
            job_id: &a,
            now_ms: 10_000,
            mode: FailMode::Retry { delay_ms: 0 },
            error: "boom",
        },
    )
    .await
    .unwrap();
    assert!(matches!(out, FailOutcome::Dead { .. }), "{out:?}");
    let events: u64 = f.conn.xlen(&keys.events).await.unwrap();
    assert_eq!(
        events, 3,
        "the three earlier events stay, and no `dead` event was added"
    );
    // The same call with events on adds one.
    let b = f.add(&[("max_attempts", "1")]).await;
    f.read("w1", 1).await;
    scripts::fail(
        &mut f.conn,
        &caller(&keys, "w1"),
        Fail {
            delivery: d(&b, 1),
            job_id: &b,
            now_ms: 10_000,
            mode: FailMode::Retry { delay_ms: 0 },
            error: "boom",
        },
    )
    .await
    .unwrap();
    let events: u64 = f.conn.xlen(&keys.events).await.unwrap();
    assert_eq!(events, 4);
}

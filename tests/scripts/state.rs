//! state.lua: every state a job can be in.

use super::*;

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
            priority: 0,
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
        &caller(&keys, "w1"),
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
        &caller(&keys, "w1"),
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
        &caller(&keys, "w1"),
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 60_000,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
            xackdel: true,
        },
    )
    .await
    .unwrap();
    let s = scripts_state(&mut f, &w).await;
    assert_eq!((s.0.as_str(), s.2), ("completed", 1));
}

#[tokio::test]
async fn a_completed_job_without_a_record_is_found_by_its_completed_event_within_the_scan() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let xadd = |id: &str, fields: Vec<(&'static str, String)>| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&keys.events).arg(id);
        for (k, v) in fields {
            cmd.arg(k).arg(v);
        }
        cmd
    };
    let completed = |ids: &str, ms: u64| {
        vec![
            ("event", "completed".to_string()),
            ("ids", ids.to_string()),
            ("count", ids.split(' ').count().to_string()),
            ("ms", ms.to_string()),
        ]
    };
    // An unnamed job (its id is its entry id) and a named one completed long ago, then 600 other events.
    let _: String = xadd("1000-0", completed("900-0 named-old", 1_000))
        .query_async(&mut f.conn)
        .await
        .unwrap();
    for i in 0..600u64 {
        let fields = if i % 2 == 0 {
            completed(&format!("{}-0 {}-1", 2_000 + i, 2_000 + i), 2_000 + i)
        } else {
            vec![
                ("event", "retrying".into()),
                ("id", "x".into()),
                ("ms", "1".into()),
            ]
        };
        let _: String = xadd(&format!("{}-0", 2_000 + i), fields)
            .query_async(&mut f.conn)
            .await
            .unwrap();
    }
    let row = scripts::state(&mut f.conn, &keys, "2590-1").await.unwrap();
    assert_eq!(
        (row.state.as_str(), row.attempts, row.finished_ms),
        ("completed", 0, 2_590),
        "found by its event; attempts not recorded"
    );
    // A whole word only: "2590-" is not a job of that event.
    assert_eq!(scripts_state(&mut f, "2590-").await.0, "unknown");
    // Beyond the scan (200 events): unknown; a named id is never looked for in the events (it gets a record).
    assert_eq!(scripts_state(&mut f, "900-0").await.0, "unknown");
    assert_eq!(scripts_state(&mut f, "named-old").await.0, "unknown");
    // A later event about the job (it was retried, died and was purged since) says it did not end completed.
    let _: String = xadd(
        "5000-0",
        vec![
            ("event", "dead".into()),
            ("id", "2590-1".into()),
            ("ms", "5000".into()),
        ],
    )
    .query_async(&mut f.conn)
    .await
    .unwrap();
    assert_eq!(scripts_state(&mut f, "2590-1").await.0, "unknown");
    assert_eq!(scripts_state(&mut f, "2590-0").await.0, "completed");
    // An entry-id job newer than every completed event stops the scan at once.
    assert_eq!(scripts_state(&mut f, "999999-0").await.0, "unknown");
    // A record wins over the events, and gives the attempt and the finish time.
    let _: () = f
        .conn
        .hset_multiple(
            keys.job("2590-1"),
            &[
                ("state", "completed"),
                ("attempt", "2"),
                ("finished_ms", "2600"),
            ],
        )
        .await
        .unwrap();
    let row = scripts::state(&mut f.conn, &keys, "2590-1").await.unwrap();
    assert_eq!((row.attempts, row.finished_ms), (2, 2_600));
}

#[tokio::test]
async fn a_generated_id_of_a_partitioned_queue_is_found_by_its_completed_event() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let add = |id: &str, ids: &str| {
        redis::cmd("XADD")
            .arg(&keys.events)
            .arg(id)
            .arg("event")
            .arg("completed")
            .arg("ids")
            .arg(ids)
            .arg("count")
            .arg(1)
            .arg("ms")
            .arg(7)
            .clone()
    };
    // Completed at 100,000 ms; the producer's clock said 130,000 (skewed ahead, within the minute allowed).
    let _: String = add("100000-0", "~130000.00000000000000aa")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let _: String = add("300000-0", "other")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(
        scripts_state(&mut f, "~130000.00000000000000aa").await.0,
        "completed"
    );
    // Generated after every kept event (or beyond the leeway): the scan stops at once.
    assert_eq!(
        scripts_state(&mut f, "~170000.00000000000000aa").await.0,
        "unknown"
    );
    // Only the generated form counts: a caller's id that starts with `~` is not looked for in events.
    assert_eq!(scripts_state(&mut f, "~130000").await.0, "unknown");
}

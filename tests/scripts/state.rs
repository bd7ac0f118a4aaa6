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

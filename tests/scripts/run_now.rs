//! run_now.lua: an operator promotes one delayed or failed job to the ready stream.

use super::*;

#[tokio::test]
async fn run_now_moves_a_delayed_or_failed_job_to_ready_and_nothing_else() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    enqueue_job(&mut f, "later", 10_000, &[]).await;
    enqueue_job(
        &mut f,
        "retrying",
        10_000,
        &[("attempts", &b"2"[..]), ("last_error", &b"boom"[..])],
    )
    .await;
    enqueue_job(&mut f, "now", 0, &[]).await;
    for id in ["later", "retrying"] {
        let out = scripts::run_now(&mut f.conn, &keys, id, 500, 100)
            .await
            .unwrap();
        assert_eq!(out, RunNow::Moved);
        let score: Option<f64> = f.conn.zscore(&keys.delayed, id).await.unwrap();
        assert!(score.is_none());
        let eid: String = f.conn.hget(&keys.index, id).await.unwrap();
        let fields = f.fields(&keys.ready, &eid).await;
        assert_eq!(fields["id"], id.as_bytes());
        let ev = last_event(&mut f).await;
        assert_eq!(
            (ev["event"].as_str(), ev["id"].as_str(), ev["ms"].as_str()),
            ("promoted", id, "500")
        );
    }
    // The failed job keeps its attempts and error.
    let eid: String = f.conn.hget(&keys.index, "retrying").await.unwrap();
    let fields = f.fields(&keys.ready, &eid).await;
    assert_eq!(
        (&fields["attempts"][..], &fields["last_error"][..]),
        (&b"2"[..], &b"boom"[..])
    );
    assert_eq!(f.xlen(&keys.scheduled).await, 0);
    assert_eq!(f.xlen(&keys.ready).await, 3);
    // A waiting job, an unknown one: nothing done.
    assert_eq!(
        scripts::run_now(&mut f.conn, &keys, "now", 500, 100)
            .await
            .unwrap(),
        RunNow::NotDelayed
    );
    assert_eq!(
        scripts::run_now(&mut f.conn, &keys, "nope", 500, 100)
            .await
            .unwrap(),
        RunNow::NotDelayed
    );
    assert_eq!(f.xlen(&keys.ready).await, 3);
    // A delayed id whose body is gone is dropped.
    let _: () = f.conn.zadd(&keys.delayed, "ghost", 1).await.unwrap();
    assert_eq!(
        scripts::run_now(&mut f.conn, &keys, "ghost", 500, 100)
            .await
            .unwrap(),
        RunNow::Gone
    );
    let ghost: Option<f64> = f.conn.zscore(&keys.delayed, "ghost").await.unwrap();
    assert!(ghost.is_none());
    assert_eq!(f.xlen(&keys.ready).await, 3);
}

//! signal.lua: history, and what the queue applies itself.

use super::*;

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
            priority: 0,
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

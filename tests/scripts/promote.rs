//! promote.lua: due delayed jobs move to the ready stream.

use super::*;

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

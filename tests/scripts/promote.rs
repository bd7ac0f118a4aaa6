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
                priority: 0,
            },
        )
        .await
        .unwrap();
        assert_eq!(out, Enqueued::Delayed(format!("j{i}")));
    }
    let p = scripts::promote(&mut f.conn, &keys, 1_002, 2, 100)
        .await
        .unwrap();
    assert_eq!((p.moved, p.next_due, p.next_fire), (2, Some(1_002), None));
    let p = scripts::promote(&mut f.conn, &keys, 1_002, 10, 100)
        .await
        .unwrap();
    assert_eq!((p.moved, p.next_due), (1, Some(1_003)));
    // The earliest schedule that is not paused is reported (fire.lua fires it), paused ones (+inf) are not.
    let _: () = redis::cmd("ZADD")
        .arg(&keys.schedules)
        .arg("+inf")
        .arg("paused")
        .arg(5_000)
        .arg("later")
        .arg(4_000)
        .arg("soon")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let p = scripts::promote(&mut f.conn, &keys, 1_002, 10, 100)
        .await
        .unwrap();
    assert_eq!(p.next_fire, Some(4_000));
    assert_eq!(f.xlen(&keys.ready).await, 3);
    assert_eq!(f.xlen(&keys.scheduled).await, 2);
    let left: u64 = f.conn.zcard(&keys.delayed).await.unwrap();
    assert_eq!(left, 2);
    // Promoted entries carry their job id; the index points at the ready entry.
    let nid: String = f.conn.hget(&keys.index, "j0").await.unwrap();
    assert_eq!(f.fields(&keys.ready, &nid).await["id"], b"j0");
    // A delayed id whose body vanished is dropped, not promoted.
    let _: () = f.conn.zadd(&keys.delayed, "ghost", 1).await.unwrap();
    let p = scripts::promote(&mut f.conn, &keys, 1_002, 10, 100)
        .await
        .unwrap();
    assert_eq!(p.moved, 0);
    let ghost: Option<f64> = f.conn.zscore(&keys.delayed, "ghost").await.unwrap();
    assert!(ghost.is_none());
}

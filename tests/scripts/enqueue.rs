//! enqueue.lua: ids, dedup keys and delays.

use super::*;

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
            priority: 0,
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
            priority: 0,
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
            priority: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(live, Enqueued::Duplicate("order-1".into()));
    assert_eq!(f.xlen(&keys.ready).await, 1);
    let nid: String = f.conn.hget(&keys.index, "order-1").await.unwrap();
    assert_eq!(f.fields(&keys.ready, &nid).await["id"], b"order-1");
}

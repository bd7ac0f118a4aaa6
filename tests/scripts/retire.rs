//! retire.lua: a consumer leaves the group only with nothing pending.

use super::*;

#[tokio::test]
async fn retire_never_drops_a_consumer_with_pending_entries() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[]).await;
    f.read("w1", 1).await;
    assert!(!scripts::retire(&mut f.conn, &keys, 0, "w1").await.unwrap());
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
        &caller(&keys, "w1"),
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 0,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
            xackdel: true,
        },
    )
    .await
    .unwrap();
    assert!(scripts::retire(&mut f.conn, &keys, 0, "w1").await.unwrap());
    let consumers: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&keys.ready)
        .arg(GROUP)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(consumers, redis::Value::Array(vec![]));
}

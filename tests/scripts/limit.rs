//! limit.lua: reads new entries only as the rate limit allows, counting a start per entry handed out.

use super::*;
use rill::scripts::limit;

#[tokio::test]
async fn limit_hands_out_at_most_the_rate_per_window_and_counts_only_what_it_read() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    // No limit: nothing read, the caller reads as usual.
    let l = limit(&mut f.conn, &keys, "w1", 10).await.unwrap();
    assert!(!l.limited && l.entries.is_empty());
    let _: () = f
        .conn
        .hset_multiple(&keys.limit, &[("rate", "3"), ("period_ms", "60000")])
        .await
        .unwrap();
    // Nothing waiting: nothing read, nothing counted, and where to block from.
    let l = limit(&mut f.conn, &keys, "w1", 10).await.unwrap();
    assert!(l.limited && l.entries.is_empty() && l.wait.is_zero());
    assert_eq!(l.last_delivered, "0-0");
    let used: Option<u64> = f.conn.hget(&keys.limit, "used").await.unwrap();
    assert_eq!(used, None, "nothing counted");
    for i in 0..5 {
        let _: String = f
            .conn
            .xadd(&keys.ready, "*", &[("v", "1"), ("payload", &i.to_string())])
            .await
            .unwrap();
    }
    // Two asked for, two read; then one more allowed of the three; then none for a minute.
    let l = limit(&mut f.conn, &keys, "w1", 2).await.unwrap();
    assert_eq!(l.entries.len(), 2);
    assert_eq!(
        l.last_delivered, "",
        "only a caller that got nothing needs it"
    );
    let l = limit(&mut f.conn, &keys, "w2", 10).await.unwrap();
    assert_eq!(l.entries.len(), 1);
    let l = limit(&mut f.conn, &keys, "w1", 10).await.unwrap();
    assert!(l.entries.is_empty());
    assert_eq!(
        l.last_delivered.split('-').count(),
        2,
        "{}",
        l.last_delivered
    );
    assert!(
        l.wait > std::time::Duration::from_secs(59) && l.wait <= std::time::Duration::from_secs(60),
        "{:?}",
        l.wait
    );
    // The entries read are pending to their readers, like any read.
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(&keys.ready)
        .arg(GROUP)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert!(
        matches!(&pending, redis::Value::Array(a) if a[0] == redis::Value::Int(3)),
        "{pending:?}"
    );
    // Three starts in two calls: one member per call, their sum in `used`.
    let members: Vec<String> = f.conn.zrange(&keys.limit_starts, 0, -1).await.unwrap();
    assert_eq!(members.len(), 2);
    assert!(
        members[0].ends_with(":2") && members[1].ends_with(":1"),
        "{members:?}"
    );
    let used: u64 = f.conn.hget(&keys.limit, "used").await.unwrap();
    assert_eq!(used, 3);
}

#[tokio::test]
async fn starts_older_than_the_window_no_longer_count() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let _: () = f
        .conn
        .hset_multiple(&keys.limit, &[("rate", "2"), ("period_ms", "1000")])
        .await
        .unwrap();
    for _ in 0..4 {
        let _: String = f
            .conn
            .xadd(&keys.ready, "*", &[("v", "1"), ("payload", "x")])
            .await
            .unwrap();
    }
    // Two starts recorded long ago (two calls of one): outside the window.
    let _: () = redis::cmd("ZADD")
        .arg(&keys.limit_starts)
        .arg(1)
        .arg("1:1")
        .arg(2)
        .arg("2:1")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let _: () = f.conn.hset(&keys.limit, "used", 2).await.unwrap();
    let l = limit(&mut f.conn, &keys, "w1", 10).await.unwrap();
    assert_eq!(l.entries.len(), 2);
    let left: Vec<String> = f.conn.zrange(&keys.limit_starts, 0, -1).await.unwrap();
    assert_eq!(left.len(), 1, "the old calls are gone: {left:?}");
    assert!(left[0].ends_with(":2"), "{left:?}");
    let used: u64 = f.conn.hget(&keys.limit, "used").await.unwrap();
    assert_eq!(used, 2);
    // Full for this window.
    let l = limit(&mut f.conn, &keys, "w1", 10).await.unwrap();
    assert!(l.entries.is_empty() && !l.wait.is_zero());
}

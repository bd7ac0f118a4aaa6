//! extend.lua: lease renewal without a new token.

use super::*;

#[tokio::test]
async fn extend_resets_the_lease_without_changing_the_token() {
    let mut f = fixture().await;
    let a = f.add(&[]).await;
    let b = f.add(&[]).await;
    f.read("w1", 2).await;
    f.age("w1", &a, 50_000).await;
    f.age("w1", &b, 50_000).await;
    // b now belongs to w2.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(&f.keys.ready)
        .arg(GROUP)
        .arg("w2")
        .arg(0)
        .arg(&b)
        .arg("IDLE")
        .arg(50_000)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let keys = f.keys.clone();
    let flags = scripts::extend(
        &mut f.conn,
        &caller(&keys, "w1"),
        &[d(&a, 1), d(&b, 1), d(&a, 7)],
    )
    .await
    .unwrap();
    assert_eq!(flags, vec![true, false, false]);
    let (owner, idle, n) = f.pending(&a).await.unwrap();
    assert_eq!((owner.as_str(), n), ("w1", 1));
    assert!(idle < 5_000, "idle reset, got {idle}");
    let (owner, idle, _) = f.pending(&b).await.unwrap();
    assert_eq!(owner, "w2");
    assert!(idle >= 50_000, "w2's entry untouched");
}

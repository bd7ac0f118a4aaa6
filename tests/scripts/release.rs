//! release.lua: hand-back without counting the attempt.

use super::*;

#[tokio::test]
async fn release_hands_back_without_counting_the_attempt() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[("attempts", "2"), ("id", "job-a")]).await;
    let b = f.add(&[]).await;
    f.read("w1", 2).await;
    let codes = scripts::release(&mut f.conn, &caller(&keys, "w1"), 5, &[d(&a, 1), d(&b, 9)])
        .await
        .unwrap();
    assert_eq!(codes, vec![HandBack::Done, HandBack::Stale]);
    assert!(!f.exists_in(&keys.ready, &a).await);
    assert!(f.pending(&a).await.is_none());
    let nid: String = f.conn.hget(&keys.index, "job-a").await.unwrap();
    let fields = f.fields(&keys.ready, &nid).await;
    assert_eq!(fields["attempts"], b"2");
    assert_eq!(fields["id"], b"job-a");
    // It keeps its enqueue time (the old entry id's) in the new entry.
    assert_eq!(
        fields["enqueued_ms"],
        a.split('-').next().unwrap().as_bytes()
    );
    // It is delivered again as a new entry.
    assert_eq!(f.read("w2", 10).await, vec![nid]);
    assert_eq!(f.pending(&b).await.unwrap().0, "w1");
}

//! requeue.lua: dead letters back as fresh jobs.

use super::*;

#[tokio::test]
async fn requeue_puts_dead_letters_back_as_fresh_jobs() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.seed_dead("*", "job-a", &[("x-trace", "t1")]).await;
    let b = f.seed_dead("*", "job-b", &[]).await;
    // job-b was enqueued again since it died: it must not run twice.
    let _: () = f.conn.hset(&keys.index, "job-b", "9-9").await.unwrap();
    let out = scripts::requeue(&mut f.conn, &keys, 5_000, 100, &[&a, &b, "1-0"])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            scripts::Requeued::Ready,
            scripts::Requeued::Live,
            scripts::Requeued::Missing
        ]
    );
    // job-a: a new ready entry with its job id, full attempts, the error it died with; no dead_* fields.
    let nid: String = f.conn.hget(&keys.index, "job-a").await.unwrap();
    let fields = f.fields(&keys.ready, &nid).await;
    assert_eq!(fields["id"], b"job-a");
    assert_eq!(fields["last_error"], b"boom");
    assert_eq!(fields["x-trace"], b"t1");
    assert!(!fields.contains_key("attempts"));
    assert!(fields.keys().all(|k| !k.starts_with("dead_")));
    let raw = rill::wire::RawEntry {
        id: nid.clone(),
        fields: Some(
            fields
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), v))
                .collect(),
        ),
    };
    assert!(rill::wire::parse_entry(raw, 1 << 20).is_ok());
    assert!(!f.exists_in(&keys.dead, &a).await);
    let still: bool = f.conn.hexists(&keys.dead_index, "job-a").await.unwrap();
    assert!(!still);
    // job-b stays dead, untouched.
    assert!(f.exists_in(&keys.dead, &b).await);
    let idx: String = f.conn.hget(&keys.dead_index, "job-b").await.unwrap();
    assert_eq!(idx, b);
    let events: redis::Value = redis::cmd("XRANGE")
        .arg(&keys.events)
        .arg("-")
        .arg("+")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let events = rill::wire::parse_entries(events).unwrap();
    assert_eq!(events.len(), 1);
    let ev: std::collections::HashMap<_, _> =
        events[0].fields.clone().unwrap().into_iter().collect();
    assert_eq!(ev[&b"event".to_vec()], b"requeued");
    assert_eq!(ev[&b"id".to_vec()], b"job-a");
}

//! adopt.lua: a crashed worker's deliveries taken over at once, never a live worker's.

use super::*;

#[tokio::test]
async fn adopt_takes_over_only_crashed_workers() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let fields = vec![("status".to_owned(), "busy".to_owned())];
    let fields = BeatFields {
        per_beat: &fields,
        ..Default::default()
    };
    scripts::heartbeat(&mut f.conn, &keys, beating("w1", 1_000, fields))
        .await
        .unwrap();
    // w1 holds two jobs, one on its last attempt.
    let a = f.add(&[]).await;
    let b = f.add(&[("max_attempts", "1")]).await;
    f.read("w1", 2).await;
    // Beat 2 s ago with crash_after 3 s: alive, nothing adopted.
    let alive = scripts::adopt(
        &mut f.conn,
        &caller(&keys, "w2"),
        Adopt {
            crashed: "w1",
            now_ms: 3_000,
            crash_after_ms: 3_000,
            count: 10,
            levels: 1,
        },
    )
    .await
    .unwrap();
    assert!(!alive.crashed && alive.taken.is_empty());
    assert_eq!(f.pending(&a).await.unwrap().0, "w1");
    // Past it: crashed. `a` is adopted with its next token; `b` is out of attempts and dead-lettered.
    let out = scripts::adopt(
        &mut f.conn,
        &caller(&keys, "w2"),
        Adopt {
            crashed: "w1",
            now_ms: 5_000,
            crash_after_ms: 3_000,
            count: 10,
            levels: 1,
        },
    )
    .await
    .unwrap();
    assert!(out.crashed && out.removed);
    assert_eq!(
        out.taken
            .iter()
            .map(|(e, t)| (e.id.clone(), *t))
            .collect::<Vec<_>>(),
        vec![(a.clone(), 2)]
    );
    assert_eq!(out.dead_lettered, 1);
    assert_eq!(f.pending(&a).await.unwrap().0, "w2");
    let dead: bool = f.conn.hexists(&keys.dead_index, &b).await.unwrap();
    assert!(dead);
    // Its death is an event, as when reclaim.lua or fail.lua dead-letter a job.
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(&keys.events)
        .arg("-")
        .arg("+")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let deaths: Vec<_> = rill::wire::parse_entries(v)
        .unwrap()
        .into_iter()
        .filter(|e| {
            let fields = e.fields.as_deref().unwrap_or_default();
            rill::wire::field(fields, "event") == Some(&b"dead"[..])
                && rill::wire::field(fields, "id") == Some(b.as_bytes())
        })
        .collect();
    assert_eq!(deaths.len(), 1, "one dead event for {b}");
    // Its pending list empty, w1 is gone from the group and the registry.
    let rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(keys.worker("w1")).await.unwrap();
    assert!(rec.is_empty());
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&keys.ready)
        .arg(GROUP)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(consumers.len(), 1);
}

//! reclaim.lua: stalled deliveries change owner in bounded pages.

use super::*;

#[tokio::test]
async fn reclaim_takes_only_expired_leases_and_dead_letters_exhausted_jobs() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let fresh = f.add(&[]).await;
    let stale = f.add(&[]).await;
    let last_try = f.add(&[("max_attempts", "1")]).await;
    let deleted = f.add(&[]).await;
    f.read("w1", 4).await;
    for id in [&stale, &last_try, &deleted] {
        f.age("w1", id, 60_000).await;
    }
    let _: () = f.conn.xdel(&keys.ready, &[&deleted]).await.unwrap();
    let page = scripts::reclaim(
        &mut f.conn,
        &caller(&keys, "w2"),
        Reclaim {
            min_idle_ms: 30_000,
            cursor: "0-0",
            count: 10,
            now_ms: 99,
        },
    )
    .await
    .unwrap();
    assert_eq!(page.cursor, "0-0");
    assert_eq!(page.taken.len(), 1);
    assert_eq!(page.taken[0].0.id, stale);
    assert_eq!(
        page.taken[0].1, 2,
        "the new token is the new delivery count"
    );
    assert_eq!(page.dead_lettered, 1);
    assert_eq!(page.gone, 1);
    assert_eq!(f.pending(&stale).await.unwrap().0, "w2");
    assert_eq!(f.pending(&fresh).await.unwrap().0, "w1");
    assert!(f.pending(&deleted).await.is_none());
    let did: String = f.conn.hget(&keys.dead_index, &last_try).await.unwrap();
    let dead = f.fields(&keys.dead, &did).await;
    assert_eq!(dead["dead_reason"], b"exhausted");
    assert_eq!(dead["dead_attempts"], b"1");
    // w1's old token no longer completes the reclaimed job.
    let items = [AckItem {
        delivery: d(&stale, 1),
        job_id: &stale,
        attempt: 1,
        result: b"",
        touched: false,
    }];
    assert_eq!(
        scripts::ack(
            &mut f.conn,
            &caller(&keys, "w1"),
            Ack {
                now_ms: 1,
                retention: Retention {
                    ms: 0,
                    keep_all: false
                },
                completed_event: false,
                items: &items,
                xackdel: true,
            }
        )
        .await
        .unwrap(),
        vec![false]
    );
}

#[tokio::test]
async fn reclaim_follows_the_cursor_in_bounded_pages() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(f.add(&[]).await);
    }
    f.read("w1", 25).await;
    for id in &ids {
        f.age("w1", id, 60_000).await;
    }
    let mut cursor = "0-0".to_owned();
    let mut taken = 0;
    let mut calls = 0;
    loop {
        let page = scripts::reclaim(
            &mut f.conn,
            &caller(&keys, "w2"),
            Reclaim {
                min_idle_ms: 30_000,
                cursor: &cursor,
                count: 10,
                now_ms: 1,
            },
        )
        .await
        .unwrap();
        assert!(page.taken.len() <= 10);
        taken += page.taken.len();
        calls += 1;
        cursor = page.cursor;
        if cursor == "0-0" {
            break;
        }
        assert!(calls < 10);
    }
    assert_eq!(taken, 25);
    assert!(calls >= 3);
}

//! limit.lua: reads new entries for a consumer under the queue's limits in one step: at most the rate's starts
//! per window (counted at the server's time, only what was read) and at most the concurrency's room (the
//! group's pending entries count); with nothing read it says what to wait for.

use std::time::Duration;

use super::*;
use rill::scripts::{LimitedRead, read_limited};

async fn used(f: &mut Fixture) -> Option<u64> {
    let keys = f.keys.clone();
    f.conn.hget(&keys.limit, "used").await.unwrap()
}

async fn read(f: &mut Fixture, consumer: &str, want: usize) -> LimitedRead {
    let keys = f.keys.clone();
    read_limited(&mut f.conn, &keys, &[keys.ready.as_str()], consumer, want)
        .await
        .unwrap()
}

fn count(r: &LimitedRead) -> usize {
    match r {
        LimitedRead::Entries(e) => e.len(),
        other => panic!("expected entries, got {other:?}"),
    }
}

async fn pending(f: &mut Fixture) -> u64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(&f.keys.ready)
        .arg(GROUP)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    match v {
        redis::Value::Array(a) => match a[0] {
            redis::Value::Int(n) => n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

#[tokio::test]
async fn limit_reads_at_most_the_rate_per_window_and_counts_only_what_it_read() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    for _ in 0..3 {
        f.add(&[]).await;
    }
    // No limit: nothing read, nothing recorded.
    assert_eq!(read(&mut f, "c1", 10).await, LimitedRead::Unlimited);
    assert_eq!((pending(&mut f).await, used(&mut f).await), (0, None));
    let _: () = f
        .conn
        .hset_multiple(&keys.limit, &[("rate", "5"), ("period_ms", "60000")])
        .await
        .unwrap();
    let first = read(&mut f, "c1", 2).await;
    assert_eq!(count(&first), 2);
    // Only one entry left: one start counted, not the four asked for.
    assert_eq!(count(&read(&mut f, "c2", 4).await), 1);
    assert_eq!((pending(&mut f).await, used(&mut f).await), (3, Some(3)));
    let newest: String = redis::cmd("XADD")
        .arg(&keys.ready)
        .arg("*")
        .arg("v")
        .arg("1")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(count(&read(&mut f, "c1", 10).await), 1);
    // Nothing waiting: new entries come after the newest id.
    assert_eq!(
        read(&mut f, "c1", 10).await,
        LimitedRead::Empty {
            after: vec![newest.clone()]
        }
    );
    for _ in 0..5 {
        f.add(&[]).await;
    }
    assert_eq!(count(&read(&mut f, "c1", 10).await), 1, "the fifth start");
    assert_eq!(used(&mut f).await, Some(5));
    match read(&mut f, "c1", 10).await {
        LimitedRead::Rate(wait) => {
            assert!(
                wait > Duration::from_secs(59) && wait <= Duration::from_secs(60),
                "{wait:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let members: Vec<String> = f.conn.zrange(&keys.limit_starts, 0, -1).await.unwrap();
    assert_eq!(members.len(), 4, "one member per read: {members:?}");
    assert!(members[0].ends_with(":2"), "{members:?}");
}

#[tokio::test]
async fn reads_older_than_the_window_no_longer_count() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    for _ in 0..5 {
        f.add(&[]).await;
    }
    let _: () = f
        .conn
        .hset_multiple(
            &keys.limit,
            &[("rate", "3"), ("period_ms", "1000"), ("used", "3")],
        )
        .await
        .unwrap();
    // Three starts long ago (two reads): outside the window.
    let _: () = redis::cmd("ZADD")
        .arg(&keys.limit_starts)
        .arg(1)
        .arg("1:1")
        .arg(2)
        .arg("2:2")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(count(&read(&mut f, "c1", 10).await), 3);
    let left: Vec<String> = f.conn.zrange(&keys.limit_starts, 0, -1).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].ends_with(":3"), "{left:?}");
    assert_eq!(used(&mut f).await, Some(3));
    // The set gone (a quiet window): the count starts again, whatever the hash still says.
    let _: () = f.conn.del(&keys.limit_starts).await.unwrap();
    assert_eq!(count(&read(&mut f, "c1", 10).await), 2);
}

#[tokio::test]
async fn limit_reads_only_into_the_room_the_concurrency_leaves() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let _: () = f.conn.hset(&keys.limit, "concurrency", 3).await.unwrap();
    for _ in 0..6 {
        f.add(&[]).await;
    }
    // Two handed out elsewhere and not finished: room for one more.
    let running = f.read("c1", 2).await;
    assert_eq!(count(&read(&mut f, "c2", 5).await), 1);
    assert_eq!(pending(&mut f).await, 3);
    // Full: wait for an event (a job ending) after the events stream's newest id.
    assert_eq!(
        read(&mut f, "c2", 5).await,
        LimitedRead::Room {
            after_event: "0-0".into()
        }
    );
    let event: String = redis::cmd("XADD")
        .arg(&keys.events)
        .arg("*")
        .arg("event")
        .arg("completed")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(
        read(&mut f, "c2", 5).await,
        LimitedRead::Room { after_event: event }
    );
    // Two finish: room for two; nothing recorded for a concurrency limit alone.
    let _: u64 = redis::cmd("XACK")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg(&running)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(count(&read(&mut f, "c3", 5).await), 2);
    assert_eq!(used(&mut f).await, None);
    // With a rate limit too: the lower of the two.
    f.add(&[]).await;
    let _: () = f
        .conn
        .hset_multiple(
            &keys.limit,
            &[("rate", "1"), ("period_ms", "60000"), ("concurrency", "10")],
        )
        .await
        .unwrap();
    assert_eq!(count(&read(&mut f, "c3", 5).await), 1);
    assert!(matches!(read(&mut f, "c3", 5).await, LimitedRead::Rate(_)));
}

//! limit.lua: reads new entries for a consumer under the queue's limits in one step: at most the rate's starts
//! per window (counted at the server's time, only what was read) and at most the concurrency's room (the
//! group's pending entries count); with nothing read it says what to wait for.

use std::collections::HashMap;
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

/// Members of a sorted set, lowest first.
async fn members(f: &mut Fixture, key: &str) -> Vec<String> {
    f.conn.zrange(key, 0, -1).await.unwrap()
}

fn ids(r: &LimitedRead) -> Vec<String> {
    match r {
        LimitedRead::Entries(e) => e.iter().map(|(_, e)| e.id.clone()).collect(),
        other => panic!("expected entries, got {other:?}"),
    }
}

async fn per_key(f: &mut Fixture, fields: &[(&str, &str)]) {
    let keys = f.keys.clone();
    let _: () = f.conn.hset_multiple(&keys.limit, fields).await.unwrap();
}

#[tokio::test]
async fn per_key_concurrency_holds_a_full_keys_entries_and_hands_them_out_in_order_as_room_frees() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    per_key(&mut f, &[("key_field", "x-t"), ("key_concurrency", "1")]).await;
    let a1 = f.add(&[("x-t", "a")]).await;
    let a2 = f.add(&[("x-t", "a")]).await;
    let b1 = f.add(&[("x-t", "b")]).await;
    let u1 = f.add(&[]).await;
    let a3 = f.add(&[("x-t", "a")]).await;
    // One of a's, b's and the one without a key; a2 and a3 held: acked where they lie, listed in order.
    assert_eq!(
        ids(&read(&mut f, "c1", 10).await),
        [a1.as_str(), b1.as_str(), u1.as_str()]
    );
    assert_eq!(
        members(&mut f, &keys.held).await,
        [a2.as_str(), a3.as_str()]
    );
    assert_eq!(members(&mut f, &keys.key_ring).await, ["a"]);
    assert_eq!(pending(&mut f).await, 3);
    assert_eq!(f.conn.xlen::<_, u64>(&keys.ready).await.unwrap(), 5);
    // a is full and nothing new waits: wait for a job to end (an event) or a new entry; no rate to wake for.
    match read(&mut f, "c1", 10).await {
        LimitedRead::Keys {
            after_event,
            after,
            wake,
        } => {
            assert_eq!((after_event.as_str(), wake), ("0-0", None));
            assert_eq!(after, [a3.as_str()]);
        }
        other => panic!("{other:?}"),
    }
    // a1 ends: a2 goes to the next reader, claimed with delivery count 1 (a fresh delivery's token).
    let _: () = redis::cmd("XACK")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg(&a1)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(ids(&read(&mut f, "c2", 10).await), [a2.as_str()]);
    let p: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg(&a2)
        .arg(&a2)
        .arg(1)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!((p[0].1.as_str(), p[0].3), ("c2", 1));
    assert_eq!(members(&mut f, &keys.held).await, [a3.as_str()]);
    // A new entry of a waits behind a3, even once a has room.
    let a4 = f.add(&[("x-t", "a")]).await;
    assert!(matches!(
        read(&mut f, "c1", 10).await,
        LimitedRead::Keys { .. }
    ));
    assert_eq!(
        members(&mut f, &keys.held).await,
        [a3.as_str(), a4.as_str()]
    );
    let _: () = redis::cmd("XACK")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg(&a2)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(ids(&read(&mut f, "c1", 10).await), [a3.as_str()]);
    // Limits removed: held jobs still come out (the ring's turns, no limit by key), then reads are as usual.
    let _: () = f.conn.del(&keys.limit).await.unwrap();
    assert_eq!(ids(&read(&mut f, "c1", 10).await), [a4.as_str()]);
    assert!(members(&mut f, &keys.held).await.is_empty());
    assert!(members(&mut f, &keys.key_ring).await.is_empty());
    assert_eq!(read(&mut f, "c1", 10).await, LimitedRead::Unlimited);
}

#[tokio::test]
async fn keys_with_held_jobs_take_turns_one_job_each_least_recently_served_first() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    per_key(&mut f, &[("key_field", "x-t"), ("key_concurrency", "1")]).await;
    let mut by_key: HashMap<&str, Vec<String>> = HashMap::new();
    for k in ["a", "a", "a", "a", "b", "b", "c"] {
        let id = f.add(&[("x-t", k)]).await;
        by_key.entry(k).or_default().push(id);
    }
    let first = ids(&read(&mut f, "c1", 10).await);
    assert_eq!(
        first,
        [
            by_key["a"][0].as_str(),
            by_key["b"][0].as_str(),
            by_key["c"][0].as_str()
        ]
    );
    assert_eq!(members(&mut f, &keys.key_ring).await, ["a", "b"]);
    // Everything running ends; the next read serves each held key once, a (held first) before b.
    let _: () = redis::cmd("XACK")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg(&first)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let second = ids(&read(&mut f, "c1", 10).await);
    assert_eq!(second, [by_key["a"][1].as_str(), by_key["b"][1].as_str()]);
    // a was served last, but b has nothing left: a alone, one at a time.
    assert_eq!(members(&mut f, &keys.key_ring).await, ["a"]);
    let _: () = redis::cmd("XACK")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg(&second)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(
        ids(&read(&mut f, "c1", 10).await),
        [by_key["a"][2].as_str()]
    );
}

#[tokio::test]
async fn per_key_rate_holds_beyond_the_window_and_says_when_a_key_may_start() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    per_key(
        &mut f,
        &[
            ("key_field", "x-t"),
            ("key_rate", "2"),
            ("key_period_ms", "60000"),
        ],
    )
    .await;
    let a = [
        f.add(&[("x-t", "a")]).await,
        f.add(&[("x-t", "a")]).await,
        f.add(&[("x-t", "a")]).await,
    ];
    let b = f.add(&[("x-t", "b")]).await;
    assert_eq!(
        ids(&read(&mut f, "c1", 10).await),
        [a[0].as_str(), a[1].as_str(), b.as_str()]
    );
    assert_eq!(members(&mut f, &keys.held).await, [a[2].as_str()]);
    // Ending jobs frees no start: a waits for its window, about a minute.
    match read(&mut f, "c1", 10).await {
        LimitedRead::Keys { wake: Some(w), .. } => {
            assert!(
                w > Duration::from_secs(50) && w <= Duration::from_secs(60),
                "{w:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A key value is any bytes: ':' and NUL inside one cannot reach another key's counts.
    let _: () = f.conn.del(&keys.limit).await.unwrap();
    per_key(&mut f, &[("key_field", "x-t"), ("key_concurrency", "1")]).await;
    let x = f.add(&[("x-t", "x")]).await;
    let xy = f.add(&[("x-t", "x\0y")]).await;
    let colon = f.add(&[("x-t", "1:x")]).await;
    let got = ids(&read(&mut f, "c1", 10).await);
    assert_eq!(
        got,
        [a[2].as_str(), x.as_str(), xy.as_str(), colon.as_str()]
    );
}

#[tokio::test]
async fn a_scan_that_only_holds_entries_stops_at_its_budget_and_asks_to_be_called_again() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    per_key(&mut f, &[("key_field", "x-t"), ("key_concurrency", "1")]).await;
    for _ in 0..100 {
        f.add(&[("x-t", "a")]).await;
    }
    let b = f.add(&[("x-t", "b")]).await;
    assert_eq!(count(&read(&mut f, "c1", 1).await), 1);
    // a is full: the next call holds 64 of its entries (the budget for one wanted) and gives up for now.
    assert_eq!(read(&mut f, "c1", 1).await, LimitedRead::Again);
    assert_eq!(f.conn.zcard::<_, u64>(&keys.held).await.unwrap(), 64);
    assert_eq!(ids(&read(&mut f, "c1", 1).await), [b.as_str()]);
    assert_eq!(f.conn.zcard::<_, u64>(&keys.held).await.unwrap(), 99);
}

/// A key counted full only by a member whose job has finished (acked, left in the running set) is checked when it
/// becomes full within a call, not only when a call first looks at it: the stale member goes and the key's room
/// is used.
#[tokio::test]
async fn a_key_that_fills_up_within_a_call_drops_finished_members_before_holding() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    per_key(&mut f, &[("key_field", "x-t"), ("key_concurrency", "2")]).await;
    // 40 jobs of other keys keep running: the oldest pending entries (members after them are not dropped by
    // position alone), and the random sweep of two members per call rarely looks at a1's.
    for n in 0..40 {
        f.add(&[("x-t", &format!("b{n}"))]).await;
    }
    let a1 = f.add(&[("x-t", "a")]).await;
    assert_eq!(count(&read(&mut f, "c1", 41).await), 41);
    // a1 ends: its member stays until a call finds a looking full.
    let a2 = f.add(&[("x-t", "a")]).await;
    let a3 = f.add(&[("x-t", "a")]).await;
    let _: () = redis::cmd("XACK")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg(&a1)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    // First look: 1 counted, room for one; after a2, 2 counted: the check finds a1 finished, and a3 starts too.
    assert_eq!(
        ids(&read(&mut f, "c1", 10).await),
        [a2.as_str(), a3.as_str()]
    );
    assert!(members(&mut f, &keys.held).await.is_empty());
    let running = members(&mut f, &keys.key_running).await;
    assert_eq!(running.len(), 42, "b0..b39, a2, a3");
}

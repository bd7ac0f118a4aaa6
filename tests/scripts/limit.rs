//! limit.lua: grants at most the rate of starts per window, counting grants at the server's time; unused starts
//! come back.

use std::time::Duration;

use super::*;
use rill::scripts::{return_starts, take_starts};

async fn used(f: &mut Fixture) -> Option<u64> {
    let keys = f.keys.clone();
    f.conn.hget(&keys.limit, "used").await.unwrap()
}

#[tokio::test]
async fn limit_grants_at_most_the_rate_per_window_and_takes_back_what_went_unused() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    // No limit: everything granted, nothing recorded.
    let g = take_starts(&mut f.conn, &keys, 10).await.unwrap();
    assert!(!g.limited);
    assert_eq!(g.granted, 10);
    assert_eq!(used(&mut f).await, None);
    let _: () = f
        .conn
        .hset_multiple(&keys.limit, &[("rate", "5"), ("period_ms", "60000")])
        .await
        .unwrap();
    let a = take_starts(&mut f.conn, &keys, 2).await.unwrap();
    assert!(a.limited);
    assert_eq!(a.granted, 2);
    let b = take_starts(&mut f.conn, &keys, 10).await.unwrap();
    assert_eq!(b.granted, 3, "the rest of the window's five");
    assert_ne!(a.member, b.member);
    let none = take_starts(&mut f.conn, &keys, 10).await.unwrap();
    assert_eq!(none.granted, 0);
    assert!(
        none.wait > Duration::from_secs(59) && none.wait <= Duration::from_secs(60),
        "{:?}",
        none.wait
    );
    assert_eq!(used(&mut f).await, Some(5));
    // Two of b's three found no entry to read: they come back, and can be granted again.
    return_starts(&mut f.conn, &keys, &b.member, 2)
        .await
        .unwrap();
    assert_eq!(used(&mut f).await, Some(3));
    let members: Vec<String> = f.conn.zrange(&keys.limit_starts, 0, -1).await.unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().any(|m| m.ends_with(":1")), "{members:?}");
    // All of a grant unused: its member goes.
    return_starts(&mut f.conn, &keys, &a.member, 2)
        .await
        .unwrap();
    let members: Vec<String> = f.conn.zrange(&keys.limit_starts, 0, -1).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(used(&mut f).await, Some(1));
    let again = take_starts(&mut f.conn, &keys, 10).await.unwrap();
    assert_eq!(again.granted, 4);
    // Returning to a grant no longer in the window changes nothing.
    return_starts(&mut f.conn, &keys, "999:3", 3).await.unwrap();
    assert_eq!(used(&mut f).await, Some(5));
}

#[tokio::test]
async fn grants_older_than_the_window_no_longer_count() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let _: () = f
        .conn
        .hset_multiple(
            &keys.limit,
            &[("rate", "3"), ("period_ms", "1000"), ("used", "3")],
        )
        .await
        .unwrap();
    // Three starts granted long ago (two grants): outside the window.
    let _: () = redis::cmd("ZADD")
        .arg(&keys.limit_starts)
        .arg(1)
        .arg("1:1")
        .arg(2)
        .arg("2:2")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let g = take_starts(&mut f.conn, &keys, 10).await.unwrap();
    assert_eq!(g.granted, 3);
    let left: Vec<String> = f.conn.zrange(&keys.limit_starts, 0, -1).await.unwrap();
    assert_eq!(left, vec![g.member.clone()]);
    assert_eq!(used(&mut f).await, Some(3));
    // The set gone (a quiet window): the count starts again, whatever the hash still says.
    let _: () = f.conn.del(&keys.limit_starts).await.unwrap();
    let g = take_starts(&mut f.conn, &keys, 10).await.unwrap();
    assert_eq!(g.granted, 3);
}

async fn holds(f: &mut Fixture) -> Vec<String> {
    let keys = f.keys.clone();
    f.conn.zrange(&keys.limit_holds, 0, -1).await.unwrap()
}

#[tokio::test]
async fn limit_grants_room_under_the_concurrency_cap_counting_pending_entries_and_holds() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let _: () = f.conn.hset(&keys.limit, "concurrency", 3).await.unwrap();
    for _ in 0..6 {
        f.add(&[]).await;
    }
    // Two jobs handed out and not finished: room for one more.
    let running = f.read("c1", 2).await;
    let a = take_starts(&mut f.conn, &keys, 5).await.unwrap();
    assert!(a.limited && a.capped);
    assert_eq!((a.granted, a.after_event.as_deref()), (1, None));
    assert_eq!(holds(&mut f).await, vec![a.member.clone()]);
    // The grant is held while it is read: nothing more, and the newest event (none yet) to wait after.
    let full = take_starts(&mut f.conn, &keys, 5).await.unwrap();
    assert_eq!(full.granted, 0);
    assert_eq!(full.wait, Duration::ZERO);
    assert_eq!(full.after_event.as_deref(), Some("0-0"));
    let event: String = redis::cmd("XADD")
        .arg(&keys.events)
        .arg("*")
        .arg("event")
        .arg("completed")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let full = take_starts(&mut f.conn, &keys, 5).await.unwrap();
    assert_eq!(full.after_event.as_deref(), Some(event.as_str()));
    // Read and returned: the hold ends, the entry counts as pending instead.
    assert_eq!(f.read("c2", 1).await.len(), 1);
    return_starts(&mut f.conn, &keys, &a.member, 0)
        .await
        .unwrap();
    assert!(holds(&mut f).await.is_empty());
    assert_eq!(take_starts(&mut f.conn, &keys, 5).await.unwrap().granted, 0);
    // Two finish: room for two.
    let _: u64 = redis::cmd("XACK")
        .arg(&keys.ready)
        .arg(GROUP)
        .arg(&running)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let b = take_starts(&mut f.conn, &keys, 5).await.unwrap();
    assert_eq!(b.granted, 2);
    // A grant unread (its reader died mid-read) holds its room until it lapses (5 s), then no longer counts.
    let _: () = redis::cmd("ZADD")
        .arg(&keys.limit_holds)
        .arg(1)
        .arg(&b.member)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let c = take_starts(&mut f.conn, &keys, 5).await.unwrap();
    assert_eq!(c.granted, 2, "the lapsed hold is gone");
    assert_eq!(holds(&mut f).await, vec![c.member.clone()]);
    return_starts(&mut f.conn, &keys, &c.member, 2)
        .await
        .unwrap();
    // With a rate limit too: the lower of the two, and both are recorded under one member.
    let _: () = f
        .conn
        .hset_multiple(&keys.limit, &[("rate", "1"), ("period_ms", "60000")])
        .await
        .unwrap();
    let d = take_starts(&mut f.conn, &keys, 5).await.unwrap();
    assert_eq!(d.granted, 1);
    let starts: Vec<String> = f.conn.zrange(&keys.limit_starts, 0, -1).await.unwrap();
    assert_eq!(
        (starts, holds(&mut f).await),
        (vec![d.member.clone()], vec![d.member.clone()])
    );
    // The rate is used up: it says how long to wait, before looking at the room.
    let e = take_starts(&mut f.conn, &keys, 5).await.unwrap();
    assert_eq!((e.granted, e.after_event), (0, None));
    assert!(e.wait > Duration::from_secs(59), "{:?}", e.wait);
}

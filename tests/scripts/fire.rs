//! fire.lua: a schedule's due fire times enqueued exactly once (a compare on the next fire time), never ahead of
//! the server's clock, never for a paused or removed schedule.

use super::*;
use rill::scripts::{Fire, Fired};

/// The server's clock, ms.
async fn server_ms(f: &mut Fixture) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut f.conn).await.unwrap();
    s * 1000 + us / 1000
}

/// Schedule `name` with a payload, due at `next`.
async fn seed(f: &mut Fixture, name: &str, next: &str) {
    let keys = f.keys.clone();
    let _: () = f
        .conn
        .hset_multiple(
            keys.schedule(name),
            &[("payload", "\u{a1}"), ("kind", "every")],
        )
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(&keys.schedules)
        .arg(next)
        .arg(name)
        .query_async(&mut f.conn)
        .await
        .unwrap();
}

fn call<'a>(name: &'a str, t: u64, fires: &'a [u64], next: u64) -> Fire<'a> {
    Fire {
        name,
        expected_ms: t,
        fires_ms: fires,
        next_ms: next,
        events_maxlen: 100,
    }
}

#[tokio::test]
async fn fire_enqueues_each_fire_time_once_and_moves_the_schedule_on() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let now = server_ms(&mut f).await;
    let t = now - 5_000;
    seed(&mut f, "s", &t.to_string()).await;
    let fires = [t - 1_000, t];
    let out = scripts::fire(&mut f.conn, &keys, call("s", t, &fires, t + 60_000))
        .await
        .unwrap();
    assert_eq!(out, Fired::Fired(2));
    let entries: Vec<(String, std::collections::HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(&keys.ready)
        .arg("-")
        .arg("+")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    for (e, fire) in entries.iter().zip(fires) {
        assert_eq!(e.1["v"], b"1");
        assert_eq!(e.1["payload"], "\u{a1}".as_bytes());
        assert_eq!(e.1["x-schedule"], b"s");
        assert_eq!(e.1["x-fire-ms"], fire.to_string().as_bytes());
    }
    let score: f64 = f.conn.zscore(&keys.schedules, "s").await.unwrap();
    assert_eq!(score as u64, t + 60_000);
    let def: std::collections::HashMap<String, String> =
        f.conn.hgetall(keys.schedule("s")).await.unwrap();
    assert_eq!(def["next_ms"], (t + 60_000).to_string());
    assert_eq!(def["last_fire_ms"], t.to_string());
    assert_eq!(def["fired"], "2");
    // Everyone else who read T changes nothing.
    let again = scripts::fire(&mut f.conn, &keys, call("s", t, &fires, t + 60_000))
        .await
        .unwrap();
    assert_eq!(again, Fired::Moved);
    assert_eq!(f.xlen(&keys.ready).await, 2);
    assert_eq!(f.xlen(&keys.events).await, 2, "one `fired` event per job");
    // A missed fire skipped by its policy: no job, the schedule moves on.
    let t2 = t + 60_000;
    let _: () = redis::cmd("ZADD")
        .arg(&keys.schedules)
        .arg(now - 1)
        .arg("s")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let out = scripts::fire(&mut f.conn, &keys, call("s", now - 1, &[], t2))
        .await
        .unwrap();
    assert_eq!(out, Fired::Fired(0));
    assert_eq!(f.xlen(&keys.ready).await, 2);
}

#[tokio::test]
async fn fire_refuses_early_paused_removed_and_orphaned_schedules() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let now = server_ms(&mut f).await;
    // Due in a minute by the server's clock: a host whose clock runs ahead must not fire it.
    let t = now + 60_000;
    seed(&mut f, "ahead", &t.to_string()).await;
    let out = scripts::fire(&mut f.conn, &keys, call("ahead", t, &[t], t + 1))
        .await
        .unwrap();
    assert!(
        matches!(out, Fired::Early(s) if s >= now && s < t),
        "{out:?}"
    );
    // Nor ask for a fire time past the server's clock under an earlier T.
    seed(&mut f, "past", &(now - 10).to_string()).await;
    let out = scripts::fire(
        &mut f.conn,
        &keys,
        call("past", now - 10, &[now - 10, now + 60_000], now + 120_000),
    )
    .await
    .unwrap();
    assert!(matches!(out, Fired::Early(_)), "{out:?}");
    // Paused (+inf) or removed: moved.
    seed(&mut f, "paused", "+inf").await;
    let out = scripts::fire(
        &mut f.conn,
        &keys,
        call("paused", now - 10, &[now - 10], now),
    )
    .await
    .unwrap();
    assert_eq!(out, Fired::Moved);
    let out = scripts::fire(&mut f.conn, &keys, call("gone", now - 10, &[now - 10], now))
        .await
        .unwrap();
    assert_eq!(out, Fired::Moved);
    // A member without its definition is dropped.
    let _: () = redis::cmd("ZADD")
        .arg(&keys.schedules)
        .arg(now - 10)
        .arg("orphan")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let out = scripts::fire(&mut f.conn, &keys, call("orphan", now - 10, &[], u64::MAX))
        .await
        .unwrap();
    assert_eq!(out, Fired::Moved);
    let left: Option<f64> = f.conn.zscore(&keys.schedules, "orphan").await.unwrap();
    assert!(left.is_none());
    assert_eq!(f.xlen(&keys.ready).await, 0);
}

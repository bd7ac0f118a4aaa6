//! levels.lua sets a queue's priority levels; and every script that routes or finds jobs by level (enqueue,
//! promote, run_now, requeue, signal, state, delete, limit, adopt) does so on each level's stream (SPEC §6g).

use super::*;
use rill::Priorities;
use rill::scripts::{LimitedRead, StateRow};

async fn set(f: &mut Fixture, p: &Priorities) -> rill::Result<()> {
    let keys = f.keys.clone();
    scripts::set_levels(&mut f.conn, &keys, p).await
}

async fn has_group(f: &mut Fixture, stream: &str) -> bool {
    let groups: redis::RedisResult<Vec<std::collections::HashMap<String, redis::Value>>> =
        redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut f.conn)
            .await;
    groups.is_ok_and(|g| g.len() == 1)
}

/// Enqueues `id` at `level` through enqueue.lua, due at `due_ms` (0 = now).
async fn enqueue_at(f: &mut Fixture, id: &str, level: u8, due_ms: u64) -> Enqueued {
    let keys = f.keys.clone();
    let p = level.to_string();
    let mut fields: Vec<(&str, &[u8])> = vec![("v", b"1"), ("payload", b"\xf6")];
    if level > 0 {
        fields.push(("priority", p.as_bytes()));
    }
    scripts::enqueue(
        &mut f.conn,
        &keys,
        NewJob {
            job_id: id,
            dedup_key: id,
            dedup_ttl_ms: 0,
            due_ms,
            now_ms: 100,
            fields: &fields,
            priority: level,
        },
    )
    .await
    .unwrap()
}

async fn state(f: &mut Fixture, id: &str) -> StateRow {
    let keys = f.keys.clone();
    scripts::state(&mut f.conn, &keys, id).await.unwrap()
}

#[tokio::test]
async fn levels_create_their_streams_and_refuse_to_drop_a_level_with_jobs() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    set(&mut f, &Priorities::weighted(&[5, 2, 1]).unwrap())
        .await
        .unwrap();
    let conf: std::collections::HashMap<String, String> =
        f.conn.hgetall(&keys.priorities).await.unwrap();
    assert_eq!(conf["levels"], "3");
    assert_eq!(conf["weights"], "5,2,1");
    assert!(has_group(&mut f, keys.level(1)).await && has_group(&mut f, keys.level(2)).await);
    assert!(!has_group(&mut f, keys.level(3)).await);
    // Setting the same again is fine (groups exist); strict drops the weights.
    set(&mut f, &Priorities::strict(3).unwrap()).await.unwrap();
    let weights: Option<String> = f.conn.hget(&keys.priorities, "weights").await.unwrap();
    assert_eq!(weights, None);

    // A waiting job on level 2 holds it.
    assert!(matches!(
        enqueue_at(&mut f, "low", 2, 0).await,
        Enqueued::Ready(_)
    ));
    let refused = set(&mut f, &Priorities::strict(2).unwrap()).await;
    assert!(
        matches!(refused, Err(rill::Error::LevelInUse { level: 2, .. })),
        "{refused:?}"
    );
    assert_eq!(f.xlen(keys.level(2)).await, 1, "nothing changed");
    // Running, it still holds it.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("w1")
        .arg("STREAMS")
        .arg(keys.level(2))
        .arg(">")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    assert!(set(&mut f, &Priorities::strict(2).unwrap()).await.is_err());
    // Finished (acked; its entry not yet trimmed): the level can go, and its stream with it.
    let _: u64 = redis::cmd("XACK")
        .arg(keys.level(2))
        .arg(GROUP)
        .arg(state(&mut f, "low").await.entry_id)
        .query_async(&mut f.conn)
        .await
        .unwrap();
    set(&mut f, &Priorities::strict(2).unwrap()).await.unwrap();
    assert_eq!(f.xlen(keys.level(2)).await, 0);
    // One level: no priorities at all.
    set(&mut f, &Priorities::default()).await.unwrap();
    let exists: bool = f.conn.exists(&keys.priorities).await.unwrap();
    assert!(!exists);
    assert_eq!(f.xlen(keys.level(1)).await, 0);
}

#[tokio::test]
async fn enqueue_refuses_a_level_the_queue_lacks_and_routes_the_rest() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    assert_eq!(
        enqueue_at(&mut f, "a", 1, 0).await,
        Enqueued::NoSuchLevel(1)
    );
    set(&mut f, &Priorities::strict(3).unwrap()).await.unwrap();
    assert_eq!(
        enqueue_at(&mut f, "b", 3, 0).await,
        Enqueued::NoSuchLevel(3)
    );
    assert_eq!(f.xlen(&keys.ready).await, 0);
    assert!(matches!(
        enqueue_at(&mut f, "c", 2, 0).await,
        Enqueued::Ready(_)
    ));
    assert!(matches!(
        enqueue_at(&mut f, "d", 0, 0).await,
        Enqueued::Ready(_)
    ));
    assert_eq!(
        (f.xlen(&keys.ready).await, f.xlen(keys.level(2)).await),
        (1, 1)
    );
    // Dedup spans levels: the same id on another level is a duplicate.
    assert_eq!(
        enqueue_at(&mut f, "c", 1, 0).await,
        Enqueued::Duplicate("c".into())
    );
}

#[tokio::test]
async fn delayed_parked_and_dead_jobs_go_back_to_their_level() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    set(&mut f, &Priorities::strict(3).unwrap()).await.unwrap();
    // Delayed, then promoted.
    assert!(matches!(
        enqueue_at(&mut f, "due", 2, 1_000).await,
        Enqueued::Delayed(_)
    ));
    let p = scripts::promote(&mut f.conn, &keys, 2_000, 10, 100)
        .await
        .unwrap();
    assert_eq!(p.moved, 1);
    assert_eq!(p.priorities, Priorities::strict(3).unwrap());
    let s = state(&mut f, "due").await;
    assert_eq!((s.state.as_str(), s.level), ("waiting", 2));
    // Run now.
    enqueue_at(&mut f, "now", 1, 50_000).await;
    assert_eq!(
        scripts::run_now(&mut f.conn, &keys, "now", 2_000, 100)
            .await
            .unwrap(),
        RunNow::Moved
    );
    assert_eq!(state(&mut f, "now").await.level, 1);
    // Paused while waiting, resumed: back on its level.
    for (kind, expect) in [("pause", "parked"), ("resume", "waiting")] {
        let sent = scripts::signal(
            &mut f.conn,
            &keys,
            SignalSend {
                kind,
                target: "job:due",
                sender: "t",
                now_ms: 3_000,
                payload: b"",
                maxlen: 100,
                retention_ms: 60_000,
            },
        )
        .await
        .unwrap();
        assert_eq!(sent.applied, SignalApplied::Applied, "{kind}");
        assert_eq!(state(&mut f, "due").await.state, expect);
    }
    assert_eq!(state(&mut f, "due").await.level, 2);
    // A dead letter of a level-2 job is requeued onto level 2.
    let did = f.seed_dead("9-0", "dead-one", &[("priority", "2")]).await;
    assert_eq!(
        scripts::requeue(&mut f.conn, &keys, 4_000, 100, &[did.as_str()])
            .await
            .unwrap(),
        vec![scripts::Requeued::Ready]
    );
    let s = state(&mut f, "dead-one").await;
    assert_eq!((s.state.as_str(), s.level), ("waiting", 2));
    // Levels reduced since: a job naming a level the queue no longer has goes to the last one.
    enqueue_at(&mut f, "old", 2, 5_000).await;
    let _: () = f.conn.hset(&keys.priorities, "levels", 2).await.unwrap();
    scripts::promote(&mut f.conn, &keys, 6_000, 10, 100)
        .await
        .unwrap();
    assert_eq!(state(&mut f, "old").await.level, 1);
}

#[tokio::test]
async fn jobs_are_found_on_their_level_even_where_entry_ids_repeat() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    set(&mut f, &Priorities::strict(2).unwrap()).await.unwrap();
    // The same entry id on both levels: an unnamed job on level 0, a named one on level 1.
    let _: String = redis::cmd("XADD")
        .arg(&keys.ready)
        .arg("5-0")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(&b"\xf6"[..])
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(keys.level(1))
        .arg("5-0")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(&b"\xf6"[..])
        .arg("id")
        .arg("named")
        .arg("priority")
        .arg("1")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let _: () = f.conn.hset(&keys.index, "named", "5-0").await.unwrap();
    let (a, b) = (state(&mut f, "5-0").await, state(&mut f, "named").await);
    assert_eq!(
        (a.state.as_str(), a.level, b.state.as_str(), b.level),
        ("waiting", 0, "waiting", 1)
    );
    // Deleting the named one leaves the other level's entry alone.
    let out = scripts::delete(&mut f.conn, &keys, "named", 1, 100)
        .await
        .unwrap();
    assert_eq!(out, Deleted::Deleted("waiting".into()));
    assert!(f.exists_in(&keys.ready, "5-0").await);
    assert!(!f.exists_in(keys.level(1), "5-0").await);
    assert_eq!(state(&mut f, "named").await.state, "unknown");
}

async fn read(f: &mut Fixture, streams: &[&str], want: usize) -> LimitedRead {
    let keys = f.keys.clone();
    scripts::read_limited(&mut f.conn, &keys, streams, "w1", want)
        .await
        .unwrap()
}

#[tokio::test]
async fn limited_reads_take_levels_in_the_order_given_and_count_all_their_pending() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    set(&mut f, &Priorities::strict(2).unwrap()).await.unwrap();
    let _: () = f.conn.hset(&keys.limit, "concurrency", 3).await.unwrap();
    for i in 0..2 {
        enqueue_at(&mut f, &format!("hi{i}"), 0, 0).await;
        enqueue_at(&mut f, &format!("lo{i}"), 1, 0).await;
    }
    let (l0, l1) = (keys.level(0).to_owned(), keys.level(1).to_owned());
    let (l0, l1) = (l0.as_str(), l1.as_str());
    // Level 1 first, then level 0: both of level 1 and one of level 0 (the concurrency allows three).
    let got = read(&mut f, &[l1, l0], 10).await;
    let LimitedRead::Entries(e) = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        e.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
        vec![0, 0, 1]
    );
    // Three pending across the levels: no room.
    let got = read(&mut f, &[l0, l1], 10).await;
    assert!(matches!(got, LimitedRead::Room { .. }), "{got:?}");
    let _: () = f.conn.hdel(&keys.limit, "concurrency").await.unwrap();
    let _: () = f.conn.hset(&keys.limit, "concurrency", 10).await.unwrap();
    let got = read(&mut f, &[l0, l1], 10).await;
    assert!(matches!(&got, LimitedRead::Entries(e) if e.len() == 1));
    // Nothing left: the newest id of each stream, in the order given.
    let got = read(&mut f, &[l0, l1], 10).await;
    let LimitedRead::Empty { after } = got else {
        panic!("{got:?}")
    };
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|id| id != "0-0"), "{after:?}");
}

#[tokio::test]
async fn a_crashed_worker_is_removed_only_once_no_level_holds_its_jobs() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    set(&mut f, &Priorities::strict(2).unwrap()).await.unwrap();
    enqueue_at(&mut f, "hi", 0, 0).await;
    enqueue_at(&mut f, "lo", 1, 0).await;
    for stream in [keys.level(0), keys.level(1)] {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg("dead-worker")
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut f.conn)
            .await
            .unwrap();
    }
    let _: () = f.conn.zadd(&keys.workers, "dead-worker", 1).await.unwrap();
    let c = caller(&keys, "adopter");
    let call = |count| Adopt {
        crashed: "dead-worker",
        now_ms: 100_000,
        crash_after_ms: 10_000,
        count,
        levels: 2,
    };
    let first = scripts::adopt(&mut f.conn, &c, call(10)).await.unwrap();
    assert_eq!((first.taken.len(), first.removed), (1, false));
    let in_registry: Option<f64> = f.conn.zscore(&keys.workers, "dead-worker").await.unwrap();
    assert!(in_registry.is_some(), "level 1 still holds one of its jobs");
    let second = scripts::adopt(&mut f.conn, &c.at(1), call(10))
        .await
        .unwrap();
    assert_eq!((second.taken.len(), second.removed), (1, true));
    let in_registry: Option<f64> = f.conn.zscore(&keys.workers, "dead-worker").await.unwrap();
    assert!(in_registry.is_none());
}

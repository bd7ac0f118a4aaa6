//! heartbeat.lua: the record, the sorted set of beats and the heartbeats stream.

use super::*;

#[tokio::test]
async fn heartbeat_registers_and_stamps_beats() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let status = vec![("status".to_owned(), "busy".to_owned())];
    let host = vec![("host".to_owned(), "h1".to_owned())];
    let running = vec![("running".to_owned(), "900:j1".to_owned())];
    let fields = BeatFields {
        per_beat: &status,
        record: &running,
        registration: &host,
    };
    let beat = scripts::heartbeat(&mut f.conn, &keys, beating("w1", 1_000, fields))
        .await
        .unwrap();
    assert!(beat.registered, "host was sent");
    // The record lost (Redis data loss, or removed by adopt.lua): a beat without the static fields says so.
    let _: () = f.conn.del(keys.worker("w1")).await.unwrap();
    // An ordinary beat: counters and what runs, no static fields.
    let status_only = BeatFields {
        per_beat: &status,
        record: &running,
        registration: &[],
    };
    let beat = scripts::heartbeat(&mut f.conn, &keys, beating("w1", 1_000, status_only))
        .await
        .unwrap();
    assert!(!beat.registered, "the static fields must be sent again");
    scripts::heartbeat(&mut f.conn, &keys, beating("w1", 1_000, fields))
        .await
        .unwrap();
    // An ordinary beat on a record that is there: still registered.
    let beat = scripts::heartbeat(&mut f.conn, &keys, beating("w1", 1_000, status_only))
        .await
        .unwrap();
    assert!(beat.registered);
    let rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(keys.worker("w1")).await.unwrap();
    assert_eq!(
        (
            rec["status"].as_str(),
            rec["host"].as_str(),
            rec["last_beat_ms"].as_str(),
            rec["running"].as_str()
        ),
        ("busy", "h1", "1000", "900:j1")
    );
    let score: Option<f64> = f.conn.zscore(&keys.workers, "w1").await.unwrap();
    assert_eq!(score, Some(1000.0));
    assert_eq!(
        f.xlen(&keys.heartbeats).await,
        4,
        "the beat is on the stream; host and running are not"
    );
    let last: Vec<(String, std::collections::HashMap<String, String>)> =
        newest(&mut f, &keys.heartbeats, 1).await;
    let mut names: Vec<&str> = last[0].1.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, vec!["ms", "status", "worker"]);
    // A beat that changed nothing: the registry score and `last_beat_ms` only, no stream entry; TTL 0 leaves
    // the record's expiry as the last beat set it.
    let mut quiet = beating("w1", 2_000, BeatFields::default());
    quiet.record_ttl_ms = 0;
    let _: () = f.conn.pexpire(keys.worker("w1"), 5_000).await.unwrap();
    let beat = scripts::heartbeat(&mut f.conn, &keys, quiet).await.unwrap();
    assert_eq!((beat.id.as_str(), beat.registered), ("", true));
    assert_eq!(f.xlen(&keys.heartbeats).await, 4, "no entry");
    let ttl: i64 = f.conn.pttl(keys.worker("w1")).await.unwrap();
    assert!((1..=5_000).contains(&ttl), "expiry untouched: {ttl}");
    let rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(keys.worker("w1")).await.unwrap();
    assert_eq!(
        (rec["last_beat_ms"].as_str(), rec["status"].as_str()),
        ("2000", "busy")
    );
    let score: Option<f64> = f.conn.zscore(&keys.workers, "w1").await.unwrap();
    assert_eq!(score, Some(2000.0));
    // With a TTL, the expiry is set again.
    scripts::heartbeat(
        &mut f.conn,
        &keys,
        beating("w1", 2_000, BeatFields::default()),
    )
    .await
    .unwrap();
    let ttl: i64 = f.conn.pttl(keys.worker("w1")).await.unwrap();
    assert!(ttl > 5_000, "expiry set: {ttl}");
    // With now = 0 the server's clock stamps the beat (hosts with skewed clocks still agree).
    scripts::heartbeat(&mut f.conn, &keys, beating("w0", 0, fields))
        .await
        .unwrap();
    let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut f.conn).await.unwrap();
    let stamped: f64 = f.conn.zscore(&keys.workers, "w0").await.unwrap();
    assert!(
        (stamped as i64 - (secs * 1000) as i64).abs() < 5_000,
        "{stamped} vs {secs}"
    );
    let _: () = f.conn.zrem(&keys.workers, "w0").await.unwrap();
}

/// Workers whose last beats sit around a 3 s threshold at 5,000: `old` and `late` (1,999) are past it, `edge`
/// (2,000) and `fresh` are not.
async fn beats_at_the_edge(f: &mut Fixture) {
    let keys = f.keys.clone();
    for (w, at) in [
        ("old", 1_000),
        ("edge", 2_000),
        ("late", 1_999),
        ("fresh", 4_000),
    ] {
        scripts::heartbeat(&mut f.conn, &keys, beating(w, at, BeatFields::default()))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn heartbeat_lists_the_workers_silent_past_the_threshold() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    beats_at_the_edge(&mut f).await;
    // "me" itself last beat long ago: its own beat now is never counted as silence.
    scripts::heartbeat(&mut f.conn, &keys, beating("me", 10, BeatFields::default()))
        .await
        .unwrap();
    let mut call = beating("me", 5_000, BeatFields::default());
    call.crash_after_ms = 3_000;
    let beat = scripts::heartbeat(&mut f.conn, &keys, call).await.unwrap();
    // Silent for more than 3 s at 5,000: last beat before 2,000, oldest first.
    assert_eq!(beat.crashed, vec!["old", "late"]);
    // At most 8, and none when not asked.
    for i in 0..12 {
        scripts::heartbeat(
            &mut f.conn,
            &keys,
            beating(&format!("gone{i}"), 100, BeatFields::default()),
        )
        .await
        .unwrap();
    }
    let beat = scripts::heartbeat(&mut f.conn, &keys, call).await.unwrap();
    assert_eq!(beat.crashed.len(), 8);
    assert!(
        beat.crashed.iter().all(|w| w.starts_with("gone")),
        "{:?}",
        beat.crashed
    );
    let beat = scripts::heartbeat(
        &mut f.conn,
        &keys,
        beating("me", 5_000, BeatFields::default()),
    )
    .await
    .unwrap();
    assert!(beat.crashed.is_empty());
}

/// A plain-command beat that writes nothing but the score (no field changed), judged at `now_ms`.
fn idle(consumer: &str, now_ms: u64, crash_after_ms: u64) -> Heartbeat<'_> {
    Heartbeat {
        consumer,
        now_ms,
        maxlen: 100,
        record_ttl_ms: 0,
        crash_after_ms,
        fields: BeatFields::default(),
    }
}

/// The plain-command beat of a worker that changed nothing: the score moves, nothing else is written, a worker
/// missing from the registry is told so (and not added), and the crash check lists what `heartbeat.lua` would.
#[tokio::test]
async fn refresh_moves_only_the_score_and_lists_the_same_crashed_workers() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let status = vec![("status".to_owned(), "idle".to_owned())];
    let fields = BeatFields {
        per_beat: &status,
        record: &[],
        registration: &[],
    };
    scripts::heartbeat(&mut f.conn, &keys, beating("w1", 1_000, fields))
        .await
        .unwrap();
    let ttl0: i64 = f.conn.pttl(keys.worker("w1")).await.unwrap();
    let beat = scripts::refresh(&mut f.conn, &keys, idle("w1", 2_000, 0))
        .await
        .unwrap();
    assert_eq!(
        (beat.id.as_str(), beat.registered, beat.crashed.len()),
        ("", true, 0)
    );
    let score: Option<f64> = f.conn.zscore(&keys.workers, "w1").await.unwrap();
    assert_eq!(score, Some(2_000.0));
    let rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(keys.worker("w1")).await.unwrap();
    assert_eq!(rec["last_beat_ms"], "1000", "the record is not written");
    assert_eq!(f.xlen(&keys.heartbeats).await, 1, "no stream entry");
    let ttl: i64 = f.conn.pttl(keys.worker("w1")).await.unwrap();
    assert!(ttl <= ttl0 && ttl > 0, "expiry untouched: {ttl}");
    // Not in the registry (lost with Redis's data, or judged crashed): said so, and not added.
    let beat = scripts::refresh(&mut f.conn, &keys, idle("ghost", 2_000, 0))
        .await
        .unwrap();
    assert!(!beat.registered);
    let ghost: Option<f64> = f.conn.zscore(&keys.workers, "ghost").await.unwrap();
    assert_eq!(ghost, None);
    // The crash check, against heartbeat.lua's on the same registry (the edge: exactly crash_after is not
    // silence past it).
    beats_at_the_edge(&mut f).await;
    let beat = scripts::refresh(&mut f.conn, &keys, idle("w1", 5_000, 3_000))
        .await
        .unwrap();
    assert_eq!(beat.crashed, vec!["old", "late"]);
    let mut call = beating("w1", 5_000, BeatFields::default());
    call.crash_after_ms = 3_000;
    let lua = scripts::heartbeat(&mut f.conn, &keys, call).await.unwrap();
    assert_eq!(lua.crashed, beat.crashed);
    // In the registry but its record deleted: register again too.
    let _: () = f.conn.del(keys.worker("w1")).await.unwrap();
    let beat = scripts::refresh(&mut f.conn, &keys, idle("w1", 6_000, 0))
        .await
        .unwrap();
    assert!(!beat.registered);
}

/// The plain-command beat of a worker whose counters and running jobs changed writes what `heartbeat.lua` writes
/// for the same beat: the record's fields and `last_beat_ms`, the score, the same stream entry (and no TTL); a
/// lost record is told apart as the script tells it.
#[tokio::test]
async fn refresh_with_changed_fields_writes_what_the_script_writes() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let host = vec![("host".to_owned(), "h1".to_owned())];
    let before = vec![
        ("status".to_owned(), "idle".to_owned()),
        ("processed".to_owned(), "0".to_owned()),
    ];
    let idle_running = vec![("running".to_owned(), String::new())];
    for w in ["lua", "plain"] {
        let fields = BeatFields {
            per_beat: &before,
            record: &idle_running,
            registration: &host,
        };
        scripts::heartbeat(&mut f.conn, &keys, beating(w, 1_000, fields))
            .await
            .unwrap();
    }
    let ttl0: i64 = f.conn.pttl(keys.worker("plain")).await.unwrap();
    let now = vec![
        ("status".to_owned(), "busy".to_owned()),
        ("processed".to_owned(), "7".to_owned()),
    ];
    let running = vec![("running".to_owned(), "1500:j1".to_owned())];
    let changed = BeatFields {
        per_beat: &now,
        record: &running,
        registration: &[],
    };
    let mut call = beating("lua", 2_000, changed);
    call.record_ttl_ms = 0;
    let lua = scripts::heartbeat(&mut f.conn, &keys, call).await.unwrap();
    call.consumer = "plain";
    let plain = scripts::refresh(&mut f.conn, &keys, call).await.unwrap();
    assert!(plain.registered && lua.registered);
    assert!(!plain.id.is_empty(), "a stream entry was added");
    let record = |w: &str| keys.worker(w);
    let lua_rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(record("lua")).await.unwrap();
    let plain_rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(record("plain")).await.unwrap();
    assert_eq!(plain_rec, lua_rec);
    assert_eq!(
        (
            plain_rec["last_beat_ms"].as_str(),
            plain_rec["running"].as_str()
        ),
        ("2000", "1500:j1")
    );
    let scores: Vec<(String, f64)> = f
        .conn
        .zrange_withscores(&keys.workers, 0, -1)
        .await
        .unwrap();
    assert_eq!(
        scores,
        [("lua".to_owned(), 2_000.0), ("plain".to_owned(), 2_000.0)]
    );
    let ttl: i64 = f.conn.pttl(record("plain")).await.unwrap();
    assert!(ttl <= ttl0 && ttl > 0, "expiry untouched: {ttl}");
    // The two beats' entries carry the same fields but `worker`.
    let entries: Vec<(String, Vec<(String, String)>)> = newest(&mut f, &keys.heartbeats, 2).await;
    assert_eq!(entries[0].0, plain.id);
    let without_worker = |e: &(String, Vec<(String, String)>)| -> Vec<(String, String)> {
        e.1.iter().filter(|(k, _)| k != "worker").cloned().collect()
    };
    assert_eq!(without_worker(&entries[0]), without_worker(&entries[1]));
    assert_eq!(
        without_worker(&entries[0]),
        [
            ("ms".to_owned(), "2000".to_owned()),
            ("status".to_owned(), "busy".to_owned()),
            ("processed".to_owned(), "7".to_owned())
        ]
    );
    // Only `running` changed: the record is written, no stream entry added.
    let only_running = BeatFields {
        per_beat: &[],
        record: &running,
        registration: &[],
    };
    let mut call = beating("plain", 3_000, only_running);
    call.record_ttl_ms = 0;
    let beat = scripts::refresh(&mut f.conn, &keys, call).await.unwrap();
    assert_eq!((beat.id.as_str(), beat.registered), ("", true));
    assert_eq!(f.xlen(&keys.heartbeats).await, 4);
    // The record lost: not registered (the next beat sends every field through the script).
    let _: () = f.conn.del(record("plain")).await.unwrap();
    let mut call = beating("plain", 4_000, changed);
    call.record_ttl_ms = 0;
    let beat = scripts::refresh(&mut f.conn, &keys, call).await.unwrap();
    assert!(!beat.registered);
    // Out of the registry: not registered, and not added back.
    let _: () = f.conn.zrem(&keys.workers, "lua").await.unwrap();
    let mut call = beating("lua", 4_000, changed);
    call.record_ttl_ms = 0;
    let beat = scripts::refresh(&mut f.conn, &keys, call).await.unwrap();
    assert!(!beat.registered);
    let gone: Option<f64> = f.conn.zscore(&keys.workers, "lua").await.unwrap();
    assert_eq!(gone, None);
}

//! heartbeat.lua: the record, the sorted set of beats and the heartbeats stream.

use super::*;

#[tokio::test]
async fn heartbeat_registers_and_stamps_beats() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let fields = vec![
        ("status".to_owned(), "busy".to_owned()),
        ("host".to_owned(), "h1".to_owned()),
    ];
    let beat = scripts::heartbeat(&mut f.conn, &keys, "w1", 1_000, 100, 60_000, &fields)
        .await
        .unwrap();
    assert!(beat.registered, "host was sent");
    // The record lost (Redis data loss, or removed by adopt.lua): a beat without the static fields says so.
    let _: () = f.conn.del(keys.worker("w1")).await.unwrap();
    let status_only = vec![("status".to_owned(), "busy".to_owned())];
    let beat = scripts::heartbeat(&mut f.conn, &keys, "w1", 1_000, 100, 60_000, &status_only)
        .await
        .unwrap();
    assert!(!beat.registered, "the static fields must be sent again");
    scripts::heartbeat(&mut f.conn, &keys, "w1", 1_000, 100, 60_000, &fields)
        .await
        .unwrap();
    let rec: std::collections::HashMap<String, String> =
        f.conn.hgetall(keys.worker("w1")).await.unwrap();
    assert_eq!(
        (
            rec["status"].as_str(),
            rec["host"].as_str(),
            rec["last_beat_ms"].as_str()
        ),
        ("busy", "h1", "1000")
    );
    let score: Option<f64> = f.conn.zscore(&keys.workers, "w1").await.unwrap();
    assert_eq!(score, Some(1000.0));
    assert_eq!(
        f.xlen(&keys.heartbeats).await,
        3,
        "the beat is on the stream; host is not"
    );
    // With now = 0 the server's clock stamps the beat (hosts with skewed clocks still agree).
    scripts::heartbeat(&mut f.conn, &keys, "w0", 0, 100, 60_000, &fields)
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

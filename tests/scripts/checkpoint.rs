//! checkpoint.lua: fenced, versioned, bounded checkpoints.

use super::*;

#[tokio::test]
async fn checkpoint_is_fenced_versioned_bounded_and_expires_after_completion() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[]).await;
    f.read("w1", 1).await;
    let write = |version: u64, state: &'static [u8]| scripts::CheckpointWrite {
        version,
        label: "",
        state,
        keep: 3,
        ttl_ms: 600_000,
        max_bytes: 8,
    };
    use scripts::Checkpointed;
    let ck =
        |f: &mut Fixture, who: &'static str, token: u64, w: scripts::CheckpointWrite<'static>| {
            let keys = keys.clone();
            let a = a.clone();
            let conn = f.conn.clone();
            async move {
                let mut conn = conn;
                scripts::checkpoint(&mut conn, &caller(&keys, who), d(&a, token), &a, 5, w)
                    .await
                    .unwrap()
            }
        };
    // Auto versions count up from the newest.
    assert_eq!(
        ck(&mut f, "w1", 1, write(0, b"\x01")).await,
        Checkpointed::Written(1)
    );
    assert_eq!(
        ck(&mut f, "w1", 1, write(0, b"\x02")).await,
        Checkpointed::Written(2)
    );
    // An explicit version must be newer.
    assert_eq!(
        ck(&mut f, "w1", 1, write(2, b"\x03")).await,
        Checkpointed::NotNewer(2)
    );
    assert_eq!(
        ck(&mut f, "w1", 1, write(10, b"\x04")).await,
        Checkpointed::Written(10)
    );
    // Fenced: another consumer, or an older token, cannot write.
    assert_eq!(
        ck(&mut f, "w2", 1, write(11, b"\x05")).await,
        Checkpointed::Stale
    );
    assert_eq!(
        ck(&mut f, "w1", 2, write(11, b"\x05")).await,
        Checkpointed::Stale
    );
    // Bounded size.
    assert_eq!(
        ck(&mut f, "w1", 1, write(11, b"123456789")).await,
        Checkpointed::TooLarge
    );
    assert_eq!(
        ck(&mut f, "w1", 1, write(0, b"\x06")).await,
        Checkpointed::Written(11)
    );
    // Keeps the newest 3: versions 2, 10, 11.
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(keys.checkpoints(&a))
        .arg("-")
        .arg("+")
        .query_async(&mut f.conn)
        .await
        .unwrap();
    let versions: Vec<String> = rill::wire::parse_entries(v)
        .unwrap()
        .into_iter()
        .map(|e| {
            let fields = e.fields.unwrap();
            String::from_utf8(
                fields
                    .iter()
                    .find(|(k, _)| k == b"version")
                    .unwrap()
                    .1
                    .clone(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(versions, vec!["2", "10", "11"]);
    let ttl: i64 = f.conn.pttl(keys.checkpoints(&a)).await.unwrap();
    assert!(ttl > 500_000);
    // Completing a delivery that checkpointed shortens their life to the retention.
    let items = [AckItem {
        delivery: d(&a, 1),
        job_id: &a,
        attempt: 1,
        result: b"",
        touched: true,
    }];
    scripts::ack(
        &mut f.conn,
        &caller(&keys, "w1"),
        Ack {
            now_ms: 1,
            retention: Retention {
                ms: 1_000,
                keep_all: false,
            },
            completed_event: false,
            items: &items,
            xackdel: true,
        },
    )
    .await
    .unwrap();
    let ttl: i64 = f.conn.pttl(keys.checkpoints(&a)).await.unwrap();
    assert!(ttl > 0 && ttl <= 1_000, "ttl {ttl}");
}

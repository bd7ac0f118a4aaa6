//! update.lua: fenced record fields.

use super::*;

#[tokio::test]
async fn update_is_fenced() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[]).await;
    f.read("w1", 1).await;
    assert!(
        scripts::update(
            &mut f.conn,
            &caller(&keys, "w1"),
            Update {
                delivery: d(&a, 1),
                job_id: &a,
                field: RecordField::Progress,
                value: b"\x18\x32",
                ttl_ms: 10_000
            }
        )
        .await
        .unwrap()
    );
    assert!(
        !scripts::update(
            &mut f.conn,
            &caller(&keys, "w2"),
            Update {
                delivery: d(&a, 1),
                job_id: &a,
                field: RecordField::Progress,
                value: b"\x00",
                ttl_ms: 10_000
            }
        )
        .await
        .unwrap()
    );
    assert!(
        !scripts::update(
            &mut f.conn,
            &caller(&keys, "w1"),
            Update {
                delivery: d(&a, 2),
                job_id: &a,
                field: RecordField::Data,
                value: b"\x00",
                ttl_ms: 10_000
            }
        )
        .await
        .unwrap()
    );
    let p: Vec<u8> = f.conn.hget(keys.job(&a), "progress").await.unwrap();
    assert_eq!(p, b"\x18\x32");
    let data: bool = f.conn.hexists(keys.job(&a), "data").await.unwrap();
    assert!(!data);
}

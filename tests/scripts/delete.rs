//! delete.lua: one job removed for good, in any state but running.

use super::*;

#[tokio::test]
async fn delete_removes_a_job_in_each_state_but_leaves_a_running_one_alone() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    enqueue_job(&mut f, "running", 0, &[]).await;
    let running = f.read("w1", 1).await.remove(0);
    enqueue_job(&mut f, "waiting", 0, &[]).await;
    enqueue_job(&mut f, "delayed", 10_000, &[]).await;
    enqueue_job(&mut f, "failed", 10_000, &[("attempts", b"1")]).await;
    enqueue_job(&mut f, "parked", 10_000, &[]).await;
    let _: () = f.conn.zrem(&keys.delayed, "parked").await.unwrap();
    let _: () = f.conn.zadd(&keys.parked, "parked", 1).await.unwrap();
    let dead = f.seed_dead("5-0", "dead", &[]).await;
    for (id, state) in [("completed", "completed"), ("cancelled", "cancelled")] {
        let _: () = f.conn.hset(keys.job(id), "state", state).await.unwrap();
    }
    let _: () = f
        .conn
        .hset(keys.job("waiting"), "progress", "x")
        .await
        .unwrap();
    let _: String = f
        .conn
        .xadd(keys.checkpoints("waiting"), "*", &[("state", "x")])
        .await
        .unwrap();

    let out = scripts::delete(&mut f.conn, &keys, "running", 1_000, 100)
        .await
        .unwrap();
    assert_eq!(out, Deleted::Running);
    assert!(f.exists_in(&keys.ready, &running).await);
    assert!(f.pending(&running).await.is_some());

    for (id, state) in [
        ("waiting", "waiting"),
        ("delayed", "delayed"),
        ("failed", "failed"),
        ("parked", "parked"),
        ("dead", "dead"),
        ("completed", "completed"),
        ("cancelled", "cancelled"),
    ] {
        let out = scripts::delete(&mut f.conn, &keys, id, 1_000, 100)
            .await
            .unwrap();
        assert_eq!(out, Deleted::Deleted(state.into()), "{id}");
        let ev = last_event(&mut f).await;
        assert_eq!(
            (
                ev["event"].as_str(),
                ev["id"].as_str(),
                ev["state"].as_str()
            ),
            ("deleted", id, state)
        );
        let indexed: bool = f.conn.hexists(&keys.index, id).await.unwrap();
        let record: bool = f.conn.exists(keys.job(id)).await.unwrap();
        let dedup: bool = f.conn.exists(keys.dedup(id)).await.unwrap();
        assert!(
            !indexed && !record && !dedup,
            "{id}: index, record and dedup record gone"
        );
        let (now, ..) = scripts_state(&mut f, id).await;
        assert_eq!(now, "unknown", "{id}");
        assert_eq!(
            scripts::delete(&mut f.conn, &keys, id, 1_000, 100)
                .await
                .unwrap(),
            Deleted::NotFound
        );
    }
    assert_eq!(
        group_lag(&mut f).await,
        Some(0),
        "lag readable after deleting the waiting job"
    );
    let ckpt: bool = f.conn.exists(keys.checkpoints("waiting")).await.unwrap();
    assert!(!ckpt, "checkpoints go with the job");
    assert!(!f.exists_in(&keys.dead, &dead).await);
    let dead_indexed: bool = f.conn.hexists(&keys.dead_index, "dead").await.unwrap();
    assert!(!dead_indexed);
    // Only the running job is left anywhere.
    assert_eq!(f.xlen(&keys.ready).await, 1);
    assert_eq!(f.xlen(&keys.scheduled).await, 0);
    let (delayed, parked): (u64, u64) = (
        f.conn.zcard(&keys.delayed).await.unwrap(),
        f.conn.zcard(&keys.parked).await.unwrap(),
    );
    assert_eq!((delayed, parked), (0, 0));
    // The id can be enqueued again at once.
    enqueue_job(&mut f, "waiting", 0, &[]).await;
    assert!(
        f.conn
            .hexists::<_, _, bool>(&keys.index, "waiting")
            .await
            .unwrap()
    );
}

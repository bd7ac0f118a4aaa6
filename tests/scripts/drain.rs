//! drain.lua: waiting and delayed jobs deleted, a bounded number per call.

use super::*;

#[tokio::test]
async fn drain_deletes_waiting_and_delayed_jobs_in_bounded_calls_and_keeps_running_and_parked_ones()
{
    let mut f = fixture().await;
    let keys = f.keys.clone();
    enqueue_job(&mut f, "running", 0, &[]).await;
    let running = f.read("w1", 1).await.remove(0);
    for i in 0..5 {
        enqueue_job(&mut f, &format!("w{i}"), 0, &[]).await;
    }
    f.add(&[]).await; // a plain XADD, without an id
    for i in 0..3 {
        enqueue_job(&mut f, &format!("d{i}"), 10_000 + i, &[]).await;
    }
    let _: () = f.conn.zadd(&keys.parked, "p", 1).await.unwrap();

    let first = scripts::drain(&mut f.conn, &keys, 0, 4, 1_000, 100)
        .await
        .unwrap();
    assert_eq!(
        first,
        Drained {
            waiting: 4,
            delayed: 3,
            more: true
        }
    );
    let ev = last_event(&mut f).await;
    assert_eq!(
        (
            ev["event"].as_str(),
            ev["waiting"].as_str(),
            ev["delayed"].as_str()
        ),
        ("drained", "4", "3")
    );
    let second = scripts::drain(&mut f.conn, &keys, 0, 4, 1_000, 100)
        .await
        .unwrap();
    assert_eq!(
        second,
        Drained {
            waiting: 2,
            delayed: 0,
            more: false
        }
    );
    let third = scripts::drain(&mut f.conn, &keys, 0, 4, 1_000, 100)
        .await
        .unwrap();
    assert_eq!(third, Drained::default());

    // The running job's entry and the parked job are untouched; the rest are gone with their index entries.
    assert_eq!(f.xlen(&keys.ready).await, 1);
    assert!(f.pending(&running).await.is_some());
    assert_eq!(f.xlen(&keys.scheduled).await, 0);
    let delayed: u64 = f.conn.zcard(&keys.delayed).await.unwrap();
    let parked: u64 = f.conn.zcard(&keys.parked).await.unwrap();
    assert_eq!((delayed, parked), (0, 1));
    let indexed: Vec<String> = f.conn.hkeys(&keys.index).await.unwrap();
    assert_eq!(indexed, vec!["running".to_string()]);
    // Entries deleted before delivery would leave the group's lag unreadable (nil): it reads 0 again. What is
    // enqueued next is delivered, and once it is, lag is exact again (in between Redis may report nil, which
    // `Queue::counts` covers by counting).
    assert_eq!(group_lag(&mut f).await, Some(0));
    let next = f.add(&[]).await;
    assert_eq!(f.read("w1", 10).await, vec![next]);
    assert_eq!(group_lag(&mut f).await, Some(0));
}

//! The message bus: fan-out to groups, load-balancing within one, at-least-once redelivery, replay, retention.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use rill::bus::{Retention, Start};
use serde::{Deserialize, Serialize};
use support::TestRedis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    order: u32,
}

async fn drain(sub: &mut rill::bus::Subscriber<OrderPlaced>, ack: bool) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        let batch = sub.next(100, Duration::from_millis(200)).await.unwrap();
        if batch.is_empty() {
            return got;
        }
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
        got.extend(batch.into_iter().map(|(_, m)| m.unwrap().value.order));
        if ack {
            sub.ack(&ids).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_gets_every_message_and_members_share_them() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let topic = client.topic::<OrderPlaced>("orders").unwrap();
    let mut billing = topic.subscribe("billing", "b1", Start::New).await.unwrap();
    let mut ship_a = topic.subscribe("shipping", "s1", Start::New).await.unwrap();
    let mut ship_b = topic.subscribe("shipping", "s2", Start::New).await.unwrap();
    for order in 0..50 {
        topic.publish(&OrderPlaced { order }).await.unwrap();
    }
    let all: Vec<u32> = (0..50).collect();
    assert_eq!(
        drain(&mut billing, true).await,
        all,
        "billing gets every message, in order"
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let batch_a = ship_a.next(7, Duration::from_millis(100)).await.unwrap();
        let ids: Vec<String> = batch_a.iter().map(|(id, _)| id.clone()).collect();
        a.extend(batch_a.into_iter().map(|(_, m)| m.unwrap().value.order));
        ship_a.ack(&ids).await.unwrap();
        let batch_b = ship_b.next(7, Duration::from_millis(100)).await.unwrap();
        let ids: Vec<String> = batch_b.iter().map(|(id, _)| id.clone()).collect();
        b.extend(batch_b.into_iter().map(|(_, m)| m.unwrap().value.order));
        ship_b.ack(&ids).await.unwrap();
    }
    assert!(!a.is_empty() && !b.is_empty(), "both members got a share");
    let mut both: Vec<u32> = a.iter().chain(&b).copied().collect();
    both.sort_unstable();
    assert_eq!(
        both, all,
        "shipping got each message exactly once across its members"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_come_back_and_history_replays() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let topic = client.topic::<OrderPlaced>("orders").unwrap();
    let mut s1 = topic.subscribe("audit", "a1", Start::New).await.unwrap();
    let first = topic.publish(&OrderPlaced { order: 1 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t_second = support::now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    topic.publish(&OrderPlaced { order: 2 }).await.unwrap();
    assert_eq!(
        drain(&mut s1, false).await,
        vec![1, 2],
        "received, not acked"
    );
    // The same member after a restart gets its unacked messages again.
    let mut s1 = topic.subscribe("audit", "a1", Start::New).await.unwrap();
    let again = s1.next(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(again.len(), 2);
    // Another member takes over messages left unacked past claim_idle.
    let mut s2 = topic
        .subscribe("audit", "a2", Start::New)
        .await
        .unwrap()
        .claim_idle(Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(drain(&mut s2, true).await, vec![1, 2]);
    // Replay without a group, from an id or a time; a new group can start from the beginning.
    let replay: Vec<u32> = topic
        .replay(Start::AfterId(first), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.value.order)
        .collect();
    assert_eq!(replay, vec![2]);
    let replay: Vec<u32> = topic
        .replay(Start::Time(t_second), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.value.order)
        .collect();
    assert_eq!(replay, vec![2]);
    let mut late = topic
        .subscribe("late", "l1", Start::Beginning)
        .await
        .unwrap();
    assert_eq!(drain(&mut late, true).await, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bounds_a_topic_by_length_or_age() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let by_len = client
        .topic::<OrderPlaced>("short")
        .unwrap()
        .retention(Retention::MaxLen(100));
    for order in 0..1000 {
        by_len.publish(&OrderPlaced { order }).await.unwrap();
    }
    let kept = by_len.replay(Start::Beginning, 10_000).await.unwrap();
    assert!((100..=200).contains(&kept.len()), "kept {}", kept.len());
    assert_eq!(kept.last().unwrap().value.order, 999);
    let by_age = client
        .topic::<OrderPlaced>("fresh")
        .unwrap()
        .retention(Retention::MaxAge(Duration::from_millis(200)));
    for order in 0..300 {
        by_age.publish(&OrderPlaced { order }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    by_age.publish(&OrderPlaced { order: 300 }).await.unwrap();
    let kept: HashSet<u32> = by_age
        .replay(Start::Beginning, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.value.order)
        .collect();
    assert!(kept.contains(&300));
    assert!(
        kept.len() < 301,
        "old messages trimmed by age ({} kept)",
        kept.len()
    );
    assert!(client.topic::<OrderPlaced>("bad:name").is_err());
}

#[tokio::test]
async fn groups_start_where_asked_and_foreign_entries_are_errors_not_panics() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let topic = client.topic::<OrderPlaced>("mixed").unwrap();
    assert!(format!("{topic:?}").contains(topic.key()));
    let first = topic.publish(&OrderPlaced { order: 1 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after_first = support::now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    topic.publish(&OrderPlaced { order: 2 }).await.unwrap();
    assert!(topic.replay(Start::New, 10).await.unwrap().is_empty());
    let mut by_id = topic
        .subscribe("by-id", "m", Start::AfterId(first))
        .await
        .unwrap();
    assert!(format!("{by_id:?}").contains("by-id"));
    assert_eq!(drain(&mut by_id, true).await, vec![2]);
    let mut by_time = topic
        .subscribe("by-time", "m", Start::Time(after_first))
        .await
        .unwrap();
    assert_eq!(drain(&mut by_time, true).await, vec![2]);
    // Another client wrote an entry without the format version: an error entry, the rest still arrive.
    let mut conn = redis.aconn().await;
    let _: String = redis::cmd("XADD")
        .arg(topic.key())
        .arg("*")
        .arg("payload")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    topic.publish(&OrderPlaced { order: 3 }).await.unwrap();
    let batch = by_id.next(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(batch.len(), 2);
    match &batch[0].1 {
        Err(rill::Error::Decode(why)) => assert!(why.contains("no `v` = 1"), "{why}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(batch[1].1.as_ref().unwrap().value.order, 3);
    assert!(
        topic.replay(Start::Beginning, 10).await.is_err(),
        "replay stops at the foreign entry"
    );
    // A versioned entry whose payload is not an `OrderPlaced`: a decode error too.
    let _: String = redis::cmd("XADD")
        .arg(topic.key())
        .arg("*")
        .arg("v")
        .arg("1")
        .arg("payload")
        .arg(b"\x63abc".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    let batch = by_id.next(10, Duration::from_millis(200)).await.unwrap();
    assert!(
        matches!(batch[0].1, Err(rill::Error::Decode(_))),
        "{:?}",
        batch[0].1
    );
    assert!(matches!(
        client.topic::<OrderPlaced>("no spaces"),
        Err(rill::Error::InvalidName { .. })
    ));
    // A key of another type under the topic's name: a typed Redis error, no panic.
    let other = client.topic::<OrderPlaced>("not-a-stream").unwrap();
    let _: () = redis::cmd("SET")
        .arg(other.key())
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        other.subscribe("g", "m", Start::New).await,
        Err(rill::Error::Redis(_))
    ));
}

//! park.lua: parking and resuming a session.

use super::*;

#[tokio::test]
async fn park_and_resume_a_session() {
    let mut f = fixture().await;
    let keys = f.keys.clone();
    let a = f.add(&[("attempts", "1"), ("last_error", "old")]).await;
    f.read("w1", 1).await;
    // Fenced.
    assert_eq!(
        scripts::park(&mut f.conn, &caller(&keys, "w2"), d(&a, 1), 50)
            .await
            .unwrap(),
        HandBack::Stale
    );
    assert_eq!(
        scripts::park(&mut f.conn, &caller(&keys, "w1"), d(&a, 1), 50)
            .await
            .unwrap(),
        HandBack::Done
    );
    assert!(!f.exists_in(&keys.ready, &a).await);
    assert!(f.pending(&a).await.is_none());
    let score: Option<f64> = f.conn.zscore(&keys.parked, &a).await.unwrap();
    assert_eq!(score, Some(50.0));
    let sid: String = f.conn.hget(&keys.index, &a).await.unwrap();
    let body = f.fields(&keys.scheduled, &sid).await;
    assert_eq!(body["attempts"], b"1", "parking does not count an attempt");
    assert!(!body.contains_key("last_error"));
    assert_eq!(scripts_state(&mut f, &a).await.0, "parked");
    // Nothing promotes a parked job.
    assert_eq!(
        scripts::promote(&mut f.conn, &keys, u64::MAX / 2, 10, 100)
            .await
            .unwrap()
            .moved,
        0
    );
    // A resume signal puts it back on the ready stream.
    let sent = scripts::signal(
        &mut f.conn,
        &keys,
        SignalSend {
            kind: "resume",
            target: &format!("job:{a}"),
            sender: "t",
            now_ms: 60,
            payload: b"",
            maxlen: 100,
            retention_ms: 1000,
        },
    )
    .await
    .unwrap();
    assert_eq!(sent.applied, SignalApplied::Applied);
    let nid: String = f.conn.hget(&keys.index, &a).await.unwrap();
    assert_eq!(f.fields(&keys.ready, &nid).await["id"], a.as_bytes());
    assert_eq!(scripts_state(&mut f, &a).await.0, "waiting");
    // A pause signal parks a waiting job directly; resuming twice is ignored the second time.
    let sent = scripts::signal(
        &mut f.conn,
        &keys,
        SignalSend {
            kind: "pause",
            target: &format!("job:{a}"),
            sender: "t",
            now_ms: 70,
            payload: b"",
            maxlen: 100,
            retention_ms: 1000,
        },
    )
    .await
    .unwrap();
    assert_eq!(sent.applied, SignalApplied::Applied);
    assert_eq!(scripts_state(&mut f, &a).await.0, "parked");
    let resume = |c: support::AConn, keys: QueueKeys, a: String| async move {
        let mut c = c;
        scripts::signal(
            &mut c,
            &keys,
            SignalSend {
                kind: "resume",
                target: &format!("job:{a}"),
                sender: "t",
                now_ms: 80,
                payload: b"",
                maxlen: 100,
                retention_ms: 1000,
            },
        )
        .await
        .unwrap()
        .applied
    };
    assert_eq!(
        resume(f.conn.clone(), keys.clone(), a.clone()).await,
        SignalApplied::Applied
    );
    assert_eq!(
        resume(f.conn.clone(), keys.clone(), a.clone()).await,
        SignalApplied::Ignored
    );
}

//! Misconfiguration fails fast, with an error that says what to do: a Redis that may evict keys, a user who may
//! not read its settings; and the client's connection contract (connect, close, connect again).

mod support;

use std::time::Duration;

use support::TestRedis;

fn client(url: &str, ns: &str, allow_eviction: bool) -> rill::Client {
    rill::Client::with_config(
        url,
        rill::ClientConfig {
            namespace: ns.to_owned(),
            allow_eviction,
            ..Default::default()
        },
    )
    .unwrap()
}

async fn config_set(c: &mut support::AConn, key: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async(c)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_redis_that_may_evict_keys_is_refused_unless_allowed() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let mut admin = redis.aconn().await;
    config_set(&mut admin, "maxmemory-policy", "allkeys-lru").await;

    let strict = client(&redis.client_url(), &ns, false);
    let q = strict.queue::<u32>("q").unwrap();
    match q.enqueue(&1).await {
        Err(rill::Error::EvictingRedis { policy }) => assert_eq!(policy, "allkeys-lru"),
        other => panic!("expected EvictingRedis, got {other:?}"),
    }
    let worker = rill::Worker::new(strict.clone(), "q").unwrap();
    let started = worker
        .run(|_job: rill::Job<u32>| async { Ok(()) }, async {})
        .await;
    assert!(
        matches!(started, Err(rill::Error::EvictingRedis { .. })),
        "{started:?}"
    );
    assert!(
        strict
            .connect()
            .await
            .unwrap_err()
            .to_string()
            .contains("noeviction")
    );

    // Explicitly allowed: it runs.
    let lenient = client(&redis.client_url(), &ns, true);
    lenient
        .queue::<u32>("q")
        .unwrap()
        .enqueue(&2)
        .await
        .unwrap();

    // Fixed on the server: the strict client works without a restart.
    config_set(&mut admin, "maxmemory-policy", "noeviction").await;
    q.enqueue(&3).await.unwrap();
    assert_eq!(q.counts().await.unwrap().waiting, 2);
}

#[tokio::test]
async fn a_user_who_may_not_read_info_is_warned_not_refused() {
    let redis = TestRedis::start();
    let mut admin = redis.aconn().await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("p")
        .arg(&["on", ">pw", "~*", "&*", "+@all", "-info"])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = redis.client_url_as("p", "pw");
    let c = client(&url, &support::namespace(), false);
    c.queue::<u32>("q").unwrap().enqueue(&1).await.unwrap();
}

#[tokio::test]
async fn a_client_connects_closes_and_connects_again() {
    let redis = TestRedis::start();
    let c = client(&redis.client_url(), &support::namespace(), false);
    let q = c.queue::<u32>("q").unwrap();
    assert!(!c.is_connected().await, "nothing opened yet");
    c.connect().await.unwrap();
    c.connect().await.unwrap();
    assert!(c.is_connected().await);
    q.enqueue(&1).await.unwrap();
    // Commands of one's own on the client's connection (through the cluster client on a cluster).
    let mut own = c.connection().await.unwrap();
    let probe = format!("{}:probe", q.keys().ready);
    let () = redis::AsyncCommands::set(&mut own, &probe, "mine")
        .await
        .unwrap();
    let read: String = redis::AsyncCommands::get(&mut own, &probe).await.unwrap();
    assert_eq!(read, "mine");

    c.close();
    assert!(matches!(c.connection().await, Err(rill::Error::Closed)));
    c.close();
    assert!(c.is_closed());
    assert!(!c.is_connected().await);
    assert!(matches!(q.enqueue(&2).await, Err(rill::Error::Closed)));
    assert!(
        matches!(q.follow_events(None).await, Err(rill::Error::Closed)),
        "blocking connections are refused too"
    );
    assert!(format!("{c:?}").contains(&redis.client_url()));

    c.connect().await.unwrap();
    assert!(!c.is_closed());
    assert!(c.is_connected().await);
    q.enqueue(&3).await.unwrap();
    assert_eq!(q.counts().await.unwrap().waiting, 2);

    // And a worker on a reconnected client runs.
    let running = support::spawn_worker(
        rill::Worker::new(c.clone(), "q").unwrap(),
        |_job: rill::Job<u32>| async { Ok(()) },
    );
    support::eventually(Duration::from_secs(10), "both jobs done", || async {
        running.stats.snapshot().completed == 2
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_worker_whose_user_lacks_a_command_fails_at_start_naming_it() {
    let redis = TestRedis::start();
    let mut admin = redis.aconn().await;
    for (user, rule) in [("noclaim", "-xclaim"), ("noscripts", "-@scripting")] {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg(&["on", ">pw", "~*", "&*", "+@all", rule])
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let ns = support::namespace();
    let url = |u: &str| redis.client_url_as(u, "pw");
    let run = |c: rill::Client| async move {
        rill::Worker::new(c, "q")
            .unwrap()
            .run(|_job: rill::Job<u32>| async { Ok(()) }, async {})
            .await
    };
    match run(client(&url("noclaim"), &ns, false)).await {
        Err(rill::Error::Permission { command }) => {
            assert!(command.starts_with("XCLAIM"), "{command}")
        }
        other => panic!("expected a permission error, got {other:?}"),
    }
    match run(client(&url("noscripts"), &ns, false)).await {
        Err(e @ rill::Error::Permission { .. }) => assert!(e.to_string().contains("EVAL"), "{e}"),
        other => panic!("expected a permission error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_queue_key_of_another_type_stops_a_worker_at_start_with_the_redis_error() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let c = client(&redis.client_url(), &ns, false);
    let keys = rill::keys::QueueKeys::new(&ns, "q").unwrap();
    let mut admin = redis.aconn().await;
    let _: () = redis::cmd("SET")
        .arg(&keys.ready)
        .arg("not a stream")
        .query_async(&mut admin)
        .await
        .unwrap();
    let r = rill::Worker::new(c, "q")
        .unwrap()
        .run(|_job: rill::Job<u32>| async { Ok(()) }, async {})
        .await;
    match r {
        Err(rill::Error::Redis(e)) => assert_eq!(e.code(), Some("WRONGTYPE")),
        other => panic!("expected WRONGTYPE, got {other:?}"),
    }
}

//! Network faults injected between workers and Redis by a TCP fault proxy (tests/support/proxy.rs): connections
//! that stop forwarding without closing, one-way black holes, resets. Redis itself stays healthy.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::proxy::FaultProxy;
use support::{TestRedis, eventually, spawn_worker};

/// A client through `proxy` in `namespace`, with a short response timeout so faults show quickly.
fn client_via(proxy: &FaultProxy, namespace: &str) -> rill::Client {
    rill::Client::with_config(
        &proxy.url(),
        rill::ClientConfig {
            namespace: namespace.to_owned(),
            response_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .unwrap()
}

/// A client straight to `redis` in `namespace` (the producer side, unaffected by the proxy).
fn client_direct(redis: &TestRedis, namespace: &str) -> rill::Client {
    rill::Client::with_config(
        &redis.url(),
        rill::ClientConfig {
            namespace: namespace.to_owned(),
            ..Default::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_replaced_and_jobs_complete_once() {
    let redis = TestRedis::start();
    let proxy = FaultProxy::start(redis.port()).await;
    let ns = support::namespace();
    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let r = runs.clone();
    let worker = rill::Worker::new(client_via(&proxy, &ns), "q")
        .unwrap()
        .concurrency(8)
        .lease(Duration::from_secs(3));
    let running = spawn_worker(worker, move |job: rill::Job<u64>| {
        let r = r.clone();
        async move {
            *r.lock().unwrap().entry(*job.data()).or_default() += 1;
            Ok(())
        }
    });
    let queue = client_direct(&redis, &ns).queue::<u64>("q").unwrap();
    queue.enqueue(&0).await.unwrap();
    eventually(Duration::from_secs(10), "the first job", || async {
        running.stats.snapshot().completed == 1
    })
    .await;

    // Every connection the worker has open now stops forwarding, both ways, without closing.
    assert!(proxy.connections() >= 3, "{}", proxy.connections());
    proxy.freeze_existing();
    for i in 1..=50u64 {
        queue.enqueue(&i).await.unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "50 jobs enqueued after the freeze",
        || async { running.stats.snapshot().completed == 51 },
    )
    .await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 51);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active), (0, 0), "{counts:?}");
    proxy.heal();
    running.stop().await;
}

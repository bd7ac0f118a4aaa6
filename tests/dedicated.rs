//! A worker on a thread of its own (`Worker::dedicated_thread`): it runs its jobs there, with connections of its
//! own, and stops as any worker does: at shutdown, when its client is closed, or when its future is dropped.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill::{Job, JobError, Worker};
use support::{TestRedis, eventually, spawn_worker};

const T: Duration = Duration::from_secs(20);

/// A handler that records the name of the thread each job ran on.
fn recording(
    threads: Arc<Mutex<Vec<String>>>,
) -> impl Fn(Job<u32>) -> std::future::Ready<Result<(), JobError>> + Send + Sync + 'static {
    move |_job: Job<u32>| {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        threads.lock().unwrap().push(name);
        std::future::ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_its_own_thread_runs_every_job_there_and_shuts_down_cleanly() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<u32>("own").unwrap();
    q.enqueue_many(&(0..500).collect::<Vec<_>>()).await.unwrap();
    let threads = Arc::new(Mutex::new(Vec::new()));
    let w = Worker::new(client.clone(), "own")
        .unwrap()
        .concurrency(8)
        .dedicated_thread(true);
    let w = spawn_worker(w, recording(threads.clone()));
    eventually(T, "every job done", || async {
        w.stats.snapshot().completed == 500
    })
    .await;
    let rule = rill::HealthRule::default();
    assert_eq!(q.workers(&rule).await.unwrap().len(), 1, "registered");
    let report = w.stop().await;
    assert_eq!((report.completed, report.released), (500, 0), "{report:?}");
    let names: HashSet<String> = threads.lock().unwrap().drain(..).collect();
    assert_eq!(
        names,
        HashSet::from(["rill-worker-own".to_owned()]),
        "every job on the worker's thread, none on the caller's runtime"
    );
    assert!(q.workers(&rule).await.unwrap().is_empty(), "deregistered");
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.waiting, counts.active), (0, 0), "{counts:?}");
}

/// A worker on its own thread for queue `own`, once it has registered.
async fn registered(client: &rill::Client, threads: Arc<Mutex<Vec<String>>>) -> support::Running {
    let q = client.queue::<u32>("own").unwrap();
    let w = Worker::new(client.clone(), "own")
        .unwrap()
        .dedicated_thread(true);
    let w = spawn_worker(w, recording(threads));
    eventually(T, "registered", || async {
        q.workers(&rill::HealthRule::default()).await.unwrap().len() == 1
    })
    .await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_client_or_dropping_the_run_stops_a_worker_on_its_own_thread() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let rule = rill::HealthRule::default();
    let threads = Arc::new(Mutex::new(Vec::new()));
    // The client it was given closed: the worker (whose connections are its own) stops all the same.
    let w = registered(&client, threads.clone()).await;
    client.close();
    let report = tokio::time::timeout(T, w.handle)
        .await
        .expect("stops after the client is closed")
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    // Its future dropped (the task aborted): it shuts down gracefully on its thread and leaves the registry.
    let client = support::client(&redis);
    let q = client.queue::<u32>("own").unwrap();
    let w = registered(&client, threads.clone()).await;
    w.handle.abort();
    eventually(T, "deregistered after its future was dropped", || async {
        q.workers(&rule).await.unwrap().is_empty()
    })
    .await;
    q.enqueue(&7).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        threads.lock().unwrap().is_empty(),
        "no job ran after it stopped"
    );
}

//! Schedules fired by the workers of a queue: once per fire time across workers whose clocks disagree, with the
//! schedule's name and fire time on each job; paused, resumed, updated and removed; missed fire times after
//! downtime handled by the schedule's policy.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill::{Job, Missed, Schedule, Worker};
use support::{TestRedis, eventually, now_ms, spawn_worker};

const T: Duration = Duration::from_secs(20);

type Fired = Arc<Mutex<Vec<(String, u64, String)>>>;

/// A worker on `queue` whose promoter's clock is `skew_ms` off, recording (schedule, fire time, data) of each
/// job it runs.
fn recording(client: &rill::Client, queue: &str, skew_ms: i64, seen: &Fired) -> support::Running {
    let seen = seen.clone();
    spawn_worker(
        Worker::new(client.clone(), queue)
            .unwrap()
            .block(Duration::from_millis(200))
            .clock_skew(skew_ms),
        move |job: Job<String>| {
            let seen = seen.clone();
            async move {
                let (name, at) = job.schedule().expect("a scheduled job says which schedule");
                seen.lock()
                    .unwrap()
                    .push((name.to_owned(), at, job.data().clone()));
                Ok(())
            }
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_with_skewed_clocks_fire_each_time_once() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<String>("jobs").unwrap();
    let seen: Fired = Arc::default();
    // Clocks 3 s behind, right, 2 s ahead and 5 s ahead of the host (the server's clock is the host's).
    let workers: Vec<_> = [-3_000, 0, 2_000, 5_000]
        .into_iter()
        .map(|skew| recording(&client, "jobs", skew, &seen))
        .collect();
    let start = now_ms();
    let info = q
        .schedule(
            "tick",
            Schedule::every(Duration::from_secs(1)),
            &"ping".into(),
        )
        .await
        .unwrap();
    assert!(info.next_ms.unwrap() >= start + 1_000);
    eventually(T, "five fire times", || async {
        seen.lock().unwrap().len() >= 5
    })
    .await;
    q.remove_schedule("tick").await.unwrap();
    // Anything already enqueued runs; then nothing more comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = seen.lock().unwrap().clone();
    let mut per_time: HashMap<u64, usize> = HashMap::new();
    for (name, at, data) in &seen {
        assert_eq!((name.as_str(), data.as_str()), ("tick", "ping"));
        *per_time.entry(*at).or_default() += 1;
    }
    assert!(
        per_time.values().all(|n| *n == 1),
        "a fire time ran twice: {per_time:?}"
    );
    let mut times: Vec<u64> = per_time.into_keys().collect();
    times.sort();
    for pair in times.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1_000,
            "every second, none skipped: {times:?}"
        );
    }
    // None ran ahead of its time by the host's clock (the workers 2 s and 5 s ahead were held back).
    let info = q.schedule_info("tick").await.unwrap();
    assert!(info.is_none(), "removed");
    for w in workers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_never_start_before_their_fire_time_on_a_fast_clock() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<String>("jobs").unwrap();
    let started: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let s2 = started.clone();
    let w = spawn_worker(
        Worker::new(client.clone(), "jobs")
            .unwrap()
            .clock_skew(30_000),
        move |job: Job<String>| {
            let started = s2.clone();
            async move {
                let (_, at) = job.schedule().unwrap();
                started.lock().unwrap().push((at, now_ms()));
                Ok(())
            }
        },
    );
    q.schedule("t", Schedule::every(Duration::from_secs(1)), &"x".into())
        .await
        .unwrap();
    eventually(T, "two fires", || async {
        started.lock().unwrap().len() >= 2
    })
    .await;
    for (at, ran) in started.lock().unwrap().iter() {
        assert!(ran >= at, "ran at {ran}, before its fire time {at}");
    }
    w.stop().await;
}

/// Delayed jobs are due by the server's clock too: a worker whose clock runs 30 s ahead starts none early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_never_start_early_on_a_fast_clock() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<String>("jobs").unwrap();
    let started: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s2 = started.clone();
    let w = spawn_worker(
        Worker::new(client.clone(), "jobs")
            .unwrap()
            .clock_skew(30_000),
        move |_job: Job<String>| {
            let started = s2.clone();
            async move {
                started.lock().unwrap().push(now_ms());
                Ok(())
            }
        },
    );
    let due = now_ms() + 1_500;
    q.enqueue_with(
        &"later".into(),
        rill::Enqueue::new().delay(Duration::from_millis(1_500)),
    )
    .await
    .unwrap();
    eventually(T, "the delayed job ran", || async {
        !started.lock().unwrap().is_empty()
    })
    .await;
    let ran = started.lock().unwrap()[0];
    assert!(ran >= due, "ran {} ms before it was due", due - ran);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_update_and_list() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<String>("jobs").unwrap();
    let seen: Fired = Arc::default();
    let w = recording(&client, "jobs", 0, &seen);
    let nightly = Schedule::cron("0 3 * * *").tz("Europe/Berlin");
    q.schedule("nightly", nightly.clone(), &"report".into())
        .await
        .unwrap();
    q.schedule(
        "often",
        Schedule::every(Duration::from_secs(1)),
        &"a".into(),
    )
    .await
    .unwrap();
    let list = q.schedules().await.unwrap();
    assert_eq!(
        list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        vec!["nightly", "often"]
    );
    assert_eq!(list[0].schedule, nightly);
    assert_eq!(list[0].schedule.describe(), "cron 0 3 * * * Europe/Berlin");
    eventually(T, "often fired", || async {
        seen.lock().unwrap().iter().any(|s| s.0 == "often")
    })
    .await;
    assert!(q.pause_schedule("often").await.unwrap());
    let info = q.schedule_info("often").await.unwrap().unwrap();
    assert!(info.paused && info.next_ms.is_none());
    assert!(info.fired >= 1 && info.last_fire_ms.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "a paused schedule fired"
    );
    // Updated while paused: new data, still paused; resumed, it fires the new data.
    q.schedule(
        "often",
        Schedule::every(Duration::from_secs(1)),
        &"b".into(),
    )
    .await
    .unwrap();
    assert!(q.schedule_info("often").await.unwrap().unwrap().paused);
    assert!(q.resume_schedule("often").await.unwrap());
    eventually(T, "the new data", || async {
        seen.lock().unwrap().iter().any(|s| s.2 == "b")
    })
    .await;
    assert!(!q.pause_schedule("nope").await.unwrap());
    assert!(q.remove_schedule("often").await.unwrap());
    assert!(!q.remove_schedule("often").await.unwrap());
    // Pausing or resuming a removed schedule brings nothing back.
    assert!(!q.pause_schedule("often").await.unwrap());
    assert!(!q.resume_schedule("often").await.unwrap());
    assert!(
        q.schedules()
            .await
            .unwrap()
            .iter()
            .all(|s| s.name != "often")
    );
    let mut c = redis.aconn().await;
    let stray: Option<f64> = redis::AsyncCommands::zscore(&mut c, &q.keys().schedules, "often")
        .await
        .unwrap();
    assert_eq!(stray, None);
    assert!(
        !seen.lock().unwrap().iter().any(|s| s.0 == "nightly"),
        "the nightly schedule is not due"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_times_missed_while_no_worker_ran_follow_the_policy() {
    let redis = TestRedis::start();
    let client = support::client(&redis);
    let q = client.queue::<String>("jobs").unwrap();
    let mut c = redis.aconn().await;
    // Three schedules every 10 s whose next fire time was 95 s ago: ten fire times missed.
    for (name, policy) in [
        ("skip", Missed::Skip),
        ("once", Missed::Once),
        ("all", Missed::All(4)),
    ] {
        q.schedule(
            name,
            Schedule::every(Duration::from_secs(10)).missed(policy),
            &name.into(),
        )
        .await
        .unwrap();
        let _: () = redis::cmd("ZADD")
            .arg(&q.keys().schedules)
            .arg(now_ms() - 95_000)
            .arg(name)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let seen: Fired = Arc::default();
    let w = recording(&client, "jobs", 0, &seen);
    eventually(T, "every schedule moved on", || async {
        let list = q.schedules().await.unwrap();
        list.iter().all(|s| s.next_ms.is_some_and(|n| n > now_ms()))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count = |name: &str| seen.lock().unwrap().iter().filter(|s| s.0 == name).count();
    // The newest missed time is 5 s old: on time, so even `skip` runs that one.
    assert_eq!((count("skip"), count("once"), count("all")), (1, 1, 4));
    w.stop().await;
}

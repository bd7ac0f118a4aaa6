//! The least-privilege Redis users README gives, one per role, taken from README itself so they cannot drift: a
//! producer enqueues (plain, with an id, deduplicated, delayed, in bulk) and can do nothing else (no ack, no read
//! with the group, no delete, no purge, no worker); a worker runs jobs; an operator inspects and steers (counts,
//! listings, a job's state, pause and resume, cancel, delete, promote, dead letters, schedules, limits, drain,
//! remove).

mod support;

use std::time::Duration;

use support::TestRedis;

fn client(url: &str, ns: &str) -> rill::Client {
    rill::Client::with_config(
        url,
        rill::ClientConfig {
            namespace: ns.to_owned(),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Creates README's user for `role` (`rill-<role>`) with keys under `ns`; returns its URL.
async fn readme_user(redis: &TestRedis, ns: &str, role: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let prefix = format!("ACL SETUSER rill-{role} ");
    let rule = readme
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("README gives the {role}'s ACL rules"));
    let mut cmd = redis::cmd("ACL");
    for word in rule.split_whitespace().skip(1) {
        cmd.arg(match word {
            ">CHANGE-ME" => ">pw".to_owned(),
            "~rill:*" => format!("~{ns}:*"),
            w => w.to_owned(),
        });
    }
    if support::cluster_mode() {
        // README's addition for a cluster.
        let addition = readme
            .lines()
            .find_map(|l| l.strip_prefix("On a Redis Cluster, add `"))
            .and_then(|rest| rest.split('`').next())
            .expect("README gives the cluster's addition to the ACL rules");
        cmd.arg(addition);
    }
    // Through the cluster client, ACL SETUSER goes to every node.
    let _: () = cmd.query_async(&mut redis.aconn().await).await.unwrap();
    redis.client_url_as(&format!("rill-{role}"), "pw")
}

/// Whether `e` is Redis refusing a command for the user's ACL: directly (`NOPERM`) or inside a script.
fn refused(e: &rill::Error) -> bool {
    let text = e.to_string().to_lowercase();
    matches!(e, rill::Error::Permission { .. })
        || text.contains("noperm")
        || text.contains("can't run this command")
}

#[tokio::test]
async fn a_producer_and_a_worker_run_as_the_readme_acl_users() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let url = readme_user(&redis, &ns, "worker").await;
    // Jobs come from the README's producer user: plain, with an id (twice: deduplicated), delayed, in bulk.
    let purl = readme_user(&redis, &ns, "producer").await;
    let queue = client(&purl, &ns).queue::<u32>("q").unwrap();
    queue.enqueue(&1).await.unwrap();
    let id = rill::Enqueue::new().id("two");
    assert_eq!(queue.enqueue_with(&2, id.clone()).await.unwrap(), "two");
    assert_eq!(queue.enqueue_with(&2, id).await.unwrap(), "two");
    queue
        .enqueue_with(&3, rill::Enqueue::new().delay(Duration::from_millis(50)))
        .await
        .unwrap();
    queue
        .enqueue_with(&4, rill::Enqueue::new().dedup_key("four"))
        .await
        .unwrap();
    assert_eq!(queue.enqueue_many(&[5, 6]).await.unwrap().len(), 2);
    let running = support::spawn_worker(
        rill::Worker::new(client(&url, &ns), "q").unwrap(),
        |job: rill::Job<u32>| async move {
            if *job.data() == 2 && job.attempt() == 1 {
                return Err(rill::JobError::retry_after(
                    "once more",
                    Duration::from_millis(10),
                ));
            }
            Ok(())
        },
    );
    support::eventually(
        Duration::from_secs(10),
        "six jobs done, one retried",
        || async { running.stats.snapshot().completed == 6 },
    )
    .await;
    let report = running.stop().await;
    assert_eq!(report.retried, 1);
}

#[tokio::test]
async fn a_producer_cannot_take_ack_delete_or_purge_jobs() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let purl = readme_user(&redis, &ns, "producer").await;
    let producer = client(&purl, &ns);
    let q = producer.queue::<u32>("q").unwrap();
    let id = q
        .enqueue_with(&1, rill::Enqueue::new().id("j1"))
        .await
        .unwrap();
    // Its own connection, raw: the group's commands are refused.
    let mut raw = redis.aconn_as("rill-producer", "pw").await;
    let keys = q.keys().clone();
    for cmd in [
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(rill::keys::GROUP)
            .arg("thief")
            .arg("STREAMS")
            .arg(&keys.ready)
            .arg(">")
            .clone(),
        redis::cmd("XACK")
            .arg(&keys.ready)
            .arg(rill::keys::GROUP)
            .arg("0-1")
            .clone(),
        redis::cmd("XDEL").arg(&keys.ready).arg("0-1").clone(),
        redis::cmd("DEL").arg(&keys.ready).clone(),
    ] {
        let r: redis::RedisResult<redis::Value> = cmd.query_async(&mut raw).await;
        let e = r.expect_err("refused");
        assert!(e.to_string().to_lowercase().contains("noperm"), "{e}");
    }
    // Through the library: deleting, purging and working are refused too, and the job is untouched.
    let e = q.delete(&id).await.expect_err("a producer cannot delete");
    assert!(refused(&e), "{e}");
    // A dead letter to purge (written as the admin).
    let mut admin_conn = redis.aconn().await;
    let _: String = redis::cmd("XADD")
        .arg(&keys.dead)
        .arg("*")
        .arg("dead_job")
        .arg("gone")
        .arg("dead_reason")
        .arg("failed")
        .arg("dead_ms")
        .arg(1)
        .query_async(&mut admin_conn)
        .await
        .unwrap();
    let e = q
        .purge_dead(None)
        .await
        .expect_err("a producer cannot purge");
    assert!(refused(&e), "{e}");
    let e = rill::Worker::new(producer.clone(), "q")
        .unwrap()
        .run(|_job: rill::Job<u32>| async { Ok(()) }, async {})
        .await
        .expect_err("a producer cannot work");
    assert!(refused(&e), "{e}");
    let admin = client(&redis.client_url(), &ns).queue::<u32>("q").unwrap();
    assert_eq!(admin.state(&id).await.unwrap(), rill::JobState::Waiting);
}

#[tokio::test]
async fn an_operator_inspects_and_steers_as_the_readme_acl_user() {
    let redis = TestRedis::start();
    let ns = support::namespace();
    let ourl = readme_user(&redis, &ns, "operator").await;
    let wurl = readme_user(&redis, &ns, "worker").await;
    let op = client(&ourl, &ns);
    let q = op.queue::<u32>("q").unwrap();
    // Jobs in each place: waiting, delayed, dead (through a worker), completed.
    q.enqueue_with(&1, rill::Enqueue::new().id("w1"))
        .await
        .unwrap();
    q.enqueue_with(&2, rill::Enqueue::new().id("w2"))
        .await
        .unwrap();
    q.enqueue_with(
        &3,
        rill::Enqueue::new()
            .id("later")
            .delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    q.enqueue_with(&4, rill::Enqueue::new().id("doomed").max_attempts(1))
        .await
        .unwrap();
    q.enqueue_with(&5, rill::Enqueue::new().id("fine"))
        .await
        .unwrap();
    q.pause().await.unwrap();
    assert!(q.is_paused().await.unwrap());
    q.resume().await.unwrap();
    let running = support::spawn_worker(
        rill::Worker::new(client(&wurl, &ns), "q").unwrap(),
        |job: rill::Job<u32>| async move {
            match *job.data() {
                4 => Err(rill::JobError::permanent("no")),
                _ => Ok(()),
            }
        },
    );
    support::eventually(Duration::from_secs(10), "the jobs ran", || async {
        q.state("doomed").await.unwrap() == rill::JobState::Dead
            && q.state("fine").await.unwrap() == rill::JobState::Completed
    })
    .await;
    q.pause().await.unwrap();
    support::eventually(Duration::from_secs(10), "the worker is paused", || async {
        q.workers(&rill::HealthRule::default())
            .await
            .unwrap()
            .iter()
            .all(|(w, _)| w.status == "paused")
    })
    .await;
    q.enqueue_with(&6, rill::Enqueue::new().id("held"))
        .await
        .unwrap();
    q.enqueue_with(&7, rill::Enqueue::new().id("held2"))
        .await
        .unwrap();

    // Reads: counts, listings, a job, events, signals, workers, the namespace's queues.
    let c = q.counts().await.unwrap();
    assert_eq!((c.waiting, c.delayed, c.dead), (2, 1, 1), "{c:?}");
    assert_eq!(
        q.jobs(rill::JobState::Dead, None, 10)
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
    assert!(
        !q.jobs(rill::JobState::Completed, None, 10)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert_eq!(q.job("later").await.unwrap().state, rill::JobState::Delayed);
    assert!(!q.events(None, 100).await.unwrap().is_empty());
    assert!(
        !q.signal_history(rill::SignalFilter::new(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(op.queues().await.unwrap(), vec!["q".to_owned()]);
    assert_eq!(q.dead_letters(None, 10).await.unwrap().len(), 1);
    // Steering: cancel, promote, delete, dead letters, schedules, limits.
    assert_eq!(
        q.cancel("held").await.unwrap(),
        rill::CancelOutcome::Removed
    );
    assert!(q.promote("later").await.unwrap());
    assert!(matches!(
        q.delete("held2").await.unwrap(),
        rill::Deleted::Removed(_)
    ));
    assert_eq!(
        q.retry_dead(&["doomed"]).await.unwrap().requeued,
        vec!["doomed".to_owned()]
    );
    q.schedule(
        "nightly",
        rill::Schedule::every(Duration::from_secs(3600)),
        &9,
    )
    .await
    .unwrap();
    assert!(q.pause_schedule("nightly").await.unwrap());
    assert!(q.remove_schedule("nightly").await.unwrap());
    q.set_rate_limit(10, Duration::from_secs(1)).await.unwrap();
    q.set_concurrency_limit(3).await.unwrap();
    assert!(q.clear_rate_limit().await.unwrap());
    assert!(q.clear_concurrency_limit().await.unwrap());
    q.resume().await.unwrap();
    support::eventually(Duration::from_secs(10), "the requeued jobs ran", || async {
        q.state("doomed").await.unwrap() == rill::JobState::Dead
            && q.state("later").await.unwrap() == rill::JobState::Completed
    })
    .await;
    assert_eq!(q.purge_dead(None).await.unwrap(), 1);
    running.stop().await;
    q.enqueue(&8).await.unwrap();
    q.drain().await.unwrap();
    assert!(q.remove(true).await.unwrap() > 0);
}

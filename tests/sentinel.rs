//! Redis Sentinel: a primary, a replica and three Sentinels (private `redis-server --sentinel` processes). A
//! producer and a worker given only the Sentinels (`redis+sentinel://...`) run jobs; the primary is failed over
//! to its replica mid-run (`SENTINEL FAILOVER`), and both follow the new primary by themselves: every job enqueued
//! afterwards runs, with no restart.

mod support;

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rill::{Job, Worker};
use support::{TestRedis, eventually, spawn_worker};

const T: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `redis-server --sentinel` process, killed on drop.
struct SentinelProcess {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl SentinelProcess {
    fn start(primary_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor main 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds main 1000\nsentinel failover-timeout main 5000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(support::server_binary())
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        SentinelProcess {
            child,
            port,
            _dir: dir,
        }
    }

    /// A connection, once it listens.
    fn try_conn(&self) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .ok()?
            .get_connection()
            .ok()
    }

    fn conn(&self) -> redis::Connection {
        self.try_conn().expect("the sentinel answers")
    }

    /// The primary's port as this Sentinel sees it now, once it answers.
    fn primary_port(&self) -> Option<u16> {
        let mut c = self.try_conn()?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("main")
            .query(&mut c)
            .ok()?;
        addr.map(|(_, p)| p)
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_workers_follow_a_failover_by_themselves() {
    let primary = TestRedis::start();
    let replica = TestRedis::start();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query(&mut replica.conn())
        .unwrap();
    let sentinels: Vec<SentinelProcess> = (0..3)
        .map(|_| SentinelProcess::start(primary.port()))
        .collect();
    // The Sentinels know the primary, and have found its replica in sync (a failover needs one).
    eventually(T, "the sentinels see the replica", || async {
        let Some(mut c) = sentinels[0].try_conn() else {
            return false;
        };
        let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg("main")
            .query(&mut c)
            .unwrap_or_default();
        replicas.iter().any(|r| {
            r.windows(2).any(|kv| kv[0] == "flags" && kv[1] == "slave")
                && r.windows(2)
                    .any(|kv| kv[0] == "master-link-status" && kv[1] == "ok")
        })
    })
    .await;

    let url = format!(
        "redis+sentinel://{}/main",
        sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    let client = rill::Client::with_config(
        &url,
        rill::ClientConfig {
            namespace: support::namespace(),
            ..Default::default()
        },
    )
    .unwrap();
    let q = client.queue::<String>("jobs").unwrap();
    let done: Arc<Mutex<HashSet<String>>> = Arc::default();
    let d2 = done.clone();
    let w = spawn_worker(
        support::fast(Worker::new(client.clone(), "jobs").unwrap()),
        move |job: Job<String>| {
            let done = d2.clone();
            async move {
                done.lock().unwrap().insert(job.data().clone());
                Ok(())
            }
        },
    );
    for i in 0..50 {
        q.enqueue(&format!("before-{i}")).await.unwrap();
    }
    eventually(T, "the first jobs ran on the first primary", || async {
        done.lock().unwrap().len() == 50
    })
    .await;

    // Fail over to the replica, and wait until the Sentinels name it.
    let _: () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg("main")
        .query(&mut sentinels[0].conn())
        .unwrap();
    eventually(T, "the replica is the primary", || async {
        sentinels
            .iter()
            .all(|s| s.primary_port() == Some(replica.port()))
    })
    .await;

    // The old primary is a replica of the new one now: what is still connected to it must move.
    eventually(T, "the old primary is a replica", || async {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut primary.conn()).unwrap();
        role[0] == redis::Value::BulkString(b"slave".to_vec())
    })
    .await;
    // The same producer and worker, no restart: jobs enqueued now run on the new primary. The demotion closed
    // the old primary's connections, so the first call on one fails (an I/O error, as for any lost link: whether
    // it landed is unknown) and the next goes to the new primary; a producer retries as it would after any such
    // error.
    let mut failed = 0;
    for i in 0..50 {
        loop {
            match q.enqueue(&format!("after-{i}")).await {
                Ok(_) => break,
                Err(e) => {
                    failed += 1;
                    assert!(failed <= 3, "enqueue keeps failing: {e}");
                    eprintln!("enqueue failed once across the switch: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    eventually(T, "every job enqueued after the failover ran", || async {
        let done = done.lock().unwrap();
        (0..50).all(|i| done.contains(&format!("after-{i}")))
    })
    .await;
    let mut on_new: redis::aio::MultiplexedConnection = replica.aconn().await;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut on_new).await.unwrap();
    assert_eq!(role[0], redis::Value::BulkString(b"master".to_vec()));
    assert_eq!(
        client
            .redis()
            .await
            .unwrap()
            .get_connection_info()
            .addr()
            .to_string(),
        format!("127.0.0.1:{}", replica.port()),
        "the client's server now is the new primary"
    );
    w.stop().await;
}

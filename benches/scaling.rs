//! How a partitioned queue spreads over a Redis Cluster: on local clusters of 1, 2 and 3 masters, one queue of 6
//! partitions is filled, then drained by one worker (concurrency 64), and each master's share of the jobs and its
//! Redis CPU per job are printed as JSON lines. On one machine total throughput cannot grow with masters (they
//! share its cores), so the evidence is per shard: CPU per job should stay at the single-master figure and the
//! shares should be even. `cargo bench --bench scaling` (`RILL_BENCH_JOBS` sets the jobs; `cargo test` runs a
//! small smoke version).

#[path = "../tests/support/mod.rs"]
mod support;

// Only its CPU reading is used here (its raw loops serve `rill bench` and the throughput bench).
#[allow(dead_code)]
#[path = "../cli/src/raw.rs"]
mod raw;

use std::time::{Duration, Instant};

use serde_json::json;
use support::cluster::TestCluster;

const PARTITIONS: usize = 6;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let jobs: u64 = std::env::var("RILL_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 1_200 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Rounds interleave the cluster sizes, so a noisy spell on this shared machine hits all of them; the
    // summary compares medians.
    let rounds: usize = std::env::var("RILL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 3 } else { 1 });
    rt.block_on(async {
        let mut runs: Vec<Vec<Vec<Shard>>> = vec![Vec::new(); 3];
        for round in 0..rounds {
            for masters in [1, 2, 3] {
                let (shards, per_s) = drain_on(masters, jobs).await;
                let line = json!({
                    "bench": "scaling_run",
                    "round": round,
                    "masters": masters,
                    "partitions": PARTITIONS,
                    "jobs": jobs,
                    "jobs_per_s": per_s.round(),
                    "shards": shards.iter().map(|s| json!({
                        "partitions": s.partitions,
                        "jobs": s.jobs,
                        "share": round3(s.share),
                        "redis_cpu_us_per_job": round3(s.cpu_us_per_job),
                    })).collect::<Vec<_>>(),
                });
                if full {
                    println!("{line}");
                } else {
                    assert_eq!(shards.iter().map(|s| s.jobs).sum::<u64>(), jobs, "{line}");
                    println!("smoke ok: scaling on {masters} masters");
                }
                runs[masters - 1].push(shards);
            }
        }
        if !full {
            return;
        }
        // Per shard, the median over rounds; compared with the single master's median.
        let medians: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|rs| {
                (0..rs[0].len())
                    .map(|i| {
                        let cpu = median(rs.iter().map(|r| r[i].cpu_us_per_job).collect());
                        let share = median(rs.iter().map(|r| r[i].share).collect());
                        (cpu, share)
                    })
                    .collect()
            })
            .collect();
        let single = medians[0][0].0;
        for (m, shards) in medians.iter().enumerate() {
            let even = 1.0 / shards.len() as f64;
            println!(
                "{}",
                json!({
                    "bench": "scaling",
                    "masters": m + 1,
                    "partitions": PARTITIONS,
                    "jobs": jobs,
                    "rounds": rounds,
                    "redis_cpu_us_per_job": shards.iter().map(|s| round3(s.0)).collect::<Vec<_>>(),
                    "vs_single_master": shards.iter().map(|s| round3(s.0 / single)).collect::<Vec<_>>(),
                    "share": shards.iter().map(|s| round3(s.1)).collect::<Vec<_>>(),
                    "worst_cpu_per_job_off_single": round3(shards.iter().map(|s| (s.0 / single - 1.0).abs()).fold(0.0, f64::max)),
                    "worst_share_off_even": round3(shards.iter().map(|s| (s.1 / even - 1.0).abs()).fold(0.0, f64::max)),
                })
            );
        }
    });
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One master's part of a drain.
#[derive(Clone)]
struct Shard {
    partitions: usize,
    jobs: u64,
    share: f64,
    cpu_us_per_job: f64,
}

/// Fills a 6-partition queue on a fresh cluster of `masters` masters with `jobs` jobs, drains it, and returns each
/// master's jobs and Redis CPU per job over the drain.
async fn drain_on(masters: usize, jobs: u64) -> (Vec<Shard>, f64) {
    let cluster = TestCluster::start(masters);
    let client = rill::Client::with_config(
        &cluster.url(),
        rill::ClientConfig {
            namespace: "bench".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let q = client.queue::<u64>("scaled").unwrap();
    let parts = q.set_partitions(PARTITIONS).await.unwrap();
    q.enqueue_many(&(0..jobs).collect::<Vec<_>>())
        .await
        .unwrap();
    // Where each partition lives, and how many jobs each master holds (and so serves).
    let mut per_node = vec![(0usize, 0u64); masters];
    for tag in parts.tags() {
        let ready = format!("bench:{{{tag}}}:ready");
        let node = cluster.owner(&ready);
        let len: u64 = redis::cmd("XLEN")
            .arg(&ready)
            .query(&mut cluster.nodes[node].conn())
            .unwrap();
        per_node[node].0 += 1;
        per_node[node].1 += len;
    }
    let mut conns = Vec::new();
    for node in &cluster.nodes {
        conns.push(node.node_aconn().await);
    }
    let mut before = Vec::new();
    for c in &mut conns {
        before.push(raw::Cpu::now(c).await.redis.unwrap());
    }
    let worker = rill::Worker::new(client.clone(), "scaled")
        .unwrap()
        .concurrency(64);
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(
        worker.run(|_job: rill::Job<u64>| async move { Ok(()) }, async move {
            let _ = stopped.await;
        }),
    );
    let t = Instant::now();
    while stats.snapshot().completed < jobs {
        assert!(t.elapsed() < Duration::from_secs(600), "drain stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut after = Vec::new();
    for c in &mut conns {
        after.push(raw::Cpu::now(c).await.redis.unwrap());
    }
    if std::env::var_os("RILL_BENCH_COMMANDSTATS").is_some() {
        for (i, c) in conns.iter_mut().enumerate() {
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(c)
                .await
                .unwrap();
            eprintln!("masters={masters} node={i}:\n{stats}");
        }
    }
    let per_s = jobs as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    let shards = per_node
        .iter()
        .enumerate()
        .map(|(i, &(partitions, n))| Shard {
            partitions,
            jobs: n,
            share: n as f64 / jobs as f64,
            cpu_us_per_job: (after[i] - before[i]) * 1e6 / n.max(1) as f64,
        })
        .collect();
    (shards, per_s)
}

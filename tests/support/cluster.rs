//! A private Redis Cluster: `masters` cluster-enabled `redis-server`s (free ports, temp dirs, killed on drop),
//! the 16,384 slots split evenly between them, joined with `CLUSTER MEET`. No `redis-cli` needed.

use std::time::{Duration, Instant};

use super::TestRedis;

pub struct TestCluster {
    pub nodes: Vec<TestRedis>,
}

impl TestCluster {
    /// A cluster of `masters` masters, each owning an even share of the slots, ready (`cluster_state:ok` on
    /// every node, every node knowing every other).
    pub fn start(masters: usize) -> Self {
        Self::start_with_replicas(masters, false)
    }

    /// As [`TestCluster::start`], and with `replicas`, one replica per master: node `masters + i` replicates
    /// node `i`.
    pub fn start_with_replicas(masters: usize, replicas: bool) -> Self {
        let total = if replicas { masters * 2 } else { masters };
        let nodes: Vec<TestRedis> = (0..total)
            .map(|_| TestRedis::start_cluster_node())
            .collect();
        for (i, node) in nodes.iter().enumerate().take(masters) {
            let from = i * 16_384 / masters;
            let to = (i + 1) * 16_384 / masters - 1;
            let () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(from)
                .arg(to)
                .query(&mut node.node_conn())
                .expect("assign slots");
        }
        // Every pair meets directly: waiting for gossip to introduce them takes seconds.
        for (i, node) in nodes.iter().enumerate().skip(1) {
            for other in &nodes[..i] {
                let () = redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(other.port())
                    .query(&mut node.node_conn())
                    .expect("meet");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.node_conn())
                    .unwrap();
                let known = info
                    .lines()
                    .find_map(|l| l.strip_prefix("cluster_known_nodes:"))
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if info.contains("cluster_state:ok") && known == Some(total) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not form: {info}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let cluster = TestCluster { nodes };
        if replicas {
            for i in 0..masters {
                let master = cluster.id(i);
                let () = redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&master)
                    .query(&mut cluster.nodes[masters + i].node_conn())
                    .expect("replicate");
            }
            for i in 0..masters {
                loop {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut cluster.nodes[masters + i].node_conn())
                        .unwrap();
                    if info.contains("master_link_status:up") {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "replica {i} did not sync: {info}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        cluster
    }

    /// Makes node `replica` take over from its master (`CLUSTER FAILOVER` on the replica, as an operator does for
    /// maintenance) and waits until it says it is a master.
    pub fn fail_over_to(&self, replica: usize) {
        // A manual failover gives up if the master does not answer within its timeout (5 s; a loaded machine):
        // ask again, as an operator would.
        for _ in 0..4 {
            let () = redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .query(&mut self.nodes[replica].node_conn())
                .expect("failover");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let role: Vec<redis::Value> = redis::cmd("ROLE")
                    .query(&mut self.nodes[replica].node_conn())
                    .unwrap();
                if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("the failover did not happen");
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Which node owns `key`'s slot (its index in `nodes`). Right after a slot moved, the new owner may not list
    /// itself yet (its config epoch settles through the cluster bus): asked again for up to 10 s.
    pub fn owner(&self, key: &str) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = self.owner_now(key) {
                return i;
            }
            assert!(Instant::now() < deadline, "no node owns the slot of {key}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn owner_now(&self, key: &str) -> Option<usize> {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].node_conn())
            .unwrap();
        self.nodes.iter().position(|n| {
            let owned: Vec<redis::Value> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query(&mut n.node_conn())
                .unwrap();
            let me = format!("{}", n.port());
            owned.iter().any(|r| match r {
                redis::Value::Array(parts) => {
                    let num = |v: &redis::Value| redis::from_redis_value::<u16>(v.clone()).ok();
                    let (lo, hi) = (num(&parts[0]), num(&parts[1]));
                    let port = match &parts[2] {
                        redis::Value::Array(p) => redis::from_redis_value::<u16>(p[1].clone()).ok(),
                        _ => None,
                    };
                    lo.is_some_and(|lo| lo <= slot)
                        && hi.is_some_and(|hi| slot <= hi)
                        && port.map(|p| p.to_string()) == Some(me.clone())
                }
                _ => false,
            })
        })
    }
}

impl TestCluster {
    /// Node `i`'s cluster id.
    pub fn id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[i].node_conn())
            .unwrap()
    }

    /// Moves the slot of `key` from node `from` to node `to` while clients run, as `redis-cli --cluster reshard`
    /// does for each slot: `IMPORTING`/`MIGRATING`, the keys moved in batches with `MIGRATE` (clients meanwhile
    /// get `ASK` for moved keys, `TRYAGAIN` for commands that span moved and unmoved ones), then the slot
    /// assigned to `to` on every node (clients then get `MOVED`). `pause` is slept between batches.
    pub fn migrate_slot_of(&self, key: &str, from: usize, to: usize, pause: Duration) {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].node_conn())
            .unwrap();
        let (from_id, to_id) = (self.id(from), self.id(to));
        let () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&from_id)
            .query(&mut self.nodes[to].node_conn())
            .unwrap();
        let () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&to_id)
            .query(&mut self.nodes[from].node_conn())
            .unwrap();
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(2)
                .query(&mut self.nodes[from].node_conn())
                .unwrap();
            if keys.is_empty() {
                break;
            }
            let () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port())
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys)
                .query(&mut self.nodes[from].node_conn())
                .unwrap();
            std::thread::sleep(pause);
        }
        // The new owner first, then the old one, then the rest (as redis-cli does).
        let others = (0..self.nodes.len()).filter(|&i| i != to && i != from);
        for i in [to, from].into_iter().chain(others) {
            let () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id)
                .query(&mut self.nodes[i].node_conn())
                .unwrap();
        }
    }
}

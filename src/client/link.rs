//! The connections a client hands out, to one server or to a Redis Cluster: both speak redis-rs's
//! `ConnectionLike`, so every command, pipeline and script goes through either unchanged. On a cluster, redis-rs
//! routes each command by its key's slot (every key of a queue shares the queue's hash tag, so a script's keys
//! are on one node), follows `MOVED` and `ASK`, and refreshes the slot map after a resharding or a failover.

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// `redis+cluster://` starts a cluster URL: seed nodes, comma-separated (`redis+cluster://h1:6379,h2:6379`).
pub(super) const SCHEME: &str = "redis+cluster://";

/// The seed node URLs of a `redis+cluster://[user:password@]host:port[,host:port...][/]` URL.
pub(super) fn seeds(url: &str) -> Option<Vec<String>> {
    let rest = url.strip_prefix(SCHEME)?.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{auth}{h}"))
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// The shared command connection: one server's (reconnecting) or a cluster's.
#[derive(Clone)]
pub(crate) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A connection of its own for a loop that blocks (`XREADGROUP ... BLOCK`): to one server, or a cluster
/// connection of its own (its node connections are not shared with other commands).
#[derive(Clone)]
pub(crate) enum BlockingConn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

macro_rules! forward {
    ($t:ident) => {
        impl ConnectionLike for $t {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                match self {
                    $t::Single(c) => c.req_packed_command(cmd),
                    $t::Cluster(c) => c.req_packed_command(cmd),
                }
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                match self {
                    $t::Single(c) => c.req_packed_commands(pipeline, offset, count),
                    $t::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
                }
            }

            fn get_db(&self) -> i64 {
                match self {
                    $t::Single(c) => c.get_db(),
                    $t::Cluster(c) => c.get_db(),
                }
            }
        }
    };
}

forward!(Link);
forward!(BlockingConn);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        assert_eq!(
            seeds("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/").unwrap(),
            ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]
        );
        assert_eq!(
            seeds("redis+cluster://u:p@h1:1,h2:2").unwrap(),
            ["redis://u:p@h1:1", "redis://u:p@h2:2"]
        );
        assert_eq!(seeds("redis+cluster://"), None);
        assert_eq!(seeds("redis://h:1"), None);
    }
}

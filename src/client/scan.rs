//! Scans over the keyspace (`SCAN`, page by page, each call bounded): one server's, or on a Redis Cluster every
//! master's in turn, since each node holds only its slots' keys.

use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};

use super::{Client, Connection, Link};
use crate::error::Result;
use crate::keys;

/// A scan in progress: the nodes to scan (`None`: the one server), the one being scanned and its cursor.
struct Scan {
    nodes: Vec<Option<(String, u16)>>,
    at: usize,
    cursor: u64,
    pattern: String,
    kind: Option<&'static str>,
}

impl Scan {
    /// A scan of keys matching `pattern` (of type `kind`, if given) on every node `conn` reaches.
    async fn new(conn: &mut Connection, pattern: &str, kind: Option<&'static str>) -> Result<Self> {
        let nodes = match &mut conn.conn {
            Link::Single(_) => vec![None],
            Link::Cluster(c) => {
                // The primaries as the cluster client addresses them (its slot map): a `CLUSTER NODES` line can
                // lack the host (a node that never met another reports `:port`).
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match c.route_command(redis::cmd("PING"), all).await? {
                    redis::Value::Map(replies) => replies
                        .iter()
                        .filter_map(|(addr, _)| host_port(crate::wire::bytes(addr)?))
                        .map(Some)
                        .collect(),
                    other => {
                        return Err(crate::Error::Protocol {
                            what: "PING to every primary",
                            detail: format!("{other:?}"),
                        });
                    }
                }
            }
        };
        Ok(Scan {
            nodes,
            at: 0,
            cursor: 0,
            pattern: pattern.to_owned(),
            kind,
        })
    }

    /// The next page of keys (possibly empty), or `None` once every node has been scanned.
    async fn next_page(&mut self, conn: &mut Connection) -> Result<Option<Vec<String>>> {
        let Some(node) = self.nodes.get(self.at) else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(1000);
        if let Some(kind) = self.kind {
            cmd.arg("TYPE").arg(kind);
        }
        let (next, found): (u64, Vec<String>) = match (node, &mut conn.conn) {
            (Some((host, port)), Link::Cluster(c)) => {
                let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                redis::from_redis_value(c.route_command(cmd, to).await?)
                    .map_err(redis::RedisError::from)?
            }
            _ => cmd.query_async(conn).await?,
        };
        if next == 0 {
            self.at += 1;
        }
        self.cursor = next;
        Ok(Some(found))
    }
}

/// `host:port` (the address form of the cluster client's replies) as host and port.
fn host_port(addr: &[u8]) -> Option<(String, u16)> {
    let (host, port) = std::str::from_utf8(addr).ok()?.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// `keys` grouped by hash tag (the text between the first `{` and the next `}`, as Redis Cluster reads it), so
/// each group is in one slot; a key without a tag is a group of its own.
fn by_hash_tag(keys: Vec<String>) -> Vec<Vec<String>> {
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for key in keys {
        let tag = key
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map(|(tag, _)| tag)
            .filter(|tag| !tag.is_empty())
            .map_or_else(|| key.clone(), |tag| format!("{{{tag}}}"));
        groups.entry(tag).or_default().push(key);
    }
    groups.into_values().collect()
}

impl Client {
    /// Unlinks every key matching `pattern`, `SCAN` page by page (each call bounded); returns how many went.
    pub(crate) async fn unlink_matching(&self, pattern: &str) -> Result<u64> {
        let mut conn = self.conn().await?;
        let mut scan = Scan::new(&mut conn, pattern, None).await?;
        let mut removed = 0;
        while let Some(found) = scan.next_page(&mut conn).await? {
            if found.is_empty() {
                continue;
            }
            // A page of a cluster node's keys spans slots: one UNLINK per hash tag there.
            let groups = match conn.conn {
                Link::Single(_) => vec![found],
                Link::Cluster(_) => by_hash_tag(found),
            };
            for keys in groups {
                let gone: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
                removed += gone;
            }
        }
        Ok(removed)
    }

    /// Every queue of this client's namespace that has a ready stream, found by `SCAN` (O(keys in the
    /// database), on every master of a cluster; for operator tools: it also finds queues a foreign producer never
    /// listed, which [`Client::queues`] misses). Sorted by name.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn discover_queues(&self) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        let ns = &self.inner.config.namespace;
        let pattern = format!("{ns}:{{*}}:ready");
        let mut scan = Scan::new(&mut conn, &pattern, Some("stream")).await?;
        let mut names = std::collections::BTreeSet::new();
        while let Some(found) = scan.next_page(&mut conn).await? {
            for key in found {
                let name = key
                    .strip_prefix(ns.as_str())
                    .and_then(|k| k.strip_prefix(":{"))
                    .and_then(|k| k.strip_suffix("}:ready"));
                if let Some(name) = name.filter(|n| keys::validate_name(n).is_ok()) {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_by_their_hash_tag() {
        let keys = [
            "ns:{a}:ready",
            "ns:queues",
            "ns:{b}:x",
            "ns:{a}:index",
            "ns:{}:odd",
        ];
        let groups = by_hash_tag(keys.iter().map(|k| k.to_string()).collect());
        assert_eq!(
            groups,
            [
                vec!["ns:queues".to_owned()],
                vec!["ns:{}:odd".to_owned()],
                vec!["ns:{a}:ready".to_owned(), "ns:{a}:index".to_owned()],
                vec!["ns:{b}:x".to_owned()],
            ]
        );
    }

    #[test]
    fn addresses_split_at_the_last_colon() {
        assert_eq!(
            host_port(b"127.0.0.1:7000"),
            Some(("127.0.0.1".to_owned(), 7000))
        );
        assert_eq!(host_port(b"::1:7000"), Some(("::1".to_owned(), 7000)));
        assert_eq!(host_port(b"nohost"), None);
        assert_eq!(host_port(b"h:port"), None);
    }
}

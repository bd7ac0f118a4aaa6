//! What a shared connection learns of its server when it opens: the version (which picks optional fast paths)
//! and whether it may evict keys.

use crate::error::{Error, Result};

/// The Redis version a shared connection found when it opened (`redis_version` of `INFO server`), which picks
/// optional fast paths: [`ServerVersion::has_xackdel`]. Servers that report an older compatibility version
/// (Valkey reports 7.2.4) get the paths of that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ServerVersion {
    /// Major version (`8` of 8.2.3); 0 when unknown.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Patch version.
    pub patch: u16,
}

impl ServerVersion {
    /// Reads `redis_version:X.Y.Z` from an `INFO` reply; `None` without one.
    pub fn from_info(info: &str) -> Option<Self> {
        let text = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))?
            .trim();
        let mut parts = text.split('.').map(|p| p.parse::<u16>().ok());
        Some(ServerVersion {
            major: parts.next()??,
            minor: parts.next().flatten().unwrap_or(0),
            patch: parts.next().flatten().unwrap_or(0),
        })
    }

    /// Whether the server has `XACKDEL` (Redis 8.2): workers then ack and delete an entry in one command
    /// instead of acking and trimming (SPEC.md, `ack.lua`).
    pub fn has_xackdel(self) -> bool {
        (self.major, self.minor) >= (8, 2)
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.major == 0 {
            f.write_str("unknown")
        } else {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        }
    }
}

/// What a newly opened shared connection learns of its server: its version, and (unless `allow_eviction`)
/// whether it may evict keys, which fails with [`Error::EvictingRedis`]. A user not allowed `INFO` gets a
/// warning instead (the policy cannot be checked) and the version stays unknown.
pub(super) async fn inspect_server(
    conn: &mut super::Link,
    allow_eviction: bool,
) -> Result<ServerVersion> {
    let info = match redis::cmd("INFO")
        .arg("server")
        .arg("memory")
        .query_async::<redis::Value>(conn)
        .await
    {
        // A cluster answers with each node's INFO: the oldest version (and any evicting policy) rules.
        Ok(info) => node_infos(info),
        Err(e) if e.code() == Some("NOPERM") => {
            if !allow_eviction {
                tracing::warn!(
                    "cannot read INFO (ACL): Redis must not evict keys (maxmemory-policy noeviction), or jobs are lost"
                );
            }
            return Ok(ServerVersion::default());
        }
        Err(e) => return Err(e.into()),
    };
    let mut oldest: Option<ServerVersion> = None;
    for node in &info {
        let policy = node
            .lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .map_or("noeviction", str::trim);
        if !allow_eviction && policy != "noeviction" {
            return Err(Error::EvictingRedis {
                policy: policy.to_owned(),
            });
        }
        let v = ServerVersion::from_info(node).unwrap_or_default();
        oldest = Some(oldest.map_or(v, |o| o.min(v)));
    }
    Ok(oldest.unwrap_or_default())
}

/// The INFO text of each node in a reply: one server's text, or a cluster's map of node to text.
fn node_infos(v: redis::Value) -> Vec<String> {
    match v {
        redis::Value::Map(nodes) => nodes
            .into_iter()
            .filter_map(|(_, info)| redis::from_redis_value::<String>(info).ok())
            .collect(),
        other => redis::from_redis_value::<String>(other)
            .into_iter()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_parse_and_pick_fast_paths() {
        let v = |info: &str| ServerVersion::from_info(info);
        let r8 = v("# Server\r\nredis_version:8.2.3\r\nredis_git_sha1:0\r\n").unwrap();
        assert_eq!((r8.major, r8.minor, r8.patch), (8, 2, 3));
        assert!(r8.has_xackdel());
        assert_eq!(r8.to_string(), "8.2.3");
        let r7 = v("redis_version:7.0.15\n").unwrap();
        assert!(!r7.has_xackdel());
        assert!(r7 < r8);
        assert!(v("redis_version:8.10\n").unwrap().has_xackdel());
        assert!(!v("redis_version:8.1.9\n").unwrap().has_xackdel());
        // Valkey reports a 7.2.4 compatibility version (and has no XACKDEL).
        let valkey = v("redis_version:7.2.4\nvalkey_version:8.0.1\n").unwrap();
        assert!(!valkey.has_xackdel());
        assert_eq!(v("no version here"), None);
        assert_eq!(v("redis_version:x.1"), None);
        assert_eq!(ServerVersion::default().to_string(), "unknown");
        assert!(!ServerVersion::default().has_xackdel());
    }
}

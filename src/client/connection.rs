//! The shared command connection, as rill's own code and [`Client::connection`] hand it out.

use super::{Client, Link, ServerVersion, Source};

/// The client's shared command connection ([`Client::connection`]), to whatever the client reaches: one server,
/// the primary its Sentinels name, or a Redis Cluster (commands go to the master that owns their keys' slot). It
/// reconnects by itself after I/O errors (redis-rs `ConnectionManager`, or the cluster client), but a link that
/// stops answering without closing (a half-open connection behind a stuck middlebox or a dropped NAT entry) only
/// ever times out; so a reply that times out retires the connection, and the next call opens a new one. After a
/// failover a write refused by the demoted primary goes once more, to the new one.
#[derive(Clone)]
pub struct Connection {
    pub(super) conn: Link,
    pub(super) generation: u64,
    pub(super) server: ServerVersion,
    pub(super) client: Client,
}

impl Connection {
    /// The server version this connection found when it opened.
    pub(crate) fn server(&self) -> ServerVersion {
        self.server
    }

    /// Whether `r` is a write refused by a replica: a primary demoted by a failover. Nothing was applied (Redis
    /// refuses the command, or a script that may write, before running it), so the call can go again.
    fn refused_by_replica<T>(r: &redis::RedisResult<T>) -> bool {
        matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
    }

    /// After a write refused by a demoted primary: the next connection (behind Sentinels: to the primary they
    /// name now), or `None` if none opens.
    async fn moved(&mut self) -> Option<()> {
        let fresh = self.client.conn().await.ok()?;
        *self = fresh;
        Some(())
    }

    fn check<T>(&self, r: &redis::RedisResult<T>) {
        let Err(e) = r else { return };
        // A primary demoted by a failover answers writes with READONLY; behind Sentinels, a lost link may mean
        // the primary moved: the next connection asks where it is now.
        let sentinel = matches!(self.client.inner.redis, Source::Sentinel(_));
        let moved = e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            || (sentinel
                && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()));
        if e.is_timeout() || moved {
            self.client.retire(self.generation, e);
        }
    }
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let r = self.conn.req_packed_command(cmd).await;
            self.check(&r);
            if Self::refused_by_replica(&r) && self.moved().await.is_some() {
                let again = self.conn.req_packed_command(cmd).await;
                self.check(&again);
                return again;
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let r = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.check(&r);
            if Self::refused_by_replica(&r) && self.moved().await.is_some() {
                let again = self.conn.req_packed_commands(pipeline, offset, count).await;
                self.check(&again);
                return again;
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("generation", &self.generation)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

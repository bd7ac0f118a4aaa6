//! The shared client: one per process, cloned into every queue and worker. It owns the one multiplexed
//! command connection (reconnecting, opened lazily) and opens dedicated connections for blocking readers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};

use crate::error::{Error, Result};
use crate::keys::{self, QueueKeys};

/// Connection and limit settings shared by everything built from a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// First key segment (default `rill`). Lets several independent deployments share one Redis.
    pub namespace: String,
    /// Time allowed to open a connection (default 2 s).
    pub connect_timeout: Duration,
    /// Time allowed for one command's reply on the shared connection (default 5 s).
    pub response_timeout: Duration,
    /// Largest encoded payload accepted by producers and workers (default 1 MiB).
    pub max_payload_bytes: usize,
    /// Run even when Redis may evict keys under memory pressure (`maxmemory-policy` other than `noeviction`),
    /// which silently loses jobs. Default false: every operation fails with [`Error::EvictingRedis`] instead.
    pub allow_eviction: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            namespace: keys::DEFAULT_NAMESPACE.to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            max_payload_bytes: 1 << 20,
            allow_eviction: false,
        }
    }
}

/// Handle to one Redis deployment. Cheap to clone; all clones share one command connection.
///
/// ```no_run
/// # async fn f() -> rill::Result<()> {
/// let client = rill::Client::new("redis://127.0.0.1:6379")?; // no I/O yet
/// client.connect().await?; // optional: fail fast at start-up
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    redis: redis::Client,
    url: String,
    config: ClientConfig,
    conn: Mutex<Conn>,
    /// Queues this process has added to `<ns>:queues`, so each costs one `SADD` per process, not per handle.
    listed: Mutex<std::collections::HashSet<String>>,
    /// Shared connections opened so far (each open gets the next number).
    generations: AtomicU64,
}

enum Conn {
    Idle,
    /// The shared connection and its generation (which open it was).
    Open(ConnectionManager, u64),
    Closed,
}

/// Fails with [`Error::EvictingRedis`] if the server may evict keys (`maxmemory-policy` other than
/// `noeviction`). A user not allowed `INFO` gets a warning instead: the policy cannot be checked.
async fn refuse_eviction(conn: &mut ConnectionManager) -> Result<()> {
    let info: String = match redis::cmd("INFO").arg("memory").query_async(conn).await {
        Ok(info) => info,
        Err(e) if e.code() == Some("NOPERM") => {
            tracing::warn!(
                "cannot read INFO memory (ACL): Redis must not evict keys (maxmemory-policy noeviction), or jobs are lost"
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let policy = info
        .lines()
        .find_map(|l| l.strip_prefix("maxmemory_policy:"))
        .map_or("noeviction", str::trim);
    if policy == "noeviction" {
        Ok(())
    } else {
        Err(Error::EvictingRedis {
            policy: policy.to_owned(),
        })
    }
}

/// The shared command connection as handed out by [`Client::conn`]. It reconnects by itself after I/O errors
/// (redis-rs `ConnectionManager`), but a link that stops answering without closing (a half-open connection
/// behind a stuck middlebox or a dropped NAT entry) only ever times out; so a reply that times out retires the
/// connection, and the next call opens a new one.
#[derive(Clone)]
pub(crate) struct SharedConn {
    conn: ConnectionManager,
    generation: u64,
    client: Client,
}

impl SharedConn {
    fn check<T>(&self, r: &redis::RedisResult<T>) {
        if let Err(e) = r
            && e.is_timeout()
        {
            self.client.retire(self.generation, e);
        }
    }
}

impl redis::aio::ConnectionLike for SharedConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let r = self.conn.req_packed_command(cmd).await;
            self.check(&r);
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
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.config.namespace)
            .finish()
    }
}

impl Client {
    /// A client for `url` (`redis://host:port/db`, `rediss://`, `redis+unix:///path`) with default settings.
    /// Does no I/O.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if the URL does not parse.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_config(url, ClientConfig::default())
    }

    /// Like [`Client::new`] with explicit settings.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], or [`Error::InvalidName`] for a bad namespace.
    pub fn with_config(url: &str, config: ClientConfig) -> Result<Self> {
        keys::validate_name(&config.namespace)?;
        let redis = redis::Client::open(url).map_err(|source| Error::InvalidUrl {
            url: url.to_owned(),
            source,
        })?;
        Ok(Client {
            inner: Arc::new(Inner {
                redis,
                url: url.to_owned(),
                config,
                conn: Mutex::new(Conn::Idle),
                listed: Mutex::default(),
                generations: AtomicU64::new(0),
            }),
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The queues of this client's namespace that producers or workers have used, sorted by name (SPEC.md,
    /// `<ns>:queues`; a queue fed only by a foreign client that skips the `SADD` is not listed).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn queues(&self) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::queues_key(&self.inner.config.namespace)?)
            .query_async(&mut conn)
            .await?;
        names.sort();
        Ok(names)
    }

    /// Adds `keys.queue` to the namespace's queue set once per process (SPEC.md, `<ns>:queues`).
    pub(crate) async fn list_queue(&self, conn: &mut SharedConn, keys: &QueueKeys) -> Result<()> {
        if self
            .inner
            .listed
            .lock()
            .expect("client lock")
            .contains(&keys.queue)
        {
            return Ok(());
        }
        let _: () = redis::cmd("SADD")
            .arg(&keys.queues)
            .arg(&keys.queue)
            .query_async(conn)
            .await?;
        self.inner
            .listed
            .lock()
            .expect("client lock")
            .insert(keys.queue.clone());
        Ok(())
    }

    /// Forgets that `keys.queue` was listed, so the next [`Client::list_queue`] adds it again (after Redis lost
    /// its data).
    pub(crate) fn forget_listed(&self, keys: &QueueKeys) {
        self.inner
            .listed
            .lock()
            .expect("client lock")
            .remove(&keys.queue);
    }

    /// The keys of queue `name` under this client's namespace.
    ///
    /// # Errors
    /// [`Error::InvalidName`].
    pub fn keys(&self, queue: &str) -> Result<QueueKeys> {
        QueueKeys::new(&self.inner.config.namespace, queue)
    }

    /// Opens the shared connection now (otherwise the first command does), also after [`Client::close`].
    /// Idempotent.
    ///
    /// # Errors
    /// [`Error::Redis`] if Redis cannot be reached; [`Error::EvictingRedis`] if it may evict keys.
    pub async fn connect(&self) -> Result<()> {
        {
            let mut slot = self.inner.conn.lock().expect("client lock");
            if matches!(*slot, Conn::Closed) {
                *slot = Conn::Idle;
            }
        }
        let mut conn = self.conn().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Whether Redis answers a PING on the shared connection right now (never opens one).
    pub async fn is_connected(&self) -> bool {
        let conn = match &*self.inner.conn.lock().expect("client lock") {
            Conn::Open(c, _) => c.clone(),
            _ => return false,
        };
        let mut conn = conn;
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<()>(&mut conn);
        matches!(
            tokio::time::timeout(self.inner.config.response_timeout, ping).await,
            Ok(Ok(()))
        )
    }

    /// Closes the shared connection. Idempotent; afterwards every operation returns [`Error::Closed`] until
    /// [`Client::connect`] opens it again. Workers built from this client stop claiming at their next read and
    /// shut down.
    pub fn close(&self) {
        *self.inner.conn.lock().expect("client lock") = Conn::Closed;
    }

    /// Whether [`Client::close`] was called.
    pub fn is_closed(&self) -> bool {
        matches!(*self.inner.conn.lock().expect("client lock"), Conn::Closed)
    }

    /// Drops the shared connection of `generation` (if it is still the current one) after `error`, so the next
    /// call opens a new one.
    fn retire(&self, generation: u64, error: &redis::RedisError) {
        let mut slot = self.inner.conn.lock().expect("client lock");
        if matches!(&*slot, Conn::Open(_, g) if *g == generation) {
            tracing::warn!(%error, "shared Redis connection stopped answering: opening a new one");
            *slot = Conn::Idle;
        }
    }

    /// The shared command connection, opened on first use. It reconnects by itself after errors, and is replaced
    /// when a reply times out.
    pub(crate) async fn conn(&self) -> Result<SharedConn> {
        let shared = |conn: &ConnectionManager, generation: u64| SharedConn {
            conn: conn.clone(),
            generation,
            client: self.clone(),
        };
        match &*self.inner.conn.lock().expect("client lock") {
            Conn::Open(c, g) => return Ok(shared(c, *g)),
            Conn::Closed => return Err(Error::Closed),
            Conn::Idle => {}
        }
        let cfg = &self.inner.config;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout))
            .set_response_timeout(Some(cfg.response_timeout))
            .set_number_of_retries(4)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let mut manager =
            ConnectionManager::new_with_config(self.inner.redis.clone(), manager_config).await?;
        if !cfg.allow_eviction {
            refuse_eviction(&mut manager).await?;
        }
        let mut slot = self.inner.conn.lock().expect("client lock");
        match &*slot {
            // Another task won the race: share its connection.
            Conn::Open(c, g) => Ok(shared(c, *g)),
            Conn::Closed => Err(Error::Closed),
            Conn::Idle => {
                let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
                *slot = Conn::Open(manager.clone(), generation);
                Ok(shared(&manager, generation))
            }
        }
    }

    /// A dedicated connection for a loop that blocks for up to `block`: its response timeout exceeds the block
    /// time, so the client never gives up on a read the server is still serving (a phantom delivery).
    pub(crate) async fn blocking_conn(&self, block: Duration) -> Result<MultiplexedConnection> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.config.connect_timeout))
            .set_response_timeout(Some(block + self.inner.config.response_timeout));
        Ok(self
            .inner
            .redis
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_does_no_io_and_validates() {
        let c = Client::new("redis://127.0.0.1:1").unwrap();
        assert!(!c.is_closed());
        assert!(matches!(
            Client::new("nope://x"),
            Err(Error::InvalidUrl { .. })
        ));
        let bad = ClientConfig {
            namespace: "a:b".into(),
            ..ClientConfig::default()
        };
        assert!(matches!(
            Client::with_config("redis://127.0.0.1", bad),
            Err(Error::InvalidName { .. })
        ));
        assert!(c.queue::<u32>("bad name").is_err());
        c.close();
        c.close();
        assert!(c.is_closed());
    }
}

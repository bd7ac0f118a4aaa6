//! The shared client: one per process, cloned into every queue and worker. It owns the one multiplexed
//! command connection (reconnecting, opened lazily) and opens dedicated connections for blocking readers.

mod connection;
mod link;
mod scan;
mod sentinel;
mod server;
mod tls;

pub use connection::Connection;

pub use server::ServerVersion;
use server::inspect_server;

pub use tls::Tls;
use tls::open;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::{Error, Result};
use crate::keys::{self, QueueKeys};
use crate::partition::Partitions;

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
    /// Certificates for a `rediss://` URL (default: trust the system's roots, no client certificate).
    pub tls: Tls,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            namespace: keys::DEFAULT_NAMESPACE.to_owned(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            max_payload_bytes: 1 << 20,
            allow_eviction: false,
            tls: Tls::default(),
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
    redis: Source,
    url: String,
    config: ClientConfig,
    conn: Mutex<Conn>,
    /// Queues this process has added to `<ns>:queues`, so each costs one `SADD` per process, not per handle.
    listed: Mutex<std::collections::HashSet<String>>,
    /// Each queue's partitions (SPEC §2a) as this process first read them: they never change once set, so each
    /// costs one read per process, not per handle.
    partitions: Mutex<HashMap<String, Option<Arc<Partitions>>>>,
    /// Shared connections opened so far (each open gets the next number).
    generations: AtomicU64,
    /// The client this one was split from ([`Client::split`]): closing that one closes this one too.
    parent: Option<Client>,
}

pub(crate) use link::{BlockingConn, Link};

/// Where connections go: one server, the primary the Sentinels name at the time, or a Redis Cluster.
enum Source {
    Direct(redis::Client),
    Sentinel(sentinel::Sentinel),
    Cluster(redis::cluster::ClusterClient),
}

impl Source {
    async fn client(&self) -> Result<redis::Client> {
        match self {
            Source::Direct(c) => Ok(c.clone()),
            Source::Sentinel(s) => s.primary().await,
            Source::Cluster(_) => Err(Error::InvalidOption {
                option: "redis",
                reason: "a cluster has no single server: use the cluster's nodes",
            }),
        }
    }

    /// A connection of the cluster's whose replies may take up to `response` (None: not a cluster).
    async fn cluster_conn(
        &self,
        connect: Duration,
        response: Duration,
    ) -> Option<Result<redis::cluster_async::ClusterConnection>> {
        let Source::Cluster(c) = self else {
            return None;
        };
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(connect)
            .set_response_timeout(response);
        Some(
            c.get_async_connection_with_config(config)
                .await
                .map_err(Error::from),
        )
    }
}

enum Conn {
    Idle,
    Open(Open),
    Closed,
}

/// The open shared connection.
#[derive(Clone)]
struct Open {
    conn: Link,
    /// Which open this was.
    generation: u64,
    /// The server version found when it opened.
    server: ServerVersion,
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
    /// The URL this client connects to.
    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    /// A client for `url` (`redis://host:port/db`, `rediss://`, `redis+unix:///path`, or
    /// `redis+sentinel://host:26379[,host:port...]/service[/db]`: the primary that Redis Sentinels monitor under
    /// that service name, followed across failovers) with default settings. Does no I/O.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if the URL does not parse.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_config(url, ClientConfig::default())
    }

    /// Like [`Client::new`] with explicit settings.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] (also for a `rediss://` URL in a build without the `tls` feature),
    /// [`Error::InvalidOption`] for TLS settings with a URL that is not `rediss://` or unreadable PEM, or
    /// [`Error::InvalidName`] for a bad namespace.
    pub fn with_config(url: &str, config: ClientConfig) -> Result<Self> {
        Self::build(url, config, None)
    }

    fn build(url: &str, config: ClientConfig, parent: Option<Client>) -> Result<Self> {
        keys::validate_name(&config.namespace)?;
        let redis = if url.starts_with(link::SCHEME) {
            if config.tls.is_set() {
                return Err(Error::InvalidOption {
                    option: "tls",
                    reason: "TLS to a cluster is not supported yet",
                });
            }
            let seeds = link::seeds(url).ok_or_else(|| Error::InvalidUrl {
                url: url.to_owned(),
                source: redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "a cluster URL names its nodes: redis+cluster://host:port[,host:port...]",
                )),
            })?;
            // Timeouts are set per connection (`Source::cluster_conn`): blocking ones wait longer.
            let cluster = redis::cluster::ClusterClient::builder(seeds)
                .build()
                .map_err(|source| Error::InvalidUrl {
                    url: url.to_owned(),
                    source,
                })?;
            Source::Cluster(cluster)
        } else if url.starts_with(sentinel::SCHEME) {
            if config.tls.is_set() {
                return Err(Error::InvalidOption {
                    option: "tls",
                    reason: "TLS to the primary behind Sentinels is not supported yet",
                });
            }
            Source::Sentinel(sentinel::Sentinel::new(url)?)
        } else {
            Source::Direct(open(url, &config.tls)?)
        };
        Ok(Client {
            inner: Arc::new(Inner {
                redis,
                url: url.to_owned(),
                config,
                conn: Mutex::new(Conn::Idle),
                listed: Mutex::default(),
                partitions: Mutex::default(),
                generations: AtomicU64::new(0),
                parent,
            }),
        })
    }

    /// A client to the same Redis with the same settings but connections of its own (opened on first use, on
    /// the runtime that uses them), closed when this one is: a worker on a thread of its own uses one, so no
    /// reply it waits for has to cross from another runtime's threads.
    pub(crate) fn split(&self) -> Result<Client> {
        Client::build(self.url(), self.config().clone(), Some(self.clone()))
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Deletes every key of this client's namespace (all its queues, their jobs, records and registries, its
    /// topics), by `SCAN` and `UNLINK` in batches; returns how many keys went. Meant for throwaway namespaces
    /// (tests, demos, benchmarks): workers still running in it recreate their keys.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn remove_namespace(&self) -> Result<u64> {
        let pattern = keys::namespace_pattern(&self.inner.config.namespace)?;
        self.unlink_matching(&pattern).await
    }

    /// A redis-rs client for the server this client uses now (same URL and TLS settings; behind Sentinels, the
    /// primary they name at the time of the call), for connections of your own. On a cluster there is no one
    /// server: use [`Client::connection`].
    ///
    /// # Errors
    /// With Sentinels: Redis errors asking them; on a cluster, [`Error::InvalidOption`].
    pub async fn redis(&self) -> Result<redis::Client> {
        self.inner.redis.client().await
    }

    /// This client's shared command connection, for commands of your own beside rill's (records of a job's side
    /// effects, say), whatever the deployment: one server, Sentinels, or a cluster. It is multiplexed with rill's
    /// own calls, so send no blocking commands on it (`BLPOP`, `XREAD BLOCK`): they would hold up every caller.
    ///
    /// ```no_run
    /// # async fn f(client: rill::Client) -> rill::Result<()> {
    /// use redis::AsyncCommands;
    /// let mut conn = client.connection().await?;
    /// let _: () = conn.rpush("audit", "sent").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Connecting ([`Error::Closed`] after [`Client::close`]).
    pub async fn connection(&self) -> Result<Connection> {
        self.conn().await
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
    pub(crate) async fn list_queue(&self, conn: &mut Connection, keys: &QueueKeys) -> Result<()> {
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

    /// The partitions of the queue whose keys are `keys` (read from its settings the first time this process asks;
    /// `None`: not partitioned).
    pub(crate) async fn partitions_of(&self, keys: &QueueKeys) -> Result<Option<Arc<Partitions>>> {
        if let Some(p) = self
            .inner
            .partitions
            .lock()
            .expect("client lock")
            .get(&keys.queue)
        {
            return Ok(p.clone());
        }
        let p = self.read_partitions(keys).await?.map(Arc::new);
        self.remember_partitions(keys, p.clone());
        Ok(p)
    }

    /// The partitions stored in the settings of the queue whose keys are `keys`, read now.
    pub(crate) async fn read_partitions(&self, keys: &QueueKeys) -> Result<Option<Partitions>> {
        let (count, tags): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&keys.config)
            .arg("partitions")
            .arg("partition_tags")
            .query_async(&mut self.conn().await?)
            .await?;
        Partitions::from_config(&keys.queue, count.as_deref(), tags.as_deref())
    }

    /// Records what a queue's partitions are now (set, or removed with the queue).
    pub(crate) fn remember_partitions(&self, keys: &QueueKeys, p: Option<Arc<Partitions>>) {
        self.inner
            .partitions
            .lock()
            .expect("client lock")
            .insert(keys.queue.clone(), p);
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

    /// The version of the Redis server behind the shared connection, read when it opened (opens it if needed).
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn server_version(&self) -> Result<ServerVersion> {
        Ok(self.conn().await?.server())
    }

    /// Whether Redis answers a PING on the shared connection right now (never opens one).
    pub async fn is_connected(&self) -> bool {
        let conn = match &*self.inner.conn.lock().expect("client lock") {
            Conn::Open(open) => open.conn.clone(),
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

    /// Whether [`Client::close`] was called (on this client, or on the one it was split from).
    pub fn is_closed(&self) -> bool {
        matches!(*self.inner.conn.lock().expect("client lock"), Conn::Closed)
            || self.inner.parent.as_ref().is_some_and(Client::is_closed)
    }

    /// Drops the shared connection of `generation` (if it is still the current one) after `error`, so the next
    /// call opens a new one.
    fn retire(&self, generation: u64, error: &redis::RedisError) {
        let mut slot = self.inner.conn.lock().expect("client lock");
        if matches!(&*slot, Conn::Open(open) if open.generation == generation) {
            tracing::warn!(%error, "shared Redis connection stopped answering: opening a new one");
            *slot = Conn::Idle;
        }
    }

    /// The shared command connection, opened on first use. It reconnects by itself after errors, and is replaced
    /// when a reply times out.
    pub(crate) async fn conn(&self) -> Result<Connection> {
        let shared = |open: &Open| Connection {
            conn: open.conn.clone(),
            generation: open.generation,
            server: open.server,
            client: self.clone(),
        };
        match &*self.inner.conn.lock().expect("client lock") {
            Conn::Open(open) => return Ok(shared(open)),
            Conn::Closed => return Err(Error::Closed),
            Conn::Idle => {}
        }
        let cfg = &self.inner.config;
        let mut manager = match self
            .inner
            .redis
            .cluster_conn(cfg.connect_timeout, cfg.response_timeout)
            .await
        {
            Some(cluster) => Link::Cluster(cluster?),
            None => {
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(cfg.connect_timeout))
                    .set_response_timeout(Some(cfg.response_timeout))
                    .set_number_of_retries(4)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1));
                Link::Single(
                    ConnectionManager::new_with_config(
                        self.inner.redis.client().await?,
                        manager_config,
                    )
                    .await?,
                )
            }
        };
        let server = inspect_server(&mut manager, cfg.allow_eviction).await?;
        let mut slot = self.inner.conn.lock().expect("client lock");
        match &*slot {
            // Another task won the race: share its connection.
            Conn::Open(open) => Ok(shared(open)),
            Conn::Closed => Err(Error::Closed),
            Conn::Idle => {
                let open = Open {
                    conn: manager,
                    generation: self.inner.generations.fetch_add(1, Ordering::Relaxed),
                    server,
                };
                let conn = shared(&open);
                *slot = Conn::Open(open);
                Ok(conn)
            }
        }
    }

    /// A dedicated connection for a loop that blocks for up to `block`: its response timeout exceeds the block
    /// time, so the client never gives up on a read the server is still serving (a phantom delivery).
    pub(crate) async fn blocking_conn(&self, block: Duration) -> Result<BlockingConn> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let connect = self.inner.config.connect_timeout;
        let response = block + self.inner.config.response_timeout;
        if let Some(cluster) = self.inner.redis.cluster_conn(connect, response).await {
            return Ok(BlockingConn::Cluster(cluster?));
        }
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(response));
        Ok(BlockingConn::Single(
            self.inner
                .redis
                .client()
                .await?
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?,
        ))
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
        assert!(Client::new("redis+sentinel://127.0.0.1:1,127.0.0.1:2/main").is_ok());
        let tls = ClientConfig {
            tls: Tls {
                insecure: true,
                ..Tls::default()
            },
            ..ClientConfig::default()
        };
        assert!(matches!(
            Client::with_config("redis+sentinel://127.0.0.1:1/main", tls),
            Err(Error::InvalidOption { .. })
        ));
        c.close();
        c.close();
        assert!(c.is_closed());
    }
}

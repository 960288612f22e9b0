//! Real Redis for the store tests: `redis-server` child processes on
//! ephemeral loopback ports, each with its own temporary directory and no
//! persistence, and a three-master Redis Cluster built from them.
//!
//! Tests can take Redis away ([`RedisServer::stop`], then `restart`),
//! freeze it so that connections stay open and nothing answers
//! ([`RedisServer::freeze`], then `thaw`), drop its subscribers, and read
//! back everything stored ([`RedisServer::dump`]) to check that no secret
//! is kept in clear. The harness talks to Redis through `redis-cli`, not
//! through the crate's client, so it checks the store from the outside.
//!
//! `redis-server` and `redis-cli` come from the Debian packages
//! redis-server and redis-tools (Redis 7+: cluster tests set
//! `cluster-port`). Without them the tests fail, saying what to install.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const INSTALL_HINT: &str = "the Redis tests need redis-server and redis-cli (Redis 7+) on PATH: run ./scripts/test as root (it installs redis-server and redis-tools), or apt-get install -y redis-server redis-tools";

/// How long a starting server (or a forming cluster) may take.
const STARTUP: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// `None` after [`RedisServer::stop`].
    child: Option<Child>,
    /// Redis's `--dir` (cluster nodes keep `nodes.conf` here) and `redis.log`.
    dir: tempfile::TempDir,
    /// Added to every start, e.g. the cluster options.
    extra_args: Vec<String>,
}

impl RedisServer {
    /// A standalone server on a free loopback port, answering PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Retries on a fresh port when Redis exits at startup: the port picked
    /// may have been taken between our probe and Redis's bind.
    pub fn start_with(extra_args: &[String]) -> Self {
        let mut server = Self {
            port: 0,
            child: None,
            dir: tempfile::tempdir().expect("temp dir for redis"),
            extra_args: extra_args.to_vec(),
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => last_error = log,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): Redis goes away without a goodbye.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal(&child, "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port, empty (nothing
    /// was persisted; a cluster node rejoins from its `nodes.conf`).
    pub fn restart(&mut self) {
        self.stop();
        // The port was ours a moment ago; retry briefly in case the kernel
        // is slow to release it.
        let mut last_error = String::new();
        for _ in 0..5 {
            match self.spawn() {
                Ok(()) => return,
                Err(log) => last_error = log,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "redis-server did not restart on port {}: {last_error}",
            self.port
        );
    }

    /// SIGSTOP: connections stay open (new ones are even accepted by the
    /// kernel), but nothing answers until [`RedisServer::thaw`].
    pub fn freeze(&self) {
        signal(self.child(), "STOP").expect("kill -STOP redis-server");
    }

    pub fn thaw(&self) {
        signal(self.child(), "CONT").expect("kill -CONT redis-server");
    }

    /// `redis-cli -p PORT ARGS…`'s output, trimmed. Error replies are
    /// output too (`ERR …`); only a failure to connect panics.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// The ids of the connections signed in as `user`: a connection that
    /// broke and was made again has a new id.
    pub fn clients_of(&self, user: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|line| line.split(' ').any(|f| f == format!("user={user}")))
            .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_owned)
            .collect();
        ids.sort();
        ids
    }

    /// Every key as (key, type, value as text), for "no secret in Redis"
    /// checks. Streams are read with XRANGE; any other type falls back to
    /// DUMP, whose RDB payload may be LZF-compressed, so a check on it
    /// proves little.
    pub fn dump(&self) -> Vec<(String, String, String)> {
        let keys = self.cli(&["--raw", "--scan"]);
        let mut dump: Vec<_> = keys
            .lines()
            .filter(|key| !key.is_empty())
            .map(|key| {
                let kind = self.cli(&["--raw", "TYPE", key]);
                let value = match kind.as_str() {
                    "string" => self.cli(&["--raw", "GET", key]),
                    "hash" => self.cli(&["--raw", "HGETALL", key]),
                    "list" => self.cli(&["--raw", "LRANGE", key, "0", "-1"]),
                    "set" => self.cli(&["--raw", "SMEMBERS", key]),
                    "zset" => self.cli(&["--raw", "ZRANGE", key, "0", "-1", "WITHSCORES"]),
                    "stream" => self.cli(&["--raw", "XRANGE", key, "-", "+"]),
                    _ => self.cli(&["--raw", "DUMP", key]),
                };
                (key.to_owned(), kind, value)
            })
            .collect();
        dump.sort();
        dump
    }

    /// `CLIENT KILL TYPE pubsub`: drops every subscriber connection and
    /// returns how many there were.
    pub fn kill_pubsub_clients(&self) -> u32 {
        let killed = self.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        killed
            .parse()
            .unwrap_or_else(|_| panic!("CLIENT KILL TYPE pubsub answered {killed:?}"))
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("redis-server is stopped")
    }

    /// Runs redis-server on `self.port` until it answers PING; on failure
    /// kills it and returns its log.
    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("redis.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("redis log file");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("redis log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server: {e}; {INSTALL_HINT}"));
        let deadline = Instant::now() + STARTUP;
        let error = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break format!("it exited ({status})");
            }
            if ping(self.port, Duration::from_millis(500)) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                break format!("no PONG within {STARTUP:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err(format!("port {}: {error}; log:\n{}", self.port, log.trim()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server that also speaks TLS, on a second port, with a certificate for
/// 127.0.0.1 from a CA made for the test (`crate::pki`). The plain port
/// stays for the harness's own checks.
#[derive(Debug)]
pub struct TlsRedis {
    pub server: RedisServer,
    /// `rediss://127.0.0.1:PORT`.
    pub url: String,
    /// The test CA's certificate (PEM), for `store.redis.ca_cert`.
    pub ca_file: std::path::PathBuf,
    _pki: crate::pki::Pki,
}

impl TlsRedis {
    pub fn start() -> Self {
        let pki = crate::pki::Pki::new();
        let tls_port = free_port();
        let path = |name: &str| pki.path(name).to_string_lossy().into_owned();
        let server = RedisServer::start_with(&[
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            path("server.pem"),
            "--tls-key-file".to_owned(),
            path("server.key"),
            "--tls-ca-cert-file".to_owned(),
            path("ca.pem"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ]);
        Self {
            server,
            url: format!("rediss://127.0.0.1:{tls_port}"),
            ca_file: pki.path("ca.pem"),
            _pki: pki,
        }
    }
}

/// A Redis Cluster of three masters, every slot assigned; with
/// [`RedisCluster::with_replicas`], each master has a replica that takes
/// over when it fails.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    node_timeout: Duration,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(0, Duration::from_secs(5))
    }

    /// Three masters and a replica each; a master unanswered for
    /// `node_timeout` is failed over.
    pub fn with_replicas(node_timeout: Duration) -> Self {
        Self::start_with(1, node_timeout)
    }

    fn start_with(replicas: usize, node_timeout: Duration) -> Self {
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| cluster_node(node_timeout).0)
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let replicas_each = replicas.to_string();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", &replicas_each, "--cluster-yes"]);
        redis_cli(&create);
        let cluster = Self {
            nodes,
            node_timeout,
        };
        cluster.wait_until_ok();
        if replicas > 0 {
            wait_for(STARTUP, "every replica to sync", || {
                cluster
                    .nodes
                    .iter()
                    .filter(|node| node.cli(&["ROLE"]).starts_with("slave"))
                    .all(|node| {
                        node.cli(&["INFO", "replication"])
                            .contains("master_link_status:up")
                    })
            });
        }
        cluster
    }

    /// Adds an empty master, serving no slot, as a scale-out does before
    /// its reshard; its index.
    pub fn add_node(&mut self) -> usize {
        let (node, bus_port) = cluster_node(self.node_timeout);
        let meet = self.nodes[0].cli(&[
            "CLUSTER",
            "MEET",
            "127.0.0.1",
            &node.port.to_string(),
            &bus_port.to_string(),
        ]);
        assert_eq!(meet, "OK", "CLUSTER MEET");
        self.nodes.push(node);
        let count = self.nodes.len();
        for node in &self.nodes {
            wait_for(STARTUP, "every node to know the new one", || {
                node.cli(&["CLUSTER", "NODES"]).lines().count() == count
            });
        }
        self.wait_until_ok();
        count - 1
    }

    /// Waits until every live node says `cluster_state:ok`.
    pub fn wait_until_ok(&self) {
        for node in self.nodes.iter().filter(|node| node.child.is_some()) {
            wait_for(STARTUP * 3, "cluster_state:ok", || {
                node.cli(&["CLUSTER", "INFO"])
                    .lines()
                    .any(|line| line.trim() == "cluster_state:ok")
            });
        }
    }

    /// The index of the live master holding `slot`'s keys.
    pub fn master_of(&self, slot: u16) -> usize {
        self.nodes
            .iter()
            .position(|node| {
                node.child.is_some()
                    && node.cli(&["ROLE"]).starts_with("master")
                    && node.cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]) != "0"
            })
            .expect("a master holds the slot's keys")
    }

    /// Waits until node `node`'s replica has acknowledged every write it
    /// took.
    pub fn replicate(&self, node: usize) {
        let acknowledged = self.nodes[node].cli(&["WAIT", "1", "5000"]);
        assert_eq!(acknowledged, "1", "the replica acknowledged the writes");
    }

    /// SIGKILLs node `node`.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].stop();
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The hash slot of `key`, and the index of the node serving it.
    pub fn slot_of(&self, key: &str) -> (u16, usize) {
        let slot: u16 = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("a slot number");
        let owner = self
            .nodes
            .iter()
            .position(|node| node.cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]) != "0")
            .expect("a node holds the slot's keys");
        (slot, owner)
    }

    /// Starts moving `slot` from node `from` to node `to`, as
    /// `redis-cli --cluster reshard` does: the target imports, the source
    /// migrates, and the slot's keys move. `keys` limits which (`None`:
    /// all). The source then answers ASK for the keys it no longer has.
    pub fn migrate(&self, slot: u16, from: usize, to: usize, keys: Option<&[String]>) {
        let slot = slot.to_string();
        let id = |node: usize| self.nodes[node].cli(&["CLUSTER", "MYID"]);
        let (from_id, to_id) = (id(from), id(to));
        let set = |node: usize, state: &str, other: &str| {
            let answer = self.nodes[node].cli(&["CLUSTER", "SETSLOT", &slot, state, other]);
            assert_eq!(answer, "OK", "CLUSTER SETSLOT {slot} {state}");
        };
        set(to, "IMPORTING", &from_id);
        set(from, "MIGRATING", &to_id);
        let all = self.nodes[from]
            .cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "1000"])
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        let moving = keys.map_or(all, <[String]>::to_vec);
        let port = self.nodes[to].port.to_string();
        let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        migrate.extend(moving.iter().map(String::as_str));
        assert_eq!(self.nodes[from].cli(&migrate), "OK", "MIGRATE {moving:?}");
    }

    /// How many `kind` errors (`TRYAGAIN`, `ASK`, `MOVED`) node `node`
    /// has answered.
    pub fn errors(&self, node: usize, kind: &str) -> u64 {
        let stats = self.nodes[node].cli(&["INFO", "errorstats"]);
        let prefix = format!("errorstat_{kind}:count=");
        stats
            .lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix(&prefix)?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Ends a migration: every node learns that `slot` is served by node
    /// `to`. A client with the old map now gets MOVED from the source.
    pub fn assign(&self, slot: u16, to: usize) {
        let to_id = self.nodes[to].cli(&["CLUSTER", "MYID"]);
        let slot = slot.to_string();
        for node in &self.nodes {
            let answer = node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
            assert_eq!(answer, "OK", "CLUSTER SETSLOT {slot} NODE");
        }
    }

    /// Every live node's [`RedisServer::dump`] (a replica's repeats its
    /// master's).
    pub fn dump(&self) -> Vec<(String, String, String)> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .flat_map(RedisServer::dump)
            .collect()
    }
}

/// The name the sentinels monitor the primary by.
pub const SENTINEL_MASTER: &str = "verifyd";

/// A primary and its replica, in sync.
pub fn replicated() -> [RedisServer; 2] {
    let primary = RedisServer::start();
    let replica = RedisServer::start_with(&[
        "--replicaof".to_owned(),
        "127.0.0.1".to_owned(),
        primary.port.to_string(),
    ]);
    // A full resync (the old primary rejoining as a replica) starts at
    // once rather than after Redis's 5 s wait for more replicas.
    for node in [&primary, &replica] {
        node.cli(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    }
    wait_for(STARTUP, "the replica to sync", || {
        replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    [primary, replica]
}

/// One primary, one replica and three sentinels (quorum two), the
/// topology the usual Helm charts run: the sentinels call the primary
/// down after a second without an answer and promote the replica.
#[derive(Debug)]
pub struct RedisSentinels {
    pub nodes: [RedisServer; 2],
    sentinels: Vec<Sentinel>,
}

#[derive(Debug)]
struct Sentinel {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisSentinels {
    pub fn start() -> Self {
        let [primary, replica] = replicated();
        let sentinels = (0..3).map(|_| Sentinel::start(primary.port)).collect();
        let deployment = Self {
            nodes: [primary, replica],
            sentinels,
        };
        // Ready for a failover: every sentinel knowing the replica and the
        // two other sentinels.
        for sentinel in &deployment.sentinels {
            wait_for(STARTUP, "the sentinels to find each other", || {
                let master = sentinel.cli(&["SENTINEL", "MASTER", SENTINEL_MASTER]);
                let field = |name: &str| {
                    let mut lines = master.lines();
                    lines.find(|line| *line == name)?;
                    lines.next().map(str::to_owned)
                };
                field("num-other-sentinels").as_deref() == Some("2")
                    && field("num-slaves").as_deref() == Some("1")
            });
        }
        deployment
    }

    /// `redis://127.0.0.1:PORT` of each sentinel.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect()
    }

    /// Runs `redis-cli ARGS…` on every sentinel; their answers.
    pub fn on_each_sentinel(&self, args: &[&str]) -> Vec<String> {
        self.sentinels.iter().map(|s| s.cli(args)).collect()
    }

    /// The port of the node the sentinels name primary now.
    pub fn primary_port(&self) -> u16 {
        let answer =
            self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER]);
        answer
            .lines()
            .nth(1)
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the sentinels name no primary: {answer:?}"))
    }

    /// The node the sentinels name primary now.
    pub fn primary(&mut self) -> &mut RedisServer {
        let port = self.primary_port();
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("the primary is one of the nodes")
    }

    /// Waits until every write the primary took has reached the replica.
    pub fn replicate(&mut self) {
        let acknowledged = self.primary().cli(&["WAIT", "1", "5000"]);
        assert_eq!(acknowledged, "1", "the replica acknowledged the writes");
    }

    /// Waits until the sentinels name a primary other than `port`, and it
    /// says it is one.
    pub fn wait_for_failover_from(&self, port: u16) -> u16 {
        let mut promoted = 0;
        wait_for(
            Duration::from_secs(60),
            "the sentinels to promote the replica",
            || {
                promoted = self.primary_port();
                promoted != port
                    && self
                        .nodes
                        .iter()
                        .find(|node| node.port == promoted)
                        .is_some_and(|node| node.cli(&["ROLE"]).starts_with("master"))
            },
        );
        promoted
    }

    /// Waits until the node on `port`, alive through a switchover, says
    /// it is a replica: until then it still takes writes, which the
    /// new primary never sees.
    pub fn wait_for_demotion_of(&self, port: u16) {
        let node = self
            .nodes
            .iter()
            .find(|node| node.port == port)
            .expect("a node");
        wait_for(
            Duration::from_secs(60),
            "the old primary to become a replica",
            || node.cli(&["ROLE"]).starts_with("slave"),
        );
    }

    /// Waits until nothing but the sentinels, its replicas and this
    /// harness is connected to the node on `port`: verifyd has left it.
    pub fn wait_until_left(&self, port: u16, limit: Duration) {
        let node = self
            .nodes
            .iter()
            .find(|node| node.port == port)
            .expect("a node");
        wait_for(limit, "verifyd to leave the old primary", || {
            node.cli(&["CLIENT", "LIST"]).lines().all(|client| {
                let field = |name: &str| {
                    client
                        .split(' ')
                        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                        .unwrap_or_default()
                };
                field("name").starts_with("sentinel-")
                    || field("cmd") == "client|list"
                    || field("flags").contains('S')
            })
        });
    }

    /// `SENTINEL FAILOVER`: the replica is promoted without waiting for
    /// the primary to fail, and the old primary becomes its replica.
    pub fn fail_over(&self) {
        let answer = self.sentinels[0].cli(&["SENTINEL", "FAILOVER", SENTINEL_MASTER]);
        assert_eq!(answer, "OK", "SENTINEL FAILOVER");
    }
}

impl Sentinel {
    fn start(primary: u16) -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir for a sentinel");
            let port = free_port();
            // Sentinel rewrites its configuration file, so it gets its own.
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 10000\n",
                    dir = dir.path().display(),
                ),
            )
            .expect("write sentinel.conf");
            let log = std::fs::File::create(dir.path().join("sentinel.log")).expect("log");
            let mut child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server --sentinel: {e}; {INSTALL_HINT}")
                });
            let deadline = Instant::now() + STARTUP;
            loop {
                if ping(port, Duration::from_millis(500)) {
                    return Self {
                        port,
                        child,
                        _dir: dir,
                    };
                }
                if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = std::fs::read_to_string(dir.path().join("sentinel.log"))
                        .unwrap_or_default();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("redis-server --sentinel did not start: {last_error}");
    }

    fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` until it holds, failing the test after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cluster-enabled server and its cluster bus port.
fn cluster_node(node_timeout: Duration) -> (RedisServer, u16) {
    // Explicit: the default bus port, port + 10000, overflows for high
    // ephemeral ports. `nodes.conf` lands in `--dir`.
    let bus_port = free_port();
    let node = RedisServer::start_with(&[
        "--cluster-enabled".to_owned(),
        "yes".to_owned(),
        "--cluster-config-file".to_owned(),
        "nodes.conf".to_owned(),
        "--cluster-port".to_owned(),
        bus_port.to_string(),
        "--cluster-node-timeout".to_owned(),
        node_timeout.as_millis().to_string(),
        "--repl-diskless-sync-delay".to_owned(),
        "0".to_owned(),
    ]);
    (node, bus_port)
}

/// A loopback port nothing listened on a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// `redis-cli -p PORT ARGS…`'s output, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let mut with_port = vec!["-p", port.as_str()];
    with_port.extend_from_slice(args);
    redis_cli(&with_port)
}

/// `redis-cli ARGS…`'s output, trimmed. Error replies are output too;
/// only a failure to run or connect panics.
fn redis_cli(args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}; {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `kill -SIGNAL pid`, without a libc dependency.
fn signal(child: &Child, signal: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill -{signal}: {status}")))
    }
}

/// Whether Redis on `port` answers an inline PING within `timeout`.
fn ping(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let mut answer = [0; 7];
    stream.set_read_timeout(Some(timeout)).is_ok()
        && stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

#[test]
fn a_server_starts_and_stores() {
    let redis = RedisServer::start();
    assert_eq!(redis.cli(&["PING"]), "PONG");
    assert_eq!(redis.cli(&["SET", "{user:1}:code", "123456"]), "OK");
    assert_eq!(redis.cli(&["GET", "{user:1}:code"]), "123456");
    redis.cli(&["HSET", "h", "field", "value"]);
    assert_eq!(
        redis.dump(),
        [
            ("h".to_owned(), "hash".to_owned(), "field\nvalue".to_owned()),
            (
                "{user:1}:code".to_owned(),
                "string".to_owned(),
                "123456".to_owned()
            ),
        ]
    );
    assert_eq!(redis.kill_pubsub_clients(), 0);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
}

#[test]
fn a_frozen_server_holds_requests_until_thawed() {
    let redis = RedisServer::start();
    redis.freeze();
    let addr = SocketAddr::from(([127, 0, 0, 1], redis.port()));
    let mut stream = TcpStream::connect(addr).expect("the kernel still accepts");
    stream.write_all(b"PING\r\n").expect("write PING");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    let mut answer = [0; 7];
    let err = stream
        .read_exact(&mut answer)
        .expect_err("frozen Redis answered");
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    redis.thaw();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream.read_exact(&mut answer).expect("PONG after thaw");
    assert_eq!(&answer, b"+PONG\r\n");
}

#[test]
fn a_stopped_server_restarts_empty_on_its_port() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    redis.cli(&["SET", "k", "v"]);
    redis.stop();
    assert!(
        !ping(port, Duration::from_millis(300)),
        "stopped Redis answered"
    );
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.cli(&["PING"]), "PONG");
    assert_eq!(redis.cli(&["EXISTS", "k"]), "0");
}

#[test]
fn a_cluster_forms_and_stores() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.urls().len(), 3);
    let node = &cluster.nodes[0];
    assert_eq!(node.cli(&["-c", "SET", "{a}x", "1"]), "OK");
    assert_eq!(node.cli(&["-c", "GET", "{a}x"]), "1");
    assert!(node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
    assert_eq!(
        cluster.dump(),
        [("{a}x".to_owned(), "string".to_owned(), "1".to_owned())]
    );
}

"""Real Redis deployments for the fault harness, as separate processes.

Three shapes, the ones platform teams run verifyd's Redis in:

- `Standalone`: one server, AOF with `fsync always`, so a restart keeps
  every write it acknowledged.
- `Sentinels`: one primary, one replica and three sentinels (quorum two),
  as the usual Helm charts run them.
- `Cluster`: three primaries with a replica each.

Every process writes its log into the harness's work directory, which the
report names when something breaks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = "install Redis 7 or newer: apt-get install -y redis-server redis-tools"
SENTINEL_MASTER = "verifyd"


class HarnessError(Exception):
    """The harness itself could not do what it set out to (not a verdict on verifyd)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, limit: float, done) -> float:
    """Polls `done` every 20 ms; the seconds it took. Raises after `limit`."""
    start = time.monotonic()
    while True:
        try:
            if done():
                return time.monotonic() - start
        except (OSError, subprocess.SubprocessError):
            pass
        if time.monotonic() - start > limit:
            raise HarnessError(f"waited {limit:.0f} s for {what}")
        time.sleep(0.02)


def cli(port: int, *args: str, timeout: float = 5.0) -> str:
    """`redis-cli -p PORT ARGS…`'s output, trimmed; error replies included."""
    try:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        raise HarnessError(f"cannot run redis-cli: {e}; {INSTALL_HINT}") from e
    return done.stdout.strip()


def fields(answer: str) -> dict[str, str]:
    """A redis-cli answer of alternating names and values, or `name:value` lines."""
    lines = answer.splitlines()
    if any(":" in line for line in lines):
        return dict(line.split(":", 1) for line in lines if ":" in line)
    return dict(zip(lines[::2], lines[1::2], strict=False))


class Process:
    """A child process with its log in the work directory. Every one the
    harness spawns is listed, so that `kill_all` leaves none behind,
    whatever failed half-way."""

    spawned: list[Process] = []

    def __init__(self, argv: list[str], log: Path):
        self.argv = argv
        self.log = log
        self.env: dict[str, str] | None = None
        self.child: subprocess.Popen | None = None

    def spawn(self) -> None:
        with open(self.log, "ab") as out:
            try:
                self.child = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env
                )
            except FileNotFoundError as e:
                raise HarnessError(f"cannot run {self.argv[0]}: {e}; {INSTALL_HINT}") from e
        Process.spawned.append(self)

    def signal(self, sig: int) -> None:
        if self.child and self.child.poll() is None:
            self.child.send_signal(sig)

    def kill(self) -> None:
        if self.child and self.child.poll() is None:
            self.child.send_signal(signal.SIGCONT)
            self.child.kill()
            self.child.wait()


def kill_all() -> None:
    for process in Process.spawned:
        process.kill()


class RedisNode(Process):
    """One redis-server on a loopback port of its own."""

    def __init__(self, workdir: Path, name: str, extra: list[str] | None = None):
        self.port = free_port()
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.dir), "--daemonize", "no", "--save", ""]
        # A resync (an old primary rejoining as a replica) starts at once.
        argv += ["--repl-diskless-sync-delay", "0"]
        super().__init__(argv + (extra or []), self.dir / "redis.log")
        self.start()

    def start(self) -> None:
        self.spawn()
        wait_for(f"redis-server on port {self.port} (log: {self.log})", 15, self.answers)

    def answers(self) -> bool:
        return cli(self.port, "PING", timeout=1) == "PONG"

    def cli(self, *args: str) -> str:
        return cli(self.port, *args)

    def role(self) -> str:
        return self.cli("ROLE").split("\n", 1)[0]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


class Standalone:
    """One server that loses no acknowledged write across a restart."""

    def __init__(self, workdir: Path):
        self.node = RedisNode(workdir, "redis", ["--appendonly", "yes", "--appendfsync", "always"])

    def store_config(self) -> dict:
        return {"url": self.node.url}

    def stop(self) -> None:
        self.node.kill()


class Sentinel(Process):
    def __init__(self, workdir: Path, name: str, primary: int):
        self.port = free_port()
        home = workdir / name
        home.mkdir(parents=True, exist_ok=True)
        # Sentinel rewrites its configuration file, so each has its own.
        conf = home / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {home}\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
        )
        super().__init__(["redis-server", str(conf), "--sentinel"], home / "sentinel.log")
        self.spawn()
        wait_for(f"a sentinel on port {self.port}", 15, lambda: cli(self.port, "PING", timeout=1) == "PONG")

    def master(self) -> dict[str, str]:
        return fields(cli(self.port, "SENTINEL", "MASTER", SENTINEL_MASTER))


class Sentinels:
    """One primary, one replica and three sentinels: a second without an
    answer and the sentinels promote the replica."""

    def __init__(self, workdir: Path):
        primary = RedisNode(workdir, "primary")
        replica = RedisNode(workdir, "replica", ["--replicaof", "127.0.0.1", str(primary.port)])
        self.nodes = [primary, replica]
        wait_for(
            "the replica to sync", 30, lambda: "master_link_status:up" in replica.cli("INFO", "replication")
        )
        self.sentinels = [Sentinel(workdir, f"sentinel-{i}", primary.port) for i in range(3)]
        for sentinel in self.sentinels:
            wait_for(
                "the sentinels to find each other and the replica",
                30,
                lambda s=sentinel: (
                    s.master().get("num-other-sentinels") == "2" and s.master().get("num-slaves") == "1"
                ),
            )

    def store_config(self) -> dict:
        return {
            "sentinel": {
                "master_name": SENTINEL_MASTER,
                "nodes": [f"redis://127.0.0.1:{s.port}" for s in self.sentinels],
            }
        }

    def primary(self) -> RedisNode:
        port = int(
            cli(self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER).split()[1]
        )
        return next(node for node in self.nodes if node.port == port)

    def replica(self) -> RedisNode:
        primary = self.primary()
        return next(node for node in self.nodes if node is not primary)

    def wait_for_promotion_of(self, node: RedisNode, limit: float = 60) -> float:
        """Until every sentinel names `node` primary and it says it is one;
        the seconds that took."""
        return wait_for(
            "the sentinels to promote the replica",
            limit,
            lambda: (
                all(
                    cli(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER, timeout=1).split()[
                        1:2
                    ]
                    == [str(node.port)]
                    for s in self.sentinels
                )
                and node.role() == "master"
            ),
        )

    def stop(self) -> None:
        for process in [*self.sentinels, *self.nodes]:
            process.kill()


class Cluster:
    """Three primaries with a replica each; a primary unanswered for two
    seconds is failed over."""

    NODE_TIMEOUT_MS = 2000

    def __init__(self, workdir: Path):
        self.nodes = []
        for i in range(6):
            # Explicit: the default bus port, port + 10000, overflows for
            # high ephemeral ports. nodes.conf lands in --dir.
            bus = free_port()
            self.nodes.append(
                RedisNode(
                    workdir,
                    f"cluster-{i}",
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        str(bus),
                        "--cluster-node-timeout",
                        str(self.NODE_TIMEOUT_MS),
                    ],
                )
            )
        create = ["redis-cli", "--cluster", "create"]
        create += [f"127.0.0.1:{node.port}" for node in self.nodes]
        create += ["--cluster-replicas", "1", "--cluster-yes"]
        subprocess.run(create, capture_output=True, check=True, timeout=60, stdin=subprocess.DEVNULL)
        self.wait_until_ok()
        wait_for(
            "every cluster replica to sync",
            60,
            lambda: all(
                "master_link_status:up" in node.cli("INFO", "replication")
                for node in self.nodes
                if node.role() == "slave"
            ),
        )

    def live(self) -> list[RedisNode]:
        return [node for node in self.nodes if node.child and node.child.poll() is None]

    def primaries(self) -> list[RedisNode]:
        return [node for node in self.live() if node.role() == "master"]

    def wait_until_ok(self, limit: float = 60) -> float:
        """Until every live node says every slot is served (`cluster_state:ok`)
        and has a primary for each of the three shards."""
        return wait_for(
            "the cluster to be ok",
            limit,
            lambda: (
                all("cluster_state:ok" in node.cli("CLUSTER", "INFO") for node in self.live())
                and len(self.primaries()) == 3
            ),
        )

    def store_config(self) -> dict:
        return {"cluster": [node.url for node in self.nodes]}

    def reshard(self, source: RedisNode, target: RedisNode, slots: int) -> None:
        """`redis-cli --cluster reshard`: the target imports, the source
        migrates each key (MIGRATE), then the slots change hands."""
        argv = ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source.port}"]
        argv += [
            "--cluster-from",
            source.cli("CLUSTER", "MYID"),
            "--cluster-to",
            target.cli("CLUSTER", "MYID"),
        ]
        argv += ["--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "10"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise HarnessError(
                f"redis-cli --cluster reshard failed: {done.stdout[-2000:]}{done.stderr[-2000:]}"
            )

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def must_have_redis() -> None:
    for program in ["redis-server", "redis-cli"]:
        if not any(os.access(Path(d) / program, os.X_OK) for d in os.environ.get("PATH", "").split(":")):
            raise HarnessError(f"{program} not found; {INSTALL_HINT}")

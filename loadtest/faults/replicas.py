"""verifyd replicas for the fault harness: `verifyd serve` processes sharing
one Redis deployment, each with its own loopback ports and log.

They send SMS through the fake gateway and email through the fake SMTP
server (fakes.py), with every rate limit raised out of the way: the
harness measures faults, not the limiter.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from pathlib import Path

from redis_nodes import HarnessError, Process, free_port

# Secrets of one run, shared by its replicas (loopback processes only).
HMAC_KEY = secrets.token_hex(32)
INDEX_KEY = secrets.token_hex(32)
GATEWAY_SECRET = secrets.token_hex(32)

# Every budget out of the way: a burst of a million, then a thousand cells
# a second (Redis counts budgets in whole milliseconds).
LIMITS = [
    "starts_per_destination",
    "starts_per_ip",
    "failed_checks_per_destination",
    "requests_per_tenant",
    "starts_per_prefix",
    "starts_per_country",
    "sends_per_tenant",
    "starts_per_tenant",
    "emails_per_tenant",
]

# What a hanging provider may tie up, and for how long: 200 starts against
# a cap of 100 shows both the cap and the deadline.
MAX_SENDS_IN_FLIGHT = 100
DELIVERY_TIMEOUT = "3s"


def child_env() -> dict[str, str]:
    """The environment without VERIFYD_* variables: every replica's
    configuration is its file, whatever the caller's shell holds."""
    return {key: value for key, value in os.environ.items() if not key.startswith("VERIFYD_")}


def toml_value(value) -> str:
    # JSON strings, numbers, booleans and arrays of them are valid TOML.
    return json.dumps(value)


def config_text(store: dict, wait_replicas: int, admin: int, webhooks: int, gateway: str, smtp: int) -> str:
    """A replica's verifyd.toml; `{grpc}` stands for its gRPC port."""
    lines = [
        "[server]",
        'grpc_addr = "127.0.0.1:{grpc}"',
        f'admin_addr = "127.0.0.1:{admin}"',
        'shutdown_grace = "3s"',
        "[webhooks]",
        f'addr = "127.0.0.1:{webhooks}"',
        "[code]",
        "length = 6",
        'resend_cooldown = "1s"',
        "[hmac]",
        f"key = {toml_value(HMAC_KEY)}",
        "[store]",
        'backend = "redis"',
        "[store.redis]",
        f"index_key = {toml_value(INDEX_KEY)}",
        f"wait_replicas = {wait_replicas}",
    ]
    sentinel = store.get("sentinel")
    lines += [f"{key} = {toml_value(value)}" for key, value in store.items() if key != "sentinel"]
    if sentinel:
        lines.append("[store.redis.sentinel]")
        lines += [f"{key} = {toml_value(value)}" for key, value in sentinel.items()]
    lines += [
        "[delivery]",
        f'timeout = "{DELIVERY_TIMEOUT}"',
        f"max_sends_in_flight = {MAX_SENDS_IN_FLIGHT}",
        'sms = ["gateway"]',
        'email = ["mail"]',
        "[delivery.retry]",
        'attempt_timeout = "2s"',
        "retries = 0",
        "[delivery.breaker]",
        # A hung provider must not be skipped afterwards: the harness
        # measures when sends work again, not the breaker's open time.
        "failures = 1000000",
        "[providers.gateway]",
        'kind = "http"',
        f"url = {toml_value(gateway)}",
        f"signing_secret = {toml_value(GATEWAY_SECRET)}",
        "[providers.mail]",
        'kind = "smtp"',
        'host = "127.0.0.1"',
        f"port = {smtp}",
        'tls = "none"',
        'from = "no-reply@example.com"',
        'timeout = "1s"',
    ]
    for limit in LIMITS:
        lines += [f"[limits.{limit}]", "burst = 1000000", 'period = "1us"']
    return "\n".join(lines) + "\n"


class Replica(Process):
    def __init__(self, binary: Path, workdir: Path, name: str, config: str):
        self.name = name
        self.grpc = free_port()
        home = workdir / name
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / "verifyd.toml"
        self.config.write_text(config.replace("{grpc}", str(self.grpc)))
        self.stopped_on_purpose = False
        super().__init__([str(binary), "serve", "--config", str(self.config)], home / "verifyd.log")
        self.env = child_env()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def start(self) -> None:
        self.stopped_on_purpose = False
        self.spawn()

    def sigkill(self) -> None:
        self.stopped_on_purpose = True
        self.kill()

    def drain(self, limit: float = 15) -> None:
        """SIGTERM, then the drain: in-flight RPCs finish, then it exits."""
        self.stopped_on_purpose = True
        self.signal(signal.SIGTERM)
        try:
            self.child.wait(limit)
        except subprocess.TimeoutExpired as e:
            raise HarnessError(f"{self.name} did not exit within {limit} s of SIGTERM") from e

    def crashed(self) -> bool:
        """Exited without the harness stopping it."""
        return not self.stopped_on_purpose and self.child is not None and self.child.poll() is not None

    def panics(self) -> int:
        return self.log.read_text(errors="replace").count("panicked at")


class Replicas:
    """`count` replicas on one store; each gets its own ports."""

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        store: dict,
        wait_replicas: int,
        gateway: str,
        smtp: int,
        count: int = 3,
    ):
        self.members = []
        for i in range(count):
            config = config_text(store, wait_replicas, free_port(), free_port(), gateway, smtp)
            self.members.append(Replica(binary, workdir, f"verifyd-{i}", config))
        for replica in self.members:
            replica.start()

    def __iter__(self):
        return iter(self.members)

    def __getitem__(self, i: int) -> Replica:
        return self.members[i]

    def __len__(self) -> int:
        return len(self.members)

    def stop(self) -> None:
        for replica in self.members:
            replica.stopped_on_purpose = True
            replica.kill()

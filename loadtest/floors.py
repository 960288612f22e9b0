#!/usr/bin/env python3
"""How far the Redis store could go on this machine: a Get and a Check run
against a build that asks Redis for the least each could ever ask, beside
an ordinary build, as compare.py's Redis table runs them.

The floor build comes from floors.patch, which breaks the store on purpose:

- its check script does only what any check must ask of Redis (read the
  status, take a cell of the failed-check budget with a GET and a SET,
  write one field, publish the change) and replies with a verification's
  text prepared beforehand, so neither Lua nor verifyd takes anything
  apart;
- its Get is one GET of that text: what a layout that keeps each
  verification as one value would cost.

It answers every Get and Check with that one verification, so it is for
this measurement only. To run it (docs/performance.md has the results):

    git apply loadtest/floors.patch
    cargo build --release --locked && cp target/release/verifyd /tmp/verifyd-floor
    git apply -R loadtest/floors.patch
    cargo build --release --locked
    python3 loadtest/floors.py /tmp/verifyd-floor target/release/verifyd

Each round runs every binary on a fresh Redis pinned to the load
generator's core: a health check, Get, a health check, Check, a health
check; each RPC's rps ratio uses the mean of the health checks around it.
ROUNDS (3) sets the rounds; compare.py's variables (DURATION, ...) apply.
"""

import os
import statistics
import sys
from pathlib import Path

import compare

ROUNDS = int(os.environ.get("ROUNDS", "3"))
PRELOAD = 20_000
PRELUDE = compare.ROOT / "src" / "store" / "redis" / "lua" / "prelude.lua"
# The prepared text: what a Get would answer for one stored verification,
# made by prelude.lua's own `reply`.
PREPARE = "\nredis.call('SET', 'verifyd:floor:canned', reply(load(KEYS[1]), KEYS[2]))\nreturn 1"
RPCS = {"get": ("get.json", "ids"), "check": ("check.json", "check_ids")}


def prepare_canned(redis):
    """Stores the floor build's prepared verification text, from the first
    verification the preload made."""
    keys = redis.cli("--scan", "--pattern", "verifyd:*:v:*").split()
    if not keys:
        sys.exit("the preload stored no verification in Redis")
    hash_key = keys[0]
    attempts_key = hash_key.replace(":v:", ":a:")
    redis.cli("EVAL", PRELUDE.read_text() + PREPARE, "2", hash_key, attempts_key)


def one_round(binary):
    """The rps ratio and CPU per request of Get and Check for `binary`."""
    compare.BIN = Path(binary)
    found = {}
    with compare.RedisServer() as redis:
        server = compare.Server("floors", redis.store, redis.env)
        try:
            ids, check_ids = compare.preload(server, "floors", PRELOAD)
            prepare_canned(redis)
            data = {"ids": ids, "check_ids": check_ids}
            before = compare.closed(server, "health.json", "floors-health")
            for rpc, (config, ids_file) in RPCS.items():
                row = compare.closed(
                    server, config, f"floors-{rpc}", "-D", str(data[ids_file]),
                    redis_pid=redis.pid,
                )
                after = compare.closed(server, "health.json", "floors-health")
                if set(row["statuses"]) != {"OK"}:
                    sys.exit(f"{binary} {rpc}: statuses {row['statuses']}")
                found[rpc] = {
                    "ratio": row["rps"] / ((before["rps"] + after["rps"]) / 2),
                    "cpu": row["cpu_us_per_request"],
                    "redis": row["redis_cpu_us_per_request"],
                }
                before = after
        finally:
            server.stop()
    return found


def main():
    binaries = sys.argv[1:]
    if not binaries:
        sys.exit(__doc__)
    compare.OUT.mkdir(parents=True, exist_ok=True)
    runs = {(b, rpc): [] for b in binaries for rpc in RPCS}
    for n in range(ROUNDS):
        for binary in binaries:
            for rpc, row in one_round(binary).items():
                runs[(binary, rpc)].append(row)
                print(f"round {n + 1}, {binary}, {rpc}: rps × baseline {row['ratio']:.2f}, "
                      f"verifyd {row['cpu']:.1f} µs, Redis {row['redis']:.1f} µs", flush=True)
    print()
    print("| Build | RPC | rps × baseline, each round | median | verifyd CPU µs/req | Redis CPU µs/req |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for (binary, rpc), rows in runs.items():
        ratio, cpu, redis = (statistics.median(r[key] for r in rows) for key in ("ratio", "cpu", "redis"))
        each = ", ".join(f"{r['ratio']:.2f}" for r in rows)
        print(f"| {binary} | {rpc} | {each} | {ratio:.2f} | {cpu:.1f} | {redis:.1f} |")


if __name__ == "__main__":
    main()

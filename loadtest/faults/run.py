"""verifyd's fault harness: real Redis deployments and three verifyd
replicas under load, one fault after another, and a report of what
survived. Run it through `loadtest/faults/run` (docs/redis.md, "What each
fault does to a caller", has the figures and how to read them).

For each fault: the checker (checker.py) and verifyd-bench load the
replicas for a while; the fault happens and ends; the harness measures, per
replica, the seconds until it answers again; the load goes on a little;
then the ledger is audited. It exits non-zero when an invariant breaks
(wrong, double or phantom approvals, answers that are not fail-closed,
panics, an acknowledged approval lost where the deployment promises
durability) and, in the full run only, when a replica takes more than
5 s to answer again.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

import checker as chk
from fakes import SmsGateway, SmtpServer
from redis_nodes import Cluster, HarnessError, Sentinels, Standalone, kill_all, must_have_redis, wait_for
from replicas import MAX_SENDS_IN_FLIGHT, Replicas, child_env

ROOT = Path(__file__).resolve().parents[2]
RECOVERY_LIMIT_S = 5.0
# How long a replica or dependency may take to come back before the harness
# stops waiting and reports it as not recovered.
RECOVERY_PATIENCE_S = 30.0
# Go's names, as verifyd-bench reports them, of the answers a start may get
# while a dependency fails.
BENCH_FAIL_CLOSED = {"Unavailable", "DeadlineExceeded", "ResourceExhausted", "Aborted"}
# No answer from verifyd at all: the connection died under the request (a
# replica SIGKILLed; tonic says Unknown), or the client gave the request up
# as a draining replica closed the connection (Canceled). Excused only
# while the fault kills or drains a replica (DROPS_CONNECTIONS).
CONNECTION_LOST = re.compile(
    r"^rpc error: code = "
    r"(Unknown desc = (transport error|connection error|h2 protocol error)"
    r"|Canceled desc = operation was canceled)"
)
FLOOD_STARTS = 200
TARPIT_STARTS = 50


class Volume:
    """verifyd-bench running loadtest/ghz/start.json (a new email address
    per request) against each replica, in 2 s rounds, until stopped."""

    def __init__(self, bench: Path, addrs: list[str], workdir: Path, rps: int):
        self.answers: Counter = Counter()
        self.errors: Counter = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(
                target=self.load, args=(bench, addr, workdir / f"bench-{i}.json", rps), daemon=True
            )
            for i, addr in enumerate(addrs)
        ]
        for thread in self.threads:
            thread.start()

    def load(self, bench: Path, addr: str, report: Path, rps: int) -> None:
        argv = [str(bench), "--config", str(ROOT / "loadtest/ghz/start.json"), "--insecure"]
        argv += ["-z", "2s", "-r", str(rps), "-c", "4", "-t", "5s", "--connect-timeout", "1s"]
        argv += ["--cpus", "1", "-O", "json", "-o", str(report), addr]
        while not self.stopping.is_set():
            report.unlink(missing_ok=True)
            try:
                subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=child_env(),
                    # A 2 s run whose requests time out at 5 s.
                    timeout=30,
                )
            except subprocess.TimeoutExpired:
                self.stopping.wait(0.2)
                continue
            try:
                run = json.loads(report.read_text())
                codes, errors = run["statusCodeDistribution"], run["errorDistribution"]
            except (OSError, ValueError, KeyError):
                # The replica was down: no connection, no report.
                self.stopping.wait(0.2)
                continue
            with self.lock:
                self.answers.update(codes)
                self.errors.update(errors)

    def stop(self) -> Counter:
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        return self.answers


def fail_closed(error: str, connections_may_drop: bool) -> bool:
    """Whether an error verifyd-bench reports (ghz's `rpc error: code = X
    desc = Y`) is fail-closed, or, while a replica is killed or drained, no
    answer at all."""
    code = error.removeprefix("rpc error: code = ").split(" ", 1)[0]
    lost = connections_may_drop and CONNECTION_LOST.match(error) is not None
    return code in BENCH_FAIL_CLOSED or lost


class Context:
    """One deployment: Redis in some shape, the fakes, three replicas."""

    def __init__(self, args, workdir: Path, topology, wait_replicas: int):
        self.args = args
        self.workdir = workdir
        self.topology = topology
        self.wait_replicas = wait_replicas
        # What puts the deployment back after a fault, when its own end
        # does not (set by the fault; run after the recovery is measured).
        self.heal = None
        self.gateway = SmsGateway()
        self.smtp = SmtpServer()
        self.replicas = Replicas(
            args.bin_dir / "verifyd",
            workdir,
            topology.store_config(),
            wait_replicas,
            self.gateway.url,
            self.smtp.port,
        )
        for replica in self.replicas:
            wait_for(
                f"{replica.name} to serve (log: {replica.log})", 60, lambda r=replica: probe_grpc(r.addr)
            )
        self.api = chk.Api(self.replicas[0].addr)
        self.addrs = [replica.addr for replica in self.replicas]

    def stop(self) -> None:
        self.replicas.stop()
        self.topology.stop()
        self.gateway.stop()
        self.smtp.stop()


def probe_grpc(addr: str) -> bool:
    """Whether the replica at `addr` serves: its gRPC health says SERVING
    (its store answers), within a second. Reflection, which builds the
    checker's API, has no deadline of its own: it is asked only then."""
    with grpc.insecure_channel(addr) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            # An empty HealthCheckRequest; field 1 of the answer is the status
            # (08 01: SERVING).
            return check(b"", timeout=1.0) == b"\x08\x01"
        except grpc.RpcError:
            return False


def flood(ctx: Context, replica: int, count: int, channel: str) -> Counter:
    """`count` starts at once at one replica; their answers."""
    client = chk.Client(ctx.api, ctx.addrs[replica])
    base = time.monotonic_ns()

    def start(i: int) -> str:
        to = f"+1808555{i % 10000:04d}" if channel == "CHANNEL_SMS" else f"flood-{base}-{i}@example.com"
        return client.call(
            "StartVerification", timeout=10, to=to, channel=channel, purpose="PURPOSE_PASSWORD_RESET"
        ).code

    try:
        with ThreadPoolExecutor(count) as pool:
            return Counter(pool.map(start, range(count)))
    finally:
        client.close()


# --- The faults -------------------------------------------------------------
# Each injects its fault and ends it; when it returns, the harness measures
# each replica's recovery. `heal` (optional) runs after that, to put the
# deployment back for the next fault. Notes go into the report.


def replica_sigkill(ctx: Context, notes: dict) -> None:
    victim = ctx.replicas[2]
    victim.sigkill()
    time.sleep(1.0)  # the load goes on against the other two
    victim.start()


def replica_drain(ctx: Context, notes: dict) -> None:
    victim = ctx.replicas[1]
    started = time.monotonic()
    victim.drain()
    notes["drain_s"] = round(time.monotonic() - started, 2)
    victim.start()


def redis_freeze(ctx: Context, notes: dict) -> None:
    node = ctx.topology.node
    node.signal(signal.SIGSTOP)
    time.sleep(3.0)
    node.signal(signal.SIGCONT)


def redis_restart(ctx: Context, notes: dict) -> None:
    node = ctx.topology.node
    node.kill()
    time.sleep(1.0)
    node.start()


def provider_hang(ctx: Context, notes: dict) -> None:
    ctx.gateway.hang()
    try:
        answers = {}
        flooding = threading.Thread(target=lambda: answers.update(flood(ctx, 0, FLOOD_STARTS, "CHANNEL_SMS")))
        flooding.start()
        wait_for("the flood to reach the cap", 30, lambda: ctx.gateway.waiting >= MAX_SENDS_IN_FLIGHT // 2)
        # The replica whose sends all hang still answers.
        notes["get_during_hang_s"] = chk.answers_again(ctx.api, ctx.addrs[0], 5)
        flooding.join()
        notes["flood_answers"] = dict(answers)
        if notes["get_during_hang_s"] is None:
            notes.setdefault("breaches", []).append("the replica did not answer a Get while its sends hung")
        if answers.get("OK"):
            notes.setdefault("breaches", []).append(
                f"{answers['OK']} starts answered OK while the provider accepted nothing"
            )
    finally:
        ctx.gateway.release()


def smtp_tarpit(ctx: Context, notes: dict) -> None:
    ctx.smtp.tarpitting.set()
    try:
        answers = flood(ctx, 1, TARPIT_STARTS, "CHANNEL_EMAIL")
        notes["flood_answers"] = dict(answers)
        if answers.get("OK"):
            notes.setdefault("breaches", []).append(
                f"{answers['OK']} email starts answered OK through a tarpit"
            )
    finally:
        ctx.smtp.tarpitting.clear()


def sentinel_failover(ctx: Context, notes: dict) -> None:
    """The replica falls behind, then the primary dies: what the primary
    acknowledged meanwhile exists nowhere else. The sentinels promote the
    replica.

    Falling behind: the replica stalls (SIGSTOP) and its replication link
    is cut, for 1.5 s. A stall alone would not do: the kernel keeps
    receiving the stream into the stalled replica's socket, and it catches
    up the moment it runs again."""
    topology = ctx.topology
    primary, replica = topology.primary(), topology.replica()
    replica.signal(signal.SIGSTOP)
    primary.cli("CLIENT", "KILL", "TYPE", "replica")
    time.sleep(1.5)
    primary.kill()
    replica.signal(signal.SIGCONT)
    notes["failover_s"] = round(topology.wait_for_promotion_of(replica), 2)
    ctx.heal = lambda: rejoin_sentinel(ctx, primary)


def rejoin_sentinel(ctx: Context, old_primary) -> None:
    """The old primary comes back, empty; the sentinels make it a replica."""
    old_primary.start()
    wait_for(
        "the old primary to rejoin as a replica",
        60,
        lambda: (
            old_primary.role() == "slave"
            and "master_link_status:up" in old_primary.cli("INFO", "replication")
        ),
    )


def cluster_primary_kill(ctx: Context, notes: dict) -> None:
    cluster = ctx.topology
    victim = cluster.primaries()[0]
    victim.kill()
    started = time.monotonic()
    cluster.wait_until_ok()
    notes["failover_s"] = round(time.monotonic() - started, 2)
    ctx.heal = lambda: rejoin_cluster(cluster, victim)


def rejoin_cluster(cluster: Cluster, node) -> None:
    node.start()
    cluster.wait_until_ok()
    wait_for(
        "the old primary to rejoin as a replica",
        60,
        lambda: node.role() == "slave" and "master_link_status:up" in node.cli("INFO", "replication"),
    )


def slot_migration(ctx: Context, notes: dict) -> None:
    cluster = ctx.topology
    source, target = cluster.primaries()[:2]
    started = time.monotonic()
    cluster.reshard(source, target, 1000)
    notes["migration_s"] = round(time.monotonic() - started, 2)
    notes["slots_moved"] = 1000


# A provider's fault is over for a replica when a start sends through it
# again; any other, when the replica reads from its store again.
PROBE_CHANNEL = {"provider_hang": "CHANNEL_SMS", "smtp_tarpit": "CHANNEL_EMAIL"}

# --- Running them -----------------------------------------------------------

# (scenario, topology, wait_replicas, durable, faults in order). `durable`:
# the deployment promises that an acknowledged approval survives.
SCENARIOS = [
    (
        "standalone",
        Standalone,
        0,
        True,
        [replica_sigkill, replica_drain, redis_freeze, redis_restart, provider_hang, smtp_tarpit],
    ),
    ("sentinel", Sentinels, 0, False, [sentinel_failover]),
    ("sentinel", Sentinels, 1, True, [sentinel_failover]),
    ("cluster", Cluster, 1, True, [cluster_primary_kill, slot_migration]),
]
SHORT = {
    ("standalone", 0): [replica_sigkill, redis_freeze, redis_restart],
    ("sentinel", 1): [sentinel_failover],
}


# The faults that kill or drain a replica: requests on its connections may
# get no answer at all.
DROPS_CONNECTIONS = {"replica_sigkill", "replica_drain"}


def run_fault(ctx: Context, scenario: str, durable: bool, fault) -> dict:
    args = ctx.args
    panics_before = [replica.panics() for replica in ctx.replicas]
    drops = fault.__name__ in DROPS_CONNECTIONS
    ledger = chk.Ledger()
    checker = chk.Checker(ctx.api, ctx.addrs, ctx.gateway, ledger, connections_may_drop=drops)
    volume = Volume(args.bin_dir / "verifyd-bench", ctx.addrs, ctx.workdir, args.rps)
    time.sleep(args.before)
    notes: dict = {}
    ctx.heal = None
    print(f"  {fault.__name__} ...", flush=True)
    injected = time.monotonic()
    fault(ctx, notes)
    notes["lasted_s"] = round(time.monotonic() - injected, 2)
    channel = PROBE_CHANNEL.get(fault.__name__)
    with ThreadPoolExecutor(len(ctx.addrs)) as pool:
        recovery = list(
            pool.map(
                lambda i: chk.answers_again(ctx.api, ctx.addrs[i], RECOVERY_PATIENCE_S, channel, i),
                range(len(ctx.addrs)),
            )
        )
    if ctx.heal:
        ctx.heal()
    time.sleep(args.after)
    checker.stop()
    bench = volume.stop()
    chk.audit(ctx.api, ctx.addrs, ledger)
    # A panic in a replica's log, or a replica that exited by itself
    # without one: each counts once.
    crashed = [replica.name for replica in ctx.replicas if replica.crashed()]
    panics = 0
    for replica, before in zip(ctx.replicas, panics_before, strict=True):
        new = replica.panics() - before
        panics += new or int(replica.crashed())
        if replica.crashed():
            replica.start()
    not_closed_bench = {error: n for error, n in volume.errors.items() if not fail_closed(error, drops)}
    breaches = list(ledger.examples) + notes.pop("breaches", [])
    if ledger.unread:
        breaches.append(f"{ledger.unread} verifications could not be read back (UNAVAILABLE to the end)")
    breaches += [f"verifyd-bench got {n} x {error}" for error, n in not_closed_bench.items()]
    breaches += [f"{name} exited by itself" for name in crashed]
    return {
        "scenario": scenario,
        "wait_replicas": ctx.wait_replicas,
        "fault": fault.__name__,
        "operations": ledger.operations + sum(bench.values()),
        "acknowledged": len(ledger.acknowledged),
        "wrong_approvals": ledger.wrong_approvals,
        "double_approvals": ledger.double_approvals,
        "acknowledged_lost": ledger.lost,
        "approved_unanswered": ledger.approved_unanswered,
        "right_code_refused": ledger.right_code_refused,
        "lost_statuses": dict(ledger.lost_statuses),
        "durable": durable,
        "not_fail_closed": ledger.not_fail_closed + sum(not_closed_bench.values()),
        "panics": panics,
        "recovery_s": [None if s is None else round(s, 2) for s in recovery],
        "checker_answers": dict(ledger.answers),
        "checker_messages": ledger.messages,
        "bench_answers": dict(bench),
        "bench_errors": dict(volume.errors),
        "notes": notes,
        "breaches": breaches,
    }


def verdict(result: dict, full: bool) -> list[str]:
    """What broke, in words; empty when nothing did."""
    broken = list(result["breaches"])
    for key in ["wrong_approvals", "double_approvals", "not_fail_closed", "panics"]:
        if result[key]:
            broken.append(f"{key} = {result[key]}")
    if result["durable"] and result["acknowledged_lost"]:
        broken.append(
            f"{result['acknowledged_lost']} acknowledged approvals lost ({result['lost_statuses']})"
        )
    if result["acknowledged"] == 0:
        broken.append("no approval was acknowledged: the checker measured nothing")
    for replica, seconds in enumerate(result["recovery_s"]):
        if seconds is None:
            broken.append(f"replica {replica} did not answer again within {RECOVERY_PATIENCE_S:.0f} s")
        elif full and seconds > RECOVERY_LIMIT_S:
            broken.append(f"replica {replica} answered again after {seconds} s (limit {RECOVERY_LIMIT_S} s)")
    return list(dict.fromkeys(broken))


def described(result: dict) -> str:
    """A fault's own figures, in words, for the table."""
    notes = result["notes"]
    parts = [f"{notes['lasted_s']:.1f} s"]
    if "failover_s" in notes:
        parts.append(f"promoted after {notes['failover_s']:.1f} s")
    if "migration_s" in notes:
        parts.append(f"{notes['slots_moved']} slots moved in {notes['migration_s']:.1f} s")
    if "drain_s" in notes:
        parts.append(f"drained in {notes['drain_s']:.2f} s")
    if "flood_answers" in notes:
        parts.append(", ".join(f"{n} {code}" for code, n in sorted(notes["flood_answers"].items())))
    if result.get("right_code_refused"):
        parts.append(f"{result['right_code_refused']} right codes refused")
    if result.get("approved_unanswered"):
        parts.append(
            f"{result['approved_unanswered']} approvals answered only by a retry's FAILED_PRECONDITION"
        )
    if notes.get("get_during_hang_s") is not None:
        parts.append(f"a Get answered in {notes['get_during_hang_s'] * 1000:.0f} ms meanwhile")
    return "; ".join(parts)


# The counts the table shows, and totals.
COUNTS = [
    "operations",
    "acknowledged",
    "wrong_approvals",
    "double_approvals",
    "acknowledged_lost",
    "not_fail_closed",
    "panics",
]


def table(results: list[dict]) -> str:
    head = (
        "| Scenario | Fault | Operations | Acknowledged approvals | Wrong | Double | Lost | Not fail-closed "
        "| Panics | Recovery (s, per replica) | The fault: how long, what happened |"
    )
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    totals = Counter()
    for r in results:
        scenario = r["scenario"]
        if scenario != "standalone":
            scenario += f", wait_replicas = {r['wait_replicas']}"
        recovery = ", ".join("none" if s is None else f"{s:.2f}" for s in r["recovery_s"])
        counts = " | ".join(str(r[key]) for key in COUNTS)
        fault = r["fault"].replace("_", " ")
        lines.append(f"| {scenario} | {fault} | {counts} | {recovery} | {described(r)} |")
        totals.update({key: r[key] for key in COUNTS})
    lines.append("| **total** | | " + " | ".join(str(totals[key]) for key in COUNTS) + " | | |")
    return "\n".join(lines)


# Written into --out: only a directory holding it is emptied for a new run.
OUT_MARKER = ".verifyd-fault-harness"


DEFAULT_OUT = ROOT / "target/faults"


def fresh_out(out: Path) -> None:
    """Empties `out` for this run's logs and report, if the harness made it
    (or it is the default, under target/)."""
    if out.exists():
        ours = (out / OUT_MARKER).exists() or out.resolve() == DEFAULT_OUT
        if not ours and any(out.iterdir()):
            raise HarnessError(f"{out} is not empty and not the harness's own: give --out a new directory")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / OUT_MARKER).write_text("loadtest/faults/run.py empties this directory on each run\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", type=Path, required=True, help="where verifyd and verifyd-bench are")
    parser.add_argument("--short", action="store_true", help="four faults, for CI; no recovery limit")
    parser.add_argument("--only", help="run only the faults whose names contain this")
    parser.add_argument("--rps", type=int, default=40, help="verifyd-bench starts per second, per replica")
    parser.add_argument("--before", type=float, default=3.0, help="seconds of load before each fault")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of load after each recovery")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="logs and the report")
    args = parser.parse_args()
    if args.short:
        args.before, args.after = min(args.before, 2.0), min(args.after, 2.0)
    must_have_redis()
    for binary in ["verifyd", "verifyd-bench"]:
        if not (args.bin_dir / binary).exists():
            raise HarnessError(
                f"{args.bin_dir / binary} is missing: build it first "
                "(cargo build -p verifyd -p verifyd-bench --bins)"
            )
    fresh_out(args.out)

    results = []
    started = time.monotonic()
    for scenario, topology, wait_replicas, durable, faults in SCENARIOS:
        if args.short:
            faults = SHORT.get((scenario, wait_replicas), [])
        if args.only:
            faults = [f for f in faults if args.only in f.__name__]
        if not faults:
            continue
        workdir = args.out / f"{scenario}-wait{wait_replicas}"
        workdir.mkdir()
        print(f"{scenario} (wait_replicas = {wait_replicas}), logs in {workdir}", flush=True)
        ctx = None
        try:
            deployment = topology(workdir)
            ctx = Context(args, workdir, deployment, wait_replicas)
            for fault in faults:
                result = run_fault(ctx, scenario, durable, fault)
                result["broken"] = verdict(result, not args.short)
                results.append(result)
                broken = result["broken"]
                status = "ok" if not broken else "BROKEN: " + "; ".join(broken[:3])
                if len(broken) > 3:
                    status += f"; and {len(broken) - 3} more in report.json"
                print(
                    f"  {fault.__name__}: {result['operations']} operations, "
                    f"{result['acknowledged']} approvals acknowledged, {result['acknowledged_lost']} lost, "
                    f"recovery {result['recovery_s']} s: {status}",
                    flush=True,
                )
        finally:
            if ctx:
                ctx.stop()
            kill_all()

    report = table(results)
    (args.out / "report.json").write_text(json.dumps(results, indent=2))
    (args.out / "report.md").write_text(report + "\n")
    print()
    print(report)
    print(f"\n{len(results)} faults in {time.monotonic() - started:.0f} s; report in {args.out}/report.json")
    broken = [r for r in results if r["broken"]]
    if broken:
        print(f"\nFAILED: {len(broken)} faults broke an invariant", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # CI's timeout or a Ctrl-C: unwind, so that every child is killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except HarnessError as e:
        print(f"loadtest/faults: {e}", file=sys.stderr)
        sys.exit(2)
    finally:
        kill_all()

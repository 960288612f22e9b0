"""The checker: users going through verifications while faults happen, and
a ledger of what verifyd told them.

Each flow starts an SMS verification on one replica, reads the code the
fake gateway received, checks a wrong code, then the right one (on
another replica, retrying while verifyd answers that it cannot know yet),
then the right code once more. The ledger keeps every approval a caller
was told of (an *acknowledged* approval); `audit` then reads each back.

What counts against verifyd:

- a wrong-code approval: `approved = true` for a code that was not sent;
- a double approval: a second `approved = true` for one verification;
- an acknowledged approval lost: a later GetVerification does not say
  APPROVED;
- an answer that is not fail-closed: a status outside the ones verifyd
  documents for a dependency it cannot reach (UNAVAILABLE,
  DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED) or for a finished
  verification (FAILED_PRECONDITION, NOT_FOUND), such as INTERNAL or
  UNKNOWN; or a verification whose right code was never sent that reads
  APPROVED.

The API comes from the replicas' own server reflection, so the harness
carries no generated code and follows the proto as it is.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SERVICE = "verifyd.v1.VerificationService"
METHODS = ["StartVerification", "CheckVerification", "GetVerification"]

# Retryable: verifyd could not reach what it needs, or ran out of time or
# budget; nothing was granted, and the same request may be sent again.
RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
# How grpcio reports a request whose connection died under it (a replica
# killed, or closing its connections as it drains): no answer from verifyd
# at all. Excused only while the fault kills or drains a replica.
CONNECTION_LOST = {"UNKNOWN", "CANCELLED"}
# Final answers about a verification that exists no more, or is finished.
FINISHED = {"FAILED_PRECONDITION", "NOT_FOUND"}

# Short reconnect backoff: grpcio's default grows to two minutes, which
# would measure the client, not verifyd, after a replica comes back.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
    ("grpc.enable_retries", 0),
]
CALL_TIMEOUT_S = 2.0
RIGHT_CODE_PATIENCE_S = 30.0
# The share of flows that stop after the wrong code, as a user who gives up
# does: their verifications must never read APPROVED.
ABANDONED = 0.1
# Fictional-but-valid US numbers (NPA 555-XXXX): 10,000 per area code.
AREA_CODES = [
    415,
    650,
    212,
    202,
    617,
    312,
    305,
    206,
    303,
    512,
    213,
    404,
    702,
    503,
    602,
    615,
    704,
    801,
    813,
    919,
]


class Api:
    """Message classes for the service's methods, built from reflection."""

    def __init__(self, addr: str):
        with grpc.insecure_channel(addr) as channel:
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            service = pool.FindServiceByName(SERVICE)
            self.methods = {}
            for name in METHODS:
                method = service.FindMethodByName(name)
                self.methods[name] = (
                    message_factory.GetMessageClass(method.input_type),
                    message_factory.GetMessageClass(method.output_type),
                )
            status = pool.FindEnumTypeByName("verifyd.v1.VerificationStatus")
            self.status_names = {value.number: value.name for value in status.values}


class Answer(NamedTuple):
    """A status name (OK, UNAVAILABLE, ...), the response if OK, else the
    error's message."""

    code: str
    response: Any
    message: str | None


class Client:
    """One channel to one replica."""

    def __init__(self, api: Api, addr: str):
        self.api = api
        self.addr = addr
        self.channel = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
        self.calls = {
            name: self.channel.unary_unary(
                f"/{SERVICE}/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            for name, (request, response) in api.methods.items()
        }

    def call(self, method: str, timeout: float = CALL_TIMEOUT_S, **fields) -> Answer:
        request = self.api.methods[method][0](**fields)
        try:
            return Answer("OK", self.calls[method](request, timeout=timeout), None)
        except grpc.RpcError as e:
            return Answer(e.code().name, None, e.details())

    def status(self, response) -> str:
        return self.api.status_names.get(response.verification.status, "?").removeprefix(
            "VERIFICATION_STATUS_"
        )

    def close(self) -> None:
        self.channel.close()


@dataclass
class Ledger:
    """What one fault's flows were told, and what broke."""

    operations: int = 0
    answers: Counter = field(default_factory=Counter)
    # The first message of each kind of error, for the report.
    messages: dict[str, str] = field(default_factory=dict)
    wrong_approvals: int = 0
    double_approvals: int = 0
    not_fail_closed: int = 0
    examples: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    # Started, but the right code never sent: none may read APPROVED.
    unchecked: list[str] = field(default_factory=list)
    # Approvals whose answer was lost (UNAVAILABLE, a deadline) and the
    # user's retry then found already approved (FAILED_PRECONDITION).
    approved_unanswered: int = 0
    # The right code answered `approved = false`: its send's record is gone
    # (a failover that lost it) or the verification ended meanwhile.
    right_code_refused: int = 0
    lost: int = 0
    # Acknowledged approvals the audit could not read (verifyd kept
    # answering UNAVAILABLE): neither kept nor lost, and a breach.
    unread: int = 0
    lost_statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, code: str, message: str | None) -> None:
        with self.lock:
            self.operations += 1
            self.answers[f"{method} {code}"] += 1
            if code != "OK":
                self.messages.setdefault(f"{method} {code}", message)

    def breach(self, kind: str, example: str) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            if len(self.examples) < 20:
                self.examples.append(f"{kind}: {example}")


class Checker:
    """`workers` threads running flows across `replicas` until stopped.
    `connections_may_drop`: the fault kills or drains a replica."""

    # Shared by every Checker of a run, on purpose: each flow has a number
    # of its own, so no two flows of a run share a destination.
    numbers = itertools.count()

    def __init__(
        self,
        api: Api,
        addrs: list[str],
        gateway,
        ledger: Ledger,
        connections_may_drop: bool,
        workers: int = 6,
    ):
        self.clients = [Client(api, addr) for addr in addrs]
        self.gateway = gateway
        self.ledger = ledger
        self.connections_may_drop = connections_may_drop
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.work, args=(i,), daemon=True) for i in range(workers)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Lets every flow under way finish (bounded by its own patience)."""
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        for client in self.clients:
            client.close()

    def work(self, worker: int) -> None:
        rng = random.Random(worker)
        # The last code this worker was sent: the next flow's wrong code, so
        # that another verification's code is tried too, not only a random one.
        previous = None
        while not self.stopping.is_set():
            n = next(self.numbers)
            to = f"+1{AREA_CODES[n // 10000 % len(AREA_CODES)]}555{n % 10000:04d}"
            previous = self.flow(to, n, rng, previous) or previous

    def called(self, client: Client, method: str, **fields) -> Answer:
        answer = client.call(method, **fields)
        code = answer.code
        lost = code in CONNECTION_LOST and self.connections_may_drop
        self.ledger.answer(method, "no answer (connection lost)" if lost else code, answer.message)
        if code != "OK" and code not in RETRYABLE | FINISHED and not lost:
            self.ledger.breach("not_fail_closed", f"{method} on {client.addr} answered {code}")
        return answer

    def flow(self, to: str, n: int, rng: random.Random, previous: str | None) -> str | None:
        """One user's verification; the code it was sent, if any."""
        ledger = self.ledger
        clients = self.clients
        code, started, _ = self.called(
            clients[n % len(clients)],
            "StartVerification",
            to=to,
            channel="CHANNEL_SMS",
            purpose="PURPOSE_PASSWORD_RESET",
        )
        if code != "OK":
            return None
        vid = started.verification.id
        sent = self.gateway.code_for(vid)
        if sent is None:
            ledger.breach("not_fail_closed", f"Start OK for {vid} but the gateway received no code")
            return None
        wrong = previous
        if wrong is None or wrong == sent:
            wrong = f"{(int(sent) + rng.randrange(1, 999_999)) % 1_000_000:06d}"
        code, answer, _ = self.called(
            clients[(n + 1) % len(clients)], "CheckVerification", id=vid, code=wrong
        )
        if code == "OK" and answer.approved:
            ledger.breach("wrong_approvals", f"{vid} approved with a wrong code")
        if rng.random() < ABANDONED:
            with ledger.lock:
                ledger.unchecked.append(vid)
            return sent
        # The right code, on another replica each try, until verifyd knows.
        give_up = time.monotonic() + RIGHT_CODE_PATIENCE_S
        approvals = 0
        for attempt in itertools.count(1):
            code, answer, message = self.called(
                clients[(n + attempt) % len(clients)], "CheckVerification", id=vid, code=sent
            )
            if code == "OK":
                if answer.approved:
                    approvals += 1
                else:
                    with ledger.lock:
                        ledger.right_code_refused += 1
                break
            if code == "FAILED_PRECONDITION" and attempt > 1 and "APPROVED" in (message or ""):
                with ledger.lock:
                    ledger.approved_unanswered += 1
            if code not in RETRYABLE or time.monotonic() > give_up:
                break
            time.sleep(0.1)
        # The same code once more: never a second approval.
        code, again, _ = self.called(clients[(n + 2) % len(clients)], "CheckVerification", id=vid, code=sent)
        if code == "OK" and again.approved:
            approvals += 1
        if approvals > 1:
            ledger.breach("double_approvals", f"{vid} approved twice")
        if approvals >= 1:
            with ledger.lock:
                ledger.acknowledged.append(vid)
        return sent


def audit(api: Api, addrs: list[str], ledger: Ledger, limit: float = 60) -> None:
    """Reads back every acknowledged approval, which must still say
    APPROVED, and every abandoned verification, which must not."""
    clients = [Client(api, addr) for addr in addrs]
    give_up = time.monotonic() + limit
    turn = itertools.count()

    def status(vid: str) -> str:
        while True:
            client = clients[next(turn) % len(clients)]
            code, response, _ = client.call("GetVerification", id=vid)
            if code == "OK":
                return client.status(response)
            if code not in RETRYABLE or time.monotonic() > give_up:
                return code
            time.sleep(0.1)

    try:
        for vid in ledger.acknowledged:
            now = status(vid)
            if now in RETRYABLE:
                ledger.unread += 1
            elif now != "APPROVED":
                ledger.lost += 1
                ledger.lost_statuses[now] += 1
        for vid in ledger.unchecked:
            now = status(vid)
            if now == "APPROVED":
                ledger.breach(
                    "not_fail_closed", f"{vid} reads APPROVED; its code was never checked (a phantom)"
                )
            elif now in RETRYABLE:
                ledger.unread += 1
    finally:
        for client in clients:
            client.close()


def answers_again(
    api: Api, addr: str, limit: float, channel: str | None = None, replica: int = 0
) -> float | None:
    """Seconds until the replica at `addr` answers again; None if it did not
    within `limit`. Answering is a store read (a Get of an id that does not
    exist: NOT_FOUND) or, with `channel`, a start that sends on it (OK)."""
    client = Client(api, addr)
    start = time.monotonic()
    try:
        for n in itertools.count():
            if time.monotonic() - start >= limit:
                return None
            if channel is None:
                answered = client.call("GetVerification", timeout=0.5, id="VE" + "0" * 32).code == "NOT_FOUND"
            else:
                to = (
                    f"+1907555{replica}{n % 1000:03d}"
                    if channel == "CHANNEL_SMS"
                    else f"probe-{time.monotonic_ns()}@example.com"
                )
                answered = (
                    client.call(
                        "StartVerification", to=to, channel=channel, purpose="PURPOSE_PASSWORD_RESET"
                    ).code
                    == "OK"
                )
            if answered:
                return time.monotonic() - start
            time.sleep(0.02)
    finally:
        client.close()

"""Checks on the rendered Kubernetes manifests that no schema or policy
scanner knows about: verifyd's own rules. Run by scripts/check-deploy:

    python deploy-checks.py --docs docs/operations.md \
        RENDERED.yaml[:OVERLAY_DIR] ... --rules RENDERED_MONITORING.yaml

For each rendered deployment (base and overlays):
- verifyd.toml in the verifyd-config ConfigMap parses as TOML;
- the drain arithmetic holds: preStop sleep + server.shutdown_grace +
  a margin <= terminationGracePeriodSeconds, and shutdown_grace covers
  delivery.timeout, so a send that started before SIGTERM is recorded;
- service links are off (they inject VERIFYD_* variables, which verifyd
  reads as configuration and refuses);
- every VERIFYD_*_FILE path lies in a mounted volume, and for a Secret
  volume names a key the Secret has (the rendered Secret, or the overlay's
  secret-example.yaml);
- a deployment on the Redis store (several replicas, real users: the prod
  overlay) serves gRPC over TLS from a mounted Secret that the overlay
  provides (a Secret, or a cert-manager Certificate example naming it),
  and reaches Redis over rediss:// with its CA mounted: API keys, typed
  codes, code MACs and destinations never cross the pod network in clear;
  and it lists the countries codes may go to (fraud.*_calling_codes);
- an overlay on the memory store fits its pod at store.max_entries (from
  the documented bytes per pending verification).
  `--self-test` also shows the rule refusing each overlay it applies to
  with TLS taken out.
For the alert rules: each has a severity, a summary, a description and a
runbook pointing at a heading of docs/operations.md.
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path

import yaml

# Time between kubelet's SIGTERM deadline and what verifyd needs: process
# exit, telemetry flush, kubelet's own delays.
MIN_MARGIN_SECONDS = 5
# verifyd's defaults (docs/configuration.md), for keys a file leaves out.
DEFAULT_SHUTDOWN_GRACE = "10s"
DEFAULT_DELIVERY_TIMEOUT = "10s"
DEFAULT_MAX_ENTRIES = 1_000_000
# What one pending verification costs the memory store, with the budgets
# it spends (docs/performance.md, "Memory per pending verification":
# 354 to 432 bytes measured), rounded up; and what the process needs
# besides (runtime, buffers, templates, metrics).
BYTES_PER_VERIFICATION = 450
RUNTIME_BYTES = 64 * 1024 * 1024
# Kubernetes quantity suffixes (binary and decimal).
MEMORY_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1,
}

UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    """A humantime duration as verifyd's configuration writes them."""
    parts = re.findall(r"(\d+)\s*([a-z]+)", duration)
    if not parts or re.sub(r"[\d\sa-z]", "", duration):
        raise ValueError(f"not a duration: {duration!r}")
    total = 0.0
    for number, unit in parts:
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r} in {duration!r}")
        total += int(number) * UNITS[unit]
    return total


def load(path: Path) -> list[dict]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def check_deployment(name: str, docs: list[dict], overlay: Path | None) -> list[str]:
    errors = []
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    configs = [
        d for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("verifyd-config")
    ]
    if len(deployments) != 1 or len(configs) != 1:
        return [f"{name}: expected one Deployment and one verifyd-config ConfigMap"]
    pod = deployments[0]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "verifyd")

    try:
        config = tomllib.loads(configs[0]["data"]["verifyd.toml"])
    except tomllib.TOMLDecodeError as e:
        return [f"{name}: verifyd.toml does not parse: {e}"]

    grace = seconds(config.get("server", {}).get("shutdown_grace", DEFAULT_SHUTDOWN_GRACE))
    send = seconds(config.get("delivery", {}).get("timeout", DEFAULT_DELIVERY_TIMEOUT))
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    period = pod.get("terminationGracePeriodSeconds", 30)
    if sleep + grace + MIN_MARGIN_SECONDS > period:
        errors.append(
            f"{name}: preStop sleep {sleep}s + server.shutdown_grace {grace:g}s + "
            f"margin {MIN_MARGIN_SECONDS}s > terminationGracePeriodSeconds {period}s"
        )
    if grace < send:
        errors.append(
            f"{name}: server.shutdown_grace {grace:g}s is shorter than delivery.timeout "
            f"{send:g}s: a send under way at SIGTERM could be cut off unrecorded"
        )
    if pod.get("enableServiceLinks", True):
        errors.append(
            f"{name}: enableServiceLinks must be false: service links inject "
            "VERIFYD_SERVICE_HOST and the like, which verifyd refuses as unknown keys"
        )

    mounts = {m["name"]: m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    if overlay is not None and (overlay / "secret-example.yaml").exists():
        for d in load(overlay / "secret-example.yaml"):
            secrets.setdefault(d["metadata"]["name"], d)
    for env in container.get("env", []):
        if not (env["name"].startswith("VERIFYD_") and env["name"].endswith("_FILE")):
            continue
        path = env.get("value", "")
        volume = next(
            (v for v, m in mounts.items() if path.startswith(m + "/")), None
        )
        if volume is None:
            errors.append(f"{name}: {env['name']}={path} is not in a mounted volume")
            continue
        source = volumes.get(volume, {}).get("secret")
        if source is None:
            continue
        secret = secrets.get(source["secretName"])
        if secret is None:
            # The base names a Secret that only its overlays provide.
            if overlay is not None:
                errors.append(f"{name}: no Secret {source['secretName']} (nor an example of it)")
            continue
        key = path[len(mounts[volume]) + 1:]
        keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
        if key not in keys:
            errors.append(
                f"{name}: {env['name']} reads key {key!r}, which Secret "
                f"{source['secretName']} does not have ({', '.join(sorted(keys))})"
            )
    errors += check_transport(name, config, container, mounts, volumes, secrets, overlay)
    if overlay is not None:
        errors += check_memory_ceiling(name, config, container)
    return errors


def memory_bytes(quantity) -> int | None:
    """A Kubernetes memory quantity in bytes (`256Mi`, `1.5Gi`, `512k`,
    `5e8`, a bare number); None when it is not one."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?(?:[eE]\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    if match is None:
        return None
    number, unit = match.groups()
    return int(float(number) * MEMORY_UNITS[unit or ""])


def check_memory_ceiling(name, config, container) -> list[str]:
    """A memory store must fit its pod at store.max_entries: past the
    container's memory limit the pod is OOM-killed, every pending
    verification with it, before the store's own cap refuses anything."""
    store = config.get("store", {})
    if store.get("backend", "memory") != "memory":
        return []
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if limit is None:
        return [f"{name}: the memory store needs a memory limit on the container to size against"]
    limit_bytes = memory_bytes(limit)
    if limit_bytes is None:
        return [f"{name}: the container's memory limit {limit!r} is not a Kubernetes quantity"]
    entries = store.get("max_entries", DEFAULT_MAX_ENTRIES)
    needed = memory_needed(entries)
    if needed > limit_bytes:
        return [
            f"{name}: store.max_entries {entries} can outgrow the pod: {entries} verifications "
            f"and as many idempotency records at {BYTES_PER_VERIFICATION} B each + "
            f"{RUNTIME_BYTES // 2**20} MiB = {needed // 2**20} MiB > the container's memory "
            f"limit {limit}; lower max_entries or raise the limit"
        ]
    return []


def memory_needed(entries: int) -> int:
    """What a memory store of `entries` may grow to: max_entries caps the
    verifications and, separately, the idempotency records (each holds a
    verification as answered)."""
    return 2 * entries * BYTES_PER_VERIFICATION + RUNTIME_BYTES


def mounted_volume(path: str, mounts: dict[str, str]) -> str | None:
    return next((v for v, m in mounts.items() if path.startswith(m + "/")), None)


def provided_secrets(overlay: Path | None) -> set[str]:
    """Secrets an overlay documents instead of shipping: its Secret example,
    and the Secrets its cert-manager Certificate examples fill."""
    names: set[str] = set()
    if overlay is None:
        return names
    for example in sorted(overlay.glob("*-example.yaml")):
        for d in load(example):
            if d.get("kind") == "Secret":
                names.add(d["metadata"]["name"])
            elif d.get("kind") == "Certificate":
                names.add(d["spec"]["secretName"])
    return names


def check_transport(name, config, container, mounts, volumes, secrets, overlay) -> list[str]:
    """A Redis-backed deployment: gRPC over TLS, Redis over rediss://."""
    store = config.get("store", {})
    if store.get("backend") != "redis":
        return []
    errors = []
    tls = config.get("server", {}).get("tls")
    if not tls or not tls.get("cert_path") or not tls.get("key_path"):
        errors.append(
            f"{name}: on the Redis store (production) gRPC must be served over TLS: "
            "set [server.tls] cert_path and key_path (docs/operations.md#tls-in-production)"
        )
    else:
        provided = set(secrets) | provided_secrets(overlay)
        for key in ("cert_path", "key_path"):
            volume = mounted_volume(tls[key], mounts)
            source = volumes.get(volume, {}).get("secret") if volume else None
            if source is None:
                errors.append(f"{name}: server.tls.{key} {tls[key]} is not in a mounted Secret")
            elif source["secretName"] not in provided:
                errors.append(
                    f"{name}: server.tls.{key} reads Secret {source['secretName']}, which the "
                    "overlay neither ships nor documents (a Secret or Certificate example)"
                )
    redis = store.get("redis", {})
    sentinel = redis.get("sentinel", {})
    sentinels = sentinel.get("nodes", [])
    urls = [u for u in [redis.get("url"), *redis.get("cluster", []), *sentinels] if u]
    # Behind Sentinel, the sentinels report only host and port: TLS to the
    # primary is store.redis.sentinel.tls.
    if (
        not urls
        or any(not u.startswith("rediss://") for u in urls)
        or (sentinels and sentinel.get("tls") is not True)
    ):
        errors.append(
            f"{name}: on the Redis store (production) Redis must be reached over TLS: "
            "use rediss:// URLs (behind Sentinel, rediss:// sentinels and "
            "store.redis.sentinel.tls = true; docs/redis.md)"
        )
    fraud = config.get("fraud", {})
    for key in ("sms_calling_codes", "voice_calling_codes"):
        if not fraud.get(key):
            errors.append(
                f"{name}: on the Redis store (production) fraud.{key} must list the "
                "countries codes may go to: empty allows every country, toll-fraud ranges "
                "included (docs/configuration.md#fraud)"
            )
    ca_env = any(e["name"] == "VERIFYD_STORE__REDIS__CA_CERT_FILE" for e in container.get("env", []))
    if not ca_env and not redis.get("ca_cert"):
        errors.append(
            f"{name}: mount Redis's CA and set VERIFYD_STORE__REDIS__CA_CERT_FILE, "
            "so replicas verify the server they send codes' MACs to"
        )
    return errors


def without_transport_security(docs: list[dict]) -> list[dict]:
    """The same manifests with [server.tls] taken out and rediss:// made
    redis://: what the rule must refuse."""
    import copy

    docs = copy.deepcopy(docs)
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("verifyd-config"):
            text = d["data"]["verifyd.toml"]
            text = re.sub(r"(?ms)^\[server\.tls\]\n.*?(?=^\[)", "", text)
            d["data"]["verifyd.toml"] = text.replace("rediss://", "redis://")
    return docs


def with_max_entries_past_the_limit(docs: list[dict]) -> list[dict]:
    """The same manifests with store.max_entries one past what the pod's
    memory limit holds."""
    import copy

    docs = copy.deepcopy(docs)
    container = next(
        c for d in docs if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "verifyd"
    )
    limit = memory_bytes(container["resources"]["limits"]["memory"]) or 0
    entries = max(0, limit - RUNTIME_BYTES) // (2 * BYTES_PER_VERIFICATION) + 1
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("verifyd-config"):
            text = re.sub(r"(?m)^max_entries\s*=.*$", "", d["data"]["verifyd.toml"])
            text = re.sub(r"(?m)^\[store\]$", f"[store]\nmax_entries = {entries}", text)
            d["data"]["verifyd.toml"] = text
    return docs


def self_test(name: str, docs: list[dict], overlay: Path | None) -> list[str]:
    """Each rule refuses this deployment with what it guards taken out: the
    transport rule without TLS (on the Redis store), the memory ceiling
    with store.max_entries one past what the pod holds (on the memory
    store)."""
    configs = [d for d in docs if d["kind"] == "ConfigMap"
               and d["metadata"]["name"].startswith("verifyd-config")]
    if not configs or overlay is None:
        return []
    config = tomllib.loads(configs[0]["data"]["verifyd.toml"])
    if config.get("store", {}).get("backend", "memory") == "memory":
        errors = check_deployment(name, with_max_entries_past_the_limit(docs), overlay)
        if not any("can outgrow the pod" in e for e in errors):
            return [f"{name}: self-test: the memory ceiling did not refuse max_entries past the limit"]
        return []
    if config.get("store", {}).get("backend") != "redis":
        return []
    errors = check_deployment(name, without_transport_security(docs), overlay)
    wanted = ("served over TLS", "reached over TLS")
    missing = [w for w in wanted if not any(w in e for e in errors)]
    if missing:
        return [f"{name}: self-test: without TLS the transport rule did not refuse ({missing})"]
    return []


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to -."""
    found = set()
    for line in markdown.read_text().splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def check_rules(name: str, docs: list[dict], operations: Path) -> list[str]:
    errors = []
    known = anchors(operations)
    count = 0
    for doc in docs:
        if doc["kind"] != "PrometheusRule":
            continue
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                count += 1
                alert = rule.get("alert", "?")
                if not rule.get("expr"):
                    errors.append(f"{name}: {alert}: no expr")
                if rule.get("labels", {}).get("severity") not in {"critical", "warning", "info"}:
                    errors.append(f"{name}: {alert}: severity must be critical, warning or info")
                notes = rule.get("annotations", {})
                for key in ("summary", "description", "runbook"):
                    if not notes.get(key):
                        errors.append(f"{name}: {alert}: no {key} annotation")
                runbook = notes.get("runbook", "")
                doc_path, _, anchor = runbook.partition("#")
                if runbook and (doc_path != "docs/operations.md" or anchor not in known):
                    errors.append(f"{name}: {alert}: runbook {runbook} is no heading of {operations}")
    if count == 0:
        errors.append(f"{name}: no alert rules found")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=Path, required=True, help="docs/operations.md")
    parser.add_argument("--rules", type=Path, action="append", default=[])
    parser.add_argument("--self-test", action="store_true",
                        help="also show the transport rule refusing each deployment without TLS")
    parser.add_argument("rendered", nargs="+", help="RENDERED.yaml[:OVERLAY_DIR]")
    args = parser.parse_args()

    errors = []
    for item in args.rendered:
        path, _, overlay = item.partition(":")
        docs = load(Path(path))
        overlay_dir = Path(overlay) if overlay else None
        errors += check_deployment(path, docs, overlay_dir)
        if args.self_test:
            errors += self_test(path, docs, overlay_dir)
    for path in args.rules:
        errors += check_rules(str(path), load(path), args.docs)
    for error in errors:
        print(f"deploy-checks: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

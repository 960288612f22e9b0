#!/usr/bin/env bash
# The side-by-side benchmark: builds verifyd and verifyd-bench in release
# mode, then runs
# loadtest/compare.py, which prints one table of every RPC as a ratio to the
# health check measured in the same run (docs/performance.md). Needs two
# cores, taskset (util-linux) and python3; redis-server adds the Redis
# figures, and h2load (nghttp2-client; installed here when run as root on
# Debian) drives the health check and GetVerification again from an
# independent client, reported beside verifyd-bench's.
# Settings: see the top of compare.py.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in taskset python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "compare.sh: $tool is missing (Debian: apt-get install util-linux python3)" >&2
        exit 1
    fi
done
if (($(nproc) < 2)); then
    echo "compare.sh: needs two cores (one for verifyd, one for the load generator)" >&2
    exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "compare.sh: redis-server is not installed: the Redis-store run is skipped" >&2
fi
if ! command -v h2load >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "compare.sh: installing nghttp2-client (h2load)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nghttp2-client >&2 ||
        { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nghttp2-client >&2; } ||
        true
fi
if ! command -v h2load >/dev/null 2>&1; then
    echo "compare.sh: h2load is not installed (Debian: nghttp2-client): no runs from an independent client" >&2
fi

echo "==> cargo build --release --locked -p verifyd -p verifyd-bench --bins" >&2
cargo build --release --locked -p verifyd -p verifyd-bench --bins
exec python3 loadtest/compare.py
